//! `tstor mount`: the binary mounts a repository in the background; the
//! test walks the view (every file's bytes, mode, times, owner, symlink
//! targets, hard links, extended attributes compared with the source),
//! checks the snapshots/ids/hosts/tags layout and the filters, then sends
//! SIGTERM and checks that the view was unmounted and the process exited 0;
//! a view unmounted from outside (`fusermount3 -u`) ends the process too.
//! Against the loopback Telegram server, reading one small file costs a
//! small, bounded number of `upload.getFile` calls (its blob, not its pack).
//! The tests skip, saying why, where /dev/fuse or fusermount3 is missing.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use tstor::backend::telegram::TelegramSession;
use tstor_tgloop::Server;

use crate::common::*;
use crate::roundtrip::make_full_tree;

/// Why mount tests cannot run here, if they cannot.
fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
        .unwrap_or(false);
    if !found {
        return Some("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    None
}

macro_rules! require_fuse {
    () => {
        if let Some(why) = fuse_missing() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

fn is_mounted(dir: &Path) -> bool {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    // Field 5 is the mount point, with spaces and the like escaped as octal.
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap()))
}

/// A `tstor mount` running in the background.
struct Mounted {
    child: Option<Child>,
    dir: PathBuf,
    stderr: PathBuf,
}

impl Mounted {
    /// Starts `cmd` (a `tstor mount DIR ...`) and waits until DIR is mounted.
    fn start(mut cmd: Command, dir: &Path, stderr: PathBuf) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        cmd.stdout(std::process::Stdio::null()).stderr(fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().unwrap();
        let mut m = Mounted { child: Some(child), dir: dir.to_path_buf(), stderr };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !is_mounted(dir) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tstor mount exited with {status} before mounting:\n{}", m.stderr_text());
            }
            assert!(Instant::now() < deadline, "not mounted after two minutes:\n{}", m.stderr_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to end.
    fn terminate(&mut self) -> ExitStatus {
        let child = self.child.as_ref().expect("still running");
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        self.wait()
    }

    /// Waits for the process to end.
    fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tstor mount did not exit:\n{}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.dir).status();
        }
    }
}

/// Takes a snapshot of `path` with `flags`; returns its short id.
fn snapshot(env: &Env, flags: &[&str], path: &Path) -> String {
    let mut args: Vec<&std::ffi::OsStr> = flags.iter().map(std::ffi::OsStr::new).collect();
    args.push(path.as_os_str());
    env.snapshot_json(&args)["snapshot_id"].as_str().unwrap()[..8].to_string()
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    out.sort();
    out
}

#[test]
fn a_mounted_repository_shows_every_snapshot_as_its_source() {
    require_fuse!();
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_full_tree(&src);
    let work = src.join("work");
    let first_id = snapshot(&env, &["--tag", "daily", "--tag", "keep", "--host", "laptop"], &work);
    let second_id = snapshot(&env, &["--host", "server"], &work);

    let mnt = env.path("mnt");
    let mut cmd = env.std_cmd();
    cmd.arg("mount").arg(&mnt);
    let mut m = Mounted::start(cmd, &mnt, env.path("mount.err"));

    assert_eq!(names(&mnt), ["hosts", "ids", "snapshots", "tags"]);
    let by_time = names(&mnt.join("snapshots"));
    assert_eq!(by_time.len(), 3, "{by_time:?}");
    assert_eq!(by_time[2], "latest");
    let latest = fs::read_link(mnt.join("snapshots/latest")).unwrap();
    assert_eq!(latest, Path::new(&by_time[1]), "latest names the newest snapshot");
    let mut ids = vec![first_id.clone(), second_id.clone()];
    ids.sort();
    assert_eq!(names(&mnt.join("ids")), ids);
    assert_eq!(names(&mnt.join("hosts")), ["laptop", "server"]);
    assert_eq!(names(&mnt.join("hosts/laptop")).len(), 2, "one snapshot and latest");
    assert_eq!(names(&mnt.join("tags")), ["daily", "keep"]);
    assert_eq!(names(&mnt.join("tags/daily")).len(), 2);

    // Every entry as in the source: bytes, modes, times, owners, symlink
    // targets, hard links, extended attributes.
    assert_same_tree(&src, &mnt.join("snapshots/latest"));
    // The other ways to a snapshot lead to the same entries.
    let main_rs = fs::read(src.join("work/src/main.rs")).unwrap();
    for view in [mnt.join("ids").join(&first_id), mnt.join("tags/keep/latest"), mnt.join("hosts/laptop/latest")] {
        assert_eq!(fs::read(view.join("work/src/main.rs")).unwrap(), main_rs, "{}", view.display());
    }
    // Link counts and sizes as stat shows them.
    for rel in ["work/linked-a", "work/src/linked-b", "work/big.bin", "work/sparse.img", "work/src/rel-link"] {
        let a = fs::symlink_metadata(src.join(rel)).unwrap();
        let b = fs::symlink_metadata(mnt.join("snapshots/latest").join(rel)).unwrap();
        assert_eq!((a.nlink(), a.len()), (b.nlink(), b.len()), "{rel}: link count and size");
    }
    // A read in the middle of a large file, across blob boundaries.
    let big = fs::read(src.join("work/big.bin")).unwrap();
    let f = fs::File::open(mnt.join("hosts/server/latest/work/big.bin")).unwrap();
    let mut buf = vec![0u8; 3 << 20];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 5_000_001).unwrap();
    assert_eq!(buf, big[5_000_001..5_000_001 + (3 << 20)]);
    drop(f);
    // Read-only.
    assert!(fs::write(mnt.join("snapshots/latest/work/new"), b"x").is_err());
    assert!(fs::OpenOptions::new().write(true).open(mnt.join("snapshots/latest/work/linked-a")).is_err());

    let status = m.terminate();
    assert!(status.success(), "exit status {status}:\n{}", m.stderr_text());
    assert!(!is_mounted(&mnt), "unmounted after SIGTERM");
    assert!(names(&mnt).is_empty(), "the mount point is an empty directory again");
}

