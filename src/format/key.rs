//! Key slots: each holds the repository's master secret sealed under a key
//! derived from one password with argon2id. The slot itself is stored in the
//! clear (it must be read before any key is known); only its KDF parameters
//! and salt are visible. Who made the slot and when is sealed separately under
//! the repository's keys, so that anyone who can open the repository can list
//! every slot's owner, and nobody else can.

use super::codec::{Decoder, Encoder};
use super::{FormatError, Id};

const SLOT_VERSION: u8 = 1;
const PAYLOAD_VERSION: u8 = 1;
const OWNER_VERSION: u8 = 1;
/// KDF identifier for argon2id, version 0x13.
pub const KDF_ARGON2ID: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySlot {
    pub kdf: u8,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    pub salt: [u8; 32],
    /// `KeyPayload`, sealed with the password-derived key.
    pub sealed_payload: Vec<u8>,
    /// `KeyOwner`, sealed with the repository keys.
    pub sealed_owner: Vec<u8>,
}

impl KeySlot {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(SLOT_VERSION);
        e.u8(self.kdf).u32(self.m_kib).u32(self.t).u32(self.p);
        e.id(&Id(self.salt)).bytes(&self.sealed_payload).bytes(&self.sealed_owner);
        e.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<KeySlot, FormatError> {
        let mut d = Decoder::new(buf, "key slot", SLOT_VERSION)?;
        let kdf = d.u8()?;
        if kdf != KDF_ARGON2ID {
            return Err(d.invalid("unknown key derivation function"));
        }
        let slot = KeySlot {
            kdf,
            m_kib: d.u32()?,
            t: d.u32()?,
            p: d.u32()?,
            salt: d.id()?.0,
            sealed_payload: d.bytes()?.to_vec(),
            sealed_owner: d.bytes()?.to_vec(),
        };
        d.finish()?;
        Ok(slot)
    }
}

/// What a key slot protects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPayload {
    pub master: [u8; 32],
    pub repo_id: Id,
}

impl KeyPayload {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(PAYLOAD_VERSION);
        e.id(&Id(self.master)).id(&self.repo_id);
        e.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<KeyPayload, FormatError> {
        let mut d = Decoder::new(buf, "key payload", PAYLOAD_VERSION)?;
        let p = KeyPayload { master: d.id()?.0, repo_id: d.id()? };
        d.finish()?;
        Ok(p)
    }
}

/// Who made a key slot, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOwner {
    pub created_ns: i64,
    pub hostname: String,
    pub username: String,
}

impl KeyOwner {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(OWNER_VERSION);
        e.i64(self.created_ns).str(&self.hostname).str(&self.username);
        e.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<KeyOwner, FormatError> {
        let mut d = Decoder::new(buf, "key owner", OWNER_VERSION)?;
        let o = KeyOwner { created_ns: d.i64()?, hostname: d.string()?, username: d.string()? };
        d.finish()?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn slot_round_trip(m in any::<u32>(), t in any::<u32>(), salt in any::<[u8; 32]>(), sealed in proptest::collection::vec(any::<u8>(), 0..100)) {
            let s = KeySlot { kdf: KDF_ARGON2ID, m_kib: m, t, p: 1, salt, sealed_payload: sealed.clone(), sealed_owner: sealed };
            prop_assert_eq!(KeySlot::decode(&s.encode()).unwrap(), s);
        }

        #[test]
        fn payload_round_trip(master in any::<[u8; 32]>(), repo in any::<[u8; 32]>(), t in any::<i64>(), host in ".{0,20}", user in ".{0,20}") {
            let p = KeyPayload { master, repo_id: Id(repo) };
            prop_assert_eq!(KeyPayload::decode(&p.encode()).unwrap(), p);
            let o = KeyOwner { created_ns: t, hostname: host, username: user };
            prop_assert_eq!(KeyOwner::decode(&o.encode()).unwrap(), o);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeySlot::decode(&buf);
            let _ = KeyPayload::decode(&buf);
            let _ = KeyOwner::decode(&buf);
        }
    }
}
