//! Trees for a restore: loading one through the repository (asking again
//! while storage fails transiently), fetching the trees that are needed soon
//! in merged ranged reads (grouped by pack, as file content is) so that a
//! restore from remote storage does not cost a round trip per directory, and
//! the count of a snapshot's entries that a restore checks before it writes
//! anything (format.md §22), and the count of what lies below a directory
//! the restore refuses, so that the report names how much was left out.
//!
//! Fetched trees land in the local cache, from which the repository's tree
//! loading then takes them: trees are decoded in one place only. Without a
//! cache, trees are loaded one by one.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::ErrorClass;
use crate::format::tree::{validate_name, NodeKind, Tree};
use crate::format::{check_entry_limits, Id, ObjectKind};
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};

use super::content::{RANGE_ATTEMPTS, RANGE_RETRY_DELAY};
use super::ranges::{merge_ranges, Span, MAX_RANGE_GAP, MAX_RANGE_LEN};
use super::{display_limited, pop_name, push_name};

/// Most trees fetched ahead at once: the subdirectories of the directory
/// being entered and theirs, breadth first, up to this many, in as few
/// ranged reads as their places in their packs allow.
pub(super) const TREES_AHEAD: usize = 256;

#[derive(Clone)]
pub struct TreeLoader {
    repo: Repository,
    index: Arc<MasterIndex>,
    reads_in_flight: usize,
}

impl TreeLoader {
    pub fn new(repo: &Repository, index: Arc<MasterIndex>, reads_in_flight: usize) -> TreeLoader {
        TreeLoader { repo: repo.clone(), index, reads_in_flight: reads_in_flight.max(1) }
    }

    /// Loads tree `id` through the repository; a tree that storage failed to
    /// give transiently is asked for again, as data ranges are.
    pub async fn load(&self, id: &Id) -> Result<Tree, RepoError> {
        let mut attempt = 1;
        loop {
            let tree = self.repo.load_tree(&self.index, id).await;
            if let Err(RepoError::Backend(e)) = &tree {
                if let (ErrorClass::Transient(after), true) = (e.class(), attempt < RANGE_ATTEMPTS) {
                    let pause = RANGE_RETRY_DELAY * (1 << (attempt - 1));
                    tokio::time::sleep(after.map_or(pause, |a| a.max(pause))).await;
                    attempt += 1;
                    continue;
                }
            }
            return tree;
        }
    }

    /// Fetches the trees among `ids` that the local cache lacks into it, and
    /// then, round by round, the subtrees of the trees it just fetched, up
    /// to [`TREES_AHEAD`] trees in all: each round is looked up in the
    /// index, grouped by pack and read in merged ranges. A failure here is
    /// only logged; loading the tree reports it.
    pub async fn fetch_ahead(&self, ids: impl IntoIterator<Item = Id>) {
        let Some(cache) = self.repo.cache() else { return };
        let mut seen = HashSet::new();
        let mut budget = TREES_AHEAD;
        let mut round: Vec<Id> = ids.into_iter().collect();
        while !round.is_empty() && budget > 0 {
            let missing: Vec<Id> = round
                .into_iter()
                .filter(|id| seen.insert(*id) && !matches!(cache.tree(id), Ok(Some(_))) && self.index.contains(id))
                .take(budget)
                .collect();
            if missing.is_empty() {
                break;
            }
            budget -= missing.len();
            self.read_into_cache(&missing).await;
            // The subdirectories of what was fetched are the next round.
            let mut next = Vec::new();
            for id in &missing {
                if next.len() >= budget {
                    break;
                }
                if !matches!(cache.tree(id), Ok(Some(_))) {
                    continue;
                }
                if let Ok(tree) = self.repo.load_tree(&self.index, id).await {
                    let subtrees = tree.nodes.iter().filter(|n| n.kind == NodeKind::Dir).filter_map(|n| n.subtree);
                    next.extend(subtrees);
                }
            }
            round = next;
        }
    }

