//! `copy`: snapshots from one repository into another.
//!
//! Under the same keys and repository id (`init --same-keys`) the source's
//! packs, index entries and snapshot objects are valid in the target as they
//! are: the packs holding blobs the target lacks are stored unchanged (by the
//! target backend's re-send of the source's stored object where it can, as
//! Telegram can between chats of one account; otherwise by their bytes),
//! indexed with the source's entries, and the snapshot objects stored with
//! the same ids. Under other keys, ids differ (content ids are keyed): every
//! blob of a snapshot copied is read, its id worked out under the target's
//! keys, the ones the target lacks sealed and packed anew, and the trees
//! rewritten with the new ids; the new snapshot names the source's as its
//! original (docs/format.md §16).
//!
//! Either way the order is a snapshot's: packs, then the index naming them,
//! then the snapshots (the head follows when the lock is released). A copy
//! stopped at any point leaves the target as valid as it found it, and the
//! next one reuses what was stored. A snapshot already in the target (by its
//! id, or as the original of one there with the same time, host, user, paths
//! and tags) is skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::archiver::pipeline::{Pipeline, PipelineOptions};
use crate::archiver::{NoProgress, RunBudget};
use crate::format::index::IndexedPack;
use crate::format::pack::pack_id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{encode_part_list, Tree};
use crate::format::{BlobType, Id, ObjectKind, MAX_BLOB_LEN};
use crate::repo::index::MasterIndex;
use crate::repo::lock::{self, LockGuard};
use crate::repo::{RepoError, Repository};

/// Packs copied between two index objects written, so that a long copy
/// that stops keeps most of what it stored indexed.
const PACKS_PER_INDEX: usize = 64;
/// Directories read at once while walking the source's snapshots: each
/// read waits out a round trip where storage is remote.
const TREES_IN_FLIGHT: usize = 16;

/// How the blobs went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMode {
    /// Same keys: packs and snapshots copied as stored.
    SameKeys,
    /// Other keys: blobs read, sealed under the target's keys, packed anew.
    Reseal,
}

/// One snapshot of the source and its copy in the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopiedSnapshot {
    pub source: String,
    pub target: String,
}

/// What a copy did.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    pub mode: CopyMode,
    /// Snapshots copied by this run, oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// Snapshots asked for that the target had already.
    pub skipped: Vec<CopiedSnapshot>,
    /// Packs this run stored in the target, and how many of them were
    /// stored without uploading them (re-sent by the storage).
    pub packs_copied: usize,
    pub packs_resent: usize,
    /// Bytes of the packs this run stored in the target, re-sent or not.
    pub bytes_copied: u64,
    /// Bytes of those packs that were uploaded.
    pub bytes_uploaded: u64,
    /// Bytes read from the source: whole packs (same keys, when not
    /// re-sent) or blobs, as stored (other keys).
    pub bytes_read: u64,
    /// Blobs the target lacked and now holds.
    pub blobs_copied: u64,
    /// Plaintext bytes of those blobs, where they were opened (other keys).
    pub blob_bytes_added: u64,
    pub duration_seconds: f64,
}

impl CopyReport {
    fn new(mode: CopyMode) -> CopyReport {
        CopyReport {
            mode,
            copied: Vec::new(),
            skipped: Vec::new(),
            packs_copied: 0,
            packs_resent: 0,
            bytes_copied: 0,
            bytes_uploaded: 0,
            bytes_read: 0,
            blobs_copied: 0,
            blob_bytes_added: 0,
            duration_seconds: 0.0,
        }
    }
}

/// Copies the snapshots `specs` name (`latest`, ids, id prefixes; every
/// snapshot when empty) from `source` to `target`, holding a shared lock on
/// each.
pub async fn copy(source: &Repository, target: &Repository, specs: &[String]) -> Result<CopyReport, RepoError> {
    if source.backend().location() == target.backend().location() {
        return Err(RepoError::Invalid(format!(
            "the source and the target are the same repository ({})",
            target.backend().location()
        )));
    }
    let started = std::time::Instant::now();
    let source_lock = lock::acquire(source, false).await?;
    let target_lock = match lock::acquire(target, false).await {
        Ok(l) => l,
        Err(e) => {
            source_lock.release().await;
            return Err(e);
        }
    };
    let result = copy_locked(source, target, &target_lock, specs).await;
    target_lock.release().await;
    source_lock.release().await;
    result.map(|mut r| {
        r.duration_seconds = started.elapsed().as_secs_f64();
        r
    })
}

