//! The write half of a snapshot: seal workers compress and seal new blobs in
//! parallel, one packer thread gathers them into data and tree packs, and
//! uploads run on the async runtime with a bounded number in flight. Every
//! queue between the stages is bounded, so memory stays flat whatever the
//! size of the input. Where the backend streams objects from spill files
//! (Telegram), a finished pack goes to an unnamed temporary file in the
//! cache directory at once, so that the packs waiting for and in upload
//! hold disk, not memory. A run budget (bytes of packs, or a deadline) stops
//! the pipeline cleanly: no new pack upload starts once it is spent, the
//! uploads already running finish, and what they stored is returned.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::Progress;
use crate::backend::SpilledObject;
use crate::format::index::IndexedPack;
use crate::format::pack::BlobEntry;
use crate::format::{BlobType, Id, ObjectKind};
use crate::repo::packer::{FinishedPack, Packer};
use crate::repo::{RepoError, Repository, SealedBlob};

/// Tuning of the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct PipelineOptions {
    pub seal_workers: usize,
    pub data_pack_size: usize,
    pub tree_pack_size: usize,
    pub uploads_in_flight: usize,
    /// Seal and pack, upload nothing: the packs are counted as if stored.
    pub dry_run: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        PipelineOptions {
            seal_workers: cpus,
            data_pack_size: 16 << 20,
            tree_pack_size: 4 << 20,
            uploads_in_flight: 2,
            dry_run: false,
        }
    }
}

/// A request from outside a run (a signal) to stop it as at a deadline;
/// shared by its clones, set once.
#[derive(Clone, Debug, Default)]
pub struct StopRequest(Arc<AtomicI32>);

impl StopRequest {
    pub fn new() -> StopRequest {
        StopRequest::default()
    }

    /// Asks the run to stop because of signal `signal` (a positive number);
    /// the first request is the one kept.
    pub fn request(&self, signal: i32) {
        let _ = self.0.compare_exchange(0, signal.max(1), Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The signal that asked the run to stop, if one did.
    pub fn requested(&self) -> Option<i32> {
        Some(self.0.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

impl PartialEq for StopRequest {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StopRequest {}

/// Limits for one run: after them the snapshot stops cleanly, keeping
/// (and indexing) the packs already uploaded, and commits no snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunBudget {
    /// Bytes of packs this run may upload: a pack that would take the
    /// run over it is not uploaded.
    pub max_upload: Option<u64>,
    /// When the run stops starting uploads (and reading files); the
    /// uploads running then are finished.
    pub deadline: Option<std::time::Instant>,
    /// Stops the run as the deadline does once requested (Ctrl-C); also
    /// after the walk, so that no snapshot is committed once it is.
    pub stop: StopRequest,
}

/// Which limit of a [`RunBudget`] stopped a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetSpent {
    /// `max_upload` would have been passed: the bytes uploaded, the limit.
    Upload { uploaded: u64, limit: u64 },
    /// The deadline passed.
    Duration,
    /// A signal asked the run to stop (its number).
    Interrupted(i32),
}

impl std::fmt::Display for BudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetSpent::Upload { uploaded, limit } => {
                write!(f, "the upload limit of {limit} bytes was reached after {uploaded} bytes")
            }
            BudgetSpent::Duration => write!(f, "the time limit was reached"),
            BudgetSpent::Interrupted(signal) => write!(f, "interrupted by {}", signal_name(*signal)),
        }
    }
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        n => format!("signal {n}"),
    }
}

impl RunBudget {
    /// Whether time is up: a stop was requested or the deadline passed.
    pub fn time_up(&self) -> Option<BudgetSpent> {
        if let Some(signal) = self.stop.requested() {
            return Some(BudgetSpent::Interrupted(signal));
        }
        self.deadline.is_some_and(|d| std::time::Instant::now() >= d).then_some(BudgetSpent::Duration)
    }

