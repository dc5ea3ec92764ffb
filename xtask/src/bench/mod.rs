//! `cargo xtask bench`: generates a deterministic data tree, then runs tstor
//! (and restic when it is installed) through init, an initial snapshot, an
//! unchanged re-snapshot, a snapshot after a 2% change, a restore (checked
//! byte for byte against the source) and a full verifying check, measuring
//! wall time, CPU time, peak RSS and repository size for every step.
//! `cargo xtask bench telegram` (in `telegram.rs`) measures a snapshot and
//! a restore through the loopback Telegram server on a throttled link.

pub(crate) mod data;
mod json;
mod measure;
mod mutate;
mod report;
mod rng;
mod scale;
mod telegram;
mod text;
pub(crate) mod verify;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use measure::{CmdSpec, Measurement, Method};
use mutate::Mutation;
use verify::Verification;

const USAGE: &str = "\
usage: cargo xtask bench [--size SIZE] [--dir DIR] [--seed N] [--keep] [--only tstor|restic]
       cargo xtask bench scale [--files 100000,1000000] [--history 300]   (many small files, against restic)
       cargo xtask bench telegram [--size 256MiB] [--upload-mib-per-s 20] [--latency-ms 50] [--faults SPEC]

  --size SIZE   size of the generated tree, e.g. 64MiB, 256MiB, 1GiB (default 1GiB)
  --dir DIR     working directory for data, repositories and results (default target/bench)
  --seed N      seed of the generated data (default 42)
  --keep        keep repositories, caches and restored trees afterwards
  --only TOOL   benchmark only tstor or only restic";

const PASSWORD: &str = "tstor-bench-password";

pub struct Options {
    size: u64,
    dir: Option<PathBuf>,
    seed: u64,
    keep: bool,
    only: Option<Flavor>,
}

/// Parses sizes like `1GiB`, `256MiB`, `64M`, `1.5G`, `500MB` (decimal) or plain bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| anyhow!("bad size `{s}`"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => bail!("bad size unit in `{s}` (use KiB, MiB, GiB)"),
    };
    let v = (n * mult).round();
    if !(v >= 1.0 && v < 2f64.powi(50)) {
        bail!("size `{s}` is out of range");
    }
    Ok(v as u64)
}

/// Splits `--flag=value` into the flag and its inline value.
pub(crate) fn split_flag(a: &str) -> (&str, Option<String>) {
    match a.split_once('=') {
        Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
        _ => (a, None),
    }
}

