//! The read half of a snapshot: walks the source paths depth first (with an
//! explicit stack, reaching each entry relative to its directory's open
//! handle, so depth costs no call stack and paths may outgrow `PATH_MAX`),
//! chunks and
//! hashes file contents, hands blobs the repository does not have yet to the
//! pipeline, and builds the tree of every directory bottom-up. A file whose
//! size, mtime, ctime and inode match the parent snapshot is not read again.
//! A file is read up to the size it had when opened; if its size, mtime or
//! ctime moved while it was read it is read once more, and if it moved again
//! what the second read got is stored and the file is reported as changed.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tokio::runtime::Handle;

use super::exclude::{Enter, Exclusions, IgnoreStack};
use super::pipeline::Pipeline;
use super::{DirCounts, FileAction, Progress, ReadHook};
use crate::dirfd;
use crate::format::snapshot::Summary;
use crate::format::tree::{encode_part_list, Node, NodeKind, Tree};
use crate::format::{BlobType, Id, MAX_BLOB_LEN};
use crate::fsmeta;
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};

/// A directory being archived.
struct DirFrame {
    /// Open while the frame is among the [`MAX_OPEN_DIRS`] deepest; the top
    /// frame's is always open.
    handle: Option<File>,
    /// The directory's device and inode, to know it again when its handle
    /// is opened anew through `..`.
    identity: (u64, u64),
    node: Node,
    /// Names of the entries still to look at, in order.
    names: std::vec::IntoIter<Vec<u8>>,
    /// The directory's tree in the parent snapshot.
    parent_tree: Option<Tree>,
    /// The id the directory's node has in the parent snapshot, if it is there.
    parent_subtree: Option<Id>,
    /// Nodes of the entries archived so far.
    tree: Tree,
    /// Length of the walk's path buffer at this directory.
    path_len: usize,
    /// Length of this directory's path inside the snapshot.
    snap_len: usize,
}

/// Directory handles the walker keeps open at most: frames deeper in the
/// stack close theirs and open it again through their child's `..`, so a
/// tree deeper than the limit on open files is still walked.
const MAX_OPEN_DIRS: usize = 128;

/// Why walking stopped early.
pub enum Stop {
    /// The pipeline failed; its error says why.
    Pipeline,
    Fatal(RepoError),
}

pub struct Walker<'a> {
    pub repo: &'a Repository,
    pub index: &'a MasterIndex,
    pub pipeline: &'a Pipeline,
    pub handle: Handle,
    pub progress: &'a dyn Progress,
    pub exclusions: &'a Exclusions,
    pub summary: Summary,
    /// Paths that could not be read, with the reason.
    pub errors: Vec<(PathBuf, String)>,
    /// Files that changed during both reads; stored as last read.
    pub changed: Vec<PathBuf>,
    /// Directories new, changed and unmodified since the parent snapshot.
    pub dirs: DirCounts,
    pub read_hook: Option<ReadHook>,
    /// Largest tree blob before a directory is split into parts.
    pub tree_part_len: usize,
    pending: HashSet<Id>,
    /// Content of files with several links, by (device, inode), read once.
    hardlinks: HashMap<(u64, u64), (Vec<Id>, u64)>,
    buf: Vec<u8>,
    root_device: Option<u64>,
    /// Ignore-file matchers of the directories on the current path.
    ignores: IgnoreStack,
}

impl<'a> Walker<'a> {
    pub fn new(
        repo: &'a Repository,
        index: &'a MasterIndex,
        pipeline: &'a Pipeline,
        handle: Handle,
        progress: &'a dyn Progress,
        exclusions: &'a Exclusions,
    ) -> Self {
        Walker {
            repo,
            index,
            pipeline,
            handle,
            progress,
            exclusions,
            summary: Summary::default(),
            errors: Vec::new(),
            changed: Vec::new(),
            dirs: DirCounts::default(),
            read_hook: None,
            tree_part_len: MAX_BLOB_LEN as usize,
            pending: HashSet::new(),
            hardlinks: HashMap::new(),
            buf: Vec::new(),
            root_device: None,
            ignores: IgnoreStack::default(),
        }
    }

    fn fail(&mut self, path: &Path, what: &str, e: impl std::fmt::Display) {
        let msg = format!("{what}: {e}");
        tracing::warn!(path = %path.display(), error = %msg, "skipped");
        self.progress.error(path, &msg);
        self.summary.errors += 1;
        self.errors.push((path.to_path_buf(), msg));
    }

