//! Flags and printing for the commands that look into a repository or change
//! its metadata: `ls`, `find`, `diff`, `stats`, `cat`, `tag` and `key`. The
//! work is done in `ops`; this module turns results into text or JSON
//! (through the derived types of `views`, including JSON views of the
//! stored formats, which have no serde encoding of their own). Text output shows names escaped (see `output`); JSON
//! shows them lossily (each byte that is not UTF-8 becomes U+FFFD) and, for a
//! name that is not UTF-8, also carries the exact bytes in the escaped form
//! as `<field>_escaped`.

use std::ffi::OsString;
use std::io::{BufWriter, IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::crypto::kdf::KdfParams;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::format::Id;
use crate::ops;
use crate::ops::cat::{CatObject, CatTarget};
use crate::ops::diff::{Change, DiffSide};
use crate::ops::inspect::{FindOptions, LsOptions};
use crate::ops::stats::StatsMode;
use crate::ops::tag::TagOptions;
use crate::restorer::split_subpath;

use super::output::{count, escape, escape_bytes};
use super::times;
use super::views::{
    ChangeView, ConfigView, DiffTail, FoundView, FullNodeView, FullSnapshotView, IndexView, KeyAdded, KeyRemoved,
    KeyReplaced, KeyView, LockView, NodeView, PackView, RetaggedView, TagView, TreeView,
};
use super::{first_line, human, open_repo, Global};

// ---- flags ----

#[derive(Args)]
pub(super) struct LsArgs {
    /// `latest`, a snapshot id or prefix, optionally followed by `:path/inside`
    snapshot: String,
    /// Only the entries directly inside the path, not below
    #[arg(short = 'n', long)]
    no_recursive: bool,
    /// Long format: mode, owner, size, modification time and symlink target
    #[arg(short = 'l', long)]
    long: bool,
    #[command(flatten)]
    filter: super::admin::LatestFilter,
}

#[derive(Args)]
pub(super) struct FindArgs {
    /// Glob patterns matched against entry names (any may match)
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Match the patterns against the whole path inside the snapshot (`*` stays in one directory, `**` crosses)
    #[arg(long)]
    path: bool,
    /// Only entries modified after this time: `YYYY-MM-DD`, `"YYYY-MM-DD HH:MM[:SS]"` (local time; UTC with --utc) or RFC 3339
    #[arg(long)]
    newer: Option<String>,
    /// Only entries modified before this time (same forms as --newer)
    #[arg(long)]
    older: Option<String>,
    /// Only search this snapshot (`latest`, an id or a prefix; repeatable)
    #[arg(long = "snapshot", short = 's')]
    snapshots: Vec<String>,
}

#[derive(Args)]
pub(super) struct DiffArgs {
    /// The first snapshot, optionally followed by `:path/inside`
    a: String,
    /// The second snapshot, optionally followed by `:path/inside`
    b: String,
}

#[derive(Args)]
pub(super) struct StatsArgs {
    /// restore-size: the files as restored; raw-data: the blobs they reference, each once
    #[arg(long, default_value = "restore-size", value_parser = ["restore-size", "raw-data"])]
    mode: String,
    /// Snapshots to count (`latest`, ids or prefixes); all when none are given
    snapshots: Vec<String>,
}

#[derive(Args)]
pub(super) struct CatArgs {
    /// What to print: config, snapshot, index, pack-header, key, tree or lock
    kind: String,
    /// Its id or a unique prefix (`latest` for snapshots); not for config
    id: Option<String>,
}

#[derive(Args)]
pub(super) struct TagArgs {
    /// Add this tag (repeatable)
    #[arg(long)]
    add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long)]
    remove: Vec<String>,
    /// Replace all tags with these (repeatable; `--set ""` removes every tag)
    #[arg(long, conflicts_with_all = ["add", "remove"])]
    set: Vec<String>,
    /// Snapshots to change (`latest`, ids or prefixes); all when none are given
    snapshots: Vec<String>,
}

