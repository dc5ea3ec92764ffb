//! Keys and seals. A repository has one random 32-byte master secret; every
//! purpose gets its own subkey through `blake3::derive_key`. A seal is
//! AES-256-CBC (PKCS#7) under a random IV followed by HMAC-SHA256 over the
//! associated data, IV and ciphertext (encrypt-then-MAC). Opening checks the
//! tag in constant time before anything is decrypted, and every failure to
//! open is the same opaque error, so there is no padding oracle. Object
//! names for backends that need them are in `names`.

pub mod kdf;
pub mod names;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::format::Id;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

pub const IV_LEN: usize = 16;
pub const TAG_LEN: usize = 32;
/// Bytes a seal adds beyond the plaintext, at most (IV, a full padding block, tag).
pub const SEAL_OVERHEAD: usize = IV_LEN + 16 + TAG_LEN;

/// The one error opening a seal can give: wrong key, tampered bytes, bad
/// padding and truncation are deliberately indistinguishable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed: wrong key, or the data is damaged or was tampered with")]
pub struct OpenError;

/// An encryption key and its MAC key.
#[derive(Clone)]
pub struct SealKey {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl SealKey {
    pub fn from_parts(enc: [u8; 32], mac: [u8; 32]) -> SealKey {
        SealKey { enc, mac }
    }

    fn tag(&self, ad: &[u8], iv: &[u8], ct: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.mac).expect("HMAC takes any key length");
        mac.update(&(ad.len() as u64).to_le_bytes());
        mac.update(ad);
        mac.update(iv);
        mac.update(ct);
        mac
    }

    /// IV ‖ AES-256-CBC(plaintext) ‖ HMAC-SHA256(len(ad) ‖ ad ‖ IV ‖ ciphertext).
    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with(ad, plaintext.len(), |out| out.extend_from_slice(plaintext))
    }

    /// Seals a plaintext that `write` appends to the buffer it is given, so
    /// that it is encrypted in place without an intermediate copy.
    /// `len_hint` sizes the buffer.
    pub fn seal_with(&self, ad: &[u8], len_hint: usize, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut iv = [0u8; IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let mut out = Vec::with_capacity(IV_LEN + len_hint + 16 + TAG_LEN);
        out.extend_from_slice(&iv);
        write(&mut out);
        let pt_len = out.len() - IV_LEN;
        let padded_len = (pt_len / 16 + 1) * 16;
        out.resize(IV_LEN + padded_len, 0);
        let ct_len = Aes256CbcEnc::new(&self.enc.into(), &iv.into())
            .encrypt_padded_mut::<Pkcs7>(&mut out[IV_LEN..], pt_len)
            .expect("buffer has room for padding")
            .len();
        debug_assert_eq!(ct_len, padded_len);
        let tag = self.tag(ad, &iv, &out[IV_LEN..]).finalize().into_bytes();
        out.extend_from_slice(&tag);
        out
    }

    /// Checks lengths and the tag (constant time), then decrypts and unpads.
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < IV_LEN + 16 + TAG_LEN || !(sealed.len() - IV_LEN - TAG_LEN).is_multiple_of(16) {
            return Err(OpenError);
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let (iv, ct) = body.split_at(IV_LEN);
        self.tag(ad, iv, ct).verify_slice(tag).map_err(|_| OpenError)?;
        let mut buf = ct.to_vec();
        let iv: [u8; IV_LEN] = iv.try_into().expect("16 bytes");
        let len = Aes256CbcDec::new(&self.enc.into(), &iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| OpenError)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// Every key a repository uses, derived from its master secret.
#[derive(Clone)]
pub struct RepoKeys {
    /// Seals blobs, pack headers and objects.
    pub seal: SealKey,
    data_id: [u8; 32],
    tree_id: [u8; 32],
    object_id: [u8; 32],
    /// Seed of the content-defined chunker's gear table.
    pub chunker_seed: u64,
    /// Keys the names of objects where a backend needs names (Telegram).
    names: [u8; 32],
}

const CTX_ENC: &str = "tstor 2026-11-24 seal encryption key";
const CTX_MAC: &str = "tstor 2026-11-24 seal mac key";
const CTX_DATA_ID: &str = "tstor 2026-11-24 data blob id";
const CTX_TREE_ID: &str = "tstor 2026-11-24 tree blob id";
const CTX_OBJECT_ID: &str = "tstor 2026-11-24 object id";
const CTX_CHUNKER: &str = "tstor 2026-11-24 chunker seed";
const CTX_NAMES: &str = "tstor 2026-11-24 object names";

impl RepoKeys {
    pub fn derive(master: &[u8; 32]) -> RepoKeys {
        let seed = blake3::derive_key(CTX_CHUNKER, master);
        RepoKeys {
            seal: SealKey { enc: blake3::derive_key(CTX_ENC, master), mac: blake3::derive_key(CTX_MAC, master) },
            data_id: blake3::derive_key(CTX_DATA_ID, master),
            tree_id: blake3::derive_key(CTX_TREE_ID, master),
            object_id: blake3::derive_key(CTX_OBJECT_ID, master),
            chunker_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
            names: blake3::derive_key(CTX_NAMES, master),
        }
    }

    /// Keyed id of a data chunk: nobody without the key can tell whether a
    /// known file is stored.
    pub fn data_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.data_id, plaintext).as_bytes())
    }

    pub fn tree_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.tree_id, plaintext).as_bytes())
    }

    pub fn blob_id(&self, t: crate::format::BlobType, plaintext: &[u8]) -> Id {
        match t {
            crate::format::BlobType::Data => self.data_id(plaintext),
            crate::format::BlobType::Tree => self.tree_id(plaintext),
        }
    }

    /// The names this repository's objects get in storage that names them.
    pub fn object_names(&self) -> names::ObjectNameCodec {
        names::ObjectNameCodec::for_repository(&self.names)
    }

    /// Keyed id of an object (index, snapshot, lock) of the given kind.
    pub fn object_id(&self, kind: crate::format::ObjectKind, plaintext: &[u8]) -> Id {
        let mut h = blake3::Hasher::new_keyed(&self.object_id);
        h.update(&[kind.tag()]);
        h.update(plaintext);
        Id(*h.finalize().as_bytes())
    }
}

