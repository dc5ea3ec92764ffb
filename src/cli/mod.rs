//! The command line: flags (clap), password and repository resolution,
//! logging setup, progress bars and everything printed. The rest of the
//! library never prints.

#[macro_use]
mod output;
pub mod config;
mod copy;
mod inspect;
mod maintenance;
mod pacing;
mod progress;
mod repair;
mod telegram;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::json;

use crate::archiver::{Exclusions, ParentChoice, SnapshotOptions};
use crate::backend::local::LocalBackend;
use crate::backend::retry::RetryBackend;
use crate::backend::{Backend, BackendError};
use crate::format::snapshot::Snapshot;
use crate::format::Id;
use crate::format_time;
use crate::ops;
use crate::ops::check::VerifyScope;
use crate::repo::{RepoError, Repository};
use crate::restorer::{split_subpath, RestoreOptions};
use config::PasswordSource;
use output::{escape, escape_bytes, escape_path, is_broken_pipe};
use progress::Bar;

/// Exit codes beyond 0 (success) and 1 (failure).
pub mod exit {
    /// A snapshot was saved but some files could not be read, or changed
    /// while they were read.
    pub const PARTIAL: u8 = 3;
    pub const NO_REPOSITORY: u8 = 10;
    pub const LOCKED: u8 = 11;
    pub const WRONG_PASSWORD: u8 = 12;
    /// Telegram needs `tstor login`.
    pub const NEEDS_LOGIN: u8 = 13;
    /// A snapshot stopped at `--max-upload` or `--max-duration`: what it
    /// uploaded is indexed, no snapshot was saved; the next run goes on.
    pub const STOPPED: u8 = 4;
}

#[derive(Parser)]
#[command(
    name = "tstor",
    version,
    about = "Encrypted, deduplicating snapshot backups to a local directory or a Telegram channel"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
