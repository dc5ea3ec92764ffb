//! Restores of snapshots too large or too deep to plan whole: a long chain of
//! directories, a million entries built from shared subtrees, a tree deeper
//! than the file system's path limit, and how many reads a restore of many
//! small directories costs. The snapshots are crafted through the library
//! (tree blobs written directly), so that no test makes a million files to
//! back them up; the restores run the `tstor` binary, whose peak resident
//! memory is sampled. `TSTOR_SCALE_FULL=1` restores the million entries in
//! full instead of a sub-tree of them.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tstor::archiver::pipeline::PipelineOptions;
use tstor::archiver::{NoProgress, SnapshotOptions};
use tstor::backend::memory::MemoryBackend;
use tstor::backend::{Backend, ObjectInfo};
use tstor::crypto::kdf::KdfParams;
use tstor::format::{BlobType, Id, ObjectKind};
use tstor::ops;
use tstor::repo::{InitOptions, Repository};
use tstor::restorer::{NoRestoreProgress, RestoreOptions};

use crate::common::*;
use crate::crafted::{dir, file, Crafter};

/// The memory a restore may use, whatever the size of the snapshot.
const PEAK_RSS_LIMIT_KIB: i64 = 256 << 10;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

// ---- measuring a child ----

/// Runs `tstor args`, sampling its peak memory (see `run_measured_cmd`).
fn run_measured(env: &Env, args: &[&std::ffi::OsStr]) -> Measured {
    let mut cmd = env.std_cmd();
    cmd.args(args);
    let started = std::time::Instant::now();
    let done = run_measured_cmd(env, cmd, false);
    eprintln!("tstor {:?} ran for {:.1} s", args.first(), started.elapsed().as_secs_f64());
    done
}

fn restore_measured(env: &Env, target: &Path, extra: &[&str]) -> Measured {
    let mut args = vec![os("restore"), os("latest"), os("--target"), target.as_os_str().to_os_string()];
    args.extend(extra.iter().map(os));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run_measured(env, &args)
}

/// The directories of the chain of `name` directories below `target`, each
/// opened in its parent's handle (their paths outgrow `PATH_MAX`), from the
/// top down, with the content of each one's `f` where there is one.
fn chain_below(target: &Path, name: &str) -> Vec<(fs::Metadata, Option<Vec<u8>>)> {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};
    let open_at = |dir: &fs::File, name: &str, flags: libc::c_int| -> Option<fs::File> {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: a valid descriptor and a NUL-terminated name.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        // SAFETY: a descriptor just opened, owned by nobody else.
        (fd >= 0).then(|| unsafe { fs::File::from_raw_fd(fd) })
    };
    let mut out = Vec::new();
    let mut dir = fs::File::open(target).unwrap();
    while let Some(next) = open_at(&dir, name, libc::O_RDONLY | libc::O_DIRECTORY) {
        let content = open_at(&next, "f", libc::O_RDONLY).map(|mut f| {
            let mut content = Vec::new();
            f.read_to_end(&mut content).unwrap();
            content
        });
        out.push((next.metadata().unwrap(), content));
        dir = next;
    }
    out
}

/// A chain of `levels` directories named `name`, each also holding a file
/// `f` whose content is its level when `files`, the deepest holding `f`.
async fn chain(env: &Env, levels: usize, name: &[u8], files: bool) {
    let mut c = Crafter::init(&env.repo()).await;
    let bottom = c.data(b"bottom").await;
    let mut nodes = vec![file(b"f", vec![bottom], 6)];
    for level in (1..=levels).rev() {
        let sub = c.tree(nodes).await;
        nodes = vec![dir(name, sub)];
        if files && level > 1 {
            let content = format!("level {}", level - 1);
            let blob = c.data(content.as_bytes()).await;
            nodes.push(file(b"f", vec![blob], content.len() as u64));
        }
    }
    let root = c.tree(nodes).await;
    c.finish(root).await;
}

