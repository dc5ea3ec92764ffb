//! Key slots: creating one for a password, the order in which slots are
//! tried when opening a repository, and opening one. Each slot wraps the same
//! master secret.

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

/// Which key slots to try, in which order, when opening a repository.
#[derive(Debug, PartialEq, Eq)]
pub struct SlotPlan {
    /// Indexes of the slots to try, cheapest first.
    pub order: Vec<usize>,
    /// Indexes of the slots skipped because they ask for more memory than the cap.
    pub over_cap: Vec<usize>,
}

/// The work a slot's key derivation costs: memory times passes (lanes share
/// the memory, they do not add to it).
fn kdf_cost(p: &KdfParams) -> u64 {
    p.m_kib as u64 * p.t as u64
}

/// Plans the trial of slots with parameters `slots`: those asking for more
/// than `cap_kib` KiB are skipped, the rest are tried cheapest first (ties in
/// the given order). Anyone who can write to storage can add slots, so no
/// slot may make opening cost more than the cheapest way in.
pub fn plan_slot_trials(slots: &[KdfParams], cap_kib: u32) -> SlotPlan {
    let (mut order, over_cap): (Vec<usize>, Vec<usize>) = (0..slots.len()).partition(|&i| slots[i].m_kib <= cap_kib);
    order.sort_by_key(|&i| kdf_cost(&slots[i]));
    SlotPlan { order, over_cap }
}

/// The most memory a key slot may ask for on a machine with
/// `available_kib` KiB available: half of it, never less than what `init`
/// gives a slot and never more than the format allows. Unknown availability
/// leaves the format's limit.
pub fn kdf_memory_cap_kib(available_kib: Option<u64>) -> u32 {
    match available_kib {
        Some(kib) => (kib / 2).clamp(KdfParams::DEFAULT.m_kib as u64, KdfParams::MAX.m_kib as u64) as u32,
        None => KdfParams::MAX.m_kib,
    }
}

/// `MemAvailable` from `/proc/meminfo`, in KiB.
pub fn available_memory_kib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(m_kib: u32, t: u32) -> KdfParams {
        KdfParams { m_kib, t, p: 1 }
    }

    #[test]
    fn cheapest_slots_are_tried_first_and_costly_ones_last() {
        let slots = [params(4 << 20, 64), params(1 << 20, 1), params(64 << 10, 3), params(4 << 20, 64)];
        let plan = plan_slot_trials(&slots, KdfParams::MAX.m_kib);
        assert_eq!(plan.order, vec![2, 1, 0, 3]);
        assert!(plan.over_cap.is_empty());
    }

    #[test]
    fn slots_asking_for_more_memory_than_the_cap_are_skipped() {
        let slots = [params(4 << 20, 1), params(64 << 10, 3), params(2 << 20, 1)];
        let plan = plan_slot_trials(&slots, 1 << 20);
        assert_eq!(plan.order, vec![1]);
        assert_eq!(plan.over_cap, vec![0, 2]);
    }

    #[test]
    fn the_memory_cap_is_half_the_available_memory_within_bounds() {
        assert_eq!(kdf_memory_cap_kib(Some(2 << 20)), 1 << 20);
        assert_eq!(kdf_memory_cap_kib(Some(64 << 20)), KdfParams::MAX.m_kib);
        assert_eq!(kdf_memory_cap_kib(Some(1 << 10)), KdfParams::DEFAULT.m_kib);
        assert_eq!(kdf_memory_cap_kib(None), KdfParams::MAX.m_kib);
    }
}
