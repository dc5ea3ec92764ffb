//! Shared helpers: a throw-away repository environment and tree comparison.

#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub const PASSWORD: &str = "correct horse battery staple";

/// The `summary` line of a command's `--json` lines (status lines may
/// come before it); every line must be a JSON object.
pub fn summary_line(stdout: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(stdout).expect("UTF-8 JSON lines");
    let mut summary = None;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        if v["message_type"] == "summary" {
            summary = Some(v);
        }
    }
    summary.unwrap_or_else(|| panic!("no summary line in {text}"))
}

/// A temporary directory holding a repository, a cache and source data.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Env { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    pub fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    /// `tstor` with this environment's repository, cache and password.
    pub fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// The same, as a plain process command (for uid changes and kills).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("tstor"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            // Times are shown and read in the local zone: tests fix it.
            .env("TZ", "UTC")
            .env("TSTOR_REPOSITORY", self.repo())
            .env("TSTOR_CACHE_DIR", self.cache())
            .env("TSTOR_PASSWORD", PASSWORD);
        c
    }

    pub fn init(&self) {
        self.cmd().arg("init").assert().success();
    }

    /// Runs a snapshot with `--json` and returns its summary.
    pub fn snapshot_json(&self, args: &[&OsStr]) -> serde_json::Value {
        let out = self.cmd().arg("snapshot").arg("--json").args(args).output().unwrap();
        assert!(out.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&out.stderr));
        summary_line(&out.stdout)
    }

    pub fn snapshots_json(&self) -> Vec<serde_json::Value> {
        let out = self.cmd().args(["snapshots", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }

    /// Every file under the repository with its size, for "nothing changed" checks.
    pub fn repo_listing(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        walk(&self.repo(), &mut |p, m| out.push((p.to_path_buf(), m.len())));
        out.sort();
        out
    }
}

pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        f(&p, &m);
        if m.is_dir() {
            walk(&p, f);
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn set_mtime(path: &Path, ns: i64) {
    tstor::fsmeta::set_times(path, ns, ns).unwrap();
}

/// What a restored entry must match: everything but ctime, atime and inode numbers.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the first entry sharing this inode (hard links), if any.
    pub link_group: Option<PathBuf>,
}

/// Describes a whole tree, keyed by path relative to `root`.
pub fn describe(root: &Path) -> HashMap<PathBuf, Entry> {
    let mut out = HashMap::new();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut paths = Vec::new();
    walk(root, &mut |p, _| paths.push(p.to_path_buf()));
    paths.sort();
    for p in paths {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let link_group = if ft.is_file() && m.nlink() > 1 {
            Some(inodes.entry((m.dev(), m.ino())).or_insert_with(|| rel.clone()).clone())
        } else {
            None
        };
        out.insert(
            rel,
            Entry {
                kind,
                mode: if ft.is_symlink() { 0 } else { m.mode() & 0o7777 },
                uid: m.uid(),
                gid: m.gid(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                size: if ft.is_file() { m.len() } else { 0 },
                content: ft.is_file().then(|| fs::read(&p).unwrap()),
                target: ft.is_symlink().then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
                xattrs: tstor::fsmeta::read_xattrs(&p).unwrap_or_default(),
                link_group,
            },
        );
    }
    out
}

/// Asserts two trees are identical in content and metadata.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = describe(expected);
    let b = describe(actual);
    let mut missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    missing.sort();
    assert!(missing.is_empty(), "missing after restore: {missing:?}");
    let mut extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    extra.sort();
    assert!(extra.is_empty(), "unexpected after restore: {extra:?}");
    for (path, e) in &a {
        let r = &b[path];
        assert_eq!(e.kind, r.kind, "{}: kind", path.display());
        assert_eq!(e.content, r.content, "{}: content", path.display());
        assert_eq!(e.target, r.target, "{}: symlink target", path.display());
        assert_eq!(e.mode, r.mode, "{}: mode {:o} vs {:o}", path.display(), e.mode, r.mode);
        assert_eq!(e.mtime_ns, r.mtime_ns, "{}: mtime", path.display());
        assert_eq!(e.size, r.size, "{}: size", path.display());
        assert_eq!(e.link_group, r.link_group, "{}: hard links", path.display());
        assert_eq!(e.xattrs, r.xattrs, "{}: xattrs", path.display());
        if is_root() {
            assert_eq!((e.uid, e.gid), (r.uid, r.gid), "{}: owner", path.display());
        }
    }
}

pub fn os(s: impl AsRef<OsStr>) -> std::ffi::OsString {
    s.as_ref().to_os_string()
}

/// What a finished child left: exit code, its output and its peak
/// resident memory (VmHWM from /proc/<pid>/status).
pub struct Measured {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub peak_rss_kib: i64,
}

/// The child's resident high-water mark so far, while it runs.
fn vm_hwm_kib(pid: u32) -> Option<i64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` (a tstor command of `env`) and samples its VmHWM until it
/// exits. `wait4`'s `ru_maxrss` cannot serve: a child spawned by vfork
/// reports the high-water mark of the parent's memory it borrowed until
/// `exec`, so a large test process would be measured instead of the child.
/// VmHWM is a high-water mark, so sampling loses at most a peak reached in
/// the last interval. Standard output is kept only when `keep_stdout`.
pub fn run_measured_cmd(env: &Env, mut cmd: std::process::Command, keep_stdout: bool) -> Measured {
    let out_path = env.path("child.out");
    let err_path = env.path("child.err");
    let out = if keep_stdout { fs::File::create(&out_path).unwrap() } else { fs::File::create("/dev/null").unwrap() };
    cmd.stdout(out).stderr(fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    Measured {
        code: status.code(),
        stdout: if keep_stdout { fs::read_to_string(&out_path).unwrap() } else { String::new() },
        stderr: fs::read_to_string(&err_path).unwrap(),
        peak_rss_kib: peak,
    }
}
