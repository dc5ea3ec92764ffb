//! The read-only FUSE view of a repository (`tstor mount`), laid out as
//! restic lays it out: `snapshots/<time>/` with a `latest` link to the
//! newest, `ids/<short id>/`, `hosts/<host>/<time>/` and `tags/<tag>/<time>/`
//! (each with its own `latest`). Below a snapshot's directory are the
//! entries of its trees, loaded when a directory is first looked into
//! (through the tree cache), with the sizes, modes, owners, times, link
//! counts, symlink targets and extended attributes they were stored with;
//! hard links of one snapshot share one inode. A file read is served from
//! the blobs that cover it alone (`blobs`), each read with one ranged read
//! of its pack, and kept in a small cache bounded in bytes, so memory does
//! not follow file size. Nothing here writes to the repository.
//!
//! The view follows the repository as restic's does: when one of its own
//! directories (the root, `snapshots/`, `ids/`, `hosts/…`, `tags/…`) is
//! listed or looked into, the snapshot list is read again, at most once per
//! [`REFRESH_INTERVAL`], and with it the index when snapshots came or went.
//! Those directories keep their inode numbers across a refresh, and the
//! kernel keeps their entries only for [`LAYOUT_TTL`].

pub mod blobs;
pub mod layout;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::format::snapshot::Snapshot;
use crate::format::tree::{device_major, device_minor, validate_name, Node, NodeKind};
use crate::format::Id;
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};
use crate::restorer::trees::TreeLoader;
use blobs::BlobCache;

/// How long the kernel may keep names and attributes inside a snapshot:
/// they never change while mounted.
const TTL: Duration = Duration::from_secs(3600);

/// How long the kernel may keep the entries and attributes of the view's
/// own directories, which a refresh changes.
pub const LAYOUT_TTL: Duration = Duration::from_secs(1);

/// The snapshot list is read again at most this often.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3);

/// Decoded blobs kept for file reads, in bytes (a few of the largest
/// default chunks).
pub const BLOB_CACHE_BYTES: usize = 32 << 20;

/// Ranged reads of trees at once when a directory is first looked into.
const TREE_READS_IN_FLIGHT: usize = 4;

/// The children of a directory, sorted by name.
type Children = Arc<Vec<(Vec<u8>, u64)>>;

/// A file's data blobs and the file offset each ends at.
type FileBlobs = (Arc<Vec<Id>>, Arc<Vec<u64>>);

/// What an inode's content is.
enum Contents {
    /// A directory whose entries are known.
    Dir(Children),
    /// A directory stored as tree `tree`, not yet loaded.
    Tree {
        tree: Id,
    },
    /// A regular file: its data blobs and, once opened, where each ends.
    File {
        content: Arc<Vec<Id>>,
        ends: Option<Arc<Vec<u64>>>,
    },
    Symlink(Vec<u8>),
    /// A FIFO, socket or device: attributes only.
    Special,
}

struct Inode {
    /// The directory above (itself for the root).
    parent: u64,
    /// The snapshot directory this inode belongs to (0 outside snapshots);
    /// the scope of shared hard-link inodes.
    snapshot: u64,
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    nlink: u32,
    rdev: u32,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    contents: Contents,
}

#[derive(Default)]
struct Table {
    /// Inode `n` is at `inodes[n - 1]`.
    inodes: Vec<Inode>,
    /// Hard links met so far: (snapshot, device, inode) → our inode.
    hard_links: HashMap<(u64, u64, u64), u64>,
    /// The view's own entries by path (`""` for the root, `snapshots/latest`,
    /// `hosts/a/2026-…`): their inode and, for a snapshot's directory, the
    /// snapshot. A refresh gives a path its inode again.
    layout: HashMap<String, (u64, Option<Id>)>,
}

impl Table {
    fn get(&self, ino: u64) -> Option<&Inode> {
        ino.checked_sub(1).and_then(|i| self.inodes.get(i as usize))
    }

    fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        ino.checked_sub(1).and_then(|i| self.inodes.get_mut(i as usize))
    }

    fn push(&mut self, inode: Inode) -> u64 {
        self.inodes.push(inode);
        self.inodes.len() as u64
    }

    /// The inode of the view's own entry at `path`, `inode` from now on,
    /// recorded in `placed`. A directory or link placed before at `path`
    /// keeps its number and takes `inode`'s place; a snapshot's directory
    /// (`snapshot` given) seen before at `path` stays as it was, with what
    /// was loaded below it; anything else is a new inode.
    fn place(
        &mut self,
        placed: &mut HashMap<String, (u64, Option<Id>)>,
        path: String,
        snapshot: Option<Id>,
        inode: Inode,
    ) -> u64 {
        let ino = match self.layout.get(&path) {
            Some(&(ino, before)) if before == snapshot => {
                if snapshot.is_none() {
                    if let Some(slot) = self.get_mut(ino) {
                        *slot = inode;
                    }
                }
                ino
            }
            _ => {
                let ino = self.push(inode);
                if snapshot.is_some() {
                    set_snapshot_scope(self, ino);
                }
                ino
            }
        };
        placed.insert(path, (ino, snapshot));
        ino
    }
}

/// `name` below the view's own entry at `dir`.
fn sub_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// What the view shows besides trees: who owns its own directories.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Which snapshots the view shows.
pub type SnapshotChoice = Arc<dyn Fn(&Snapshot) -> bool + Send + Sync>;

/// Reading the snapshot list again.
struct Refresh {
    choose: SnapshotChoice,
    every: Duration,
    /// When the list was last read, and the snapshots shown: held while
    /// reading, so that requests meanwhile wait for the new view.
    state: tokio::sync::Mutex<(Instant, Vec<Id>)>,
}

struct Shared {
    repo: Repository,
    /// Replaced when a refresh brings new snapshots.
    index: Mutex<Arc<MasterIndex>>,
    blobs: BlobCache,
    /// Reads a directory's tree with its subtrees' (breadth first, in merged
    /// ranges) into the local cache, so walking down costs no round trip
    /// per directory. Replaced with the index.
    trees: Mutex<TreeLoader>,
    table: Mutex<Table>,
    owner: Owner,
    refresh: Option<Refresh>,
    runtime: tokio::runtime::Handle,
}

/// The filesystem given to FUSE. Requests that need storage run as tasks on
/// the runtime and answer when done, so a slow read holds up no other request.
pub struct SnapshotFs {
    shared: Arc<Shared>,
}

impl SnapshotFs {
    /// The view of `snapshots` (any order), reading through `repo` and
    /// `index` on `runtime`. With `refresh`, the snapshot list is read again
    /// (at most once per `every`) when the view's own directories are
    /// looked into, showing the snapshots `choose` accepts.
    pub fn new(
        repo: Repository,
        index: Arc<MasterIndex>,
        snapshots: Vec<(Id, Snapshot)>,
        owner: Owner,
        refresh: Option<(SnapshotChoice, Duration)>,
        runtime: tokio::runtime::Handle,
    ) -> SnapshotFs {
        let shown = snapshots.iter().map(|(id, _)| *id).collect();
        let refresh = refresh.map(|(choose, every)| Refresh {
            choose,
            every,
            state: tokio::sync::Mutex::new((Instant::now(), shown)),
        });
        let table = build_layout(snapshots, owner);
        let trees = TreeLoader::new(&repo, index.clone(), TREE_READS_IN_FLIGHT);
        let blobs = BlobCache::new(BLOB_CACHE_BYTES);
        let shared = Shared {
            repo,
            index: Mutex::new(index),
            blobs,
            trees: Mutex::new(trees),
            table: Mutex::new(table),
            owner,
            refresh,
            runtime,
        };
        SnapshotFs { shared: Arc::new(shared) }
    }
}

