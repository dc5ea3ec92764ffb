//! File reads of the mounted view: which of a file's data blobs cover a byte
//! range (`spans_covering`, pure), and a small cache of decoded blobs bounded
//! in bytes (`BlobCache`) that reads each blob it lacks with one ranged read
//! of its pack, never the whole pack. Reads of the same blob that arrive
//! together (the kernel's read-ahead) share one storage read.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::format::Id;
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};

/// Where each blob of a file ends in it: `ends[i]` is the file offset just
/// past blob `i` (the running sum of the blobs' plaintext lengths).
pub fn blob_ends(index: &MasterIndex, content: &[Id]) -> Result<Vec<u64>, RepoError> {
    let mut end = 0u64;
    let mut ends = Vec::with_capacity(content.len());
    for id in content {
        let loc = index.lookup(id).ok_or_else(|| RepoError::Damaged {
            what: format!("data blob {id}"),
            reason: "it is not in the index".into(),
        })?;
        end += u64::from(loc.raw_len);
        ends.push(end);
    }
    Ok(ends)
}

/// The blobs that hold bytes `offset .. offset + len` of a file whose blobs
/// end at `ends`, each with the range of its own bytes to copy, in file
/// order. A range past the end of the file is cut at the end.
pub fn spans_covering(ends: &[u64], offset: u64, len: u64) -> Vec<(usize, Range<usize>)> {
    let file_len = ends.last().copied().unwrap_or(0);
    let end = offset.saturating_add(len).min(file_len);
    let mut spans = Vec::new();
    if offset >= end {
        return spans;
    }
    let first = ends.partition_point(|&e| e <= offset);
    for (i, &blob_end) in ends.iter().enumerate().skip(first) {
        let blob_start = if i == 0 { 0 } else { ends[i - 1] };
        if blob_start >= end {
            break;
        }
        let from = offset.max(blob_start) - blob_start;
        let to = end.min(blob_end) - blob_start;
        if to > from {
            spans.push((i, from as usize..to as usize));
        }
    }
    spans
}

struct Slot {
    id: Id,
    blob: Arc<OnceCell<Arc<Vec<u8>>>>,
    /// Whether the blob's bytes are counted in `Slots::bytes`.
    counted: bool,
}

#[derive(Default)]
struct Slots {
    /// Least recently used first.
    order: VecDeque<Slot>,
    bytes: usize,
}

/// Decoded data blobs, least recently used evicted first once they hold more
/// than the byte budget (the newest blob is always kept, so one blob larger
/// than the budget still serves the reads inside it).
pub struct BlobCache {
    budget: usize,
    slots: Mutex<Slots>,
}

/// At most this many blobs are remembered, read or being read.
const MAX_SLOTS: usize = 1024;

impl BlobCache {
    pub fn new(budget: usize) -> BlobCache {
        BlobCache { budget, slots: Mutex::new(Slots::default()) }
    }

    /// The bytes of the blobs held now.
    pub fn held_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The plaintext of data blob `id`, from the cache or read from storage.
    pub async fn get(&self, repo: &Repository, index: &MasterIndex, id: &Id) -> Result<Arc<Vec<u8>>, RepoError> {
        let cell = {
            let mut slots = self.lock();
            let cell = match slots.order.iter().position(|s| s.id == *id) {
                Some(pos) => {
                    let slot = slots.order.remove(pos).expect("position is in range");
                    let cell = slot.blob.clone();
                    slots.order.push_back(slot);
                    cell
                }
                None => {
                    let cell = Arc::new(OnceCell::new());
                    slots.order.push_back(Slot { id: *id, blob: cell.clone(), counted: false });
                    cell
                }
            };
            self.evict(&mut slots);
            cell
        };
        let blob = cell.get_or_try_init(|| async { repo.read_blob(index, id).await.map(Arc::new) }).await?.clone();
        let mut slots = self.lock();
        if let Some(slot) = slots.order.iter_mut().find(|s| Arc::ptr_eq(&s.blob, &cell)) {
            if !slot.counted {
                slot.counted = true;
                slots.bytes += blob.len();
            }
        }
        self.evict(&mut slots);
        Ok(blob)
    }

    fn evict(&self, slots: &mut Slots) {
        while slots.order.len() > 1 && (slots.bytes > self.budget || slots.order.len() > MAX_SLOTS) {
            if let Some(old) = slots.order.pop_front() {
                if old.counted {
                    slots.bytes -= old.blob.get().map_or(0, |b| b.len());
                }
            }
        }
    }

