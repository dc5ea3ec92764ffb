//! Key slots: creating one for a password and finding the slot a password
//! opens. Each slot wraps the same master secret.

use crate::crypto::kdf::{slot_key, KdfParams};
use crate::crypto::{random_secret, RepoKeys};
use crate::format::key::{KeyOwner, KeyPayload, KeySlot, KDF_ARGON2ID};
use crate::format::{associated_data, Id, KEY_OWNER_DOMAIN, KEY_SLOT_DOMAIN};

use super::RepoError;

/// Seals `payload` under `password` into a new slot stored as `slot_id`, with
/// its owner record sealed under the repository keys.
pub fn make_slot(
    password: &[u8],
    payload: &KeyPayload,
    owner: &KeyOwner,
    keys: &RepoKeys,
    params: KdfParams,
    slot_id: &Id,
) -> Result<KeySlot, RepoError> {
    let salt = random_secret();
    let key = slot_key(password, &salt, params).map_err(|e| RepoError::Invalid(e.to_string()))?;
    let ad = associated_data(&Id::ZERO, KEY_SLOT_DOMAIN, slot_id);
    Ok(KeySlot {
        kdf: KDF_ARGON2ID,
        m_kib: params.m_kib,
        t: params.t,
        p: params.p,
        salt,
        sealed_payload: key.seal(&ad, &payload.encode()),
        sealed_owner: keys.seal.seal(&associated_data(&payload.repo_id, KEY_OWNER_DOMAIN, slot_id), &owner.encode()),
    })
}

/// Reads a slot's owner record with the repository keys.
pub fn open_owner(keys: &RepoKeys, repo_id: &Id, slot: &KeySlot, slot_id: &Id) -> Option<KeyOwner> {
    let plain = keys.seal.open(&associated_data(repo_id, KEY_OWNER_DOMAIN, slot_id), &slot.sealed_owner).ok()?;
    KeyOwner::decode(&plain).ok()
}

/// Opens a slot with `password`: `Ok(None)` if the password is not this slot's.
pub fn open_slot(password: &[u8], slot: &KeySlot, slot_id: &Id) -> Result<Option<KeyPayload>, RepoError> {
    let params = KdfParams { m_kib: slot.m_kib, t: slot.t, p: slot.p };
    let key = slot_key(password, &slot.salt, params)
        .map_err(|e| RepoError::Damaged { what: format!("key slot {}", slot_id.short()), reason: e.to_string() })?;
    let ad = associated_data(&Id::ZERO, KEY_SLOT_DOMAIN, slot_id);
    match key.open(&ad, &slot.sealed_payload) {
        Ok(plain) => KeyPayload::decode(&plain)
            .map(Some)
            .map_err(|e| RepoError::Damaged { what: format!("key slot {}", slot_id.short()), reason: e.to_string() }),
        Err(_) => Ok(None),
    }
}