fn dir_inode(parent: u64, owner: Owner, time_ns: i64, contents: Contents) -> Inode {
    Inode {
        parent,
        snapshot: 0,
        kind: FileType::Directory,
        perm: 0o555,
        uid: owner.uid,
        gid: owner.gid,
        size: 0,
        mtime_ns: time_ns,
        ctime_ns: time_ns,
        nlink: 2,
        rdev: 0,
        xattrs: Vec::new(),
        contents,
    }
}

fn link_inode(parent: u64, owner: Owner, time_ns: i64, target: &str) -> Inode {
    Inode {
        kind: FileType::Symlink,
        perm: 0o777,
        size: target.len() as u64,
        nlink: 1,
        contents: Contents::Symlink(target.as_bytes().to_vec()),
        ..dir_inode(parent, owner, time_ns, Contents::Special)
    }
}

/// The view's own entries placed so far in one (re)build of the layout.
type Placed = HashMap<String, (u64, Option<Id>)>;

/// Adds (at `path`) a directory of snapshot directories named by time
/// (oldest first in `snaps`) with a `latest` link to the newest; returns
/// its inode.
fn add_time_dir(
    table: &mut Table,
    placed: &mut Placed,
    path: &str,
    parent: u64,
    owner: Owner,
    snaps: &[&(Id, Snapshot)],
) -> u64 {
    let newest = snaps.last().map_or(0, |(_, s)| s.time_ns);
    let dir =
        table.place(placed, path.to_string(), None, dir_inode(parent, owner, newest, Contents::Dir(Arc::default())));
    let names = layout::unique_names(snaps.iter().map(|(_, s)| layout::time_name(s.time_ns)).collect());
    let mut children = Vec::new();
    for ((id, snap), name) in snaps.iter().zip(&names) {
        let inode = dir_inode(dir, owner, snap.time_ns, Contents::Tree { tree: snap.tree });
        let ino = table.place(placed, sub_path(path, name), Some(*id), inode);
        children.push((name.clone().into_bytes(), ino));
    }
    if let Some(last) = names.last() {
        let ino = table.place(placed, sub_path(path, "latest"), None, link_inode(dir, owner, newest, last));
        children.push((b"latest".to_vec(), ino));
    }
    set_children(table, dir, children);
    dir
}

fn set_snapshot_scope(table: &mut Table, ino: u64) {
    if let Some(inode) = table.get_mut(ino) {
        inode.snapshot = ino;
    }
}

fn set_children(table: &mut Table, dir: u64, mut children: Vec<(Vec<u8>, u64)>) {
    children.sort_by(|a, b| a.0.cmp(&b.0));
    children.dedup_by(|a, b| a.0 == b.0);
    if let Some(inode) = table.get_mut(dir) {
        inode.contents = Contents::Dir(Arc::new(children));
    }
}

/// Groups snapshots under a directory (at `path`) per key (host or tag),
/// each a time directory.
fn add_grouped_dir(
    table: &mut Table,
    placed: &mut Placed,
    path: &str,
    parent: u64,
    owner: Owner,
    snaps: &[(Id, Snapshot)],
    keys: impl Fn(&Snapshot) -> Vec<String>,
) -> u64 {
    let newest = snaps.last().map_or(0, |(_, s)| s.time_ns);
    let dir =
        table.place(placed, path.to_string(), None, dir_inode(parent, owner, newest, Contents::Dir(Arc::default())));
    let mut groups: Vec<(String, Vec<&(Id, Snapshot)>)> = Vec::new();
    for entry in snaps {
        for key in keys(&entry.1) {
            let name = layout::safe_name(&key);
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, list)) => list.push(entry),
                None => groups.push((name, vec![entry])),
            }
        }
    }
    let mut children = Vec::new();
    for (name, list) in groups {
        let ino = add_time_dir(table, placed, &sub_path(path, &name), dir, owner, &list);
        children.push((name.into_bytes(), ino));
    }
    set_children(table, dir, children);
    dir
}

