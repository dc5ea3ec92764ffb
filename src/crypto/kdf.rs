//! Password-based key derivation for key slots: argon2id with parameters that
//! are stored in the slot, floored on creation and capped on read so that a
//! hostile repository cannot make `open` allocate or spin without bound.

use super::SealKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// What `init` and `key add` use: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams { m_kib: 64 << 10, t: 3, p: 1 };
    /// The most a stored slot may ask for: 4 GiB, 64 passes, 16 lanes.
    pub const MAX: KdfParams = KdfParams { m_kib: 4 << 20, t: 64, p: 16 };

    pub fn within_limits(&self) -> bool {
        self.m_kib <= Self::MAX.m_kib
            && self.t <= Self::MAX.t
            && self.p <= Self::MAX.p
            && self.t >= 1
            && self.p >= 1
            && self.m_kib >= 8 * self.p
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KdfError {
    #[error("key slot asks for argon2 parameters beyond the allowed limits ({0:?})")]
    ParamsOutOfRange(KdfParams),
    #[error("argon2 failed: {0}")]
    Argon2(String),
}

const CTX_SLOT_ENC: &str = "tstor 2026-11-24 key slot encryption key";
const CTX_SLOT_MAC: &str = "tstor 2026-11-24 key slot mac key";

/// Derives the key that seals a key slot's payload from a password.
pub fn slot_key(password: &[u8], salt: &[u8; 32], params: KdfParams) -> Result<SealKey, KdfError> {
    if !params.within_limits() {
        return Err(KdfError::ParamsOutOfRange(params));
    }
    let p =
        argon2::Params::new(params.m_kib, params.t, params.p, Some(32)).map_err(|e| KdfError::Argon2(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = [0u8; 32];
    a.hash_password_into(password, salt, &mut out).map_err(|e| KdfError::Argon2(e.to_string()))?;
    Ok(SealKey::from_parts(blake3::derive_key(CTX_SLOT_ENC, &out), blake3::derive_key(CTX_SLOT_MAC, &out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_params_are_refused() {
        let p = KdfParams { m_kib: u32::MAX, t: 1, p: 1 };
        assert!(matches!(slot_key(b"pw", &[0; 32], p), Err(KdfError::ParamsOutOfRange(_))));
    }

    #[test]
    fn same_password_same_key() {
        let p = KdfParams { m_kib: 64, t: 1, p: 1 };
        let a = slot_key(b"pw", &[1; 32], p).unwrap();
        let b = slot_key(b"pw", &[1; 32], p).unwrap();
        let s = a.seal(b"", b"x");
        assert_eq!(b.open(b"", &s).unwrap(), b"x");
        let c = slot_key(b"pw2", &[1; 32], p).unwrap();
        assert!(c.open(b"", &s).is_err());
    }
}
