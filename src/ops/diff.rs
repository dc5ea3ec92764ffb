//! `diff`: what changed between two snapshots, or between two directories
//! inside them. Both sides are walked together in name order; a subtree whose
//! tree id is the same on both sides is identical and is skipped without
//! being read, which keeps diffs of mostly unchanged snapshots fast.

use std::collections::VecDeque;

use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::format::Id;
use crate::repo::index::MasterIndex;
use crate::repo::lock;
use crate::repo::{RepoError, Repository};

use super::inspect::{limit_error, push_name, resolve_path, Target};

/// How an entry differs between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Only on the second side.
    Added,
    /// Only on the first side.
    Removed,
    /// Content changed: a file's data or a device's number.
    Modified,
    /// The entry became another kind of entry (file, directory, symlink, ...).
    TypeChanged,
    /// Only metadata changed: mode, owner, mtime, symlink target or xattrs.
    Metadata,
}

impl ChangeKind {
    /// The one-letter mark shown before a path (as restic shows it).
    pub fn symbol(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::TypeChanged => 'T',
            ChangeKind::Metadata => 'U',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "modified",
            ChangeKind::TypeChanged => "type_changed",
            ChangeKind::Metadata => "metadata",
        }
    }
}

/// One changed entry.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: ChangeKind,
    /// Path from the compared roots, components joined by `/`.
    pub path: Vec<u8>,
    /// The entry on the first side, if it is there.
    pub old: Option<Node>,
    /// The entry on the second side, if it is there.
    pub new: Option<Node>,
    /// For metadata changes, which fields differ: `mode`, `uid`, `gid`,
    /// `mtime`, `symlink_target`, `xattrs`.
    pub fields: Vec<&'static str>,
}

impl Change {
    /// The entry as it is after the change (before it, for a removal).
    pub fn node(&self) -> &Node {
        self.new.as_ref().or(self.old.as_ref()).expect("a change has at least one side")
    }
}

/// Counts of changed entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffTotals {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub type_changed: u64,
    pub metadata_changed: u64,
    /// Size of the files added.
    pub bytes_added: u64,
    /// Size of the files removed.
    pub bytes_removed: u64,
    /// Directories found identical by tree id and not read.
    pub identical_subtrees_skipped: u64,
}

impl DiffTotals {
    fn count(&mut self, c: &Change) {
        let file_size = |n: &Option<Node>| n.as_ref().filter(|n| n.kind == NodeKind::File).map_or(0, |n| n.size);
        match c.kind {
            ChangeKind::Added => {
                self.added += 1;
                self.bytes_added += file_size(&c.new);
            }
            ChangeKind::Removed => {
                self.removed += 1;
                self.bytes_removed += file_size(&c.old);
            }
            ChangeKind::Modified => self.modified += 1,
            ChangeKind::TypeChanged => self.type_changed += 1,
            ChangeKind::Metadata => self.metadata_changed += 1,
        }
    }
}

/// One side of a diff: a snapshot and a directory inside it.
pub struct DiffSide {
    /// `latest`, an id or a prefix.
    pub spec: String,
    /// Path inside the snapshot (empty: its root).
    pub subpath: Vec<Vec<u8>>,
}

/// The snapshots compared and the totals.
pub struct DiffOutcome {
    pub a: (Id, Snapshot),
    pub b: (Id, Snapshot),
    pub totals: DiffTotals,
}

fn subtree(n: &Node) -> Option<Id> {
    n.subtree.filter(|_| n.kind == NodeKind::Dir)
}

