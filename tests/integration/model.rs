//! A model-based fault test: random sequences of snapshot, forget, prune,
//! repair index, check, restore and cache damage run through the library over
//! the memory backend wrapped in the fault decorator (write and delete
//! failures after a budget, crashes at a random storage operation), and after
//! every step the repository is held to a simple model: the committed
//! snapshots and the files each must restore.
//!
//! After each step every snapshot the model holds must be listed and restore
//! byte-identical, no other snapshot may appear (except the one a failed or
//! crashed snapshot may have committed whole), `check` must find no problem,
//! and a step that ran without injected faults must leave no lock behind. A
//! failed or crashed command must leave the repository no worse: everything
//! committed before still restores. A crashed prune is followed by a clean
//! one, and a prune right after a clean prune must find nothing to do.
//!
//! `TSTOR_MODEL_CASES` and `TSTOR_MODEL_STEPS` set the number of cases and
//! the most steps per case; `TSTOR_MODEL_SECS` keeps running batches of cases
//! for that long; `TSTOR_MODEL_SEED` (a number, or `random`) picks the seed,
//! which every failure names. `cargo xtask fuzz` runs it long.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use tstor::archiver::pipeline::PipelineOptions;
use tstor::archiver::{NoProgress, SnapshotOptions};
use tstor::backend::faults::FaultyBackend;
use tstor::backend::memory::MemoryBackend;
use tstor::backend::Backend;
use tstor::chunker::ChunkerParams;
use tstor::crypto::kdf::KdfParams;
use tstor::format::{Id, ObjectKind};
use tstor::ops;
use tstor::ops::check::{NoCheckProgress, VerifyScope};
use tstor::ops::forget::{ForgetOptions, ForgetReport, Keep, Policy};
use tstor::ops::prune::{MaxUnused, PruneOptions, PruneReport};
use tstor::repo::{lock, InitOptions, RepoError, Repository};
use tstor::restorer::{NoRestoreProgress, RestoreOptions};

use crate::common::random_bytes;

const DEFAULT_CASES: u32 = 10;
const DEFAULT_STEPS: usize = 12;
/// The seed of `cargo test`, so that a run of the suite is reproducible.
const DEFAULT_SEED: u64 = 0x7570_7374_6f72_6d64;

const PASSWORD: &[u8] = b"model";

/// What the cases did, over the whole run: evidence that faults struck.
static STEPS_RUN: AtomicU64 = AtomicU64::new(0);
/// Commands that failed because puts or deletes failed (not by a crash).
static FAILED_WRITES: AtomicU64 = AtomicU64::new(0);
static CRASHES: AtomicU64 = AtomicU64::new(0);
static SNAPSHOTS_COMMITTED: AtomicU64 = AtomicU64::new(0);
/// Where files of the source tree may be; directories come and go with them.
const SLOTS: [&str; 6] = ["a", "b", "d/c", "d/e", "d/f/g", "h"];
const MAX_FILE: usize = 48 << 10;

#[derive(Clone, Debug)]
enum Fault {
    None,
    /// This many more puts succeed, then every put fails.
    FailWritesAfter(u64),
    /// This many more deletes succeed, then every delete fails.
    FailDeletesAfter(u64),
    /// This many more storage operations happen, then the process "dies".
    CrashAfter(u64),
}

#[derive(Clone, Debug)]
enum Change {
    Write { slot: usize, len: usize, seed: u64 },
    Copy { from: usize, to: usize },
    Remove { slot: usize },
}

#[derive(Clone, Debug)]
enum Tear {
    Remove,
    /// Bytes that are not a redb file at all.
    Garbage,
    /// Cut at this share (per mille) of its length.
    Truncate {
        keep_per_mille: u16,
    },
    /// Flip a few bytes chosen by the seed.
    FlipBytes {
        seed: u64,
    },
}

#[derive(Clone, Debug)]
enum Step {
    Snapshot { changes: Vec<Change>, fault: Fault },
    ForgetKeepLast { keep: u32, fault: Fault },
    ForgetOne { pick: usize, fault: Fault },
    Prune { repack_everything: bool, fault: Fault },
    RepairIndex { fault: Fault },
    Check { fault: Fault },
    RestoreAll { fault: Fault },
    TearCache(Tear),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => Just(Fault::None),
        1 => (0u64..12).prop_map(Fault::FailWritesAfter),
        1 => (0u64..6).prop_map(Fault::FailDeletesAfter),
        // Commands take from a handful to a hundred or so storage operations.
        2 => (0u64..12).prop_map(Fault::CrashAfter),
        2 => (0u64..48).prop_map(Fault::CrashAfter),
        1 => (0u64..160).prop_map(Fault::CrashAfter),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0..SLOTS.len(), 0..MAX_FILE, any::<u64>()).prop_map(|(slot, len, seed)| Change::Write { slot, len, seed }),
        1 => (0..SLOTS.len(), 0..SLOTS.len()).prop_map(|(from, to)| Change::Copy { from, to }),
        1 => (0..SLOTS.len()).prop_map(|slot| Change::Remove { slot }),
    ]
}

