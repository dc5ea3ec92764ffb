//! Taking a snapshot: choose the parent, walk and store, then commit in the
//! order packs → index → snapshot, so that a run interrupted at any point
//! leaves a repository that checks clean and whose packs the next run reuses.

pub mod exclude;
pub mod pipeline;
pub mod walker;

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, Tree};
use crate::format::{BlobType, Id, ObjectKind};
use crate::host;
use crate::repo::lock::LockGuard;
use crate::repo::{RepoError, Repository};
use exclude::{Enter, IgnoreStack};
pub use exclude::{ExcludeError, ExcludeOptions, Exclusions};
pub use pipeline::{signal_name, BudgetSpent, RunBudget, StopRequest};
use pipeline::{Pipeline, PipelineOptions};
use walker::{root_name, Stop, Walker};

/// What the archiver reports while it runs. The CLI draws it; tests ignore it.
pub trait Progress: Send + Sync {
    /// A regular file is being looked at.
    fn file(&self, _path: &Path) {}
    /// A regular file is in the snapshot: new, changed since the parent, or
    /// unchanged (not read again); `size` is its content's size.
    fn file_done(&self, _path: &Path, _action: FileAction, _size: u64) {}
    /// Bytes of file content processed (read, or skipped as unchanged).
    fn bytes(&self, _n: u64) {}
    /// A path could not be backed up.
    fn error(&self, _path: &Path, _message: &str) {}
    /// A file kept changing while it was read; what was read last is stored.
    fn changed(&self, _path: &Path) {}
    /// Bytes of file content read (counted by [`Progress::bytes`]) whose new
    /// data is not stored yet: queued, being sealed or packed, or in a pack
    /// being uploaded. Read bytes minus these are the bytes settled, whose
    /// pace over the run is the observed upload pace, waits included.
    fn unstored(&self, _bytes: u64) {}
}

/// Directories new, changed and unmodified since the parent snapshot: a
/// directory is unmodified when its tree is the parent's, byte for byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirCounts {
    pub new: u64,
    pub changed: u64,
    pub unmodified: u64,
}

/// What one snapshot run did, as restic's summary tells it: plain counts
/// (serialisable as they are) for the command line to print.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RunSummary {
    /// The snapshot saved (full id).
    pub snapshot_id: String,
    /// The parent snapshot compared against (full id), if any.
    pub parent: Option<String>,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    /// Symlinks, devices, pipes and sockets.
    pub other_entries: u64,
    /// Regular files in the snapshot (hard links counted as files).
    pub total_files_processed: u64,
    /// Their size in bytes.
    pub total_bytes_processed: u64,
    /// Bytes read from disk (unmodified files are not read).
    pub bytes_read: u64,
    /// Plaintext bytes of the blobs this run added.
    pub data_added: u64,
    /// What those blobs take in the repository (compressed and sealed).
    pub data_added_stored: u64,
    /// Paths that could not be read.
    pub errors: u64,
    /// Wall time of the whole command, opening the repository included.
    pub total_duration_seconds: f64,
}

impl RunSummary {
    /// The summary of `outcome`, with the command's wall time `wall`.
    pub fn new(outcome: &SnapshotOutcome, wall: std::time::Duration) -> RunSummary {
        let s = &outcome.snapshot.summary;
        RunSummary {
            snapshot_id: outcome.id.to_hex(),
            parent: outcome.snapshot.parent.map(|p| p.to_hex()),
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unchanged,
            dirs_new: outcome.dirs.new,
            dirs_changed: outcome.dirs.changed,
            dirs_unmodified: outcome.dirs.unmodified,
            other_entries: s.other_nodes,
            total_files_processed: s.files_new + s.files_changed + s.files_unchanged,
            total_bytes_processed: s.total_bytes,
            bytes_read: s.bytes_read,
            data_added: s.bytes_added,
            data_added_stored: s.bytes_stored,
            errors: s.errors,
            total_duration_seconds: wall.as_secs_f64(),
        }
    }
}

/// What became of a file, for [`Progress::file_done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAction {
    New,
    Changed,
    Unchanged,
}