#[command(next_help_heading = "Global options")]
struct Global {
    /// Repository: a path, `local:PATH`, or `telegram:me|@name|-100ID|new:"Title"` (default: the built-in repository under your data directory)
    #[arg(short = 'r', long, env = "TSTOR_REPOSITORY", global = true)]
    repo: Option<String>,
    /// Read the password from this file (first line)
    #[arg(long, env = "TSTOR_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its first output line as the password
    #[arg(long, env = "TSTOR_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Local cache directory (default: under your cache directory)
    #[arg(long, env = "TSTOR_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Do not use a local cache
    #[arg(long, global = true)]
    no_cache: bool,
    /// Print results as JSON
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More logging on stderr (-v info, -vv debug, -vvv trace); TSTOR_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Also write logs to this file
    #[arg(long, global = true)]
    log_file: Option<PathBuf>,
    /// Configuration file (default: tstor/config.toml in your config directory)
    #[arg(long, env = "TSTOR_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Use this profile of the configuration file
    #[arg(short = 'P', long, env = "TSTOR_PROFILE", global = true, value_name = "NAME")]
    profile: Option<String>,
    /// What the configuration file says (filled in after parsing)
    #[arg(skip)]
    settings: config::Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new encrypted repository (--from-repo: to copy another into)
    Init(copy::InitArgs),
    /// Back up files and directories
    #[command(visible_alias = "backup")]
    Snapshot(SnapshotArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot, or a path inside one
    Restore(RestoreArgs),
    /// Check the repository's structure and, with --verify, its contents
    Check(CheckArgs),
    /// List the entries of a snapshot, or of a path inside one
    Ls(inspect::LsArgs),
    /// Find entries by name, path or modification time across snapshots
    Find(inspect::FindArgs),
    /// Show what changed between two snapshots
    Diff(inspect::DiffArgs),
    /// Restore size, deduplicated size, stored size and compression
    Stats(inspect::StatsArgs),
    /// Print a decrypted repository object as JSON (for debugging)
    Cat(inspect::CatArgs),
    /// Add, remove or replace the tags of snapshots
    Tag(inspect::TagArgs),
    /// Manage the passwords (key slots) that open the repository
    #[command(subcommand)]
    Key(inspect::KeyCommand),
    /// Remove snapshots by a retention policy (--keep-daily 7 ...) or by id
    Forget(maintenance::ForgetArgs),
    /// Delete the data no snapshot uses and repack partly used packs
    Prune(maintenance::PruneArgs),
    /// Remove stale locks (--remove-all: every lock)
    Unlock(maintenance::UnlockArgs),
    /// Log in to Telegram (phone, code and 2FA password, or --bot-token); needs TSTOR_TG_API_ID and TSTOR_TG_API_HASH
    Login(telegram::LoginArgs),
    /// Log out of Telegram and delete the session file
    Logout,
    /// Rebuild what can be rebuilt from the packs
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Copy snapshots from another repository (--from-repo) into this one
    Copy(copy::CopyArgs),
    /// Print a shell completion script: `tstor completions bash > /etc/bash_completion.d/tstor`
    Completions(CompletionsArgs),
}

#[derive(Args)]
struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args)]
struct SnapshotArgs {
    /// Files and directories to back up; each is stored under its own name
    /// (default: `paths` of the configuration file)
    paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Leave out paths matching this gitignore-style pattern (`*.o`, `cache/`,
    /// `/abs/path`, `!keep`; repeatable)
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
    /// Leave out directories holding an entry of this name, e.g. `.nobackup` (repeatable)
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Leave out directories holding a valid CACHEDIR.TAG
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out files larger than this (e.g. `10M`, `1GiB`)
    #[arg(long, value_name = "SIZE", value_parser = |s: &str| ops::check::parse_size(s))]
    exclude_larger_than: Option<u64>,
    /// Do not cross into other file systems
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Record this host name instead of the machine's
    #[arg(long)]
    host: Option<String>,
    /// Compare against this snapshot instead of the latest of the same host and paths
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, even those unchanged since the parent
    #[arg(long)]
    force: bool,
    /// Upload at most this fast, in bytes per second with a size unit:
    /// `5MiB` (or `5MiB/s`), `500KiB`; units are powers of 1024
    #[arg(long, value_name = "RATE", value_parser = |s: &str| pacing::parse_rate(s))]
    limit_upload: Option<u64>,
    /// Stop after this long (`45s`, `90m`, `8h`, `1h30m`, `2d`): what was
    /// uploaded is indexed, no snapshot is saved, exit code 4
    #[arg(long, value_name = "DURATION", value_parser = |s: &str| pacing::parse_duration(s))]
    max_duration: Option<std::time::Duration>,
    /// Upload at most this many bytes of packs this run (`50GiB`): what was
    /// uploaded is indexed, no snapshot is saved, exit code 4
    #[arg(long, value_name = "SIZE", value_parser = |s: &str| ops::check::parse_size(s))]
    max_upload: Option<u64>,
}

#[derive(Args)]
struct SnapshotsArgs {
    /// Only snapshots of this host
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots with this tag
    #[arg(long)]
    tag: Vec<String>,
}

#[derive(Args)]
struct RestoreArgs {
    /// `latest`, a snapshot id or prefix, optionally followed by `:path/inside`
    snapshot: String,
    /// Directory to restore into
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Only restore paths matching this glob (relative to the restored tree; repeatable)
    #[arg(long)]
    include: Vec<String>,
    /// Do not restore paths matching this glob (repeatable)
    #[arg(long)]
    exclude: Vec<String>,
    /// Re-read restored files and check them against the snapshot
    #[arg(long)]
    verify: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// Download and verify every pack
    #[arg(long, conflicts_with = "verify_subset")]
    verify: bool,
    /// Verify a random part: `10%` of the packs or about `500MiB`
    #[arg(long)]
    verify_subset: Option<String>,
}

/// The whole command line, for completions and the man page.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Completions(a) = &cli.command {
        let mut script = Vec::new();
        clap_complete::generate(a.shell, &mut command(), "tstor", &mut script);
        // A closed pipe is the reader's choice, not a failure.
        let _ = std::io::stdout().lock().write_all(&script);
        return ExitCode::SUCCESS;
    }
    // Trouble with the local cache never stops a command; the user reads one line about it.
    crate::cache::set_warning_sink(|message| eprintln!("tstor: warning: {message}"));
    let _log_guard = match init_logging(&cli.global) {
        Ok(g) => g,
        Err(e) => {
            errln!("tstor: {}", escape(&format!("{e:#}")));
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = config::apply(&mut cli.global) {
        errln!("tstor: {}", escape(&e.to_string()));
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            errln!("tstor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        // The reader of the output went away (`tstor ls | head`): not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("tstor: {}", escape(&format!("{e:#}")));
            tracing::error!(error = %format!("{e:#}"), "command failed");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if needs_login(e) {
        return exit::NEEDS_LOGIN;
    }
    match e.downcast_ref::<RepoError>() {
        Some(RepoError::Stopped { .. }) => exit::STOPPED,
        Some(RepoError::NoRepository(_)) => exit::NO_REPOSITORY,
        Some(RepoError::Locked(_)) => exit::LOCKED,
        Some(RepoError::WrongPassword) => exit::WRONG_PASSWORD,
        _ => 1,
    }
}

/// Whether anything in the error's chain says to run `tstor login`.
fn needs_login(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<RepoError>().is_some_and(|r| matches!(r, RepoError::Backend(b) if b.needs_login()))
            || c.downcast_ref::<BackendError>().is_some_and(BackendError::needs_login)
            || telegram::needs_login(c)
    })
}

struct LogGuard;

fn init_logging(g: &Global) -> Result<LogGuard> {
    use tracing_subscriber::{fmt, prelude::*, EnvFilter};
    let level = match g.verbose {
        0 => None,
        1 => Some("info"),
        2 => Some("debug"),
        _ => Some("trace"),
    };
    let env = std::env::var("TSTOR_LOG").ok().filter(|s| !s.is_empty());
    let stderr_filter = env.clone().or(level.map(String::from));
    let stderr_layer = stderr_filter.map(|f| {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_filter(EnvFilter::new(format!("tstor={f},{f}")))
    });
    let file_layer = match &g.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let f = env.or(level.map(String::from)).unwrap_or_else(|| "info".into());
            Some(fmt::layer().json().with_writer(std::sync::Mutex::new(file)).with_filter(EnvFilter::new(f)))
        }
        None => None,
    };
    tracing_subscriber::registry().with(stderr_layer).with(file_layer).try_init().ok();
    Ok(LogGuard)
}

