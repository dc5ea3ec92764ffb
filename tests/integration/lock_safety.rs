//! Locks as a safety mechanism: a snapshot whose lock was removed or went
//! stale while it was paused commits nothing (restic issue 2715's case), prune
//! leaves young and unreadable unindexed packs alone and says so, and a lock
//! dated in the future is named by the commands it blocks and removed by
//! `unlock`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;

use tstor::backend::local::LocalBackend;
use tstor::backend::Backend;
use tstor::format::lock::Lock;
use tstor::format::{Id, ObjectKind};
use tstor::repo::Repository;

use crate::common::*;

/// The ids of the snapshots in the repository.
fn snapshot_ids(env: &Env) -> Vec<String> {
    env.snapshots_json().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn check_output(env: &Env) -> (bool, String) {
    let out = env.cmd().arg("check").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A snapshot of `src` started with `-v`, stopped with SIGSTOP right after it
/// logged that it loaded the index and chose its parent (so it deduplicates
/// against what is stored now). The stderr reader thread keeps draining the
/// pipe and returns everything the process wrote.
fn start_paused_snapshot(
    env: &Env,
    src: &Path,
    extra_env: &[(&str, &str)],
) -> (Child, std::thread::JoinHandle<String>) {
    let mut cmd = env.std_cmd();
    cmd.args(["-v", "snapshot"]).arg(src).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let stderr = child.stderr.take().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut started_tx = Some(started_tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("snapshot started") {
                // SAFETY: signals a child process we spawned and have not reaped.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                if let Some(tx) = started_tx.take() {
                    let _ = tx.send(());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    started_rx.recv().expect("the snapshot logs that it started");
    (child, reader)
}

fn resume(child: &Child) {
    // SAFETY: signals a child process we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
}

/// A repository with one snapshot A of `src/data`, and a large new file
/// beside it so that the next snapshot (whose parent is A and which reuses
/// A's blobs) is still busy when it is stopped.
fn repo_with_one_snapshot(env: &Env) -> (PathBuf, String) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("data")).unwrap();
    for i in 0..8u64 {
        fs::write(src.join(format!("data/f{i}")), random_bytes(300_000, i)).unwrap();
    }
    env.snapshot_json(&[src.as_os_str()]);
    let ids = snapshot_ids(env);
    assert_eq!(ids.len(), 1);
    fs::write(src.join("zz-large"), random_bytes(32 << 20, 99)).unwrap();
    (src, ids[0].clone())
}

/// After the paused snapshot resumed: it failed, said its lock is gone,
/// committed nothing, and the repository checks clean and takes a new
/// snapshot that restores.
fn assert_paused_snapshot_committed_nothing(env: &Env, child: Child, reader: std::thread::JoinHandle<String>) {
    let status = child.wait_with_output().unwrap().status;
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(11), "the resumed snapshot must stop: {stderr}");
    assert!(stderr.contains("nothing was committed"), "it says why: {stderr}");
    assert!(snapshot_ids(env).is_empty(), "no snapshot was committed");
    let (ok, text) = check_output(env);
    assert!(ok, "check after the resumed snapshot: {text}");
    // The next snapshot is whole: deduplication found nothing deleted in the index.
    let src = env.path("src");
    env.snapshot_json(&[src.as_os_str()]);
    let out = env.path("out");
    env.cmd().args(["restore", "latest", "--verify", "--target"]).arg(&out).assert().success();
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn a_snapshot_whose_lock_was_removed_commits_nothing() {
    let env = Env::new();
    let (src, first) = repo_with_one_snapshot(&env);
    let (child, reader) = start_paused_snapshot(&env, &src, &[]);
    // Another host: clears every lock and prunes the snapshot the paused one
    // deduplicates against.
    env.cmd().args(["unlock", "--remove-all"]).assert().success();
    env.cmd().args(["forget", &first, "--prune"]).assert().success();
    resume(&child);
    assert_paused_snapshot_committed_nothing(&env, child, reader);
}

#[test]
fn a_snapshot_whose_lock_went_stale_commits_nothing() {
    let env = Env::new();
    let (src, first) = repo_with_one_snapshot(&env);
    // Locks go stale after 2 s here, for every process of this test.
    let stale = [("TSTOR_LOCK_STALE_SECS", "2")];
    let (child, reader) = start_paused_snapshot(&env, &src, &stale);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let o = env.cmd().args(["forget", &first, "--prune"]).env(stale[0].0, stale[0].1).output().unwrap();
    assert!(o.status.success(), "a stale lock does not block prune: {}", String::from_utf8_lossy(&o.stderr));
    resume(&child);
    assert_paused_snapshot_committed_nothing(&env, child, reader);
}

/// Stores `bytes` as a pack under `id` in the local repository and dates it `age_secs` back.
fn plant_pack(env: &Env, id: &Id, bytes: &[u8], age_secs: i64) -> PathBuf {
    let hex = id.to_hex();
    let path = env.repo().join("packs").join(&hex[..2]).join(&hex);
    fs::write(&path, bytes).unwrap();
    set_mtime(&path, tstor::host::now_ns() - age_secs * 1_000_000_000);
    path
}

#[test]
fn prune_keeps_unreadable_unindexed_packs_and_says_so() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(200_000, 1)).unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    // A day-old pack no index lists whose header does not open.
    let id = Id::random();
    let planted = plant_pack(&env, &id, &random_bytes(5000, 7), 86_400);
    let short = &id.to_hex()[..8];

    let (ok, text) = check_output(&env);
    assert!(ok, "{text}");
    assert!(text.contains(short), "check names the pack: {text}");
    assert!(!text.contains("the next snapshot indexes it"), "check must not promise a recovery: {text}");
    assert!(text.contains("cannot be read"), "{text}");

    let out = env.cmd().args(["snapshot", src.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(short) && stderr.contains("cannot be read"), "snapshot names the pack: {stderr}");

    let out = env.cmd().arg("prune").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(planted.exists(), "prune must not delete a pack it could not read: {text}");
    assert!(text.contains(short) && text.contains("cannot be read"), "prune names the pack: {text}");
    let json: serde_json::Value =
        serde_json::from_slice(&env.cmd().args(["prune", "--json"]).output().unwrap().stdout).unwrap();
    assert_eq!(json["unreadable_unindexed_packs"][0]["id"], id.to_hex(), "{json}");
}

#[test]
fn prune_leaves_young_unindexed_packs_alone() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(200_000, 1)).unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    let packs_dir = env.repo().join("packs");
    let mut stored = Vec::new();
    walk(&packs_dir, &mut |p, m| {
        if m.is_file() {
            stored.push(p.to_path_buf())
        }
    });
    // Copies of a real pack under other names stand for packs of a snapshot
    // still uploading: unindexed, readable, holding nothing a snapshot uses.
    let bytes = fs::read(&stored[0]).unwrap();
    let young = plant_pack(&env, &Id::random(), &bytes, 60);
    let old = plant_pack(&env, &Id::random(), &bytes, 3 * 3600);
    let json: serde_json::Value =
        serde_json::from_slice(&env.cmd().args(["prune", "--json"]).output().unwrap().stdout).unwrap();
    assert!(young.exists(), "a pack younger than the grace period stays: {json}");
    assert!(!old.exists(), "an old unindexed pack holding nothing used goes: {json}");
    assert_eq!(json["young_unindexed_packs"], 1, "{json}");
}