/// The view's own directories for `snapshots`, in a new table.
fn build_layout(snapshots: Vec<(Id, Snapshot)>, owner: Owner) -> Table {
    let mut table = Table::default();
    lay_out(&mut table, snapshots, owner);
    table
}

/// Lays the view's own directories out in `table` for `snapshots`: the
/// root is inode 1; an entry at a path laid out before keeps its inode.
fn lay_out(table: &mut Table, mut snapshots: Vec<(Id, Snapshot)>, owner: Owner) {
    snapshots.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
    let newest = snapshots.last().map_or(0, |(_, s)| s.time_ns);
    let mut placed = Placed::new();
    let root =
        table.place(&mut placed, String::new(), None, dir_inode(1, owner, newest, Contents::Dir(Arc::default())));
    let all: Vec<&(Id, Snapshot)> = snapshots.iter().collect();
    let by_time = add_time_dir(table, &mut placed, "snapshots", root, owner, &all);

    let ids =
        table.place(&mut placed, "ids".into(), None, dir_inode(root, owner, newest, Contents::Dir(Arc::default())));
    let mut short_counts: HashMap<String, usize> = HashMap::new();
    for (id, _) in &snapshots {
        *short_counts.entry(id.short()).or_default() += 1;
    }
    let mut id_children = Vec::new();
    for (id, snap) in &snapshots {
        let short = id.short();
        let name = if short_counts[&short] > 1 { id.to_hex() } else { short };
        let inode = dir_inode(ids, owner, snap.time_ns, Contents::Tree { tree: snap.tree });
        let ino = table.place(&mut placed, sub_path("ids", &name), Some(*id), inode);
        id_children.push((name.into_bytes(), ino));
    }
    set_children(table, ids, id_children);

    let hosts = add_grouped_dir(table, &mut placed, "hosts", root, owner, &snapshots, |s| vec![s.hostname.clone()]);
    let tags = add_grouped_dir(table, &mut placed, "tags", root, owner, &snapshots, |s| s.tags.clone());
    let children = vec![
        (b"snapshots".to_vec(), by_time),
        (b"ids".to_vec(), ids),
        (b"hosts".to_vec(), hosts),
        (b"tags".to_vec(), tags),
    ];
    set_children(table, root, children);
    table.layout = placed;
}