/// Compares two entries of the same name; `None` when they are the same.
pub fn compare(path: &[u8], old: Option<&Node>, new: Option<&Node>) -> Option<Change> {
    let change = |kind, fields| Change { kind, path: path.to_vec(), old: old.cloned(), new: new.cloned(), fields };
    let (o, n) = match (old, new) {
        (None, None) => return None,
        (None, Some(_)) => return Some(change(ChangeKind::Added, Vec::new())),
        (Some(_), None) => return Some(change(ChangeKind::Removed, Vec::new())),
        (Some(o), Some(n)) => (o, n),
    };
    if o.kind != n.kind {
        return Some(change(ChangeKind::TypeChanged, Vec::new()));
    }
    let content_changed = match o.kind {
        NodeKind::File => o.content != n.content || o.size != n.size,
        NodeKind::CharDevice | NodeKind::BlockDevice => o.rdev != n.rdev,
        _ => false,
    };
    if content_changed {
        return Some(change(ChangeKind::Modified, Vec::new()));
    }
    let mut fields = Vec::new();
    if o.mode != n.mode {
        fields.push("mode");
    }
    if o.uid != n.uid {
        fields.push("uid");
    }
    if o.gid != n.gid {
        fields.push("gid");
    }
    // A directory's mtime follows its contents; it only counts on its own
    // when the contents are the same.
    if o.mtime_ns != n.mtime_ns && (o.kind != NodeKind::Dir || o.subtree == n.subtree) {
        fields.push("mtime");
    }
    if o.symlink_target != n.symlink_target {
        fields.push("symlink_target");
    }
    if o.xattrs != n.xattrs {
        fields.push("xattrs");
    }
    (!fields.is_empty()).then(|| change(ChangeKind::Metadata, fields))
}

type Pair = (Option<Node>, Option<Node>);

/// Pairs up the entries of two directories by name, in name order.
fn merge(mut a: Vec<Node>, mut b: Vec<Node>) -> VecDeque<Pair> {
    a.sort_by(|x, y| x.name.cmp(&y.name));
    b.sort_by(|x, y| x.name.cmp(&y.name));
    let mut out = VecDeque::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        out.push_back(match order {
            std::cmp::Ordering::Less => (a.next(), None),
            std::cmp::Ordering::Greater => (None, b.next()),
            std::cmp::Ordering::Equal => (a.next(), b.next()),
        });
    }
    out
}

async fn entries(repo: &Repository, index: &MasterIndex, tree: Option<Id>) -> Result<Vec<Node>, RepoError> {
    match tree {
        Some(id) => Ok(repo.load_tree(index, &id).await?.nodes),
        None => Ok(Vec::new()),
    }
}

/// Compares the trees `a` and `b`, passing each change to `f` in name order,
/// a directory before its contents. Contents of added or removed directories
/// are reported entry by entry.
pub async fn diff_trees<E, F>(repo: &Repository, index: &MasterIndex, a: &Id, b: &Id, mut f: F) -> Result<DiffTotals, E>
where
    E: From<RepoError>,
    F: FnMut(&Change) -> Result<(), E>,
{
    let mut totals = DiffTotals::default();
    if a == b {
        totals.identical_subtrees_skipped += 1;
        return Ok(totals);
    }
    let root = merge(entries(repo, index, Some(*a)).await?, entries(repo, index, Some(*b)).await?);
    // One path; per directory on it, its length and the pairs left.
    let mut path: Vec<u8> = Vec::new();
    let mut stack: Vec<(usize, VecDeque<Pair>)> = vec![(0, root)];
    while let Some((dir_len, pairs)) = stack.last_mut() {
        let Some((old, new)) = pairs.pop_front() else {
            stack.pop();
            continue;
        };
        path.truncate(*dir_len);
        let name = &new.as_ref().or(old.as_ref()).expect("merge yields at least one side").name;
        push_name(&mut path, name);
        if let Err(e) = crate::format::check_entry_limits(stack.len(), path.len()) {
            return Err(limit_error(&path, e).into());
        }
        if let Some(change) = compare(&path, old.as_ref(), new.as_ref()) {
            totals.count(&change);
            f(&change)?;
        }
        let (sub_a, sub_b) = (old.as_ref().and_then(subtree), new.as_ref().and_then(subtree));
        if sub_a.is_none() && sub_b.is_none() {
            continue;
        }
        if sub_a == sub_b {
            totals.identical_subtrees_skipped += 1;
            continue;
        }
        let pairs = merge(entries(repo, index, sub_a).await?, entries(repo, index, sub_b).await?);
        stack.push((path.len(), pairs));
    }
    Ok(totals)
}