impl FileAction {
    /// restic's name for it: `new`, `modified` or `unchanged`.
    pub fn name(self) -> &'static str {
        match self {
            FileAction::New => "new",
            FileAction::Changed => "modified",
            FileAction::Unchanged => "unchanged",
        }
    }
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Which snapshot to compare against to skip unchanged files.
#[derive(Clone, Debug, Default)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Latest,
    Id(String),
    /// Read every file.
    None,
}

/// Called just before each read of a regular file's content, with the file
/// and the attempt (0, then 1 when the file changed and is read again). Tests
/// use it to change a file at an exact moment; `None` in normal runs.
pub type ReadHook = Arc<dyn Fn(&Path, u32) + Send + Sync>;

pub struct SnapshotOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub hostname: String,
    pub parent: ParentChoice,
    pub exclusions: Exclusions,
    pub pipeline: PipelineOptions,
    /// Limits after which the run stops cleanly without a snapshot.
    pub budget: RunBudget,
    pub read_hook: Option<ReadHook>,
    /// Largest tree blob the archiver writes before it splits a directory
    /// into parts (format.md §15.1): `MAX_BLOB_LEN`; tests lower it to split
    /// small directories.
    pub tree_part_len: usize,
    /// The snapshot's time (default: when the run started).
    pub time_ns: Option<i64>,
    /// Save no snapshot when the tree is the parent's.
    pub skip_if_unchanged: bool,
    /// Read and chunk everything, write nothing: no pack, index, snapshot
    /// or lock; the outcome says what would have been added.
    pub dry_run: bool,
    /// Back up this stream as one file instead of `paths`.
    pub stream: Option<StreamSource>,
}

/// A stream backed up as one regular file (standard input, or the output
/// of a command), stored at the snapshot's top level under `name`.
pub struct StreamSource {
    pub name: Vec<u8>,
    pub reader: Box<dyn std::io::Read + Send>,
    /// Called once the stream is read to its end; an error (the command
    /// failed) fails the snapshot, which then saves nothing.
    pub finish: Option<Box<dyn FnOnce() -> Result<(), String> + Send>>,
}

impl SnapshotOptions {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        SnapshotOptions {
            paths,
            tags: Vec::new(),
            hostname: host::hostname(),
            parent: ParentChoice::Latest,
            exclusions: Exclusions::default(),
            pipeline: PipelineOptions::default(),
            budget: RunBudget::default(),
            read_hook: None,
            tree_part_len: crate::format::MAX_BLOB_LEN as usize,
            time_ns: None,
            skip_if_unchanged: false,
            dry_run: false,
            stream: None,
        }
    }
}

/// A committed snapshot, the paths that could not be read and the files that
/// kept changing while they were read (stored as last read, possibly torn).
pub struct SnapshotOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
    pub errors: Vec<(PathBuf, String)>,
    pub changed: Vec<PathBuf>,
    /// Directories new, changed and unmodified since the parent.
    pub dirs: DirCounts,
    pub recovered_packs: usize,
    /// Packs no index lists whose header could not be read, with the reason:
    /// nothing in them was reused (see `repo::describe_unreadable_pack`).
    pub unreadable_packs: Vec<(Id, String)>,
    /// Whether the snapshot was saved: not in a dry run, nor when
    /// `skip_if_unchanged` found the parent's tree (`id` is the parent's then).
    pub saved: bool,
}

/// Makes a path absolute and lexically clean, without resolving symlinks.
pub fn absolute_path(p: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

async fn choose_parent(
    repo: &Repository,
    opts: &SnapshotOptions,
    paths: &[Vec<u8>],
) -> Result<Option<(Id, Snapshot)>, RepoError> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Id(spec) => repo.find_snapshot(spec).await.map(Some),
        ParentChoice::Latest => {
            let (snaps, _) = repo.snapshots().await?;
            let mut wanted = paths.to_vec();
            wanted.sort();
            Ok(snaps.into_iter().rev().find(|(_, s)| {
                let mut p = s.paths.clone();
                p.sort();
                s.hostname == opts.hostname && p == wanted
            }))
        }
    }
}

