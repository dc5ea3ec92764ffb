//! `cat`: one stored object, authenticated and decoded, for debugging. Ids
//! may be given as unique prefixes. Takes no lock, so that it works on a
//! repository someone else holds; it only reads.

use crate::format::config::Config;
use crate::format::index::IndexFile;
use crate::format::lock::Lock;
use crate::format::pack::BlobEntry;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::format::{BlobType, Id, ObjectKind};
use crate::repo::keyring::KeyInfo;
use crate::repo::{RepoError, Repository};

/// What to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatTarget {
    Config,
    /// `latest`, an id or a prefix.
    Snapshot(String),
    Index(String),
    PackHeader(String),
    Key(String),
    Tree(String),
    Lock(String),
}

impl CatTarget {
    /// Parses `config`, or a kind and an id.
    pub fn parse(kind: &str, id: Option<&str>) -> Result<CatTarget, RepoError> {
        let need = |k: &str| id.map(str::to_string).ok_or_else(|| RepoError::Invalid(format!("`cat {k}` needs an id")));
        Ok(match kind {
            "config" if id.is_none() => CatTarget::Config,
            "config" => return Err(RepoError::Invalid("`cat config` takes no id".into())),
            "snapshot" => CatTarget::Snapshot(need(kind)?),
            "index" => CatTarget::Index(need(kind)?),
            "pack-header" | "pack" => CatTarget::PackHeader(need(kind)?),
            "key" => CatTarget::Key(need(kind)?),
            "tree" => CatTarget::Tree(need(kind)?),
            "lock" => CatTarget::Lock(need(kind)?),
            _ => {
                return Err(RepoError::Invalid(format!(
                    "cannot cat `{kind}`: use config, snapshot, index, pack-header, key, tree or lock"
                )))
            }
        })
    }
}

/// A decoded object.
#[derive(Clone, Debug)]
pub enum CatObject {
    Config(Config),
    Snapshot(Id, Snapshot),
    Index(Id, IndexFile),
    PackHeader { id: Id, size: u64, blobs: Vec<BlobEntry> },
    Key(KeyInfo),
    Tree(Id, Tree),
    Lock(Id, Lock),
}

/// Resolves a full id or a unique prefix among the stored objects of `kind`.
pub async fn resolve_object(repo: &Repository, kind: ObjectKind, spec: &str) -> Result<(Id, u64), RepoError> {
    let what = kind.name().trim_end_matches('s');
    let lc = spec.to_ascii_lowercase();
    if lc.is_empty() || lc.len() > 64 || !lc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RepoError::Invalid(format!("`{spec}` is not a {what} id")));
    }
    let mut hits: Vec<(Id, u64)> = repo
        .backend()
        .list(kind)
        .await?
        .into_iter()
        .filter(|o| o.id.to_hex().starts_with(&lc))
        .map(|o| (o.id, o.size))
        .collect();
    match hits.len() {
        0 => Err(RepoError::Invalid(format!("no {what} matches `{spec}`"))),
        1 => Ok(hits.remove(0)),
        _ => {
            let candidates: Vec<(Id, String)> = hits.iter().map(|(id, _)| (*id, String::new())).collect();
            Err(crate::repo::select::ambiguous(spec, &format!("{what} objects"), &candidates))
        }
    }
}

fn damaged(what: String, e: impl ToString) -> RepoError {
    RepoError::Damaged { what, reason: e.to_string() }
}

/// Loads and decodes the object `target` names.
pub async fn cat(repo: &Repository, target: &CatTarget) -> Result<CatObject, RepoError> {
    Ok(match target {
        CatTarget::Config => CatObject::Config(repo.config().clone()),
        CatTarget::Snapshot(spec) => {
            let (id, snap) = repo.find_snapshot(spec).await?;
            CatObject::Snapshot(id, snap)
        }
        CatTarget::Index(spec) => {
            let (id, _) = resolve_object(repo, ObjectKind::Index, spec).await?;
            let plain = repo.load_object(ObjectKind::Index, &id).await?;
            CatObject::Index(id, IndexFile::decode(&plain).map_err(|e| damaged(format!("index {id}"), e))?)
        }
        CatTarget::PackHeader(spec) => {
            let (id, size) = resolve_object(repo, ObjectKind::Pack, spec).await?;
            let blobs = repo.read_pack_header(&id, size).await?;
            CatObject::PackHeader { id, size, blobs }
        }
        CatTarget::Key(spec) => {
            let id = repo.resolve_key(spec).await?;
            CatObject::Key(repo.key_info(&id).await?)
        }
        CatTarget::Tree(spec) => {
            let index = repo.load_index().await?;
            let lc = spec.to_ascii_lowercase();
            if lc.is_empty() || !lc.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RepoError::Invalid(format!("`{spec}` is not a tree id")));
            }
            let hits: Vec<Id> = match lc.parse::<Id>() {
                Ok(id) => index.lookup(&id).filter(|l| l.blob_type == BlobType::Tree).map(|_| id).into_iter().collect(),
                Err(_) => index
                    .blobs()
                    .filter(|(id, loc)| loc.blob_type == BlobType::Tree && id.to_hex().starts_with(&lc))
                    .map(|(id, _)| id)
                    .collect(),
            };
            let id = match hits.len() {
                0 => return Err(RepoError::Invalid(format!("no tree matches `{spec}`"))),
                1 => hits[0],
                _ => {
                    let candidates: Vec<(Id, String)> = hits.iter().map(|id| (*id, String::new())).collect();
                    return Err(crate::repo::select::ambiguous(spec, "trees", &candidates));
                }
            };
            CatObject::Tree(id, repo.load_tree_from_storage(&index, &id).await?)
        }
        CatTarget::Lock(spec) => {
            let (id, _) = resolve_object(repo, ObjectKind::Lock, spec).await?;
            let plain = repo.load_object(ObjectKind::Lock, &id).await?;
            CatObject::Lock(id, Lock::decode(&plain).map_err(|e| damaged(format!("lock {id}"), e))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(CatTarget::parse("config", None).unwrap(), CatTarget::Config);
        assert_eq!(CatTarget::parse("key", Some("ab")).unwrap(), CatTarget::Key("ab".into()));
        assert!(CatTarget::parse("key", None).is_err());
        assert!(CatTarget::parse("config", Some("x")).is_err());
        assert!(CatTarget::parse("blob", Some("ab")).is_err());
    }
}
