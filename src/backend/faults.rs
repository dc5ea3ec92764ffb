//! A fault-injecting decorator for tests: fails writes (and deletes) after a budget, fails
//! operations transiently at a fixed rhythm, "crashes" (fails every operation from a
//! chosen one on, for good), and counts what passed through, so the layers above can be
//! shown to lose nothing when storage misbehaves or the process dies mid-command.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, BackendError, ObjectInfo, ObjectNames, Result};
use crate::format::{Id, ObjectKind};

pub struct FaultyBackend<B> {
    inner: B,
    /// Puts allowed to succeed before every further put fails (u64::MAX: no limit).
    put_budget: AtomicU64,
    /// Deletes allowed to succeed before every further delete fails (u64::MAX: no limit).
    delete_budget: AtomicU64,
    /// Every n-th operation fails transiently (0: never).
    pub transient_every: u64,
    /// Operations allowed to reach storage before the crash (u64::MAX: no crash). The
    /// operation that would pass it and every later one fail, as if the process had died.
    crash_at: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    ops: AtomicU64,
    transient_failures: AtomicU64,
}

impl<B: Backend> FaultyBackend<B> {
    pub fn new(inner: B) -> Self {
        FaultyBackend {
            inner,
            put_budget: AtomicU64::new(u64::MAX),
            delete_budget: AtomicU64::new(u64::MAX),
            transient_every: 0,
            crash_at: AtomicU64::new(u64::MAX),
            puts: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            transient_failures: AtomicU64::new(0),
        }
    }

    /// Lets `budget` more puts succeed, then fails every further one
    /// permanently; `None` lifts the limit.
    pub fn set_put_budget(&self, budget: Option<u64>) {
        let limit = budget.map_or(u64::MAX, |b| self.puts().saturating_add(b));
        self.put_budget.store(limit, Ordering::SeqCst);
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    /// Lets `budget` more deletes succeed, then fails every further one
    /// permanently; `None` lifts the limit.
    pub fn set_delete_budget(&self, budget: Option<u64>) {
        let limit = budget.map_or(u64::MAX, |b| self.deletes().saturating_add(b));
        self.delete_budget.store(limit, Ordering::SeqCst);
    }

    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::SeqCst)
    }

    pub fn transient_failures(&self) -> u64 {
        self.transient_failures.load(Ordering::SeqCst)
    }

    /// Operations seen so far (put, get, get_range, list and delete).
    pub fn operations(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    /// Lets `operations` more operations reach storage, then fails every
    /// further one permanently: a process that died at that point. Nothing
    /// lifts a crash; a test "restarts" by wrapping the same inner storage
    /// in a new decorator, so that work the dead process left running can
    /// never write again.
    pub fn crash_after(&self, operations: u64) {
        self.crash_at.store(self.operations().saturating_add(operations), Ordering::SeqCst);
    }

    /// Whether the crash set by [`FaultyBackend::crash_after`] has happened.
    pub fn crashed(&self) -> bool {
        self.operations() > self.crash_at.load(Ordering::SeqCst)
    }

    fn maybe_transient(&self, what: &str) -> Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        if n > self.crash_at.load(Ordering::SeqCst) {
            return Err(BackendError::Permanent { message: format!("injected crash before {what}") });
        }
        if self.transient_every > 0 && n.is_multiple_of(self.transient_every) {
            self.transient_failures.fetch_add(1, Ordering::SeqCst);
            return Err(BackendError::Transient { message: format!("injected fault in {what}"), retry_after: None });
        }
        Ok(())
    }
}

#[async_trait]
impl<B: Backend> Backend for FaultyBackend<B> {
    fn location(&self) -> String {
        format!("faulty({})", self.inner.location())
    }
    async fn create(&self) -> Result<()> {
        self.inner.create().await
    }
    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        self.maybe_transient("put")?;
        if self.puts.load(Ordering::SeqCst) >= self.put_budget.load(Ordering::SeqCst) {
            return Err(BackendError::Permanent {
                message: format!("injected write failure for {} {}", kind.name(), id),
            });
        }
        self.inner.put(kind, id, data).await?;
        self.puts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
        self.maybe_transient("get")?;
        self.inner.get(kind, id).await
    }
    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
        self.maybe_transient("get_range")?;
        self.inner.get_range(kind, id, offset, len).await
    }
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.maybe_transient("list")?;
        self.inner.list(kind).await
    }
    async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()> {
        self.maybe_transient("delete")?;
        if self.deletes.load(Ordering::SeqCst) >= self.delete_budget.load(Ordering::SeqCst) {
            return Err(BackendError::Permanent {
                message: format!("injected delete failure for {} {}", kind.name(), id),
            });
        }
        self.inner.delete(kind, id).await?;
        self.deletes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn use_object_names(&self, names: Arc<dyn ObjectNames>) {
        self.inner.use_object_names(names).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[tokio::test]
    async fn a_crash_fails_every_later_operation_and_stays() {
        let faulty = FaultyBackend::new(MemoryBackend::new());
        let (a, b) = (Id([1; 32]), Id([2; 32]));
        faulty.crash_after(1);
        faulty.put(ObjectKind::Pack, &a, Bytes::from_static(b"a")).await.unwrap();
        assert!(!faulty.crashed());
        let err = faulty.put(ObjectKind::Pack, &b, Bytes::from_static(b"b")).await.unwrap_err();
        assert!(err.to_string().contains("injected crash"), "{err}");
        assert!(faulty.crashed());
        assert!(faulty.list(ObjectKind::Pack).await.is_err());
        assert!(faulty.get(ObjectKind::Pack, &a).await.is_err());
        // The storage below holds exactly what reached it before the crash.
        let stored = faulty.inner().list(ObjectKind::Pack).await.unwrap();
        assert_eq!(stored.iter().map(|o| o.id).collect::<Vec<_>>(), vec![a]);
    }
}
