//! Pack files: sealed blobs back to back, then the sealed pack header, then the
//! header's length as a u32. A pack describes itself, so the index can always
//! be rebuilt from the packs alone. A pack's id is the unkeyed blake3 of its
//! bytes, which anyone can check without a key.

use super::codec::{Decoder, Encoder};
use super::{BlobType, FormatError, Id, MAX_BLOB_LEN};

const HEADER_VERSION: u8 = 1;
/// Size of one encoded header entry.
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;
/// Length of the trailer that gives the sealed header's length.
pub const TRAILER_LEN: usize = 4;
/// Largest sealed header accepted (over a million blobs).
pub const MAX_HEADER_LEN: u32 = 64 << 20;
/// Smallest possible sealed blob (IV, one block, tag).
pub const MIN_SEALED_LEN: u32 = 16 + 16 + 32;

/// Where one blob sits in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobEntry {
    pub blob_type: BlobType,
    pub id: Id,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the blob's plaintext.
    pub raw_len: u32,
}

pub fn pack_id(pack: &[u8]) -> Id {
    Id(*blake3::hash(pack).as_bytes())
}

pub fn encode_entries(e: &mut Encoder, entries: &[BlobEntry]) {
    e.count(entries.len());
    for b in entries {
        e.u8(b.blob_type.tag()).id(&b.id).u32(b.offset).u32(b.length).u32(b.raw_len);
    }
}

pub fn decode_entries(d: &mut Decoder<'_>) -> Result<Vec<BlobEntry>, FormatError> {
    let n = d.count(ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let blob_type = BlobType::from_tag(d.u8()?).ok_or_else(|| d.invalid("unknown blob type"))?;
        let e = BlobEntry { blob_type, id: d.id()?, offset: d.u32()?, length: d.u32()?, raw_len: d.u32()? };
        if e.length < MIN_SEALED_LEN || e.raw_len > MAX_BLOB_LEN {
            return Err(d.invalid("blob length out of range"));
        }
        out.push(e);
    }
    Ok(out)
}

/// The plaintext of a pack header.
pub fn encode_header(entries: &[BlobEntry]) -> Vec<u8> {
    let mut e = Encoder::new(HEADER_VERSION);
    encode_entries(&mut e, entries);
    e.finish()
}

/// Decodes a header and checks that its blobs tile the pack from offset 0 up
/// to `blobs_end` (where the sealed header starts), in order, with no gaps.
pub fn decode_header(buf: &[u8], blobs_end: u64) -> Result<Vec<BlobEntry>, FormatError> {
    let mut d = Decoder::new(buf, "pack header", HEADER_VERSION)?;
    let entries = decode_entries(&mut d)?;
    d.finish()?;
    let mut expected: u64 = 0;
    for e in &entries {
        if e.offset as u64 != expected {
            return Err(FormatError::Invalid { what: "pack header", reason: "blobs do not tile the pack" });
        }
        expected += e.length as u64;
    }
    if expected != blobs_end {
        return Err(FormatError::Invalid { what: "pack header", reason: "blobs do not end where the header starts" });
    }
    Ok(entries)
}

/// Reads the trailer: returns the offset at which the sealed header starts.
pub fn header_offset(pack_len: u64, trailer: &[u8; TRAILER_LEN]) -> Result<u64, FormatError> {
    let len = u32::from_le_bytes(*trailer);
    if !(MIN_SEALED_LEN..=MAX_HEADER_LEN).contains(&len) || len as u64 + TRAILER_LEN as u64 > pack_len {
        return Err(FormatError::Invalid { what: "pack trailer", reason: "header length out of range" });
    }
    Ok(pack_len - TRAILER_LEN as u64 - len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(lens: &[u32]) -> Vec<BlobEntry> {
        let mut off = 0;
        lens.iter()
            .enumerate()
            .map(|(i, &l)| {
                let e = BlobEntry {
                    blob_type: if i % 2 == 0 { BlobType::Data } else { BlobType::Tree },
                    id: Id([i as u8; 32]),
                    offset: off,
                    length: l,
                    raw_len: l / 2,
                };
                off += l;
                e
            })
            .collect()
    }

    proptest! {
        #[test]
        fn header_round_trip(lens in proptest::collection::vec(64u32..100_000, 0..50)) {
            let es = entries(&lens);
            let end: u64 = lens.iter().map(|&l| l as u64).sum();
            prop_assert_eq!(decode_header(&encode_header(&es), end).unwrap(), es);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300), end in any::<u64>()) {
            let _ = decode_header(&buf, end);
        }
    }

    #[test]
    fn gaps_and_overlaps_are_refused() {
        let mut es = entries(&[100, 100]);
        es[1].offset = 101;
        assert!(decode_header(&encode_header(&es), 201).is_err());
        assert!(decode_header(&encode_header(&entries(&[100, 100])), 300).is_err());
    }

    #[test]
    fn trailer_bounds() {
        assert_eq!(header_offset(1000, &100u32.to_le_bytes()).unwrap(), 896);
        assert!(header_offset(50, &100u32.to_le_bytes()).is_err());
        assert!(header_offset(u64::MAX, &u32::MAX.to_le_bytes()).is_err());
    }
}
