//! Index objects: which blobs each pack holds, so that blobs can be found
//! without reading pack headers. An index may supersede older index objects
//! (written by prune when it consolidates); readers ignore superseded ones.

use super::codec::{Decoder, Encoder};
use super::pack::{decode_entries, encode_entries, BlobEntry};
use super::{FormatError, Id};

const INDEX_VERSION: u8 = 1;

/// Most blob entries a writer puts in one index object (format.md §14):
/// about 45 MB encoded, far inside the 1 GiB an object may have, so that
/// any number of packs can be indexed. A single pack with more entries than
/// this gets an index object of its own.
pub const MAX_INDEX_ENTRIES: usize = 1_000_000;

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
        let mut packs = Vec::new();
        let supersedes = decode_packs(buf, |p| packs.push(p))?;
        Ok(IndexFile { supersedes, packs })
    }
}

/// Decodes an index object one pack at a time, handing each to `on_pack`
/// in order instead of holding them all, and returns its `supersedes`
/// list. `on_pack` may have seen some packs of an object that then fails
/// to decode: a reader that must not use any of such an object decodes it
/// once with a no-op `on_pack` first (decoding the same bytes again gives
/// the same result).
pub fn decode_packs(buf: &[u8], mut on_pack: impl FnMut(IndexedPack)) -> Result<Vec<Id>, FormatError> {
    let mut d = Decoder::new(buf, "index", INDEX_VERSION)?;
    let n = d.count(32)?;
    let supersedes = (0..n).map(|_| d.id()).collect::<Result<_, _>>()?;
    let n = d.count(32 + 8 + 4)?;
    for _ in 0..n {
        let id = d.id()?;
        let size = d.u64()?;
        let blobs = decode_entries(&mut d)?;
        if blobs.iter().any(|b| b.offset as u64 + b.length as u64 > size) {
            return Err(d.invalid("blob lies outside its pack"));
        }
        on_pack(IndexedPack { id, size, blobs });
    }
    d.finish()?;
    Ok(supersedes)
}

/// Splits `packs` into index objects of at most `max_entries` blob entries
/// each (a pack is never split; one with more entries is alone in its
/// object), keeping their order. Only the last object carries `supersedes`:
/// it is stored last, so the objects it replaces stay in force until every
/// one of the new objects is stored. There is always at least one object.
pub fn split_index(packs: Vec<IndexedPack>, supersedes: Vec<Id>, max_entries: usize) -> Vec<IndexFile> {
    let mut files = vec![IndexFile::default()];
    let mut entries = 0usize;
    for pack in packs {
        let n = pack.blobs.len();
        let current = files.last_mut().expect("never empty");
        if starts_new_object(current.packs.len(), entries, n, max_entries) {
            files.push(IndexFile::default());
            entries = 0;
        }
        entries += n;
        files.last_mut().expect("never empty").packs.push(pack);
    }
    files.last_mut().expect("never empty").supersedes = supersedes;
    files
}

/// Whether [`split_index`] starts a new object for a pack of `n` entries,
/// the current object holding `packs` packs of `entries` entries.
fn starts_new_object(packs: usize, entries: usize, n: usize, max_entries: usize) -> bool {
    packs > 0 && entries + n > max_entries
}

/// How many objects [`split_index`] makes of packs with these entry counts.
pub fn index_objects_for(pack_entries: impl IntoIterator<Item = usize>, max_entries: usize) -> usize {
    let (mut objects, mut packs, mut entries) = (1, 0, 0);
    for n in pack_entries {
        if starts_new_object(packs, entries, n, max_entries) {
            objects += 1;
            (packs, entries) = (0, 0);
        }
        packs += 1;
        entries += n;
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BlobType;
    use proptest::prelude::*;

    fn pack(seed: u8, count: u32) -> IndexedPack {
        let blobs = (0..count)
            .map(|i| BlobEntry {
                blob_type: BlobType::Data,
                id: Id(*blake3::hash(&[&[seed][..], &i.to_le_bytes()].concat()).as_bytes()),
                offset: i * 100,
                length: 100,
                raw_len: 50,
            })
            .collect();
        IndexedPack { id: Id([seed; 32]), size: u64::from(count) * 100, blobs }
    }

    #[test]
    fn index_objects_for_counts_what_split_index_makes() {
        for (counts, max) in [(vec![], 10), (vec![3, 3, 3, 3], 10), (vec![12, 1, 9, 2], 10), (vec![5; 7], 5)] {
            let packs: Vec<IndexedPack> = counts.iter().enumerate().map(|(i, &n)| pack(i as u8, n as u32)).collect();
            assert_eq!(index_objects_for(counts.clone(), max), split_index(packs, Vec::new(), max).len(), "{counts:?}");
        }
    }

    #[test]
    fn index_objects_are_split_by_entry_count_and_only_the_last_supersedes() {
        let packs: Vec<IndexedPack> = (0..10).map(|i| pack(i, 30)).collect();
        let old = vec![Id([0xee; 32])];
        let files = split_index(packs.clone(), old.clone(), 100);
        assert_eq!(files.len(), 4, "3 packs of 30 entries fit under 100");
        assert!(files.iter().all(|f| f.packs.iter().map(|p| p.blobs.len()).sum::<usize>() <= 100));
        assert!(files[..3].iter().all(|f| f.supersedes.is_empty()));
        assert_eq!(files[3].supersedes, old);
        assert_eq!(files.into_iter().flat_map(|f| f.packs).collect::<Vec<_>>(), packs);
    }

    #[test]
    fn a_pack_over_the_bound_is_alone_and_no_packs_is_one_object() {
        let files = split_index(vec![pack(1, 5), pack(2, 50), pack(3, 5)], Vec::new(), 10);
        assert_eq!(files.iter().map(|f| f.packs.len()).collect::<Vec<_>>(), vec![1, 1, 1]);
        let files = split_index(Vec::new(), vec![Id([1; 32])], 10);
        assert_eq!(files, vec![IndexFile { supersedes: vec![Id([1; 32])], packs: Vec::new() }]);
    }

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