    /// Bytes `offset .. offset + len` of a file with blobs `content` ending
    /// at `ends` (cut at the end of the file), reading only the blobs that
    /// hold them.
    pub async fn read(
        &self,
        repo: &Repository,
        index: &MasterIndex,
        content: &[Id],
        ends: &[u64],
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, RepoError> {
        let spans = spans_covering(ends, offset, len);
        let mut out = Vec::with_capacity(spans.iter().map(|(_, r)| r.len()).sum());
        for (i, range) in spans {
            let id = &content[i];
            let blob = self.get(repo, index, id).await?;
            let blob_start = if i == 0 { 0 } else { ends[i - 1] };
            if blob.len() as u64 != ends[i] - blob_start {
                return Err(RepoError::Damaged {
                    what: format!("data blob {id}"),
                    reason: "its length differs from the index".into(),
                });
            }
            out.extend_from_slice(&blob[range]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::faults::FaultyBackend;
    use crate::backend::memory::MemoryBackend;
    use crate::format::index::IndexedPack;
    use crate::format::{BlobType, ObjectKind};
    use crate::repo::packer::Packer;
    use crate::repo::InitOptions;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A repository holding one pack of `blobs` data blobs of `blob_len`
    /// bytes each: the repository, its index, the backend (to count reads),
    /// the blob ids in file order and the file's bytes.
    async fn one_file_repo(
        blobs: usize,
        blob_len: usize,
    ) -> (Repository, MasterIndex, Arc<FaultyBackend<MemoryBackend>>, Vec<Id>, Vec<u8>) {
        let backend = Arc::new(FaultyBackend::new(MemoryBackend::new()));
        let opts = InitOptions { kdf: crate::crypto::kdf::KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
        let repo = Repository::init(backend.clone(), b"pw", opts).await.unwrap();
        let mut packer = Packer::new(64 << 20);
        let (mut ids, mut file) = (Vec::new(), Vec::new());
        for i in 0..blobs {
            let raw = pseudo_random(blob_len, i as u64 + 1);
            let sealed = repo.seal_blob(BlobType::Data, &raw).unwrap();
            packer.add(BlobType::Data, sealed.id, &sealed.sealed, sealed.raw_len);
            ids.push(sealed.id);
            file.extend_from_slice(&raw);
        }
        let pack = packer.finish(repo.keys(), repo.repo_id());
        let size = pack.data.len() as u64;
        repo.backend().put(ObjectKind::Pack, &pack.id, pack.data).await.unwrap();
        let mut index = MasterIndex::default();
        index.add_pack(&IndexedPack { id: pack.id, size, blobs: pack.blobs });
        (repo, index, backend, ids, file)
    }

    #[tokio::test]
    async fn reading_a_file_through_the_cache_holds_at_most_the_budget_and_reads_each_blob_once() {
        let blob_len = 64 << 10;
        let (repo, index, backend, ids, file) = one_file_repo(16, blob_len).await;
        let ends = blob_ends(&index, &ids).unwrap();
        assert_eq!(ends.last().copied(), Some(file.len() as u64));
        let budget = 256 << 10;
        let cache = BlobCache::new(budget);
        let before = backend.operations();
        let step = 50_000;
        let mut peak = 0;
        for offset in (0..file.len()).step_by(step) {
            let got = cache.read(&repo, &index, &ids, &ends, offset as u64, step as u64).await.unwrap();
            assert_eq!(got, file[offset..(offset + step).min(file.len())], "bytes at {offset}");
            peak = peak.max(cache.held_bytes());
        }
        assert!(peak <= budget + blob_len, "{peak} bytes held, budget {budget}");
        assert_eq!(backend.operations() - before, ids.len() as u64, "one ranged read per blob, none of the pack");
        // A read in the middle fetches only the blobs under it.
        let cache = BlobCache::new(budget);
        let before = backend.operations();
        let got = cache.read(&repo, &index, &ids, &ends, 5 * blob_len as u64 - 10, 20).await.unwrap();
        assert_eq!(got, file[5 * blob_len - 10..5 * blob_len + 10]);
        assert_eq!(backend.operations() - before, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_of_one_blob_at_once_share_one_storage_read() {
        let (repo, index, backend, ids, file) = one_file_repo(1, 128 << 10).await;
        let ends = blob_ends(&index, &ids).unwrap();
        let cache = BlobCache::new(4 << 20);
        let before = backend.operations();
        let reads = (0..8u64).map(|i| cache.read(&repo, &index, &ids, &ends, i * 16_384, 16_384));
        for (i, got) in futures_join_all(reads).await.into_iter().enumerate() {
            assert_eq!(got.unwrap(), file[i * 16_384..(i + 1) * 16_384]);
        }
        assert_eq!(backend.operations() - before, 1);
    }

    /// Runs futures concurrently on this task and collects their results.
    async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut futures: Vec<_> = futures.map(Box::pin).collect();
        let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
                if slot.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *slot = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.into_iter().map(|v| v.expect("every future finished")).collect()
    }

    #[test]
    fn a_range_inside_one_blob_reads_only_that_blob() {
        let ends = [100, 250, 400];
        assert_eq!(spans_covering(&ends, 120, 50), vec![(1, 20..70)]);
        assert_eq!(spans_covering(&ends, 0, 100), vec![(0, 0..100)]);
        assert_eq!(spans_covering(&ends, 250, 1), vec![(2, 0..1)]);
    }

    #[test]
    fn a_range_across_blobs_reads_each_part_in_order() {
        let ends = [100, 250, 400];
        assert_eq!(spans_covering(&ends, 90, 200), vec![(0, 90..100), (1, 0..150), (2, 0..40)]);
        assert_eq!(spans_covering(&ends, 0, 400), vec![(0, 0..100), (1, 0..150), (2, 0..150)]);
    }

    #[test]
    fn a_range_past_the_end_is_cut_at_the_end() {
        let ends = [100, 250];
        assert_eq!(spans_covering(&ends, 200, 1 << 20), vec![(1, 100..150)]);
        assert!(spans_covering(&ends, 250, 10).is_empty());
        assert!(spans_covering(&ends, u64::MAX, u64::MAX).is_empty());
        assert!(spans_covering(&[], 0, 10).is_empty());
        assert!(spans_covering(&ends, 10, 0).is_empty());
    }
}
