//! `tag`: changing the tags of snapshots. A snapshot object is immutable and
//! named by its content, so a retagged snapshot is saved as a new object and
//! the old one is deleted afterwards (new before delete: a crash in between
//! leaves both, never neither). Runs under an exclusive lock; a snapshot whose
//! tags would not change is left alone.

use crate::format::snapshot::Snapshot;
use crate::format::{Id, ObjectKind};
use crate::repo::lock;
use crate::repo::{RepoError, Repository};

use super::inspect::select_snapshots;

/// How to change the tags.
#[derive(Clone, Debug, Default)]
pub struct TagOptions {
    pub add: Vec<String>,
    pub remove: Vec<String>,
    /// Replace all tags with these (an empty list clears them); excludes `add` and `remove`.
    pub set: Option<Vec<String>>,
}

impl TagOptions {
    fn validate(&self) -> Result<(), RepoError> {
        if self.set.is_some() && (!self.add.is_empty() || !self.remove.is_empty()) {
            return Err(RepoError::Invalid("--set cannot be combined with --add or --remove".into()));
        }
        if self.set.is_none() && self.add.is_empty() && self.remove.is_empty() {
            return Err(RepoError::Invalid("nothing to do: give --add, --remove or --set".into()));
        }
        Ok(())
    }

    /// The tags `old` becomes: order kept, no duplicates, no empty tags.
    pub fn apply(&self, old: &[String]) -> Vec<String> {
        let base: Vec<String> = match &self.set {
            Some(set) => set.clone(),
            None => old.iter().filter(|t| !self.remove.contains(t)).chain(self.add.iter()).cloned().collect(),
        };
        let mut out: Vec<String> = Vec::with_capacity(base.len());
        for t in base {
            if !t.is_empty() && !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }
}

/// One rewritten snapshot.
#[derive(Clone, Debug)]
pub struct Retagged {
    pub old_id: Id,
    pub new_id: Id,
    pub snapshot: Snapshot,
}

/// Retags the snapshots in `specs` (all when empty). Returns the snapshots
/// that changed.
pub async fn tag(repo: &Repository, specs: &[String], opts: &TagOptions) -> Result<Vec<Retagged>, RepoError> {
    opts.validate()?;
    let guard = lock::acquire(repo, true).await?;
    let result = async {
        let selection = select_snapshots(repo, specs).await?;
        let mut changed = Vec::new();
        for (old_id, snap) in selection.snapshots {
            let tags = opts.apply(&snap.tags);
            if tags == snap.tags {
                continue;
            }
            let snapshot = Snapshot { tags, ..snap };
            guard.ensure_held().await?;
            let new_id = repo.save_object(ObjectKind::Snapshot, &snapshot.encode()).await?;
            if new_id != old_id {
                repo.backend().delete(ObjectKind::Snapshot, &old_id).await?;
            }
            tracing::info!(old = %old_id.short(), new = %new_id.short(), "snapshot retagged");
            changed.push(Retagged { old_id, new_id, snapshot });
        }
        Ok(changed)
    }
    .await;
    guard.release().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn applies_changes() {
        let add = TagOptions { add: s(&["b", "c", "b"]), remove: s(&["a"]), set: None };
        assert_eq!(add.apply(&s(&["a", "b"])), s(&["b", "c"]));
        let set = TagOptions { set: Some(s(&["x", ""])), ..Default::default() };
        assert_eq!(set.apply(&s(&["a"])), s(&["x"]));
        let clear = TagOptions { set: Some(s(&[""])), ..Default::default() };
        assert!(clear.apply(&s(&["a"])).is_empty());
        assert!(TagOptions::default().validate().is_err());
        assert!(TagOptions { add: s(&["a"]), set: Some(vec![]), ..Default::default() }.validate().is_err());
    }
}
