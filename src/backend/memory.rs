//! A backend in memory: for tests, and as the reference the conformance suite
//! holds other backends to.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{slice_range, Backend, BackendError, ObjectInfo, Result};
use crate::format::{Id, ObjectKind};

#[derive(Default)]
pub struct MemoryBackend {
    /// Each object's bytes and when it was put (ns since the epoch).
    objects: Mutex<BTreeMap<(ObjectKind, Id), (Bytes, i64)>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<(ObjectKind, Id), (Bytes, i64)>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an object's bytes behind the repository's back (for tests of damage).
    pub fn tamper(&self, kind: ObjectKind, id: &Id, f: impl FnOnce(&mut Vec<u8>)) {
        let mut objects = self.objects();
        if let Some((b, _)) = objects.get_mut(&(kind, *id)) {
            let mut v = b.to_vec();
            f(&mut v);
            *b = Bytes::from(v);
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    async fn create(&self) -> Result<()> {
        if self.objects().keys().any(|(k, _)| *k == ObjectKind::Config) {
            return Err(BackendError::Occupied { message: "a repository already exists there".into() });
        }
        Ok(())
    }

    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        self.objects().insert((kind, *id), (data, crate::host::now_ns()));
        Ok(())
    }

    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
        self.objects().get(&(kind, *id)).map(|(b, _)| b.clone()).ok_or_else(|| BackendError::not_found(kind, id))
    }

    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
        let data = self.get(kind, id).await?;
        slice_range(&data, kind, id, offset, len)
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, id), (b, at))| ObjectInfo::new(*id, b.len() as u64, Some(*at)))
            .collect())
    }

    async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()> {
        self.objects().remove(&(kind, *id));
        Ok(())
    }
}
