//! `rewrite` and `repair snapshots`: new snapshots made from old ones with
//! entries left out, restic's semantics.
//!
//! `rewrite` leaves out the entries that exclude patterns match (matched, as
//! at snapshot time, against the absolute source path). `repair snapshots`
//! leaves out what can no longer be read: a file with a data blob the index
//! does not list is removed (not cut short) and named; a directory whose tree
//! cannot be read becomes an empty directory; a snapshot whose root tree
//! cannot be read cannot be repaired (with `--forget` it is removed).
//!
//! Only changed directories get new trees; an unchanged subtree keeps its id.
//! A snapshot whose root tree does not change is not rewritten. A new
//! snapshot keeps the old one's time, host, paths, parent and summary, names
//! the old one as its `original` (format.md §16) and gains the tag `rewrite`
//! or `repaired`. Write order: the new trees' packs, their index, the new
//! snapshot objects, and only then (`--forget`) the originals are deleted, so
//! a run that fails leaves the repository as it was plus unused blobs.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

use crate::archiver::pipeline::PipelineOptions;
use crate::archiver::Exclusions;
use crate::format::index::IndexedPack;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{encode_part_list, Node, NodeKind, Tree};
use crate::format::{BlobType, Id, ObjectKind, MAX_BLOB_LEN};
use crate::repo::index::MasterIndex;
use crate::repo::lock::{self, LockGuard};
use crate::repo::packer::Packer;
use crate::repo::{RepoError, Repository};

use super::forget::SnapshotFilter;
use super::inspect::join_path;

/// Which snapshots, and what to do with the originals.
#[derive(Clone, Debug, Default)]
pub struct RewriteTarget {
    /// Snapshot ids, prefixes or `latest`; none: every snapshot `filter` matches.
    pub specs: Vec<String>,
    pub filter: SnapshotFilter,
    /// Delete each original once its new snapshot is saved.
    pub forget: bool,
    /// Work out what would change; write nothing.
    pub dry_run: bool,
}

/// An entry left out of a snapshot.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RemovedEntry {
    /// The path inside the snapshot.
    pub path: String,
    pub reason: String,
}

/// One snapshot that changed.
#[derive(Clone, Debug, Serialize)]
pub struct RewrittenSnapshot {
    pub original: String,
    /// The new snapshot (`None` in a dry run).
    pub new: Option<String>,
    /// Entries left out or replaced, in walk order.
    pub removed: Vec<RemovedEntry>,
    /// Whether the original was deleted.
    pub forgotten: bool,
}

/// A snapshot `repair snapshots` cannot repair: its root tree is unreadable.
#[derive(Clone, Debug, Serialize)]
pub struct Unrepairable {
    pub snapshot: String,
    pub reason: String,
    /// Whether it was deleted (`--forget`).
    pub forgotten: bool,
}

/// What a `rewrite` or `repair snapshots` run did.
#[derive(Debug, Default, Serialize)]
pub struct RewriteReport {
    pub dry_run: bool,
    /// Snapshots looked at.
    pub snapshots: usize,
    /// Snapshots left as they were: nothing in them changed.
    pub unchanged: usize,
    pub rewritten: Vec<RewrittenSnapshot>,
    pub unrepairable: Vec<Unrepairable>,
    /// New tree blobs stored (or, in a dry run, that would be).
    pub trees_written: usize,
    pub packs_written: usize,
    /// Snapshots that could not be read at all (only when all were chosen).
    pub unreadable: Vec<(String, String)>,
}

/// What decides which entries go.
enum Rule<'a> {
    Exclude { rules: &'a Exclusions },
    Repair,
}

/// The result of rewriting one directory: its new tree, and what was left
/// out below it (paths relative to it).
type Rewritten = (Id, Arc<Vec<(Vec<u8>, String)>>);

struct Rewriter<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    rule: Rule<'a>,
    store: bool,
    memo: HashMap<(Id, Vec<u8>), Rewritten>,
    trees: Packer,
    queued: HashSet<Id>,
    packs: Vec<IndexedPack>,
    trees_written: usize,
}

