//! Small commands and options a restic user reaches for: `version`, `list`
//! (the stored objects of one kind), `cache` (list and clean up the local
//! caches) and the `--host/--path/--tag` filters that choose which
//! snapshot `latest` stands for.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::output::{count, escape, escape_path};
use super::views::{CacheView, VersionView};
use super::{default_cache_dir, human, open_repo, Global};
use crate::format::ObjectKind;
use crate::repo::select::SnapshotFilter;
use crate::repo::Repository;

/// Which snapshot `latest` stands for (an id names one whatever these say).
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Choosing `latest`")]
pub(super) struct LatestFilter {
    /// `latest` is the newest snapshot of this host (repeatable: any of them)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// `latest` is the newest snapshot whose paths include this one (repeatable: all of them)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// `latest` is the newest snapshot with this tag (repeatable: all of them)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

impl LatestFilter {
    /// The library's filter; paths are made absolute as `snapshot` stores them.
    pub fn to_filter(&self) -> Result<SnapshotFilter> {
        use std::os::unix::ffi::OsStrExt;
        let mut paths = Vec::new();
        for p in &self.paths {
            let abs = crate::archiver::absolute_path(p).with_context(|| format!("bad path {}", p.display()))?;
            paths.push(abs.as_os_str().as_bytes().to_vec());
        }
        Ok(SnapshotFilter { hosts: self.hosts.clone(), paths, tags: self.tags.clone() })
    }
}

/// `spec` with `latest` resolved under `filter` to the full id of the
/// snapshot it stands for; any other spec (and `latest` without filters)
/// unchanged, for the operation to resolve under its lock.
pub(super) async fn resolve_latest(repo: &Repository, spec: &str, filter: &LatestFilter) -> Result<String> {
    let filter = filter.to_filter()?;
    if spec != "latest" || filter.is_empty() {
        return Ok(spec.to_string());
    }
    let (id, _) = repo.find_snapshot_filtered(spec, &filter).await?;
    Ok(id.to_hex())
}

pub(super) fn cmd_version(g: &Global) -> Result<u8> {
    let version = env!("CARGO_PKG_VERSION");
    let format = crate::format::REPO_FORMAT_VERSION;
    if g.json {
        outln!("{}", serde_json::to_string(&VersionView { version, repository_format: format })?);
    } else {
        outln!("tstor {version} (repository format {format}, {} {})", std::env::consts::OS, std::env::consts::ARCH);
    }
    Ok(0)
}

/// The kinds of stored object `tstor list` names.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum ListKind {
    Snapshots,
    Index,
    Packs,
    Keys,
    Locks,
}

impl ListKind {
    fn kind(self) -> ObjectKind {
        match self {
            ListKind::Snapshots => ObjectKind::Snapshot,
            ListKind::Index => ObjectKind::Index,
            ListKind::Packs => ObjectKind::Pack,
            ListKind::Keys => ObjectKind::Key,
            ListKind::Locks => ObjectKind::Lock,
        }
    }
}

#[derive(Args)]
pub(super) struct ListArgs {
    /// What to list: full ids, one a line
    #[arg(value_enum)]
    kind: ListKind,
}

pub(super) async fn cmd_list(g: &Global, a: ListArgs) -> Result<u8> {
    let repo = open_repo(g).await?;
    let mut objects = repo.backend().list(a.kind.kind()).await?;
    objects.sort_by_key(|o| o.id);
    if g.json {
        let ids: Vec<String> = objects.iter().map(|o| o.id.to_hex()).collect();
        outln!("{}", serde_json::to_string_pretty(&ids)?);
    } else {
        for o in &objects {
            outln!("{}", o.id.to_hex());
        }
    }
    Ok(0)
}

#[derive(Args)]
pub(super) struct CacheArgs {
    /// Remove the caches of repositories not used for --max-age
    #[arg(long)]
    cleanup: bool,
    /// How long unused before --cleanup removes a cache (`30d`, `12h`)
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = |s: &str| super::pacing::parse_duration(s))]
    max_age: Duration,
}

pub(super) fn cmd_cache(g: &Global, a: CacheArgs) -> Result<u8> {
    use crate::cache::housekeeping;
    let Some(dir) = g.cache_dir.clone().or_else(default_cache_dir) else {
        anyhow::bail!("cannot find your cache directory; give --cache-dir");
    };
    let now = SystemTime::now();
    let days = |e: &housekeeping::CacheEntry| e.age(now).as_secs() / 86_400;
    if a.cleanup {
        let removed = housekeeping::remove_older_than(&dir, a.max_age)?;
        for e in &removed {
            outln!("removed cache {} ({}, unused for {} days)", &e.repo_id[..8], human(e.bytes), days(e));
        }
        if !g.quiet {
            outln!("{} removed from {}", count(removed.len(), "cache"), escape_path(&dir));
        }
        return Ok(0);
    }
    let caches = housekeeping::list(&dir)?;
    if g.json {
        let list: Vec<_> = caches
            .iter()
            .map(|e| CacheView {
                repository_id: &e.repo_id,
                path: e.path.display().to_string(),
                bytes: e.bytes,
                days_unused: days(e),
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    outln!("{:<8}  {:>10}  {:>11}  Path", "Repo ID", "Size", "Unused days");
    for e in &caches {
        outln!(
            "{:<8}  {:>10}  {:>11}  {}",
            &e.repo_id[..8],
            human(e.bytes),
            days(e),
            escape(&e.path.display().to_string())
        );
    }
    outln!("{} in {}", count(caches.len(), "cache"), escape_path(&dir));
    Ok(0)
}