async fn copy_locked(
    source: &Repository,
    target: &Repository,
    lock: &LockGuard,
    specs: &[String],
) -> Result<CopyReport, RepoError> {
    let same_keys = target.has_same_keys_as(source);
    if !same_keys && target.repo_id() == source.repo_id() {
        return Err(RepoError::Invalid("the source and the target have one repository id but other keys".into()));
    }
    let mut report = CopyReport::new(if same_keys { CopyMode::SameKeys } else { CopyMode::Reseal });
    let wanted = select(source, specs).await?;

    // What the target holds: by id, and by original. A source snapshot is
    // already there when the target holds its id, or a snapshot with its
    // original that is the same snapshot (time, host, user, paths, tags):
    // a snapshot rewritten from one already copied shares its original but
    // not its tags, and is copied too (restic's rule).
    let (in_target, _) = target.snapshots().await?;
    let target_ids: HashSet<Id> = in_target.iter().map(|(id, _)| *id).collect();
    let mut by_original: HashMap<Id, Id> = in_target.iter().filter_map(|(id, s)| Some((s.original?, *id))).collect();
    let mut todo = Vec::new();
    for (id, snap) in wanted {
        let original = snap.original.unwrap_or(id);
        let present = if target_ids.contains(&id) {
            Some(id)
        } else {
            in_target.iter().find(|(_, t)| t.original == Some(original) && same_snapshot(t, &snap)).map(|(t, _)| *t)
        };
        match present {
            Some(t) => report.skipped.push(CopiedSnapshot { source: id.to_hex(), target: t.to_hex() }),
            None => todo.push((id, snap)),
        }
    }
    if todo.is_empty() {
        return Ok(report);
    }

    let source_index = Arc::new(source.load_index().await?);
    let mut target_index = target.load_index_lenient().await?;
    // Packs a stopped copy (or snapshot) stored and did not index.
    target.index_unindexed_packs(&mut target_index).await?;

    if same_keys {
        copy_packs(source, target, lock, &source_index, &target_index, &todo, &mut report).await?;
        lock.ensure_held().await?;
        for (id, _) in &todo {
            let plain = source.load_object(ObjectKind::Snapshot, id).await?;
            let stored = target.save_object(ObjectKind::Snapshot, &plain).await?;
            if stored != *id {
                return Err(RepoError::Invalid(format!("snapshot {id} was stored as {stored}: the keys differ")));
            }
            report.copied.push(CopiedSnapshot { source: id.to_hex(), target: stored.to_hex() });
        }
        return Ok(report);
    }

    let roots = reseal_blobs(source, target, lock, source_index, target_index, &todo, &mut report).await?;
    lock.ensure_held().await?;
    for ((id, snap), root) in todo.into_iter().zip(roots) {
        let original = snap.original.unwrap_or(id);
        let parent = snap.parent.and_then(|p| by_original.get(&p).copied());
        let copied = Snapshot { tree: root, parent, original: Some(original), ..snap };
        let stored = target.save_object(ObjectKind::Snapshot, &copied.encode()).await?;
        by_original.insert(original, stored);
        report.copied.push(CopiedSnapshot { source: id.to_hex(), target: stored.to_hex() });
    }
    Ok(report)
}

/// Whether `a` and `b` are the same snapshot but for where they are stored:
/// what a copy keeps of its source (the tree, parent and original differ).
fn same_snapshot(a: &Snapshot, b: &Snapshot) -> bool {
    a.time_ns == b.time_ns
        && a.hostname == b.hostname
        && a.username == b.username
        && a.paths == b.paths
        && a.tags == b.tags
}

/// The source snapshots `specs` name, oldest first, each once.
async fn select(source: &Repository, specs: &[String]) -> Result<Vec<(Id, Snapshot)>, RepoError> {
    let (all, bad) = source.snapshots().await?;
    if specs.is_empty() {
        if let Some((id, e)) = bad.into_iter().next() {
            return Err(RepoError::Damaged { what: format!("source snapshot {id}"), reason: e.to_string() });
        }
        return Ok(all);
    }
    let mut chosen = HashSet::new();
    for spec in specs {
        chosen.insert(source.find_snapshot(spec).await?.0);
    }
    Ok(all.into_iter().filter(|(id, _)| chosen.contains(id)).collect())
}

