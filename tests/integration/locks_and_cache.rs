//! Locks left by dead processes never block; live conflicting locks do; the
//! local cache is only a cache.

use std::ffi::OsStr;
use std::fs;
use std::sync::Arc;

use tstor::backend::local::LocalBackend;
use tstor::backend::Backend;
use tstor::format::lock::Lock;
use tstor::format::ObjectKind;
use tstor::repo::Repository;

use crate::common::*;

fn put_lock(env: &Env, lock: Lock) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
        let repo = Repository::open(backend, PASSWORD.as_bytes(), None).await.unwrap();
        repo.save_object(ObjectKind::Lock, &lock.encode()).await.unwrap();
    });
}

fn lock(exclusive: bool, host: &str, pid: u32, refreshed_ns: i64) -> Lock {
    Lock {
        exclusive,
        hostname: host.into(),
        username: "someone".into(),
        pid,
        created_ns: refreshed_ns,
        refreshed_ns,
        nonce: [pid as u8; 16],
    }
}

fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn stale_locks_do_not_block_and_live_ones_do() {
    let env = Env::new();
    env.init();
    fs::write(env.path("f"), b"x").unwrap();
    let host = tstor::host::hostname();
    let now = tstor::host::now_ns();
    // Left by a killed process on this host, and by a host that stopped refreshing an hour ago.
    put_lock(&env, lock(true, &host, dead_pid(), now));
    put_lock(&env, lock(true, "elsewhere", 1, now - 3600 * 1_000_000_000));
    env.cmd().args(["snapshot", "--quiet"]).arg(env.path("f")).assert().success();
    env.cmd().arg("check").assert().success();

    // A live exclusive lock (held by this test process) blocks with its own exit code.
    put_lock(&env, lock(true, &host, std::process::id(), now));
    let out = env.cmd().args(["snapshot", "--quiet"]).arg(env.path("f")).output().unwrap();
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked") && err.contains("exclusive lock held by someone@"), "{err}");
}

#[test]
fn commands_leave_no_lock_behind() {
    let env = Env::new();
    env.init();
    fs::write(env.path("f"), b"x").unwrap();
    env.cmd().args(["snapshot", "--quiet"]).arg(env.path("f")).assert().success();
    env.cmd().args(["restore", "latest", "--target"]).arg(env.path("o")).assert().success();
    env.cmd().args(["check"]).assert().success();
    assert_eq!(fs::read_dir(env.repo().join("locks")).unwrap().count(), 0);
}

#[test]
fn deleting_or_damaging_the_cache_changes_nothing_but_speed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("f{i}")), random_bytes(200_000, i)).unwrap();
    }
    env.snapshot_json(&[src.as_os_str()]);
    assert!(env.cache().is_dir());
    fs::remove_dir_all(env.cache()).unwrap();
    let again = env.snapshot_json(&[src.as_os_str()]);
    assert_eq!(again["files_unchanged"], 5);
    assert_eq!(again["data_blobs_added"], 0);
    // A cache file full of garbage is rebuilt.
    // Beside it: the directory's tag and the stamp of the last clean close.
    let mut cache_files = Vec::new();
    let mut others = Vec::new();
    walk(&env.cache(), &mut |p, m| {
        if m.is_file() {
            match p.file_name().and_then(OsStr::to_str) {
                Some("cache.redb") => cache_files.push(p.to_path_buf()),
                _ => others.push(p.file_name().unwrap().to_os_string()),
            }
        }
    });
    assert_eq!(cache_files.len(), 1, "{cache_files:?}");
    others.sort();
    assert_eq!(others, ["CACHEDIR.TAG", "cache.redb.clean"], "{others:?}");
    fs::write(&cache_files[0], b"this is not a database").unwrap();
    let third = env.snapshot_json(&[src.as_os_str()]);
    assert_eq!(third["files_unchanged"], 5);
    let out = env.path("out");
    env.cmd().args(["--no-cache", "restore", "latest", "--target"]).arg(&out).assert().success();
    assert_same_tree(&src, &out.join("src"));
}