#[derive(Subcommand)]
pub(super) enum KeyCommand {
    /// List the keys; `*` marks the one the password given opened
    List,
    /// Add a key for a new password
    Add(NewPasswordArgs),
    /// Remove a key (not the one in use)
    Remove {
        /// Key id or a unique prefix
        id: String,
    },
    /// Change the password: add a key for the new one, then remove the one in use
    Passwd(NewPasswordArgs),
}

#[derive(Args)]
pub(super) struct NewPasswordArgs {
    /// Read the new password from this file (first line); otherwise
    /// TSTOR_NEW_PASSWORD, otherwise a prompt
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

// ---- shared helpers ----

/// `snapshot[:path/inside]` split into the snapshot spec and path components.
fn split_spec(s: &str) -> Result<(String, Vec<Vec<u8>>)> {
    let (spec, sub) = match s.split_once(':') {
        Some((spec, sub)) => (spec.to_string(), sub.to_string()),
        None => (s.to_string(), String::new()),
    };
    Ok((spec, split_subpath(OsString::from(sub).as_bytes())?))
}

/// A path inside a snapshot as text output shows it: `/` followed by the path, escaped.
fn print_path(p: &[u8]) -> String {
    format!("/{}", escape_bytes(p))
}

/// `drwxr-xr-x` and friends, with setuid, setgid and sticky bits.
pub fn mode_string(kind: NodeKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
    });
    for (shift, special, set_exec, set_noexec) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')]
    {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => set_exec,
            (true, false) => set_noexec,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Writes a JSON array one element at a time, so that long listings are
/// never held in memory.
struct JsonArray<W: Write> {
    out: W,
    empty: bool,
}

impl<W: Write> JsonArray<W> {
    fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(b"[")?;
        Ok(JsonArray { out, empty: true })
    }

    fn push<T: serde::Serialize>(&mut self, v: &T) -> std::io::Result<()> {
        self.out.write_all(if self.empty { b"\n  " } else { b",\n  " })?;
        self.empty = false;
        serde_json::to_writer(&mut self.out, v)?;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(b"\n]\n")?;
        Ok(self.out)
    }
}

fn stdout() -> BufWriter<std::io::StdoutLock<'static>> {
    BufWriter::new(std::io::stdout().lock())
}

fn report_unreadable(bad: &[(Id, crate::repo::RepoError)]) -> u8 {
    for (id, e) in bad {
        errln!("error: snapshot {}: {}", id.short(), escape(&e.to_string()));
    }
    u8::from(!bad.is_empty())
}

// ---- ls ----

pub(super) async fn cmd_ls(g: &Global, a: LsArgs) -> Result<u8> {
    ls(g, a).await
}

async fn ls(g: &Global, a: LsArgs) -> Result<u8> {
    let repo = open_repo(g).await?;
    let (spec, subpath) = split_spec(&a.snapshot)?;
    let spec = super::admin::resolve_latest(&repo, &spec, &a.filter).await?;
    let opts = LsOptions { subpath, recursive: !a.no_recursive };
    let mut out = stdout();
    if g.json {
        let mut arr = JsonArray::new(&mut out)?;
        ops::inspect::ls(&repo, &spec, &opts, |path: &[u8], node: &Node| -> Result<()> {
            arr.push(&NodeView::of(Some(path), node))?;
            Ok(())
        })
        .await?;
        arr.finish()?;
    } else {
        let long = a.long;
        ops::inspect::ls(&repo, &spec, &opts, |path: &[u8], n: &Node| -> Result<()> {
            if long {
                let target = if n.kind == NodeKind::Symlink {
                    format!(" -> {}", escape_bytes(&n.symlink_target))
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "{} {:>6} {:>6} {:>12} {} {}{target}",
                    mode_string(n.kind, n.mode),
                    n.uid,
                    n.gid,
                    n.size,
                    times::show(n.mtime_ns),
                    print_path(path)
                )?;
            } else {
                writeln!(out, "{}", print_path(path))?;
            }
            Ok(())
        })
        .await?;
    }
    out.flush()?;
    Ok(0)
}