    /// Whether a pack of `size` bytes may start uploading after `started`
    /// bytes of packs did; otherwise the limit that stops the run.
    fn admit(&self, started: u64, size: u64) -> Result<(), BudgetSpent> {
        if let Some(spent) = self.time_up() {
            return Err(spent);
        }
        match self.max_upload {
            Some(limit) if started.saturating_add(size) > limit => {
                Err(BudgetSpent::Upload { uploaded: started, limit })
            }
            _ => Ok(()),
        }
    }
}

struct Job {
    blob_type: BlobType,
    id: Id,
    data: Vec<u8>,
}

/// What the pipeline stored, once finished.
#[derive(Default)]
pub struct Stored {
    pub packs: Vec<IndexedPack>,
    pub bytes_stored: u64,
    /// The run budget was spent: the run stopped early, on purpose.
    pub budget_spent: Option<BudgetSpent>,
}

/// Handle the walker uses to hand blobs over.
pub struct Pipeline {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<Stored>>,
    failure: Arc<Mutex<Option<RepoError>>>,
    failed: Arc<AtomicBool>,
    queued_bytes: Arc<AtomicU64>,
    budget: RunBudget,
    budget_spent: Arc<Mutex<Option<BudgetSpent>>>,
    /// Plaintext bytes of data blobs handed over and not yet in a stored pack.
    unstored: Arc<AtomicU64>,
    progress: Arc<dyn Progress>,
}

impl Pipeline {
    pub fn start(
        repo: &Repository,
        opts: PipelineOptions,
        budget: RunBudget,
        progress: Arc<dyn Progress>,
        handle: Handle,
    ) -> Pipeline {
        let workers_n = opts.seal_workers.max(1);
        let (job_tx, job_rx) = sync_channel::<Job>(workers_n);
        let (sealed_tx, sealed_rx) = sync_channel::<SealedBlob>(workers_n);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let failure = Arc::new(Mutex::new(None));
        let failed = Arc::new(AtomicBool::new(false));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let budget_spent = Arc::new(Mutex::new(None));
        let unstored = Arc::new(AtomicU64::new(0));
        let workers = (0..workers_n)
            .map(|i| {
                let rx = job_rx.clone();
                let tx = sealed_tx.clone();
                let repo = repo.clone();
                let queued = queued_bytes.clone();
                let failure = failure.clone();
                let failed = failed.clone();
                std::thread::Builder::new()
                    .name(format!("tstor-seal-{i}"))
                    .spawn(move || seal_worker(&repo, &rx, &tx, &queued, (&failure, &failed)))
                    .expect("spawning a thread")
            })
            .collect();
        drop(sealed_tx);
        let packer = {
            let repo = repo.clone();
            let stop = Stop {
                failure: failure.clone(),
                failed: failed.clone(),
                budget: budget.clone(),
                budget_spent: budget_spent.clone(),
                unstored: unstored.clone(),
                progress: progress.clone(),
                dry_run: opts.dry_run,
            };
            std::thread::Builder::new()
                .name("tstor-packer".into())
                .spawn(move || pack_and_upload(&repo, opts, sealed_rx, &handle, &stop))
                .expect("spawning a thread")
        };
        Pipeline {
            jobs: Some(job_tx),
            workers,
            packer: Some(packer),
            failure,
            failed,
            queued_bytes,
            budget,
            budget_spent,
            unstored,
            progress,
        }
    }

    /// Queues a new blob; blocks while the workers are busy. Returns false
    /// once the pipeline has failed and further work is pointless.
    pub fn submit(&self, blob_type: BlobType, id: Id, data: Vec<u8>) -> bool {
        if self.has_failed() {
            return false;
        }
        if let Some(spent) = self.budget.time_up() {
            spend_budget(&self.budget_spent, &self.failed, spent);
            return false;
        }
        self.queued_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if blob_type == BlobType::Data {
            let unstored = self.unstored.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            self.progress.unstored(unstored);
        }
        let jobs = self.jobs.as_ref().expect("pipeline still open");
        jobs.send(Job { blob_type, id, data }).is_ok()
    }

