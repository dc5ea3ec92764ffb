//! The library under fault-injecting backends: a run whose storage fails
//! commits no snapshot and leaves a repository that checks clean; the next
//! run reuses what did reach storage; transient failures are retried.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tstor::archiver::pipeline::PipelineOptions;
use tstor::archiver::{NoProgress, SnapshotOptions};
use tstor::backend::faults::FaultyBackend;
use tstor::backend::memory::MemoryBackend;
use tstor::backend::retry::RetryBackend;
use tstor::backend::{Backend, BackendError, ObjectInfo};
use tstor::crypto::kdf::KdfParams;
use tstor::format::{Id, ObjectKind};
use tstor::ops;
use tstor::ops::check::{NoCheckProgress, VerifyScope};
use tstor::repo::{InitOptions, RepoError, Repository};
use tstor::restorer::{NoRestoreProgress, RestoreOptions};

use crate::common::*;

fn fast_init() -> InitOptions {
    InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() }
}

fn make_source(dir: &Path) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..12u64 {
        fs::write(dir.join(format!("sub/f{i}")), random_bytes(300_000, i)).unwrap();
    }
    fs::write(dir.join("text"), "line\n".repeat(100_000)).unwrap();
}

fn options(src: &Path) -> SnapshotOptions {
    let mut o = SnapshotOptions::new(vec![src.to_path_buf()]);
    o.pipeline = PipelineOptions { data_pack_size: 256 << 10, tree_pack_size: 4 << 10, ..Default::default() };
    o
}

