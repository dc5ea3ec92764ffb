//! How a restore reads storage: whole packs' worth of needed blobs in few
//! ranged reads, only a file's own blobs (and small gaps) when one file is
//! restored, a shared blob once; a failed read loses only the files that
//! need it, and storage that wants a login stops the restore.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tstor::archiver::pipeline::PipelineOptions;
use tstor::archiver::{NoProgress, SnapshotOptions};
use tstor::backend::memory::MemoryBackend;
use tstor::backend::{Backend, BackendError, ObjectInfo};
use tstor::crypto::kdf::KdfParams;
use tstor::format::tree::Node;
use tstor::format::{BlobType, Id, ObjectKind};
use tstor::ops;
use tstor::repo::index::{BlobLocation, MasterIndex};
use tstor::repo::{InitOptions, RepoError, Repository};
use tstor::restorer::{split_subpath, NoRestoreProgress, RestoreOptions, RestoreOutcome, MAX_RANGE_GAP, MAX_RANGE_LEN};

use crate::common::*;

/// One `get_range` call on a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Read {
    pack: Id,
    offset: u64,
    len: u64,
}

impl Read {
    fn covers(&self, loc: &BlobLocation) -> bool {
        self.pack == loc.pack
            && self.offset <= u64::from(loc.offset)
            && u64::from(loc.offset) + u64::from(loc.length) <= self.offset + self.len
    }
}

type FailRule = Box<dyn Fn(&Read) -> Option<BackendError> + Send + Sync>;

/// Records every ranged read of a pack, and fails the ones a rule picks.
struct CountingBackend {
    inner: MemoryBackend,
    reads: Mutex<Vec<Read>>,
    fail: Mutex<Option<FailRule>>,
}

impl CountingBackend {
    fn new() -> CountingBackend {
        CountingBackend { inner: MemoryBackend::new(), reads: Mutex::default(), fail: Mutex::default() }
    }

    fn take_reads(&self) -> Vec<Read> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }

    fn fail_when(&self, rule: impl Fn(&Read) -> Option<BackendError> + Send + Sync + 'static) {
        *self.fail.lock().unwrap() = Some(Box::new(rule));
    }
}