/// Same keys: stores in the target the source packs holding what the
/// snapshots need and the target lacks, and indexes them.
async fn copy_packs(
    source: &Repository,
    target: &Repository,
    lock: &LockGuard,
    source_index: &Arc<MasterIndex>,
    target_index: &MasterIndex,
    todo: &[(Id, Snapshot)],
    report: &mut CopyReport,
) -> Result<(), RepoError> {
    // Every blob the snapshots reach, walked in the source.
    let mut needed: Vec<Id> = Vec::new();
    let mut wanted_packs: HashSet<Id> = HashSet::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut stack: Vec<Id> = todo.iter().map(|(_, s)| s.tree).collect();
    let mut want = |id: &Id, needed: &mut Vec<Id>| -> Result<(), RepoError> {
        if target_index.contains(id) {
            return Ok(());
        }
        let loc = source_index.lookup(id).ok_or_else(|| RepoError::Damaged {
            what: format!("source blob {id}"),
            reason: "a snapshot needs it and no index lists it".into(),
        })?;
        if wanted_packs.insert(loc.pack) {
            needed.push(loc.pack);
        }
        Ok(())
    };
    // Level by level, a few directories read at once.
    stack.retain(|id| seen.insert(*id));
    while !stack.is_empty() {
        let mut next = Vec::new();
        for chunk in stack.chunks(TREES_IN_FLIGHT) {
            let mut reads = tokio::task::JoinSet::new();
            for id in chunk {
                let (repo, index, id) = (source.clone(), Arc::clone(source_index), *id);
                reads.spawn(async move { (id, repo.load_tree_parts(&index, &id).await) });
            }
            while let Some(read) = reads.join_next().await {
                let (tree_id, read) = read.map_err(|e| RepoError::Invalid(format!("reading a tree failed: {e}")))?;
                let (tree, parts) = read?;
                want(&tree_id, &mut needed)?;
                for part in &parts {
                    want(part, &mut needed)?;
                }
                for node in &tree.nodes {
                    for blob in &node.content {
                        if seen.insert(*blob) {
                            want(blob, &mut needed)?;
                        }
                    }
                    if let Some(sub) = node.subtree.filter(|sub| seen.insert(*sub)) {
                        next.push(sub);
                    }
                }
            }
        }
        stack = next;
    }
    let sizes: HashMap<Id, u64> = source_index.packs().iter().copied().collect();
    let mut entries = source_index.blobs_by_pack(&needed);
    let mut batch: Vec<IndexedPack> = Vec::new();
    for pack in needed {
        let size = sizes.get(&pack).copied().unwrap_or(0);
        let resent = match source.backend().stored_handle(ObjectKind::Pack, &pack).await? {
            Some(handle) => target.backend().put_from_handle(ObjectKind::Pack, &pack, &handle).await?,
            None => false,
        };
        if resent {
            report.packs_resent += 1;
        } else {
            let bytes = source.backend().get(ObjectKind::Pack, &pack).await?;
            report.bytes_read += bytes.len() as u64;
            if pack_id(&bytes) != pack {
                return Err(RepoError::Damaged {
                    what: format!("source pack {pack}"),
                    reason: "its content does not match its id".into(),
                });
            }
            let len = bytes.len() as u64;
            target.backend().put(ObjectKind::Pack, &pack, bytes).await?;
            report.bytes_uploaded += len;
        }
        report.packs_copied += 1;
        report.bytes_copied += size;
        let blobs = entries.remove(&pack).unwrap_or_default();
        report.blobs_copied += blobs.iter().filter(|b| !target_index.contains(&b.id)).count() as u64;
        batch.push(IndexedPack { id: pack, size, blobs });
        if batch.len() >= PACKS_PER_INDEX {
            lock.ensure_held().await?;
            target.write_index(std::mem::take(&mut batch), Vec::new()).await?;
        }
    }
    if !batch.is_empty() {
        lock.ensure_held().await?;
        target.write_index(batch, Vec::new()).await?;
    }
    Ok(())
}

/// What the re-sealing walk keeps between directories.
struct Reseal<'a> {
    source: &'a Repository,
    target: &'a Repository,
    source_index: &'a MasterIndex,
    target_index: &'a MasterIndex,
    pipeline: &'a Pipeline,
    handle: &'a tokio::runtime::Handle,
    /// Source id → target id, of data blobs and of directories.
    data: HashMap<Id, Id>,
    trees: HashMap<Id, Id>,
    /// Target blobs handed to the pipeline by this run.
    queued: HashSet<Id>,
    blobs_copied: u64,
    blob_bytes_added: u64,
    bytes_read: u64,
}