async fn restore_and_compare(repo: &Repository, src: &Path, out: &Path) {
    let opts = RestoreOptions::new(out.to_path_buf());
    let (_, _, outcome) = ops::restore(repo, "latest", &opts, Arc::new(NoRestoreProgress)).await.unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    for entry in fs::read_dir(src.join("sub")).unwrap() {
        let p = entry.unwrap().path();
        let restored = out.join("src/sub").join(p.file_name().unwrap());
        assert_eq!(fs::read(&p).unwrap(), fs::read(&restored).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_commit_nothing_and_the_next_run_reuses_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_source(&src);
    let faulty = Arc::new(FaultyBackend::new(MemoryBackend::new()));
    let backend: Arc<dyn Backend> = faulty.clone();
    let repo = Repository::init(backend, b"pw", fast_init()).await.unwrap();
    // One put for the lock, then two packs, then storage "fills up".
    faulty.set_put_budget(Some(3));
    let err = ops::snapshot(&repo, options(&src), Arc::new(NoProgress)).await.err().expect("the run must fail");
    assert!(err.to_string().contains("injected write failure"), "{err}");
    let (snaps, bad) = repo.snapshots().await.unwrap();
    assert!(snaps.is_empty() && bad.is_empty(), "no snapshot may be committed");

    faulty.set_put_budget(None);
    let report = ops::check(&repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert!(!report.warnings.is_empty(), "the uploaded packs are reported as unindexed");

    let outcome = ops::snapshot(&repo, options(&src), Arc::new(NoProgress)).await.unwrap();
    assert!(outcome.recovered_packs >= 2, "packs of the failed run are reused: {}", outcome.recovered_packs);
    let total_plain: u64 = 12 * 300_000 + 500_000;
    assert!(outcome.snapshot.summary.bytes_added < total_plain);
    let report = ops::check(&repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
    assert!(report.ok() && report.warnings.is_empty(), "{:?} {:?}", report.problems, report.warnings);
    restore_and_compare(&repo, &src, &tmp.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_source(&src);
    let mut flaky = FaultyBackend::new(MemoryBackend::new());
    flaky.transient_every = 5;
    let flaky = Arc::new(flaky);
    let backend: Arc<dyn Backend> = Arc::new(RetryBackend::new(flaky.clone(), 4, Duration::from_millis(1)));
    let repo = Repository::init(backend.clone(), b"pw", fast_init()).await.unwrap();
    ops::snapshot(&repo, options(&src), Arc::new(NoProgress)).await.unwrap();
    let reopened = Repository::open(backend, b"pw", None).await.unwrap();
    let report = ops::check(&reopened, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    restore_and_compare(&reopened, &src, &tmp.path().join("out")).await;
    assert!(flaky.transient_failures() > 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_memory_storage_is_detected_by_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_source(&src);
    let mem = Arc::new(MemoryBackend::new());
    let backend: Arc<dyn Backend> = mem.clone();
    let repo = Repository::init(backend, b"pw", fast_init()).await.unwrap();
    ops::snapshot(&repo, options(&src), Arc::new(NoProgress)).await.unwrap();
    let index = repo.load_index().await.unwrap();
    let (pack, _) = index.packs()[0];
    let first = index.blobs_in_pack(&pack)[0];
    mem.tamper(tstor::format::ObjectKind::Pack, &pack, |b| b[first.offset as usize + 40] ^= 1);
    let report = ops::check(&repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
    assert!(!report.ok());
    assert!(report.problems.iter().any(|p| p.blob.as_deref() == Some(&first.id.to_hex()[..])));
    assert!(!report.damaged_paths.is_empty());
    match repo.read_blob(&index, &first.id).await {
        Err(RepoError::Damaged { reason, .. }) => assert!(reason.contains("authentication failed"), "{reason}"),
        other => panic!("expected damage, got {:?}", other.map(|v| v.len())),
    }
}

#[tokio::test]
async fn wrong_password_opens_nothing() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), b"right", fast_init()).await.unwrap();
    assert!(matches!(Repository::open(backend.clone(), b"wrong", None).await, Err(RepoError::WrongPassword)));
    assert!(Repository::open(backend, b"right", None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_cache_entry_is_ignored_and_refetched() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_source(&src);
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), b"pw", fast_init()).await.unwrap();
    let cache_dir = tmp.path().join("cache");
    let repo = Repository::open(backend.clone(), b"pw", Some(&cache_dir)).await.unwrap();
    ops::snapshot(&repo, options(&src), Arc::new(NoProgress)).await.unwrap();
    let index = repo.load_index().await.unwrap();
    let blobs = index.blob_count();
    let index_id = index.index_ids[0];
    // Replace the cached index object with another, validly sealed, object:
    // the cache must not be trusted to say which blobs exist.
    let empty = tstor::format::index::IndexFile::default().encode();
    let forged = repo.keys().seal.seal(b"anything", &empty);
    repo.cache().unwrap().put_indexes([(&index_id, &forged[..])]).unwrap();
    drop(repo);
    let repo = Repository::open(backend, b"pw", Some(&cache_dir)).await.unwrap();
    assert_eq!(repo.load_index().await.unwrap().blob_count(), blobs);
}

/// Storage whose ranged reads fail transiently (a dropped connection)
/// every `every`-th time, and that does not retry them itself.
struct DroppingRanges {
    inner: Arc<MemoryBackend>,
    every: u64,
    reads: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Backend for DroppingRanges {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create(&self) -> tstor::backend::Result<()> {
        self.inner.create().await
    }
    async fn put(&self, kind: ObjectKind, id: &Id, data: bytes::Bytes) -> tstor::backend::Result<()> {
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
        let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n.is_multiple_of(self.every) {
            return Err(BackendError::Transient { message: "Connection reset by peer".into(), retry_after: None });
        }
        self.inner.get_range(kind, id, offset, len).await
    }
    async fn list(&self, kind: ObjectKind) -> tstor::backend::Result<Vec<ObjectInfo>> {
        self.inner.list(kind).await
    }
    async fn delete(&self, kind: ObjectKind, id: &Id) -> tstor::backend::Result<()> {
        self.inner.delete(kind, id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_reads_again_a_range_that_failed_transiently() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_source(&src);
    let mem = Arc::new(MemoryBackend::new());
    let repo = Repository::init(mem.clone(), b"pw", fast_init()).await.unwrap();
    ops::snapshot(&repo, options(&src), Arc::new(NoProgress)).await.unwrap();
    let dropping = Arc::new(DroppingRanges { inner: mem, every: 3, reads: Default::default() });
    let reopened = Repository::open(dropping.clone(), b"pw", None).await.unwrap();
    // Every file restored byte for byte: no transient failure is lost data.
    restore_and_compare(&reopened, &src, &tmp.path().join("out")).await;
    assert!(dropping.reads.load(std::sync::atomic::Ordering::Relaxed) >= 3, "ranges were read and some failed");
}