/// Where the built-in local repository lives.
pub fn default_repository() -> Result<PathBuf> {
    let base = dirs::data_dir().ok_or_else(|| anyhow!("cannot find your data directory; give --repo"))?;
    Ok(base.join("tstor").join("repository"))
}

fn default_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("tstor"))
}

fn open_backend(g: &Global) -> Result<Arc<dyn Backend>> {
    open_backend_at(g, g.repo.clone())
}

/// The storage of the repository `spec` names (`None`: the built-in one).
fn open_backend_at(g: &Global, spec: Option<String>) -> Result<Arc<dyn Backend>> {
    let spec = spec.filter(|s| !s.is_empty());
    let path = match spec {
        None => default_repository()?,
        Some(s) if s.starts_with("telegram:") => return telegram::open_backend(g, &s["telegram:".len()..]),
        Some(s) => PathBuf::from(s.strip_prefix("local:").unwrap_or(&s)),
    };
    let local = LocalBackend::new(path);
    Ok(Arc::new(RetryBackend::new(local, 5, std::time::Duration::from_millis(200))))
}

fn first_line(bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
    let mut line = bytes[..end].to_vec();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

/// The password, from (in order) TSTOR_PASSWORD, a file, a command, or a prompt.
fn password(g: &Global, confirm: bool) -> Result<Vec<u8>> {
    if let Some(p) = std::env::var_os("TSTOR_PASSWORD") {
        return Ok(p.into_vec());
    }
    if let Some(f) = &g.password_file {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read password file {}", f.display()))?;
        return Ok(first_line(bytes));
    }
    if let Some(cmd) = &g.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run password command `{cmd}`"))?;
        if !out.status.success() {
            bail!("password command `{cmd}` failed with {}", out.status);
        }
        return Ok(first_line(out.stdout));
    }
    if let Some(PasswordSource::Literal(p)) = &g.settings.password {
        return Ok(p.clone().into_bytes());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password given: set TSTOR_PASSWORD, --password-file or --password-command");
    }
    let p = rpassword::prompt_password("Repository password: ").context("cannot read the password")?;
    if confirm {
        let again = rpassword::prompt_password("Repeat the password: ").context("cannot read the password")?;
        if again != p {
            bail!("the passwords do not match");
        }
    }
    Ok(p.into_bytes())
}

async fn open_repo(g: &Global) -> Result<Repository> {
    open_repo_on(g, open_backend(g)?).await
}

async fn open_repo_on(g: &Global, backend: Arc<dyn Backend>) -> Result<Repository> {
    let pw = password(g, false)?;
    let cache = if g.no_cache { None } else { g.cache_dir.clone().or_else(default_cache_dir) };
    Ok(Repository::open(backend, &pw, cache.as_deref()).await?)
}

