//! The write half of a snapshot: seal workers compress and seal new blobs in
//! parallel, one packer thread gathers them into data and tree packs, and
//! uploads run on the async runtime with a bounded number in flight. Every
//! queue between the stages is bounded, so memory stays flat whatever the
//! size of the input. Where the backend streams objects from spill files
//! (Telegram), a finished pack goes to an unnamed temporary file in the
//! cache directory at once, so that the packs waiting for and in upload
//! hold disk, not memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::backend::SpilledObject;
use crate::format::index::IndexedPack;
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
}

impl Default for PipelineOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        PipelineOptions { seal_workers: cpus, data_pack_size: 16 << 20, tree_pack_size: 4 << 20, uploads_in_flight: 2 }
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
}

/// Handle the walker uses to hand blobs over.
pub struct Pipeline {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<Stored>>,
    failure: Arc<Mutex<Option<RepoError>>>,
    failed: Arc<AtomicBool>,
    queued_bytes: Arc<AtomicU64>,
}

impl Pipeline {
    pub fn start(repo: &Repository, opts: PipelineOptions, handle: Handle) -> Pipeline {
        let workers_n = opts.seal_workers.max(1);
        let (job_tx, job_rx) = sync_channel::<Job>(workers_n);
        let (sealed_tx, sealed_rx) = sync_channel::<SealedBlob>(workers_n);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let failure = Arc::new(Mutex::new(None));
        let failed = Arc::new(AtomicBool::new(false));
        let queued_bytes = Arc::new(AtomicU64::new(0));
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
            let failure = failure.clone();
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("tstor-packer".into())
                .spawn(move || pack_and_upload(&repo, opts, sealed_rx, &handle, &failure, &failed))
                .expect("spawning a thread")
        };
        Pipeline { jobs: Some(job_tx), workers, packer: Some(packer), failure, failed, queued_bytes }
    }

    /// Queues a new blob; blocks while the workers are busy. Returns false
    /// once the pipeline has failed and further work is pointless.
    pub fn submit(&self, blob_type: BlobType, id: Id, data: Vec<u8>) -> bool {
        if self.has_failed() {
            return false;
        }
        self.queued_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let jobs = self.jobs.as_ref().expect("pipeline still open");
        jobs.send(Job { blob_type, id, data }).is_ok()
    }

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
        let stored = self.packer.take().map(|p| p.join().unwrap_or_default()).unwrap_or_default();
        let err = self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
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
    failure: &Arc<Mutex<Option<RepoError>>>,
    failed: &Arc<AtomicBool>,
) -> Stored {
    // The first data pack of a run is a quarter of the full size, so that
    // uploading starts early; the next ones double up to the full size.
    let mut data = Packer::ramping(opts.data_pack_size / 4, opts.data_pack_size);
    let mut trees = Packer::new(opts.tree_pack_size);
    let slots = Arc::new(Semaphore::new(opts.uploads_in_flight.max(1)));
    let spill_dir = spill_dir(repo);
    let mut uploads: Vec<tokio::task::JoinHandle<UploadResult>> = Vec::new();
    let mut stored = Stored::default();
    let collect = |stored: &mut Stored, done: Result<UploadResult, tokio::task::JoinError>| match done {
        Ok(Ok(p)) => {
            stored.bytes_stored += p.size;
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
            uploads.push(spawn_upload(
                repo,
                handle,
                &slots,
                packer.finish(repo.keys(), repo.repo_id()),
                spill_dir.as_deref(),
            ));
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
    if !failed.load(Ordering::Relaxed) {
        for packer in [&mut data, &mut trees] {
            if !packer.is_empty() {
                uploads.push(spawn_upload(
                    repo,
                    handle,
                    &slots,
                    packer.finish(repo.keys(), repo.repo_id()),
                    spill_dir.as_deref(),
                ));
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

/// Starts one pack upload once a slot is free. With a spill directory the
/// pack's bytes go to a spill file first and leave memory before the wait.
fn spawn_upload(
    repo: &Repository,
    handle: &Handle,
    slots: &Arc<Semaphore>,
    pack: FinishedPack,
    spill_dir: Option<&Path>,
) -> tokio::task::JoinHandle<UploadResult> {
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
    let backend = repo.backend().clone();
    handle.spawn(async move {
        let result = match payload {
            Payload::Memory(data) => backend.put(ObjectKind::Pack, &id, data).await,
            Payload::Spilled(spilled) => backend.put_spilled(ObjectKind::Pack, &id, spilled).await,
        };
        drop(permit);
        result?;
        tracing::debug!(pack = %id.short(), size, blobs = blobs.len(), "pack uploaded");
        Ok(IndexedPack { id, size, blobs })
    })
}
