//! Choosing snapshots under `--host`, `--path` and `--tag` filters: `latest`
//! is the newest snapshot the filter matches; an id or id prefix names its
//! snapshot whatever the filter says (as in restic). With no names, every
//! snapshot the filter matches is chosen. One small place, so that a shared
//! resolver can take its place.

use crate::format::snapshot::Snapshot;
use crate::format::Id;
use crate::repo::{RepoError, Repository};

use super::forget::SnapshotFilter;
use super::inspect::{select_snapshots, Selection};

/// Resolves one `latest`, full id or unique id prefix; `latest` under `filter`.
pub async fn find_snapshot(
    repo: &Repository,
    spec: &str,
    filter: &SnapshotFilter,
) -> Result<(Id, Snapshot), RepoError> {
    if spec != "latest" {
        return repo.find_snapshot(spec).await;
    }
    let (snaps, _) = repo.snapshots().await?;
    snaps.into_iter().rfind(|(_, s)| filter.matches(s)).ok_or_else(|| {
        RepoError::Invalid(if is_empty(filter) {
            "the repository has no snapshots".into()
        } else {
            "no snapshot matches the --host, --path and --tag filters".into()
        })
    })
}

/// Chooses snapshots: every one `filter` matches when `specs` is empty,
/// otherwise each of `specs` (`latest` under `filter`). Oldest first.
pub async fn select(repo: &Repository, specs: &[String], filter: &SnapshotFilter) -> Result<Selection, RepoError> {
    if specs.is_empty() {
        let mut all = select_snapshots(repo, &[]).await?;
        all.snapshots.retain(|(_, s)| filter.matches(s));
        return Ok(all);
    }
    let mut chosen: Vec<(Id, Snapshot)> = Vec::new();
    for spec in specs {
        let (id, snap) = find_snapshot(repo, spec, filter).await?;
        if !chosen.iter().any(|(c, _)| *c == id) {
            chosen.push((id, snap));
        }
    }
    chosen.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
    Ok(Selection { snapshots: chosen, unreadable: Vec::new() })
}

fn is_empty(f: &SnapshotFilter) -> bool {
    f.hosts.is_empty() && f.tags.is_empty() && f.paths.is_empty()
}
