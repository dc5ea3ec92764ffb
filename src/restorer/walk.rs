//! The streaming walk of a restore: the snapshot below the restored root,
//! depth first in path order, with an explicit stack of the directories
//! being restored (each holding its decoded tree's entries still to visit,
//! dropped once its subtree is done). Directories are made as they are
//! entered (with include patterns, once something inside them is kept),
//! symlinks and special files as they are met, and regular files are handed
//! over in batches of bounded size, a few batches at a time, to be written
//! by `content`. Work that must wait for a batch, hard links to a file not
//! yet complete and the metadata of a directory whose files are still being
//! written, waits in a bounded queue. A directory that cannot be made is
//! named with the number of entries below it that were not restored.
//!
//! Every entry is reached relative to its directory's open handle (see
//! `dirs`): the walk keeps a cursor at the directory it is in, and the work
//! that waits (hard links, directory metadata) a cursor of its own. Each
//! file in flight holds its directory's handle; a batch is handed over
//! early once its files lie in as many directories as the limit on open
//! files leaves room for, so handles stay bounded however deep or wide the
//! tree.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::content::{restore_contents, Shared};
use super::dirs::{clear_at, split_last, Dir, DirCursor, OPEN_PER_CURSOR};
use super::files::{FileTarget, FilesOutcome};
use super::trees::{count_below, trees_ahead, TreeLoader};
use super::{
    apply_metadata_at, apply_metadata_fd, display, display_limited, pop_name, push_name, Overwrite, RestoreAction,
    RestoreOptions, RestoreOutcome, RestoreProgress,
};
use crate::backend::ErrorClass;
use crate::dirfd;
use crate::format::tree::{validate_name, Node, NodeKind, Tree};
use crate::format::{check_entry_limits, Id};
use crate::fsmeta;
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};

/// Most files in one batch, and most blob placements (a file's blobs): a
/// batch is the window within which blobs are grouped by pack, merged into
/// ranges and fetched once however many files share them.
const BATCH_FILES: usize = 2048;
const BATCH_PLACEMENTS: usize = 32 * 1024;
/// Batches being written while the walk fills the next one.
const BATCHES_RUNNING: usize = 2;
/// Most hard links and directory metadata waiting for batches; past it the
/// walk waits for every batch to finish.
const MAX_DEFERRED: usize = 4096;
/// Descriptors left for everything but directory handles: storage, the
/// cache, files being written or verified.
const FDS_RESERVED: usize = 256;

/// Most directories the files of one batch may lie in: what the limit on
/// open files leaves, after the cursors' handles and [`FDS_RESERVED`],
/// shared by the batches that may be in flight together.
fn batch_dirs_budget() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid out-parameter.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 1024 };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    let left = soft.saturating_sub(2 * OPEN_PER_CURSOR + FDS_RESERVED);
    (left / (BATCHES_RUNNING + 1)).clamp(16, BATCH_FILES)
}