/// Cache damage: the redb file removed, replaced with bytes that are not a
/// redb file, cut at a random point, or with bytes flipped inside it.
fn tear() -> BoxedStrategy<Tear> {
    prop_oneof![
        Just(Tear::Remove),
        Just(Tear::Garbage),
        (0u16..1000).prop_map(|keep_per_mille| Tear::Truncate { keep_per_mille }),
        any::<u64>().prop_map(|seed| Tear::FlipBytes { seed }),
    ]
    .boxed()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (prop::collection::vec(change(), 0..5), fault()).prop_map(|(changes, fault)| Step::Snapshot { changes, fault }),
        1 => (1u32..4, fault()).prop_map(|(keep, fault)| Step::ForgetKeepLast { keep, fault }),
        1 => (any::<usize>(), fault()).prop_map(|(pick, fault)| Step::ForgetOne { pick, fault }),
        2 => (any::<bool>(), fault()).prop_map(|(repack_everything, fault)| Step::Prune { repack_everything, fault }),
        1 => fault().prop_map(|fault| Step::RepairIndex { fault }),
        1 => fault().prop_map(|fault| Step::Check { fault }),
        1 => fault().prop_map(|fault| Step::RestoreAll { fault }),
        1 => tear().prop_map(Step::TearCache),
    ]
}

/// A tree of files as the model sees it: path → contents (`None`: a directory).
type Files = BTreeMap<String, Option<Vec<u8>>>;

/// What a committed snapshot must restore.
#[derive(Clone)]
struct Expected {
    files: Files,
}

/// What may be in storage after a step, beyond what must be.
#[derive(Default)]
struct Allowed {
    /// Snapshots the model holds that may have been forgotten.
    may_be_gone: BTreeSet<Id>,
    /// A snapshot that a command reported as committed, with its files.
    committed: Option<(Id, Files)>,
    /// The files of a snapshot that a failed command may have committed whole.
    maybe_committed: Option<Files>,
}

type Outcome = Result<(), TestCaseError>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($fmt)*)));
        }
    };
}

fn fail(msg: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(msg.to_string())
}

fn read_files(root: &Path) -> std::io::Result<Files> {
    fn walk(root: &Path, dir: &Path, out: &mut Files) -> std::io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let rel = path.strip_prefix(root).expect("below root").to_string_lossy().into_owned();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out)?;
            } else {
                out.insert(rel, Some(fs::read(&path)?));
            }
        }
        Ok(())
    }
    let mut out = Files::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// Names the differences between two trees, briefly.
fn differences(expected: &Files, actual: &Files) -> String {
    let mut out = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => out.push(format!("{path} missing")),
            Some(got) if got != want => out.push(format!(
                "{path} differs ({:?} bytes expected, {:?} restored)",
                want.as_ref().map(Vec::len),
                got.as_ref().map(Vec::len)
            )),
            Some(_) => {}
        }
    }
    out.extend(actual.keys().filter(|p| !expected.contains_key(*p)).map(|p| format!("{p} unexpected")));
    out.join(", ")
}

struct World {
    tmp: tempfile::TempDir,
    src: PathBuf,
    cache_dir: PathBuf,
    storage: Arc<MemoryBackend>,
    /// The decorator of the running "process"; a restart replaces it.
    faulty: Arc<FaultyBackend<Arc<MemoryBackend>>>,
    repo: Option<Repository>,
    repo_id: Id,
    model: BTreeMap<Id, Expected>,
    restores: usize,
}

