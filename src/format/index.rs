//! Index objects: which blobs each pack holds, so that blobs can be found
//! without reading pack headers. An index may supersede older index objects
//! (written by prune when it consolidates); readers ignore superseded ones.

use super::codec::{Decoder, Encoder};
use super::pack::{decode_entries, encode_entries, BlobEntry};
use super::{FormatError, Id};

const INDEX_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: Id,
    /// Total size of the pack file in bytes.
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexFile {
    pub supersedes: Vec<Id>,
    pub packs: Vec<IndexedPack>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(INDEX_VERSION);
        e.count(self.supersedes.len());
        for id in &self.supersedes {
            e.id(id);
        }
        e.count(self.packs.len());
        for p in &self.packs {
            e.id(&p.id).u64(p.size);
            encode_entries(&mut e, &p.blobs);
        }
        e.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<IndexFile, FormatError> {
        let mut d = Decoder::new(buf, "index", INDEX_VERSION)?;
        let n = d.count(32)?;
        let supersedes = (0..n).map(|_| d.id()).collect::<Result<_, _>>()?;
        let n = d.count(32 + 8 + 4)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = d.id()?;
            let size = d.u64()?;
            let blobs = decode_entries(&mut d)?;
            if blobs.iter().any(|b| b.offset as u64 + b.length as u64 > size) {
                return Err(d.invalid("blob lies outside its pack"));
            }
            packs.push(IndexedPack { id, size, blobs });
        }
        d.finish()?;
        Ok(IndexFile { supersedes, packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BlobType;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(sup in proptest::collection::vec(any::<[u8; 32]>(), 0..3), packs in proptest::collection::vec((any::<[u8; 32]>(), proptest::collection::vec((any::<[u8; 32]>(), 64u32..1000, 0u32..1000), 0..5)), 0..5)) {
            let packs = packs.into_iter().map(|(id, blobs)| {
                let mut off = 0;
                let blobs: Vec<BlobEntry> = blobs.into_iter().map(|(bid, len, raw)| {
                    let e = BlobEntry { blob_type: BlobType::Data, id: Id(bid), offset: off, length: len, raw_len: raw };
                    off += len;
                    e
                }).collect();
                IndexedPack { id: Id(id), size: off as u64 + 100, blobs }
            }).collect();
            let idx = IndexFile { supersedes: sup.into_iter().map(Id).collect(), packs };
            prop_assert_eq!(IndexFile::decode(&idx.encode()).unwrap(), idx);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IndexFile::decode(&buf);
        }
    }
}