impl<'a> Rewriter<'a> {
    fn new(repo: &'a Repository, index: &'a MasterIndex, rule: Rule<'a>, store: bool) -> Rewriter<'a> {
        Rewriter {
            repo,
            index,
            rule,
            store,
            memo: HashMap::new(),
            trees: Packer::new(PipelineOptions::default().tree_pack_size.max(1)),
            queued: HashSet::new(),
            packs: Vec::new(),
            trees_written: 0,
        }
    }

    /// Why `node` at absolute path `abs` is left out, if it is.
    fn verdict(&self, abs: &[u8], node: &Node) -> Option<String> {
        match &self.rule {
            Rule::Exclude { rules } => {
                let is_dir = node.kind == NodeKind::Dir;
                rules.matches_path(Path::new(std::ffi::OsStr::from_bytes(abs)), is_dir).map(|r| r.to_string())
            }
            Rule::Repair => {
                if node.kind != NodeKind::File {
                    return None;
                }
                let missing = node
                    .content
                    .iter()
                    .filter(|b| self.index.lookup(b).is_none_or(|l| l.blob_type != BlobType::Data))
                    .count();
                (missing > 0).then(|| {
                    format!("{missing} of its {} data blobs are missing; the file is removed", node.content.len())
                })
            }
        }
    }

    /// Stores a directory's new tree (split as the archiver splits one too
    /// large for a blob) and returns its id.
    async fn store_tree(&mut self, tree: &Tree) -> Result<Id, RepoError> {
        let parts = tree.encode_split(MAX_BLOB_LEN as usize);
        if parts.len() == 1 {
            return self.store_blob(&parts[0]).await;
        }
        let mut ids = Vec::with_capacity(parts.len());
        for p in &parts {
            ids.push(self.store_blob(p).await?);
        }
        self.store_blob(&encode_part_list(&ids)).await
    }

    async fn store_blob(&mut self, raw: &[u8]) -> Result<Id, RepoError> {
        let id = self.repo.keys().blob_id(BlobType::Tree, raw);
        if self.index.contains(&id) || !self.queued.insert(id) {
            return Ok(id);
        }
        self.trees_written += 1;
        if !self.store {
            return Ok(id);
        }
        let sealed = self.repo.seal_blob_with_id(BlobType::Tree, id, raw)?;
        self.trees.add(BlobType::Tree, id, &sealed.sealed, sealed.raw_len);
        if self.trees.is_full() {
            self.flush().await?;
        }
        Ok(id)
    }

    async fn flush(&mut self) -> Result<(), RepoError> {
        if self.trees.is_empty() {
            return Ok(());
        }
        let fp = self.trees.finish(self.repo.keys(), self.repo.repo_id());
        let size = fp.data.len() as u64;
        self.repo.backend().put(ObjectKind::Pack, &fp.id, fp.data).await?;
        tracing::info!(pack = %fp.id.short(), size, blobs = fp.blobs.len(), "pack of rewritten trees uploaded");
        self.packs.push(IndexedPack { id: fp.id, size, blobs: fp.blobs });
        Ok(())
    }

    /// Rewrites the directory `tree` found at absolute path `abs`
    /// (`abs` is empty for a snapshot's root, whose entries stand for its
    /// source paths: `sources` maps each root entry's name to its path).
    fn rewrite<'s>(
        &'s mut self,
        tree_id: Id,
        abs: Vec<u8>,
        sources: &'s HashMap<Vec<u8>, Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<Rewritten, RepoError>> + Send + 's>>
    where
        'a: 's,
    {
        Box::pin(async move {
            let key_path = match self.rule {
                Rule::Exclude { .. } => abs.clone(),
                Rule::Repair => Vec::new(),
            };
            if let Some(done) = self.memo.get(&(tree_id, key_path.clone())) {
                return Ok(done.clone());
            }
            let tree = match self.repo.load_tree(self.index, &tree_id).await {
                Ok(t) => t,
                Err(e) => match self.rule {
                    // The root's failure is the caller's to judge; storage
                    // that fails for another reason is no damage.
                    Rule::Repair if !abs.is_empty() && is_damage(&e) => {
                        let empty = self.store_tree(&Tree::default()).await?;
                        let why = format!("the directory cannot be read ({e}); replaced by an empty directory");
                        return Ok((empty, Arc::new(vec![(Vec::new(), why)])));
                    }
                    _ => return Err(e),
                },
            };
            let mut removed: Vec<(Vec<u8>, String)> = Vec::new();
            let mut nodes = Vec::with_capacity(tree.nodes.len());
            let mut changed = false;
            for mut node in tree.nodes {
                let child_abs = if abs.is_empty() {
                    sources.get(&node.name).cloned().unwrap_or_else(|| join_path(b"", &node.name))
                } else {
                    join_path(&abs, &node.name)
                };
                if let Some(why) = self.verdict(&child_abs, &node) {
                    removed.push((node.name.clone(), why));
                    changed = true;
                    continue;
                }
                if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                    let (new_sub, below) = self.rewrite(sub, child_abs, sources).await?;
                    removed.extend(below.iter().map(|(p, why)| (join_rel(&node.name, p), why.clone())));
                    if new_sub != sub {
                        node.subtree = Some(new_sub);
                        changed = true;
                    }
                }
                nodes.push(node);
            }
            let new_id = if changed { self.store_tree(&Tree { nodes }).await? } else { tree_id };
            let done: Rewritten = (new_id, Arc::new(removed));
            self.memo.insert((tree_id, key_path), done.clone());
            Ok(done)
        })
    }
}