fn progress_enabled(g: &Global) -> bool {
    !g.quiet && !g.json
}

async fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => copy::cmd_init(g, a).await,
        Command::Snapshot(a) => cmd_snapshot(g, a).await,
        Command::Snapshots(a) => cmd_snapshots(g, a).await,
        Command::Restore(a) => cmd_restore(g, a).await,
        Command::Check(a) => cmd_check(g, a).await,
        Command::Ls(a) => inspect::cmd_ls(g, a).await,
        Command::Find(a) => inspect::cmd_find(g, a).await,
        Command::Diff(a) => inspect::cmd_diff(g, a).await,
        Command::Stats(a) => inspect::cmd_stats(g, a).await,
        Command::Cat(a) => inspect::cmd_cat(g, a).await,
        Command::Tag(a) => inspect::cmd_tag(g, a).await,
        Command::Key(c) => inspect::cmd_key(g, c).await,
        Command::Forget(a) => maintenance::cmd_forget(g, a).await,
        Command::Prune(a) => maintenance::cmd_prune(g, a).await,
        Command::Unlock(a) => maintenance::cmd_unlock(g, a).await,
        Command::Login(a) => telegram::cmd_login(g, a).await,
        Command::Logout => telegram::cmd_logout(g).await,
        Command::Repair(c) => repair::cmd_repair(g, c).await,
        Command::Copy(a) => copy::cmd_copy(g, a).await,
        Command::Completions(_) => Ok(0),
    }
}

/// The configuration's excludes plus the command line's.
fn exclusions(g: &Global, a: &SnapshotArgs) -> Result<Exclusions> {
    let mut ex = g.settings.excludes.clone();
    ex.patterns.extend(a.excludes.iter().cloned());
    ex.ipatterns.extend(a.iexcludes.iter().cloned());
    ex.pattern_files.extend(a.exclude_file.iter().cloned());
    ex.ipattern_files.extend(a.iexclude_file.iter().cloned());
    ex.if_present.extend(a.exclude_if_present.iter().cloned());
    ex.caches |= a.exclude_caches;
    ex.larger_than = a.exclude_larger_than.or(ex.larger_than);
    ex.one_file_system |= a.one_file_system;
    Ok(Exclusions::new(&ex)?)
}

