//! The key ring of an open repository: listing key slots, adding a slot for a
//! new password, removing a slot and replacing the slot in use. A new slot
//! wraps the master secret the repository was opened with; that secret never
//! leaves this layer. Every slot's owner record (host, user, creation time) is
//! sealed under the repository keys, so all of them can be listed.

use bytes::Bytes;

use crate::crypto::kdf::KdfParams;
use crate::format::key::{KeyPayload, KeySlot, KDF_ARGON2ID};
use crate::format::{Id, ObjectKind};
use crate::host;

use super::{keys, RepoError, Repository, Result};

pub use crate::format::key::KeyOwner;

/// What can be told about one stored key slot.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub id: Id,
    /// Whether this is the slot the repository was opened with.
    pub current: bool,
    /// Key derivation function and its stored parameters (public fields).
    pub kdf: &'static str,
    pub params: KdfParams,
    pub salt: [u8; 32],
    /// Length of the sealed payload.
    pub sealed_len: usize,
    /// Who made the slot and when; `None` if its owner record does not open.
    pub owner: Option<KeyOwner>,
    /// Why the slot could not be decoded, if it could not.
    pub error: Option<String>,
}

fn kdf_name(kdf: u8) -> &'static str {
    match kdf {
        KDF_ARGON2ID => "argon2id",
        _ => "unknown",
    }
}

impl Repository {
    /// Describes one key slot.
    pub async fn key_info(&self, id: &Id) -> Result<KeyInfo> {
        let bytes = self.backend().get(ObjectKind::Key, id).await?;
        let current = id == self.key_id();
        Ok(match KeySlot::decode(&bytes) {
            Ok(slot) => KeyInfo {
                id: *id,
                current,
                kdf: kdf_name(slot.kdf),
                params: KdfParams { m_kib: slot.m_kib, t: slot.t, p: slot.p },
                salt: slot.salt,
                sealed_len: slot.sealed_payload.len(),
                owner: keys::open_owner(self.keys(), self.repo_id(), &slot, id),
                error: None,
            },
            Err(e) => KeyInfo {
                id: *id,
                current,
                kdf: "unknown",
                params: KdfParams { m_kib: 0, t: 0, p: 0 },
                salt: [0; 32],
                sealed_len: 0,
                owner: None,
                error: Some(e.to_string()),
            },
        })
    }