/// Fills a fresh random secret.
pub fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> SealKey {
        SealKey { enc: [b; 32], mac: [b.wrapping_add(1); 32] }
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..2000), ad in proptest::collection::vec(any::<u8>(), 0..80)) {
            let k = key(3);
            let s = k.seal(&ad, &pt);
            prop_assert_eq!(s.len(), IV_LEN + (pt.len() / 16 + 1) * 16 + TAG_LEN);
            prop_assert_eq!(k.open(&ad, &s).unwrap(), pt);
        }

        #[test]
        fn any_flipped_bit_is_refused(pt in proptest::collection::vec(any::<u8>(), 0..200), pos in any::<usize>(), bit in 0u8..8) {
            let k = key(5);
            let mut s = k.seal(b"ad", &pt);
            let i = pos % s.len();
            s[i] ^= 1 << bit;
            prop_assert_eq!(k.open(b"ad", &s), Err(OpenError));
        }

        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(key(1).open(b"", &s).is_err());
        }
    }

    #[test]
    fn wrong_key_or_ad_is_refused() {
        let s = key(1).seal(b"ad", b"secret");
        assert_eq!(key(2).open(b"ad", &s), Err(OpenError));
        assert_eq!(key(1).open(b"other", &s), Err(OpenError));
        assert_eq!(key(1).open(b"ad", &s[..s.len() - 1]), Err(OpenError));
    }

    #[test]
    fn subkeys_differ_and_ids_are_keyed() {
        let a = RepoKeys::derive(&[1; 32]);
        let b = RepoKeys::derive(&[2; 32]);
        assert_ne!(a.data_id(b"x"), b.data_id(b"x"));
        assert_ne!(a.data_id(b"x"), a.tree_id(b"x"));
        assert_ne!(a.chunker_seed, b.chunker_seed);
        assert_ne!(a.data_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }
}