#[test]
fn a_twenty_thousand_level_chain_restores_down_to_the_depth_limit_in_bounded_memory() {
    let env = Env::new();
    let levels = std::env::var("TSTOR_SCALE_CHAIN").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    // Names of 15 bytes: at the depth limit, paths are as long as allowed,
    // so that holding every path would cost the most.
    let name = "chain-directory";
    block_on(chain(&env, levels, name.as_bytes(), false));
    let target = env.path("out");
    let done = restore_measured(&env, &target, &[]);
    eprintln!("peak memory restoring a {levels}-level chain: {} MiB", done.peak_rss_kib >> 10);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(
        done.peak_rss_kib < PEAK_RSS_LIMIT_KIB,
        "restoring a {levels}-level chain took {} MiB",
        done.peak_rss_kib >> 10
    );
    // Directories are made relative to their parents' handles, far past
    // the system's path limit, down to the depth limit of format.md §22;
    // the entry below the last is refused, and so is everything below it:
    // the directories of the levels past the limit and the bottom file.
    let err = &done.stderr;
    let max = tstor::format::MAX_TREE_DEPTH;
    let below = levels - (max + 1) + 1;
    assert!(err.contains("refused: more than 4096 directory levels deep"), "{err}");
    assert!(err.contains(&format!("; {below} entries below it were not restored")), "expected {below}:\n{err}");
    assert!(err.contains(&format!("tstor: {} entries were not restored", below + 1)), "{err}");
    assert!(!err.contains("cannot create"), "{err}");
    let made = chain_below(&target, name);
    assert_eq!(made.len(), tstor::format::MAX_TREE_DEPTH);
    use std::os::unix::fs::MetadataExt;
    assert!(made.iter().all(|(m, _)| m.mtime() == 1_600_000_000), "directory times are applied at every level");
}

#[test]
fn a_three_thousand_level_tree_round_trips_whole() {
    let env = Env::new();
    let levels = 3000;
    block_on(chain(&env, levels, b"d", true));
    let target = env.path("out");
    let done = restore_measured(&env, &target, &[]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.peak_rss_kib < PEAK_RSS_LIMIT_KIB, "restoring took {} MiB", done.peak_rss_kib >> 10);
    // Every level is there, far below `PATH_MAX`, byte for byte, with its metadata.
    let made = chain_below(&target, "d");
    assert_eq!(made.len(), levels);
    for (i, (meta, content)) in made.iter().enumerate() {
        let level = i + 1;
        let expected = if level == levels { b"bottom".to_vec() } else { format!("level {level}").into_bytes() };
        assert_eq!(content.as_deref(), Some(&expected[..]), "level {level}");
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(meta.mtime(), 1_600_000_000, "level {level}: directory times are applied");
    }
}

/// A directory whose name the file system refuses (longer than `NAME_MAX`)
/// is named, with the number of entries below it, each counted as not
/// restored; its siblings are restored.
#[test]
fn a_directory_the_file_system_refuses_counts_everything_below_it() {
    let env = Env::new();
    let long = "n".repeat(300);
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let blob = c.data(b"kept").await;
        // 10 levels below the refused directory, a directory and a file on each.
        let mut nodes = vec![file(b"f", vec![blob], 4)];
        for _ in 0..10 {
            let sub = c.tree(nodes).await;
            nodes = vec![dir(b"d", sub), file(b"f", vec![blob], 4)];
        }
        let sub = c.tree(nodes).await;
        let a = c.tree(vec![file(b"f", vec![blob], 4)]).await;
        let root = c.tree(vec![dir(b"a", a), dir(long.as_bytes(), sub)]).await;
        c.finish(root).await;
    });
    let target = env.path("out");
    let done = restore_measured(&env, &target, &[]);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let err = &done.stderr;
    let below = 2 * 10 + 1;
    assert!(err.contains("cannot create directory") && err.contains("too long"), "{err}");
    assert!(err.contains(&format!("{below} entries below it were not restored")), "expected {below}:\n{err}");
    assert!(err.contains(&format!("tstor: {} entries were not restored", below + 1)), "{err}");
    assert_eq!(fs::read(target.join("a/f")).unwrap(), b"kept");
}