    /// Reads trees `ids` in merged ranges into the local cache.
    async fn read_into_cache(&self, ids: &[Id]) {
        let mut by_pack: HashMap<Id, Vec<(Span, Id)>> = HashMap::new();
        for id in ids {
            if let Some(loc) = self.index.lookup(id) {
                let span = Span { offset: u64::from(loc.offset), len: u64::from(loc.length) };
                by_pack.entry(loc.pack).or_default().push((span, *id));
            }
        }
        let mut reads = Vec::new();
        for (pack, mut blobs) in by_pack {
            blobs.sort_by_key(|(span, _)| span.offset);
            let spans: Vec<Span> = blobs.iter().map(|(span, _)| *span).collect();
            for range in merge_ranges(&spans, MAX_RANGE_GAP, MAX_RANGE_LEN) {
                reads.push((pack, range.span, blobs[range.blobs].to_vec()));
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut reads = reads.into_iter();
        loop {
            while tasks.len() < self.reads_in_flight {
                let Some((pack, span, blobs)) = reads.next() else { break };
                let repo = self.repo.clone();
                tasks.spawn(async move {
                    let len = u32::try_from(span.len).unwrap_or(u32::MAX);
                    match repo.backend().get_range(ObjectKind::Pack, &pack, span.offset, len).await {
                        Ok(sealed) => {
                            let Some(cache) = repo.cache() else { return };
                            let items = blobs.iter().filter_map(|(blob, id)| {
                                let start = (blob.offset - span.offset) as usize;
                                sealed.get(start..start + blob.len as usize).map(|b| (id, b))
                            });
                            if let Err(e) = cache.put_trees(items) {
                                tracing::debug!(error = %e, "could not cache trees read ahead");
                            }
                        }
                        Err(e) => tracing::debug!(pack = %pack, error = %e, "reading trees ahead failed"),
                    }
                });
            }
            if tasks.join_next().await.is_none() {
                break;
            }
        }
    }
}

/// How many entries lie below directory tree `root`: every entry of every
/// tree under it, a tree reached twice counting twice, with no limit of
/// depth or name applied (they are all left out with the directory that
/// holds them). A tree that cannot be read counts as empty. The count of
/// every subtree is remembered in `known` (up to [`REMEMBERED_SUBTREES`] of
/// them), which the caller keeps across calls, and the count stops past
/// `cap`, which is then returned: a snapshot built of a few shared trees, or
/// many refused directories holding the same subtree, costs a few loads,
/// not one per entry.
pub(super) async fn count_below(loader: &TreeLoader, known: &mut HashMap<Id, u64>, root: Id, cap: u64) -> u64 {
    if let Some(&below) = known.get(&root) {
        return below.min(cap);
    }
    /// A tree being counted: its subdirectories still to count, and the
    /// count reached before its own entries were added.
    struct Open {
        id: Id,
        subtrees: std::vec::IntoIter<Id>,
        counted_before: u64,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut counted = 0u64;
    let mut next = Some(root);
    loop {
        if let Some(id) = next.take() {
            let (entries, subtrees) = match loader.load(&id).await {
                Ok(tree) => {
                    let subtrees: Vec<Id> =
                        tree.nodes.iter().filter(|n| n.kind == NodeKind::Dir).filter_map(|n| n.subtree).collect();
                    (tree.nodes.len() as u64, subtrees)
                }
                Err(_) => (0, Vec::new()),
            };
            stack.push(Open { id, subtrees: subtrees.into_iter(), counted_before: counted });
            counted = counted.saturating_add(entries);
        }
        if counted > cap {
            return cap;
        }
        let Some(top) = stack.last_mut() else { return counted };
        match top.subtrees.next() {
            Some(sub) => match known.get(&sub) {
                Some(&below) => counted = counted.saturating_add(below),
                None => next = Some(sub),
            },
            None => {
                let done = stack.pop().expect("a tree is open");
                if known.len() < REMEMBERED_SUBTREES {
                    known.insert(done.id, counted - done.counted_before);
                }
                if stack.is_empty() {
                    return counted;
                }
            }
        }
    }
}

/// What the count of a snapshot found.
pub(super) struct Census {
    /// Bytes of regular file content, by the nodes' sizes.
    pub bytes: u64,
}

/// Most subtrees whose counts are remembered: enough for the few trees a
/// snapshot built of shared subtrees repeats, bounded for a snapshot of
/// many distinct directories.
const REMEMBERED_SUBTREES: usize = 1 << 16;

/// One directory of the count: its tree's entries still to visit, and what
/// was counted when it was entered.
struct CountFrame {
    nodes: std::vec::IntoIter<crate::format::tree::Node>,
    /// (tree, depth of its entries, path length of the directory) when the
    /// count of this subtree may be remembered.
    key: Option<(Id, usize, usize)>,
    entries_before: u64,
    bytes_before: u64,
    name_len: usize,
    /// Subdirectories still to come whose trees were already read ahead.
    ahead: usize,
}

/// The trees to read ahead when directory subtree `next` is needed and
/// `rest` are the entries after it: `next` and those of the following
/// subdirectories, up to [`TREES_AHEAD`] in all.
pub(super) fn trees_ahead<'a>(next: Id, rest: impl Iterator<Item = &'a crate::format::tree::Node>) -> Vec<Id> {
    let following = rest.filter(|n| n.kind == NodeKind::Dir).filter_map(|n| n.subtree);
    std::iter::once(next).chain(following).take(TREES_AHEAD).collect()
}

/// Counts the entries below `root` as a restore reaches them (every entry
/// of every tree within the limits of format.md §22, a tree reached twice
/// counting twice), and fails once there are more than `max_entries`,
/// naming the directory where the count was passed. `base` is the depth
/// and path length (with its trailing `/`) of the restored root. Subtrees
/// met again at the same depth and path length are counted once.
pub(super) async fn count_entries(
    loader: &TreeLoader,
    root: &Tree,
    base: (usize, usize),
    max_entries: u64,
) -> Result<Census, RepoError> {
    let mut remembered: HashMap<(Id, usize, usize), (u64, u64)> = HashMap::new();
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut dir = PathBuf::new();
    let mut stack: Vec<CountFrame> = Vec::new();
    let over = |dir: &PathBuf| {
        RepoError::Invalid(format!(
            "the snapshot has more than {max_entries} entries (reached in {}); refusing to restore it",
            display_limited(dir)
        ))
    };
    entries += root.nodes.len() as u64;
    if entries > max_entries {
        return Err(over(&dir));
    }
    stack.push(CountFrame {
        nodes: root.nodes.clone().into_iter(),
        key: None,
        entries_before: 0,
        bytes_before: 0,
        name_len: 0,
        ahead: 0,
    });
    loop {
        let depth = base.0 + stack.len();
        let Some(frame) = stack.last_mut() else { break };
        let Some(node) = frame.nodes.next() else {
            let done = stack.pop().expect("a frame is on the stack");
            if let Some(key) = done.key {
                if remembered.len() < REMEMBERED_SUBTREES {
                    remembered.insert(key, (entries - done.entries_before, bytes - done.bytes_before));
                }
            }
            if !stack.is_empty() {
                pop_name(&mut dir, done.name_len);
            }
            continue;
        };
        if node.kind == NodeKind::File {
            bytes = bytes.saturating_add(node.size);
            continue;
        }
        let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else { continue };
        let path_len = base.1 + dir.as_os_str().len() + usize::from(!dir.as_os_str().is_empty()) + node.name.len();
        if check_entry_limits(depth, path_len).is_err() || validate_name(&node.name).is_err() {
            continue;
        }
        // The entries of this directory are one level deeper.
        let key = (sub, depth + 1, path_len);
        if let Some(&(e, b)) = remembered.get(&key) {
            entries += e;
            bytes = bytes.saturating_add(b);
            if entries > max_entries {
                push_name(&mut dir, &node.name);
                return Err(over(&dir));
            }
            continue;
        }
        if frame.ahead == 0 {
            let ahead = trees_ahead(sub, frame.nodes.as_slice().iter());
            frame.ahead = ahead.len();
            loader.fetch_ahead(ahead).await;
        }
        frame.ahead -= 1;
        let name_len = push_name(&mut dir, &node.name);
        let tree = match loader.load(&sub).await {
            Ok(tree) => tree,
            Err(RepoError::Backend(e)) if e.needs_login() => return Err(RepoError::Backend(e)),
            // Reported by the restore when it reaches this directory.
            Err(_) => {
                pop_name(&mut dir, name_len);
                continue;
            }
        };
        entries += tree.nodes.len() as u64;
        if entries > max_entries {
            return Err(over(&dir));
        }
        let entries_before = entries - tree.nodes.len() as u64;
        stack.push(CountFrame {
            nodes: tree.nodes.into_iter(),
            key: Some(key),
            entries_before,
            bytes_before: bytes,
            name_len,
            ahead: 0,
        });
    }
    Ok(Census { bytes })
}