    /// Stores a blob unless the repository has it or this run already queued it.
    fn add_blob(&mut self, blob_type: BlobType, id: Id, data: Vec<u8>) -> Result<(), Stop> {
        if self.index.contains(&id) || !self.pending.insert(id) {
            return Ok(());
        }
        match blob_type {
            BlobType::Data => self.summary.data_blobs_added += 1,
            BlobType::Tree => self.summary.tree_blobs_added += 1,
        }
        self.summary.bytes_added += data.len() as u64;
        if self.pipeline.submit(blob_type, id, data) {
            Ok(())
        } else {
            Err(Stop::Pipeline)
        }
    }

    fn known(&self, id: &Id) -> bool {
        self.index.contains(id) || self.pending.contains(id)
    }

    /// Archives one top-level path as a node named `name`.
    pub fn archive_root(&mut self, path: &Path, name: Vec<u8>, parent: Option<&Node>) -> Result<Option<Node>, Stop> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.fail(path, "cannot stat", e);
                return Ok(None);
            }
        };
        self.root_device = Some(meta.dev());
        if self.pipeline.has_failed() {
            return Err(Stop::Pipeline);
        }
        let mut node = fsmeta::node_from_metadata(name, &meta);
        self.read_xattrs(path, &mut node);
        match node.kind {
            NodeKind::Dir => {
                let handle = match dirfd::open_dir(path) {
                    Ok(h) => h,
                    Err(e) => {
                        self.fail(path, "cannot read directory", e);
                        return Ok(None);
                    }
                };
                self.archive_tree(path, handle, node, parent)
            }
            NodeKind::File => {
                let inode = node.inode;
                self.archive_file(path, node, parent, || open_regular(path, inode))
            }
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(target) => {
                    node.symlink_target = target.as_os_str().as_bytes().to_vec();
                    self.summary.other_nodes += 1;
                    Ok(Some(node))
                }
                Err(e) => {
                    self.fail(path, "cannot read symlink", e);
                    Ok(None)
                }
            },
            _ => {
                self.summary.other_nodes += 1;
                Ok(Some(node))
            }
        }
    }

    fn read_xattrs(&self, path: &Path, node: &mut Node) {
        match fsmeta::read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "extended attributes not read"),
        }
    }

    /// The tree of `parent` (a directory's node in the parent snapshot), if
    /// it can be read.
    fn parent_tree(&self, parent: Option<&Node>, path: &Path) -> Option<Tree> {
        let id = parent.filter(|p| p.kind == NodeKind::Dir).and_then(|p| p.subtree)?;
        match self.handle.block_on(self.repo.load_tree(self.index, &id)) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "parent tree unreadable; reading the directory in full");
                None
            }
        }
    }

    /// Lists the directory `handle` (at `path`) and enters it; `None` when
    /// it cannot be listed or is excluded.
    fn enter(
        &mut self,
        path: &Path,
        handle: File,
        node: Node,
        (parent_tree, parent_subtree): (Option<Tree>, Option<Id>),
        path_len: usize,
        snap_len: usize,
    ) -> Option<DirFrame> {
        let mut names = match dirfd::list_dir(&handle) {
            Ok(n) => n,
            Err(e) => {
                self.fail(path, "cannot read directory", e);
                return None;
            }
        };
        let identity = match handle.metadata() {
            Ok(m) => (m.dev(), m.ino()),
            Err(e) => {
                self.fail(path, "cannot read directory", e);
                return None;
            }
        };
        names.sort();
        let has = |n: &OsStr| names.binary_search_by(|x| x.as_slice().cmp(n.as_bytes())).is_ok();
        match self.exclusions.enter_dir(&mut self.ignores, path, has) {
            Enter::Excluded(reason) => {
                tracing::debug!(path = %path.display(), %reason, "excluded");
                return None;
            }
            Enter::Entered(Some(problem)) => self.fail(path, "ignore file not fully applied", problem),
            Enter::Entered(None) => {}
        }
        Some(DirFrame {
            handle: Some(handle),
            identity,
            node,
            names: names.into_iter(),
            parent_tree,
            parent_subtree,
            tree: Tree::default(),
            path_len,
            snap_len,
        })
    }

    /// Archives the directory `root` (open as `handle`) and everything below
    /// it, depth first with an explicit stack: one frame per directory on
    /// the current path, each holding its handle, the names still to look
    /// at and the nodes made so far. Entries are reached relative to their
    /// directory's handle, so their absolute paths (kept in one buffer, for
    /// messages and exclusions) may be longer than the system resolves.
    fn archive_tree(
        &mut self,
        root: &Path,
        handle: File,
        node: Node,
        parent: Option<&Node>,
    ) -> Result<Option<Node>, Stop> {
        let mut path: Vec<u8> = root.as_os_str().as_bytes().to_vec();
        let snap_len = node.name.len();
        let parent_tree = (self.parent_tree(parent, root), parent.and_then(|p| p.subtree));
        let Some(first) = self.enter(root, handle, node, parent_tree, path.len(), snap_len) else { return Ok(None) };
        let mut stack = vec![first];
        // Frames below this index have closed their handles.
        let mut closed_below = 0;
        loop {
            if self.pipeline.has_failed() {
                return Err(Stop::Pipeline);
            }
            let depth = stack.len() + 1;
            let top = stack.last_mut().expect("the root frame is popped last");
            let Some(name) = top.names.next() else {
                let mut done = stack.pop().expect("non-empty");
                self.ignores.leave();
                if let Some(parent) = stack.last_mut() {
                    if parent.handle.is_none() {
                        path.truncate(parent.path_len);
                        let parent_path = Path::new(OsStr::from_bytes(&path));
                        self.reopen(parent_path, parent, done.handle.as_ref());
                        closed_below = stack.len() - 1;
                    }
                }
                done.handle = None;
                path.truncate(done.path_len);
                let dir_node = self.finish_dir(Path::new(OsStr::from_bytes(&path)), done)?;
                match stack.last_mut() {
                    Some(parent) => {
                        parent.tree.nodes.extend(dir_node);
                        path.truncate(parent.path_len);
                    }
                    None => return Ok(dir_node),
                }
                continue;
            };
            let DirFrame { handle, names, tree, parent_tree, path_len, snap_len: dir_snap_len, .. } = top;
            let Some(dir) = handle.as_ref() else {
                // Opening it again failed: the rest of this directory is lost.
                *names = Vec::new().into_iter();
                continue;
            };
            path.truncate(*path_len);
            path.push(b'/');
            path.extend_from_slice(&name);
            let child = Path::new(OsStr::from_bytes(&path));
            let meta = match dirfd::metadata_at(dir, &name) {
                Ok(m) => m,
                Err(e) => {
                    self.fail(child, "cannot stat", e);
                    continue;
                }
            };
            if let Some(reason) = self.exclusions.entry(&self.ignores, child, &meta, self.root_device) {
                tracing::debug!(path = %child.display(), %reason, "excluded");
                continue;
            }
            let snap_len = *dir_snap_len + 1 + name.len();
            if let Err(e) = crate::format::check_entry_limits(depth, snap_len) {
                self.fail(child, "not stored", e);
                continue;
            }
            let prev: Option<Node> = parent_tree.as_ref().and_then(|t| t.find(&name)).cloned();
            let mut node = fsmeta::node_from_metadata(name, &meta);
            self.read_xattrs(&dirfd::path_for_call(child, dir, &node.name), &mut node);
            match node.kind {
                NodeKind::Dir => {
                    let handle = match dirfd::open_dir_at(dir, &node.name) {
                        Ok(h) => h,
                        Err(e) => {
                            self.fail(child, "cannot read directory", e);
                            continue;
                        }
                    };
                    let parent_tree = (self.parent_tree(prev.as_ref(), child), prev.as_ref().and_then(|p| p.subtree));
                    if let Some(frame) = self.enter(child, handle, node, parent_tree, path.len(), snap_len) {
                        stack.push(frame);
                        if stack.len() - closed_below > MAX_OPEN_DIRS {
                            stack[closed_below].handle = None;
                            closed_below += 1;
                        }
                    }
                }
                NodeKind::File => {
                    let (name, inode) = (node.name.clone(), node.inode);
                    let stored =
                        self.archive_file(child, node, prev.as_ref(), || open_regular_at(dir, &name, inode))?;
                    tree.nodes.extend(stored);
                }
                NodeKind::Symlink => match dirfd::read_link_at(dir, &node.name) {
                    Ok(target) => {
                        node.symlink_target = target;
                        self.summary.other_nodes += 1;
                        tree.nodes.push(node);
                    }
                    Err(e) => self.fail(child, "cannot read symlink", e),
                },
                _ => {
                    self.summary.other_nodes += 1;
                    tree.nodes.push(node);
                }
            }
        }
    }

    /// Opens the handle of `frame` (at `path`) again, as the `..` of its
    /// child `child`; a directory that is not the one left (moved while it
    /// was read) loses its remaining entries, with an error.
    fn reopen(&mut self, path: &Path, frame: &mut DirFrame, child: Option<&File>) {
        let Some(child) = child else {
            self.fail(path, "cannot read directory again", "a directory inside it could not be opened again");
            return;
        };
        let opened = dirfd::open_dir_at(child, b"..").and_then(|h| {
            let m = h.metadata()?;
            if (m.dev(), m.ino()) == frame.identity {
                Ok(h)
            } else {
                Err(io::Error::other("moved while being backed up"))
            }
        });
        match opened {
            Ok(h) => frame.handle = Some(h),
            Err(e) => self.fail(path, "cannot read directory again", e),
        }
    }

    /// Stores the tree of a directory whose entries are all archived and
    /// returns its node; `None` when the tree is too large to store.
    fn finish_dir(&mut self, path: &Path, frame: DirFrame) -> Result<Option<Node>, Stop> {
        let DirFrame { mut node, tree, parent_subtree, .. } = frame;
        let Some(id) = self.store_tree(path, &tree)? else {
            return Ok(None);
        };
        node.subtree = Some(id);
        self.summary.dirs += 1;
        match parent_subtree {
            None => self.dirs.new += 1,
            Some(before) if before == id => self.dirs.unmodified += 1,
            Some(_) => self.dirs.changed += 1,
        }
        Ok(Some(node))
    }

    /// Stores a directory's tree: one tree blob when its encoding fits in
    /// `tree_part_len` bytes, otherwise its parts and a part list naming
    /// them (format.md §15.1). Returns the id the directory's node refers
    /// to, or `None` (reported) if a blob would exceed `MAX_BLOB_LEN`.
    fn store_tree(&mut self, path: &Path, tree: &Tree) -> Result<Option<Id>, Stop> {
        let mut blobs = tree.encode_split(self.tree_part_len);
        let mut ids: Vec<Id> = blobs.iter().map(|raw| self.repo.keys().tree_id(raw)).collect();
        if blobs.len() > 1 {
            let list = encode_part_list(&ids);
            ids.push(self.repo.keys().tree_id(&list));
            blobs.push(list);
        }
        // Only an entry over 64 MiB on its own (or a list of two million
        // parts) can make a blob too large.
        if let Some(big) = blobs.iter().find(|raw| raw.len() > MAX_BLOB_LEN as usize) {
            let reason = format!("{} entries; one tree blob would take {} bytes", tree.nodes.len(), big.len());
            self.fail(path, "directory too large", reason);
            return Ok(None);
        }
        for (raw, id) in blobs.into_iter().zip(&ids) {
            self.add_blob(BlobType::Tree, *id, raw)?;
        }
        Ok(ids.last().copied())
    }

    fn unchanged(&self, node: &Node, parent: Option<&Node>) -> Option<Vec<Id>> {
        let p = parent?;
        let same = p.kind == NodeKind::File
            && p.size == node.size
            && p.mtime_ns == node.mtime_ns
            && p.ctime_ns == node.ctime_ns
            && p.inode == node.inode;
        (same && p.content.iter().all(|id| self.known(id))).then(|| p.content.clone())
    }

    /// Archives a regular file; `open` opens it (see [`open_regular`]).
    fn archive_file(
        &mut self,
        path: &Path,
        mut node: Node,
        parent: Option<&Node>,
        open: impl FnOnce() -> io::Result<(File, fs::Metadata)>,
    ) -> Result<Option<Node>, Stop> {
        self.progress.file(path);
        if let Some(content) = self.unchanged(&node, parent) {
            node.content = content;
            self.summary.files_unchanged += 1;
            self.summary.total_bytes += node.size;
            self.progress.bytes(node.size);
            self.progress.file_done(path, FileAction::Unchanged, node.size);
            return Ok(Some(node));
        }
        let link_key = (node.device, node.inode);
        if node.links > 1 {
            if let Some((content, size)) = self.hardlinks.get(&link_key) {
                if *size == node.size {
                    node.content = content.clone();
                    self.count_file(path, &node, parent);
                    return Ok(Some(node));
                }
            }
        }
        let (file, mut before) = match open() {
            Ok(f) => f,
            Err(e) => {
                self.fail(path, "cannot open", e);
                return Ok(None);
            }
        };
        let mut attempt = 0;
        let (content, size) = loop {
            if let Some(hook) = &self.read_hook {
                hook(path, attempt);
            }
            let limit = before.len();
            let mut buf = std::mem::take(&mut self.buf);
            let result = self.read_content(&file, limit, &mut buf);
            self.buf = buf;
            let read = match result? {
                Ok(r) => r,
                Err(e) => {
                    self.fail(path, "cannot read", e);
                    return Ok(None);
                }
            };
            let after = match file.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.fail(path, "cannot stat", e);
                    return Ok(None);
                }
            };
            if read.1 == limit && FileState::of(&before) == FileState::of(&after) {
                break read;
            }
            if attempt == 1 {
                tracing::warn!(path = %path.display(), "file changed while it was read; stored as read");
                self.progress.changed(path);
                self.changed.push(path.to_path_buf());
                break read;
            }
            attempt += 1;
            tracing::debug!(path = %path.display(), "file changed while it was read; reading it again");
            let again = (&file).seek(SeekFrom::Start(0)).and_then(|_| file.metadata());
            before = match again {
                Ok(m) => m,
                Err(e) => {
                    self.fail(path, "cannot read again", e);
                    return Ok(None);
                }
            };
        };
        // The node describes the file as it was when the stored read began.
        let state = FileState::of(&before);
        node.content = content;
        node.size = size;
        node.mtime_ns = state.mtime_ns;
        node.ctime_ns = state.ctime_ns;
        if node.links > 1 {
            self.hardlinks.insert(link_key, (node.content.clone(), node.size));
        }
        self.count_file(path, &node, parent);
        Ok(Some(node))
    }

    fn count_file(&mut self, path: &Path, node: &Node, parent: Option<&Node>) {
        let action = match parent {
            Some(p) if p.kind == NodeKind::File => {
                self.summary.files_changed += 1;
                FileAction::Changed
            }
            _ => {
                self.summary.files_new += 1;
                FileAction::New
            }
        };
        self.summary.total_bytes += node.size;
        self.progress.file_done(path, action, node.size);
    }

    /// Chunks and hashes a file; the outer error stops the run, the inner one
    /// only this file.
    #[allow(clippy::type_complexity)]
    /// At most `limit` bytes are read, so that a file that keeps growing (a
    /// log being appended) is stored as it was when opened.
    fn read_content(&mut self, file: &File, limit: u64, buf: &mut Vec<u8>) -> Result<io::Result<(Vec<Id>, u64)>, Stop> {
        self.read_stream(file.take(limit), buf)
    }

    /// Archives what `reader` yields to its end as a regular file named
    /// `name`, owned by this user, mode 0644, modified now. The outer error
    /// stops the run, the inner one is the stream's.
    pub fn archive_stream(&mut self, name: Vec<u8>, reader: impl Read) -> Result<io::Result<Node>, Stop> {
        let mut node = Node::new(name, NodeKind::File);
        node.mode = 0o644;
        node.uid = crate::host::uid();
        node.gid = crate::host::gid();
        let now = crate::host::now_ns();
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.read_stream(reader, &mut buf);
        self.buf = buf;
        let (content, size) = match result? {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        node.content = content;
        node.size = size;
        (node.mtime_ns, node.ctime_ns) = (now, now);
        node.links = 1;
        let shown = PathBuf::from(OsStr::from_bytes(&node.name));
        self.count_file(&shown, &node, None);
        Ok(Ok(node))
    }

    /// Chunks, hashes and stores what `reader` yields.
    #[allow(clippy::type_complexity)]
    fn read_stream(&mut self, reader: impl Read, buf: &mut Vec<u8>) -> Result<io::Result<(Vec<Id>, u64)>, Stop> {
        let mut content = Vec::new();
        let mut size = 0u64;
        let repo = self.repo;
        let chunker = repo.chunker();
        for chunk in chunker.chunks(reader, buf) {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            let len = chunk.len() as u64;
            size += len;
            self.summary.bytes_read += len;
            let id = self.repo.keys().data_id(&chunk);
            content.push(id);
            self.add_blob(BlobType::Data, id, chunk)?;
            self.progress.bytes(len);
        }
        Ok(Ok((content, size)))
    }
}

/// What tells that a file's content moved: size, mtime and ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileState {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl FileState {
    fn of(meta: &fs::Metadata) -> FileState {
        FileState {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

/// Opens a regular file for reading without following a symlink and without
/// blocking on a FIFO that replaced it, and checks it is still the file that
/// was listed. Returns the file and its metadata as opened.
fn open_regular(path: &Path, inode: u64) -> io::Result<(File, fs::Metadata)> {
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.ino() != inode {
        return Err(io::Error::other("replaced while being backed up"));
    }
    Ok((f, meta))
}

/// [`open_regular`] for the entry `name` of the directory `dir`.
fn open_regular_at(dir: &File, name: &[u8], inode: u64) -> io::Result<(File, fs::Metadata)> {
    let f = dirfd::open_file_at(dir, name)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.ino() != inode {
        return Err(io::Error::other("replaced while being backed up"));
    }
    Ok((f, meta))
}

/// The name a top-level path gets in the snapshot: its last component.
pub fn root_name(path: &Path) -> Option<Vec<u8>> {
    path.file_name().map(OsStr::as_bytes).map(<[u8]>::to_vec)
}