/// Takes a snapshot of `opts.paths` (or of `opts.stream`). The caller holds
/// a shared lock (none in a dry run), which is checked for freshness before
/// anything is committed. A path that does not exist is left out and named
/// in the outcome's errors; when none exists, nothing is done.
pub async fn snapshot(
    repo: &Repository,
    lock: Option<&LockGuard>,
    mut opts: SnapshotOptions,
    progress: Arc<dyn Progress>,
) -> Result<SnapshotOutcome, RepoError> {
    let start_ns = host::now_ns();
    let mut stream = opts.stream.take();
    if let Some(s) = &stream {
        crate::format::tree::validate_name(&s.name)
            .map_err(|e| RepoError::Invalid(format!("cannot store the stream under that name: {e}")))?;
        let mut path = b"/".to_vec();
        path.extend_from_slice(&s.name);
        opts.paths = vec![PathBuf::from(std::ffi::OsString::from_vec(path))];
    }
    if opts.paths.is_empty() {
        return Err(RepoError::Invalid("nothing to back up: give at least one path".into()));
    }
    let mut roots: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    let mut missing: Vec<(PathBuf, String)> = Vec::new();
    // Every path given, with its name, whether it exists or not: names must
    // be unique, and a missing path stays among the snapshot's paths so that
    // the next run of the same command finds this snapshot as its parent.
    let mut named: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    for p in &opts.paths {
        let abs = absolute_path(p).map_err(|e| RepoError::Invalid(format!("{}: {e}", p.display())))?;
        let exists = match std::fs::symlink_metadata(&abs) {
            _ if stream.is_some() => true,
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(path = %abs.display(), error = %e, "skipped: cannot back up");
                progress.error(&abs, &format!("cannot back up: {e}"));
                missing.push((abs.clone(), format!("cannot back up: {e}")));
                false
            }
        };
        let name = root_name(&abs).ok_or_else(|| {
            RepoError::Invalid(format!(
                "{} has no name to store it under; back up the directories inside it",
                abs.display()
            ))
        })?;
        if let Some((_, other)) = named.iter().find(|(n, _)| *n == name) {
            return Err(RepoError::Invalid(format!(
                "{} and {} would both be stored as `{}`",
                other.display(),
                abs.display(),
                String::from_utf8_lossy(&name)
            )));
        }
        if exists {
            roots.push((name.clone(), abs.clone()));
        }
        named.push((name, abs));
    }
    if roots.is_empty() {
        let named: Vec<String> = missing.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
        return Err(RepoError::Invalid(format!("nothing to back up: {}", named.join("; "))));
    }
    roots.sort();
    named.sort();
    let abs_paths: Vec<Vec<u8>> = named.iter().map(|(_, p)| p.as_os_str().as_bytes().to_vec()).collect();

    let mut index = repo.load_index_lenient().await?;
    // Packs left by an interrupted run are indexed (an index write), except in a dry run.
    let (recovered_packs, unreadable_packs) =
        if opts.dry_run { (0, Vec::new()) } else { repo.index_unindexed_packs(&mut index).await? };
    let parent = choose_parent(repo, &opts, &abs_paths).await?;
    let parent_root = match &parent {
        Some((id, s)) => match repo.load_tree(&index, &s.tree).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(parent = %id.short(), error = %e, "parent snapshot unreadable; reading every file");
                None
            }
        },
        None => None,
    };
    tracing::info!(parent = parent.as_ref().map(|(id, _)| id.short()), "snapshot started");
    let (opts_dry_run, skip_if_unchanged, time_ns) = (opts.dry_run, opts.skip_if_unchanged, opts.time_ns);
    let (parent_id, parent_tree) = (parent.as_ref().map(|(id, _)| *id), parent.as_ref().map(|(_, s)| s.tree));

    let handle = tokio::runtime::Handle::current();
    let repo2 = repo.clone();
    let index = Arc::new(index);
    let index2 = index.clone();
    // The walker keeps its own stack (one frame per directory level on the
    // current path) and blocks on the runtime to read parent trees: it gets
    // a thread of its own, with the default stack.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let mut pipeline_opts = opts.pipeline;
    pipeline_opts.dry_run = opts.dry_run;
    let stop_request = opts.budget.stop.clone();
    let walk = move || {
        let pipeline = Pipeline::start(&repo2, pipeline_opts, opts.budget, progress.clone(), handle.clone());
        let mut walker = Walker::new(&repo2, &index2, &pipeline, handle, &*progress, &opts.exclusions);
        walker.read_hook = opts.read_hook.clone();
        walker.tree_part_len = opts.tree_part_len;
        let mut root = Tree::default();
        let mut stop = None;
        for (name, path) in &roots {
            let prev: Option<&Node> = parent_root.as_ref().and_then(|t| t.find(name));
            let archived = match stream.take() {
                Some(source) => archive_stream(&mut walker, name, source),
                None => walker.archive_root(path, name.clone(), prev),
            };
            match archived {
                Ok(Some(n)) => root.nodes.push(n),
                Ok(None) => {}
                Err(s) => {
                    stop = Some(s);
                    break;
                }
            }
        }
        let mut root_id = None;
        if stop.is_none() {
            root.sort();
            let raw = root.encode();
            let id = repo2.keys().tree_id(&raw);
            if !index2.contains(&id) && !pipeline.submit(BlobType::Tree, id, raw) {
                stop = Some(Stop::Pipeline);
            }
            walker.summary.tree_blobs_added += u64::from(!index2.contains(&id));
            root_id = Some(id);
        }
        let summary = walker.summary.clone();
        let errors = std::mem::take(&mut walker.errors);
        let changed = std::mem::take(&mut walker.changed);
        let dirs = walker.dirs;
        drop(walker);
        let (stored, err) = pipeline.finish();
        ((root_id, summary, errors, changed, dirs, stop), stored, err)
    };
    std::thread::Builder::new()
        .name("tstor-walker".into())
        .spawn(move || {
            let _ = done_tx.send(walk());
        })
        .map_err(|e| RepoError::Invalid(format!("cannot start the snapshot walker: {e}")))?;
    let (walked, stored, pipeline_err) =
        done_rx.await.map_err(|_| RepoError::Invalid("snapshot task failed: the walker stopped".into()))?;
    let (root_id, mut summary, mut errors, changed, dirs, stop) = walked;
    summary.errors += missing.len() as u64;
    errors.splice(0..0, missing);

    // Packs that did upload are indexed even if the run failed or stopped
    // at its budget, so that the next run reuses them.
    let (uploaded_packs, uploaded_bytes) = (stored.packs.len(), stored.bytes_stored);
    if !stored.packs.is_empty() {
        if let Some(lock) = lock.filter(|_| !opts_dry_run) {
            lock.ensure_held().await?;
            repo.write_index(stored.packs, Vec::new()).await?;
        }
    }
    if let Some(e) = pipeline_err {
        return Err(e);
    }
    // A stop asked for once everything was read still commits nothing.
    let spent = stored.budget_spent.or_else(|| stop_request.requested().map(BudgetSpent::Interrupted));
    if let Some(why) = spent {
        tracing::info!(reason = %why, packs = uploaded_packs, bytes = uploaded_bytes, "snapshot stopped at its budget");
        return Err(RepoError::Stopped { reason: why.to_string(), packs: uploaded_packs, bytes: uploaded_bytes });
    }
    match stop {
        Some(Stop::Fatal(e)) => return Err(e),
        Some(Stop::Pipeline) => return Err(RepoError::Invalid("storing data failed".into())),
        None => {}
    }
    let root_id = root_id.expect("set when the walk completed");
    summary.bytes_stored = stored.bytes_stored;
    summary.start_ns = start_ns;
    summary.end_ns = host::now_ns();
    let snapshot = Snapshot {
        time_ns: time_ns.unwrap_or(start_ns),
        tree: root_id,
        paths: abs_paths,
        hostname: opts.hostname,
        username: host::username(),
        uid: host::uid(),
        gid: host::gid(),
        tags: opts.tags,
        parent: parent.map(|(id, _)| id),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        summary,
        original: None,
    };
    let unchanged_parent = parent_id.filter(|_| skip_if_unchanged && parent_tree == Some(root_id));
    let not_saved = |id: Id, snapshot: Snapshot| SnapshotOutcome {
        id,
        snapshot,
        errors: errors.clone(),
        changed: changed.clone(),
        dirs,
        recovered_packs,
        unreadable_packs: unreadable_packs.clone(),
        saved: false,
    };
    if opts_dry_run {
        return Ok(not_saved(Id([0; 32]), snapshot));
    }
    if let Some(parent_id) = unchanged_parent {
        tracing::info!(parent = %parent_id.short(), "nothing changed since the parent; no snapshot saved");
        return Ok(not_saved(parent_id, snapshot));
    }
    let Some(lock) = lock else {
        return Err(RepoError::Invalid("a snapshot is saved only under a lock".into()));
    };
    lock.ensure_held().await?;
    let id = repo.save_object(ObjectKind::Snapshot, &snapshot.encode()).await?;
    tracing::info!(snapshot = %id.short(), files_new = snapshot.summary.files_new, errors = errors.len(), changed = changed.len(), "snapshot saved");
    Ok(SnapshotOutcome { id, snapshot, errors, changed, dirs, recovered_packs, unreadable_packs, saved: true })
}