async fn side_root(repo: &Repository, index: &MasterIndex, side: &DiffSide) -> Result<(Id, Snapshot, Id), RepoError> {
    let (id, snap) = repo.find_snapshot(&side.spec).await?;
    match resolve_path(repo, index, &snap.tree, &side.subpath).await? {
        Target::Dir(tree) => Ok((id, snap, tree)),
        Target::Entry(_) => Err(RepoError::Invalid(format!(
            "`{}` in snapshot {} is not a directory",
            String::from_utf8_lossy(&side.subpath.join(&b'/')),
            id.short()
        ))),
    }
}

/// Compares two snapshots (or directories inside them) under a shared lock.
pub async fn diff<E, F>(repo: &Repository, a: &DiffSide, b: &DiffSide, f: F) -> Result<DiffOutcome, E>
where
    E: From<RepoError>,
    F: FnMut(&Change) -> Result<(), E>,
{
    let guard = lock::acquire(repo, false).await?;
    let result: Result<_, E> = async {
        let index = repo.load_index().await?;
        let (a_id, a_snap, a_tree) = side_root(repo, &index, a).await?;
        let (b_id, b_snap, b_tree) = side_root(repo, &index, b).await?;
        let totals = diff_trees(repo, &index, &a_tree, &b_tree, f).await?;
        Ok(DiffOutcome { a: (a_id, a_snap), b: (b_id, b_snap), totals })
    }
    .await;
    guard.release().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: u8) -> Node {
        let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::File);
        n.content = vec![Id([content; 32])];
        n.size = 10;
        n.mode = 0o644;
        n
    }

    #[test]
    fn classifies_changes() {
        let a = file("f", 1);
        assert!(compare(b"f", Some(&a), Some(&a)).is_none());
        assert_eq!(compare(b"f", None, Some(&a)).unwrap().kind, ChangeKind::Added);
        assert_eq!(compare(b"f", Some(&a), None).unwrap().kind, ChangeKind::Removed);
        let mut b = file("f", 2);
        b.mode = 0o600;
        assert_eq!(compare(b"f", Some(&a), Some(&b)).unwrap().kind, ChangeKind::Modified);
        let mut c = a.clone();
        c.mode = 0o600;
        c.mtime_ns = 5;
        c.inode = 99;
        let ch = compare(b"f", Some(&a), Some(&c)).unwrap();
        assert_eq!((ch.kind, ch.fields), (ChangeKind::Metadata, vec!["mode", "mtime"]));
        let mut d = Node::new(b"f".to_vec(), NodeKind::Dir);
        d.subtree = Some(Id([3; 32]));
        assert_eq!(compare(b"f", Some(&a), Some(&d)).unwrap().kind, ChangeKind::TypeChanged);
        let mut d2 = d.clone();
        d2.mtime_ns = 7;
        assert_eq!(compare(b"f", Some(&d), Some(&d2)).unwrap().fields, vec!["mtime"]);
        d2.subtree = Some(Id([4; 32]));
        assert!(compare(b"f", Some(&d), Some(&d2)).is_none(), "a directory's mtime follows its contents");
    }

    #[test]
    fn merges_by_name() {
        let m = merge(vec![file("b", 1), file("a", 1)], vec![file("c", 1), file("b", 2)]);
        let names: Vec<(bool, bool)> = m.iter().map(|(o, n)| (o.is_some(), n.is_some())).collect();
        assert_eq!(names, vec![(true, false), (true, true), (false, true)]);
    }
}
