//! The read half of a snapshot: walks the source paths depth first, chunks and
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

use super::exclude::{sorted_has, Enter, Exclusions, IgnoreStack};
use super::pipeline::Pipeline;
use super::{Progress, ReadHook};
use crate::format::snapshot::Summary;
use crate::format::tree::{encode_part_list, Node, NodeKind, Tree};
use crate::format::{BlobType, Id, MAX_BLOB_LEN};
use crate::fsmeta;
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};

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
        self.archive_node(path, name, meta, parent)
    }

    fn archive_node(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        meta: fs::Metadata,
        parent: Option<&Node>,
    ) -> Result<Option<Node>, Stop> {
        if self.pipeline.has_failed() {
            return Err(Stop::Pipeline);
        }
        let mut node = fsmeta::node_from_metadata(name, &meta);
        match fsmeta::read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "extended attributes not read"),
        }
        match node.kind {
            NodeKind::Dir => return self.archive_dir(path, node, parent),
            NodeKind::File => return self.archive_file(path, node, parent),
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(target) => node.symlink_target = target.as_os_str().as_bytes().to_vec(),
                Err(e) => {
                    self.fail(path, "cannot read symlink", e);
                    return Ok(None);
                }
            },
            _ => {}
        }
        self.summary.other_nodes += 1;
        Ok(Some(node))
    }

    fn archive_dir(&mut self, path: &Path, mut node: Node, parent: Option<&Node>) -> Result<Option<Node>, Stop> {
        let entries = match fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.fail(path, "cannot read directory", e);
                return Ok(None);
            }
        };
        let mut children: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => children.push((e.file_name().as_bytes().to_vec(), e.path())),
                Err(e) => self.fail(path, "cannot list directory", e),
            }
        }
        children.sort();
        match self.exclusions.enter_dir(&mut self.ignores, path, |n| sorted_has(&children, n)) {
            Enter::Excluded(reason) => {
                tracing::debug!(path = %path.display(), %reason, "excluded");
                return Ok(None);
            }
            Enter::Entered(Some(problem)) => self.fail(path, "ignore file not fully applied", problem),
            Enter::Entered(None) => {}
        }
        let tree = self.archive_children(path, children, parent);
        self.ignores.leave();
        let tree = tree?;
        let Some(id) = self.store_tree(path, &tree)? else {
            return Ok(None);
        };
        node.subtree = Some(id);
        self.summary.dirs += 1;
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

    /// The nodes of a directory's entries, minus the excluded ones.
    fn archive_children(
        &mut self,
        path: &Path,
        children: Vec<(Vec<u8>, PathBuf)>,
        parent: Option<&Node>,
    ) -> Result<Tree, Stop> {
        let parent_tree = match parent.filter(|p| p.kind == NodeKind::Dir).and_then(|p| p.subtree) {
            Some(id) => match self.handle.block_on(self.repo.load_tree(self.index, &id)) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "parent tree unreadable; reading the directory in full");
                    None
                }
            },
            None => None,
        };
        let mut tree = Tree::default();
        for (name, child) in children {
            let meta = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    self.fail(&child, "cannot stat", e);
                    continue;
                }
            };
            if let Some(reason) = self.exclusions.entry(&self.ignores, &child, &meta, self.root_device) {
                tracing::debug!(path = %child.display(), %reason, "excluded");
                continue;
            }
            let prev = parent_tree.as_ref().and_then(|t| t.find(&name));
            if let Some(n) = self.archive_node(&child, name, meta, prev)? {
                tree.nodes.push(n);
            }
        }
        Ok(tree)
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

    fn archive_file(&mut self, path: &Path, mut node: Node, parent: Option<&Node>) -> Result<Option<Node>, Stop> {
        self.progress.file(path);
        if let Some(content) = self.unchanged(&node, parent) {
            node.content = content;
            self.summary.files_unchanged += 1;
            self.summary.total_bytes += node.size;
            self.progress.bytes(node.size);
            return Ok(Some(node));
        }
        let link_key = (node.device, node.inode);
        if node.links > 1 {
            if let Some((content, size)) = self.hardlinks.get(&link_key) {
                if *size == node.size {
                    node.content = content.clone();
                    self.count_file(&node, parent);
                    return Ok(Some(node));
                }
            }
        }
        let (file, mut before) = match open_regular(path, node.inode) {
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
        self.count_file(&node, parent);
        Ok(Some(node))
    }

    fn count_file(&mut self, node: &Node, parent: Option<&Node>) {
        match parent {
            Some(p) if p.kind == NodeKind::File => self.summary.files_changed += 1,
            _ => self.summary.files_new += 1,
        }
        self.summary.total_bytes += node.size;
    }

    /// Chunks and hashes a file; the outer error stops the run, the inner one
    /// only this file.
    #[allow(clippy::type_complexity)]
    /// At most `limit` bytes are read, so that a file that keeps growing (a
    /// log being appended) is stored as it was when opened.
    fn read_content(&mut self, file: &File, limit: u64, buf: &mut Vec<u8>) -> Result<io::Result<(Vec<Id>, u64)>, Stop> {
        let mut content = Vec::new();
        let mut size = 0u64;
        let repo = self.repo;
        let chunker = repo.chunker();
        for chunk in chunker.chunks(file.take(limit), buf) {
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

/// The name a top-level path gets in the snapshot: its last component.
pub fn root_name(path: &Path) -> Option<Vec<u8>> {
    path.file_name().map(OsStr::as_bytes).map(<[u8]>::to_vec)
}