    /// Whether the pipeline failed, or stopped because the run budget was
    /// spent: either way the walk stops.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Plaintext bytes handed to the workers and not yet sealed.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Seals what is queued, flushes the packs and waits for every upload.
    /// Returns what was stored, and the first error if any stage failed;
    /// packs that did upload are listed either way.
    pub fn finish(mut self) -> (Stored, Option<RepoError>) {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut stored = self.packer.take().map(|p| p.join().unwrap_or_default()).unwrap_or_default();
        let err = self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        stored.budget_spent = *self.budget_spent.lock().unwrap_or_else(|p| p.into_inner());
        (stored, err)
    }
}

fn seal_worker(
    repo: &Repository,
    rx: &Mutex<Receiver<Job>>,
    tx: &SyncSender<SealedBlob>,
    queued: &AtomicU64,
    (failure, failed): (&Mutex<Option<RepoError>>, &AtomicBool),
) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let len = job.data.len() as u64;
        let sealed = repo.seal_blob_with_id(job.blob_type, job.id, &job.data);
        queued.fetch_sub(len, Ordering::Relaxed);
        let sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                record_failure(failure, failed, e);
                continue;
            }
        };
        if tx.send(sealed).is_err() {
            return;
        }
    }
}

/// Stops the pipeline because the run budget is spent (the first reason stays).
fn spend_budget(slot: &Mutex<Option<BudgetSpent>>, failed: &AtomicBool, why: BudgetSpent) {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        tracing::info!(reason = %why, "run budget spent; stopping after the uploads in flight");
        *slot = Some(why);
    }
    failed.store(true, Ordering::SeqCst);
}

/// What the packer thread shares with the rest of the pipeline.
struct Stop {
    failure: Arc<Mutex<Option<RepoError>>>,
    failed: Arc<AtomicBool>,
    budget: RunBudget,
    budget_spent: Arc<Mutex<Option<BudgetSpent>>>,
    unstored: Arc<AtomicU64>,
    progress: Arc<dyn Progress>,
    /// Upload nothing (a dry run).
    dry_run: bool,
}

fn record_failure(failure: &Mutex<Option<RepoError>>, failed: &AtomicBool, e: RepoError) {
    let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        tracing::error!(error = %e, "upload failed; the snapshot will not be committed");
        *slot = Some(e);
    }
    failed.store(true, Ordering::SeqCst);
}

type UploadResult = Result<IndexedPack, RepoError>;

fn pack_and_upload(
    repo: &Repository,
    opts: PipelineOptions,
    rx: Receiver<SealedBlob>,
    handle: &Handle,
    stop: &Stop,
) -> Stored {
    let (failure, failed) = (&stop.failure, &stop.failed);
    // The first data pack of a run is a quarter of the full size, so that
    // uploading starts early; the next ones double up to the full size.
    let mut data = Packer::ramping(opts.data_pack_size / 4, opts.data_pack_size);
    let mut trees = Packer::new(opts.tree_pack_size);
    let slots = Arc::new(Semaphore::new(opts.uploads_in_flight.max(1)));
    let spill_dir = if opts.dry_run { None } else { spill_dir(repo) };
    let mut uploads: Vec<tokio::task::JoinHandle<UploadResult>> = Vec::new();
    let mut stored = Stored::default();
    // Bytes of the packs whose upload started, for the run budget.
    let mut started = 0u64;
    let collect = |stored: &mut Stored, done: Result<UploadResult, tokio::task::JoinError>| match done {
        Ok(Ok(p)) => {
            stored.bytes_stored += p.size;
            let raw: u64 = p.blobs.iter().filter(|b| b.blob_type == BlobType::Data).map(|b| u64::from(b.raw_len)).sum();
            let before =
                stop.unstored.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(raw)));
            stop.progress.unstored(before.unwrap_or(0).saturating_sub(raw));
            stored.packs.push(p);
        }
        Ok(Err(e)) => record_failure(failure, failed, e),
        Err(e) => record_failure(failure, failed, RepoError::Invalid(format!("upload task failed: {e}"))),
    };
    for blob in rx.iter() {
        if failed.load(Ordering::Relaxed) {
            continue; // drain so the workers can finish
        }
        let packer = match blob.blob_type {
            BlobType::Data => &mut data,
            BlobType::Tree => &mut trees,
        };
        packer.add(blob.blob_type, blob.id, &blob.sealed, blob.raw_len);
        if packer.is_full() {
            let pack = packer.finish(repo.keys(), repo.repo_id());
            if let Some(u) = start_upload(repo, handle, &slots, pack, spill_dir.as_deref(), &mut started, stop) {
                uploads.push(u);
            }
        }
        // Surface upload failures early so the walker can stop.
        let mut i = 0;
        while i < uploads.len() {
            if uploads[i].is_finished() {
                let done = uploads.swap_remove(i);
                collect(&mut stored, handle.block_on(done));
            } else {
                i += 1;
            }
        }
    }
    for packer in [&mut data, &mut trees] {
        if !failed.load(Ordering::Relaxed) && !packer.is_empty() {
            let pack = packer.finish(repo.keys(), repo.repo_id());
            if let Some(u) = start_upload(repo, handle, &slots, pack, spill_dir.as_deref(), &mut started, stop) {
                uploads.push(u);
            }
        }
    }
    for u in uploads {
        collect(&mut stored, handle.block_on(u));
    }
    stored
}