impl World {
    async fn new() -> Result<World, TestCaseError> {
        let tmp = tempfile::tempdir().map_err(fail)?;
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).map_err(fail)?;
        let cache_dir = tmp.path().join("cache");
        let storage = Arc::new(MemoryBackend::new());
        let faulty = Arc::new(FaultyBackend::new(storage.clone()));
        let init = InitOptions {
            kdf: KdfParams { m_kib: 64, t: 1, p: 1 },
            chunker: ChunkerParams { min: 1024, avg: 4096, max: 16384 },
            ..Default::default()
        };
        let backend: Arc<dyn Backend> = faulty.clone();
        let repo = Repository::init(backend, PASSWORD, init).await.map_err(fail)?;
        let repo_id = *repo.repo_id();
        drop(repo);
        let mut world =
            World { tmp, src, cache_dir, storage, faulty, repo: None, repo_id, model: BTreeMap::new(), restores: 0 };
        world.open().await?;
        Ok(world)
    }

    fn repo(&self) -> &Repository {
        self.repo.as_ref().expect("open between steps")
    }

    async fn open(&mut self) -> Outcome {
        let backend: Arc<dyn Backend> = self.faulty.clone();
        let repo = Repository::open(backend, PASSWORD, Some(&self.cache_dir)).await.map_err(fail)?;
        ensure!(repo.cache().is_some(), "the reopened repository runs without its cache");
        self.repo = Some(repo);
        Ok(())
    }

    /// The process died: a new one opens the repository from the same
    /// storage and cache, and finds the dead one's locks stale.
    async fn restart(&mut self) -> Outcome {
        self.repo = None;
        self.faulty = Arc::new(FaultyBackend::new(self.storage.clone()));
        self.open().await?;
        self.remove_leftover_locks().await
    }

    /// What a lock of an exited process becomes: stale, and removed.
    async fn remove_leftover_locks(&self) -> Outcome {
        lock::remove_locks(self.repo(), true).await.map_err(fail)?;
        Ok(())
    }

    fn inject(&self, fault: &Fault) {
        match *fault {
            Fault::None => {}
            Fault::FailWritesAfter(n) => self.faulty.set_put_budget(Some(n)),
            Fault::FailDeletesAfter(n) => self.faulty.set_delete_budget(Some(n)),
            Fault::CrashAfter(n) => self.faulty.crash_after(n),
        }
    }

    /// Ends a command run under `fault`: lifts budgets, restarts after a
    /// crash, and clears the locks a failed command could not remove. A
    /// command without an injected fault must succeed and leave no lock.
    async fn settle<T>(
        &mut self,
        what: &str,
        fault: &Fault,
        result: Result<T, impl std::fmt::Display>,
    ) -> Result<Option<T>, TestCaseError> {
        self.faulty.set_put_budget(None);
        self.faulty.set_delete_budget(None);
        if matches!(fault, Fault::None) {
            let value = result.map_err(|e| fail(format!("{what} failed without an injected fault: {e}")))?;
            let locks = self.storage.list(ObjectKind::Lock).await.map_err(fail)?;
            ensure!(locks.is_empty(), "{what} left {} lock(s) behind", locks.len());
            return Ok(Some(value));
        }
        if result.is_err() && !self.faulty.crashed() {
            FAILED_WRITES.fetch_add(1, Ordering::Relaxed);
        }
        if self.faulty.crashed() {
            CRASHES.fetch_add(1, Ordering::Relaxed);
            self.restart().await?;
        } else {
            // A crash that did not come to pass is called off.
            self.faulty.crash_after(u64::MAX);
            self.remove_leftover_locks().await?;
        }
        Ok(result.ok())
    }

    fn apply(&self, change: &Change) -> Outcome {
        let path = |slot: usize| self.src.join(SLOTS[slot]);
        match *change {
            Change::Write { slot, len, seed } => {
                let p = path(slot);
                fs::create_dir_all(p.parent().expect("in src")).map_err(fail)?;
                fs::write(&p, random_bytes(len, seed)).map_err(fail)?;
            }
            Change::Copy { from, to } => {
                if let Ok(data) = fs::read(path(from)) {
                    let p = path(to);
                    fs::create_dir_all(p.parent().expect("in src")).map_err(fail)?;
                    fs::write(&p, data).map_err(fail)?;
                }
            }
            Change::Remove { slot } => {
                let _ = fs::remove_file(path(slot));
            }
        }
        Ok(())
    }

    /// The model's snapshots, newest first (storage times order them).
    async fn newest_first(&self) -> Result<Vec<Id>, TestCaseError> {
        let (snaps, _) = self.repo().snapshots().await.map_err(fail)?;
        let mut ids: Vec<Id> = snaps.into_iter().rev().map(|(id, _)| id).collect();
        ids.retain(|id| self.model.contains_key(id));
        Ok(ids)
    }

    async fn run(&mut self, step: &Step) -> Outcome {
        let mut allowed = Allowed::default();
        match step {
            Step::Snapshot { changes, fault } => {
                for c in changes {
                    self.apply(c)?;
                }
                let files = read_files(&self.src).map_err(fail)?;
                let mut opts = SnapshotOptions::new(vec![self.src.clone()]);
                opts.pipeline =
                    PipelineOptions { data_pack_size: 16 << 10, tree_pack_size: 2 << 10, ..Default::default() };
                self.inject(fault);
                let result = ops::snapshot(self.repo(), opts, Arc::new(NoProgress)).await;
                match self.settle("snapshot", fault, result).await? {
                    Some(outcome) => {
                        ensure!(outcome.errors.is_empty(), "snapshot could not read {:?}", outcome.errors);
                        allowed.committed = Some((outcome.id, files));
                    }
                    None => allowed.maybe_committed = Some(files),
                }
            }
            Step::ForgetKeepLast { keep, fault } => {
                let newest = self.newest_first().await?;
                let doomed: BTreeSet<Id> = newest.iter().skip(*keep as usize).copied().collect();
                let opts = ForgetOptions {
                    policy: Policy { last: Keep::Count(*keep), ..Default::default() },
                    ..Default::default()
                };
                self.inject(fault);
                let result = ops::forget(self.repo(), &opts, None).await;
                self.forgotten(fault, result, doomed, &mut allowed).await?;
            }
            Step::ForgetOne { pick, fault } => {
                let newest = self.newest_first().await?;
                if newest.is_empty() {
                    return self.verify(allowed).await;
                }
                let id = newest[pick % newest.len()];
                let opts = ForgetOptions { ids: vec![id.to_hex()], ..Default::default() };
                self.inject(fault);
                let result = ops::forget(self.repo(), &opts, None).await;
                self.forgotten(fault, result, BTreeSet::from([id]), &mut allowed).await?;
            }
            Step::Prune { repack_everything, fault } => {
                let opts = PruneOptions {
                    max_unused: if *repack_everything { MaxUnused::Percent(0.0) } else { MaxUnused::Percent(5.0) },
                    data_pack_size: 16 << 10,
                    tree_pack_size: 2 << 10,
                    ..Default::default()
                };
                self.inject(fault);
                let result = ops::prune(self.repo(), &opts).await;
                let pruned = self.settle("prune", fault, result).await?.is_some();
                // The repository is sound after an interrupted prune ...
                self.verify(Allowed::default()).await?;
                if !pruned {
                    // ... and the next prune converges.
                    ops::prune(self.repo(), &opts).await.map_err(|e| fail(format!("prune after a failed one: {e}")))?;
                    self.verify(Allowed::default()).await?;
                }
                let again = ops::prune(self.repo(), &opts).await.map_err(fail)?;
                ensure!(
                    again.packs_deleted == 0 && again.packs_repacked == 0 && again.packs_written == 0,
                    "a prune right after a prune changed packs: {again:?}"
                );
            }
            Step::RepairIndex { fault } => {
                self.inject(fault);
                let result = ops::repair::repair_index(self.repo()).await;
                if let Some(report) = self.settle("repair index", fault, result).await? {
                    ensure!(
                        report.unreadable.is_empty(),
                        "repair index found unreadable packs: {:?}",
                        report.unreadable
                    );
                }
            }
            Step::Check { fault } => {
                self.inject(fault);
                let result = ops::check(self.repo(), VerifyScope::All, Arc::new(NoCheckProgress)).await;
                if let Some(report) = self.settle("check", fault, result).await? {
                    // A check whose storage failed under it may say so
                    // (as problems), but must not invent any other.
                    let invented: Vec<_> = report.problems.iter().filter(|p| !p.message.contains("injected")).collect();
                    ensure!(invented.is_empty(), "check found problems: {invented:?}");
                }
            }
            Step::RestoreAll { fault } => {
                self.inject(fault);
                let mut result = Ok(());
                for id in self.model.keys().copied().collect::<Vec<_>>() {
                    // What does restore under a fault must still be right.
                    if let Err(e) = self.restore_and_compare(&id).await? {
                        result = Err(e);
                        break;
                    }
                }
                self.settle("restore", fault, result).await?;
            }
            Step::TearCache(tear) => {
                self.repo = None;
                let path = self.cache_dir.join(self.repo_id.to_hex()).join("cache.redb");
                self.tear(&path, tear)?;
                self.open().await?;
            }
        }
        self.verify(allowed).await
    }

    async fn forgotten(
        &mut self,
        fault: &Fault,
        result: Result<(ForgetReport, Option<PruneReport>), RepoError>,
        doomed: BTreeSet<Id>,
        allowed: &mut Allowed,
    ) -> Outcome {
        let without_fault = matches!(fault, Fault::None);
        match self.settle("forget", fault, result).await? {
            Some((report, _)) => {
                let removed: BTreeSet<Id> = report.removed.iter().copied().collect();
                if without_fault {
                    ensure!(removed == doomed, "forget removed {removed:?}, the policy dooms {doomed:?}");
                } else {
                    // Snapshots that storage failed to return count as
                    // unreadable, and a policy leaves those alone: under a
                    // fault a forget may remove fewer, never others.
                    ensure!(removed.is_subset(&doomed), "forget removed {removed:?}, the policy dooms {doomed:?}");
                }
                for id in removed {
                    self.model.remove(&id);
                }
            }
            None => allowed.may_be_gone = doomed,
        }
        Ok(())
    }

    fn tear(&self, path: &Path, tear: &Tear) -> Outcome {
        let Ok(mut bytes) = fs::read(path) else { return Ok(()) };
        match *tear {
            Tear::Remove => return fs::remove_file(path).map_err(fail),
            Tear::Garbage => bytes = b"garbage that is not a redb file at all".to_vec(),
            Tear::Truncate { keep_per_mille } => bytes.truncate(bytes.len() * keep_per_mille as usize / 1000),
            Tear::FlipBytes { seed } => {
                let noise = random_bytes(16, seed);
                for pair in noise.chunks(4) {
                    let at = u32::from_le_bytes(pair.try_into().expect("4 bytes")) as usize;
                    if !bytes.is_empty() {
                        let i = at % bytes.len();
                        bytes[i] ^= 0x5a;
                    }
                }
            }
        }
        fs::write(path, bytes).map_err(fail)
    }

    /// Restores snapshot `id` and compares it with the model; the inner
    /// error is the restore's own failure (expected under a fault).
    async fn restore_and_compare(&mut self, id: &Id) -> Result<Result<(), String>, TestCaseError> {
        self.restores += 1;
        let target = self.tmp.path().join(format!("out{}", self.restores));
        let opts = RestoreOptions { workers: 2, ..RestoreOptions::new(target.clone()) };
        let outcome = match ops::restore(self.repo(), &id.to_hex(), &opts, Arc::new(NoRestoreProgress)).await {
            Ok((_, _, outcome)) => outcome,
            Err(e) => return Ok(Err(format!("restoring snapshot {}: {e}", id.short()))),
        };
        if !outcome.errors.is_empty() {
            return Ok(Err(format!("restoring snapshot {}: {:?}", id.short(), outcome.errors)));
        }
        let restored = read_files(&target.join("src")).map_err(fail)?;
        let expected = &self.model[id].files;
        ensure!(
            restored == *expected,
            "snapshot {} restores other files: {}",
            id.short(),
            differences(expected, &restored)
        );
        fs::remove_dir_all(&target).map_err(fail)?;
        Ok(Ok(()))
    }

    /// Holds storage to the model after a step, then makes the model what storage holds.
    async fn verify(&mut self, allowed: Allowed) -> Outcome {
        let (snaps, bad) = self.repo().snapshots().await.map_err(fail)?;
        ensure!(
            bad.is_empty(),
            "unreadable snapshots: {:?}",
            bad.iter().map(|(id, e)| format!("{}: {e}", id.short())).collect::<Vec<_>>()
        );
        let listed: BTreeSet<Id> = snaps.iter().map(|(id, _)| *id).collect();
        for id in self.model.keys() {
            ensure!(
                listed.contains(id) || allowed.may_be_gone.contains(id),
                "committed snapshot {} is gone",
                id.short()
            );
        }
        self.model.retain(|id, _| listed.contains(id));
        if let Some((id, files)) = allowed.committed {
            ensure!(listed.contains(&id), "snapshot {} was reported committed but is not listed", id.short());
            self.model.insert(id, Expected { files });
            SNAPSHOTS_COMMITTED.fetch_add(1, Ordering::Relaxed);
        }
        let unknown: Vec<Id> = listed.iter().filter(|id| !self.model.contains_key(id)).copied().collect();
        match (unknown.as_slice(), allowed.maybe_committed) {
            ([], _) => {}
            ([id], Some(files)) => {
                self.model.insert(*id, Expected { files });
                SNAPSHOTS_COMMITTED.fetch_add(1, Ordering::Relaxed);
            }
            (ids, _) => {
                return Err(fail(format!(
                    "snapshots nobody committed are listed: {:?}",
                    ids.iter().map(Id::short).collect::<Vec<_>>()
                )))
            }
        }
        let report = ops::check(self.repo(), VerifyScope::All, Arc::new(NoCheckProgress)).await.map_err(fail)?;
        ensure!(report.ok(), "check found problems: {:?}", report.problems);
        for id in self.model.keys().copied().collect::<Vec<_>>() {
            self.restore_and_compare(&id).await?.map_err(fail)?;
        }
        let locks = self.storage.list(ObjectKind::Lock).await.map_err(fail)?;
        ensure!(locks.is_empty(), "{} lock(s) left behind after the step", locks.len());
        Ok(())
    }
}

