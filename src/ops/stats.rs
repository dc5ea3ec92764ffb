//! `stats`: how big the chosen snapshots are when restored, how much unique
//! data they reference, and what the repository stores. Walks every chosen
//! snapshot; a subtree already counted is taken from a memo by tree id (unless
//! it holds hard links, whose sizes count once per snapshot), so repeated
//! snapshots of mostly unchanged data cost little.

use std::collections::{HashMap, HashSet};

use crate::format::tree::{Node, NodeKind};
use crate::format::{BlobType, Id, ObjectKind};
use crate::repo::index::MasterIndex;
use crate::repo::lock;
use crate::repo::{RepoError, Repository};

use super::inspect::{limit_error, push_name, select_snapshots};

/// Which total `stats` leads with (restic's modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsMode {
    /// The size of the files as restored, summed over the snapshots.
    #[default]
    RestoreSize,
    /// The blobs the snapshots reference, each counted once.
    RawData,
}

impl std::str::FromStr for StatsMode {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "restore-size" => Ok(StatsMode::RestoreSize),
            "raw-data" => Ok(StatsMode::RawData),
            _ => Err(RepoError::Invalid(format!("unknown stats mode `{s}` (restore-size or raw-data)"))),
        }
    }
}

/// What `stats` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StatsReport {
    pub mode: StatsMode,
    /// The mode's headline: restore size, or the stored size of the referenced blobs.
    pub total_size: u64,
    /// Files (restore-size) or blobs (raw-data) behind `total_size`.
    pub total_count: u64,
    pub snapshots: u64,
    /// Regular files in the snapshots, summed over snapshots.
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, FIFOs, sockets and devices.
    pub others: u64,
    /// Size of the files as restored (hard links counted once per snapshot).
    pub restore_size: u64,
    /// Unique data blobs referenced and their plaintext size: the data after deduplication.
    pub data_blobs: u64,
    pub dedup_size: u64,
    /// Unique tree blobs referenced and their plaintext size.
    pub tree_blobs: u64,
    pub tree_size: u64,
    /// What the referenced blobs take in packs (compressed and sealed).
    pub referenced_stored_size: u64,
    /// Referenced blobs that the index does not know.
    pub missing_blobs: u64,
    /// Packs on storage and their total size: the repository as stored.
    pub packs: u64,
    pub stored_size: u64,
    /// What the storage holds in its own unit (a Telegram chat: its
    /// messages; a directory: its object files), where it can say.
    pub stored_items: Option<crate::backend::StoredItems>,
    /// Plaintext of the referenced blobs over their stored size.
    pub compression_ratio: Option<f64>,
    /// Restore size over deduplicated size.
    pub dedup_ratio: Option<f64>,
}

/// Totals of one subtree.
#[derive(Clone, Copy, Default)]
struct Sub {
    files: u64,
    dirs: u64,
    others: u64,
    bytes: u64,
    /// Holds files with more than one link: not memoized.
    hardlinks: bool,
}

impl Sub {
    fn add(&mut self, o: &Sub) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.others += o.others;
        self.bytes += o.bytes;
        self.hardlinks |= o.hardlinks;
    }
}

/// A directory being counted: its entries still to visit.
struct Frame {
    tree: Id,
    nodes: std::vec::IntoIter<Node>,
    /// Length of the walk's path at this directory.
    path_len: usize,
    acc: Sub,
}

#[derive(Default)]
struct Walker {
    memo: HashMap<Id, Sub>,
    trees: HashSet<Id>,
    data: HashSet<Id>,
}

impl Walker {
    async fn open(
        &mut self,
        repo: &Repository,
        index: &MasterIndex,
        tree: Id,
        path_len: usize,
    ) -> Result<Frame, RepoError> {
        let (t, parts) = repo.load_tree_parts(index, &tree).await?;
        if self.trees.insert(tree) {
            self.trees.extend(parts);
            for n in t.nodes.iter().filter(|n| n.kind == NodeKind::File) {
                self.data.extend(n.content.iter().copied());
            }
        }
        Ok(Frame { tree, nodes: t.nodes.into_iter(), path_len, acc: Sub::default() })
    }