/// A directory refused for its name is reported with the number of entries
/// below it, counted through shared subtrees without restoring any of them
/// (each counted as often as it is reached, as the snapshot has them);
/// everything beside it is restored. Two refused directories holding the
/// same subtree are each counted in full.
#[test]
fn a_directory_refused_for_its_name_counts_everything_below_it() {
    let env = Env::new();
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let blob = c.data(b"kept").await;
        // Three levels of ten directories of one shared tree of ten files:
        // 10 + 100 + 1,000 directories and 10,000 files from four trees.
        let mut tree = c.tree(names('f', 10).into_iter().map(|n| file(&n, vec![blob], 4)).collect()).await;
        for _ in 0..3 {
            tree = c.tree(names('d', 10).into_iter().map(|n| dir(&n, tree)).collect()).await;
        }
        let a = c.tree(vec![file(b"f", vec![blob], 4)]).await;
        let root = c.tree(vec![dir(b"a", a), dir(b"..", tree), dir(b"x/y", tree)]).await;
        c.finish(root).await;
    });
    let target = env.path("out");
    let done = restore_measured(&env, &target, &[]);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let err = &done.stderr;
    let below = 10 + 100 + 1_000 + 10_000;
    assert!(err.contains("refused: name is \".\" or \"..\""), "{err}");
    assert!(err.contains("x/y: refused"), "{err}");
    let counted = format!("; {below} entries below it were not restored");
    assert_eq!(err.matches(&counted).count(), 2, "expected {below} below each:\n{err}");
    assert!(err.contains(&format!("tstor: {} entries were not restored", 2 * (below + 1))), "{err}");
    assert_eq!(fs::read(target.join("a/f")).unwrap(), b"kept");
    assert!(!env.path("f00").exists() && !env.path("d00").exists(), "nothing was written beside the target");
}

/// Names `d00`…`d99`, or `f00`…
fn names(prefix: char, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{prefix}{i:02}").into_bytes()).collect()
}

#[test]
fn a_million_entries_from_shared_subtrees_restore_in_bounded_memory() {
    let env = Env::new();
    let width = 100;
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let blob = c.data(b"shared content").await;
        let files = names('f', width).into_iter().map(|n| file(&n, vec![blob], 14)).collect();
        let mut tree = c.tree(files).await;
        for _ in 0..2 {
            let dirs = names('d', width).into_iter().map(|n| dir(&n, tree)).collect();
            tree = c.tree(dirs).await;
        }
        c.finish(tree).await;
    });
    let target = env.path("out");
    let full = std::env::var_os("TSTOR_SCALE_FULL").is_some();
    // All million entries are walked either way; writing a million files
    // takes minutes, so by default one directory of them is restored.
    let extra: &[&str] = if full { &[] } else { &["--include", "d07/d42/*"] };
    let done = restore_measured(&env, &target, extra);
    eprintln!("peak memory restoring 10^6 entries (full: {full}): {} MiB", done.peak_rss_kib >> 10);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.peak_rss_kib < PEAK_RSS_LIMIT_KIB, "restoring 10^6 entries took {} MiB", done.peak_rss_kib >> 10);
    let leaf = target.join("d07/d42");
    let restored: Vec<_> = fs::read_dir(&leaf).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(restored.len(), width);
    assert_eq!(fs::read(leaf.join("f99")).unwrap(), b"shared content");
    if !full {
        assert_eq!(fs::read_dir(&target).unwrap().count(), 1, "only what the pattern asks for");
    }
}

// ---- reads per GiB ----

