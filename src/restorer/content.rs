//! Restoring the content of regular files pack by pack, one bounded batch of
//! files at a time (the walk hands batches over as it goes). The plan of a
//! batch looks up every blob its files need, reads each needed blob once however many files
//! (or places in one file) use it, groups the blobs by pack and merges
//! neighbours into ranged reads (see `ranges`). Workers then fetch ranges in
//! parallel, open each blob off the async threads and write it to every
//! place that needs it; a file is finished when its last blob is written.
//! Damage fails only the files that need the damaged blob; storage that
//! wants new credentials stops the whole restore.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::files::{write_sparse, FileTable, FileTarget, FilesOutcome};
use super::ranges::{merge_ranges, Span, MAX_RANGE_GAP, MAX_RANGE_LEN};
use super::RestoreProgress;
use crate::backend::{BackendError, ErrorClass};
use crate::format::{BlobType, Id, ObjectKind};
use crate::repo::index::{BlobLocation, MasterIndex};
use crate::repo::Repository;

/// One place a blob's plaintext goes: a file and the offset in it.
#[derive(Clone, Copy)]
struct Placement {
    file: usize,
    offset: u64,
}

/// A blob the restore needs, where it is in its pack, and where it goes.
#[derive(Clone)]
struct NeededBlob {
    id: Id,
    blob_type: BlobType,
    /// Position of the sealed blob in its pack.
    span: Span,
    raw_len: u32,
    placements: Vec<Placement>,
    /// The blob's other locations, tried in order if this one fails.
    elsewhere: Vec<BlobLocation>,
}

/// One ranged read of a pack and the blobs it covers, in pack order.
struct RangeRead {
    pack: Id,
    span: Span,
    blobs: Vec<NeededBlob>,
}

/// What every batch of a restore shares: the repository, the budget of
/// reads in flight, and whether storage refused our credentials.
pub(super) struct Shared {
    pub repo: Repository,
    pub index: Arc<MasterIndex>,
    pub progress: Arc<dyn RestoreProgress>,
    /// Ranged reads in flight, over every batch.
    pub slots: Arc<Semaphore>,
    /// Restore owners (only as root).
    pub owners: bool,
    pub verify: bool,
    /// Set once storage refused our credentials: no new reads start.
    aborted: AtomicBool,
    fatal: Mutex<Option<BackendError>>,
}

impl Shared {
    pub fn new(
        repo: &Repository,
        index: Arc<MasterIndex>,
        progress: Arc<dyn RestoreProgress>,
        reads_in_flight: usize,
        owners: bool,
        verify: bool,
    ) -> Shared {
        Shared {
            repo: repo.clone(),
            index,
            progress,
            slots: Arc::new(Semaphore::new(reads_in_flight.max(1))),
            owners,
            verify,
            aborted: AtomicBool::new(false),
            fatal: Mutex::new(None),
        }
    }