/// A flag's value: inline after `=`, or the next argument.
pub(crate) fn flag_value<'a>(
    flag: &str,
    inline: &Option<String>,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<String> {
    inline.clone().or_else(|| rest.next().cloned()).ok_or_else(|| anyhow!("{flag} needs a value"))
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options { size: 1 << 30, dir: None, seed: 42, keep: false, only: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = split_flag(a);
        let mut value = || flag_value(flag, &inline, &mut it);
        match flag {
            "--size" => o.size = parse_size(&value()?)?,
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            "--seed" => o.seed = value()?.parse().context("bad --seed")?,
            "--keep" => o.keep = true,
            "--only" => {
                o.only = Some(match value()?.as_str() {
                    "tstor" => Flavor::Tstor,
                    "restic" => Flavor::Restic,
                    other => bail!("--only takes tstor or restic, not `{other}`"),
                })
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if o.size < 1 << 20 {
        bail!("--size must be at least 1MiB");
    }
    Ok(o)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Init,
    Initial,
    Unchanged,
    Changed,
    Restore,
    Check,
}

impl Step {
    pub const ALL: [Step; 6] = [Step::Init, Step::Initial, Step::Unchanged, Step::Changed, Step::Restore, Step::Check];

    pub fn name(self) -> &'static str {
        match self {
            Step::Init => "init",
            Step::Initial => "snapshot initial",
            Step::Unchanged => "snapshot unchanged",
            Step::Changed => "snapshot after 2% change",
            Step::Restore => "restore latest",
            Step::Check => "check, read all data",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Step::Init => "init",
            Step::Initial => "snapshot_initial",
            Step::Unchanged => "snapshot_unchanged",
            Step::Changed => "snapshot_changed",
            Step::Restore => "restore",
            Step::Check => "check_verify",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Tstor,
    Restic,
}

/// One tool under test, with its own repository, cache and restore target.
pub struct Tool {
    pub flavor: Flavor,
    pub name: &'static str,
    bin: PathBuf,
    repo: PathBuf,
    cache: PathBuf,
    restore: PathBuf,
    pub version: String,
}

impl Tool {
    fn new(flavor: Flavor, bin: PathBuf, dir: &Path) -> Tool {
        let name = match flavor {
            Flavor::Tstor => "tstor",
            Flavor::Restic => "restic",
        };
        Tool {
            flavor,
            name,
            bin,
            repo: dir.join(format!("repo-{name}")),
            cache: dir.join(format!("cache-{name}")),
            restore: dir.join(format!("restore-{name}")),
            version: String::new(),
        }
    }

    fn base(&self) -> CmdSpec {
        let mut c = CmdSpec::new(&self.bin);
        match self.flavor {
            Flavor::Tstor => {
                c.env.push(("TSTOR_PASSWORD".into(), PASSWORD.into()));
                c.env.push(("TSTOR_REPOSITORY".into(), self.repo.clone().into()));
                c.env.push(("TSTOR_CACHE_DIR".into(), self.cache.clone().into()));
                c.env_remove = vec!["TSTOR_PASSWORD_FILE", "TSTOR_PASSWORD_COMMAND", "TSTOR_LOG"];
                c.arg("--quiet")
            }
            Flavor::Restic => {
                c.env.push(("RESTIC_PASSWORD".into(), PASSWORD.into()));
                c.env.push(("RESTIC_REPOSITORY".into(), self.repo.clone().into()));
                c.env.push(("RESTIC_CACHE_DIR".into(), self.cache.clone().into()));
                c.env_remove = vec![
                    "RESTIC_PASSWORD_FILE",
                    "RESTIC_PASSWORD_COMMAND",
                    "RESTIC_REPOSITORY_FILE",
                    "RESTIC_KEY_HINT",
                    "RESTIC_COMPRESSION",
                    "RESTIC_PACK_SIZE",
                ];
                c.arg("--quiet")
            }
        }
    }

    fn command(&self, step: Step, data: &Path) -> CmdSpec {
        let c = self.base();
        match (self.flavor, step) {
            (_, Step::Init) => c.arg("init"),
            (Flavor::Tstor, Step::Initial | Step::Unchanged | Step::Changed) => {
                c.arg("--json").arg("snapshot").arg(data)
            }
            (Flavor::Restic, Step::Initial | Step::Unchanged | Step::Changed) => {
                c.arg("--json").arg("backup").arg(data)
            }
            (_, Step::Restore) => c.arg("restore").arg("latest").arg("--target").arg(&self.restore),
            (Flavor::Tstor, Step::Check) => c.arg("check").arg("--verify"),
            (Flavor::Restic, Step::Check) => c.arg("check").arg("--read-data"),
        }
    }

    /// Where the snapshotted data tree lands inside the restore target.
    fn restored_root(&self, data: &Path) -> PathBuf {
        match self.flavor {
            // tstor stores each snapshotted path under its own name.
            Flavor::Tstor => self.restore.join(data.file_name().unwrap_or_default()),
            // restic restores the full absolute path.
            Flavor::Restic => self.restore.join(data.strip_prefix("/").unwrap_or(data)),
        }
    }

    /// New, unchanged and changed file counts from a snapshot's JSON summary.
    fn file_counts(&self, stdout: &str) -> Option<[u64; 3]> {
        let line = match self.flavor {
            Flavor::Tstor => stdout,
            Flavor::Restic => stdout.lines().rfind(|l| l.contains("\"message_type\":\"summary\""))?,
        };
        let unchanged = if self.flavor == Flavor::Tstor { "files_unchanged" } else { "files_unmodified" };
        Some([
            json::find_u64(line, "files_new")?,
            json::find_u64(line, "files_changed")?,
            json::find_u64(line, unchanged)?,
        ])
    }

    fn dirs(&self) -> [&Path; 3] {
        [&self.repo, &self.cache, &self.restore]
    }
}

/// The outcome of one step of one tool.
pub struct StepResult {
    pub tool: &'static str,
    pub step: Step,
    pub m: Measurement,
    pub repo_bytes: u64,
    /// New, changed and unchanged files, for snapshot steps.
    pub files: Option<[u64; 3]>,
}

/// Everything a run produced, for the report.
pub struct Run {
    pub size_target: u64,
    pub seed: u64,
    pub data_dir: PathBuf,
    pub data_files: u64,
    pub data_bytes: u64,
    pub generated_s: Option<f64>,
    pub method: Method,
    pub tools: Vec<Tool>,
    pub skipped: Vec<String>,
    pub mutation: Mutation,
    pub results: Vec<StepResult>,
    pub verifications: Vec<(&'static str, Verification)>,
    /// When the run started (Unix seconds) and the load average then, to judge noise.
    pub started_unix: u64,
    pub loadavg: String,
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace").to_path_buf()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn first_line_of(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn build_tstor(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    println!("building tstor (release)...");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "tstor"])
        .current_dir(root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release -p tstor failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_absolute() { target } else { root.join(target) };
    let bin = target.join("release").join("tstor");
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub fn main(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("telegram") {
        return telegram::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("scale") {
        return scale::main(&args[1..]);
    }
    let o = parse_args(args)?;
    let root = workspace_root();
    let dir = match &o.dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => std::env::current_dir()?.join(d),
        None => root.join("target").join("bench"),
    };
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let scratch = dir.join("scratch");
    fs::create_dir_all(&scratch)?;

    let method = measure::detect(&scratch);
    if let Method::ProcPoll = method {
        println!(
            "note: GNU time (/usr/bin/time) is missing, so CPU time is read from /proc/self/stat (children totals,\n      \
             all counted as user time) and peak RSS by polling VmHWM, which can miss short peaks.\n      \
             Install it for exact figures: apt-get install time"
        );
    }

    let mut tools = Vec::new();
    let mut skipped = Vec::new();
    if o.only != Some(Flavor::Restic) {
        tools.push(Tool::new(Flavor::Tstor, build_tstor(&root)?, &dir));
    }
    if o.only != Some(Flavor::Tstor) {
        match find_on_path("restic") {
            Some(bin) => tools.push(Tool::new(Flavor::Restic, bin, &dir)),
            None if o.only == Some(Flavor::Restic) => bail!("restic is not on PATH (apt-get install restic)"),
            None => {
                println!("restic: not found on PATH, skipped (apt-get install restic to compare)");
                skipped.push("restic: not found on PATH".to_string());
            }
        }
    }
    for t in &mut tools {
        t.version = match t.flavor {
            Flavor::Tstor => first_line_of(&t.bin, &["--version"]),
            Flavor::Restic => first_line_of(&t.bin, &["version"]),
        };
        println!("{}: {} ({})", t.name, t.version, t.bin.display());
    }

    // The data tree.
    let data_dir = dir.join("data");
    let marker = dir.join("data.marker");
    let plan = data::plan(o.size, o.seed);
    let start = Instant::now();
    println!(
        "data: {} ({} files, {:.1} MiB, seed {})",
        data_dir.display(),
        plan.files.len(),
        mib(plan.total_bytes()),
        o.seed
    );
    let generated = data::ensure(&data_dir, &marker, o.size, o.seed, &plan)?;
    let generated_s = generated.then(|| start.elapsed().as_secs_f64());
    match generated_s {
        Some(s) => println!("data: generated in {s:.1}s"),
        None => println!("data: reused (marker matches)"),
    }

    // Fresh repositories.
    for t in &tools {
        for d in t.dirs() {
            remove_tree(d)?;
        }
    }

    let mut run = Run {
        size_target: o.size,
        seed: o.seed,
        data_dir: data_dir.clone(),
        data_files: plan.files.len() as u64,
        data_bytes: plan.total_bytes(),
        generated_s,
        method,
        tools,
        skipped,
        mutation: Mutation::default(),
        results: Vec::new(),
        verifications: Vec::new(),
        started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        loadavg: fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    };
    println!("load average before the run: {}", run.loadavg);

    let outcome = run_steps(&mut run, &plan, &marker, &scratch, o.seed);
    // The data tree is put back whatever happened; the marker only returns if that worked.
    let reverted = run.mutation.revert();
    if reverted.is_ok() {
        data::write_marker(&marker, o.size, o.seed)?;
    }

    report::print(&run);
    let results_path = dir.join("bench-results.json");
    fs::write(&results_path, report::to_json(&run, outcome.as_ref().err()).pretty())
        .with_context(|| format!("cannot write {}", results_path.display()))?;
    println!("\nresults: {}", results_path.display());

    outcome.with_context(|| format!("repositories and logs are kept under {} for inspection", dir.display()))?;
    reverted.context("cannot undo the 2% change; the data tree will be regenerated next time")?;
    if o.keep {
        println!("kept repositories, caches and restored trees under {}", dir.display());
    } else {
        for t in &run.tools {
            for d in t.dirs() {
                remove_tree(d)?;
            }
        }
        remove_tree(&scratch)?;
    }
    let bad: Vec<String> = run
        .verifications
        .iter()
        .filter(|(_, v)| v.mismatches() > 0)
        .map(|(t, v)| format!("{t}: {} mismatches", v.mismatches()))
        .collect();
    if !bad.is_empty() {
        bail!("restored trees differ from the source ({})", bad.join(", "));
    }
    Ok(())
}

fn run_step(run: &mut Run, ti: usize, step: Step, scratch: &Path) -> Result<()> {
    let t = &run.tools[ti];
    if step == Step::Restore {
        remove_tree(&t.restore)?;
        fs::create_dir_all(&t.restore)?;
    }
    let spec = t.command(step, &run.data_dir);
    // Flush dirty pages left by earlier steps so their writeback is not billed to this one.
    let _ = Command::new("sync").status();
    let m = measure::run(&run.method, &spec, scratch).with_context(|| format!("{}: {}", t.name, step.name()))?;
    let files =
        matches!(step, Step::Initial | Step::Unchanged | Step::Changed).then(|| t.file_counts(&m.stdout)).flatten();
    let repo_bytes = measure::disk_usage(&t.repo);
    println!(
        "  {:<7} {:<26} {:>8.2} s wall {:>8.2} s cpu {:>8.1} MiB RSS   repo {:>8.1} MiB",
        t.name,
        step.name(),
        m.wall_s,
        m.cpu_s(),
        m.rss_mib(),
        mib(repo_bytes)
    );
    run.results.push(StepResult { tool: t.name, step, m, repo_bytes, files });
    Ok(())
}

fn run_steps(run: &mut Run, plan: &data::Plan, marker: &Path, scratch: &Path, seed: u64) -> Result<()> {
    let n = run.tools.len();
    for step in [Step::Init, Step::Initial, Step::Unchanged] {
        for ti in 0..n {
            run_step(run, ti, step, scratch)?;
        }
    }

    data::remove_marker(marker)?;
    run.mutation.apply(&run.data_dir, plan, seed).context("cannot apply the 2% change")?;
    let m = &run.mutation;
    println!(
        "  2% change: {} files changed ({:.1} MiB, {:.2}% of the tree), {} files added ({:.1} MiB), {:.1} MiB written",
        m.files_changed,
        mib(m.changed_file_bytes),
        100.0 * (m.changed_file_bytes + m.added_bytes) as f64 / run.data_bytes as f64,
        m.files_added,
        mib(m.added_bytes),
        mib(m.bytes_written)
    );

    for step in [Step::Changed, Step::Restore] {
        for ti in 0..n {
            run_step(run, ti, step, scratch)?;
        }
    }
    for ti in 0..n {
        let t = &run.tools[ti];
        let v = verify::compare(&run.data_dir, &t.restored_root(&run.data_dir))?;
        println!(
            "  {:<7} restore verified: {} files ({:.1} MiB) compared, {} mismatches ({} missing, {} differing, {} extra){}",
            t.name,
            v.files,
            mib(v.bytes),
            v.mismatches(),
            v.missing,
            v.differing,
            v.extra,
            if v.mode_differences > 0 { format!(", {} permission differences", v.mode_differences) } else { String::new() }
        );
        for e in &v.examples {
            println!("          {e}");
        }
        run.verifications.push((t.name, v));
    }
    for ti in 0..n {
        run_step(run, ti, Step::Check, scratch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