/// Whether `e` says the data is gone or damaged (rather than that storage
/// could not be asked).
fn is_damage(e: &RepoError) -> bool {
    match e {
        RepoError::Damaged { .. } => true,
        RepoError::Backend(b) => b.is_not_found(),
        _ => false,
    }
}

/// `name/rest`, or `name` when `rest` is empty.
fn join_rel(name: &[u8], rest: &[u8]) -> Vec<u8> {
    if rest.is_empty() {
        name.to_vec()
    } else {
        join_path(name, rest)
    }
}

/// Each root entry's name mapped to the source path it stands for.
fn sources_of(snap: &Snapshot) -> HashMap<Vec<u8>, Vec<u8>> {
    snap.paths
        .iter()
        .map(|p| {
            let name = p.rsplit(|&b| b == b'/').find(|c| !c.is_empty()).unwrap_or(p).to_vec();
            (name, p.clone())
        })
        .collect()
}

/// Rewrites the chosen snapshots without the entries `exclusions` matches.
pub async fn rewrite(
    repo: &Repository,
    target: &RewriteTarget,
    exclusions: &Exclusions,
) -> Result<RewriteReport, RepoError> {
    run(repo, target, Rule::Exclude { rules: exclusions }, "rewrite").await
}

/// Repairs the chosen snapshots: what cannot be read is left out.
pub async fn repair_snapshots(repo: &Repository, target: &RewriteTarget) -> Result<RewriteReport, RepoError> {
    run(repo, target, Rule::Repair, "repaired").await
}

async fn run(repo: &Repository, target: &RewriteTarget, rule: Rule<'_>, tag: &str) -> Result<RewriteReport, RepoError> {
    let guard = lock::acquire(repo, target.forget && !target.dry_run).await?;
    let result = run_locked(repo, &guard, target, rule, tag).await;
    guard.release().await;
    result
}