    /// Totals of the snapshot whose root tree is `root`.
    async fn snapshot(&mut self, repo: &Repository, index: &MasterIndex, root: Id) -> Result<Sub, RepoError> {
        if let Some(s) = self.memo.get(&root) {
            return Ok(*s);
        }
        let mut inodes: HashSet<(u64, u64)> = HashSet::new();
        let mut path: Vec<u8> = Vec::new();
        let mut stack = vec![self.open(repo, index, root, 0).await?];
        loop {
            let depth = stack.len();
            let top = stack.last_mut().expect("the root frame is popped last");
            let Some(node) = top.nodes.next() else {
                let done = stack.pop().expect("non-empty");
                if !done.acc.hardlinks {
                    self.memo.insert(done.tree, done.acc);
                }
                match stack.last_mut() {
                    Some(parent) => parent.acc.add(&done.acc),
                    None => return Ok(done.acc),
                }
                continue;
            };
            path.truncate(top.path_len);
            push_name(&mut path, &node.name);
            if let Err(e) = crate::format::check_entry_limits(depth, path.len()) {
                return Err(limit_error(&path, e));
            }
            match node.kind {
                NodeKind::File => {
                    top.acc.files += 1;
                    if node.links > 1 {
                        top.acc.hardlinks = true;
                        if inodes.insert((node.device, node.inode)) {
                            top.acc.bytes += node.size;
                        }
                    } else {
                        top.acc.bytes += node.size;
                    }
                }
                NodeKind::Dir => {
                    top.acc.dirs += 1;
                    if let Some(sub) = node.subtree {
                        match self.memo.get(&sub) {
                            Some(s) => top.acc.add(&s.clone()),
                            None => {
                                let frame = self.open(repo, index, sub, path.len()).await?;
                                stack.push(frame);
                            }
                        }
                    }
                }
                _ => top.acc.others += 1,
            }
        }
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Gathers statistics for the snapshots in `specs` (all when empty) under a
/// shared lock. Returns the report and the snapshots that could not be read.
pub async fn stats(
    repo: &Repository,
    specs: &[String],
    mode: StatsMode,
) -> Result<(StatsReport, Vec<(Id, RepoError)>), RepoError> {
    let guard = lock::acquire(repo, false).await?;
    let result = async {
        let selection = select_snapshots(repo, specs).await?;
        let index = repo.load_index().await?;
        let mut walker = Walker::default();
        let mut r = StatsReport { mode, snapshots: selection.snapshots.len() as u64, ..Default::default() };
        for (_, snap) in &selection.snapshots {
            let s = walker.snapshot(repo, &index, snap.tree).await?;
            r.files += s.files;
            r.dirs += s.dirs;
            r.others += s.others;
            r.restore_size += s.bytes;
        }
        let mut raw_total = 0u64;
        for (ids, blob_type) in [(&walker.data, BlobType::Data), (&walker.trees, BlobType::Tree)] {
            for id in ids {
                let Some(loc) = index.lookup(id).filter(|l| l.blob_type == blob_type) else {
                    r.missing_blobs += 1;
                    continue;
                };
                match blob_type {
                    BlobType::Data => {
                        r.data_blobs += 1;
                        r.dedup_size += loc.raw_len as u64;
                    }
                    BlobType::Tree => {
                        r.tree_blobs += 1;
                        r.tree_size += loc.raw_len as u64;
                    }
                }
                raw_total += loc.raw_len as u64;
                r.referenced_stored_size += loc.length as u64;
            }
        }
        for p in repo.backend().list(ObjectKind::Pack).await? {
            r.packs += 1;
            r.stored_size += p.size;
        }
        r.stored_items = repo.backend().stored_items().await?;
        r.compression_ratio = ratio(raw_total, r.referenced_stored_size);
        r.dedup_ratio = ratio(r.restore_size, r.dedup_size);
        (r.total_size, r.total_count) = match mode {
            StatsMode::RestoreSize => (r.restore_size, r.files),
            StatsMode::RawData => (r.referenced_stored_size, r.data_blobs + r.tree_blobs),
        };
        Ok((r, selection.unreadable))
    }
    .await;
    guard.release().await;
    result
}
