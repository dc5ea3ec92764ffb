//! `repair index`: rebuilds the index from the packs alone. Reads storage
//! afresh (for Telegram, every message of the chat), reads the sealed header
//! of every pack, writes one index object listing every pack whose header
//! opens and superseding every index object stored, then deletes those. The
//! head is written when the exclusive lock is released.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::format::index::IndexedPack;
use crate::format::{Id, ObjectKind};
use crate::repo::{lock, RepoError, Repository};

/// Pack headers read at once.
const HEADERS_IN_FLIGHT: usize = 4;

#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    /// Packs whose headers were read and indexed.
    pub packs: usize,
    pub blobs: usize,
    /// Packs whose headers could not be read, with the reason; left out.
    pub unreadable: Vec<(String, String)>,
    /// The new index object, if one was written.
    pub index: Option<String>,
    /// Index objects replaced by it.
    pub replaced: usize,
}

/// Rebuilds the index under an exclusive lock.
pub async fn repair_index(repo: &Repository) -> Result<RepairReport, RepoError> {
    let guard = lock::acquire(repo, true).await?;
    let result = rebuild(repo, &guard).await;
    guard.release().await;
    result
}

async fn rebuild(repo: &Repository, guard: &lock::LockGuard) -> Result<RepairReport, RepoError> {
    repo.backend().rescan().await?;
    let old: Vec<Id> = repo.backend().list(ObjectKind::Index).await?.into_iter().map(|o| o.id).collect();
    let packs = repo.backend().list(ObjectKind::Pack).await?;
    let limit = Arc::new(Semaphore::new(HEADERS_IN_FLIGHT));
    let mut reads = tokio::task::JoinSet::new();
    for info in packs {
        let (repo, limit) = (repo.clone(), Arc::clone(&limit));
        reads.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (info, repo.read_pack_header(&info.id, info.size).await)
        });
    }
    let mut report = RepairReport::default();
    let mut indexed = Vec::new();
    while let Some(done) = reads.join_next().await {
        let (info, header) = done.map_err(|e| RepoError::Invalid(format!("reading a pack header failed: {e}")))?;
        match header {
            Ok(blobs) => {
                report.blobs += blobs.len();
                indexed.push(IndexedPack { id: info.id, size: info.size, blobs });
            }
            Err(RepoError::Backend(e)) if e.needs_login() => return Err(RepoError::Backend(e)),
            Err(e) => {
                tracing::warn!(pack = %info.id, error = %e, "leaving out a pack whose header cannot be read");
                report.unreadable.push((info.id.to_hex(), e.to_string()));
            }
        }
    }
    indexed.sort_by_key(|p| p.id);
    report.packs = indexed.len();
    guard.ensure_held().await?;
    let id = repo.write_index(indexed, old.clone()).await?;
    report.index = Some(id.to_hex());
    for o in old.iter().filter(|o| **o != id) {
        guard.ensure_fresh()?;
        repo.backend().delete(ObjectKind::Index, o).await?;
        report.replaced += 1;
    }
    Ok(report)
}