async fn cmd_snapshot(g: &Global, mut a: SnapshotArgs) -> Result<u8> {
    if a.paths.is_empty() {
        a.paths = g.settings.paths.clone();
    }
    if a.paths.is_empty() {
        bail!("nothing to back up: give paths, or `paths` in the configuration file");
    }
    let exclusions = exclusions(g, &a)?;
    // The run's clock starts before the repository is opened.
    let started = std::time::Instant::now();
    let mut backend = open_backend(g)?;
    if let Some(rate) = a.limit_upload.or(g.settings.limit_upload) {
        let limiter = Arc::new(crate::backend::throttle::UploadLimiter::new(rate));
        backend = Arc::new(crate::backend::throttle::ThrottledBackend::new(backend, limiter));
    }
    let repo = open_repo_on(g, backend).await?;
    let mut opts = SnapshotOptions::new(a.paths.clone());
    opts.budget.max_upload = a.max_upload.or(g.settings.max_upload);
    opts.budget.deadline = a.max_duration.or(g.settings.max_duration).map(|d| started + d);
    if let Some(size) = repo.backend().preferred_pack_size() {
        opts.pipeline.data_pack_size = size;
    }
    opts.tags = a.tags;
    opts.exclusions = exclusions;
    if let Some(h) = a.host {
        opts.hostname = h;
    }
    opts.parent = match (a.force, a.parent) {
        (true, _) => ParentChoice::None,
        (false, Some(p)) => ParentChoice::Id(p),
        (false, None) => ParentChoice::Latest,
    };
    let bar = Arc::new(Bar::new(progress_enabled(g), "snapshot").logging_progress());
    if (progress_enabled(g) && std::io::stderr().is_terminal()) || bar.logs_progress() {
        let (bar, paths, ex) = (bar.clone(), a.paths.clone(), opts.exclusions.clone());
        std::thread::spawn(move || {
            crate::archiver::scan_totals(&paths, &ex, |_, bytes| bar.set_total(bytes));
        });
    }
    let outcome = match ops::snapshot(&repo, opts, bar.clone()).await {
        Ok(o) => o,
        Err(e @ RepoError::Stopped { .. }) => {
            bar.finish();
            if g.json {
                if let RepoError::Stopped { reason, packs, bytes } = &e {
                    outln!("{}", json!({ "stopped": reason, "packs_uploaded": packs, "bytes_uploaded": bytes }));
                }
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    bar.finish();
    let s = &outcome.snapshot.summary;
    if g.json {
        let errors: Vec<_> =
            outcome.errors.iter().map(|(p, e)| json!({ "path": p.display().to_string(), "error": e })).collect();
        let changed: Vec<_> = outcome.changed.iter().map(|p| p.display().to_string()).collect();
        outln!(
            "{}",
            json!({
                "snapshot_id": outcome.id.to_hex(),
                "short_id": outcome.id.short(),
                "parent": outcome.snapshot.parent.map(|p| p.to_hex()),
                "files_new": s.files_new,
                "files_changed": s.files_changed,
                "files_unchanged": s.files_unchanged,
                "dirs": s.dirs,
                "other_nodes": s.other_nodes,
                "data_blobs_added": s.data_blobs_added,
                "tree_blobs_added": s.tree_blobs_added,
                "bytes_read": s.bytes_read,
                "bytes_added": s.bytes_added,
                "bytes_stored": s.bytes_stored,
                "total_bytes": s.total_bytes,
                "duration_seconds": (s.end_ns - s.start_ns) as f64 / 1e9,
                "recovered_packs": outcome.recovered_packs,
                "unreadable_packs": outcome
                    .unreadable_packs
                    .iter()
                    .map(|(id, reason)| json!({ "id": id.to_hex(), "reason": reason }))
                    .collect::<Vec<_>>(),
                "errors": errors,
                "changed_files": changed,
            })
        );
    } else {
        let while_read = match outcome.changed.len() {
            0 => String::new(),
            n => format!(" ({n} changed while read)"),
        };
        outln!(
            "files: {} new, {} changed, {} unchanged{while_read}; {} directories",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs
        );
        outln!(
            "read {}, added {} ({} stored) in {:.1}s",
            human(s.bytes_read),
            human(s.bytes_added),
            human(s.bytes_stored),
            (s.end_ns - s.start_ns) as f64 / 1e9
        );
        outln!("snapshot {} saved", outcome.id.short());
    }
    for (id, reason) in &outcome.unreadable_packs {
        errln!("warning: {}", escape(&crate::repo::describe_unreadable_pack(&id.short(), reason)));
    }
    for (p, e) in &outcome.errors {
        errln!("error: {}: {}", escape_path(p), escape(e));
    }
    for p in &outcome.changed {
        errln!("warning: {}: file changed while it was read; stored as read, possibly inconsistent", escape_path(p));
    }
    if !outcome.errors.is_empty() {
        errln!("tstor: {} paths could not be read and are missing from the snapshot", outcome.errors.len());
    }
    if !outcome.changed.is_empty() {
        errln!("tstor: {} files changed while they were read", outcome.changed.len());
    }
    if outcome.errors.is_empty() && outcome.changed.is_empty() {
        Ok(0)
    } else {
        Ok(exit::PARTIAL)
    }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": format_time(s.time_ns),
        "time_ns": s.time_ns,
        "hostname": s.hostname,
        "username": s.username,
        "paths": s.paths.iter().map(|p| lossy(p)).collect::<Vec<_>>(),
        "tags": s.tags,
        "parent": s.parent.map(|p| p.to_hex()),
        "tree": s.tree.to_hex(),
        "summary": s.summary,
    })
}

async fn cmd_snapshots(g: &Global, a: SnapshotsArgs) -> Result<u8> {
    let repo = open_repo(g).await?;
    let (snaps, bad) = repo.snapshots().await?;
    let snaps: Vec<_> = snaps
        .into_iter()
        .filter(|(_, s)| a.host.as_ref().is_none_or(|h| &s.hostname == h))
        .filter(|(_, s)| a.tag.iter().all(|t| s.tags.contains(t)))
        .collect();
    if g.json {
        let list: Vec<_> = snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  Paths", "ID", "Time (UTC)", "Host", "Tags", "Size")?;
        for (id, s) in &snaps {
            let paths: Vec<String> = s.paths.iter().map(|p| escape_bytes(p)).collect();
            let tags: Vec<String> = s.tags.iter().map(|t| escape(t)).collect();
            writeln!(
                out,
                "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  {}",
                id.short(),
                format_time(s.time_ns),
                escape(&s.hostname),
                tags.join(","),
                human(s.summary.total_bytes),
                paths.join(", ")
            )?;
        }
        writeln!(out, "{} snapshots", snaps.len())?;
    }
    for (id, e) in &bad {
        errln!("error: snapshot {}: {}", id.short(), escape(&e.to_string()));
    }
    Ok(if bad.is_empty() { 0 } else { 1 })
}

fn globset(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p.trim_start_matches('/')).with_context(|| format!("bad pattern `{p}`"))?);
    }
    Ok(Some(b.build()?))
}