impl Reseal<'_> {
    fn store(&mut self, blob_type: BlobType, id: Id, raw: Vec<u8>) -> Result<(), RepoError> {
        if self.target_index.contains(&id) || !self.queued.insert(id) {
            return Ok(());
        }
        self.blobs_copied += 1;
        self.blob_bytes_added += raw.len() as u64;
        if self.pipeline.submit(blob_type, id, raw) {
            Ok(())
        } else {
            Err(RepoError::Invalid("storing data in the target failed".into()))
        }
    }

    fn data_blob(&mut self, id: &Id) -> Result<Id, RepoError> {
        if let Some(new) = self.data.get(id) {
            return Ok(*new);
        }
        let raw = self.handle.block_on(self.source.read_blob(self.source_index, id))?;
        self.bytes_read += self.source_index.lookup(id).map_or(0, |l| l.length as u64);
        let new = self.target.keys().blob_id(BlobType::Data, &raw);
        self.store(BlobType::Data, new, raw)?;
        self.data.insert(*id, new);
        Ok(new)
    }

    /// The target id of source directory `id`, with everything below it stored.
    fn directory(&mut self, id: &Id) -> Result<Id, RepoError> {
        if let Some(new) = self.trees.get(id) {
            return Ok(*new);
        }
        let (mut tree, _) = self.handle.block_on(self.source.load_tree_parts(self.source_index, id))?;
        for node in &mut tree.nodes {
            for blob in &mut node.content {
                *blob = self.data_blob(blob)?;
            }
            if let Some(sub) = node.subtree {
                node.subtree = Some(self.directory(&sub)?);
            }
        }
        let new = self.store_tree(&tree)?;
        self.trees.insert(*id, new);
        Ok(new)
    }

    /// Stores a directory as the archiver does: one tree blob, or its parts
    /// and a part list (docs/format.md §15.1).
    fn store_tree(&mut self, tree: &Tree) -> Result<Id, RepoError> {
        let mut blobs = tree.encode_split(MAX_BLOB_LEN as usize);
        let mut ids: Vec<Id> = blobs.iter().map(|raw| self.target.keys().tree_id(raw)).collect();
        if blobs.len() > 1 {
            let list = encode_part_list(&ids);
            ids.push(self.target.keys().tree_id(&list));
            blobs.push(list);
        }
        for (raw, id) in blobs.into_iter().zip(&ids) {
            self.store(BlobType::Tree, *id, raw)?;
        }
        ids.last().copied().ok_or_else(|| RepoError::Invalid("a directory encoded to no tree blob".into()))
    }
}

/// Other keys: stores under the target's keys every blob of the snapshots
/// the target lacks, and indexes the packs; returns each snapshot's new
/// root tree.
async fn reseal_blobs(
    source: &Repository,
    target: &Repository,
    lock: &LockGuard,
    source_index: Arc<MasterIndex>,
    target_index: MasterIndex,
    todo: &[(Id, Snapshot)],
    report: &mut CopyReport,
) -> Result<Vec<Id>, RepoError> {
    let mut opts = PipelineOptions::default();
    if let Some(size) = target.backend().preferred_pack_size() {
        opts.data_pack_size = size;
    }
    let handle = tokio::runtime::Handle::current();
    let (source2, target2) = (source.clone(), target.clone());
    let roots: Vec<Id> = todo.iter().map(|(_, s)| s.tree).collect();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // The walk blocks on the runtime to read, and recurses once per
    // directory level: a thread of its own, with room for deep trees.
    let walk = move || {
        let pipeline = Pipeline::start(&target2, opts, RunBudget::default(), Arc::new(NoProgress), handle.clone());
        let mut walk = Reseal {
            source: &source2,
            target: &target2,
            source_index: &source_index,
            target_index: &target_index,
            pipeline: &pipeline,
            handle: &handle,
            data: HashMap::new(),
            trees: HashMap::new(),
            queued: HashSet::new(),
            blobs_copied: 0,
            blob_bytes_added: 0,
            bytes_read: 0,
        };
        let mut new_roots = Vec::with_capacity(roots.len());
        let mut failed = None;
        for root in &roots {
            match walk.directory(root) {
                Ok(id) => new_roots.push(id),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let counts = (walk.blobs_copied, walk.blob_bytes_added, walk.bytes_read);
        drop(walk);
        let (stored, pipeline_err) = pipeline.finish();
        (new_roots, failed, counts, stored, pipeline_err)
    };
    std::thread::Builder::new()
        .name("tstor-copy".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let _ = done_tx.send(walk());
        })
        .map_err(|e| RepoError::Invalid(format!("cannot start the copy: {e}")))?;
    let (new_roots, failed, (blobs, blob_bytes, read), stored, pipeline_err) =
        done_rx.await.map_err(|_| RepoError::Invalid("the copy stopped".into()))?;
    report.blobs_copied = blobs;
    report.blob_bytes_added = blob_bytes;
    report.bytes_read = read;
    report.packs_copied = stored.packs.len();
    report.bytes_copied = stored.bytes_stored;
    report.bytes_uploaded = stored.bytes_stored;
    // What did upload is indexed even if the walk failed, for the next run.
    if !stored.packs.is_empty() {
        lock.ensure_held().await?;
        target.write_index(stored.packs, Vec::new()).await?;
    }
    if let Some(e) = pipeline_err.or(failed) {
        return Err(e);
    }
    Ok(new_roots)
}
