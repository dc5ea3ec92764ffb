//! Restoring a snapshot (or a path inside one) into a target directory. The
//! plan walks the trees and refuses any entry whose name could escape the
//! target; directories are created first, then every regular file, whose
//! content is read pack by pack in few ranged reads and written by parallel
//! workers (zero blocks become holes, so sparse files stay sparse); symlinks,
//! special files and hard links follow, and directory metadata is applied
//! last, deepest first. Nothing is written through a symlink. A file whose
//! data is damaged is not left behind half-written: it is removed and named.
//! Storage that refuses our credentials stops the restore.

mod content;
mod files;
mod ranges;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::GlobSet;

use crate::backend::ErrorClass;
use crate::format::tree::{validate_name, Node, NodeKind};
use crate::format::Id;
use crate::fsmeta;
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};
use files::FileTarget;
pub use ranges::{MAX_RANGE_GAP, MAX_RANGE_LEN};

/// What the restorer reports while it runs.
pub trait RestoreProgress: Send + Sync {
    /// Total bytes of file content to restore, once the plan is made.
    fn total(&self, _bytes: u64) {}
    fn bytes(&self, _n: u64) {}
    fn error(&self, _path: &str, _message: &str) {}
}

pub struct NoRestoreProgress;
impl RestoreProgress for NoRestoreProgress {}

pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (its contents land in the target).
    pub subpath: Vec<Vec<u8>>,
    pub include: Option<GlobSet>,
    pub exclude: Option<GlobSet>,
    /// Re-read every restored file and check it against its blob ids.
    pub verify: bool,
    /// Ranged reads in flight at least (more if the backend prefers more).
    pub workers: usize,
    /// Most entries the snapshot may have (format.md §22); more stops the
    /// restore before anything is written.
    pub max_entries: u64,
}

impl RestoreOptions {
    pub fn new(target: PathBuf) -> Self {
        RestoreOptions {
            target,
            subpath: Vec::new(),
            include: None,
            exclude: None,
            verify: false,
            max_entries: crate::format::MAX_SNAPSHOT_ENTRIES,
            workers: 2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        }
    }
}

#[derive(Default, Debug, serde::Serialize)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    pub verified_files: u64,
    /// `path: reason` for every entry that was not restored or not verified.
    pub errors: Vec<String>,
}

/// One entry to restore, with its path relative to the target.
struct Item {
    rel: PathBuf,
    node: Node,
}

/// Splits `a/b/c` into components, refusing ones that are not names.
pub fn split_subpath(s: &[u8]) -> Result<Vec<Vec<u8>>, RepoError> {
    let mut out = Vec::new();
    for c in s.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".") {
        validate_name(c).map_err(|e| RepoError::Invalid(format!("bad path inside the snapshot: {e}")))?;
        out.push(c.to_vec());
    }
    Ok(out)
}

fn display(rel: &Path) -> String {
    rel.display().to_string()
}

/// Trees loaded at once while planning: on remote storage each one not in
/// the cache is a round trip, and a snapshot has one per directory.
const TREES_IN_FLIGHT: usize = 16;