#[async_trait]
impl Backend for CountingBackend {
    fn location(&self) -> String {
        format!("counting({})", self.inner.location())
    }
    async fn create(&self) -> tstor::backend::Result<()> {
        self.inner.create().await
    }
    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> tstor::backend::Result<()> {
        self.inner.put(kind, id, data).await
    }
    async fn get(&self, kind: ObjectKind, id: &Id) -> tstor::backend::Result<Bytes> {
        self.inner.get(kind, id).await
    }
    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> tstor::backend::Result<Bytes> {
        if kind == ObjectKind::Pack {
            let read = Read { pack: *id, offset, len: u64::from(len) };
            self.reads.lock().unwrap().push(read);
            if let Some(error) = self.fail.lock().unwrap().as_ref().and_then(|rule| rule(&read)) {
                return Err(error);
            }
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

/// A snapshot of many small files, one larger file of several chunks and
/// three copies of one file, in a repository on a counting backend.
struct Fixture {
    tmp: tempfile::TempDir,
    backend: Arc<CountingBackend>,
    repo: Repository,
    index: MasterIndex,
}

const SMALL_FILES: u64 = 600;
/// Big enough for several chunks (the chunker's maximum is 4 MiB).
const LARGE_FILE: usize = 6 << 20;

impl Fixture {
    async fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for i in 0..SMALL_FILES {
            let dir = src.join(format!("d{}", i % 8));
            fs::create_dir_all(&dir).unwrap();
            let len = 1024 + (i as usize * 7919) % (48 << 10);
            fs::write(dir.join(format!("f{i}")), random_bytes(len, i)).unwrap();
        }
        fs::write(src.join("large.bin"), random_bytes(LARGE_FILE, 1000)).unwrap();
        fs::create_dir_all(src.join("dup")).unwrap();
        for name in ["a", "b", "c"] {
            fs::write(src.join("dup").join(name), random_bytes(30_000, 2000)).unwrap();
        }
        fs::write(src.join("empty"), b"").unwrap();

        let backend = Arc::new(CountingBackend::new());
        let init = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
        let repo = Repository::init(backend.clone(), b"pw", init).await.unwrap();
        let mut opts = SnapshotOptions::new(vec![src]);
        // Some packs larger than one range, so that the cap has to split them.
        opts.pipeline = PipelineOptions { data_pack_size: 12 << 20, tree_pack_size: 64 << 10, ..Default::default() };
        ops::snapshot(&repo, opts, Arc::new(NoProgress)).await.unwrap();
        let index = repo.load_index().await.unwrap();
        backend.take_reads();
        Fixture { tmp, backend, repo, index }
    }

    fn src(&self) -> PathBuf {
        self.tmp.path().join("src")
    }

    fn data_packs(&self) -> HashSet<Id> {
        self.index.blobs().filter(|(_, loc)| loc.blob_type == BlobType::Data).map(|(_, loc)| loc.pack).collect()
    }

    fn pack_size(&self, pack: &Id) -> u64 {
        self.index.packs().iter().find(|(id, _)| id == pack).map(|(_, size)| *size).unwrap()
    }

    /// The reads of data packs since the last call.
    fn data_reads(&self) -> Vec<Read> {
        let data = self.data_packs();
        self.backend.take_reads().into_iter().filter(|r| data.contains(&r.pack)).collect()
    }

    /// The snapshot's node at `path` (components separated by `/`).
    async fn node(&self, path: &str) -> Node {
        let (_, snap) = self.repo.find_snapshot("latest").await.unwrap();
        let mut tree = self.repo.load_tree(&self.index, &snap.tree).await.unwrap();
        let parts = split_subpath(path.as_bytes()).unwrap();
        let (last, dirs) = parts.split_last().unwrap();
        for dir in dirs {
            let sub = tree.find(dir).unwrap().subtree.unwrap();
            tree = self.repo.load_tree(&self.index, &sub).await.unwrap();
        }
        tree.find(last).unwrap().clone()
    }

    async fn restore(&self, subpath: &str, out: &str, workers: usize) -> Result<RestoreOutcome, RepoError> {
        let mut opts = RestoreOptions::new(self.tmp.path().join(out));
        opts.subpath = split_subpath(subpath.as_bytes()).unwrap();
        opts.workers = workers;
        opts.verify = true;
        ops::restore(&self.repo, "latest", &opts, Arc::new(NoRestoreProgress)).await.map(|(_, _, outcome)| outcome)
    }
}

fn read_bytes(reads: &[Read]) -> u64 {
    reads.iter().map(|r| r.len).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_restore_reads_each_pack_in_few_ranges() {
    let fx = Fixture::new().await;
    let outcome = fx.restore("", "out", 8).await.unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.verified_files, SMALL_FILES + 5);
    assert_same_tree(&fx.src(), &fx.tmp.path().join("out/src"));

    let reads = fx.data_reads();
    let packs = fx.data_packs();
    let data_blobs = fx.index.blobs().filter(|(_, loc)| loc.blob_type == BlobType::Data).count() as u64;
    let ranges_at_most: u64 = packs.iter().map(|p| fx.pack_size(p).div_ceil(MAX_RANGE_LEN) + 1).sum();
    eprintln!(
        "{data_blobs} data blobs in {} packs ({} bytes) restored with {} ranged reads ({} bytes)",
        packs.len(),
        packs.iter().map(|p| fx.pack_size(p)).sum::<u64>(),
        reads.len(),
        read_bytes(&reads)
    );
    assert!(packs.iter().any(|p| fx.pack_size(p) > MAX_RANGE_LEN), "the fixture must need the cap");
    assert!(reads.len() as u64 <= ranges_at_most, "{} reads, at most {ranges_at_most} expected", reads.len());
    assert!((reads.len() as u64) * 20 < data_blobs, "{} reads for {data_blobs} blobs", reads.len());
    assert!(reads.iter().all(|r| r.len <= MAX_RANGE_LEN), "a range above the cap: {reads:?}");
    // No byte is read twice.
    let mut sorted = reads.clone();
    sorted.sort_by_key(|r| (r.pack, r.offset));
    for pair in sorted.windows(2) {
        assert!(pair[0].pack != pair[1].pack || pair[0].offset + pair[0].len <= pair[1].offset, "{pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restoring_one_file_reads_only_its_blobs() {
    let fx = Fixture::new().await;
    for (path, restored) in [("src/d3/f11", "f11"), ("src/large.bin", "large.bin")] {
        let node = fx.node(path).await;
        let outcome = fx.restore(path, &format!("out-{restored}"), 8).await.unwrap();
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        assert_eq!(outcome.files, 1);
        let original = fs::read(fx.src().join(path.trim_start_matches("src/"))).unwrap();
        assert_eq!(fs::read(fx.tmp.path().join(format!("out-{restored}/{restored}"))).unwrap(), original);

        let reads = fx.data_reads();
        let blobs: Vec<BlobLocation> = node.content.iter().map(|id| fx.index.lookup(id).unwrap()).collect();
        for loc in &blobs {
            assert!(reads.iter().any(|r| r.covers(loc)), "{path}: blob at {} not read in one piece", loc.offset);
        }
        let needed: u64 = blobs.iter().map(|loc| u64::from(loc.length)).sum();
        let allowed = needed + (blobs.len() as u64 - 1) * MAX_RANGE_GAP;
        let read = read_bytes(&reads);
        assert!(read <= allowed, "{path}: {read} bytes read for {needed} bytes of blobs");
        let packs: HashSet<Id> = blobs.iter().map(|loc| loc.pack).collect();
        let packs_size: u64 = packs.iter().map(|p| fx.pack_size(p)).sum();
        eprintln!("{path}: {} reads, {read} bytes, from packs of {packs_size} bytes", reads.len());
        if blobs.len() == 1 {
            assert_eq!(reads.len(), 1, "{path}: {reads:?}");
            assert!(read * 100 < packs_size, "{path}: {read} bytes read from packs of {packs_size} bytes");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_shared_by_files_is_fetched_once() {
    let fx = Fixture::new().await;
    let node = fx.node("src/dup/a").await;
    assert_eq!(node.content.len(), 1);
    assert_eq!(fx.node("src/dup/c").await.content, node.content);
    let outcome = fx.restore("src/dup", "out", 8).await.unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.files, 3);
    let expected = random_bytes(30_000, 2000);
    for name in ["a", "b", "c"] {
        assert_eq!(fs::read(fx.tmp.path().join("out").join(name)).unwrap(), expected, "{name}");
    }
    let reads = fx.data_reads();
    let loc = fx.index.lookup(&node.content[0]).unwrap();
    assert_eq!(reads, vec![Read { pack: loc.pack, offset: u64::from(loc.offset), len: u64::from(loc.length) }]);

    // In a whole restore too, however many ranges there are.
    fx.restore("", "all", 8).await.unwrap();
    let covering = fx.data_reads().iter().filter(|r| r.covers(&loc)).count();
    assert_eq!(covering, 1);
}

/// Regular files below `root`, relative to it.
fn files_below(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    walk(root, &mut |p, m| {
        if m.is_file() {
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
        }
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_range_read_loses_only_the_files_that_need_it() {
    let fx = Fixture::new().await;
    // The last blob of the large file cannot be read: every read that covers
    // any byte of it fails for good.
    let large = fx.node("src/large.bin").await;
    assert!(large.content.len() > 1);
    let lost = fx.index.lookup(large.content.last().unwrap()).unwrap();
    let (start, end) = (u64::from(lost.offset), u64::from(lost.offset) + u64::from(lost.length));
    fx.backend.fail_when(move |r| {
        (r.pack == lost.pack && r.offset < end && start < r.offset + r.len)
            .then(|| BackendError::Permanent { message: "injected read failure".into() })
    });
    // A stale file where the lost one goes must not survive either.
    let out = fx.tmp.path().join("out");
    fs::create_dir_all(out.join("src")).unwrap();
    fs::write(out.join("src/large.bin"), b"an older version").unwrap();

    let outcome = fx.restore("", "out", 8).await.unwrap();
    assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    let error = &outcome.errors[0];
    assert!(error.starts_with("src/large.bin: data lost: ") && error.contains("injected read failure"), "{error}");
    assert!(!out.join("src/large.bin").exists(), "a file with lost data was left behind");
    assert_eq!(outcome.files, SMALL_FILES + 4);

    // Everything else came back, including files stored in the same pack.
    let expected: BTreeSet<PathBuf> =
        files_below(&fx.src()).into_iter().filter(|p| p != Path::new("large.bin")).collect();
    assert_eq!(files_below(&out.join("src")), expected);
    for rel in &expected {
        assert_eq!(fs::read(out.join("src").join(rel)).unwrap(), fs::read(fx.src().join(rel)).unwrap(), "{rel:?}");
    }
    let neighbours = fx
        .index
        .blobs()
        .filter(|(id, loc)| loc.pack == lost.pack && loc.blob_type == BlobType::Data && !large.content.contains(id))
        .count();
    assert!(neighbours > 0, "the fixture must put other files into the damaged pack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_that_wants_a_login_stops_the_restore() {
    let fx = Fixture::new().await;
    let data = fx.data_packs();
    fx.backend.fail_when(move |r| {
        data.contains(&r.pack).then(|| BackendError::NeedsLogin { message: "the session was revoked".into() })
    });
    let workers = 2;
    let err = fx.restore("", "out", workers).await.expect_err("the restore must stop");
    assert!(matches!(&err, RepoError::Backend(e) if e.needs_login()), "{err:?}");
    let reads = fx.data_reads();
    assert!(!reads.is_empty() && reads.len() <= workers, "no read may start after the refusal: {reads:?}");
    // Only complete files stay: here, the empty one.
    assert_eq!(files_below(&fx.tmp.path().join("out/src")), BTreeSet::from([PathBuf::from("empty")]));
}
