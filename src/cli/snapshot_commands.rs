//! Flags and printing for `dump` (a file to stdout, a directory as a tar or
//! zip stream) and `rewrite` (snapshots without excluded paths), and the
//! report printer `repair snapshots` shares with `rewrite` (see `ops::dump`
//! and `ops::rewrite`).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};

use super::output::{escape, escape_path};
use super::{open_repo, Global};
use crate::archiver::{absolute_path, ExcludeOptions, Exclusions};
use crate::format::Id;
use crate::ops::dump::{ArchiveFormat, DumpError};
use crate::ops::forget::SnapshotFilter;
use crate::ops::rewrite::{RewriteReport, RewriteTarget};
use crate::restorer::split_subpath;

/// `--host`, `--path` and `--tag`, choosing snapshots (and what `latest` is).
#[derive(Args, Clone, Default)]
pub(super) struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Only snapshots with all of these comma-separated tags (repeatable: any list)
    #[arg(long = "tag", value_name = "TAGS")]
    tags: Vec<String>,
    /// Only snapshots that include this absolute path (repeatable)
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<PathBuf>,
}

impl FilterArgs {
    pub(super) fn filter(&self) -> Result<SnapshotFilter> {
        let mut paths = Vec::new();
        for p in &self.paths {
            let abs = absolute_path(p).map_err(|e| anyhow!("{}: {e}", p.display()))?;
            paths.push(abs.as_os_str().as_bytes().to_vec());
        }
        Ok(SnapshotFilter { hosts: self.hosts.clone(), tags: super::maintenance::tag_lists(&self.tags), paths })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ArchiveArg {
    Tar,
    Zip,
}

#[derive(Args)]
pub(super) struct DumpArgs {
    /// `latest`, a snapshot id or prefix, optionally followed by `:path/inside`
    snapshot: String,
    /// The archive a directory is written as
    #[arg(long, value_enum, default_value = "tar")]
    archive: ArchiveArg,
    /// Write to this file instead of standard output
    #[arg(long, short = 't', value_name = "FILE")]
    target: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(super) async fn cmd_dump(g: &Global, a: DumpArgs) -> Result<u8> {
    let (spec, sub) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s.to_string(), p.to_string()),
        None => (a.snapshot.clone(), String::new()),
    };
    let subpath = split_subpath(OsString::from(sub).as_bytes())?;
    let filter = a.filter.filter()?;
    let format = match a.archive {
        ArchiveArg::Tar => ArchiveFormat::Tar,
        ArchiveArg::Zip => ArchiveFormat::Zip,
    };
    let repo = open_repo(g).await?;
    let out: Box<dyn Write + Send> = match &a.target {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => Box::new(std::io::stdout()),
    };
    // As restic does, an archive is not written to a terminal.
    let archive_allowed = a.target.is_some() || !std::io::stdout().is_terminal();
    let summary = match crate::ops::dump::dump(&repo, &spec, &filter, &subpath, format, out, archive_allowed).await {
        Ok(s) => s,
        Err(e @ DumpError::Write(_)) => return Err(e.into()),
        Err(DumpError::Repo(e)) => {
            if let Some(path) = &a.target {
                // What was written is not a valid file or archive.
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    for s in &summary.skipped {
        errln!(
            "warning: {}: a {} cannot be written to a {} archive; skipped",
            escape(&s.path),
            s.kind,
            summary.written_as
        );
    }
    // Standard output carries the dump itself unless --target was given.
    let text = if g.json {
        serde_json::to_string_pretty(&summary)?
    } else {
        format!(
            "dumped {} of snapshot {} as {}: {} files ({}), {} directories, {} symlinks, {} hard links",
            if summary.path.is_empty() { "everything".to_string() } else { escape(&summary.path) },
            &summary.snapshot_id[..8],
            summary.written_as,
            summary.files,
            super::human(summary.bytes),
            summary.dirs,
            summary.symlinks,
            summary.hardlinks
        )
    };
    match &a.target {
        Some(path) => {
            outln!("{text}");
            if !g.json {
                outln!("written to {}", escape_path(path));
            }
        }
        None if g.json => errln!("{text}"),
        None => {}
    }
    Ok(0)
}

#[derive(Args)]
pub(super) struct RewriteArgs {
    /// Snapshots to rewrite: ids, unique prefixes or `latest` (default: every snapshot the filters match)
    snapshots: Vec<String>,
    /// Leave out paths matching this gitignore-style pattern, matched as at
    /// snapshot time against the absolute source path (repeatable)
    #[arg(long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// The same, ignoring case (repeatable)
    #[arg(long = "iexclude", value_name = "PATTERN")]
    iexcludes: Vec<String>,
    /// Read exclude patterns from this file, one per line (repeatable)
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Read case-insensitive exclude patterns from this file (repeatable)
    #[arg(long, value_name = "FILE")]
    iexclude_file: Vec<PathBuf>,
    /// Delete each original snapshot once its rewritten copy is saved
    #[arg(long)]
    forget: bool,
    /// Show what would change; write nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(super) async fn cmd_rewrite(g: &Global, a: RewriteArgs) -> Result<u8> {
    let opts = ExcludeOptions {
        patterns: a.excludes,
        ipatterns: a.iexcludes,
        pattern_files: a.exclude_file,
        ipattern_files: a.iexclude_file,
        ignore_file: None,
        ..ExcludeOptions::default()
    };
    if opts.patterns.is_empty()
        && opts.ipatterns.is_empty()
        && opts.pattern_files.is_empty()
        && opts.ipattern_files.is_empty()
    {
        anyhow::bail!("nothing to do: give --exclude, --iexclude, --exclude-file or --iexclude-file");
    }
    let exclusions = Exclusions::new(&opts)?;
    let target = RewriteTarget { specs: a.snapshots, filter: a.filter.filter()?, forget: a.forget, dry_run: a.dry_run };
    let repo = open_repo(g).await?;
    let report = crate::ops::rewrite::rewrite(&repo, &target, &exclusions).await?;
    print_report(g, &report, "rewritten")
}

/// Prints what `rewrite` or `repair snapshots` did; exit code 1 when a
/// snapshot could not be repaired or read.
pub(super) fn print_report(g: &Global, r: &RewriteReport, done: &str) -> Result<u8> {
    let short = |hex: &str| Id::from_stored_name(hex).map(|id| id.short()).unwrap_or_else(|| hex.to_string());
    if g.json {
        outln!("{}", serde_json::to_string_pretty(r)?);
    } else {
        let would = if r.dry_run { "would be " } else { "" };
        for s in &r.rewritten {
            match &s.new {
                Some(new) => outln!(
                    "snapshot {} {done} as {}{}",
                    short(&s.original),
                    short(new),
                    if s.forgotten { "; original forgotten" } else { "" }
                ),
                None => outln!("snapshot {} {would}{done}", short(&s.original)),
            }
            for e in &s.removed {
                outln!("  {}removed {}: {}", would, escape(&e.path), escape(&e.reason));
            }
        }
        outln!(
            "{} snapshots looked at: {} {would}{done}, {} unchanged; {} new trees{}",
            r.snapshots,
            r.rewritten.len(),
            r.unchanged,
            r.trees_written,
            if r.dry_run {
                " (dry run: nothing written)".to_string()
            } else {
                format!(" in {} packs", r.packs_written)
            }
        );
    }
    for u in &r.unrepairable {
        errln!(
            "error: snapshot {} cannot be repaired: {}{}",
            short(&u.snapshot),
            escape(&u.reason),
            if u.forgotten { "; removed" } else { "; `--forget` removes it" }
        );
    }
    for (id, e) in &r.unreadable {
        errln!("error: snapshot {}: {}", short(id), escape(e));
    }
    Ok(if r.unrepairable.iter().any(|u| !u.forgotten) || !r.unreadable.is_empty() { 1 } else { 0 })
}