#[test]
fn mount_filters_choose_the_snapshots_shown_and_a_missing_mount_point_is_named() {
    require_fuse!();
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"hello").unwrap();
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("b.txt"), b"other").unwrap();
    snapshot(&env, &["--host", "one", "--tag", "x"], &src);
    snapshot(&env, &["--host", "two", "--tag", "x"], &src);
    snapshot(&env, &["--host", "two"], &src);
    snapshot(&env, &["--host", "two", "--tag", "x"], &other);

    // A mount point that is not there is named.
    let out = env.cmd().args(["mount"]).arg(env.path("nowhere")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot mount at") && err.contains("nowhere"), "{err}");

    let mnt = env.path("mnt");
    let mut cmd = env.std_cmd();
    cmd.args(["mount", "--host", "two", "--tag", "x", "--path"]).arg(&src).arg(&mnt);
    let mut m = Mounted::start(cmd, &mnt, env.path("mount.err"));
    assert_eq!(names(&mnt.join("ids")).len(), 1);
    assert_eq!(names(&mnt.join("hosts")), ["two"]);
    assert_eq!(fs::read(mnt.join("snapshots/latest/src/a.txt")).unwrap(), b"hello");
    // Unmounted from outside, the command ends by itself, successfully.
    let unmounted = Command::new("fusermount3").arg("-u").arg(&mnt).status().unwrap();
    assert!(unmounted.success());
    assert!(m.wait().success(), "{}", m.stderr_text());
    assert!(m.stderr_text().contains("was unmounted"), "{}", m.stderr_text());
}

/// The names in `dir` once `want` holds of them, listing `dir` again (as
/// someone browsing would) until it does or half a minute has passed.
fn names_once(dir: &Path, want: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = names(dir);
        if want(&now) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A snapshot taken while the repository is mounted appears in the view
/// within seconds of the view's directories being listed again (restic
/// reads the snapshot list again as its directories are listed), under
/// the mount's filters; what was open before keeps working.
#[test]
fn a_snapshot_taken_while_mounted_appears_when_the_view_is_listed_again() {
    require_fuse!();
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"first").unwrap();
    let first = snapshot(&env, &["--host", "h"], &src);

    let mnt = env.path("mnt");
    let mut cmd = env.std_cmd();
    cmd.args(["mount", "--host", "h"]).arg(&mnt);
    let mut m = Mounted::start(cmd, &mnt, env.path("mount.err"));
    assert_eq!(names(&mnt.join("ids")), std::slice::from_ref(&first));
    assert_eq!(fs::read(mnt.join("snapshots/latest/src/a.txt")).unwrap(), b"first");
    let old_file = fs::File::open(mnt.join("snapshots/latest/src/a.txt")).unwrap();

    // New data (in new packs, named by a new index object) while mounted,
    // and a snapshot of another host, which the filter leaves out.
    fs::write(src.join("a.txt"), b"second").unwrap();
    fs::write(src.join("new.bin"), random_bytes(200_000, 7)).unwrap();
    let second = snapshot(&env, &["--host", "h", "--tag", "later"], &src);
    snapshot(&env, &["--host", "elsewhere"], &src);

    let started = Instant::now();
    let ids = names_once(&mnt.join("ids"), |n| n.len() == 2);
    let mut want = vec![first.clone(), second.clone()];
    want.sort();
    assert_eq!(ids, want, "the new snapshot appears:\n{}", m.stderr_text());
    eprintln!("the new snapshot appeared after {:?}", started.elapsed());
    let by_time = names(&mnt.join("snapshots"));
    assert_eq!(by_time.len(), 3, "{by_time:?}");
    assert_eq!(fs::read_link(mnt.join("snapshots/latest")).unwrap(), Path::new(&by_time[1]));
    assert_eq!(names(&mnt.join("hosts")), ["h"], "the filter still holds");
    assert_eq!(names(&mnt.join("tags")), ["later"]);
    assert_eq!(fs::read(mnt.join("snapshots/latest/src/a.txt")).unwrap(), b"second");
    assert_eq!(fs::read(mnt.join("snapshots/latest/src/new.bin")).unwrap(), random_bytes(200_000, 7));
    assert_eq!(fs::read(mnt.join("ids").join(&first).join("src/a.txt")).unwrap(), b"first");
    let mut again = String::new();
    std::io::Read::read_to_string(&mut &old_file, &mut again).unwrap();
    assert_eq!(again, "first", "a file opened before the refresh reads as it did");
    drop(old_file);

    assert!(m.terminate().success(), "{}", m.stderr_text());
    assert!(!is_mounted(&mnt));
}

