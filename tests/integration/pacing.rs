//! A run's pace and budget: `--max-upload` stops a snapshot cleanly (its
//! packs indexed, no snapshot, no lock left, exit code 4) and the next run
//! uploads only the rest; a deadline stops a run the same way; writes
//! through `--limit-upload`'s limiter stay under the rate; a free
//! account's premium waits (`FLOOD_PREMIUM_WAIT_X`) on the loopback server
//! slow a snapshot down without failing it, and nothing is sent while one
//! runs.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tstor::archiver::pipeline::PipelineOptions;
use tstor::archiver::{NoProgress, RunBudget, SnapshotOptions};
use tstor::backend::memory::MemoryBackend;
use tstor::backend::telegram::TelegramSession;
use tstor::backend::throttle::{ThrottledBackend, UploadLimiter};
use tstor::backend::Backend;
use tstor::crypto::kdf::KdfParams;
use tstor::format::ObjectKind;
use tstor::ops;
use tstor::repo::{InitOptions, RepoError, Repository};
use tstor_tgloop::{Config, PremiumWait, Server};

use crate::common::*;

/// Files of random (incompressible) bytes: `count` of `size` each.
fn random_tree(dir: &Path, count: u64, size: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        fs::write(dir.join(format!("f{i:02}.bin")), random_bytes(size, 700 + i)).unwrap();
    }
}

/// Bytes of the pack files of a local repository.
fn pack_bytes(repo: &Path) -> u64 {
    let mut total = 0;
    walk(&repo.join("packs"), &mut |_, m| {
        if m.is_file() {
            total += m.len()
        }
    });
    total
}

fn lock_files(repo: &Path) -> usize {
    let mut n = 0;
    walk(&repo.join("locks"), &mut |_, m| n += usize::from(m.is_file()));
    n
}

#[test]
fn a_snapshot_stopped_at_max_upload_keeps_its_packs_and_the_next_run_uploads_only_the_rest() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // 24 MiB: local data packs ramp 4, 8, 16 MiB.
    random_tree(&src, 12, 2 << 20);
    let limit: u64 = 13 << 20;

    let out = env.cmd().args(["snapshot", "--max-upload", "13MiB"]).arg(&src).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("stopped early") && err.contains("upload limit"), "{err}");
    assert!(err.contains("run the same snapshot again"), "{err}");
    let first = pack_bytes(&env.repo());
    assert!(first <= limit, "{first} bytes of packs, over the limit of {limit}");
    assert!(first >= 4 << 20, "the packs that fit were uploaded: {first}");
    assert!(env.snapshots_json().is_empty(), "no snapshot for a stopped run");
    assert_eq!(lock_files(&env.repo()), 0, "the lock was released");
    let check = env.cmd().arg("check").output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(!String::from_utf8_lossy(&check.stdout).contains("unindexed"), "the stopped run indexed its packs");

    // The next run sends only what the first did not.
    let summary = env.snapshot_json(&[src.as_os_str()]);
    let total = 24u64 << 20;
    assert_eq!(summary["bytes_read"].as_u64(), Some(total));
    let added = summary["bytes_added"].as_u64().unwrap();
    let second = pack_bytes(&env.repo()) - first;
    assert!(added + first <= total + (64 << 10), "{added} bytes added again after {first} were uploaded");
    assert!(first + second <= total + total / 50, "{first} + {second} bytes of packs for {total} bytes of data");
    let restored = env.path("out");
    env.cmd().args(["restore", "latest", "--target"]).arg(&restored).assert().success();
    assert_same_tree(&src, &restored.join("src"));
}

#[test]
fn pace_and_budget_flags_refuse_nonsense() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    random_tree(&src, 1, 1000);
    for (flag, value) in
        [("--limit-upload", "0"), ("--limit-upload", "fast"), ("--max-duration", "soon"), ("--max-upload", "lots")]
    {
        let out = env.cmd().args(["snapshot", flag, value]).arg(&src).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && err.contains(value), "{err}");
    }
    assert!(env.snapshots_json().is_empty());
}

fn fast_init() -> InitOptions {
    InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() }
}

