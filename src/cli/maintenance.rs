//! Flags and printing for the commands that remove things: `forget`, `prune`
//! and `unlock`. The policy, the prune and the lock removal are done in `ops`
//! and `repo::lock`; this module turns their results into text or JSON.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;

use crate::archiver::absolute_path;
use crate::format::snapshot::Snapshot;
use crate::format::Id;
use crate::ops;
use crate::ops::forget::{Duration, ForgetOptions, ForgetReport, GroupBy, GroupKey, Keep, Policy, SnapshotFilter};
use crate::ops::prune::{MaxUnused, PruneOptions, PruneReport};
use crate::repo::lock;

use super::output::{count, escape, escape_bytes};
use super::views::{ForgetView, RemovedLockView, UnlockView};
use super::{human, open_repo, Global};

#[derive(Args)]
pub(super) struct PruneFlags {
    /// Unused space tolerated in kept packs afterwards: a share of the
    /// repository (`5%`), a size (`100M`) or `unlimited`
    #[arg(long, default_value = "5%", value_parser = |s: &str| s.parse::<MaxUnused>())]
    max_unused: MaxUnused,
    /// Repack at most this much (e.g. `2G`)
    #[arg(long, value_parser = |s: &str| ops::check::parse_size(s))]
    max_repack_size: Option<u64>,
}

impl PruneFlags {
    fn options(&self, dry_run: bool) -> PruneOptions {
        PruneOptions {
            dry_run,
            max_unused: self.max_unused,
            max_repack_bytes: self.max_repack_size,
            ..PruneOptions::default()
        }
    }
}

fn keep(s: &str) -> Result<Keep, String> {
    s.parse()
}

fn duration(s: &str) -> Result<Duration, String> {
    s.parse()
}

pub(super) fn tag_lists(values: &[String]) -> Vec<Vec<String>> {
    values
        .iter()
        .map(|v| v.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect::<Vec<_>>())
        .map(|l| if l.is_empty() { vec![String::new()] } else { l })
        .collect()
}

#[derive(Args)]
pub(super) struct ForgetArgs {
    /// Forget exactly these snapshots (ids, unique prefixes or `latest`) instead of applying a policy
    ids: Vec<String>,
    /// Keep the N newest snapshots (`unlimited`: all)
    #[arg(long, short = 'l', value_name = "N", value_parser = keep)]
    keep_last: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, short = 'H', value_name = "N", value_parser = keep)]
    keep_hourly: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest days that have one
    #[arg(long, short = 'd', value_name = "N", value_parser = keep)]
    keep_daily: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one
    #[arg(long, short = 'w', value_name = "N", value_parser = keep)]
    keep_weekly: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest months that have one
    #[arg(long, short = 'm', value_name = "N", value_parser = keep)]
    keep_monthly: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest years that have one
    #[arg(long, short = 'y', value_name = "N", value_parser = keep)]
    keep_yearly: Option<Keep>,
    /// Keep snapshots newer than this before the newest one (e.g. 30d, 2w, 1y5m, 12h)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within: Option<Duration>,
    /// Keep the newest snapshot of each hour within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_hourly: Option<Duration>,
    /// Keep the newest snapshot of each day within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_daily: Option<Duration>,
    /// Keep the newest snapshot of each week within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_weekly: Option<Duration>,
    /// Keep the newest snapshot of each month within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_monthly: Option<Duration>,
    /// Keep the newest snapshot of each year within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_yearly: Option<Duration>,
    /// Keep snapshots with all of these comma-separated tags (repeatable)
    #[arg(long, value_name = "TAG[,TAG]")]
    keep_tag: Vec<String>,
    /// Only consider snapshots of this host (repeatable)
    #[arg(long)]
    host: Vec<String>,
    /// Only consider snapshots with all of these comma-separated tags (repeatable: any list)
    #[arg(long, value_name = "TAG[,TAG]")]
    tag: Vec<String>,
    /// Only consider snapshots that include this path (repeatable)
    #[arg(long)]
    path: Vec<PathBuf>,
    /// Apply the policy to each group of snapshots sharing these: any of host, paths, tags; `` for one group
    #[arg(long, short = 'g', default_value = "host,paths", value_parser = |s: &str| s.parse::<GroupBy>())]
    group_by: GroupBy,
    /// Only show what would be removed
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Prune afterwards if snapshots were removed
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_flags: PruneFlags,
}

#[derive(Args)]
pub(super) struct PruneArgs {
    /// Only show what would be deleted and repacked
    #[arg(long, short = 'n')]
    dry_run: bool,
    #[command(flatten)]
    prune_flags: PruneFlags,
}