// ---- find ----

pub(super) async fn cmd_find(g: &Global, a: FindArgs) -> Result<u8> {
    find(g, a).await
}

async fn find(g: &Global, a: FindArgs) -> Result<u8> {
    let time = |s: &Option<String>| s.as_deref().map(times::parse).transpose();
    let opts = FindOptions {
        patterns: a.patterns,
        match_path: a.path,
        newer_ns: time(&a.newer)?,
        older_ns: time(&a.older)?,
        snapshots: a.snapshots,
    };
    ops::inspect::Matcher::new(&opts)?;
    let repo = open_repo(g).await?;
    let mut out = stdout();
    let bad = if g.json {
        let mut arr = JsonArray::new(&mut out)?;
        let bad = ops::inspect::find(&repo, &opts, |id: &Id, _: &Snapshot, path: &[u8], n: &Node| -> Result<()> {
            arr.push(&FoundView::of(id, path, n))?;
            Ok(())
        })
        .await?;
        arr.finish()?;
        bad
    } else {
        let mut matches = 0u64;
        let bad = ops::inspect::find(&repo, &opts, |id: &Id, _: &Snapshot, path: &[u8], n: &Node| -> Result<()> {
            matches += 1;
            writeln!(out, "{}  {}  {:>12}  {}", id.short(), times::show(n.mtime_ns), n.size, print_path(path))?;
            Ok(())
        })
        .await?;
        writeln!(out, "{}", count(matches, "match"))?;
        bad
    };
    out.flush()?;
    Ok(report_unreadable(&bad))
}

// ---- diff ----

pub(super) async fn cmd_diff(g: &Global, a: DiffArgs) -> Result<u8> {
    diff(g, a).await
}

/// The changed path as text shows it, `/` after a directory.
fn change_path(c: &Change) -> String {
    let mut p = print_path(&c.path);
    if c.node().kind == NodeKind::Dir {
        p.push('/');
    }
    p
}

async fn diff(g: &Global, a: DiffArgs) -> Result<u8> {
    let (a_spec, a_sub) = split_spec(&a.a)?;
    let (b_spec, b_sub) = split_spec(&a.b)?;
    let a_side = DiffSide { spec: a_spec, subpath: a_sub };
    let b_side = DiffSide { spec: b_spec, subpath: b_sub };
    let repo = open_repo(g).await?;
    let mut out = stdout();
    if g.json {
        out.write_all(b"{\"changes\": ")?;
        let mut arr = JsonArray::new(&mut out)?;
        let outcome = ops::diff::diff(&repo, &a_side, &b_side, |c: &Change| -> Result<()> {
            arr.push(&ChangeView::of(c))?;
            Ok(())
        })
        .await?;
        arr.finish()?;
        let tail = DiffTail { a: outcome.a.0.to_hex(), b: outcome.b.0.to_hex(), totals: &outcome.totals };
        let tail = serde_json::to_string(&tail)?;
        // Splice the other fields after `changes`.
        writeln!(out, ", {}", &tail[1..])?;
    } else {
        let outcome = ops::diff::diff(&repo, &a_side, &b_side, |c: &Change| -> Result<()> {
            writeln!(out, "{} {}", c.kind.symbol(), change_path(c))?;
            Ok(())
        })
        .await?;
        let t = &outcome.totals;
        writeln!(
            out,
            "\n{} to {}: {} added ({}), {} removed ({}), {} modified, {} type changed, {} metadata only",
            outcome.a.0.short(),
            outcome.b.0.short(),
            t.added,
            human(t.bytes_added),
            t.removed,
            human(t.bytes_removed),
            t.modified,
            t.type_changed,
            t.metadata_changed
        )?;
    }
    out.flush()?;
    Ok(0)
}

// ---- stats ----

fn show_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

