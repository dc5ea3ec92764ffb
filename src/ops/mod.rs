//! Commands as library calls: each takes an open repository and options,
//! holds the right lock for its duration, and returns a result for the CLI
//! to print.

pub mod cat;
pub mod check;
pub mod copy;
pub mod diff;
pub mod dump;
pub mod forget;
pub mod inspect;
pub mod key;
pub mod mount;
pub mod prune;
pub mod repair;
pub mod rewrite;
pub mod select;
pub mod stats;
pub mod tag;

use std::sync::Arc;

use crate::archiver::{self, Progress, SnapshotOptions, SnapshotOutcome};
use crate::format::snapshot::Snapshot;
use crate::format::Id;
use crate::repo::lock;
use crate::repo::{RepoError, Repository};
use crate::restorer::{self, RestoreOptions, RestoreOutcome, RestoreProgress};
use check::{CheckProgress, CheckReport, SnapshotFilter, VerifyScope};

/// Takes a snapshot under a shared lock (a dry run takes none).
pub async fn snapshot(
    repo: &Repository,
    opts: SnapshotOptions,
    progress: Arc<dyn Progress>,
) -> Result<SnapshotOutcome, RepoError> {
    // A dry run writes nothing, not even a lock.
    if opts.dry_run {
        return archiver::snapshot(repo, None, opts, progress).await;
    }
    let guard = lock::acquire(repo, false).await?;
    let result = archiver::snapshot(repo, Some(&guard), opts, progress).await;
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
        let index = Arc::new(repo.load_index_lenient().await?);
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
    check_snapshots(repo, scope, &SnapshotFilter::default(), progress).await
}

/// Checks the repository under a shared lock, reading only the snapshots
/// `filter` selects (and with verification, only the packs they use).
pub async fn check_snapshots(
    repo: &Repository,
    scope: VerifyScope,
    filter: &SnapshotFilter,
    progress: Arc<dyn CheckProgress>,
) -> Result<CheckReport, RepoError> {
    let guard = lock::acquire(repo, false).await?;
    // Check what storage holds now, not what the backend remembers.
    if let Err(e) = repo.backend().rescan().await {
        guard.release().await;
        return Err(e.into());
    }
    let result = check::check(repo, scope, filter, progress).await;
    guard.release().await;
    result
}

/// Forgets snapshots under an exclusive lock (shared for a dry run). With
/// `prune`, prunes under the same lock afterwards when snapshots were removed,
/// or in a dry run reports what a prune would do once they are gone.
pub async fn forget(
    repo: &Repository,
    opts: &forget::ForgetOptions,
    prune: Option<&prune::PruneOptions>,
) -> Result<(forget::ForgetReport, Option<prune::PruneReport>), RepoError> {
    let guard = lock::acquire(repo, !opts.dry_run).await?;
    let result = async {
        let report = forget::forget(repo, &guard, opts).await?;
        let pruned = match prune {
            Some(p) if opts.dry_run => {
                let gone = report.plan.to_remove().into_iter().collect();
                Some(prune::simulate(repo, &guard, p, &gone).await?)
            }
            Some(p) if !report.removed.is_empty() => Some(prune::prune(repo, &guard, p).await?),
            _ => None,
        };
        Ok((report, pruned))
    }
    .await;
    guard.release().await;
    result
}

/// Prunes under an exclusive lock (shared for a dry run).
pub async fn prune(repo: &Repository, opts: &prune::PruneOptions) -> Result<prune::PruneReport, RepoError> {
    let guard = lock::acquire(repo, !opts.dry_run).await?;
    let result = prune::prune(repo, &guard, opts).await;
    guard.release().await;
    result
}