/// Walks the snapshot below `root` and lists what to restore, refusing
/// unsafe names. Subtrees are loaded up to [`TREES_IN_FLIGHT`] at once; the
/// list is sorted by path, so every directory precedes what is inside it.
async fn plan(
    repo: &Repository,
    index: &Arc<MasterIndex>,
    root: &Id,
    opts: &RestoreOptions,
    errors: &mut Vec<String>,
) -> Result<Vec<Item>, RepoError> {
    let mut tree = repo.load_tree(index, root).await?;
    let mut start = PathBuf::new();
    // Descend to the subpath.
    let mut single: Option<Node> = None;
    for (i, comp) in opts.subpath.iter().enumerate() {
        let node = tree.find(comp).cloned().ok_or_else(|| {
            RepoError::Invalid(format!(
                "`{}` is not in the snapshot",
                String::from_utf8_lossy(&opts.subpath[..=i].join(&b'/'))
            ))
        })?;
        start.push(std::ffi::OsStr::from_bytes(comp));
        if i + 1 == opts.subpath.len() && node.kind != NodeKind::Dir {
            single = Some(node);
            break;
        }
        let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            return Err(RepoError::Invalid(format!("`{}` is not a directory", start.display())));
        };
        tree = repo.load_tree(index, &sub).await?;
    }
    let mut items = Vec::new();
    if let Some(node) = single {
        items.push(Item { rel: PathBuf::from(std::ffi::OsStr::from_bytes(&node.name)), node });
        return Ok(items);
    }
    let mut walk_errors = Vec::new();
    let mut waiting: std::collections::VecDeque<(PathBuf, Id)> = std::collections::VecDeque::new();
    // Depth and length of the restored root's path inside the snapshot.
    let base = (opts.subpath.len(), opts.subpath.iter().map(|c| c.len() + 1).sum::<usize>());
    let mut walk = Walk { base, entries: 0, max_entries: opts.max_entries, errors: &mut walk_errors };
    walk.list(PathBuf::new(), tree, &mut items, &mut waiting)?;
    let mut loads = tokio::task::JoinSet::new();
    loop {
        while loads.len() < TREES_IN_FLIGHT {
            let Some((rel, sub)) = waiting.pop_front() else { break };
            let (repo, index) = (repo.clone(), index.clone());
            loads.spawn(async move {
                // A tree that storage failed to give transiently is asked for
                // again, as data ranges are.
                let mut attempt = 1;
                loop {
                    let tree = repo.load_tree(&index, &sub).await;
                    match &tree {
                        Err(RepoError::Backend(e)) if attempt < content::RANGE_ATTEMPTS => {
                            if let ErrorClass::Transient(after) = e.class() {
                                let pause = content::RANGE_RETRY_DELAY * (1 << (attempt - 1));
                                tokio::time::sleep(after.map_or(pause, |a| a.max(pause))).await;
                                attempt += 1;
                                continue;
                            }
                        }
                        _ => {}
                    }
                    return (rel, tree);
                }
            });
        }
        let Some(done) = loads.join_next().await else { break };
        let (rel, loaded) = done.map_err(|e| RepoError::Invalid(format!("loading a tree failed: {e}")))?;
        match loaded {
            Ok(tree) => walk.list(rel, tree, &mut items, &mut waiting)?,
            Err(RepoError::Backend(e)) if e.needs_login() => return Err(RepoError::Backend(e)),
            Err(RepoError::Backend(e)) if matches!(e.class(), ErrorClass::Transient(_)) => walk
                .errors
                .push(format!("{}: directory contents not restored, storage kept failing: {e}", display(&rel))),
            Err(e) => walk.errors.push(format!("{}: directory contents lost: {e}", display(&rel))),
        }
    }
    // Trees arrive in any order: sort, which also puts parents before children.
    items.sort_by(|a, b| a.rel.cmp(&b.rel));
    walk_errors.sort();
    errors.extend(walk_errors);
    Ok(filter(items, opts))
}

/// A path for messages, cut short if it is very long.
fn display_limited(rel: &Path) -> String {
    const SHOWN: usize = 200;
    let bytes = rel.as_os_str().as_bytes();
    if bytes.len() <= SHOWN {
        return display(rel);
    }
    format!("{}… ({} bytes)", String::from_utf8_lossy(&bytes[..SHOWN]), bytes.len())
}

/// The walk of a restore plan: where the restored root is in the snapshot,
/// how many entries were met, and what was refused.
struct Walk<'e> {
    /// (depth, path length with its trailing `/`) of the restored root.
    base: (usize, usize),
    entries: u64,
    max_entries: u64,
    errors: &'e mut Vec<String>,
}

impl Walk<'_> {
    /// Lists the entries of the tree of directory `dir`, refusing unsafe and
    /// duplicate names and entries beyond the limits of format.md §22, and
    /// queues the subtrees of its directories. Fails once the snapshot has
    /// more entries than allowed.
    fn list(
        &mut self,
        dir: PathBuf,
        tree: crate::format::tree::Tree,
        items: &mut Vec<Item>,
        waiting: &mut std::collections::VecDeque<(PathBuf, Id)>,
    ) -> Result<(), RepoError> {
        self.entries += tree.nodes.len() as u64;
        if self.entries > self.max_entries {
            return Err(RepoError::Invalid(format!(
                "the snapshot has more than {} entries (reached in {}); refusing to restore it",
                self.max_entries,
                display_limited(&dir)
            )));
        }
        list_tree(dir, tree, items, self.errors, waiting, self.base);
        Ok(())
    }
}