pub(super) async fn cmd_stats(g: &Global, a: StatsArgs) -> Result<u8> {
    let mode: StatsMode = a.mode.parse()?;
    let repo = open_repo(g).await?;
    let (r, bad) = ops::stats::stats(&repo, &a.snapshots, mode).await?;
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let mut out = std::io::stdout().lock();
        match mode {
            StatsMode::RestoreSize => writeln!(
                out,
                "restore-size of {} snapshots: {} in {} files",
                r.snapshots,
                human(r.total_size),
                r.total_count
            )?,
            StatsMode::RawData => writeln!(
                out,
                "raw-data of {} snapshots: {} stored in {} blobs",
                r.snapshots,
                human(r.total_size),
                r.total_count
            )?,
        }
        writeln!(out, "  files:              {} ({} directories, {} other entries)", r.files, r.dirs, r.others)?;
        writeln!(out, "  restore size:       {} ({} bytes)", human(r.restore_size), r.restore_size)?;
        writeln!(
            out,
            "  deduplicated size:  {} ({} bytes in {} data blobs)",
            human(r.dedup_size),
            r.dedup_size,
            r.data_blobs
        )?;
        writeln!(out, "  trees:              {} in {} tree blobs", human(r.tree_size), r.tree_blobs)?;
        writeln!(out, "  referenced, stored: {}", human(r.referenced_stored_size))?;
        writeln!(out, "  compression ratio:  {}", show_ratio(r.compression_ratio))?;
        writeln!(out, "  dedup ratio:        {}", show_ratio(r.dedup_ratio))?;
        writeln!(out, "  repository stored:  {} in {} packs", human(r.stored_size), r.packs)?;
        if let Some(items) = r.stored_items {
            writeln!(out, "  storage holds:      {} {}", items.count, items.unit)?;
        }
        if r.missing_blobs > 0 {
            writeln!(out, "  missing blobs:      {} (run `tstor check`)", r.missing_blobs)?;
        }
    }
    Ok(report_unreadable(&bad))
}

// ---- cat ----

pub(super) async fn cmd_cat(g: &Global, a: CatArgs) -> Result<u8> {
    let target = CatTarget::parse(&a.kind, a.id.as_deref())?;
    let repo = open_repo(g).await?;
    let text = match ops::cat::cat(&repo, &target).await? {
        CatObject::Config(c) => serde_json::to_string_pretty(&ConfigView::of(&c))?,
        CatObject::Snapshot(id, s) => serde_json::to_string_pretty(&FullSnapshotView::of(&id, &s))?,
        CatObject::Index(id, f) => serde_json::to_string_pretty(&IndexView::of(&id, &f))?,
        CatObject::PackHeader { id, size, blobs } => serde_json::to_string_pretty(&PackView::of(&id, size, &blobs))?,
        CatObject::Key(k) => serde_json::to_string_pretty(&KeyView::of(&k))?,
        CatObject::Tree(id, t) => serde_json::to_string_pretty(&TreeView {
            id: id.to_hex(),
            nodes: t.nodes.iter().map(FullNodeView::of).collect(),
        })?,
        CatObject::Lock(id, l) => serde_json::to_string_pretty(&LockView::of(&id, &l))?,
    };
    outln!("{text}");
    Ok(0)
}

// ---- tag ----

pub(super) async fn cmd_tag(g: &Global, a: TagArgs) -> Result<u8> {
    let opts = TagOptions { add: a.add, remove: a.remove, set: (!a.set.is_empty()).then_some(a.set) };
    let repo = open_repo(g).await?;
    let changed = ops::tag::tag(&repo, &a.snapshots, &opts).await?;
    if g.json {
        let changed = changed
            .iter()
            .map(|c| RetaggedView { old_id: c.old_id.to_hex(), new_id: c.new_id.to_hex(), tags: &c.snapshot.tags })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&TagView { changed })?);
    } else {
        for c in &changed {
            let tags: Vec<String> = c.snapshot.tags.iter().map(|t| escape(t)).collect();
            outln!("snapshot {} is now {} with tags [{}]", c.old_id.short(), c.new_id.short(), tags.join(", "));
        }
        match changed.len() {
            0 => outln!("no snapshot changed"),
            1 => outln!("1 snapshot changed"),
            n => outln!("{n} snapshots changed"),
        }
    }
    Ok(0)
}

