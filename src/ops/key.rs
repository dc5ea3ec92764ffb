//! `key add|list|remove|passwd` as library calls: the key ring operations of
//! `repo::keyring` under the right lock. Adding a key takes a shared lock;
//! removing one or changing the password takes an exclusive lock.

use crate::crypto::kdf::KdfParams;
use crate::format::Id;
use crate::repo::keyring::KeyInfo;
use crate::repo::lock;
use crate::repo::{RepoError, Repository};

/// Every key slot; the one in use is marked `current`.
pub async fn list(repo: &Repository) -> Result<Vec<KeyInfo>, RepoError> {
    repo.list_keys().await
}

/// Adds a key for `password`; returns its id.
pub async fn add(repo: &Repository, password: &[u8], params: KdfParams) -> Result<Id, RepoError> {
    let guard = lock::acquire(repo, false).await?;
    let result = async {
        guard.ensure_held().await?;
        repo.add_key(password, params).await
    }
    .await;
    guard.release().await;
    result
}

/// Removes the key `spec` (an id or a unique prefix); returns its id.
pub async fn remove(repo: &Repository, spec: &str) -> Result<Id, RepoError> {
    let guard = lock::acquire(repo, true).await?;
    let result = async {
        let id = repo.resolve_key(spec).await?;
        guard.ensure_held().await?;
        repo.remove_key(&id).await?;
        Ok(id)
    }
    .await;
    guard.release().await;
    result
}

/// Replaces the key in use by one for `password`; returns the new key's id.
pub async fn passwd(repo: &Repository, password: &[u8], params: KdfParams) -> Result<Id, RepoError> {
    let guard = lock::acquire(repo, true).await?;
    let result = async {
        guard.ensure_held().await?;
        repo.replace_key(password, params).await
    }
    .await;
    guard.release().await;
    result
}
