//! Restoring a snapshot (or a path inside one) into a target directory,
//! streaming: the entries are counted first (format.md §22, trees read
//! ahead in merged ranges), then the snapshot is walked depth first with an
//! explicit stack (`walk`), making directories, symlinks and special files
//! as it goes and handing regular files over in bounded batches whose
//! content is read pack by pack in few ranged reads and written by parallel
//! workers (zero blocks become holes, so sparse files stay sparse). Hard
//! links and directory metadata wait for the batches they depend on. Memory
//! follows the depth of the snapshot and the size of the window, not its
//! number of entries. Any entry whose name could escape the target is
//! refused, and nothing is written through a symlink: every entry is
//! reached relative to its directory's open handle (`dirs`), never by its
//! path, so a tree deeper than `PATH_MAX` allows to name restores whole. A file whose data is
//! damaged is not left behind half-written: it is removed and named.
//! Storage that refuses our credentials stops the restore. What the target
//! already holds is kept or replaced by the overwrite mode; with `delete`,
//! what the snapshot lacks is removed from each directory the restore makes,
//! only once its tree is read and never through a symlink. A dry run walks
//! the same way, writing nothing.

mod content;
mod dirs;
mod files;
mod ranges;
pub mod trees;
mod walk;

use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::GlobSet;

use crate::format::tree::{validate_name, Node, NodeKind};
use crate::format::Id;
use crate::fsmeta;
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};
pub use ranges::{MAX_RANGE_GAP, MAX_RANGE_LEN};

/// What the restorer reports while it runs.
pub trait RestoreProgress: Send + Sync {
    /// Total bytes of file content to restore, once the entries are counted
    /// (with include or exclude patterns: as files are met, growing).
    fn total(&self, _bytes: u64) {}
    fn bytes(&self, _n: u64) {}
    fn error(&self, _path: &str, _message: &str) {}
    /// What the restore does (or, in a dry run, would do) to an entry.
    fn action(&self, _action: RestoreAction, _path: &str) {}
}

/// What happens to an entry of the target (reported through
/// [`RestoreProgress::action`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreAction {
    /// Written where nothing was.
    Restore,
    /// Written over what was there.
    Update,
    /// Already there and kept as it is (its metadata set again with
    /// `--overwrite if-changed`).
    Unchanged,
    /// Left alone: there, and the overwrite mode keeps it.
    Skip,
    /// Removed from the target: the snapshot does not have it (`--delete`).
    Delete,
}

impl RestoreAction {
    pub fn name(self) -> &'static str {
        match self {
            RestoreAction::Restore => "restore",
            RestoreAction::Update => "update",
            RestoreAction::Unchanged => "unchanged",
            RestoreAction::Skip => "skip",
            RestoreAction::Delete => "delete",
        }
    }
}

/// What to do with an entry already in the target (restic's `--overwrite`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Always write the entry from the snapshot.
    #[default]
    Always,
    /// Keep a regular file whose size and modification time match the
    /// snapshot's (setting its metadata again); write the others.
    IfChanged,
    /// Write only where the snapshot's entry is newer (by modification
    /// time) than the one in the target.
    IfNewer,
    /// Never replace an entry of the target.
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = String;
    fn from_str(s: &str) -> Result<Overwrite, String> {
        match s {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "if-newer" => Ok(Overwrite::IfNewer),
            "never" => Ok(Overwrite::Never),
            _ => Err(format!("unknown overwrite mode `{s}` (always, if-changed, if-newer or never)")),
        }
    }
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
    /// What to do with entries already in the target.
    pub overwrite: Overwrite,
    /// Remove what the target holds and the snapshot does not, in the
    /// directories the restore makes (never through a symlink, never in a
    /// directory whose tree could not be read).
    pub delete: bool,
    /// Write nothing: report through [`RestoreProgress::action`] and the
    /// outcome what a restore would do.
    pub dry_run: bool,
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
            overwrite: Overwrite::Always,
            delete: false,
            dry_run: false,
            workers: 2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        }
    }
}

#[derive(Default, Debug, serde::Serialize)]
pub struct RestoreOutcome {
    /// Regular files, hard links included (as a snapshot counts them).
    pub files: u64,
    pub dirs: u64,
    /// Symbolic links.
    pub links: u64,
    pub bytes: u64,
    pub verified_files: u64,
    /// `path: reason` for every entry that was not restored or not verified.
    pub errors: Vec<String>,
    /// Entries not restored because a directory above them could not be
    /// made (each such directory is named in `errors` with its count).
    pub skipped: u64,
    /// Entries already in the target that were kept (by the overwrite mode).
    pub kept: u64,
    /// Entries removed from the target (`--delete`).
    pub deleted: u64,
}

