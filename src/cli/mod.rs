//! The command line: flags (clap), password and repository resolution,
//! logging setup, progress bars and everything printed. The rest of the
//! library never prints.

#[macro_use]
mod output;
mod admin;
pub mod config;
mod copy;
mod inspect;
pub mod jsonl;
mod maintenance;
pub mod manual;
mod messages;
mod mount;
mod pacing;
mod progress;
mod repair;
mod signals;
mod snapshot_commands;
mod telegram;
pub mod times;
mod views;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::archiver::{Exclusions, ParentChoice, SnapshotOptions};
use crate::backend::local::LocalBackend;
use crate::backend::retry::RetryBackend;
use crate::backend::{Backend, BackendError};
use crate::format::snapshot::Snapshot;
use crate::format::Id;
use crate::ops;
use crate::ops::check::VerifyScope;
use crate::repo::{RepoError, Repository};
use crate::restorer::{split_subpath, Overwrite, RestoreOptions};
use config::PasswordSource;
use output::{count, escape, escape_bytes, escape_path, is_broken_pipe};
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
    /// Telegram could not be reached within the bound
    /// (`TSTOR_TG_UNREACHABLE_TIMEOUT`, 300 seconds by default).
    pub const UNREACHABLE: u8 = 14;
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
    /// No progress bars, and no summary when a command succeeds (for cron)
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Show times in UTC instead of the local time zone (also read --newer/--older in UTC)
    #[arg(long, global = true)]
    utc: bool,
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
    /// While another process holds a conflicting lock, keep trying this long (`5m`, `1h`)
    #[arg(long, global = true, value_name = "DURATION", value_parser = |s: &str| pacing::parse_duration(s))]
    retry_lock: Option<std::time::Duration>,
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
    /// Write a file of a snapshot to stdout, or a directory as a tar or zip stream
    Dump(snapshot_commands::DumpArgs),
    /// Rewrite snapshots without the paths that exclude patterns match
    Rewrite(snapshot_commands::RewriteArgs),
    /// Show the snapshots as a read-only file system until Ctrl-C or SIGTERM
    Mount(mount::MountArgs),
    /// Rebuild what can be rebuilt from the packs
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Copy snapshots from another repository (--from-repo) into this one
    Copy(copy::CopyArgs),
    /// Print a shell completion script: `tstor completions bash > ~/.local/share/bash-completion/completions/tstor`
    /// (zsh: `_tstor` in a directory of $fpath; fish: ~/.config/fish/completions/tstor.fish)
    Completions(CompletionsArgs),
    /// Print the version of tstor and of the repository format it writes
    Version,
    /// List the ids of stored objects of one kind
    List(admin::ListArgs),
    /// List the local caches, or remove those not used for a while (--cleanup)
    Cache(admin::CacheArgs),
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
    /// (default: `paths` of the configuration file). With
    /// --stdin-from-command: the command and its arguments, after `--`
    paths: Vec<PathBuf>,
    /// Back up standard input as one file
    #[arg(long, conflicts_with_all = ["stdin_from_command", "files_from", "files_from_verbatim", "files_from_raw"])]
    stdin: bool,
    /// The name of the file standard input (or the command's output) is stored as
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    stdin_filename: String,
    /// Run the command given after `--` and back up its output as one file;
    /// if the command fails, no snapshot is saved
    #[arg(long, conflicts_with_all = ["files_from", "files_from_verbatim", "files_from_raw"])]
    stdin_from_command: bool,
    /// Read the paths to back up from this file, one a line (`#` comments and
    /// empty lines skipped; `-` is standard input; repeatable)
    #[arg(long, value_name = "FILE")]
    files_from: Vec<PathBuf>,
    /// The same, every line a path as it is (no comments)
    #[arg(long, value_name = "FILE")]
    files_from_verbatim: Vec<PathBuf>,
    /// The same, paths separated by NUL bytes (`find -print0`)
    #[arg(long, value_name = "FILE")]
    files_from_raw: Vec<PathBuf>,
    /// Save no snapshot when nothing changed since the parent
    #[arg(long)]
    skip_if_unchanged: bool,
    /// Read everything and report what would be added; write nothing to the repository
    #[arg(long)]
    dry_run: bool,
    /// The snapshot's time instead of now: RFC 3339 (`2026-01-02T03:04:05Z`,
    /// `...+02:00`) or `YYYY-MM-DD[ HH:MM[:SS]]` in local time (UTC with --utc)
    #[arg(long, value_name = "TIME", value_parser = |s: &str| times::check(s))]
    time: Option<String>,
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
    /// Only snapshots of this host (repeatable: any of them)
    #[arg(long)]
    host: Vec<String>,
    /// Only snapshots with this tag (repeatable: all of them)
    #[arg(long)]
    tag: Vec<String>,
    /// Only snapshots whose paths include this one (repeatable: all of them)
    #[arg(long, value_name = "PATH")]
    path: Vec<PathBuf>,
    /// Only the newest N snapshots (of each group with --group-by)
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
    /// Only id, time, host and tags
    #[arg(short = 'c', long)]
    compact: bool,
    /// Group by these, comma-separated: host, paths, tags
    #[arg(short = 'g', long, value_name = "FIELDS", value_delimiter = ',', value_enum)]
    group_by: Vec<GroupBy>,
}

