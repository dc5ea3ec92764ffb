//! Running one benchmarked command and measuring it: wall time, user and
//! system CPU time and peak RSS of the child. GNU time (`/usr/bin/time`)
//! does the accounting when present; otherwise /proc is polled for VmHWM and
//! the children CPU times of this process are read before and after. Also
//! the disk usage of a directory tree.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A command to run: program, arguments and environment changes.
#[derive(Clone, Debug)]
pub struct CmdSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    pub env_remove: Vec<&'static str>,
}

impl CmdSpec {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        CmdSpec { program: program.into(), args: Vec::new(), env: Vec::new(), env_remove: Vec::new() }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn display(&self) -> String {
        let mut s = self.program.file_name().unwrap_or(self.program.as_os_str()).to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn apply_env(&self, c: &mut Command) {
        for k in &self.env_remove {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Measurement {
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    /// Peak resident set size of the child, KiB.
    pub max_rss_kib: u64,
    pub stdout: String,
}

impl Measurement {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    pub fn rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

/// How CPU time and peak RSS are obtained.
#[derive(Clone, Debug)]
pub enum Method {
    GnuTime(PathBuf),
    ProcPoll,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::GnuTime(_) => "gnu-time",
            Method::ProcPoll => "proc-poll",
        }
    }
}

/// Uses /usr/bin/time when it is GNU time (it must understand `-f` and `-o`).
pub fn detect(scratch: &Path) -> Method {
    let time = PathBuf::from("/usr/bin/time");
    let out = scratch.join("time-probe.txt");
    let ok = time.is_file()
        && Command::new(&time)
            .args(["-f", "%e %U %S %M", "-o"])
            .arg(&out)
            .arg("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        && fs::read_to_string(&out).is_ok_and(|t| parse_time_line(&t).is_ok());
    let _ = fs::remove_file(&out);
    if ok {
        Method::GnuTime(time)
    } else {
        Method::ProcPoll
    }
}

fn parse_time_line(text: &str) -> Result<(f64, f64, f64, u64)> {
    let line = text.lines().rfind(|l| !l.trim().is_empty()).ok_or_else(|| anyhow!("empty output of time"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 4 {
        bail!("unexpected output of time: {line:?}");
    }
    Ok((f[0].parse()?, f[1].parse()?, f[2].parse()?, f[3].parse()?))
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `spec` to completion, measuring it; fails when it exits unsuccessfully.
/// Its stdout and stderr go to files under `scratch`.
pub fn run(method: &Method, spec: &CmdSpec, scratch: &Path) -> Result<Measurement> {
    let out_path = scratch.join("stdout.txt");
    let err_path = scratch.join("stderr.txt");
    let time_path = scratch.join("time.txt");
    let mut cmd = match method {
        Method::GnuTime(time) => {
            let mut c = Command::new(time);
            c.args(["-f", "%e %U %S %M", "-o"]).arg(&time_path).arg(&spec.program);
            c
        }
        Method::ProcPoll => Command::new(&spec.program),
    };
    cmd.args(&spec.args).stdin(Stdio::null()).stdout(fs::File::create(&out_path)?).stderr(fs::File::create(&err_path)?);
    spec.apply_env(&mut cmd);

    let cpu_before = children_cpu_s().unwrap_or(0.0);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {}", spec.display()))?;
    let mut hwm_kib = 0;
    let status = match method {
        Method::GnuTime(_) => child.wait()?,
        Method::ProcPoll => loop {
            hwm_kib = hwm_kib.max(vm_hwm_kib(child.id()).unwrap_or(0));
            if let Some(s) = child.try_wait()? {
                break s;
            }
            std::thread::sleep(Duration::from_millis(if start.elapsed().as_secs() < 2 { 2 } else { 10 }));
        },
    };
    let wall_s = start.elapsed().as_secs_f64();
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        bail!("`{}` failed ({status}):\n{}\n{}", spec.display(), tail(&stderr, 20), tail(&stdout, 5));
    }
    let m = match method {
        Method::GnuTime(_) => {
            let (_, user_s, sys_s, max_rss_kib) = parse_time_line(&fs::read_to_string(&time_path)?)?;
            Measurement { wall_s, user_s, sys_s, max_rss_kib, stdout }
        }
        Method::ProcPoll => {
            let cpu = children_cpu_s().unwrap_or(0.0) - cpu_before;
            // /proc does not split the children's time usefully here; report it all as user time.
            Measurement { wall_s, user_s: cpu.max(0.0), sys_s: 0.0, max_rss_kib: hwm_kib, stdout }
        }
    };
    Ok(m)
}

/// Peak RSS of a running process, from /proc/<pid>/status.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) of this process's waited-for children,
/// assuming the usual 100 clock ticks per second.
fn children_cpu_s() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 16 (cutime) and 17 (cstime); `rest` starts at field 3.
    let ticks: u64 = f.get(13)?.parse::<u64>().ok()? + f.get(14)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Disk usage of a tree (allocated blocks, like `du`), 0 when it does not exist.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gnu_time_output() {
        let t = "Command exited with non-zero status 3\n1.25 0.50 0.10 20480\n";
        assert_eq!(parse_time_line(t).unwrap(), (1.25, 0.5, 0.1, 20480));
        assert!(parse_time_line("").is_err());
    }
}