/// Archives a stream as one file; a read error or a failed `finish` (the
/// command behind the stream failed) stops the snapshot.
fn archive_stream(walker: &mut Walker<'_>, name: &[u8], source: StreamSource) -> Result<Option<Node>, Stop> {
    let StreamSource { name: _, reader, finish } = source;
    let node = match walker.archive_stream(name.to_vec(), reader)? {
        Ok(node) => node,
        Err(e) => {
            return Err(Stop::Fatal(RepoError::Invalid(format!(
                "cannot read `{}`: {e}",
                String::from_utf8_lossy(name)
            ))))
        }
    };
    if let Some(finish) = finish {
        finish().map_err(|e| Stop::Fatal(RepoError::Invalid(e)))?;
    }
    Ok(Some(node))
}

/// Counts the regular files and bytes under `paths` (for a progress total),
/// leaving out what `exclusions` leaves out of the snapshot. Runs on a
/// metadata walk only; errors are skipped.
pub fn scan_totals(paths: &[PathBuf], exclusions: &Exclusions, mut report: impl FnMut(u64, u64)) {
    enum Step {
        Enter(PathBuf),
        Leave,
    }
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut count = |meta: &std::fs::Metadata| {
        files += 1;
        bytes += meta.len();
        if files % 1000 == 0 {
            report(files, bytes);
        }
    };
    for root in paths {
        let Ok(root) = absolute_path(root) else { continue };
        let Ok(meta) = std::fs::symlink_metadata(&root) else { continue };
        if meta.is_file() {
            count(&meta);
        }
        if !meta.is_dir() {
            continue;
        }
        let root_device = Some(meta.dev());
        let mut ignores = IgnoreStack::default();
        let mut steps = vec![Step::Enter(root)];
        while let Some(step) = steps.pop() {
            let dir = match step {
                Step::Enter(d) => d,
                Step::Leave => {
                    ignores.leave();
                    continue;
                }
            };
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            let mut children: Vec<(Vec<u8>, PathBuf)> =
                rd.flatten().map(|e| (e.file_name().as_bytes().to_vec(), e.path())).collect();
            children.sort();
            match exclusions.enter_dir(&mut ignores, &dir, |n| exclude::sorted_has(&children, n)) {
                Enter::Excluded(_) => continue,
                Enter::Entered(_) => steps.push(Step::Leave),
            }
            for (_, path) in children {
                let Ok(m) = std::fs::symlink_metadata(&path) else { continue };
                if exclusions.entry(&ignores, &path, &m, root_device).is_some() {
                    continue;
                }
                if m.is_dir() {
                    steps.push(Step::Enter(path));
                } else if m.is_file() {
                    count(&m);
                }
            }
        }
    }
    report(files, bytes);
}