/// What `snapshots --group-by` groups by.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GroupBy {
    Host,
    Paths,
    Tags,
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
    /// What to do with files already in the target: `always` write them,
    /// `if-changed` keep those whose size and modification time match,
    /// `if-newer` write only where the snapshot's is newer, `never` keep them
    #[arg(long, value_name = "MODE", default_value = "always", value_parser = |s: &str| s.parse::<Overwrite>())]
    overwrite: Overwrite,
    /// Remove what the target holds and the snapshot lacks (in the directories restored)
    #[arg(long)]
    delete: bool,
    /// Write nothing; report what would change (listed with -v)
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    filter: admin::LatestFilter,
}

#[derive(Args)]
struct CheckArgs {
    /// Download and verify every pack
    #[arg(long, conflicts_with = "verify_subset")]
    verify: bool,
    /// Verify a random part: `10%` of the packs or about `500MiB`
    #[arg(long)]
    verify_subset: Option<String>,
    /// Only the snapshots of this host
    #[arg(long)]
    host: Option<String>,
    /// Only the snapshots with this tag (repeatable: all of them)
    #[arg(long)]
    tag: Vec<String>,
    /// Only these snapshots (ids, prefixes or `latest`); with a filter, only
    /// their trees are read and only the packs they use are verified
    snapshots: Vec<String>,
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
    // A storage that cannot be reached is said at once, not after minutes of silence.
    crate::backend::telegram::retry::set_retry_notice(|message| errln!("tstor: {}", escape(message)));
    let _log_guard = match init_logging(&cli.global) {
        Ok(g) => g,
        Err(e) => {
            errln!("tstor: {}", escape(&format!("{e:#}")));
            return ExitCode::FAILURE;
        }
    };
    times::choose(cli.global.utc);
    if let Err(e) = config::apply(&mut cli.global) {
        errln!("tstor: {}", escape(&e.to_string()));
        return ExitCode::FAILURE;
    }
    if let Some(wait) = cli.global.retry_lock {
        crate::repo::lock::set_retry_lock(wait);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            errln!("tstor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.global.json;
    // A snapshot stops itself cleanly at a signal; other commands are stopped where they are.
    let stops_itself = matches!(cli.command, Command::Snapshot(_));
    // `mount` runs until a signal, which is its normal end: its own handlers
    // unmount the view and it exits 0.
    let ends_at_a_signal = matches!(cli.command, Command::Mount(_));
    let result = runtime.block_on(async {
        if ends_at_a_signal {
            return run(cli).await;
        }
        let signalled = signals::listen();
        if stops_itself {
            return run(cli).await;
        }
        tokio::select! {
            r = run(cli) => r,
            signo = signalled => {
                crate::repo::lock::release_abandoned().await;
                Err(anyhow!("interrupted by {}", crate::archiver::signal_name(signo)))
            }
        }
    });
    let signalled = signals::stop_request().requested();
    match result {
        Ok(code) => ExitCode::from(signalled.map_or(code, signals::exit_code)),
        // The reader of the output went away (`tstor ls | head`): not an error.
        Err(e) if is_broken_pipe(&e) && signalled.is_none() => ExitCode::SUCCESS,
        Err(e) => {
            let code = signalled.map_or_else(|| exit_code(&e), signals::exit_code);
            if json {
                jsonl::exit_error(code, &format!("{e:#}"));
            } else {
                errln!("tstor: {}", escape(&format!("{e:#}")));
            }
            tracing::error!(error = %format!("{e:#}"), "command failed");
            ExitCode::from(code)
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if needs_login(e) {
        return exit::NEEDS_LOGIN;
    }
    if unreachable(e) {
        return exit::UNREACHABLE;
    }
    match e.downcast_ref::<RepoError>() {
        Some(RepoError::Stopped { .. }) => exit::STOPPED,
        Some(RepoError::NoRepository(_)) => exit::NO_REPOSITORY,
        Some(RepoError::Locked(_)) => exit::LOCKED,
        Some(RepoError::WrongPassword) => exit::WRONG_PASSWORD,
        _ => 1,
    }
}

/// Whether the storage could not be reached (Telegram down or no network).
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<RepoError>().is_some_and(|r| matches!(r, RepoError::Backend(b) if b.is_unreachable()))
            || c.downcast_ref::<BackendError>().is_some_and(BackendError::is_unreachable)
    })
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
            // Colour only for a person at a terminal: never in cron mail or a redirected log.
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
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

/// A password given without a prompt: the environment variable `var`, the
/// first line of `file`, or the first line a shell command prints, in that
/// order; `None` when none of them is given.
fn given_password(var: &str, file: Option<&Path>, command: Option<&str>) -> Result<Option<Vec<u8>>> {
    if let Some(p) = std::env::var_os(var) {
        return Ok(Some(p.into_vec()));
    }
    if let Some(f) = file {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read password file {}", f.display()))?;
        return Ok(Some(first_line(bytes)));
    }
    if let Some(cmd) = command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run password command `{cmd}`"))?;
        if !out.status.success() {
            bail!("password command `{cmd}` failed with {}", out.status);
        }
        return Ok(Some(first_line(out.stdout)));
    }
    Ok(None)
}

/// The password, from (in order) TSTOR_PASSWORD, a file, a command, the
/// configuration file, the first line of standard input when it is not a
/// terminal, or a prompt.
fn password(g: &Global, confirm: bool) -> Result<Vec<u8>> {
    if let Some(p) = given_password("TSTOR_PASSWORD", g.password_file.as_deref(), g.password_command.as_deref())? {
        return Ok(p);
    }
    if let Some(PasswordSource::Literal(p)) = &g.settings.password {
        return Ok(p.clone().into_bytes());
    }
    if !std::io::stdin().is_terminal() {
        // `echo pw | tstor ...`: the first line of standard input, as restic reads it.
        let mut line = Vec::new();
        std::io::BufRead::read_until(&mut std::io::stdin().lock(), b'\n', &mut line)
            .context("cannot read the password from standard input")?;
        let line = first_line(line);
        if line.is_empty() {
            bail!("no password given: set TSTOR_PASSWORD, --password-file or --password-command, or pipe it on standard input");
        }
        return Ok(line);
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
        Command::Dump(a) => snapshot_commands::cmd_dump(g, a).await,
        Command::Rewrite(a) => snapshot_commands::cmd_rewrite(g, a).await,
        Command::Mount(a) => mount::cmd_mount(g, a).await,
        Command::Copy(a) => copy::cmd_copy(g, a).await,
        Command::Completions(_) => Ok(0),
        Command::Version => admin::cmd_version(g),
        Command::List(a) => admin::cmd_list(g, a).await,
        Command::Cache(a) => admin::cmd_cache(g, a),
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
    let stream = snapshot_stream(&mut a)?;
    if stream.is_none() {
        a.paths.extend(paths_from_files(&a)?);
        let listed = !(a.files_from.is_empty() && a.files_from_verbatim.is_empty() && a.files_from_raw.is_empty());
        if a.paths.is_empty() && !listed {
            a.paths = g.settings.paths.clone();
        }
        if a.paths.is_empty() {
            bail!("nothing to back up: give paths, or `paths` in the configuration file");
        }
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
    opts.budget.stop = signals::stop_request();
    if let Some(size) = repo.backend().preferred_pack_size() {
        opts.pipeline.data_pack_size = size;
    }
    opts.tags = a.tags;
    opts.exclusions = exclusions;
    opts.stream = stream;
    opts.time_ns = a.time.as_deref().map(times::parse).transpose()?;
    opts.skip_if_unchanged = a.skip_if_unchanged;
    opts.dry_run = a.dry_run;
    if let Some(h) = a.host {
        opts.hostname = h;
    }
    opts.parent = match (a.force, a.parent) {
        (true, _) => ParentChoice::None,
        (false, Some(p)) => ParentChoice::Id(p),
        (false, None) => ParentChoice::Latest,
    };
    let lines = jsonl::JsonLines::new();
    let mut bar = Bar::new(progress_enabled(g), "snapshot").logging_progress().listing_files(g.verbose >= 2 && !g.json);
    if g.json {
        bar = bar.with_json(&lines, g.verbose > 0);
    }
    let bar = Arc::new(bar);
    if opts.stream.is_none()
        && ((progress_enabled(g) && std::io::stderr().is_terminal()) || bar.logs_progress() || g.json)
    {
        let (bar, paths, ex) = (bar.clone(), a.paths.clone(), opts.exclusions.clone());
        std::thread::spawn(move || {
            crate::archiver::scan_totals(&paths, &ex, |files, bytes| bar.set_totals(files, bytes));
        });
    }
    let ticker = g.json.then(|| {
        let bar = bar.clone();
        lines.every_status_interval(move || bar.snapshot_status())
    });
    let result = ops::snapshot(&repo, opts, bar.clone()).await;
    if let Some(t) = ticker {
        t.stop();
    }
    let outcome = match result {
        Ok(o) => o,
        Err(e @ RepoError::Stopped { .. }) => {
            bar.finish();
            if g.json {
                if let RepoError::Stopped { reason, packs, bytes } = &e {
                    let stopped =
                        messages::SnapshotStopped { stopped: reason, packs_uploaded: *packs, bytes_uploaded: *bytes };
                    lines.emit("stopped", &stopped);
                }
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    bar.finish();
    let summary = crate::archiver::RunSummary::new(&outcome, started.elapsed());
    if g.json {
        lines.summary(&messages::SnapshotSummary::of(&outcome, &summary, a.dry_run));
    } else if !g.quiet {
        let last = if a.dry_run {
            "dry run: nothing was written to the repository".to_string()
        } else if !outcome.saved {
            format!("nothing changed since snapshot {}: no snapshot saved", outcome.id.short())
        } else {
            format!("snapshot {} saved", outcome.id.short())
        };
        print_snapshot_summary(&summary, outcome.changed.len(), &last);
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
        let n = outcome.errors.len();
        let verb = if n == 1 { "was" } else { "were" };
        errln!("tstor: {} could not be read and {verb} left out of the snapshot", count(n, "path"));
    }
    if !outcome.changed.is_empty() {
        errln!("tstor: {} changed while being read", count(outcome.changed.len(), "file"));
    }
    if outcome.errors.is_empty() && outcome.changed.is_empty() {
        Ok(0)
    } else {
        Ok(exit::PARTIAL)
    }
}

/// The stream a snapshot backs up instead of paths: standard input, or the
/// output of the command given as the paths.
fn snapshot_stream(a: &mut SnapshotArgs) -> Result<Option<crate::archiver::StreamSource>> {
    let name = a.stdin_filename.as_bytes().to_vec();
    if a.stdin {
        if !a.paths.is_empty() {
            bail!("--stdin backs up standard input only: give no paths");
        }
        return Ok(Some(crate::archiver::StreamSource { name, reader: Box::new(std::io::stdin()), finish: None }));
    }
    if !a.stdin_from_command {
        return Ok(None);
    }
    let mut words = std::mem::take(&mut a.paths).into_iter();
    let Some(program) = words.next() else {
        bail!("--stdin-from-command needs a command: `tstor snapshot --stdin-from-command -- CMD ARGS...`");
    };
    let shown = program.display().to_string();
    let mut child = std::process::Command::new(&program)
        .args(words)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{shown}`"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("cannot read the output of `{shown}`"))?;
    let finish = Box::new(move || match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{shown}` failed ({status}): no snapshot saved")),
        Err(e) => Err(format!("cannot wait for `{shown}`: {e}")),
    });
    Ok(Some(crate::archiver::StreamSource { name, reader: Box::new(stdout), finish: Some(finish) }))
}

/// The paths listed by `--files-from` (lines, `#` comments), `--files-from-verbatim`
/// (lines as they are) and `--files-from-raw` (NUL-separated); `-` reads standard input.
fn paths_from_files(a: &SnapshotArgs) -> Result<Vec<PathBuf>> {
    let read = |f: &PathBuf| -> Result<Vec<u8>> {
        if f.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("cannot read standard input")?;
            return Ok(bytes);
        }
        std::fs::read(f).with_context(|| format!("cannot read the list of paths {}", f.display()))
    };
    let to_path = |b: &[u8]| PathBuf::from(OsString::from_vec(b.to_vec()));
    let mut paths = Vec::new();
    for f in &a.files_from {
        for line in read(f)?.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            paths.push(to_path(trimmed));
        }
    }
    for f in &a.files_from_verbatim {
        for line in read(f)?.split(|&b| b == b'\n') {
            if !line.is_empty() {
                paths.push(to_path(line));
            }
        }
    }
    for f in &a.files_from_raw {
        paths.extend(read(f)?.split(|&b| b == 0).filter(|p| !p.is_empty()).map(to_path));
    }
    Ok(paths)
}

/// The summary of a snapshot run, laid out as restic's.
fn print_snapshot_summary(s: &crate::archiver::RunSummary, changed_while_read: usize, last: &str) {
    match &s.parent {
        Some(p) => outln!("using parent snapshot {}", &p[..8.min(p.len())]),
        None => outln!("no parent snapshot: every file was read"),
    }
    let while_read = match changed_while_read {
        0 => String::new(),
        n => format!(" ({n} changed while read)"),
    };
    outln!(
        "Files: {:>9} new, {:>9} changed, {:>9} unmodified{while_read}",
        s.files_new,
        s.files_changed,
        s.files_unmodified
    );
    outln!("Dirs:  {:>9} new, {:>9} changed, {:>9} unmodified", s.dirs_new, s.dirs_changed, s.dirs_unmodified);
    outln!("Added to the repository: {} ({} stored)", human(s.data_added), human(s.data_added_stored));
    outln!();
    outln!(
        "processed {}, {} in {} (read {})",
        count(s.total_files_processed, "file"),
        human(s.total_bytes_processed),
        clock(s.total_duration_seconds),
        human(s.bytes_read)
    );
    outln!("{last}");
}

/// Seconds as `m:ss`, or `h:mm:ss` from an hour.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

async fn cmd_snapshots(g: &Global, a: SnapshotsArgs) -> Result<u8> {
    let repo = open_repo(g).await?;
    let (snaps, bad) = repo.snapshots().await?;
    let filter =
        admin::LatestFilter { hosts: a.host.clone(), paths: a.path.clone(), tags: a.tag.clone() }.to_filter()?;
    let snaps: Vec<_> = snaps.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    let groups = group_snapshots(snaps, &a.group_by, a.latest);
    if g.json && a.group_by.is_empty() {
        let list: Vec<_> =
            groups.iter().flat_map(|(_, snaps)| snaps.iter().map(|(id, s)| views::SnapshotView::of(id, s))).collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else if g.json {
        let list: Vec<_> = groups
            .iter()
            .map(|(key, snaps)| views::SnapshotGroupView {
                group_key: key,
                snapshots: snaps.iter().map(|(id, s)| views::SnapshotView::of(id, s)).collect(),
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let mut out = std::io::stdout().lock();
        for (i, (key, snaps)) in groups.iter().enumerate() {
            if !a.group_by.is_empty() {
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "{}", describe_group(key))?;
            }
            write_snapshot_table(&mut out, snaps, a.compact)?;
        }
    }
    for (id, e) in &bad {
        errln!("error: snapshot {}: {}", id.short(), escape(&e.to_string()));
    }
    Ok(if bad.is_empty() { 0 } else { 1 })
}

/// The snapshots in groups (one group when `by` is empty), each oldest
/// first and cut to its newest `latest`; groups in the order of their
/// oldest snapshot.
fn group_snapshots(
    snaps: Vec<(Id, Snapshot)>,
    by: &[GroupBy],
    latest: Option<usize>,
) -> Vec<(views::GroupKeyView, Vec<(Id, Snapshot)>)> {
    let mut groups: Vec<(views::GroupKeyView, Vec<(Id, Snapshot)>)> = Vec::new();
    for (id, s) in snaps {
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let key = views::GroupKeyView {
            hostname: by.contains(&GroupBy::Host).then(|| s.hostname.clone()),
            paths: by.contains(&GroupBy::Paths).then(|| sorted(s.paths.iter().map(|p| lossy(p)).collect())),
            tags: by.contains(&GroupBy::Tags).then(|| sorted(s.tags.clone())),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push((id, s)),
            None => groups.push((key, vec![(id, s)])),
        }
    }
    if let Some(n) = latest {
        for (_, list) in &mut groups {
            let cut = list.len().saturating_sub(n);
            list.drain(..cut);
        }
    }
    groups
}

/// A group's header line: `snapshots for host box1, paths /home, tags daily`.
fn describe_group(key: &views::GroupKeyView) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items.iter().map(|i| escape(i)).collect::<Vec<_>>().join(", ")
        }
    };
    let mut parts = Vec::new();
    if let Some(h) = &key.hostname {
        parts.push(format!("host {}", escape(h)));
    }
    if let Some(p) = &key.paths {
        parts.push(format!("paths {}", list(p)));
    }
    if let Some(t) = &key.tags {
        parts.push(format!("tags {}", list(t)));
    }
    format!("snapshots for {}:", parts.join("; "))
}

fn write_snapshot_table(out: &mut impl Write, snaps: &[(Id, Snapshot)], compact: bool) -> Result<()> {
    if compact {
        writeln!(out, "{:<8}  {:<19}  {:<16}  Tags", "ID", "Time (UTC)", "Host")?;
    } else {
        writeln!(out, "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  Paths", "ID", "Time (UTC)", "Host", "Tags", "Size")?;
    }
    for (id, s) in snaps {
        let paths: Vec<String> = s.paths.iter().map(|p| escape_bytes(p)).collect();
        let tags: Vec<String> = s.tags.iter().map(|t| escape(t)).collect();
        if compact {
            writeln!(
                out,
                "{:<8}  {:<19}  {:<16}  {}",
                id.short(),
                times::show(s.time_ns),
                escape(&s.hostname),
                tags.join(",")
            )?;
            continue;
        }
        writeln!(
            out,
            "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  {}",
            id.short(),
            times::show(s.time_ns),
            escape(&s.hostname),
            tags.join(","),
            human(s.summary.total_bytes),
            paths.join(", ")
        )?;
    }
    writeln!(out, "{}", count(snaps.len(), "snapshot"))?;
    Ok(())
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
    let spec = admin::resolve_latest(&repo, &spec, &a.filter).await?;
    let mut opts = RestoreOptions::new(a.target.clone());
    opts.subpath = split_subpath(OsString::from(sub).as_bytes())?;
    opts.include = globset(&a.include)?;
    opts.exclude = globset(&a.exclude)?;
    opts.verify = a.verify;
    opts.overwrite = a.overwrite;
    opts.delete = a.delete;
    opts.dry_run = a.dry_run;
    let lines = jsonl::JsonLines::new();
    let mut bar = Bar::new(progress_enabled(g) && !a.dry_run, "restore");
    if g.json {
        bar = bar.with_json(&lines, g.verbose > 0);
    }
    let bar = Arc::new(bar);
    // A dry run lists its actions with -v; a restore with -vv.
    let list = (a.dry_run && g.verbose >= 1) || g.verbose >= 2;
    let listing = Arc::new(progress::RestoreListing::new(bar.clone(), list && !g.json));
    let ticker = g.json.then(|| {
        let bar = bar.clone();
        lines.every_status_interval(move || bar.restore_status())
    });
    let result = ops::restore(&repo, &spec, &opts, listing).await;
    if let Some(t) = ticker {
        t.stop();
    }
    let (id, _snap, outcome) = result?;
    bar.finish();
    if g.json {
        let seconds = lines.seconds_elapsed() as u64;
        lines.summary(&messages::RestoreSummary::of(&id, &a.target, &outcome, seconds, a.dry_run));
    } else if !g.quiet {
        let mut kept_deleted = String::new();
        if outcome.kept > 0 {
            kept_deleted += &format!(", {} kept", outcome.kept);
        }
        if outcome.deleted > 0 {
            kept_deleted += &format!(", {} deleted", outcome.deleted);
        }
        outln!(
            "{} snapshot {} to {}: {} ({}), {}, {}{}{kept_deleted}",
            if a.dry_run { "would restore" } else { "restored" },
            id.short(),
            escape_path(&a.target),
            count(outcome.files, "file"),
            human(outcome.bytes),
            count(outcome.dirs, "directory"),
            count(outcome.links, "symlink"),
            if a.verify { format!(", {} verified", count(outcome.verified_files, "file")) } else { String::new() }
        );
    }
    if outcome.errors.is_empty() {
        return Ok(0);
    }
    for e in &outcome.errors {
        errln!("error: {}:{}", id.short(), escape(e));
    }
    let n = outcome.not_restored();
    errln!("tstor: {} {} not restored", count(n, "entry"), if n == 1 { "was" } else { "were" });
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
    let filter = ops::check::SnapshotFilter { host: a.host, tags: a.tag, ids: a.snapshots };
    let report = ops::check_snapshots(&repo, scope, &filter, bar.clone()).await?;
    bar.finish();
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if !g.quiet || !report.ok() || !report.warnings.is_empty() {
        outln!(
            "{}, {}, {}, {} checked; {} ({}) verified",
            count(report.snapshots, "snapshot"),
            count(report.packs, "pack"),
            count(report.blobs, "blob"),
            count(report.trees_checked, "tree"),
            count(report.packs_verified, "pack"),
            human(report.bytes_verified)
        );
        for w in &report.warnings {
            outln!("warning: {}", escape(w));
        }
    }
    if report.ok() {
        if !g.json && !g.quiet {
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
    errln!("tstor: the repository has {}", count(report.problems.len(), "problem"));
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