fn list_tree(
    dir: PathBuf,
    tree: crate::format::tree::Tree,
    items: &mut Vec<Item>,
    errors: &mut Vec<String>,
    waiting: &mut std::collections::VecDeque<(PathBuf, Id)>,
    base: (usize, usize),
) {
    let mut seen = HashSet::new();
    let depth = base.0 + dir.components().count() + 1;
    for node in tree.nodes {
        let rel = dir.join(std::ffi::OsStr::from_bytes(&node.name));
        if let Err(e) = crate::format::check_entry_limits(depth, base.1 + rel.as_os_str().len()) {
            errors.push(format!("{}: refused: {e}", display_limited(&rel)));
            continue;
        }
        if let Err(e) = validate_name(&node.name) {
            let shown = dir.join(String::from_utf8_lossy(&node.name).as_ref());
            errors.push(format!("{}: refused: {e}", display(&shown)));
            tracing::error!(path = %shown.display(), reason = %e, "refusing an unsafe tree entry");
            continue;
        }
        if !seen.insert(node.name.clone()) {
            errors.push(format!("{}: refused: duplicate name", display(&rel)));
            continue;
        }
        if node.kind == NodeKind::Dir {
            match node.subtree {
                Some(sub) => waiting.push_back((rel.clone(), sub)),
                None => errors.push(format!("{}: directory without contents", display(&rel))),
            }
        }
        items.push(Item { rel, node });
    }
}

fn matches_self_or_ancestor(set: &GlobSet, rel: &Path) -> bool {
    rel.ancestors().filter(|a| !a.as_os_str().is_empty()).any(|a| set.is_match(a))
}

/// Applies include and exclude patterns (matched against the path inside the
/// restored tree); directories are kept when anything below them is.
fn filter(items: Vec<Item>, opts: &RestoreOptions) -> Vec<Item> {
    if opts.include.is_none() && opts.exclude.is_none() {
        return items;
    }
    let keep_leaf = |rel: &Path| {
        let inc = opts.include.as_ref().is_none_or(|s| matches_self_or_ancestor(s, rel));
        let exc = opts.exclude.as_ref().is_some_and(|s| matches_self_or_ancestor(s, rel));
        inc && !exc
    };
    let mut needed_dirs: HashSet<PathBuf> = HashSet::new();
    for it in &items {
        if keep_leaf(&it.rel) {
            for a in it.rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
                needed_dirs.insert(a.to_path_buf());
            }
        }
    }
    items
        .into_iter()
        .filter(|it| keep_leaf(&it.rel) || (it.node.kind == NodeKind::Dir && needed_dirs.contains(&it.rel)))
        .collect()
}

/// Makes `path` a real directory: a symlink or file in the way is removed.
fn ensure_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(path)?;
            fs::create_dir(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(path),
        Err(e) => Err(e),
    }
}

/// Removes a non-directory in the way of a new entry at `path`.
fn clear_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the way")),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn apply_metadata(path: &Path, node: &Node, owners: bool) -> io::Result<()> {
    if owners {
        fsmeta::set_owner(path, node.uid, node.gid)?;
    }
    if node.kind != NodeKind::Symlink {
        fsmeta::set_mode(path, node.mode)?;
    }
    if !node.xattrs.is_empty() {
        if let Err(e) = fsmeta::write_xattrs(path, &node.xattrs) {
            tracing::warn!(path = %path.display(), error = %e, "extended attributes not restored");
        }
    }
    // Access times are not recorded (reading would change every tree);
    // a restored entry's access time is its modification time.
    fsmeta::set_times(path, node.mtime_ns, node.mtime_ns)
}

