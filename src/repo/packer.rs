//! Gathers sealed blobs into packs: blobs back to back, then the sealed header
//! and its length. A pack is finished once it reaches the backend's target size.

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
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

impl Packer {
    pub fn new(target: usize) -> Packer {
        Packer { target, buf: Vec::new(), blobs: Vec::new() }
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
        FinishedPack { id: pack_id(&data), data: Bytes::from(data), blobs }
    }
}