async fn run_case(steps: &[Step]) -> Outcome {
    let mut world = World::new().await?;
    for (n, step) in steps.iter().enumerate() {
        STEPS_RUN.fetch_add(1, Ordering::Relaxed);
        world.run(step).await.map_err(|e| fail(format!("step {n} ({step:?}): {e}")))?;
    }
    Ok(())
}

struct Settings {
    cases: u32,
    steps: usize,
    seed: u64,
    run_for: Option<Duration>,
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    Some(value.parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

impl Settings {
    fn from_env() -> Settings {
        let seed = match std::env::var("TSTOR_MODEL_SEED").ok().as_deref() {
            None => DEFAULT_SEED,
            Some("random") => rand::random(),
            Some(s) => s.parse().unwrap_or_else(|_| panic!("TSTOR_MODEL_SEED={s} is neither a number nor `random`")),
        };
        Settings {
            cases: env_number("TSTOR_MODEL_CASES").unwrap_or(DEFAULT_CASES),
            steps: env_number("TSTOR_MODEL_STEPS").unwrap_or(DEFAULT_STEPS),
            seed,
            run_for: env_number("TSTOR_MODEL_SECS").map(Duration::from_secs),
        }
    }
}

/// Runs `settings.cases` cases from `seed`; panics with the minimal failing steps.
fn run_batch(settings: &Settings, seed: u64) {
    let config = Config {
        cases: settings.cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        max_shrink_time: 300_000,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let strategy = prop::collection::vec(step(), settings.steps.div_ceil(2)..=settings.steps);
    let result = runner.run(&strategy, |steps| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(fail)?;
        rt.block_on(run_case(&steps))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, steps)) => {
            panic!("the repository left the model (TSTOR_MODEL_SEED={seed}): {reason}\nminimal steps: {steps:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted (TSTOR_MODEL_SEED={seed}): {reason}"),
    }
}

#[test]
fn the_repository_matches_the_model_under_faults() {
    let settings = Settings::from_env();
    let started = Instant::now();
    let mut seed = settings.seed;
    let mut batches = 0u32;
    loop {
        run_batch(&settings, seed);
        batches += 1;
        match settings.run_for {
            Some(limit) if started.elapsed() < limit => seed = seed.wrapping_add(1),
            _ => break,
        }
    }
    println!(
        "model: {} case(s) of up to {} steps from seed {} in {:.0?}: {} steps, {} snapshots committed, \
         {} commands failed by failing writes, {} crashed",
        batches * settings.cases,
        settings.steps,
        settings.seed,
        started.elapsed(),
        STEPS_RUN.load(Ordering::Relaxed),
        SNAPSHOTS_COMMITTED.load(Ordering::Relaxed),
        FAILED_WRITES.load(Ordering::Relaxed),
        CRASHES.load(Ordering::Relaxed),
    );
}

/// A forget whose storage dies while it reads the snapshots finds some
/// unreadable, leaves them alone as its policy says, and may then report
/// success having removed fewer than the policy dooms (never others). Found
/// by the model with seed 4917842978469963125; the model accepts it under a
/// fault.
#[test]
fn a_forget_whose_storage_dies_while_reading_snapshots_removes_no_snapshot_it_should_keep() {
    let mut steps: Vec<Step> = (0..5)
        .map(|i| Step::Snapshot {
            changes: vec![Change::Write { slot: i, len: 3000 + i, seed: i as u64 }],
            fault: Fault::None,
        })
        .collect();
    for crash_after in [3, 5, 7, 9] {
        steps.push(Step::ForgetKeepLast { keep: 3, fault: Fault::CrashAfter(crash_after) });
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Err(e) = rt.block_on(run_case(&steps)) {
        panic!("{e}");
    }
}
