//! Prune after a long history of small snapshots: the many small packs the
//! kept snapshots still use are merged into few, the index ends as few
//! bounded objects, and the local cache lets go of the trees prune deleted.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tstor::archiver::{NoProgress, SnapshotOptions};
use tstor::backend::local::LocalBackend;
use tstor::backend::memory::MemoryBackend;
use tstor::backend::Backend;
use tstor::crypto::kdf::KdfParams;
use tstor::format::tree::NodeKind;
use tstor::format::{Id, ObjectKind};
use tstor::ops;
use tstor::ops::check::{NoCheckProgress, VerifyScope};
use tstor::ops::forget::{ForgetOptions, Keep, Policy};
use tstor::ops::prune::PruneOptions;
use tstor::repo::{InitOptions, Repository};
use tstor::restorer::{NoRestoreProgress, RestoreOptions};

use crate::common::*;

fn fast_init() -> InitOptions {
    InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() }
}

fn prune_options() -> PruneOptions {
    PruneOptions { unindexed_grace: Duration::ZERO, ..Default::default() }
}

/// `count` snapshots of `src`: the first of 20 files in 4 directories, each
/// later one adding a file and rewriting one of the first files.
async fn history(repo: &Repository, src: &Path, count: u64) {
    for d in 0..4 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
    }
    for i in 0..20u64 {
        fs::write(src.join(format!("d{}/f{i}", i % 4)), random_bytes(3_000 + i as usize * 50, i)).unwrap();
    }
    for s in 0..count {
        if s > 0 {
            fs::write(src.join(format!("d{}/new{s}", s % 4)), random_bytes(2_000, 1_000 + s)).unwrap();
            let i = s % 20;
            fs::write(src.join(format!("d{}/f{i}", i % 4)), random_bytes(3_000, 2_000 + s)).unwrap();
        }
        ops::snapshot(repo, SnapshotOptions::new(vec![src.to_path_buf()]), Arc::new(NoProgress)).await.unwrap();
    }
}

fn keep_last(n: u32) -> ForgetOptions {
    ForgetOptions { policy: Policy { last: Keep::Count(n), ..Default::default() }, ..Default::default() }
}

/// Every tree blob the snapshots use; `through_cache` reads them through the
/// local cache (which keeps them), otherwise from storage.
async fn used_trees(repo: &Repository, through_cache: bool) -> HashSet<Id> {
    let index = repo.load_index().await.unwrap();
    let (snaps, _) = repo.snapshots().await.unwrap();
    let mut used = HashSet::new();
    let mut stack: Vec<Id> = snaps.iter().map(|(_, s)| s.tree).collect();
    while let Some(t) = stack.pop() {
        if !used.insert(t) {
            continue;
        }
        let tree = if through_cache {
            repo.load_tree(&index, &t).await.unwrap()
        } else {
            repo.load_tree_from_storage(&index, &t).await.unwrap()
        };
        for node in tree.nodes {
            if node.kind == NodeKind::Dir {
                stack.extend(node.subtree);
            }
        }
    }
    used
}

async fn assert_clean_and_restorable(repo: &Repository, tmp: &Path) {
    let report = ops::check(repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
    assert!(report.ok() && report.warnings.is_empty(), "{:?} {:?}", report.problems, report.warnings);
    let (snaps, _) = repo.snapshots().await.unwrap();
    for (id, _) in &snaps {
        let mut opts = RestoreOptions::new(tmp.join(format!("restore-{}", id.short())));
        opts.verify = true;
        let (_, _, outcome) = ops::restore(repo, &id.to_hex(), &opts, Arc::new(NoRestoreProgress)).await.unwrap();
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_after_many_small_snapshots_merges_their_packs_into_few() {
    let tmp = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemoryBackend::new());
    let backend: Arc<dyn Backend> = mem.clone();
    let repo = Repository::init(backend, b"pw", fast_init()).await.unwrap();
    history(&repo, &tmp.path().join("src"), 30).await;
    let packs_before = mem.list(ObjectKind::Pack).await.unwrap().len();
    assert!(packs_before >= 40, "each snapshot wrote its own small packs: {packs_before}");

    let (forgot, pruned) = ops::forget(&repo, &keep_last(3), Some(&prune_options())).await.unwrap();
    assert_eq!(forgot.removed.len(), 27);
    let pruned = pruned.expect("forget --prune prunes");
    let packs = mem.list(ObjectKind::Pack).await.unwrap().len();
    assert!(packs <= 3, "{packs} packs left of {packs_before} (one data and one tree pack hold it all): {pruned:?}");
    assert_eq!(mem.list(ObjectKind::Index).await.unwrap().len(), 1, "the index is one object");
    assert_clean_and_restorable(&repo, tmp.path()).await;

    // Packs that are few, or no longer small, stay as they are: a second prune converges.
    let again = ops::prune(&repo, &prune_options()).await.unwrap();
    assert!(again.nothing_to_do, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_merges_the_index_objects_of_many_snapshots_even_with_nothing_to_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemoryBackend::new());
    let backend: Arc<dyn Backend> = mem.clone();
    let repo = Repository::init(backend, b"pw", fast_init()).await.unwrap();
    history(&repo, &tmp.path().join("src"), 4).await;
    assert_eq!(mem.list(ObjectKind::Index).await.unwrap().len(), 4, "one index object per snapshot");

    let report = ops::prune(&repo, &prune_options()).await.unwrap();
    assert!(!report.nothing_to_do, "{report:?}");
    assert_eq!(report.packs_deleted + report.packs_repacked, 0, "nothing was unused or small enough to merge");
    assert_eq!(mem.list(ObjectKind::Index).await.unwrap().len(), 1, "the index is one object");
    assert_clean_and_restorable(&repo, tmp.path()).await;
    assert!(ops::prune(&repo, &prune_options()).await.unwrap().nothing_to_do);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_evicts_the_trees_it_deleted_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    let cache_dir = tmp.path().join("cache");
    let repo = Repository::init(backend.clone(), b"pw", fast_init()).await.unwrap();
    drop(repo);
    let repo = Repository::open(backend, b"pw", Some(&cache_dir)).await.unwrap();
    history(&repo, &tmp.path().join("src"), 12).await;
    // Reading every snapshot's trees fills the cache with them.
    let all_trees = used_trees(&repo, true).await;
    let cache = repo.cache().expect("the cache opened");
    cache.flush().unwrap();
    let cached_before: HashSet<Id> = cache.tree_ids().unwrap().into_iter().collect();
    assert!(all_trees.is_subset(&cached_before), "trees of every snapshot were cached");

    ops::forget(&repo, &keep_last(2), Some(&prune_options())).await.unwrap();
    let used = used_trees(&repo, false).await;
    assert!(used.len() < all_trees.len());
    let cached_after: HashSet<Id> = cache.tree_ids().unwrap().into_iter().collect();
    let stale: Vec<&Id> = cached_after.difference(&used).collect();
    assert!(stale.is_empty(), "{} trees no snapshot uses are still cached", stale.len());
    assert!(!cached_after.is_empty(), "the trees still used stay cached");
    assert_clean_and_restorable(&repo, tmp.path()).await;
}