/// The bytes of a path relative to the target.
fn bytes(rel: &Path) -> &[u8] {
    rel.as_os_str().as_bytes()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DirState {
    Made,
    /// Not made yet: nothing inside was kept by the include patterns so far.
    Lazy,
    /// Could not be made (or is below one that could not).
    Failed,
}

/// A directory being restored.
struct Frame {
    /// Its entries still to visit, last first.
    pending: Vec<Node>,
    /// Its own node, for its metadata (none for the restored root).
    node: Option<Node>,
    state: DirState,
    /// Length of its path relative to the target.
    rel_len: usize,
    /// Bytes its name added to the path.
    name_len: usize,
    /// Whether it or a directory above it matches an include pattern (or
    /// there is none).
    included: bool,
    /// The last batch that something inside it waits for.
    after: u64,
    /// Entries below it not restored because it could not be made.
    skipped: u64,
    /// Why it could not be made, on the directory that failed.
    failure: Option<String>,
    /// Subdirectories still to come whose trees were already read ahead.
    ahead: usize,
    /// With `--delete`, the sorted names of its tree until the entries of
    /// the target that are not among them are removed; none when its tree
    /// could not be read (nothing is removed there then).
    names: Option<Vec<Vec<u8>>>,
}

/// Work that waits until batch `after` is written.
enum Deferred {
    Link { rel: PathBuf, first: PathBuf, after: u64 },
    DirMetadata { rel: PathBuf, node: Node, after: u64 },
}

impl Deferred {
    fn after(&self) -> u64 {
        match self {
            Deferred::Link { after, .. } | Deferred::DirMetadata { after, .. } => *after,
        }
    }
}

#[derive(Clone, Copy)]
enum FirstState {
    /// In batch n, not yet written.
    Pending(u64),
    Restored,
    Failed,
}

/// The first restored member of a hard-link group (format.md §24), kept
/// while members of its group may still come.
struct LinkFirst {
    rel: PathBuf,
    content: blake3::Hash,
    state: FirstState,
    /// Members of the group not met yet (by its link count).
    unseen: u64,
}

struct Batch {
    seq: u64,
    handle: tokio::task::JoinHandle<Option<FilesOutcome>>,
    /// The first members of link groups it holds, with their group.
    firsts: Vec<(PathBuf, (u64, u64))>,
}

pub(super) struct Walker<'o> {
    opts: &'o RestoreOptions,
    loader: TreeLoader,
    shared: Arc<Shared>,
    progress: Arc<dyn RestoreProgress>,
    /// (depth, path length with its trailing `/`) of the restored root in the snapshot.
    base: (usize, usize),
    owners: bool,
    outcome: RestoreOutcome,
    /// Entries below the subtrees of refused directories, by tree, counted
    /// once however many refused directories hold the same subtree.
    refused_below: HashMap<Id, u64>,
    /// Path of the entry being visited, relative to the target.
    cur: PathBuf,
    stack: Vec<Frame>,
    /// The batch being filled.
    open: Vec<FileTarget>,
    open_placements: usize,
    open_firsts: Vec<(PathBuf, (u64, u64))>,
    /// Number of the batch being filled; batches are numbered from 1.
    open_seq: u64,
    /// Every batch up to this one is written.
    completed: u64,
    running: VecDeque<Batch>,
    deferred: VecDeque<Deferred>,
    firsts: HashMap<(u64, u64), LinkFirst>,
    /// Bytes of the files handed over, for progress with patterns.
    files_bytes: u64,
    /// Where the walk is in the target.
    dirs: DirCursor,
    /// Where the waiting work (links, directory metadata) last was.
    aside: DirCursor,
    /// Directories the open batch's files lie in (counted as they change),
    /// and the last one.
    batch_dirs: usize,
    last_dir: Option<Arc<Dir>>,
    dirs_budget: usize,
}

fn content_digest(content: &[Id]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for id in content {
        h.update(&id.0);
    }
    h.finalize()
}