async fn run_locked(
    repo: &Repository,
    guard: &LockGuard,
    target: &RewriteTarget,
    rule: Rule<'_>,
    tag: &str,
) -> Result<RewriteReport, RepoError> {
    let selection = super::select::select(repo, &target.specs, &target.filter).await?;
    let index = match rule {
        // A repair judges blobs by the index: every readable index object counts.
        Rule::Repair => repo.load_index_lenient().await?,
        Rule::Exclude { .. } => repo.load_index().await?,
    };
    let mut report = RewriteReport {
        dry_run: target.dry_run,
        snapshots: selection.snapshots.len(),
        unreadable: selection.unreadable.iter().map(|(id, e)| (id.to_hex(), e.to_string())).collect(),
        ..Default::default()
    };
    let is_repair = matches!(rule, Rule::Repair);
    let mut rewriter = Rewriter::new(repo, &index, rule, !target.dry_run);
    let mut planned: Vec<(Id, Snapshot, Vec<RemovedEntry>)> = Vec::new();
    let mut doomed: Vec<Id> = Vec::new();
    for (id, snap) in &selection.snapshots {
        let sources = sources_of(snap);
        let (root, removed) = match rewriter.rewrite(snap.tree, Vec::new(), &sources).await {
            Ok(r) => r,
            Err(e) if is_repair && is_damage(&e) => {
                tracing::warn!(snapshot = %id.short(), error = %e, "the snapshot's root tree cannot be read");
                report.unrepairable.push(Unrepairable {
                    snapshot: id.to_hex(),
                    reason: e.to_string(),
                    forgotten: false,
                });
                if target.forget {
                    doomed.push(*id);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if root == snap.tree {
            report.unchanged += 1;
            continue;
        }
        let mut tags = snap.tags.clone();
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
        let new = Snapshot { tree: root, tags, original: snap.original.or(Some(*id)), ..snap.clone() };
        let removed = removed
            .iter()
            .map(|(p, why)| RemovedEntry { path: String::from_utf8_lossy(p).into_owned(), reason: why.clone() })
            .collect();
        planned.push((*id, new, removed));
    }
    report.trees_written = rewriter.trees_written;
    if target.dry_run {
        report.rewritten = planned
            .into_iter()
            .map(|(id, _, removed)| RewrittenSnapshot { original: id.to_hex(), new: None, removed, forgotten: false })
            .collect();
        return Ok(report);
    }

    // 1. The new trees' packs, then their index.
    rewriter.flush().await?;
    let packs = std::mem::take(&mut rewriter.packs);
    report.packs_written = packs.len();
    if !packs.is_empty() {
        guard.ensure_held().await?;
        repo.write_index(packs, Vec::new()).await?;
    }
    // 2. The new snapshots; one saved by an interrupted run is not stored twice.
    let stored: HashSet<Id> = if planned.is_empty() {
        HashSet::new()
    } else {
        repo.backend().list(ObjectKind::Snapshot).await?.into_iter().map(|o| o.id).collect()
    };
    for (old_id, new, removed) in planned {
        let plain = new.encode();
        let known = repo.keys().object_id(ObjectKind::Snapshot, &plain);
        let new_id = if stored.contains(&known) {
            known
        } else {
            guard.ensure_held().await?;
            repo.save_object(ObjectKind::Snapshot, &plain).await?
        };
        tracing::info!(original = %old_id.short(), new = %new_id.short(), "snapshot rewritten");
        report.rewritten.push(RewrittenSnapshot {
            original: old_id.to_hex(),
            new: Some(new_id.to_hex()),
            removed,
            forgotten: false,
        });
    }
    // 3. Only then the originals.
    if target.forget {
        for r in &mut report.rewritten {
            if let Some(id) = Id::from_stored_name(&r.original) {
                guard.ensure_fresh()?;
                repo.backend().delete(ObjectKind::Snapshot, &id).await?;
                r.forgotten = true;
            }
        }
        for id in doomed {
            guard.ensure_fresh()?;
            repo.backend().delete(ObjectKind::Snapshot, &id).await?;
            if let Some(u) = report.unrepairable.iter_mut().find(|u| u.snapshot == id.to_hex()) {
                u.forgotten = true;
            }
        }
    }
    Ok(report)
}