    /// Every stored key slot, ordered by id.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut ids: Vec<Id> = self.backend().list(ObjectKind::Key).await?.into_iter().map(|o| o.id).collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.key_info(&id).await {
                Ok(info) => out.push(info),
                // Removed between listing and reading: not a key any more.
                Err(RepoError::Backend(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Resolves a full key id or a unique prefix of one.
    pub async fn resolve_key(&self, spec: &str) -> Result<Id> {
        let spec_lc = spec.to_ascii_lowercase();
        if spec_lc.is_empty() || !spec_lc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!("`{spec}` is not a key id")));
        }
        let mut matches: Vec<Id> = self
            .backend()
            .list(ObjectKind::Key)
            .await?
            .into_iter()
            .map(|o| o.id)
            .filter(|id| id.to_hex().starts_with(&spec_lc))
            .collect();
        match matches.len() {
            0 => Err(RepoError::Invalid(format!("no key matches `{spec}`"))),
            1 => Ok(matches.remove(0)),
            _ => {
                let candidates: Vec<(Id, String)> = matches.iter().map(|id| (*id, String::new())).collect();
                Err(super::select::ambiguous(spec, "keys", &candidates))
            }
        }
    }

    /// Stores a new key slot that opens this repository with `password`,
    /// recording this host, user and time in it. The slot is read back and
    /// opened before this returns, so a slot that would not work is never
    /// relied upon.
    pub async fn add_key(&self, password: &[u8], params: KdfParams) -> Result<Id> {
        if password.is_empty() {
            return Err(RepoError::Invalid("an empty password is not allowed".into()));
        }
        if !params.within_limits() {
            return Err(RepoError::Invalid(format!("key derivation parameters out of range: {params:?}")));
        }
        let id = Id::random();
        let payload = KeyPayload { master: self.inner.master, repo_id: *self.repo_id() };
        let owner = KeyOwner { created_ns: host::now_ns(), hostname: host::hostname(), username: host::username() };
        let pw = password.to_vec();
        let repo_keys = self.keys().clone();
        let slot = tokio::task::spawn_blocking(move || keys::make_slot(&pw, &payload, &owner, &repo_keys, params, &id))
            .await
            .map_err(|e| RepoError::Invalid(format!("key derivation failed: {e}")))??;
        self.backend().put(ObjectKind::Key, &id, Bytes::from(slot.encode())).await?;
        if let Err(e) = self.confirm_key(&id, password).await {
            if let Err(d) = self.backend().delete(ObjectKind::Key, &id).await {
                tracing::warn!(key = %id.short(), error = %d, "could not remove a key slot that failed its check");
            }
            return Err(e);
        }
        tracing::info!(key = %id.short(), "key added");
        Ok(id)
    }

    /// Reads a slot back from storage and checks that `password` opens it to
    /// this repository's master secret.
    async fn confirm_key(&self, id: &Id, password: &[u8]) -> Result<()> {
        let what = || format!("new key slot {}", id.short());
        let bytes = self.backend().get(ObjectKind::Key, id).await?;
        let slot = KeySlot::decode(&bytes).map_err(|e| RepoError::damaged(what(), e))?;
        let (pw, slot_id) = (password.to_vec(), *id);
        let opened = tokio::task::spawn_blocking(move || keys::open_slot(&pw, &slot, &slot_id))
            .await
            .map_err(|e| RepoError::Invalid(format!("key derivation failed: {e}")))??;
        match opened {
            Some(p) if p.master == self.inner.master && p.repo_id == *self.repo_id() => Ok(()),
            _ => Err(RepoError::damaged(what(), "it does not open with its password after being stored")),
        }
    }

    /// Removes a key slot. Refuses the slot this repository was opened with,
    /// and refuses to leave the repository without a key known to work.
    pub async fn remove_key(&self, id: &Id) -> Result<()> {
        if id == self.key_id() {
            return Err(RepoError::Invalid(format!(
                "key {} is the one in use; open the repository with another password to remove it, or use `key passwd`",
                id.short()
            )));
        }
        let listed: Vec<Id> = self.backend().list(ObjectKind::Key).await?.into_iter().map(|o| o.id).collect();
        if !listed.contains(id) {
            return Err(RepoError::Invalid(format!("no key {}", id.short())));
        }
        if listed.len() < 2 || !listed.contains(self.key_id()) {
            return Err(RepoError::Invalid(format!(
                "refusing to remove key {}: it may be the last key that opens this repository",
                id.short()
            )));
        }
        self.backend().delete(ObjectKind::Key, id).await?;
        tracing::info!(key = %id.short(), "key removed");
        Ok(())
    }

    /// Changes the password: stores a slot for `password`, then removes the
    /// slot in use (in that order, so a failure leaves the old password
    /// working). Returns the new slot's id. Afterwards [`Repository::key_id`]
    /// names a slot that no longer exists.
    pub async fn replace_key(&self, password: &[u8], params: KdfParams) -> Result<Id> {
        let new = self.add_key(password, params).await?;
        self.backend().delete(ObjectKind::Key, self.key_id()).await?;
        tracing::info!(old = %self.key_id().short(), new = %new.short(), "password changed");
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Backend;
    use crate::repo::InitOptions;

    const FAST: KdfParams = KdfParams { m_kib: 64, t: 1, p: 1 };

    #[tokio::test]
    async fn keys_are_added_listed_and_removed() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let repo =
            Repository::init(backend.clone(), b"one", InitOptions { kdf: FAST, ..Default::default() }).await.unwrap();
        let first = *repo.key_id();
        let second = repo.add_key(b"two", FAST).await.unwrap();
        let keys = repo.list_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        let cur = keys.iter().find(|k| k.current).unwrap();
        assert_eq!(cur.id, first);
        assert_eq!(cur.owner.as_ref().unwrap().hostname, host::hostname());
        assert_eq!(keys.iter().find(|k| !k.current).unwrap().owner.as_ref().unwrap().username, host::username());
        assert_eq!(repo.resolve_key(&second.to_hex()[..10]).await.unwrap(), second);

        let by_two = Repository::open(backend.clone(), b"two", None).await.unwrap();
        assert_eq!(*by_two.key_id(), second);
        assert!(matches!(by_two.remove_key(&second).await, Err(RepoError::Invalid(_))));
        by_two.remove_key(&first).await.unwrap();
        assert!(matches!(Repository::open(backend.clone(), b"one", None).await, Err(RepoError::WrongPassword)));
        assert!(matches!(by_two.remove_key(&first).await, Err(RepoError::Invalid(_))));
        assert!(repo.add_key(b"", FAST).await.is_err());

        let third = by_two.replace_key(b"three", FAST).await.unwrap();
        assert!(matches!(Repository::open(backend.clone(), b"two", None).await, Err(RepoError::WrongPassword)));
        let by_three = Repository::open(backend, b"three", None).await.unwrap();
        assert_eq!(*by_three.key_id(), third);
        assert_eq!(by_three.list_keys().await.unwrap().len(), 1);
    }
}