impl<'o> Walker<'o> {
    pub fn new(
        repo: &Repository,
        index: Arc<MasterIndex>,
        loader: TreeLoader,
        opts: &'o RestoreOptions,
        progress: Arc<dyn RestoreProgress>,
        reads_in_flight: usize,
        base: (usize, usize),
    ) -> Walker<'o> {
        let owners = fsmeta::is_root();
        let shared = Arc::new(Shared::new(repo, index, progress.clone(), reads_in_flight, owners, opts.verify));
        Walker {
            opts,
            loader,
            shared,
            progress,
            base,
            owners,
            outcome: RestoreOutcome::default(),
            refused_below: HashMap::new(),
            cur: PathBuf::new(),
            stack: Vec::new(),
            open: Vec::new(),
            open_placements: 0,
            open_firsts: Vec::new(),
            open_seq: 1,
            completed: 0,
            running: VecDeque::new(),
            deferred: VecDeque::new(),
            firsts: HashMap::new(),
            files_bytes: 0,
            dirs: DirCursor::new(None),
            aside: DirCursor::new(None),
            batch_dirs: 0,
            last_dir: None,
            dirs_budget: batch_dirs_budget(),
        }
    }

    /// Restores the entries of `root` into the target; `delete_in_target`
    /// removes what the target holds and `root` does not.
    pub async fn run(mut self, root: Tree, delete_in_target: bool) -> Result<RestoreOutcome, RepoError> {
        // Everything below the target is reached relative to its handle.
        let target = match Dir::open_target(&self.opts.target) {
            Ok(dir) => Some(Arc::new(dir)),
            // A dry run into a target that does not exist.
            Err(_) if self.opts.dry_run => None,
            Err(e) => {
                return Err(RepoError::Invalid(format!("cannot open {}: {e}", self.opts.target.display())));
            }
        };
        self.dirs = DirCursor::new(target.clone());
        self.aside = DirCursor::new(target);
        let names = delete_in_target.then(|| sorted_names(&root.nodes));
        let mut pending = root.nodes;
        pending.reverse();
        self.stack.push(Frame {
            pending,
            node: None,
            state: DirState::Made,
            rel_len: 0,
            name_len: 0,
            included: self.opts.include.is_none(),
            after: 0,
            skipped: 0,
            failure: None,
            ahead: 0,
            names,
        });
        self.delete_extras(0);
        while !self.stack.is_empty() && !self.shared.is_aborted() {
            self.step().await;
        }
        if !self.shared.is_aborted() {
            self.dispatch().await;
        }
        while !self.running.is_empty() {
            self.complete_oldest().await;
        }
        if let Some(e) = self.shared.take_fatal() {
            return Err(RepoError::Backend(e));
        }
        self.drain(&HashSet::new());
        Ok(self.outcome)
    }

    fn note(&mut self, shown: String, msg: String) {
        tracing::error!(path = %shown, error = %msg, "not restored");
        self.progress.error(&shown, &msg);
        self.outcome.errors.push(format!("{shown}: {msg}"));
    }

    /// Names an entry that is not restored because of its name or its place
    /// (format.md §22); a refused directory takes everything below it along,
    /// and the report counts those entries too.
    async fn refuse(&mut self, shown: String, why: String, node: &Node) {
        let below = match node.subtree.filter(|_| node.kind == NodeKind::Dir) {
            Some(sub) => count_below(&self.loader, &mut self.refused_below, sub, self.opts.max_entries).await,
            None => 0,
        };
        if below == 0 {
            self.note(shown, format!("refused: {why}"));
        } else {
            self.outcome.skipped += below;
            let entries = if below == 1 { "1 entry below it was" } else { "entries below it were" };
            let entries = if below == 1 { entries.to_string() } else { format!("{below} {entries}") };
            self.note(shown, format!("refused: {why}; {entries} not restored"));
        }
    }

    fn frame(&mut self) -> &mut Frame {
        self.stack.last_mut().expect("a directory is being walked")
    }

    /// Visits the next entry of the innermost directory, or leaves it.
    async fn step(&mut self) {
        let Some(node) = self.frame().pending.pop() else {
            self.leave().await;
            return;
        };
        if let Err(e) = validate_name(&node.name) {
            let shown = self.cur.join(String::from_utf8_lossy(&node.name).as_ref());
            tracing::error!(path = %shown.display(), reason = %e, "refusing an unsafe tree entry");
            self.refuse(display(&shown), e.to_string(), &node).await;
            return;
        }
        let name_len = push_name(&mut self.cur, &node.name);
        if !self.visit(node, name_len).await {
            pop_name(&mut self.cur, name_len);
        }
    }

    /// Restores the entry at `self.cur`; returns whether it was a directory
    /// that is now being walked.
    async fn visit(&mut self, node: Node, name_len: usize) -> bool {
        let depth = self.base.0 + self.stack.len();
        if let Err(e) = check_entry_limits(depth, self.base.1 + self.cur.as_os_str().len()) {
            self.refuse(display_limited(&self.cur), e.to_string(), &node).await;
            return false;
        }
        let rel = self.cur.clone();
        let frame = self.frame();
        if frame.state == DirState::Failed {
            frame.skipped += 1;
            return match node.subtree.filter(|_| node.kind == NodeKind::Dir) {
                Some(sub) => self.enter(node, sub, name_len, true).await,
                None => false,
            };
        }
        if self.opts.exclude.as_ref().is_some_and(|set| set.is_match(&rel)) {
            return false;
        }
        let included = self.frame().included || self.opts.include.as_ref().is_some_and(|set| set.is_match(&rel));
        match node.kind {
            NodeKind::Dir => match node.subtree {
                Some(sub) => self.enter(node, sub, name_len, included).await,
                None => {
                    self.note(display(&rel), "directory without contents".into());
                    false
                }
            },
            _ if !included => false,
            _ if !self.make_ancestors() => {
                self.frame().skipped += 1;
                false
            }
            NodeKind::File => {
                self.file(rel, node).await;
                false
            }
            _ => {
                self.special(&rel, &node);
                false
            }
        }
    }

    /// Loads directory `node`'s tree and walks into it; `keep` makes it now.
    async fn enter(&mut self, node: Node, sub: Id, name_len: usize, keep: bool) -> bool {
        let frame = self.stack.last_mut().expect("a directory is being walked");
        if frame.ahead == 0 {
            let ahead = trees_ahead(sub, frame.pending.iter().rev());
            frame.ahead = ahead.len();
            self.loader.fetch_ahead(ahead).await;
        }
        let frame = self.frame();
        frame.ahead = frame.ahead.saturating_sub(1);
        let parent_failed = frame.state == DirState::Failed;
        let rel = self.cur.clone();
        let (mut pending, loaded) = match self.loader.load(&sub).await {
            Ok(tree) => (tree.nodes, true),
            Err(RepoError::Backend(e)) if e.needs_login() => {
                self.shared.abort(e);
                return false;
            }
            Err(_) if parent_failed => (Vec::new(), false),
            Err(RepoError::Backend(e)) if matches!(e.class(), ErrorClass::Transient(_)) => {
                self.note(display(&rel), format!("directory contents not restored, storage kept failing: {e}"));
                (Vec::new(), false)
            }
            Err(e) => {
                self.note(display(&rel), format!("directory contents lost: {e}"));
                (Vec::new(), false)
            }
        };
        let names = (self.opts.delete && loaded && !parent_failed).then(|| sorted_names(&pending));
        pending.reverse();
        let state = if parent_failed { DirState::Failed } else { DirState::Lazy };
        self.stack.push(Frame {
            pending,
            node: Some(node),
            state,
            rel_len: self.cur.as_os_str().len(),
            name_len,
            included: keep,
            after: 0,
            skipped: 0,
            failure: None,
            ahead: 0,
            names,
        });
        if keep && !parent_failed {
            self.make_ancestors();
        }
        true
    }

    /// Makes every directory on the stack that is not made yet, outermost
    /// first; returns whether the innermost one is made. A directory that
    /// cannot be made fails with everything below it.
    fn make_ancestors(&mut self) -> bool {
        for i in 0..self.stack.len() {
            match self.stack[i].state {
                DirState::Made => continue,
                DirState::Failed => return false,
                DirState::Lazy => {
                    let rel = &bytes(&self.cur)[..self.stack[i].rel_len];
                    let made = if self.opts.dry_run { Ok(()) } else { self.dirs.make(rel).map(drop) };
                    match made {
                        Ok(()) => {
                            self.stack[i].state = DirState::Made;
                            self.outcome.dirs += 1;
                            self.delete_extras(i);
                        }
                        Err(e) => {
                            self.stack[i].failure = Some(format!("cannot create directory: {e}"));
                            for frame in &mut self.stack[i..] {
                                frame.state = DirState::Failed;
                            }
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Leaves the innermost directory: applies its metadata now or once the
    /// batches it waits for are written, or reports it if it could not be made.
    async fn leave(&mut self) {
        let frame = self.stack.pop().expect("a directory is being walked");
        let rel = self.cur.clone();
        if !self.stack.is_empty() {
            pop_name(&mut self.cur, frame.name_len);
        }
        match frame.state {
            DirState::Made => {
                if let Some(node) = frame.node {
                    if frame.after > self.completed {
                        self.deferred.push_back(Deferred::DirMetadata { rel, node, after: frame.after });
                    } else {
                        self.dir_metadata(&rel, &node, false);
                    }
                }
            }
            DirState::Lazy => {}
            DirState::Failed => match frame.failure {
                Some(msg) => {
                    self.outcome.skipped += frame.skipped;
                    let msg = format!("{msg}; {} entries below it were not restored", frame.skipped);
                    self.note(display_limited(&rel), msg);
                }
                None => {
                    if let Some(parent) = self.stack.last_mut() {
                        parent.skipped += frame.skipped;
                    }
                }
            },
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.after = parent.after.max(frame.after);
        }
        if self.deferred.len() > MAX_DEFERRED {
            self.dispatch().await;
            while !self.running.is_empty() {
                self.complete_oldest().await;
            }
        }
    }

    /// Applies the metadata of the directory at `rel`, reached by the
    /// walk's cursor or, for waiting work, the other one.
    fn dir_metadata(&mut self, rel: &Path, node: &Node, aside: bool) {
        if self.opts.dry_run {
            return;
        }
        let cursor = if aside { &mut self.aside } else { &mut self.dirs };
        let applied = cursor.open(bytes(rel)).and_then(|dir| {
            // Up first, through its `..` while its mode still lets us:
            // nothing below it is reached again.
            let _ = cursor.open(split_last(bytes(rel)).0);
            apply_metadata_fd(dir.file(), node, self.owners, &rel.display())
        });
        if let Err(e) = applied {
            self.note(display_limited(rel), format!("cannot set metadata: {e}"));
        }
    }

    /// A regular file: a hard link of the first member of its link group
    /// met before, or a file for the open batch.
    async fn file(&mut self, rel: PathBuf, node: Node) {
        let Some(action) = self.decide(&rel, &node) else { return };
        let dir = if self.opts.dry_run {
            None
        } else {
            match self.dirs.open(split_last(bytes(&rel)).0) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    self.note(display_limited(&rel), format!("cannot create: {e}"));
                    return;
                }
            }
        };
        if node.links > 1 {
            let key = (node.device, node.inode);
            let digest = content_digest(&node.content);
            match self.firsts.get_mut(&key) {
                Some(first) => {
                    first.unseen = first.unseen.saturating_sub(1);
                    let (first_rel, state, same) = (first.rel.clone(), first.state, first.content == digest);
                    if first.unseen == 0 {
                        self.firsts.remove(&key);
                    }
                    if same {
                        match state {
                            FirstState::Restored => self.link(&rel, &first_rel, false),
                            FirstState::Failed => self.link_target_lost(&rel, &first_rel),
                            FirstState::Pending(after) => {
                                let frame = self.frame();
                                frame.after = frame.after.max(after);
                                self.deferred.push_back(Deferred::Link { rel, first: first_rel, after });
                            }
                        }
                        return;
                    }
                    // A member whose content differs is restored on its own.
                }
                None => {
                    // A dry run writes nothing: its first members count as restored.
                    let state =
                        if self.opts.dry_run { FirstState::Restored } else { FirstState::Pending(self.open_seq) };
                    let first = LinkFirst { rel: rel.clone(), content: digest, state, unseen: node.links - 1 };
                    self.firsts.insert(key, first);
                    if !self.opts.dry_run {
                        self.open_firsts.push((rel.clone(), key));
                    }
                }
            }
        }
        self.progress.action(action, &display(&rel));
        if self.opts.dry_run {
            self.outcome.files += 1;
            self.outcome.bytes += node.size;
            return;
        }
        let Some(dir) = dir else { return };
        let seq = self.open_seq;
        let frame = self.frame();
        frame.after = frame.after.max(seq);
        self.open_placements += node.content.len();
        self.files_bytes += node.size;
        if !self.last_dir.as_ref().is_some_and(|last| Arc::ptr_eq(last, &dir)) {
            self.batch_dirs += 1;
            self.last_dir = Some(dir.clone());
        }
        self.open.push(FileTarget { rel, dir, node });
        if self.open.len() >= BATCH_FILES
            || self.open_placements >= BATCH_PLACEMENTS
            || self.batch_dirs >= self.dirs_budget
        {
            self.dispatch().await;
        }
    }

    /// Makes `rel` a hard link of `first`; `waited` when it waited for
    /// `first` to be written (it is then reached by the other cursor).
    fn link(&mut self, rel: &Path, first: &Path, waited: bool) {
        if self.opts.dry_run {
            self.outcome.links += 1;
            return;
        }
        match self.make_link(bytes(rel), bytes(first), waited) {
            // A hard link is a file of the snapshot, counted as one (as the
            // snapshot's summary counts it).
            Ok(()) => self.outcome.files += 1,
            Err(e) => self.note(display_limited(rel), format!("cannot create hard link: {e}")),
        }
    }

    fn make_link(&mut self, rel: &[u8], first: &[u8], waited: bool) -> std::io::Result<()> {
        let (first_parent, first_name) = split_last(first);
        let (parent, name) = split_last(rel);
        let first_dir = self.aside.open(first_parent)?;
        let dir = if waited { self.aside.open(parent)? } else { self.dirs.open(parent)? };
        clear_at(dir.file(), name)?;
        dirfd::link_at(first_dir.file(), first_name, dir.file(), name)
    }

    fn link_target_lost(&mut self, rel: &Path, first: &Path) {
        self.note(display(rel), format!("hard link target {} was not restored", display(first)));
    }

    /// Symlinks and special files, made at once.
    fn special(&mut self, rel: &Path, node: &Node) {
        match node.kind {
            NodeKind::Socket => {
                tracing::debug!(path = %rel.display(), "sockets are recorded, not recreated");
                return;
            }
            NodeKind::CharDevice | NodeKind::BlockDevice if !self.owners => {
                tracing::warn!(path = %rel.display(), "device nodes can only be restored as root");
                return;
            }
            _ => {}
        }
        let Some(action) = self.decide(rel, node) else { return };
        self.progress.action(action, &display(rel));
        if self.opts.dry_run {
            self.outcome.links += u64::from(node.kind == NodeKind::Symlink);
            return;
        }
        let owners = self.owners;
        let made = self.dirs.open(split_last(bytes(rel)).0).and_then(|dir| {
            let (dir, name) = (dir.file(), node.name.as_slice());
            clear_at(dir, name)?;
            match node.kind {
                NodeKind::Symlink => dirfd::symlink_at(&node.symlink_target, dir, name)?,
                kind => dirfd::mknod_at(dir, name, fsmeta::special_file_type(kind)?, node.mode, node.rdev)?,
            }
            apply_metadata_at(dir, node, owners, &rel.display())
        });
        match made {
            Ok(()) => self.outcome.links += u64::from(node.kind == NodeKind::Symlink),
            Err(e) => self.note(display_limited(rel), format!("cannot create {}: {e}", node.kind.name())),
        }
    }

    /// What to do with the non-directory `node` at `rel`, by what the target
    /// holds there and the overwrite mode: the action to write it, or none
    /// when what is there stays (counted as kept, reported, and with
    /// `if-changed` given the snapshot's metadata). With `--delete`, a
    /// directory in the way of an entry to write is removed.
    fn decide(&mut self, rel: &Path, node: &Node) -> Option<RestoreAction> {
        use std::os::unix::fs::MetadataExt;
        // Nothing there when the directory is not there (a dry run) either.
        let Ok(dir) = self.dirs.open(split_last(bytes(rel)).0) else { return Some(RestoreAction::Restore) };
        let name = node.name.as_slice();
        let Ok(existing) = dirfd::metadata_at(dir.file(), name) else { return Some(RestoreAction::Restore) };
        let existing_mtime_ns = existing.mtime() * 1_000_000_000 + existing.mtime_nsec();
        let unchanged = match node.kind {
            NodeKind::File => existing.is_file() && existing.len() == node.size && existing_mtime_ns == node.mtime_ns,
            NodeKind::Symlink => {
                existing.is_symlink() && dirfd::read_link_at(dir.file(), name).is_ok_and(|t| t == node.symlink_target)
            }
            _ => false,
        };
        let keep = match self.opts.overwrite {
            Overwrite::Always => false,
            Overwrite::IfChanged => unchanged,
            Overwrite::IfNewer => existing_mtime_ns >= node.mtime_ns,
            Overwrite::Never => true,
        };
        if keep {
            self.outcome.kept += 1;
            if self.opts.overwrite == Overwrite::IfChanged {
                self.progress.action(RestoreAction::Unchanged, &display(rel));
                if !self.opts.dry_run {
                    if let Err(e) = apply_metadata_at(dir.file(), node, self.owners, &rel.display()) {
                        self.note(display_limited(rel), format!("cannot set metadata: {e}"));
                    }
                }
            } else {
                self.progress.action(RestoreAction::Skip, &display(rel));
            }
            return None;
        }
        if existing.is_dir() && self.opts.delete {
            self.progress.action(RestoreAction::Delete, &display(rel));
            self.outcome.deleted += 1;
            if !self.opts.dry_run {
                if let Err(e) = dirfd::remove_all_at(dir.file(), name) {
                    self.note(display_limited(rel), format!("cannot remove the directory in the way: {e}"));
                    return None;
                }
            }
        }
        Some(RestoreAction::Update)
    }

    /// With `--delete`, removes the entries of the directory of stack frame
    /// `i` (just made, or found) that its tree does not name. Nothing is
    /// removed through a symlink: the directory is reached from the target
    /// down without following one, and what is removed is removed relative
    /// to its handle.
    fn delete_extras(&mut self, i: usize) {
        let Some(names) = self.stack[i].names.take() else { return };
        let rel_bytes = bytes(&self.cur)[..self.stack[i].rel_len].to_vec();
        let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&rel_bytes));
        let listed = self.dirs.open(&rel_bytes).and_then(|dir| dirfd::list_dir(dir.file()).map(|l| (dir, l)));
        let (dir, listed) = match listed {
            Ok(listed) => listed,
            // Not made in a dry run, or (found in the way) not a directory.
            Err(_) if self.opts.dry_run => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.note(
                    display_limited(&rel),
                    format!("cannot list the directory to delete what the snapshot lacks: {e}"),
                );
                return;
            }
        };
        let mut extras: Vec<Vec<u8>> =
            listed.into_iter().filter(|name| names.binary_search_by(|n| n.as_slice().cmp(name)).is_err()).collect();
        extras.sort();
        for name in extras {
            let child = rel.join(std::ffi::OsStr::from_bytes(&name));
            self.progress.action(RestoreAction::Delete, &display(&child));
            if !self.opts.dry_run {
                if let Err(e) = dirfd::remove_all_at(dir.file(), &name) {
                    self.note(display_limited(&child), format!("cannot delete: {e}"));
                    continue;
                }
            }
            self.outcome.deleted += 1;
        }
    }

    /// Hands the open batch over to be written, waiting for the oldest
    /// running batch when too many are.
    async fn dispatch(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let files = std::mem::take(&mut self.open);
        let firsts = std::mem::take(&mut self.open_firsts);
        self.open_placements = 0;
        self.batch_dirs = 0;
        self.last_dir = None;
        if self.opts.include.is_some() || self.opts.exclude.is_some() {
            self.progress.total(self.files_bytes);
        }
        let handle = tokio::spawn(restore_contents(self.shared.clone(), files));
        self.running.push_back(Batch { seq: self.open_seq, handle, firsts });
        self.open_seq += 1;
        while self.running.len() > BATCHES_RUNNING {
            self.complete_oldest().await;
        }
    }

    /// Waits for the oldest running batch, counts what became of its files,
    /// and does the work that waited for it.
    async fn complete_oldest(&mut self) {
        let Some(batch) = self.running.pop_front() else { return };
        let mut died = false;
        let files = match batch.handle.await {
            Ok(Some(files)) => files,
            // Stopped: storage wants new credentials.
            Ok(None) => {
                self.completed = batch.seq;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "a restore batch failed");
                died = true;
                self.outcome.errors.push(format!("files of one batch not restored: a restore worker failed: {e}"));
                FilesOutcome { restored: Vec::new(), failures: Vec::new() }
            }
        };
        for (rel, bytes, recorded) in files.restored {
            self.outcome.files += 1;
            self.outcome.bytes += bytes;
            if self.opts.verify {
                self.outcome.verified_files += 1;
            }
            // The content is what is restored; a size field that disagrees
            // with it is reported, never used to cut or pad the file.
            if recorded != bytes {
                self.note(
                    display(&rel),
                    format!("restored its {bytes} bytes of content, but the snapshot records a size of {recorded}"),
                );
            }
        }
        let mut failed: HashSet<PathBuf> = HashSet::new();
        for (rel, msg) in files.failures {
            self.note(display(&rel), msg);
            failed.insert(rel);
        }
        for (rel, key) in batch.firsts {
            // The files of a batch that died are not restored either.
            let restored = !died && !failed.contains(&rel);
            if !restored {
                failed.insert(rel.clone());
            }
            if let Some(first) = self.firsts.get_mut(&key).filter(|f| f.rel == rel) {
                first.state = if restored { FirstState::Restored } else { FirstState::Failed };
            }
        }
        self.completed = batch.seq;
        self.drain(&failed);
    }

    /// Does the waiting work whose batches are written; `failed` holds the
    /// files of the batch just written that were not restored.
    fn drain(&mut self, failed: &HashSet<PathBuf>) {
        let mut waiting = VecDeque::new();
        while let Some(work) = self.deferred.pop_front() {
            if work.after() > self.completed {
                waiting.push_back(work);
                continue;
            }
            match work {
                Deferred::Link { rel, first, .. } => {
                    if failed.contains(&first) {
                        self.link_target_lost(&rel, &first);
                    } else {
                        self.link(&rel, &first, true);
                    }
                }
                Deferred::DirMetadata { rel, node, .. } => self.dir_metadata(&rel, &node, true),
            }
        }
        self.deferred = waiting;
    }
}

/// The names of `nodes`, sorted (for lookups while deleting).
fn sorted_names(nodes: &[Node]) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = nodes.iter().map(|n| n.name.clone()).collect();
    names.sort_unstable();
    names
}