/// Stores a lock object as another host would.
fn plant_lock(env: &Env, hostname: &str, refreshed_ns: i64, exclusive: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
        let repo = Repository::open(backend, PASSWORD.as_bytes(), None).await.unwrap();
        let lock = Lock {
            exclusive,
            hostname: hostname.into(),
            username: "someone".into(),
            pid: 4242,
            created_ns: refreshed_ns,
            refreshed_ns,
            nonce: Id::random().0[..16].try_into().unwrap(),
        };
        repo.save_object(ObjectKind::Lock, &lock.encode()).await.unwrap();
    });
}

fn lock_count(env: &Env) -> usize {
    fs::read_dir(env.repo().join("locks")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_lock_dated_in_the_future_is_named_and_unlock_removes_it() {
    let env = Env::new();
    env.init();
    let day_ahead = tstor::host::now_ns() + 86_400 * 1_000_000_000;
    plant_lock(&env, "clockwrong", day_ahead, true);
    let out = env.cmd().arg("prune").output().unwrap();
    assert_eq!(out.status.code(), Some(11));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let when = tstor::time::format_time(day_ahead, &tstor::time::zone(true));
    assert!(stderr.contains("clockwrong") && stderr.contains(&when), "names host and time: {stderr}");
    assert!(stderr.contains("future"), "{stderr}");

    // A lock a little ahead (clock skew within the tolerance) is left alone.
    plant_lock(&env, "slightlyahead", tstor::host::now_ns() + 60 * 1_000_000_000, false);
    let out = env.cmd().arg("unlock").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 lock removed") && stdout.contains("clockwrong"), "{stdout}");
    assert_eq!(lock_count(&env), 1, "the lock within the tolerance stays");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    env.snapshot_json(&[src.as_os_str()]);
}