fn small_packs(src: &Path) -> SnapshotOptions {
    let mut o = SnapshotOptions::new(vec![src.to_path_buf()]);
    o.pipeline = PipelineOptions { data_pack_size: 256 << 10, tree_pack_size: 4 << 10, ..Default::default() };
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_past_its_deadline_stops_cleanly_without_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    random_tree(&src, 4, 300_000);
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"pw", fast_init()).await.unwrap();
    let mut opts = small_packs(&src);
    opts.budget = RunBudget { deadline: Some(std::time::Instant::now()), ..RunBudget::default() };
    let err = ops::snapshot(&repo, opts, Arc::new(NoProgress)).await.err().expect("the run must stop");
    assert!(matches!(err, RepoError::Stopped { .. }), "{err}");
    assert!(err.to_string().contains("time limit"), "{err}");
    assert!(backend.list(ObjectKind::Snapshot).await.unwrap().is_empty());
    assert!(backend.list(ObjectKind::Lock).await.unwrap().is_empty(), "the lock was released");

    // Without a deadline the same run completes.
    ops::snapshot(&repo, small_packs(&src), Arc::new(NoProgress)).await.unwrap();
    assert_eq!(backend.list(ObjectKind::Snapshot).await.unwrap().len(), 1);
}

/// `--limit-upload` in the library: a snapshot through the limiter books a
/// slot for every byte written. Wall time is not asserted: the last slot
/// booked need not have run out when the snapshot ends, and a test never
/// depends on the machine's speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_through_the_upload_limiter_stays_under_the_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    random_tree(&src, 6, 300_000);
    let memory = Arc::new(MemoryBackend::new());
    let rate = 8 << 20;
    let limiter = Arc::new(UploadLimiter::new(rate));
    let throttled: Arc<dyn Backend> = Arc::new(ThrottledBackend::new(memory.clone(), limiter.clone()));
    let repo = Repository::init(throttled, b"pw", fast_init()).await.unwrap();
    let booked_before = limiter.booked();
    ops::snapshot(&repo, small_packs(&src), Arc::new(NoProgress)).await.unwrap();
    let mut written = 0u64;
    for kind in [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Snapshot] {
        written += memory.list(kind).await.unwrap().iter().map(|o| o.size).sum::<u64>();
    }
    assert!(written > 1_800_000, "{written}");
    let booked = limiter.booked() - booked_before;
    assert!(booked >= limiter.duration_of(written), "{booked:?} booked for {written} bytes");
}

/// The loopback server as a free account: a transfer budget answered with
/// `FLOOD_PREMIUM_WAIT_X` once spent, and a session file for it.
struct FreeAccount {
    server: Server,
    env: Env,
    session: std::path::PathBuf,
    _rt: tokio::runtime::Runtime,
}

impl FreeAccount {
    fn start(profile: PremiumWait) -> FreeAccount {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = Config { premium_wait: Some(profile), ..Config::default() };
        let server = rt.block_on(Server::start_with(config)).unwrap();
        let env = Env::new();
        let session = env.path("telegram.session");
        let SocketAddr::V4(v4) = server.addr() else { panic!("loopback server listens on IPv4") };
        let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
        let v6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
        let mut s = TelegramSession::with_dc(server.dc_id(), v4, v6, server.auth_key());
        s.set_api_id(1).unwrap();
        s.save_to(&session).unwrap();
        FreeAccount { server, env, session, _rt: rt }
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = self.env.cmd();
        c.env("TSTOR_REPOSITORY", "telegram:me")
            .env("TSTOR_TG_SESSION", &self.session)
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0")
            .env("TSTOR_TG_PACK_MIB", "2")
            .timeout(Duration::from_secs(300));
        c
    }
}

#[test]
fn premium_waits_slow_a_snapshot_down_without_failing_it_or_an_early_request() {
    // After 1 MiB, 1 MiB a second in one-second windows: two parts a
    // window, while tstor sends up to eight at once.
    let profile = PremiumWait {
        free_bytes: 1 << 20,
        bytes_per_sec: 1 << 20,
        window: Duration::from_secs(1),
        jitter: 0.2,
        seed: 11,
    };
    let tg = FreeAccount::start(profile);
    tg.cmd().arg("init").assert().success();
    let src = tg.env.path("src");
    random_tree(&src, 5, 1 << 20);
    let out = tg.cmd().args(["-v", "snapshot"]).arg(&src).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(tg.server.premium_waits() > 0, "the budget was never spent");
    assert!(err.contains("FLOOD_PREMIUM_WAIT") || err.contains("asked to slow down"), "{err}");
    assert_eq!(tg.server.early_calls(), Vec::<&str>::new(), "a request went out during a premium wait");
    let restored = tg.env.path("out");
    tg.cmd().args(["restore", "latest", "--target"]).arg(&restored).assert().success();
    assert_same_tree(&src, &restored.join("src"));
}
