//! A cap on the rate of writes to any backend (`tstor snapshot
//! --limit-upload`): every object written takes a slot of `len / rate`
//! seconds on one shared timeline, starts no earlier than its slot and
//! returns no earlier than the slot's end, so the bytes written over any
//! run, divided by its time, stay at or under the rate. Slots are per
//! object (a pack, an index object), so the cap holds on average over each
//! object; reads pass through.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{Backend, ObjectInfo, ObjectNames, Result};
use crate::format::{Id, ObjectKind};

/// The shared timeline of write slots.
#[derive(Debug)]
pub struct UploadLimiter {
    bytes_per_sec: u64,
    /// When the first slot given out started and the last one ends.
    timeline: Mutex<Option<(Instant, Instant)>>,
}

/// The slot of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub start: Instant,
    pub end: Instant,
}

impl UploadLimiter {
    /// A limiter of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> UploadLimiter {
        UploadLimiter { bytes_per_sec: bytes_per_sec.max(1), timeline: Mutex::new(None) }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// How long `bytes` take at the rate.
    pub fn duration_of(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64)
    }

    /// Gives a write of `bytes` asked for at `now` its slot: from the end of
    /// the last slot (or now, if that is past) for `bytes / rate`. Unused
    /// time is not saved up: a write after a pause gets no burst.
    pub fn reserve(&self, now: Instant, bytes: u64) -> Slot {
        let mut timeline = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        let start = timeline.map_or(now, |(_, next)| next.max(now));
        let end = start + self.duration_of(bytes);
        *timeline = Some((timeline.map_or(start, |(first, _)| first), end));
        Slot { start, end }
    }

    /// From the start of the first slot to the end of the last: the least
    /// time the writes so far can have taken.
    pub fn booked(&self) -> Duration {
        let timeline = *self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        timeline.map_or(Duration::ZERO, |(first, last)| last - first)
    }
}

/// A backend whose writes go through an [`UploadLimiter`].
pub struct ThrottledBackend<B> {
    inner: B,
    limiter: Arc<UploadLimiter>,
}

impl<B: Backend> ThrottledBackend<B> {
    pub fn new(inner: B, limiter: Arc<UploadLimiter>) -> Self {
        ThrottledBackend { inner, limiter }
    }

    /// Runs `write` of `bytes` within its slot.
    async fn paced<T>(&self, bytes: u64, write: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let slot = self.limiter.reserve(Instant::now(), bytes);
        tokio::time::sleep_until(slot.start).await;
        let result = write.await;
        tokio::time::sleep_until(slot.end).await;
        result
    }
}

#[async_trait]
impl<B: Backend> Backend for ThrottledBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create(&self) -> Result<()> {
        self.inner.create().await
    }
    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        self.paced(data.len() as u64, self.inner.put(kind, id, data.clone())).await
    }
    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
        self.inner.get(kind, id).await
    }
    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
        self.inner.get_range(kind, id, offset, len).await
    }
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind).await
    }
    async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()> {
        self.inner.delete(kind, id).await
    }
    async fn use_object_names(&self, names: Arc<dyn ObjectNames>) {
        self.inner.use_object_names(names).await
    }
    fn preferred_pack_size(&self) -> Option<usize> {
        self.inner.preferred_pack_size()
    }
    fn preferred_reads_in_flight(&self) -> Option<usize> {
        self.inner.preferred_reads_in_flight()
    }
    fn keeps_head(&self) -> bool {
        self.inner.keeps_head()
    }
    fn readable_by_others(&self) -> Option<String> {
        self.inner.readable_by_others()
    }
    async fn put_head(&self, sealed: Bytes) -> Result<()> {
        self.paced(sealed.len() as u64, self.inner.put_head(sealed.clone())).await
    }
    async fn heads(&self, scan: bool) -> Result<Vec<Bytes>> {
        self.inner.heads(scan).await
    }
    async fn rescan(&self) -> Result<()> {
        self.inner.rescan().await
    }
    async fn stored_handle(&self, kind: ObjectKind, id: &Id) -> Result<Option<super::StoredHandle>> {
        self.inner.stored_handle(kind, id).await
    }
    /// Nothing is uploaded: nothing to pace.
    async fn put_from_handle(&self, kind: ObjectKind, id: &Id, handle: &super::StoredHandle) -> Result<bool> {
        self.inner.put_from_handle(kind, id, handle).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[test]
    fn slots_follow_one_another_at_the_rate_and_save_no_idle_time() {
        let limiter = UploadLimiter::new(1 << 20);
        let t0 = Instant::now();
        let mib = 1 << 20;
        assert_eq!(limiter.reserve(t0, mib), Slot { start: t0, end: t0 + Duration::from_secs(1) });
        // Asked for at the same moment: after the first.
        let second = limiter.reserve(t0, 2 * mib);
        assert_eq!((second.start - t0, second.end - t0), (Duration::from_secs(1), Duration::from_secs(3)));
        // Asked for after a pause: no burst from the idle time.
        let later = limiter.reserve(t0 + Duration::from_secs(10), mib / 2);
        assert_eq!(later.start - t0, Duration::from_secs(10));
        assert_eq!(later.end - later.start, Duration::from_millis(500));
    }

    /// Counts the bytes written to the backend it wraps.
    struct Counting<B> {
        inner: B,
        written: AtomicU64,
    }

    #[async_trait]
    impl<B: Backend> Backend for Counting<B> {
        fn location(&self) -> String {
            self.inner.location()
        }
        async fn create(&self) -> Result<()> {
            self.inner.create().await
        }
        async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
            self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
            self.inner.put(kind, id, data).await
        }
        async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
            self.inner.get(kind, id).await
        }
        async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
            self.inner.get_range(kind, id, offset, len).await
        }
        async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
            self.inner.list(kind).await
        }
        async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()> {
            self.inner.delete(kind, id).await
        }
    }

    /// The limiter's accounting: the slots booked for the writes add up to
    /// their bytes at the rate, and the writes took at least that long, so
    /// bytes over elapsed time stay under the rate. A slow machine only
    /// makes the elapsed time longer.
    #[tokio::test]
    async fn writes_through_the_limiter_average_at_most_the_rate() {
        let rate = 40 << 20;
        let counting = Arc::new(Counting { inner: MemoryBackend::new(), written: AtomicU64::new(0) });
        let backend = Arc::new(ThrottledBackend::new(counting.clone(), Arc::new(UploadLimiter::new(rate))));
        let start = Instant::now();
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..10u8 {
            let b = backend.clone();
            writes.spawn(async move { b.put(ObjectKind::Pack, &Id([i; 32]), Bytes::from(vec![i; 1 << 20])).await });
        }
        while let Some(done) = writes.join_next().await {
            done.unwrap().unwrap();
        }
        let elapsed = start.elapsed();
        let written = counting.written.load(Ordering::Relaxed);
        assert_eq!(written, 10 << 20);
        // 10 MiB at 40 MiB/s: a quarter of a second booked, one slot after another.
        let booked = backend.limiter.booked();
        assert_eq!(booked, Duration::from_millis(250));
        // Sleeps never end early, so this holds however slow the machine;
        // the last write need not wait out its own slot.
        let last_slot = backend.limiter.duration_of(1 << 20);
        assert!(elapsed + last_slot >= booked, "{elapsed:?} + {last_slot:?} < {booked:?}");
        // Reads book nothing.
        backend.get(ObjectKind::Pack, &Id([3; 32])).await.unwrap();
        assert_eq!(backend.limiter.booked(), booked);
    }
}