#[derive(Args)]
pub(super) struct UnlockArgs {
    /// Remove every lock, also those of running processes
    #[arg(long)]
    remove_all: bool,
}

pub(super) async fn cmd_forget(g: &Global, a: ForgetArgs) -> Result<u8> {
    let mut policy = Policy {
        last: a.keep_last.unwrap_or_default(),
        hourly: a.keep_hourly.unwrap_or_default(),
        daily: a.keep_daily.unwrap_or_default(),
        weekly: a.keep_weekly.unwrap_or_default(),
        monthly: a.keep_monthly.unwrap_or_default(),
        yearly: a.keep_yearly.unwrap_or_default(),
        within: a.keep_within.unwrap_or_default(),
        within_hourly: a.keep_within_hourly.unwrap_or_default(),
        within_daily: a.keep_within_daily.unwrap_or_default(),
        within_weekly: a.keep_within_weekly.unwrap_or_default(),
        within_monthly: a.keep_within_monthly.unwrap_or_default(),
        within_yearly: a.keep_within_yearly.unwrap_or_default(),
        tags: tag_lists(&a.keep_tag),
    };
    // Without ids or --keep-* flags, the configuration file's policy.
    if a.ids.is_empty() && policy.is_empty() {
        policy = g.settings.policy.clone();
    }
    let mut paths = Vec::new();
    for p in &a.path {
        let abs = absolute_path(p).map_err(|e| anyhow!("{}: {e}", p.display()))?;
        paths.push(abs.as_os_str().as_bytes().to_vec());
    }
    let opts = ForgetOptions {
        policy,
        group_by: a.group_by,
        filter: SnapshotFilter { hosts: a.host, tags: tag_lists(&a.tag), paths },
        ids: a.ids,
        dry_run: a.dry_run,
        time_zone: Some(super::times::zone().clone()),
    };
    let mut prune_opts = a.prune_flags.options(a.dry_run);
    let repo = open_repo(g).await?;
    if let Some(size) = repo.backend().preferred_pack_size() {
        prune_opts.data_pack_size = size;
    }
    let (report, pruned) = ops::forget(&repo, &opts, a.prune.then_some(&prune_opts)).await?;
    if g.json {
        let policy = opts.ids.is_empty().then(|| opts.policy.to_string());
        outln!("{}", serde_json::to_string_pretty(&ForgetView::of(policy, &report, pruned.as_ref()))?);
    } else {
        print_forget(&opts, &report)?;
        if let Some(p) = &pruned {
            print_prune(p);
        }
    }
    for (id, e) in &report.unreadable {
        errln!("warning: snapshot {} cannot be read and was left alone: {}", id.short(), escape(&e.to_string()));
    }
    Ok(0)
}

fn describe_group(key: &GroupKey) -> String {
    let mut parts = Vec::new();
    if let Some(h) = &key.hostname {
        parts.push(format!("host [{}]", escape(h)));
    }
    if let Some(p) = &key.paths {
        parts.push(format!("paths [{}]", p.iter().map(|p| escape_bytes(p)).collect::<Vec<_>>().join(", ")));
    }
    if let Some(t) = &key.tags {
        parts.push(format!("tags [{}]", t.iter().map(|t| escape(t)).collect::<Vec<_>>().join(", ")));
    }
    parts.join(", ")
}

/// One table row; `reason` is `None` in the table of removed snapshots, which has no Reasons column.
fn snapshot_row(id: &Id, s: &Snapshot, reason: Option<&str>) -> String {
    let paths: Vec<String> = s.paths.iter().map(|p| escape_bytes(p)).collect();
    let tags: Vec<String> = s.tags.iter().map(|t| escape(t)).collect();
    let reason = reason.map(|r| format!("{:<22}  ", escape(r))).unwrap_or_default();
    format!(
        "{:<8}  {:<19}  {:<16}  {:<12}  {reason}{}",
        id.short(),
        super::times::show(s.time_ns),
        escape(&s.hostname),
        tags.join(","),
        paths.join(", ")
    )
}