/// Reading one small file of a Telegram repository fetches its blob with a
/// ranged read, not the pack around it.
#[test]
fn reading_a_small_file_from_telegram_costs_few_get_file_calls() {
    require_fuse!();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(Server::start()).unwrap();
    let env = Env::new();
    let session = env.path("telegram.session");
    let SocketAddr::V4(v4) = server.addr() else { panic!("loopback server listens on IPv4") };
    let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
    let v6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
    let mut s = TelegramSession::with_dc(server.dc_id(), v4, v6, server.auth_key());
    s.set_api_id(1).unwrap();
    s.save_to(&session).unwrap();
    let tg = |cmd: &mut Command| {
        cmd.env("TSTOR_REPOSITORY", "telegram:me")
            .env("TSTOR_TG_SESSION", &session)
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0");
    };
    let run = |args: &[&std::ffi::OsStr]| {
        let mut cmd = env.std_cmd();
        tg(&mut cmd);
        let out = cmd.args(args).output().unwrap();
        assert!(out.status.success(), "tstor {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[&os("init")]);
    // Small files beside 12 MiB of incompressible data, all in one pack.
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("big-1.bin"), random_bytes(6 << 20, 1)).unwrap();
    fs::write(src.join("docs/note.txt"), b"a small note\n").unwrap();
    fs::write(src.join("big-2.bin"), random_bytes(6 << 20, 2)).unwrap();
    run(&[&os("snapshot"), src.as_os_str()]);

    let mnt = env.path("mnt");
    let mut cmd = env.std_cmd();
    tg(&mut cmd);
    cmd.arg("mount").arg(&mnt);
    let mut m = Mounted::start(cmd, &mnt, env.path("mount.err"));
    let note = mnt.join("snapshots/latest/src/docs/note.txt");
    let before = server.calls("upload.getFile");
    assert_eq!(fs::metadata(&note).unwrap().len(), 13);
    let tree_reads = server.calls("upload.getFile") - before;
    let before = server.calls("upload.getFile");
    assert_eq!(fs::read(&note).unwrap(), b"a small note\n");
    let blob_reads = server.calls("upload.getFile") - before;
    // The trees on the way (snapshot root, src, docs) cost at most one
    // ranged read per level, each reading ahead the level's subtrees; the
    // note's blob is one ranged read (two if it straddles a download
    // boundary), where its pack, over 12 MiB, would take more than twelve.
    eprintln!("getFile calls: {tree_reads} to look the file up, {blob_reads} to read it");
    assert!(tree_reads <= 3, "looking up the file took {tree_reads} getFile calls");
    assert!((1..=2).contains(&blob_reads), "reading one small file took {blob_reads} getFile calls");
    assert!(m.terminate().success(), "{}", m.stderr_text());
    assert!(!is_mounted(&mnt));
    drop(rt);
}

/// A stop signal while a program holds a file of the view open does not
/// leave `tstor mount` waiting for it: the view is detached, the mount
/// point freed, the lock released, and the process exits 0 with a warning.
#[test]
fn a_stop_signal_while_a_file_is_open_detaches_the_view_and_exits() {
    require_fuse!();
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("held.txt"), b"held open").unwrap();
    snapshot(&env, &[], &src);

    let mnt = env.path("mnt");
    let mut cmd = env.std_cmd();
    cmd.arg("mount").arg(&mnt);
    let mut m = Mounted::start(cmd, &mnt, env.path("mount.err"));
    let held = fs::File::open(mnt.join("snapshots/latest/src/held.txt")).unwrap();
    let status = m.terminate();
    assert!(status.success(), "{status}: {}", m.stderr_text());
    assert!(!is_mounted(&mnt), "the mount point is free at once");
    assert!(m.stderr_text().contains("detached it"), "{}", m.stderr_text());
    drop(held);
    // The shared lock is gone: an exclusive command runs at once.
    env.cmd().args(["prune"]).assert().success();
}