/// Where finished packs wait for their upload: the repository's cache
/// directory (the system's temporary directory without a cache), if the
/// backend streams objects from spill files.
fn spill_dir(repo: &Repository) -> Option<PathBuf> {
    if !repo.backend().streams_spilled() {
        return None;
    }
    let cache_dir = repo.cache().and_then(|c| c.path().parent().map(Path::to_path_buf));
    Some(cache_dir.unwrap_or_else(std::env::temp_dir))
}

/// A finished pack's bytes, on the way to the backend.
enum Payload {
    Memory(bytes::Bytes),
    Spilled(Arc<SpilledObject>),
}

/// Starts one pack upload once a slot is free, if the run budget admits it;
/// otherwise stops the pipeline and drops the pack. With a spill directory
/// the pack's bytes go to a spill file first and leave memory before the wait.
fn start_upload(
    repo: &Repository,
    handle: &Handle,
    slots: &Arc<Semaphore>,
    pack: FinishedPack,
    spill_dir: Option<&Path>,
    started: &mut u64,
    stop: &Stop,
) -> Option<tokio::task::JoinHandle<UploadResult>> {
    let FinishedPack { id, data, blobs } = pack;
    let size = data.len() as u64;
    let payload = match spill_dir.map(|dir| SpilledObject::write(dir, &data)) {
        Some(Ok(spilled)) => {
            drop(data);
            Payload::Spilled(Arc::new(spilled))
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot write a pack to a spill file; keeping it in memory");
            Payload::Memory(data)
        }
        None => Payload::Memory(data),
    };
    let permit = handle.block_on(slots.clone().acquire_owned()).expect("semaphore is never closed");
    // Checked once a slot is free: the deadline may have passed meanwhile.
    if let Err(why) = stop.budget.admit(*started, size) {
        spend_budget(&stop.budget_spent, &stop.failed, why);
        return None;
    }
    *started += size;
    Some(spawn_upload(repo, handle, permit, id, payload, blobs, stop.dry_run))
}

/// Starts one pack upload in the slot `permit` holds.
fn spawn_upload(
    repo: &Repository,
    handle: &Handle,
    permit: tokio::sync::OwnedSemaphorePermit,
    id: Id,
    payload: Payload,
    blobs: Vec<BlobEntry>,
    dry_run: bool,
) -> tokio::task::JoinHandle<UploadResult> {
    let size = match &payload {
        Payload::Memory(data) => data.len() as u64,
        Payload::Spilled(spilled) => spilled.len(),
    };
    let backend = repo.backend().clone();
    handle.spawn(async move {
        let result = match payload {
            _ if dry_run => Ok(()),
            Payload::Memory(data) => backend.put(ObjectKind::Pack, &id, data).await,
            Payload::Spilled(spilled) => backend.put_spilled(ObjectKind::Pack, &id, spilled).await,
        };
        drop(permit);
        result?;
        tracing::debug!(pack = %id.short(), size, blobs = blobs.len(), "pack uploaded");
        Ok(IndexedPack { id, size, blobs })
    })
}