fn print_forget(opts: &ForgetOptions, r: &ForgetReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if opts.ids.is_empty() {
        writeln!(out, "Applying policy: {}", escape(&opts.policy.to_string()))?;
    }
    let header = |reasons: &str| format!("{:<8}  {:<19}  {:<16}  {:<12}  {reasons}Paths", "ID", "Time", "Host", "Tags");
    for grp in &r.plan.groups {
        let described = describe_group(&grp.key);
        if !described.is_empty() {
            writeln!(out, "snapshots for ({described}):")?;
        }
        if !grp.keep.is_empty() {
            writeln!(out, "keep {}:", count(grp.keep.len(), "snapshot"))?;
            writeln!(out, "{}", header(&format!("{:<22}  ", "Reasons")))?;
            for (id, s, reasons) in &grp.keep {
                let first = reasons.first().map_or("", String::as_str);
                writeln!(out, "{}", snapshot_row(id, s, Some(first)).trim_end())?;
                for more in reasons.iter().skip(1) {
                    writeln!(out, "{:<8}  {:<19}  {:<16}  {:<12}  {more}", "", "", "", "")?;
                }
            }
        }
        if !grp.remove.is_empty() {
            writeln!(out, "remove {}:", count(grp.remove.len(), "snapshot"))?;
            writeln!(out, "{}", header(""))?;
            for (id, s) in &grp.remove {
                writeln!(out, "{}", snapshot_row(id, s, None).trim_end())?;
            }
        }
        writeln!(out)?;
    }
    for id in &r.plan.unreadable {
        writeln!(out, "remove unreadable snapshot {}", id.short())?;
    }
    let n = r.plan.to_remove().len();
    if r.dry_run {
        writeln!(out, "dry run: {} would be removed", count(n, "snapshot"))?;
    } else {
        writeln!(out, "{} removed", count(r.removed.len(), "snapshot"))?;
    }
    Ok(())
}

pub(super) async fn cmd_prune(g: &Global, a: PruneArgs) -> Result<u8> {
    let repo = open_repo(g).await?;
    let mut opts = a.prune_flags.options(a.dry_run);
    if let Some(size) = repo.backend().preferred_pack_size() {
        opts.data_pack_size = size;
    }
    let report = ops::prune(&repo, &opts).await?;
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_prune(&report);
    }
    Ok(0)
}

fn print_prune(r: &PruneReport) {
    outln!(
        "{} snapshots use {} blobs ({}); {} in {} packs ({}) is unused",
        r.snapshots,
        r.used_blobs,
        human(r.used_bytes),
        human(r.unused_bytes),
        r.packs,
        human(r.bytes)
    );
    for p in &r.unreadable_unindexed_packs {
        errln!("warning: {}", escape(&crate::repo::describe_unreadable_pack(&p.id[..p.id.len().min(8)], &p.reason)));
    }
    if r.young_unindexed_packs > 0 {
        outln!(
            "{} packs listed by no index are younger than {} minutes and left alone (a snapshot may still be writing them)",
            r.young_unindexed_packs,
            ops::prune::UNINDEXED_PACK_GRACE.as_secs() / 60
        );
    }
    if r.nothing_to_do {
        outln!("nothing to prune");
        return;
    }
    let would = if r.dry_run { "would " } else { "" };
    if r.unindexed_packs > 0 {
        outln!("{} packs were listed by no index (left by interrupted runs)", r.unindexed_packs);
    }
    if r.packs_deleted > 0 {
        outln!("{would}delete {} packs holding nothing in use", r.packs_deleted);
    }
    if r.packs_repacked > 0 {
        outln!(
            "{would}repack {} packs ({}), copying {} blobs into {} new packs ({})",
            r.packs_repacked,
            human(r.bytes_repacked),
            r.blobs_repacked,
            r.packs_written,
            human(r.bytes_written)
        );
    }
    if r.missing_packs_dropped > 0 {
        outln!("{would}drop {} missing packs nothing uses from the index", r.missing_packs_dropped);
    }
    outln!("{would}replace {} index objects with one", r.index_objects_replaced);
    outln!(
        "{}reclaimed {}: {} packs ({}) now {} packs ({}), {} unused",
        if r.dry_run { "would have " } else { "" },
        human(r.bytes_reclaimed),
        r.packs,
        human(r.bytes),
        r.packs_after,
        human(r.bytes_after),
        human(r.unused_bytes_after)
    );
}

pub(super) async fn cmd_unlock(g: &Global, a: UnlockArgs) -> Result<u8> {
    let repo = open_repo(g).await?;
    let removed = lock::remove_locks(&repo, a.remove_all).await?;
    if g.json {
        let removed = removed
            .iter()
            .map(|(id, l)| RemovedLockView { id: id.to_hex(), lock: l.as_ref().map(lock::describe_lock) })
            .collect();
        outln!("{}", serde_json::to_string(&UnlockView { removed })?);
    } else {
        for (id, l) in &removed {
            let what = l.as_ref().map_or_else(|| "an unreadable lock".to_string(), lock::describe_lock);
            outln!("removed lock {}: {}", id.short(), escape(&what));
        }
        outln!("{} removed", count(removed.len(), "lock"));
    }
    Ok(0)
}
