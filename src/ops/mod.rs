//! Commands as library calls: each takes an open repository and options,
//! holds the right lock for its duration, and returns a result for the CLI
//! to print.

pub mod check;

use std::sync::Arc;

use crate::archiver::{self, Progress, SnapshotOptions, SnapshotOutcome};
use crate::format::snapshot::Snapshot;
use crate::format::Id;
use crate::repo::lock;
use crate::repo::{RepoError, Repository};
use crate::restorer::{self, RestoreOptions, RestoreOutcome, RestoreProgress};
use check::{CheckProgress, CheckReport, VerifyScope};

/// Takes a snapshot under a shared lock.
pub async fn snapshot(
    repo: &Repository,
    opts: SnapshotOptions,
    progress: Arc<dyn Progress>,
) -> Result<SnapshotOutcome, RepoError> {
    let guard = lock::acquire(repo, false).await?;
    let result = archiver::snapshot(repo, &guard, opts, progress).await;
    guard.release().await;
    result
}

/// Restores `spec` (`latest`, an id or a prefix) under a shared lock.
pub async fn restore(
    repo: &Repository,
    spec: &str,
    opts: &RestoreOptions,
    progress: Arc<dyn RestoreProgress>,
) -> Result<(Id, Snapshot, RestoreOutcome), RepoError> {
    let guard = lock::acquire(repo, false).await?;
    let result = async {
        let (id, snap) = repo.find_snapshot(spec).await?;
        let index = Arc::new(repo.load_index().await?);
        let outcome = restorer::restore(repo, index, &snap.tree, opts, progress).await?;
        Ok((id, snap, outcome))
    }
    .await;
    guard.release().await;
    result
}

/// Checks the repository under a shared lock.
pub async fn check(
    repo: &Repository,
    scope: VerifyScope,
    progress: Arc<dyn CheckProgress>,
) -> Result<CheckReport, RepoError> {
    let guard = lock::acquire(repo, false).await?;
    let result = check::check(repo, scope, progress).await;
    guard.release().await;
    result
}
