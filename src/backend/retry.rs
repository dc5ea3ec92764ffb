//! Retries transient failures with exponential back-off, waiting at least as
//! long as the backend asked. Not-found and permanent errors pass through.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, ErrorClass, ObjectInfo, ObjectNames, Result};
use crate::format::{Id, ObjectKind};

pub struct RetryBackend<B> {
    inner: B,
    attempts: u32,
    base_delay: Duration,
}

impl<B: Backend> RetryBackend<B> {
    pub fn new(inner: B, attempts: u32, base_delay: Duration) -> Self {
        RetryBackend { inner, attempts: attempts.max(1), base_delay }
    }

    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
        T: Send,
    {
        let mut delay = self.base_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => match e.class() {
                    ErrorClass::Transient(after) if attempt < self.attempts => {
                        let wait = after.map_or(delay, |a| a.max(delay));
                        tracing::warn!(operation = what, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                        tokio::time::sleep(wait).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                        attempt += 1;
                    }
                    _ => {
                        if !e.is_not_found() {
                            tracing::error!(operation = what, attempt, error = %e, "storage operation failed");
                        }
                        return Err(e);
                    }
                },
            }
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for RetryBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create(&self) -> Result<()> {
        self.retry("create", || self.inner.create()).await
    }
    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        self.retry("put", || self.inner.put(kind, id, data.clone())).await
    }
    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
        self.retry("get", || self.inner.get(kind, id)).await
    }
    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
        self.retry("get_range", || self.inner.get_range(kind, id, offset, len)).await
    }
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.retry("list", || self.inner.list(kind)).await
    }
    async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()> {
        self.retry("delete", || self.inner.delete(kind, id)).await
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
        self.retry("put_head", || self.inner.put_head(sealed.clone())).await
    }
    async fn heads(&self, scan: bool) -> Result<Vec<Bytes>> {
        self.retry("heads", || self.inner.heads(scan)).await
    }
    async fn rescan(&self) -> Result<()> {
        self.retry("rescan", || self.inner.rescan()).await
    }
    async fn stored_items(&self) -> Result<Option<super::StoredItems>> {
        self.retry("stored_items", || self.inner.stored_items()).await
    }
    async fn stored_handle(&self, kind: ObjectKind, id: &Id) -> Result<Option<super::StoredHandle>> {
        self.retry("stored_handle", || self.inner.stored_handle(kind, id)).await
    }
    async fn put_from_handle(&self, kind: ObjectKind, id: &Id, handle: &super::StoredHandle) -> Result<bool> {
        self.retry("put_from_handle", || self.inner.put_from_handle(kind, id, handle)).await
    }
}
