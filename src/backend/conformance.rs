//! The behaviour every backend must show, as one suite that each backend's
//! tests run against a fresh, empty instance.

use std::sync::Arc;

use bytes::Bytes;

use super::{Backend, BackendError, ObjectNames};
use crate::format::{Id, ObjectKind};

fn fail(what: &str) -> BackendError {
    BackendError::Permanent { message: format!("conformance: {what}") }
}

fn check(cond: bool, what: &str) -> Result<(), BackendError> {
    if cond {
        Ok(())
    } else {
        Err(fail(what))
    }
}

/// Runs the suite, giving `b` the repository's object `names` first as a
/// repository would; returns the first way in which `b` misbehaves.
pub async fn run(b: &dyn Backend, names: Arc<dyn ObjectNames>) -> Result<(), BackendError> {
    b.use_object_names(names).await;
    b.create().await?;
    for kind in ObjectKind::ALL {
        check(b.list(kind).await?.is_empty(), "a new repository lists no objects")?;
    }

    let id = Id([7; 32]);
    let data = Bytes::from((0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    b.put(ObjectKind::Pack, &id, data.clone()).await?;
    check(b.get(ObjectKind::Pack, &id).await? == data, "get returns what put stored")?;
    check(
        b.get_range(ObjectKind::Pack, &id, 1000, 5000).await? == data.slice(1000..6000),
        "get_range returns the requested bytes",
    )?;
    check(b.get_range(ObjectKind::Pack, &id, 99_990, 10).await? == data.slice(99_990..), "a range may end at the end")?;
    check(b.get_range(ObjectKind::Pack, &id, 99_990, 11).await.is_err(), "a range past the end is an error")?;
    check(b.get(ObjectKind::Index, &id).await.err().is_some_and(|e| e.is_not_found()), "kinds are separate")?;
    check(
        b.get(ObjectKind::Pack, &Id([8; 32])).await.err().is_some_and(|e| e.is_not_found()),
        "a missing object is not-found",
    )?;

    // Putting the same object again is harmless.
    b.put(ObjectKind::Pack, &id, data.clone()).await?;
    let listed = b.list(ObjectKind::Pack).await?;
    check(listed.len() == 1 && listed[0].id == id && listed[0].size == 100_000, "list gives ids and sizes")?;

    let others: Vec<Id> = (0..20u8).map(|i| Id([i + 100; 32])).collect();
    for (i, o) in others.iter().enumerate() {
        b.put(ObjectKind::Snapshot, o, Bytes::from(vec![i as u8; i + 1])).await?;
    }
    let mut listed: Vec<Id> = b.list(ObjectKind::Snapshot).await?.into_iter().map(|o| o.id).collect();
    listed.sort();
    check(listed == others, "list returns every object of a kind")?;

    b.put(ObjectKind::Config, &Id::ZERO, Bytes::from_static(b"config bytes")).await?;
    check(b.list(ObjectKind::Config).await?.len() == 1, "the config is listed")?;
    check(&b.get(ObjectKind::Config, &Id::ZERO).await?[..] == b"config bytes", "the config reads back")?;
    check(b.create().await.is_err(), "create refuses to overwrite a repository")?;

    b.delete(ObjectKind::Pack, &id).await?;
    check(b.get(ObjectKind::Pack, &id).await.err().is_some_and(|e| e.is_not_found()), "a deleted object is gone")?;
    b.delete(ObjectKind::Pack, &id).await?;
    check(b.list(ObjectKind::Pack).await?.is_empty(), "deleted objects are not listed")?;

    let empty = Id([9; 32]);
    b.put(ObjectKind::Lock, &empty, Bytes::new()).await?;
    check(b.get(ObjectKind::Lock, &empty).await?.is_empty(), "empty objects are allowed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{faults::FaultyBackend, local::LocalBackend, memory::MemoryBackend, retry::RetryBackend};
    use crate::crypto::names::ObjectNameCodec;
    use std::time::Duration;

    fn names() -> Arc<ObjectNameCodec> {
        Arc::new(ObjectNameCodec::for_repository(&[0x5a; 32]))
    }

    #[tokio::test]
    async fn memory_backend_conforms() {
        run(&MemoryBackend::new(), names()).await.unwrap();
    }

    #[tokio::test]
    async fn local_backend_conforms() {
        let dir = tempfile::tempdir().unwrap();
        run(&LocalBackend::new(dir.path().join("repo")), names()).await.unwrap();
    }

    #[tokio::test]
    async fn retry_decorator_over_flaky_storage_conforms() {
        let mut flaky = FaultyBackend::new(MemoryBackend::new());
        flaky.transient_every = 3;
        let b = RetryBackend::new(flaky, 4, Duration::from_millis(1));
        run(&b, names()).await.unwrap();
    }

    #[tokio::test]
    async fn local_backend_ignores_stray_files() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().await.unwrap();
        std::fs::write(dir.path().join("index").join("notes.txt"), b"x").unwrap();
        assert!(b.list(ObjectKind::Index).await.unwrap().is_empty());
    }
}
