//! `forget`, `prune` and `unlock`: space is reclaimed and what is kept stays
//! restorable; a prune interrupted at any of its phases leaves a repository
//! that checks clean and a second prune converges; a snapshot racing a prune
//! never commits data the prune deleted; stale locks do not block.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tstor::archiver::pipeline::PipelineOptions;
use tstor::archiver::{NoProgress, SnapshotOptions};
use tstor::backend::faults::FaultyBackend;
use tstor::backend::local::LocalBackend;
use tstor::backend::memory::MemoryBackend;
use tstor::backend::{Backend, BackendError, ObjectInfo};
use tstor::crypto::kdf::KdfParams;
use tstor::format::lock::Lock;
use tstor::format::snapshot::Snapshot;
use tstor::format::tree::NodeKind;
use tstor::format::{Id, ObjectKind};
use tstor::ops;
use tstor::ops::check::{NoCheckProgress, VerifyScope};
use tstor::ops::forget::ForgetOptions;
use tstor::ops::prune::{MaxUnused, PruneOptions, PruneReport};
use tstor::repo::lock;
use tstor::repo::{InitOptions, Repository};
use tstor::restorer::{NoRestoreProgress, RestoreOptions};

use crate::common::*;

fn repo_bytes(env: &Env) -> u64 {
    let mut total = 0;
    walk(&env.repo(), &mut |_, m| {
        if m.is_file() {
            total += m.len()
        }
    });
    total
}

fn lock_files(env: &Env) -> usize {
    fs::read_dir(env.repo().join("locks")).map(|d| d.count()).unwrap_or(0)
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn check_verify(env: &Env) {
    let out = env.cmd().args(["check", "--verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "check --verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prune_reclaims_the_space_of_a_forgotten_large_file() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("keep")).unwrap();
    for i in 0..6u64 {
        fs::write(src.join(format!("keep/f{i}")), random_bytes(50_000 + i as usize * 1000, i)).unwrap();
    }
    let big_len = 24 << 20;
    fs::write(src.join("big"), random_bytes(big_len, 99)).unwrap();
    let first = env.snapshot_json(&[src.as_os_str()]);
    fs::remove_file(src.join("big")).unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();

    let out = env.cmd().args(["forget", "--json", &first_id[..12]]).output().unwrap();
    let forgot = json_of(&out);
    assert_eq!(forgot["removed"], serde_json::json!([first_id]));
    assert_eq!(env.snapshots_json().len(), 1);

    let before = repo_bytes(&env);
    let dry = json_of(&env.cmd().args(["prune", "--dry-run", "--json"]).output().unwrap());
    assert!(dry["dry_run"].as_bool().unwrap());
    assert!(dry["bytes_reclaimed"].as_u64().unwrap() >= big_len as u64 * 9 / 10, "{dry}");
    assert_eq!(repo_bytes(&env), before, "a dry run changes nothing");

    let report = json_of(&env.cmd().args(["prune", "--json"]).output().unwrap());
    let after = repo_bytes(&env);
    let dropped = before - after;
    assert!(
        dropped >= big_len as u64 * 95 / 100 && dropped <= big_len as u64 * 105 / 100 + (1 << 20),
        "repository shrank by {dropped} bytes for a {big_len}-byte file: {report}"
    );
    assert!(report["bytes_reclaimed"].as_u64().unwrap() >= big_len as u64 * 95 / 100);
    assert_eq!(report["snapshots"], 1);

    check_verify(&env);
    let restored = env.path("out");
    env.cmd().args(["restore", "latest", "--verify", "--target"]).arg(&restored).assert().success();
    assert_same_tree(&src, &restored.join("src"));

    // Nothing is left to do, and the text output says so.
    let again = env.cmd().arg("prune").output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to prune"));
    assert_eq!(lock_files(&env), 0);
}

/// Writes copies of the repository's latest snapshot with the given times
/// (ns), hosts and tags, as if they had been taken then; returns their ids.
fn add_snapshots(env: &Env, copies: &[(i64, &str, &[&str])]) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
        let repo = Repository::open(backend, PASSWORD.as_bytes(), None).await.unwrap();
        let (_, base) = repo.find_snapshot("latest").await.unwrap();
        let mut ids = Vec::new();
        for (time, host, tags) in copies {
            let s = Snapshot {
                time_ns: *time,
                hostname: host.to_string(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..base.clone()
            };
            ids.push(repo.save_object(ObjectKind::Snapshot, &s.encode()).await.unwrap().to_hex());
        }
        ids
    })
}