// ---- key ----

/// The new password, from (in order) --new-password-file, TSTOR_NEW_PASSWORD or a prompt asked twice.
fn new_password(a: &NewPasswordArgs) -> Result<Vec<u8>> {
    let pw = if let Some(f) = &a.new_password_file {
        first_line(std::fs::read(f).with_context(|| format!("cannot read new password file {}", f.display()))?)
    } else if let Some(p) = std::env::var_os("TSTOR_NEW_PASSWORD") {
        p.into_vec()
    } else if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("New password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("Repeat the new password: ").context("cannot read the password")?;
        if again != p {
            bail!("the passwords do not match");
        }
        p.into_bytes()
    } else {
        bail!("no new password given: use --new-password-file, TSTOR_NEW_PASSWORD or run on a terminal");
    };
    if pw.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(pw)
}

pub(super) async fn cmd_key(g: &Global, c: KeyCommand) -> Result<u8> {
    match c {
        KeyCommand::List => {
            let repo = open_repo(g).await?;
            let keys = ops::key::list(&repo).await?;
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&keys.iter().map(KeyView::of).collect::<Vec<_>>())?);
                return Ok(0);
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "  {:<8}  {:<19}  {:<16}  User", "ID", "Created", "Host")?;
            for k in &keys {
                let mark = if k.current { '*' } else { ' ' };
                match (&k.owner, &k.error) {
                    (Some(o), _) => writeln!(
                        out,
                        "{mark} {:<8}  {:<19}  {:<16}  {}",
                        k.id.short(),
                        times::show(o.created_ns),
                        escape(&o.hostname),
                        escape(&o.username)
                    )?,
                    (None, Some(e)) => writeln!(out, "{mark} {:<8}  unreadable: {}", k.id.short(), escape(e))?,
                    (None, None) => writeln!(out, "{mark} {:<8}  (owner record unreadable)", k.id.short())?,
                }
            }
            Ok(0)
        }
        KeyCommand::Add(a) => {
            let repo = open_repo(g).await?;
            let pw = new_password(&a)?;
            let id = ops::key::add(&repo, &pw, KdfParams::DEFAULT).await?;
            if g.json {
                outln!("{}", serde_json::to_string(&KeyAdded { id: id.to_hex(), short_id: id.short() })?);
            } else {
                outln!("added key {}", id.short());
            }
            Ok(0)
        }
        KeyCommand::Remove { id } => {
            let repo = open_repo(g).await?;
            let removed = ops::key::remove(&repo, &id).await?;
            if g.json {
                outln!("{}", serde_json::to_string(&KeyRemoved { removed: removed.to_hex() })?);
            } else {
                outln!("removed key {}", removed.short());
            }
            Ok(0)
        }
        KeyCommand::Passwd(a) => {
            let repo = open_repo(g).await?;
            let pw = new_password(&a)?;
            let old = *repo.key_id();
            let new = ops::key::passwd(&repo, &pw, KdfParams::DEFAULT).await?;
            if g.json {
                outln!("{}", serde_json::to_string(&KeyReplaced { old_id: old.to_hex(), new_id: new.to_hex() })?);
            } else {
                outln!("password changed: key {} replaced by key {}", old.short(), new.short());
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings() {
        assert_eq!(mode_string(NodeKind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(NodeKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(NodeKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(NodeKind::File, 0o6755), "-rwsr-sr-x");
        assert_eq!(mode_string(NodeKind::File, 0o6644), "-rwSr-Sr--");
        assert_eq!(mode_string(NodeKind::Symlink, 0o777), "lrwxrwxrwx");
    }
}