async fn cmd_restore(g: &Global, a: RestoreArgs) -> Result<u8> {
    let repo = open_repo(g).await?;
    let (spec, sub) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s.to_string(), p.to_string()),
        None => (a.snapshot.clone(), String::new()),
    };
    let mut opts = RestoreOptions::new(a.target.clone());
    opts.subpath = split_subpath(OsString::from(sub).as_bytes())?;
    opts.include = globset(&a.include)?;
    opts.exclude = globset(&a.exclude)?;
    opts.verify = a.verify;
    let bar = Arc::new(Bar::new(progress_enabled(g), "restore"));
    let (id, _snap, outcome) = ops::restore(&repo, &spec, &opts, bar.clone()).await?;
    bar.finish();
    if g.json {
        outln!(
            "{}",
            json!({ "snapshot_id": id.to_hex(), "target": a.target.display().to_string(), "result": outcome })
        );
    } else {
        outln!(
            "restored snapshot {} to {}: {} files ({}), {} directories, {} links{}",
            id.short(),
            escape_path(&a.target),
            outcome.files,
            human(outcome.bytes),
            outcome.dirs,
            outcome.links,
            if a.verify { format!(", {} files verified", outcome.verified_files) } else { String::new() }
        );
    }
    if outcome.errors.is_empty() {
        return Ok(0);
    }
    for e in &outcome.errors {
        errln!("error: {}:{}", id.short(), escape(e));
    }
    errln!("tstor: {} entries were not restored", outcome.not_restored());
    Ok(1)
}

async fn cmd_check(g: &Global, a: CheckArgs) -> Result<u8> {
    let repo = open_repo(g).await?;
    let scope = match (&a.verify_subset, a.verify) {
        (Some(s), _) => VerifyScope::parse_subset(s).map_err(|e| anyhow!(e))?,
        (None, true) => VerifyScope::All,
        (None, false) => VerifyScope::None,
    };
    let bar = Arc::new(Bar::new(progress_enabled(g) && scope != VerifyScope::None, "verify"));
    let report = ops::check(&repo, scope, bar.clone()).await?;
    bar.finish();
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "{} snapshots, {} packs, {} blobs, {} trees checked; {} packs ({}) verified",
            report.snapshots,
            report.packs,
            report.blobs,
            report.trees_checked,
            report.packs_verified,
            human(report.bytes_verified)
        );
        for w in &report.warnings {
            outln!("warning: {}", escape(w));
        }
    }
    if report.ok() {
        if !g.json {
            outln!("no errors were found");
        }
        return Ok(0);
    }
    for p in &report.problems {
        let mut where_ = Vec::new();
        if let Some(pack) = &p.pack {
            where_.push(format!("pack {pack}"));
        }
        if let Some(blob) = &p.blob {
            where_.push(format!("blob {blob}"));
        }
        errln!(
            "error: {}{}",
            if where_.is_empty() { String::new() } else { format!("{}: ", where_.join(", ")) },
            escape(&p.message)
        );
    }
    for path in &report.damaged_paths {
        errln!("damaged: {}", escape(path));
    }
    errln!("tstor: the repository has {} problems", report.problems.len());
    let mut packs: Vec<&str> = report.problems.iter().filter_map(|p| p.pack.as_deref()).collect();
    packs.sort_unstable();
    packs.dedup();
    if !packs.is_empty() {
        errln!(
            "tstor: `tstor repair packs {}` rewrites the damaged packs; then a snapshot of the same sources stores again what was lost",
            packs.join(" ")
        );
    }
    Ok(1)
}

/// Bytes as a short human-readable size.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