const DAY: i64 = 86_400 * 1_000_000_000;
const HOUR: i64 = 3_600 * 1_000_000_000;

#[test]
fn forget_dry_run_and_json_name_the_rules_that_keep_each_snapshot() {
    let env = Env::new();
    env.init();
    fs::write(env.path("f"), b"some data").unwrap();
    let real = env.snapshot_json(
        &[os("--host"), os("h"), env.path("f").into_os_string()].iter().map(|s| s.as_os_str()).collect::<Vec<_>>(),
    );
    let real_id = real["snapshot_id"].as_str().unwrap().to_string();
    // 2024-01-01 00:00 UTC, and days after it (the real snapshot is newer than all).
    let t0 = 1_704_067_200 * 1_000_000_000i64;
    let ids = add_snapshots(
        &env,
        &[
            (t0, "h", &[]),
            (t0 + 2 * HOUR, "h", &[]),
            (t0 + DAY, "h", &["keepme"]),
            (t0 + 2 * DAY, "h", &[]),
            (t0 + 2 * DAY + HOUR, "h", &[]),
            (t0 + DAY, "other", &[]),
        ],
    );
    let listing = |env: &Env| env.snapshots_json().len();
    assert_eq!(listing(&env), 7);

    // Text dry run: rules and reasons, nothing removed.
    let out = env
        .cmd()
        .args(["forget", "--dry-run", "--host", "h", "--keep-last", "1", "--keep-daily", "2", "--keep-tag", "keepme"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Applying policy: keep 1 latest, 2 daily snapshots and all snapshots with tags [keepme]"),
        "{text}"
    );
    assert!(text.contains("snapshots for (host [h], paths ["), "{text}");
    assert!(
        text.contains("last snapshot") && text.contains("daily snapshot") && text.contains("has tags [keepme]"),
        "{text}"
    );
    assert!(text.contains("dry run: 3 snapshots would be removed"), "{text}");
    assert!(!text.contains("other"), "--host leaves the other host alone: {text}");
    assert_eq!(listing(&env), 7);

    // JSON dry run: per snapshot, the rules that kept it.
    let v = json_of(
        &env.cmd()
            .args(["forget", "--dry-run", "--json", "--host", "h", "--keep-last", "1", "--keep-daily", "2"])
            .args(["--keep-tag", "keepme"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["removed"], serde_json::json!([]));
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{v}");
    assert_eq!(groups[0]["group"]["host"], "h");
    let reasons: HashMap<String, Vec<String>> = groups[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let r = s["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            (s["id"].as_str().unwrap().to_string(), r)
        })
        .collect();
    // Newest first: the real snapshot (today), then 2024-01-03 01:00, ...
    assert_eq!(reasons[&real_id], ["last snapshot", "daily snapshot"]);
    assert_eq!(reasons[&ids[4]], ["daily snapshot"]);
    assert_eq!(reasons[&ids[2]], ["has tags [keepme]"]);
    assert_eq!(reasons.len(), 3);
    let mut removed: Vec<&str> =
        groups[0]["remove"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    removed.sort();
    let mut expected = vec![ids[0].as_str(), ids[1].as_str(), ids[3].as_str()];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(v["would_remove"].as_array().unwrap().len(), 3);

    // keep-within counts back from the newest snapshot of each group; grouping by nothing makes one group.
    let v = json_of(
        &env.cmd().args(["forget", "--dry-run", "--json", "--group-by", "", "--keep-within", "1y"]).output().unwrap(),
    );
    assert_eq!(v["groups"].as_array().unwrap().len(), 1);
    let kept = v["groups"][0]["keep"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "only the real snapshot is within a year of itself: {v}");
    assert_eq!(kept[0]["reasons"], serde_json::json!(["within 1y"]));

    // The real run removes what the dry run said, and with --prune cleans up.
    let v = json_of(
        &env.cmd()
            .args(["forget", "--json", "--prune", "--host", "h", "--keep-last", "1", "--keep-daily", "2"])
            .args(["--keep-tag", "keepme"])
            .output()
            .unwrap(),
    );
    let mut gone: Vec<&str> = v["removed"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    gone.sort();
    assert_eq!(gone, expected);
    assert!(v["prune"].is_object(), "{v}");
    assert_eq!(listing(&env), 4);

    // Explicit ids forget exactly those; a policy beside them is refused, and so is no policy at all.
    env.cmd().args(["forget", &ids[5][..10]]).assert().success();
    assert_eq!(listing(&env), 3);
    let out = env.cmd().args(["forget", "--keep-last", "1", &ids[2]]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = env.cmd().args(["forget"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy"));
    assert_eq!(listing(&env), 3);
    check_verify(&env);
    assert_eq!(lock_files(&env), 0);
}

// ---- library-level: prune interrupted at each phase ----

fn fast_init() -> InitOptions {
    InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() }
}

fn snapshot_options(src: &Path) -> SnapshotOptions {
    let mut o = SnapshotOptions::new(vec![src.to_path_buf()]);
    // One seal worker: blobs reach packs in walk order, so every run packs alike.
    o.pipeline =
        PipelineOptions { seal_workers: 1, data_pack_size: 200 << 10, tree_pack_size: 2 << 10, ..Default::default() };
    o
}

fn prune_options() -> PruneOptions {
    PruneOptions {
        max_unused: MaxUnused::Percent(0.0),
        data_pack_size: 128 << 10,
        tree_pack_size: 2 << 10,
        // Packs left by the interrupted prunes here are seconds old.
        unindexed_grace: Duration::ZERO,
        ..Default::default()
    }
}

/// Small files share packs, so forgetting some makes packs partly used;
/// the large file's packs become wholly unused.
fn write_source(src: &Path, round: u64) {
    fs::create_dir_all(src.join("small")).unwrap();
    for i in 0..40u64 {
        let p = src.join(format!("small/s{i:02}"));
        if round == 0 {
            fs::write(&p, random_bytes(20_000 + (i as usize % 7) * 3_000, i)).unwrap();
        } else if i % 3 == 0 {
            fs::remove_file(&p).unwrap();
        }
    }
    if round == 0 {
        fs::write(src.join("large"), random_bytes(900_000, 7)).unwrap();
    } else {
        fs::remove_file(src.join("large")).unwrap();
    }
}

/// Fails every index write while closed, so that a prune can be stopped
/// right after its new packs whatever their number.
struct IndexGate {
    inner: Arc<FaultyBackend<MemoryBackend>>,
    closed: AtomicBool,
}

#[async_trait::async_trait]
impl Backend for IndexGate {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create(&self) -> tstor::backend::Result<()> {
        self.inner.create().await
    }
    async fn put(&self, kind: ObjectKind, id: &Id, data: bytes::Bytes) -> tstor::backend::Result<()> {
        if kind == ObjectKind::Index && self.closed.load(Ordering::SeqCst) {
            return Err(BackendError::Permanent { message: "injected index write failure".into() });
        }
        self.inner.put(kind, id, data).await
    }
    async fn get(&self, kind: ObjectKind, id: &Id) -> tstor::backend::Result<bytes::Bytes> {
        self.inner.get(kind, id).await
    }
    async fn get_range(
        &self,
        kind: ObjectKind,
        id: &Id,
        offset: u64,
        len: u32,
    ) -> tstor::backend::Result<bytes::Bytes> {
        self.inner.get_range(kind, id, offset, len).await
    }
    async fn list(&self, kind: ObjectKind) -> tstor::backend::Result<Vec<ObjectInfo>> {
        self.inner.list(kind).await
    }
    async fn delete(&self, kind: ObjectKind, id: &Id) -> tstor::backend::Result<()> {
        self.inner.delete(kind, id).await
    }
}

/// A repository on a fault-injecting memory backend with three snapshots, the
/// first of which is forgotten: prune has packs to delete and to repack.
async fn pruneable_repo(tmp: &Path) -> (Arc<IndexGate>, Repository) {
    let src = tmp.join("src");
    let faulty = Arc::new(IndexGate {
        inner: Arc::new(FaultyBackend::new(MemoryBackend::new())),
        closed: AtomicBool::new(false),
    });
    let backend: Arc<dyn Backend> = faulty.clone();
    let repo = Repository::init(backend, b"pw", fast_init()).await.unwrap();
    write_source(&src, 0);
    let first = ops::snapshot(&repo, snapshot_options(&src), Arc::new(NoProgress)).await.unwrap();
    write_source(&src, 1);
    ops::snapshot(&repo, snapshot_options(&src), Arc::new(NoProgress)).await.unwrap();
    fs::write(src.join("small/extra"), random_bytes(30_000, 4242)).unwrap();
    ops::snapshot(&repo, snapshot_options(&src), Arc::new(NoProgress)).await.unwrap();
    let forget = ForgetOptions { ids: vec![first.id.to_hex()], ..Default::default() };
    let (report, _) = ops::forget(&repo, &forget, None).await.unwrap();
    assert_eq!(report.removed, vec![first.id]);
    (faulty, repo)
}

/// Every blob the snapshots use, found by walking their trees.
async fn used_blobs(repo: &Repository) -> HashSet<Id> {
    let index = repo.load_index().await.unwrap();
    let (snaps, bad) = repo.snapshots().await.unwrap();
    assert!(bad.is_empty());
    let mut used = HashSet::new();
    let mut stack: Vec<Id> = snaps.iter().map(|(_, s)| s.tree).collect();
    while let Some(t) = stack.pop() {
        if !used.insert(t) {
            continue;
        }
        for node in repo.load_tree_from_storage(&index, &t).await.unwrap().nodes {
            if node.kind == NodeKind::Dir {
                stack.extend(node.subtree);
            }
            used.extend(node.content);
        }
    }
    used
}

/// The converged state: storage holds exactly the indexed packs, the index
/// holds every used blob exactly once and nothing else, check is clean
/// without warnings, every snapshot restores, and prune has nothing to do.
async fn assert_converged(repo: &Repository, gate: &IndexGate, tmp: &Path, label: &str) {
    let report = ops::check(repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
    assert!(report.ok() && report.warnings.is_empty(), "{label}: {:?} {:?}", report.problems, report.warnings);
    let index = repo.load_index().await.unwrap();
    let stored: HashSet<Id> = gate.list(ObjectKind::Pack).await.unwrap().into_iter().map(|o| o.id).collect();
    let indexed: HashSet<Id> = index.packs().iter().map(|(id, _)| *id).collect();
    assert_eq!(stored, indexed, "{label}: storage holds exactly the indexed packs");
    assert_eq!(gate.list(ObjectKind::Index).await.unwrap().len(), 1, "{label}: one index object");
    let mut entries = 0;
    let mut in_index = HashSet::new();
    for (pack, _) in index.packs() {
        for b in index.blobs_in_pack(pack) {
            entries += 1;
            in_index.insert(b.id);
        }
    }
    let used = used_blobs(repo).await;
    assert_eq!(in_index, used, "{label}: the index holds exactly the used blobs");
    assert_eq!(entries, used.len(), "{label}: each once");
    let again = ops::prune(repo, &prune_options()).await.unwrap();
    assert!(again.nothing_to_do, "{label}: a further prune has nothing to do: {again:?}");
    let (snaps, _) = repo.snapshots().await.unwrap();
    for (id, _) in &snaps {
        let out = tmp.join(format!("restore-{}-{}", label.replace(' ', "_"), id.short()));
        let mut opts = RestoreOptions::new(out);
        opts.verify = true;
        let (_, _, outcome) = ops::restore(repo, &id.to_hex(), &opts, Arc::new(NoRestoreProgress)).await.unwrap();
        assert!(outcome.errors.is_empty(), "{label}: {:?}", outcome.errors);
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Let this many puts succeed (the first is the lock).
    Puts(u64),
    /// Every new pack uploads, the index write fails.
    IndexWrite,
    /// Let this many deletes succeed, counted from the case's own plan
    /// (repositories differ slightly in how many packs they hold).
    Deletes(DeletePoint),
}

#[derive(Clone, Copy, Debug)]
enum DeletePoint {
    /// The index is written, nothing deleted.
    None,
    /// Some old index objects gone.
    OneIndex,
    /// Every old index gone, no pack.
    AllIndexes,
    /// One pack gone.
    OnePack,
    /// All packs but one.
    AllPacksButOne,
}

impl DeletePoint {
    /// Deletes allowed before the failure, given the case's old index objects
    /// and the packs its prune deletes. The proofs of the lock before the
    /// index write and before the pack deletions each delete the previous
    /// lock object (a failure there is only a warning).
    fn budget(self, indexes: u64, pack_deletes: u64) -> u64 {
        match self {
            DeletePoint::None => 0,
            DeletePoint::OneIndex => 1 + 1,
            DeletePoint::AllIndexes => 1 + indexes,
            DeletePoint::OnePack => 1 + indexes + 1 + 1,
            DeletePoint::AllPacksButOne => 1 + indexes + 1 + pack_deletes - 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_interrupted_at_each_phase_leaves_a_clean_repository_and_converges() {
    let tmp = tempfile::tempdir().unwrap();
    // An uninterrupted prune, to learn how many writes and deletes each phase makes.
    let (gate, repo) = pruneable_repo(&tmp.path().join("reference")).await;
    let faulty = gate.inner.clone();
    let indexes_before = gate.list(ObjectKind::Index).await.unwrap().len() as u64;
    let (puts, deletes) = (faulty.puts(), faulty.deletes());
    let reference: PruneReport = ops::prune(&repo, &prune_options()).await.unwrap();
    assert!(reference.packs_deleted >= 2, "{reference:?}");
    assert!(reference.packs_repacked >= 2, "{reference:?}");
    let new_packs = reference.packs_written as u64;
    assert!(new_packs >= 2, "{reference:?}");
    assert_eq!(faulty.puts() - puts, 1 + new_packs + 2 + 1, "lock, new packs, two refreshes, index");
    let pack_deletes = (reference.packs_deleted + reference.packs_repacked) as u64;
    assert_eq!(
        faulty.deletes() - deletes,
        indexes_before + pack_deletes + 2 + 1,
        "old indexes, packs, two refreshed-away locks, lock"
    );
    assert_converged(&repo, &gate, tmp.path(), "reference").await;
    let reference_used = used_blobs(&repo).await.len();

    let faults = [
        Fault::Puts(1),    // before the first new pack
        Fault::Puts(2),    // after one new pack
        Fault::IndexWrite, // every new pack, but no index
        Fault::Deletes(DeletePoint::None),
        Fault::Deletes(DeletePoint::OneIndex),
        Fault::Deletes(DeletePoint::AllIndexes),
        Fault::Deletes(DeletePoint::OnePack),
        Fault::Deletes(DeletePoint::AllPacksButOne),
    ];
    for (n, fault) in faults.into_iter().enumerate() {
        for snapshot_between in [false, true] {
            let label = format!("{fault:?} snapshot_between={snapshot_between}");
            let dir = tmp.path().join(format!("case{n}-{snapshot_between}"));
            let (gate, repo) = pruneable_repo(&dir).await;
            let faulty = &gate.inner;
            match fault {
                Fault::Puts(k) => faulty.set_put_budget(Some(k)),
                Fault::IndexWrite => gate.closed.store(true, Ordering::SeqCst),
                Fault::Deletes(point) => {
                    let plan = ops::prune(&repo, &PruneOptions { dry_run: true, ..prune_options() }).await.unwrap();
                    let indexes = gate.list(ObjectKind::Index).await.unwrap().len() as u64;
                    let pack_deletes = (plan.packs_deleted + plan.packs_repacked) as u64;
                    assert!(pack_deletes >= 2, "{label}: {plan:?}");
                    faulty.set_delete_budget(Some(point.budget(indexes, pack_deletes)));
                }
            }
            let err = ops::prune(&repo, &prune_options()).await.expect_err(&label);
            assert!(err.to_string().contains("injected"), "{label}: {err}");
            faulty.set_put_budget(None);
            faulty.set_delete_budget(None);
            gate.closed.store(false, Ordering::SeqCst);
            // A prune that dies cannot remove its lock; this one's process lives on.
            lock::remove_locks(&repo, true).await.unwrap();

            let report = ops::check(&repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
            assert!(report.ok(), "{label}: check after the interruption: {:?}", report.problems);
            if snapshot_between {
                // Re-indexes whatever the interrupted prune left unindexed.
                ops::snapshot(&repo, snapshot_options(&dir.join("src")), Arc::new(NoProgress)).await.unwrap();
                let report = ops::check(&repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
                assert!(
                    report.ok() && report.warnings.is_empty(),
                    "{label}: {:?} {:?}",
                    report.problems,
                    report.warnings
                );
            }
            let second = ops::prune(&repo, &prune_options()).await.unwrap();
            assert!(!second.nothing_to_do, "{label}: the interrupted prune left work");
            assert_converged(&repo, &gate, &dir, &label).await;
            assert_eq!(
                used_blobs(&repo).await.len(),
                reference_used,
                "{label}: same blobs kept as an uninterrupted prune"
            );
        }
    }
}

// ---- processes: concurrency, kills and stale locks ----

/// `count` files of 1 MB under `dir/data`, named by their seed.
fn write_files(dir: &Path, seeds: impl Iterator<Item = u64>) {
    fs::create_dir_all(dir.join("data")).unwrap();
    for seed in seeds {
        fs::write(dir.join(format!("data/f{seed:03}")), random_bytes(1_000_000, seed)).unwrap();
    }
}

/// Restores every snapshot and checks each file against the bytes its name encodes.
fn assert_every_snapshot_restores(env: &Env, round: &str) {
    check_verify(env);
    for s in env.snapshots_json() {
        let id = s["id"].as_str().unwrap();
        let out = env.path(&format!("restore-{round}-{}", &id[..8]));
        let o = env.cmd().args(["restore", "--verify", id, "--target"]).arg(&out).output().unwrap();
        assert!(o.status.success(), "{round}: restore {id}: {}", String::from_utf8_lossy(&o.stderr));
        let files: Vec<_> = fs::read_dir(out.join("src/data")).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(!files.is_empty());
        for f in files {
            let seed: u64 = f.file_name().unwrap().to_str().unwrap()[1..].parse().unwrap();
            assert!(fs::read(&f).unwrap() == random_bytes(1_000_000, seed), "{round}: {} differs", f.display());
        }
        fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn a_snapshot_racing_a_prune_never_commits_deleted_data() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_files(&src, 0..24);
    env.snapshot_json(&[src.as_os_str()]);
    for (round, (prune_first, delay_ms)) in
        [(true, 0u64), (false, 0), (true, 150), (false, 150), (false, 400)].into_iter().enumerate()
    {
        // Keep only a snapshot of half the files: the other half becomes
        // garbage to prune, while the racing snapshot deduplicates against it.
        for i in (0..24).filter(|i| i % 2 == 1) {
            fs::remove_file(src.join(format!("data/f{i:03}"))).unwrap();
        }
        env.snapshot_json(&[src.as_os_str()]);
        env.cmd().args(["forget", "--keep-last", "1"]).assert().success();
        write_files(&src, (0..24).filter(|i| i % 2 == 1));

        let spawn = |args: &[&str]| {
            let mut c = env.std_cmd();
            c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
            c.spawn().unwrap()
        };
        let snap_args = ["snapshot", "--quiet", src.to_str().unwrap()];
        let (first, second): (&[&str], &[&str]) =
            if prune_first { (&["prune", "--quiet"], &snap_args) } else { (&snap_args, &["prune", "--quiet"]) };
        let a = spawn(first);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let b = spawn(second);
        for (child, what) in [(a, first[0]), (b, second[0])] {
            let out = child.wait_with_output().unwrap();
            let code = out.status.code();
            assert!(
                code == Some(0) || code == Some(11),
                "round {round}: {what} exited {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_every_snapshot_restores(&env, &format!("round{round}"));
        assert_eq!(lock_files(&env), 0);
    }
    // Whatever the races left, a final prune converges and everything still restores.
    env.cmd().arg("prune").assert().success();
    assert_every_snapshot_restores(&env, "final");
}

#[test]
fn stale_locks_of_killed_processes_do_not_block_prune_and_unlock_removes_them() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write_files(&src, 0..30);
    env.snapshot_json(&[src.as_os_str()]);
    for i in 0..20 {
        fs::remove_file(src.join(format!("data/f{i:03}"))).unwrap();
    }
    env.snapshot_json(&[src.as_os_str()]);
    env.cmd().args(["forget", "--keep-last", "1"]).assert().success();

    // A snapshot killed while it holds its lock.
    write_files(&src, 100..130);
    let mut child = env
        .std_cmd()
        .args(["snapshot", "--quiet", "--force"])
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while lock_files(&env) == 0 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lock_files(&env) >= 1, "the killed snapshot left its lock");

    // Prunes killed at several moments, each leaving its own lock behind.
    for delay_ms in [30u64, 120, 300] {
        let mut child =
            env.std_cmd().args(["prune", "--quiet"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = env.cmd().arg("check").output().unwrap();
        assert!(
            out.status.success(),
            "check after a prune killed at {delay_ms} ms: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report = json_of(&env.cmd().args(["prune", "--json"]).output().unwrap());
    assert_eq!(report["snapshots"], 1, "{report}");
    check_verify(&env);
    let out = env.path("out");
    env.cmd().args(["restore", "latest", "--target"]).arg(&out).assert().success();
    assert_eq!(fs::read_dir(out.join("src/data")).unwrap().count(), 10);
    let again = json_of(&env.cmd().args(["prune", "--json"]).output().unwrap());
    assert_eq!(again["nothing_to_do"], true, "{again}");

    // unlock removes the stale locks and leaves live ones unless told otherwise.
    let stale = lock_files(&env);
    assert!(stale >= 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
        let repo = Repository::open(backend, PASSWORD.as_bytes(), None).await.unwrap();
        let now = tstor::host::now_ns();
        let live = Lock {
            exclusive: false,
            hostname: tstor::host::hostname(),
            username: "someone".into(),
            pid: std::process::id(),
            created_ns: now,
            refreshed_ns: now,
            nonce: [7; 16],
        };
        repo.save_object(ObjectKind::Lock, &live.encode()).await.unwrap();
    });
    let v = json_of(&env.cmd().args(["unlock", "--json"]).output().unwrap());
    assert_eq!(v["removed"].as_array().unwrap().len(), stale, "{v}");
    assert_eq!(lock_files(&env), 1, "the live lock stays");
    let out = env.cmd().arg("prune").output().unwrap();
    assert_eq!(out.status.code(), Some(11), "a live shared lock blocks prune");
    let out = env.cmd().args(["unlock", "--remove-all"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 lock removed"));
    assert_eq!(lock_files(&env), 0);
    env.cmd().arg("prune").assert().success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_changes_nothing_while_an_index_or_snapshot_cannot_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in [ObjectKind::Index, ObjectKind::Snapshot] {
        let (gate, repo) = pruneable_repo(&tmp.path().join(kind.name())).await;
        let victim = gate.list(kind).await.unwrap()[0].id;
        gate.inner.inner().tamper(kind, &victim, |b| b[40] ^= 1);
        let mut before = Vec::new();
        for k in ObjectKind::ALL.into_iter().filter(|k| *k != ObjectKind::Lock) {
            before.push(gate.list(k).await.unwrap());
        }
        let err = ops::prune(&repo, &prune_options()).await.expect_err("damage stops prune");
        assert!(err.to_string().contains("prune changes nothing"), "{err}");
        let mut after = Vec::new();
        for k in ObjectKind::ALL.into_iter().filter(|k| *k != ObjectKind::Lock) {
            after.push(gate.list(k).await.unwrap());
        }
        assert_eq!(before, after, "{kind:?}: nothing was written or deleted");
    }
}