impl RestoreOutcome {
    /// How many entries were not restored (or not verified).
    pub fn not_restored(&self) -> u64 {
        self.errors.len() as u64 + self.skipped
    }
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

/// A path for messages, cut short if it is very long.
fn display_limited(rel: &Path) -> String {
    const SHOWN: usize = 200;
    let bytes = rel.as_os_str().as_bytes();
    if bytes.len() <= SHOWN {
        return display(rel);
    }
    format!("{}… ({} bytes)", String::from_utf8_lossy(&bytes[..SHOWN]), bytes.len())
}

/// Appends `name` to `dir` and returns how many bytes that added (the name
/// and its separator), for [`pop_name`].
fn push_name(dir: &mut PathBuf, name: &[u8]) -> usize {
    let before = dir.as_os_str().len();
    dir.push(std::ffi::OsStr::from_bytes(name));
    dir.as_os_str().len() - before
}

/// Takes the last `added` bytes (a name and its separator, as
/// [`push_name`] added them) off `dir`.
fn pop_name(dir: &mut PathBuf, added: usize) {
    let mut bytes = std::mem::take(dir).into_os_string().into_vec();
    bytes.truncate(bytes.len().saturating_sub(added));
    *dir = PathBuf::from(std::ffi::OsString::from_vec(bytes));
}

/// Applies `node`'s metadata to the open file or directory `f`.
fn apply_metadata_fd(f: &fs::File, node: &Node, owners: bool, shown: &dyn std::fmt::Display) -> io::Result<()> {
    if owners {
        fsmeta::set_owner_fd(f, node.uid, node.gid)?;
    }
    fsmeta::set_mode_fd(f, node.mode)?;
    if !node.xattrs.is_empty() {
        if let Err(e) = fsmeta::write_xattrs_fd(f, &node.xattrs) {
            tracing::warn!(path = %shown, error = %e, "extended attributes not restored");
        }
    }
    // Access times are not recorded (reading would change every tree);
    // a restored entry's access time is its modification time.
    fsmeta::set_times_fd(f, node.mtime_ns, node.mtime_ns)
}

/// Applies `node`'s metadata to the entry `node.name` of `dir`, never
/// through a symlink (a symlink gets its own owner, xattrs and times).
fn apply_metadata_at(dir: &fs::File, node: &Node, owners: bool, shown: &dyn std::fmt::Display) -> io::Result<()> {
    let name = node.name.as_slice();
    if owners {
        fsmeta::set_owner_at(dir, name, node.uid, node.gid)?;
    }
    if node.kind != NodeKind::Symlink {
        fsmeta::set_mode_at(dir, name, node.mode)?;
    }
    if !node.xattrs.is_empty() {
        if let Err(e) = fsmeta::write_xattrs(&crate::dirfd::proc_path(dir, name), &node.xattrs) {
            tracing::warn!(path = %shown, error = %e, "extended attributes not restored");
        }
    }
    fsmeta::set_times_at(dir, name, node.mtime_ns, node.mtime_ns)
}

/// Restores the tree `root` of a snapshot according to `opts`.
pub async fn restore(
    repo: &Repository,
    index: Arc<MasterIndex>,
    root: &Id,
    opts: &RestoreOptions,
    progress: Arc<dyn RestoreProgress>,
) -> Result<RestoreOutcome, RepoError> {
    // Storage far away wants more reads overlapping their round trips.
    let reads_in_flight = repo.backend().preferred_reads_in_flight().map_or(opts.workers, |n| n.max(opts.workers));
    let loader = trees::TreeLoader::new(repo, index.clone(), reads_in_flight);
    let mut tree = loader.load(root).await?;
    // Descend to the subpath.
    let mut start = PathBuf::new();
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
        tree = loader.load(&sub).await?;
    }
    // Depth and length of the restored root's path inside the snapshot (of
    // the directory holding it when one file is restored).
    let root_depth = opts.subpath.len() - usize::from(single.is_some());
    let base = (root_depth, opts.subpath[..root_depth].iter().map(|c| c.len() + 1).sum::<usize>());
    let is_single = single.is_some();
    let root_tree = match single {
        // One file (or other non-directory) lands in the target itself.
        Some(node) => crate::format::tree::Tree { nodes: vec![node] },
        None => tree,
    };
    let census = trees::count_entries(&loader, &root_tree, base, opts.max_entries).await?;
    if opts.include.is_none() && opts.exclude.is_none() {
        progress.total(census.bytes);
    }
    let target = &opts.target;
    if !opts.dry_run {
        fs::create_dir_all(target)
            .map_err(|e| RepoError::Invalid(format!("cannot create {}: {e}", target.display())))?;
    }

    // One file restored into the target leaves the rest of it alone.
    let delete_in_target = opts.delete && !is_single;
    walk::Walker::new(repo, index, loader, opts, progress, reads_in_flight, base).run(root_tree, delete_in_target).await
}