/// Counts the ranged reads of packs, and the `upload.getFile` requests
/// that Telegram would need for them.
struct CountingBackend {
    inner: MemoryBackend,
    reads: Mutex<Vec<(Id, u64, u32)>>,
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
            self.reads.lock().unwrap().push((*id, offset, len));
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
async fn a_restore_of_many_small_directories_reads_trees_in_few_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (dirs, per_dir) = (400u64, 8u64);
    let mut source_bytes = 0;
    for d in 0..dirs {
        let dir = src.join(format!("g{}", d % 20)).join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..per_dir {
            // Like source files: text that compresses, with some noise.
            let len = 2000 + ((d * per_dir + i) as usize * 7919) % 20_000;
            let mut data = random_bytes(len / 4, d * 1000 + i);
            while data.len() < len {
                data.extend_from_slice(format!("line {} of {d}/{i}: words that repeat\n", data.len()).as_bytes());
            }
            source_bytes += data.len() as u64;
            fs::write(dir.join(format!("f{i}")), data).unwrap();
        }
    }
    let backend = Arc::new(CountingBackend { inner: MemoryBackend::new(), reads: Mutex::default() });
    let init = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
    let repo = Repository::init(backend.clone(), b"pw", init).await.unwrap();
    let mut opts = SnapshotOptions::new(vec![src.clone()]);
    opts.pipeline = PipelineOptions { data_pack_size: 16 << 20, tree_pack_size: 1 << 20, ..Default::default() };
    ops::snapshot(&repo, opts, Arc::new(NoProgress)).await.unwrap();

    // A machine that never saw the repository: an empty cache.
    let cache = tmp.path().join("cache");
    let repo = Repository::open(backend.clone(), b"pw", Some(&cache)).await.unwrap();
    let index = repo.load_index().await.unwrap();
    let tree_packs: HashSet<Id> =
        index.blobs().filter(|(_, l)| l.blob_type == BlobType::Tree).map(|(_, l)| l.pack).collect();
    let trees = index.blobs().filter(|(_, l)| l.blob_type == BlobType::Tree).count();
    backend.reads.lock().unwrap().clear();
    let out: PathBuf = tmp.path().join("out");
    let restore = RestoreOptions::new(out.clone());
    let (_, _, outcome) = ops::restore(&repo, "latest", &restore, Arc::new(NoRestoreProgress)).await.unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.files, dirs * per_dir);
    assert_same_tree(&src, &out.join("src"));

    let reads = backend.reads.lock().unwrap().clone();
    let calls = |reads: &[&(Id, u64, u32)]| -> usize {
        reads.iter().map(|(_, off, len)| tstor::backend::telegram::chunk_plan(*off, off + *len as u64).len()).sum()
    };
    let tree_reads: Vec<_> = reads.iter().filter(|r| tree_packs.contains(&r.0)).collect();
    let data_reads: Vec<_> = reads.iter().filter(|r| !tree_packs.contains(&r.0)).collect();
    let (tree_calls, data_calls) = (calls(&tree_reads), calls(&data_reads));
    let gib = source_bytes as f64 / f64::from(1u32 << 30);
    eprintln!(
        "{trees} trees in {} packs: {} tree reads ({tree_calls} getFile), {} data reads ({data_calls} getFile); \
         {:.0} getFile per GiB of {source_bytes} source bytes",
        tree_packs.len(),
        tree_reads.len(),
        data_reads.len(),
        (tree_calls + data_calls) as f64 / gib
    );
    // Trees are read in ranges of many, not one at a time.
    assert!(tree_reads.len() * 10 < trees, "{} reads for {trees} trees", tree_reads.len());
    assert!(((tree_calls + data_calls) as f64) < 1500.0 * gib, "{} calls for {gib:.3} GiB", tree_calls + data_calls);
}

#[test]
fn a_billion_entries_from_five_trees_are_refused_at_once_in_bounded_memory() {
    let env = Env::new();
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let blob = c.data(b"x").await;
        let files = names('f', 64).into_iter().map(|n| file(&n, vec![blob], 1)).collect();
        let mut tree = c.tree(files).await;
        for _ in 0..4 {
            let dirs = names('d', 64).into_iter().map(|n| dir(&n, tree)).collect();
            tree = c.tree(dirs).await;
        }
        c.finish(tree).await;
    });
    let target = env.path("out");
    let done = restore_measured(&env, &target, &[]);
    eprintln!("peak memory refusing 64^5 entries: {} MiB", done.peak_rss_kib >> 10);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("more than 100000000 entries"), "{}", done.stderr);
    assert!(!target.exists(), "nothing was written");
    assert!(done.peak_rss_kib < PEAK_RSS_LIMIT_KIB, "refusing 64^5 entries took {} MiB", done.peak_rss_kib >> 10);
}