/// A stored device number as the kernel's 32-bit form (`new_encode_dev`).
fn kernel_rdev(rdev: u64) -> u32 {
    let (major, minor) = (device_major(rdev), device_minor(rdev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The inode of a tree node inside snapshot directory `snapshot`.
fn node_inode(parent: u64, snapshot: u64, node: Node) -> Inode {
    let (kind, contents) = match node.kind {
        NodeKind::File => (FileType::RegularFile, Contents::File { content: Arc::new(node.content), ends: None }),
        NodeKind::Dir => match node.subtree {
            Some(tree) => (FileType::Directory, Contents::Tree { tree }),
            None => (FileType::Directory, Contents::Dir(Arc::default())),
        },
        NodeKind::Symlink => (FileType::Symlink, Contents::Symlink(node.symlink_target)),
        NodeKind::Fifo => (FileType::NamedPipe, Contents::Special),
        NodeKind::Socket => (FileType::Socket, Contents::Special),
        NodeKind::CharDevice => (FileType::CharDevice, Contents::Special),
        NodeKind::BlockDevice => (FileType::BlockDevice, Contents::Special),
    };
    let size = match &contents {
        Contents::File { .. } => node.size,
        Contents::Symlink(target) => target.len() as u64,
        _ => 0,
    };
    let default_links = if kind == FileType::Directory { 2 } else { 1 };
    let nlink = if node.links == 0 { default_links } else { u32::try_from(node.links).unwrap_or(u32::MAX) };
    let is_device = matches!(kind, FileType::CharDevice | FileType::BlockDevice);
    Inode {
        parent,
        snapshot,
        kind,
        perm: (node.mode & 0o7777) as u16,
        uid: node.uid,
        gid: node.gid,
        size,
        mtime_ns: node.mtime_ns,
        ctime_ns: node.ctime_ns,
        nlink,
        rdev: if is_device { kernel_rdev(node.rdev) } else { 0 },
        xattrs: node.xattrs,
        contents,
    }
}

fn system_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn attr(ino: u64, inode: &Inode) -> FileAttr {
    let mtime = system_time(inode.mtime_ns);
    FileAttr {
        ino: INodeNo(ino),
        size: inode.size,
        blocks: inode.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: system_time(inode.ctime_ns),
        crtime: mtime,
        kind: inode.kind,
        perm: inode.perm,
        nlink: inode.nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: inode.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// How long the kernel may keep `inode`'s entry and attributes: briefly for
/// the view's own entries and the snapshot directories in them, which a
/// refresh changes; long inside snapshots.
fn ttl(ino: u64, inode: &Inode) -> Duration {
    if inode.snapshot == 0 || inode.snapshot == ino {
        LAYOUT_TTL
    } else {
        TTL
    }
}

/// The errno a failed storage read answers with.
fn errno_of(e: &RepoError) -> Errno {
    match e {
        RepoError::Backend(b) if b.needs_login() => Errno::EACCES,
        _ => Errno::EIO,
    }
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn index(&self) -> Arc<MasterIndex> {
        self.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn trees(&self) -> TreeLoader {
        self.trees.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Whether `ino` is one of the view's own directories (not inside a snapshot).
    fn is_layout_dir(&self, ino: u64) -> bool {
        self.table().get(ino).is_some_and(|i| i.snapshot == 0 && i.kind == FileType::Directory)
    }

    /// Reads the snapshot list again when `ino` is one of the view's own
    /// directories and the last reading is older than the refresh interval;
    /// lays the view out anew when the snapshots shown changed, with the
    /// index read again for their blobs. A failure keeps the view as it is.
    async fn refresh_at(&self, ino: u64) {
        let Some(refresh) = &self.refresh else { return };
        if !self.is_layout_dir(ino) {
            return;
        }
        let mut state = refresh.state.lock().await;
        if state.0.elapsed() < refresh.every {
            return;
        }
        let result = async {
            let (snaps, bad) = self.repo.snapshots().await?;
            for (id, e) in bad {
                tracing::warn!(snapshot = %id.short(), error = %e, "unreadable snapshot left out of the mounted view");
            }
            let snaps: Vec<(Id, Snapshot)> = snaps.into_iter().filter(|(_, s)| (refresh.choose)(s)).collect();
            let mut shown: Vec<Id> = snaps.iter().map(|(id, _)| *id).collect();
            shown.sort();
            let mut before = state.1.clone();
            before.sort();
            if shown == before {
                return Ok::<_, RepoError>(None);
            }
            let index = Arc::new(self.repo.load_index_lenient().await?);
            Ok(Some((snaps, shown, index)))
        }
        .await;
        match result {
            Ok(None) => {}
            Ok(Some((snaps, shown, index))) => {
                tracing::info!(snapshots = shown.len(), "the mounted view follows a changed snapshot list");
                *self.trees.lock().unwrap_or_else(|p| p.into_inner()) =
                    TreeLoader::new(&self.repo, index.clone(), TREE_READS_IN_FLIGHT);
                *self.index.lock().unwrap_or_else(|p| p.into_inner()) = index;
                lay_out(&mut self.table(), snaps, self.owner);
                state.1 = shown;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the snapshot list again; the mounted view stays as it was")
            }
        }
        state.0 = Instant::now();
    }

    /// The entries of directory `ino`, loading its tree when needed.
    async fn children(&self, ino: u64) -> Result<Children, Errno> {
        let tree_id = {
            let table = self.table();
            let inode = table.get(ino).ok_or(Errno::ENOENT)?;
            match &inode.contents {
                Contents::Dir(children) => return Ok(children.clone()),
                Contents::Tree { tree } => *tree,
                _ => return Err(Errno::ENOTDIR),
            }
        };
        let trees = self.trees();
        trees.fetch_ahead([tree_id]).await;
        let tree = trees.load(&tree_id).await.map_err(|e| {
            tracing::warn!(tree = %tree_id, error = %e, "cannot load a directory of the mounted view");
            errno_of(&e)
        })?;
        let mut table = self.table();
        let snapshot = match table.get(ino) {
            Some(Inode { contents: Contents::Dir(children), .. }) => return Ok(children.clone()),
            Some(inode) => inode.snapshot,
            None => return Err(Errno::ENOENT),
        };
        let mut children = Vec::with_capacity(tree.nodes.len());
        for node in tree.nodes {
            if let Err(why) = validate_name(&node.name) {
                tracing::warn!(tree = %tree_id, name = %node.display_name(), %why, "entry left out of the mounted view");
                continue;
            }
            let name = node.name.clone();
            let link_key =
                (node.kind == NodeKind::File && node.links > 1).then_some((snapshot, node.device, node.inode));
            let shared = link_key.and_then(|k| table.hard_links.get(&k).copied());
            let child = match shared {
                Some(existing) => existing,
                None => {
                    let child = table.push(node_inode(ino, snapshot, node));
                    if let Some(k) = link_key {
                        table.hard_links.insert(k, child);
                    }
                    child
                }
            };
            children.push((name, child));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        children.dedup_by(|a, b| a.0 == b.0);
        let children = Arc::new(children);
        if let Some(inode) = table.get_mut(ino) {
            inode.contents = Contents::Dir(children.clone());
        }
        Ok(children)
    }

    async fn lookup(&self, parent: u64, name: &[u8]) -> Result<(FileAttr, Duration), Errno> {
        self.refresh_at(parent).await;
        let children = self.children(parent).await?;
        let ino = children
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .map(|i| children[i].1)
            .map_err(|_| Errno::ENOENT)?;
        let table = self.table();
        table.get(ino).map(|inode| (attr(ino, inode), ttl(ino, inode))).ok_or(Errno::ENOENT)
    }

    /// The blobs of file `ino` and where each ends, worked out once.
    fn file_blobs(&self, ino: u64) -> Result<FileBlobs, Errno> {
        let mut table = self.table();
        let inode = table.get_mut(ino).ok_or(Errno::ENOENT)?;
        match &mut inode.contents {
            Contents::File { content, ends: Some(ends) } => Ok((content.clone(), ends.clone())),
            Contents::File { content, ends } => {
                let computed = Arc::new(blobs::blob_ends(&self.index(), content).map_err(|e| {
                    tracing::warn!(error = %e, "cannot read a file of the mounted view");
                    Errno::EIO
                })?);
                *ends = Some(computed.clone());
                Ok((content.clone(), computed))
            }
            Contents::Dir(_) | Contents::Tree { .. } => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    async fn read(&self, ino: u64, offset: u64, len: u64) -> Result<Vec<u8>, Errno> {
        let (content, ends) = self.file_blobs(ino)?;
        self.blobs.read(&self.repo, &self.index(), &content, &ends, offset, len).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read a file of the mounted view");
            errno_of(&e)
        })
    }
}

/// Answers `reply` with `value` of `size` bytes as `getxattr`/`listxattr` ask:
/// its length when `size` is 0, the bytes when they fit, `ERANGE` otherwise.
fn reply_sized(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(Errno::ERANGE);
    }
}

impl Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let shared = self.shared.clone();
        let name = name.as_bytes().to_vec();
        self.shared.runtime.spawn(async move {
            match shared.lookup(parent.0, &name).await {
                Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let table = self.shared.table();
        match table.get(ino.0) {
            Some(inode) => reply.attr(&ttl(ino.0, inode), &attr(ino.0, inode)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let table = self.shared.table();
        match table.get(ino.0).map(|i| &i.contents) {
            Some(Contents::Symlink(target)) => reply.data(target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            reply.error(Errno::EROFS);
            return;
        }
        match self.shared.file_blobs(ino.0) {
            // The content never changes: the kernel may keep what it read.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move {
            match shared.read(ino.0, offset, u64::from(size)).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move {
            if offset == 0 {
                shared.refresh_at(ino.0).await;
            }
            let children = match shared.children(ino.0).await {
                Ok(children) => children,
                Err(e) => return reply.error(e),
            };
            let table = shared.table();
            let parent = table.get(ino.0).map_or(ino.0, |i| i.parent);
            let dots = [(b".".as_slice(), ino.0), (b"..".as_slice(), parent)];
            let entries = dots.into_iter().chain(children.iter().map(|(n, i)| (n.as_slice(), *i)));
            for (i, (name, child)) in entries.enumerate().skip(offset as usize) {
                let kind = table.get(child).map_or(FileType::RegularFile, |c| c.kind);
                if reply.add(INodeNo(child), i as u64 + 1, kind, OsStr::from_bytes(name)) {
                    break;
                }
            }
            drop(table);
            reply.ok();
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.shared.table().inodes.len() as u64;
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let table = self.shared.table();
        let Some(inode) = table.get(ino.0) else { return reply.error(Errno::ENOENT) };
        match inode.xattrs.iter().find(|(n, _)| n.as_slice() == name.as_bytes()) {
            Some((_, value)) => reply_sized(reply, size, value),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let table = self.shared.table();
        let Some(inode) = table.get(ino.0) else { return reply.error(Errno::ENOENT) };
        let mut names = Vec::new();
        for (name, _) in &inode.xattrs {
            names.extend_from_slice(name);
            names.push(0);
        }
        reply_sized(reply, size, &names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(time_ns: i64, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time_ns,
            tree: Id([time_ns as u8; 32]),
            paths: vec![b"/src".to_vec()],
            hostname: host.into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
            program_version: String::new(),
            summary: Default::default(),
            original: None,
        }
    }

    fn names(table: &Table, ino: u64) -> Vec<String> {
        match &table.get(ino).unwrap().contents {
            Contents::Dir(c) => c.iter().map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect(),
            _ => panic!("not a listed directory"),
        }
    }

    fn child(table: &Table, ino: u64, name: &str) -> u64 {
        match &table.get(ino).unwrap().contents {
            Contents::Dir(c) => c.iter().find(|(n, _)| n == name.as_bytes()).unwrap().1,
            _ => panic!("not a listed directory"),
        }
    }

    #[test]
    fn the_layout_groups_snapshots_by_time_id_host_and_tag() {
        let s = 1_000_000_000;
        let snaps = vec![
            (Id([2; 32]), snap(20 * s, "b", &["x"])),
            (Id([1; 32]), snap(10 * s, "a", &["x", "y/z"])),
            (Id([3; 32]), snap(20 * s, "a", &[])),
        ];
        let owner = Owner { uid: 5, gid: 6 };
        let table = build_layout(snaps, owner);
        assert_eq!(names(&table, 1), ["hosts", "ids", "snapshots", "tags"]);
        let by_time = child(&table, 1, "snapshots");
        assert_eq!(
            names(&table, by_time),
            ["1970-01-01T00:00:10Z", "1970-01-01T00:00:20Z", "1970-01-01T00:00:20Z-1", "latest"]
        );
        let latest = child(&table, by_time, "latest");
        assert!(matches!(&table.get(latest).unwrap().contents, Contents::Symlink(t) if t == b"1970-01-01T00:00:20Z-1"));
        let ids = child(&table, 1, "ids");
        assert_eq!(names(&table, ids), [Id([1; 32]).short(), Id([2; 32]).short(), Id([3; 32]).short()]);
        let hosts = child(&table, 1, "hosts");
        assert_eq!(names(&table, hosts), ["a", "b"]);
        assert_eq!(
            names(&table, child(&table, hosts, "a")),
            ["1970-01-01T00:00:10Z", "1970-01-01T00:00:20Z", "latest"]
        );
        let tags = child(&table, 1, "tags");
        assert_eq!(names(&table, tags), ["x", "y_z"]);
        assert_eq!(names(&table, child(&table, tags, "y_z")), ["1970-01-01T00:00:10Z", "latest"]);
        let root = table.get(1).unwrap();
        assert_eq!((root.uid, root.gid, root.perm), (5, 6, 0o555));
    }

    #[test]
    fn a_new_layout_keeps_the_inodes_of_what_it_shows_again() {
        let s = 1_000_000_000;
        let first = (Id([1; 32]), snap(10 * s, "a", &["x"]));
        let owner = Owner { uid: 0, gid: 0 };
        let mut table = build_layout(vec![first.clone()], owner);
        let by_time = child(&table, 1, "snapshots");
        let old_dir = child(&table, by_time, "1970-01-01T00:00:10Z");
        let latest = child(&table, by_time, "latest");
        let hosts_a = child(&table, child(&table, 1, "hosts"), "a");
        // What was loaded below a snapshot's directory stays.
        table.get_mut(old_dir).unwrap().contents = Contents::Dir(Arc::new(vec![(b"src".to_vec(), 99)]));

        lay_out(&mut table, vec![first, (Id([2; 32]), snap(20 * s, "a", &[]))], owner);
        assert_eq!(child(&table, 1, "snapshots"), by_time);
        assert_eq!(names(&table, by_time), ["1970-01-01T00:00:10Z", "1970-01-01T00:00:20Z", "latest"]);
        assert_eq!(child(&table, by_time, "1970-01-01T00:00:10Z"), old_dir);
        assert_eq!(names(&table, old_dir), ["src"]);
        let new_dir = child(&table, by_time, "1970-01-01T00:00:20Z");
        assert!(new_dir > old_dir);
        assert_eq!(table.get(new_dir).unwrap().snapshot, new_dir, "a snapshot's directory is its own scope");
        assert_eq!(child(&table, by_time, "latest"), latest);
        assert!(matches!(&table.get(latest).unwrap().contents, Contents::Symlink(t) if t == b"1970-01-01T00:00:20Z"));
        assert_eq!(child(&table, child(&table, 1, "hosts"), "a"), hosts_a);
        assert_eq!(names(&table, hosts_a).len(), 3);

        // A snapshot gone is gone from the view; another snapshot under its
        // name is a new directory.
        lay_out(&mut table, vec![(Id([3; 32]), snap(10 * s, "a", &[]))], owner);
        assert_eq!(names(&table, by_time), ["1970-01-01T00:00:10Z", "latest"]);
        assert_ne!(child(&table, by_time, "1970-01-01T00:00:10Z"), old_dir);
        assert!(names(&table, child(&table, 1, "tags")).is_empty());
    }

    #[test]
    fn an_empty_repository_shows_empty_directories_without_latest() {
        let table = build_layout(Vec::new(), Owner { uid: 0, gid: 0 });
        let by_time = child(&table, 1, "snapshots");
        assert!(names(&table, by_time).is_empty());
    }

    #[test]
    fn device_numbers_reach_the_kernel_in_its_encoding() {
        let rdev = crate::format::tree::device_number(8, 1);
        assert_eq!(kernel_rdev(rdev), 8 << 8 | 1);
        let rdev = crate::format::tree::device_number(259, 300);
        assert_eq!(kernel_rdev(rdev), (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12));
    }
}
