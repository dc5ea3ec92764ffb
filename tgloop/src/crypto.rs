//! The server half of MTProto 2.0 encryption: auth key ids, and sealing and
//! opening encrypted messages with AES-256-IGE keyed from `msg_key` (the
//! client encrypts with x = 0, the server with x = 8).

use grammers_crypto::aes;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A 2048-bit authorization key shared with the client.
#[derive(Clone)]
pub struct AuthKey {
    data: [u8; 256],
    id: [u8; 8],
}

/// Why an encrypted packet could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Too short, or the ciphertext is not whole AES blocks.
    BadLength,
    /// Encrypted with a key this server does not know.
    UnknownKey,
    /// The `msg_key` does not match the decrypted plaintext.
    BadMsgKey,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(&h.finalize());
    out
}

impl AuthKey {
    pub fn new(data: [u8; 256]) -> AuthKey {
        let mut h = Sha1::new();
        h.update(data);
        let digest = h.finalize();
        let mut id = [0; 8];
        id.copy_from_slice(&digest[12..20]);
        AuthKey { data, id }
    }

    pub fn bytes(&self) -> [u8; 256] {
        self.data
    }

    /// The 64-bit key id that prefixes every encrypted packet.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// AES key and IV for a message with `msg_key`, for the side given by `x`.
    fn kdf(&self, msg_key: &[u8; 16], x: usize) -> ([u8; 32], [u8; 32]) {
        let a = sha256(&[msg_key, &self.data[x..x + 36]]);
        let b = sha256(&[&self.data[40 + x..76 + x], msg_key]);
        let mut key = [0; 32];
        key[..8].copy_from_slice(&a[..8]);
        key[8..24].copy_from_slice(&b[8..24]);
        key[24..].copy_from_slice(&a[24..]);
        let mut iv = [0; 32];
        iv[..8].copy_from_slice(&b[..8]);
        iv[8..24].copy_from_slice(&a[8..24]);
        iv[24..].copy_from_slice(&b[24..]);
        (key, iv)
    }

    fn msg_key(&self, plaintext: &[u8], x: usize) -> [u8; 16] {
        let large = sha256(&[&self.data[88 + x..120 + x], plaintext]);
        let mut k = [0; 16];
        k.copy_from_slice(&large[8..24]);
        k
    }

    /// Opens a packet sent by the client; returns the plaintext
    /// (salt, session id, message, padding).
    pub fn open_from_client(&self, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        if packet.len() < 24 + 16 || !(packet.len() - 24).is_multiple_of(16) {
            return Err(OpenError::BadLength);
        }
        if packet[..8] != self.id {
            return Err(OpenError::UnknownKey);
        }
        let mut msg_key = [0; 16];
        msg_key.copy_from_slice(&packet[8..24]);
        let (key, iv) = self.kdf(&msg_key, 0);
        let mut plain = packet[24..].to_vec();
        aes::ige_decrypt(&mut plain, &key, &iv);
        if self.msg_key(&plain, 0) != msg_key {
            return Err(OpenError::BadMsgKey);
        }
        Ok(plain)
    }

    /// Seals a plaintext for the client, adding 12..=27 bytes of random padding.
    pub fn seal_for_client(&self, mut plain: Vec<u8>) -> Vec<u8> {
        let pad = 12 + (16 - (plain.len() + 12) % 16) % 16;
        let mut padding = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut padding[..]);
        plain.extend_from_slice(&padding[..pad]);
        let msg_key = self.msg_key(&plain, 8);
        let (key, iv) = self.kdf(&msg_key, 8);
        aes::ige_encrypt(&mut plain, &key, &iv);
        let mut out = Vec::with_capacity(24 + plain.len());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&msg_key);
        out.extend_from_slice(&plain);
        out
    }

    /// Seals like the client does (x = 0): used by the tests of this module.
    #[cfg(test)]
    fn seal_as_client(&self, mut plain: Vec<u8>) -> Vec<u8> {
        let pad = 12 + (16 - (plain.len() + 12) % 16) % 16;
        plain.extend(std::iter::repeat_n(0x5a, pad));
        let msg_key = self.msg_key(&plain, 0);
        let (key, iv) = self.kdf(&msg_key, 0);
        aes::ige_encrypt(&mut plain, &key, &iv);
        [&self.id[..], &msg_key[..], &plain[..]].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grammers_crypto::DequeBuffer;

    fn key() -> AuthKey {
        let mut data = [0u8; 256];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        AuthKey::new(data)
    }

    #[test]
    fn key_id_matches_grammers() {
        let k = key();
        // grammers prefixes its packets with the same key id.
        let mut buf = DequeBuffer::with_capacity(64, 0);
        buf.extend([1u8; 32]);
        grammers_crypto::encrypt_data_v2(&mut buf, &grammers_crypto::AuthKey::from_bytes(k.bytes()));
        assert_eq!(&buf[..8], &k.id());
    }

    #[test]
    fn opens_what_grammers_encrypts() {
        let k = key();
        let plain: Vec<u8> = (0..64u8).collect();
        let mut buf = DequeBuffer::with_capacity(128, 0);
        buf.extend(plain.iter().copied());
        grammers_crypto::encrypt_data_v2(&mut buf, &grammers_crypto::AuthKey::from_bytes(k.bytes()));
        let opened = k.open_from_client(&buf[..]).unwrap();
        assert_eq!(&opened[..64], &plain[..]);
    }

    #[test]
    fn grammers_opens_what_the_server_seals() {
        let k = key();
        let plain: Vec<u8> = (0..48u8).collect();
        let mut sealed = k.seal_for_client(plain.clone());
        let opened = grammers_crypto::decrypt_data_v2(&mut sealed, &grammers_crypto::AuthKey::from_bytes(k.bytes()))
            .unwrap()
            .to_vec();
        assert_eq!(&opened[..48], &plain[..]);
    }

    #[test]
    fn rejects_tampering_and_foreign_keys() {
        let k = key();
        let mut sealed = k.seal_as_client(vec![9; 32]);
        assert!(k.open_from_client(&sealed).is_ok());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(k.open_from_client(&sealed), Err(OpenError::BadMsgKey));
        let other = AuthKey::new([1; 256]);
        assert_eq!(other.open_from_client(&sealed), Err(OpenError::UnknownKey));
        assert_eq!(k.open_from_client(&sealed[..30]), Err(OpenError::BadLength));
    }
}