    /// Stops the restore: storage wants new credentials.
    pub fn abort(&self, error: BackendError) {
        self.aborted.store(true, Ordering::SeqCst);
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        fatal.get_or_insert(error);
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// The error that stopped the restore, if one did.
    pub fn take_fatal(&self) -> Option<BackendError> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// One batch of files and what its workers share.
struct Context {
    shared: Arc<Shared>,
    table: FileTable,
}

impl Context {
    fn abort(&self, error: BackendError) {
        self.shared.abort(error);
    }

    fn is_aborted(&self) -> bool {
        self.shared.is_aborted()
    }

    fn repo(&self) -> &Repository {
        &self.shared.repo
    }

    fn needs_any(&self, blobs: &[NeededBlob]) -> bool {
        blobs.iter().any(|b| self.needs(b))
    }

    fn needs(&self, blob: &NeededBlob) -> bool {
        blob.placements.iter().any(|p| self.table.is_live(p.file))
    }

    /// Fails every live file that needs one of `blobs`.
    fn lose(&self, blobs: &[NeededBlob], message: &str) {
        for p in blobs.iter().flat_map(|b| &b.placements) {
            if self.table.is_live(p.file) {
                self.table.fail(p.file, message.to_string());
            }
        }
    }
}

/// Creates one batch of `files`, writes their content and finishes them
/// (length, metadata, verification), reading within the shared budget of
/// reads in flight. Files that could not be restored are removed (unless
/// their bytes are right) and named in the outcome. Gives `None` when the
/// restore was stopped (storage wants new credentials, see
/// [`Shared::take_fatal`]); the files of the batch not yet complete are then
/// removed.
pub(super) async fn restore_contents(shared: Arc<Shared>, files: Vec<FileTarget>) -> Option<FilesOutcome> {
    let table = FileTable::new(files, shared.owners, shared.verify);
    let context = Arc::new(Context { shared, table });
    if context.is_aborted() {
        return None;
    }
    let planner = context.clone();
    let reads = tokio::task::spawn_blocking(move || {
        planner.table.create_all();
        let reads = plan_reads(&planner.table, &planner.shared.index);
        planner.table.finish_empty(&planner.shared.repo, &planner.shared.index);
        reads
    })
    .await;
    let reads = match reads {
        Ok(reads) => reads,
        Err(e) => {
            tracing::error!(error = %e, "restore planning failed");
            Vec::new()
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    for read in reads {
        let permit = context.shared.slots.clone().acquire_owned().await.expect("semaphore is never closed");
        while let Some(done) = tasks.try_join_next() {
            log_worker_failure(done);
        }
        if context.is_aborted() {
            break;
        }
        let context = context.clone();
        tasks.spawn(async move {
            let _permit = permit;
            restore_range(&context, read).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        log_worker_failure(done);
    }
    let Some(context) = Arc::into_inner(context) else {
        tracing::error!("restore workers outlived their batch");
        return None;
    };
    if context.is_aborted() {
        context.table.remove_incomplete();
        return None;
    }
    // Every read is done: a file still waiting lost its writer to a panic.
    context.table.fail_unfinished("cannot write: a restore worker failed");
    Some(context.table.into_outcome())
}

fn log_worker_failure(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "a restore worker failed");
    }
}

/// Looks up every blob of every created file, fails the files with a blob
/// missing from the index, and returns the reads that fetch the rest: packs
/// in the order files first need them, ranges in pack order.
fn plan_reads(table: &FileTable, index: &MasterIndex) -> Vec<RangeRead> {
    let mut needed: HashMap<Id, (Id, NeededBlob)> = HashMap::new();
    let mut pack_rank: HashMap<Id, usize> = HashMap::new();
    for (file, target) in table.files().iter().enumerate() {
        if !table.is_live(file) {
            continue;
        }
        let mut locations = Vec::with_capacity(target.node.content.len());
        let mut missing = None;
        for id in &target.node.content {
            match index.lookup(id) {
                Some(loc) => locations.push((id, loc)),
                None => {
                    missing = Some(id);
                    break;
                }
            }
        }
        if let Some(id) = missing {
            table.fail(file, format!("data lost: blob {id} is not in the index"));
            continue;
        }
        let mut offset = 0u64;
        for (id, loc) in locations {
            let next_rank = pack_rank.len();
            pack_rank.entry(loc.pack).or_insert(next_rank);
            let (_, blob) = needed.entry(*id).or_insert_with(|| {
                let blob = NeededBlob {
                    id: *id,
                    blob_type: loc.blob_type,
                    span: Span { offset: u64::from(loc.offset), len: u64::from(loc.length) },
                    raw_len: loc.raw_len,
                    placements: Vec::new(),
                    elsewhere: index.locations(id).into_iter().skip(1).collect(),
                };
                (loc.pack, blob)
            });
            blob.placements.push(Placement { file, offset });
            offset += u64::from(loc.raw_len);
        }
        table.expect(file, target.node.content.len(), offset);
    }

    let mut by_pack: HashMap<Id, Vec<NeededBlob>> = HashMap::new();
    for (pack, blob) in needed.into_values() {
        by_pack.entry(pack).or_default().push(blob);
    }
    let mut packs: Vec<(Id, Vec<NeededBlob>)> = by_pack.into_iter().collect();
    packs.sort_by_key(|(pack, _)| pack_rank.get(pack).copied().unwrap_or(usize::MAX));
    let mut reads = Vec::new();
    for (pack, mut blobs) in packs {
        blobs.sort_by_key(|b| b.span.offset);
        let spans: Vec<Span> = blobs.iter().map(|b| b.span).collect();
        let mut blobs = blobs.into_iter();
        for range in merge_ranges(&spans, MAX_RANGE_GAP, MAX_RANGE_LEN) {
            let covered: Vec<NeededBlob> = blobs.by_ref().take(range.blobs.len()).collect();
            reads.push(RangeRead { pack, span: range.span, blobs: covered });
        }
    }
    reads
}

/// Fetches one range and writes its blobs. A read refused for want of
/// credentials aborts the restore. A transient failure is retried
/// ([`fetch_retrying`]) and, if storage keeps failing, reported as such,
/// never as lost data. Another permanent failure of a range that covers
/// several blobs is retried blob by blob, so that damage at one place (a
/// truncated pack, say) loses only the files that need what is damaged.
async fn restore_range(context: &Arc<Context>, read: RangeRead) {
    if context.is_aborted() || !context.needs_any(&read.blobs) {
        return;
    }
    match fetch_retrying(context, &read.pack, read.span).await {
        Ok(sealed) => {
            for (blob, message) in write_on_blocking_thread(context, read.span, read.blobs, sealed).await {
                from_elsewhere(context, blob, message).await;
            }
        }
        // Nothing more can be read: the session is gone or storage cannot be reached.
        Err(e) if e.needs_login() || e.is_unreachable() => context.abort(e),
        Err(e) if e.class() == ErrorClass::Permanent && read.blobs.len() > 1 => {
            tracing::warn!(pack = %read.pack, error = %e, "a ranged read failed; reading its blobs one by one");
            for blob in read.blobs {
                if context.is_aborted() {
                    return;
                }
                if !context.needs(&blob) {
                    continue;
                }
                match fetch_retrying(context, &read.pack, blob.span).await {
                    Ok(sealed) => {
                        for (blob, message) in write_on_blocking_thread(context, blob.span, vec![blob], sealed).await {
                            from_elsewhere(context, blob, message).await;
                        }
                    }
                    Err(e) if e.needs_login() || e.is_unreachable() => return context.abort(e),
                    Err(e) => from_elsewhere(context, blob, failure_message(&e)).await,
                }
            }
        }
        Err(e) => {
            for blob in read.blobs {
                from_elsewhere(context, blob, failure_message(&e)).await;
            }
        }
    }
}

/// What a file that could not be restored is told: lost data only when
/// storage said so (not found, permanent), else that storage kept failing.
fn failure_message(e: &BackendError) -> String {
    match e.class() {
        _ if e.is_unreachable() => format!("not restored, storage could not be reached (the data may be intact): {e}"),
        ErrorClass::Transient(_) => format!("not restored, storage kept failing (the data may be intact): {e}"),
        _ => format!("data lost: {e}"),
    }
}

/// Attempts at one range while storage fails transiently.
pub(super) const RANGE_ATTEMPTS: u32 = 8;
/// The first pause before a range is asked for again; it doubles each time
/// (1 + 2 + ... + 64 s, about two minutes, over every attempt).
pub(super) const RANGE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Fetches a range, asking again after a transient failure (a dropped
/// connection, a flood wait that outlasted the backend's own retries),
/// waiting at least as long as storage asked.
async fn fetch_retrying(context: &Context, pack: &Id, span: Span) -> Result<Bytes, BackendError> {
    let mut attempt = 1;
    loop {
        match fetch(context, pack, span).await {
            Err(e) if attempt < RANGE_ATTEMPTS && !context.is_aborted() => match e.class() {
                ErrorClass::Transient(after) => {
                    let pause = RANGE_RETRY_DELAY * (1 << (attempt - 1));
                    let pause = after.map_or(pause, |a| a.max(pause));
                    tracing::warn!(pack = %pack, attempt, pause_ms = pause.as_millis() as u64, error = %e, "reading a range again");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                _ => return Err(e),
            },
            other => return other,
        }
    }
}

/// Reads a blob that failed at its first location from its other locations
/// in turn (format.md §14); only when every one fails are the files that
/// need it lost, with the first failure's `message`.
async fn from_elsewhere(context: &Arc<Context>, blob: NeededBlob, message: String) {
    for loc in &blob.elsewhere {
        if context.is_aborted() || !context.needs(&blob) {
            return;
        }
        let span = Span { offset: u64::from(loc.offset), len: u64::from(loc.length) };
        let moved = NeededBlob { span, raw_len: loc.raw_len, elsewhere: Vec::new(), ..blob.clone() };
        match fetch_retrying(context, &loc.pack, span).await {
            Ok(sealed) => {
                let failed = write_on_blocking_thread(context, span, vec![moved], sealed).await;
                if failed.is_empty() {
                    return;
                }
            }
            Err(e) if e.needs_login() => return context.abort(e),
            Err(e) => tracing::warn!(blob = %blob.id, pack = %loc.pack, error = %e, "blob unreadable here too"),
        }
    }
    context.lose(std::slice::from_ref(&blob), &message);
}

async fn fetch(context: &Context, pack: &Id, span: Span) -> Result<Bytes, BackendError> {
    let len = u32::try_from(span.len).map_err(|_| BackendError::Permanent {
        message: format!("a read of {} bytes from pack {pack} is too long", span.len),
    })?;
    context.repo().backend().get_range(ObjectKind::Pack, pack, span.offset, len).await
}

/// Opens and writes the blobs of a fetched range; decryption, decompression
/// and file writes run on a blocking thread. Returns the blobs that could
/// not be opened here, with why.
async fn write_on_blocking_thread(
    context: &Arc<Context>,
    span: Span,
    blobs: Vec<NeededBlob>,
    sealed: Bytes,
) -> Vec<(NeededBlob, String)> {
    let writer = context.clone();
    match tokio::task::spawn_blocking(move || write_range(&writer, span, &blobs, &sealed)).await {
        Ok(failed) => failed,
        Err(e) => {
            // The files of a writer that panicked are failed once every read is done.
            log_worker_failure(Err(e));
            Vec::new()
        }
    }
}

/// Opens every blob of a range that a live file still needs and writes it to
/// each of its places; returns the blobs that could not be opened.
fn write_range(context: &Context, span: Span, blobs: &[NeededBlob], sealed: &[u8]) -> Vec<(NeededBlob, String)> {
    let mut failed = Vec::new();
    let table = &context.table;
    // One handle per file for this range; closed when the range is done.
    let mut handles: HashMap<usize, std::fs::File> = HashMap::new();
    for blob in blobs {
        if !context.needs(blob) {
            continue;
        }
        let start = (blob.span.offset - span.offset) as usize;
        let Some(bytes) = sealed.get(start..start + blob.span.len as usize) else {
            failed.push((blob.clone(), "data lost: storage returned a short range".to_string()));
            continue;
        };
        let data = match context.repo().open_blob(blob.blob_type, &blob.id, bytes, blob.raw_len) {
            Ok(data) => data,
            Err(e) => {
                failed.push((blob.clone(), format!("data lost: {e}")));
                continue;
            }
        };
        for place in &blob.placements {
            if !table.is_live(place.file) {
                continue;
            }
            let file = match handles.entry(place.file) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => match table.open_for_writing(place.file) {
                    Ok(f) => v.insert(f),
                    Err(e) => {
                        table.fail(place.file, format!("cannot write: {e}"));
                        continue;
                    }
                },
            };
            if let Err(e) = write_sparse(file, &data, place.offset) {
                table.fail(place.file, format!("cannot write: {e}"));
                continue;
            }
            context.shared.progress.bytes(data.len() as u64);
            if table.placement_written(place.file, &context.shared.repo, &context.shared.index) {
                handles.remove(&place.file);
            }
        }
    }
    failed
}