/// Restores the tree `root` of a snapshot according to `opts`.
pub async fn restore(
    repo: &Repository,
    index: Arc<MasterIndex>,
    root: &Id,
    opts: &RestoreOptions,
    progress: Arc<dyn RestoreProgress>,
) -> Result<RestoreOutcome, RepoError> {
    let mut outcome = RestoreOutcome::default();
    let items = plan(repo, &index, root, opts, &mut outcome.errors).await?;
    progress.total(items.iter().filter(|i| i.node.kind == NodeKind::File).map(|i| i.node.size).sum());
    let target = &opts.target;
    fs::create_dir_all(target).map_err(|e| RepoError::Invalid(format!("cannot create {}: {e}", target.display())))?;
    let owners = fsmeta::is_root();
    let note = |outcome: &mut RestoreOutcome, rel: &Path, msg: String| {
        tracing::error!(path = %rel.display(), error = %msg, "not restored");
        progress.error(&display(rel), &msg);
        outcome.errors.push(format!("{}: {msg}", display(rel)));
    };

    // 1. Directories, parents first. A directory that cannot be made takes
    //    its contents with it.
    let mut failed_dirs: Vec<PathBuf> = Vec::new();
    let under_failed = |rel: &Path, failed: &[PathBuf]| failed.iter().any(|f| rel.starts_with(f));
    for it in items.iter().filter(|i| i.node.kind == NodeKind::Dir) {
        if under_failed(&it.rel, &failed_dirs) {
            continue;
        }
        if let Err(e) = ensure_dir(&target.join(&it.rel)) {
            note(&mut outcome, &it.rel, format!("cannot create directory: {e}"));
            failed_dirs.push(it.rel.clone());
        } else {
            outcome.dirs += 1;
        }
    }

    // 2. Regular files: all created first, then their content is read pack
    //    by pack and written by parallel workers; a file is finished when its
    //    last blob is written. Later links to an inode already restored
    //    become hard links once every file is done.
    //    Items are in path order, so the first member of a link group met
    //    here is the first restored (format.md §24); a member whose content
    //    differs from the first's is restored on its own.
    let mut first_of_inode: HashMap<(u64, u64), &Item> = HashMap::new();
    let mut hardlinks: Vec<(&Item, PathBuf)> = Vec::new();
    let mut files = Vec::new();
    let mut recorded_sizes: HashMap<PathBuf, u64> = HashMap::new();
    for it in items.iter().filter(|i| i.node.kind == NodeKind::File) {
        if under_failed(&it.rel, &failed_dirs) {
            continue;
        }
        if it.node.links > 1 {
            let key = (it.node.device, it.node.inode);
            match first_of_inode.get(&key) {
                Some(first) if first.node.content == it.node.content => {
                    hardlinks.push((it, first.rel.clone()));
                    continue;
                }
                Some(_) => {}
                None => {
                    first_of_inode.insert(key, it);
                }
            }
        }
        recorded_sizes.insert(it.rel.clone(), it.node.size);
        files.push(FileTarget { rel: it.rel.clone(), path: target.join(&it.rel), node: it.node.clone() });
    }
    // Storage far away wants more reads overlapping their round trips.
    let reads_in_flight = repo.backend().preferred_reads_in_flight().map_or(opts.workers, |n| n.max(opts.workers));
    let contents =
        content::restore_contents(repo, index, files, reads_in_flight, owners, opts.verify, progress.clone()).await?;
    for (rel, bytes) in &contents.restored {
        outcome.files += 1;
        outcome.bytes += bytes;
        if opts.verify {
            outcome.verified_files += 1;
        }
        // The content is what is restored; a size field that disagrees with
        // it is reported, never used to cut or pad the file.
        if let Some(&recorded) = recorded_sizes.get(rel).filter(|&&size| size != *bytes) {
            note(
                &mut outcome,
                rel,
                format!("restored its {bytes} bytes of content, but the snapshot records a size of {recorded}"),
            );
        }
    }
    let failed_set: HashSet<PathBuf> = contents.failures.iter().map(|(p, _)| p.clone()).collect();
    for (rel, msg) in contents.failures {
        note(&mut outcome, &rel, msg);
    }

    // 3. Hard links, symlinks and special files.
    for (it, first) in hardlinks {
        if failed_set.contains(&first) {
            note(&mut outcome, &it.rel, format!("hard link target {} was not restored", display(&first)));
            continue;
        }
        let path = target.join(&it.rel);
        match clear_path(&path).and_then(|_| fs::hard_link(target.join(&first), &path)) {
            Ok(()) => outcome.links += 1,
            Err(e) => note(&mut outcome, &it.rel, format!("cannot create hard link: {e}")),
        }
    }
    for it in items.iter().filter(|i| !matches!(i.node.kind, NodeKind::File | NodeKind::Dir)) {
        if under_failed(&it.rel, &failed_dirs) {
            continue;
        }
        let path = target.join(&it.rel);
        let made = match it.node.kind {
            NodeKind::Symlink => clear_path(&path)
                .and_then(|_| std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&it.node.symlink_target), &path)),
            NodeKind::Socket => {
                tracing::debug!(path = %it.rel.display(), "sockets are recorded, not recreated");
                continue;
            }
            NodeKind::CharDevice | NodeKind::BlockDevice if !owners => {
                tracing::warn!(path = %it.rel.display(), "device nodes can only be restored as root");
                continue;
            }
            kind => clear_path(&path).and_then(|_| fsmeta::make_special(&path, kind, it.node.mode, it.node.rdev)),
        };
        match made.and_then(|_| apply_metadata(&path, &it.node, owners)) {
            Ok(()) => outcome.links += u64::from(it.node.kind == NodeKind::Symlink),
            Err(e) => note(&mut outcome, &it.rel, format!("cannot create {}: {e}", it.node.kind.name())),
        }
    }

    // 4. Directory metadata, deepest first, once nothing more is written inside.
    for it in items.iter().rev().filter(|i| i.node.kind == NodeKind::Dir) {
        if under_failed(&it.rel, &failed_dirs) {
            continue;
        }
        if let Err(e) = apply_metadata(&target.join(&it.rel), &it.node, owners) {
            note(&mut outcome, &it.rel, format!("cannot set metadata: {e}"));
        }
    }
    Ok(outcome)
}
