//! Ctrl-C (SIGINT) and SIGTERM during a snapshot: the run stops cleanly
//! with exit code 130 or 143, leaves no lock, `check` finds nothing wrong,
//! and the next run reuses the packs the stopped runs uploaded.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

fn packs(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in fs::read_dir(repo.join("packs")).into_iter().flatten().flatten() {
        for f in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            out.insert(f.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

fn locks(repo: &Path) -> usize {
    fs::read_dir(repo.join("locks")).map(|d| d.count()).unwrap_or(0)
}

/// Starts a snapshot throttled to 2 MiB/s, waits until it has uploaded a
/// pack beyond `before`, sends `signal` and returns the exit code and stderr.
fn interrupt_a_snapshot(env: &Env, src: &Path, before: &BTreeSet<String>, signal: i32) -> (Option<i32>, String) {
    let child = env
        .std_cmd()
        .args(["snapshot", "--limit-upload", "2MiB"])
        .arg(src)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while packs(&env.repo()).difference(before).next().is_none() {
        assert!(started.elapsed() < Duration::from_secs(300), "no pack was uploaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_snapshot_stopped_by_sigint_or_sigterm_exits_130_or_143_and_the_next_run_reuses_its_packs() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // 60 files of 200 KB, one blob each: 12 MB, at 2 MiB/s about 6 s of uploads.
    for i in 0..60u64 {
        fs::write(src.join(format!("f{i:02}")), random_bytes(200_000, i)).unwrap();
    }
    let (code, stderr) = interrupt_a_snapshot(&env, &src, &BTreeSet::new(), libc::SIGINT);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert_eq!(locks(&env.repo()), 0, "the lock is released");
    assert!(env.snapshots_json().is_empty(), "no snapshot was committed");
    env.cmd().arg("check").assert().success();
    let after_int = packs(&env.repo());

    let (code, stderr) = interrupt_a_snapshot(&env, &src, &after_int, libc::SIGTERM);
    assert_eq!(code, Some(143), "{stderr}");
    assert_eq!(locks(&env.repo()), 0, "the lock is released");
    env.cmd().arg("check").assert().success();
    let after_term = packs(&env.repo());
    assert!(after_term.is_superset(&after_int), "what the first run uploaded is kept");

    let summary = env.snapshot_json(&[src.as_os_str()]);
    let added = summary["data_blobs_added"].as_u64().unwrap();
    assert!(added < 60, "the packs of the stopped runs are reused: {summary}");
    assert!(packs(&env.repo()).is_superset(&after_term));
    env.cmd().args(["check", "--verify"]).assert().success();
}

/// In the library: a stop requested before or during the walk ends the
/// run as a deadline does, naming the signal, with nothing committed and
/// the lock released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_request_ends_a_snapshot_without_a_snapshot_and_releases_its_lock() {
    use std::sync::Arc;
    use tstor::archiver::pipeline::PipelineOptions;
    use tstor::archiver::{NoProgress, SnapshotOptions, StopRequest};
    use tstor::backend::memory::MemoryBackend;
    use tstor::backend::Backend;
    use tstor::crypto::kdf::KdfParams;
    use tstor::format::ObjectKind;
    use tstor::repo::{InitOptions, RepoError, Repository};

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        fs::write(src.join(format!("f{i}")), random_bytes(300_000, i)).unwrap();
    }
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let init = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
    let repo = Repository::init(backend.clone(), b"pw", init).await.unwrap();
    let mut opts = SnapshotOptions::new(vec![src.clone()]);
    opts.pipeline = PipelineOptions { data_pack_size: 256 << 10, tree_pack_size: 4 << 10, ..Default::default() };
    let stop = StopRequest::new();
    stop.request(libc::SIGTERM);
    stop.request(libc::SIGINT);
    assert_eq!(stop.requested(), Some(libc::SIGTERM), "the first request is kept");
    opts.budget.stop = stop;
    let err = tstor::ops::snapshot(&repo, opts, Arc::new(NoProgress)).await.err().expect("the run must stop");
    assert!(matches!(err, RepoError::Stopped { .. }), "{err}");
    assert!(err.to_string().contains("interrupted by SIGTERM"), "{err}");
    assert!(backend.list(ObjectKind::Snapshot).await.unwrap().is_empty());
    assert!(backend.list(ObjectKind::Lock).await.unwrap().is_empty(), "the lock was released");
}
