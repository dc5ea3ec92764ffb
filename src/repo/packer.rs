//! Gathers sealed blobs into packs: blobs back to back, then the sealed header
//! and its length. A pack is finished once it reaches its target size, which
//! can start small and double with every pack up to the backend's size.

use bytes::Bytes;

use crate::crypto::RepoKeys;
use crate::format::pack::{encode_header, pack_id, BlobEntry};
use crate::format::{associated_data, BlobType, Id, PACK_HEADER_DOMAIN};

/// A pack ready to upload, with the entries its index will list.
pub struct FinishedPack {
    pub id: Id,
    pub data: Bytes,
    pub blobs: Vec<BlobEntry>,
}

pub struct Packer {
    target: usize,
    max_target: usize,
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

impl Packer {
    /// A packer finishing every pack at `target` bytes.
    pub fn new(target: usize) -> Packer {
        Packer::ramping(target, target)
    }

    /// A packer whose first pack is finished at `first` bytes, and each
    /// following one at twice the size of the one before, up to `target`.
    /// The first upload then starts as soon as a small pack is full instead
    /// of waiting for a whole large one, while most data still lands in
    /// packs of the full size.
    pub fn ramping(first: usize, target: usize) -> Packer {
        Packer { target: first.clamp(1, target.max(1)), max_target: target.max(1), buf: Vec::new(), blobs: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.target
    }

    pub fn add(&mut self, blob_type: BlobType, id: Id, sealed: &[u8], raw_len: u32) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.target + self.target / 8);
        }
        let offset = u32::try_from(self.buf.len()).expect("packs stay below 4 GiB");
        self.buf.extend_from_slice(sealed);
        self.blobs.push(BlobEntry { blob_type, id, offset, length: sealed.len() as u32, raw_len });
    }

    /// Seals the header, appends it and its length, and hands the pack over.
    pub fn finish(&mut self, keys: &RepoKeys, repo_id: &Id) -> FinishedPack {
        let blobs = std::mem::take(&mut self.blobs);
        let mut data = std::mem::take(&mut self.buf);
        let header = keys.seal.seal(&associated_data(repo_id, PACK_HEADER_DOMAIN, &Id::ZERO), &encode_header(&blobs));
        data.extend_from_slice(&header);
        data.extend_from_slice(&(header.len() as u32).to_le_bytes());
        self.target = self.target.saturating_mul(2).min(self.max_target);
        FinishedPack { id: pack_id(&data), data: Bytes::from(data), blobs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(p: &mut Packer, keys: &RepoKeys, blob: &[u8]) -> usize {
        let mut n = 0u32;
        while !p.is_full() {
            p.add(BlobType::Data, Id([n as u8; 32]), blob, blob.len() as u32);
            n += 1;
        }
        let pack = p.finish(keys, &Id::ZERO);
        assert_eq!(pack.blobs.len(), n as usize);
        pack.data.len()
    }

    #[test]
    fn ramping_packs_double_up_to_the_target() {
        let keys = RepoKeys::derive(&[7; 32]);
        let blob = vec![1u8; 1000];
        let mut p = Packer::ramping(4000, 20_000);
        let sizes: Vec<usize> = (0..5).map(|_| fill(&mut p, &keys, &blob) / 1000).collect();
        // Blobs of 1000 bytes: each pack closes at its target, plus its header.
        assert_eq!(sizes, vec![4, 8, 16, 20, 20]);
        let mut fixed = Packer::new(5000);
        assert_eq!(fill(&mut fixed, &keys, &blob) / 1000, 5);
        assert_eq!(fill(&mut fixed, &keys, &blob) / 1000, 5);
    }
}
