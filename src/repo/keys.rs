//! Key slots: creating one for a password and finding the slot a password
//! opens. Each slot wraps the same master secret.

use crate::crypto::kdf::{slot_key, KdfParams};
use crate::crypto::random_secret;
use crate::format::key::{KeyPayload, KeySlot, KDF_ARGON2ID};
use crate::format::{associated_data, Id, KEY_SLOT_DOMAIN};

use super::RepoError;

/// Seals `payload` under `password` into a new slot stored as `slot_id`.
pub fn make_slot(password: &[u8], payload: &KeyPayload, params: KdfParams, slot_id: &Id) -> Result<KeySlot, RepoError> {
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
    })
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
