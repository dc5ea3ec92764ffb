//! The in-memory view of every index object: blob id → where it is stored.
//! This lookup is the hot path of an incremental snapshot.

use std::collections::HashMap;

use crate::format::index::IndexedPack;
use crate::format::pack::BlobEntry;
use crate::format::{BlobType, Id};

/// Where a blob can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub blob_type: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
}

#[derive(Clone, Copy)]
struct Slot {
    pack: u32,
    blob_type: BlobType,
    offset: u32,
    length: u32,
    raw_len: u32,
}

#[derive(Default)]
pub struct MasterIndex {
    packs: Vec<(Id, u64)>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, Slot>,
    /// Further locations of blobs stored in more than one pack, in the order
    /// they were added; readers try them when the first one fails.
    others: HashMap<Id, Vec<Slot>>,
    /// Index objects whose contents are loaded (superseded ones excluded).
    pub index_ids: Vec<Id>,
}

impl MasterIndex {
    pub fn add_pack(&mut self, p: &IndexedPack) {
        if self.pack_pos.contains_key(&p.id) {
            return;
        }
        let pos = self.packs.len() as u32;
        self.packs.push((p.id, p.size));
        self.pack_pos.insert(p.id, pos);
        for b in &p.blobs {
            let slot =
                Slot { pack: pos, blob_type: b.blob_type, offset: b.offset, length: b.length, raw_len: b.raw_len };
            match self.blobs.entry(b.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(slot);
                }
                std::collections::hash_map::Entry::Occupied(first) if first.get().pack != pos => {
                    self.others.entry(b.id).or_default().push(slot);
                }
                std::collections::hash_map::Entry::Occupied(_) => {}
            }
        }
    }

    fn location(&self, s: &Slot) -> BlobLocation {
        BlobLocation {
            pack: self.packs[s.pack as usize].0,
            blob_type: s.blob_type,
            offset: s.offset,
            length: s.length,
            raw_len: s.raw_len,
        }
    }

    /// Every location of a blob: the first (what [`lookup`](Self::lookup)
    /// gives), then the others in the order their packs were added. A reader
    /// whose read of one fails tries the next (format.md §14).
    pub fn locations(&self, id: &Id) -> Vec<BlobLocation> {
        let first = self.blobs.get(id).map(|s| self.location(s));
        let others = self.others.get(id).into_iter().flatten().map(|s| self.location(s));
        first.into_iter().chain(others).collect()
    }

    pub fn lookup(&self, id: &Id) -> Option<BlobLocation> {
        self.blobs.get(id).map(|s| self.location(s))
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// Every indexed pack with its size.
    pub fn packs(&self) -> &[(Id, u64)] {
        &self.packs
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Every blob with its location, in no particular order.
    pub fn blobs(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        self.blobs.keys().map(|id| (*id, self.lookup(id).expect("present")))
    }

    /// The blobs the index places in `pack`, in pack order. One scan over
    /// every blob: for more than one pack, use
    /// [`blobs_by_pack`](Self::blobs_by_pack).
    pub fn blobs_in_pack(&self, pack: &Id) -> Vec<BlobEntry> {
        self.blobs_by_pack(std::slice::from_ref(pack)).remove(pack).unwrap_or_default()
    }

    /// The blobs the index places in each of `packs`, in pack order, from
    /// one pass over the index: the cost is that of the blobs, whatever the
    /// number of packs. Packs the index does not know map to no entry.
    pub fn blobs_by_pack(&self, packs: &[Id]) -> HashMap<Id, Vec<BlobEntry>> {
        let mut lists: HashMap<u32, Vec<BlobEntry>> =
            packs.iter().filter_map(|id| self.pack_pos.get(id)).map(|&pos| (pos, Vec::new())).collect();
        if lists.is_empty() {
            return HashMap::new();
        }
        let others = self.others.iter().flat_map(|(id, slots)| slots.iter().map(move |s| (id, s)));
        for (id, s) in self.blobs.iter().chain(others) {
            if let Some(list) = lists.get_mut(&s.pack) {
                list.push(BlobEntry {
                    blob_type: s.blob_type,
                    id: *id,
                    offset: s.offset,
                    length: s.length,
                    raw_len: s.raw_len,
                });
            }
        }
        lists
            .into_iter()
            .map(|(pos, mut list)| {
                list.sort_by_key(|b| b.offset);
                (self.packs[pos as usize].0, list)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `blobs_in_pack` was: a scan of every blob for one pack.
    fn scan_pack(idx: &MasterIndex, pack: &Id) -> Vec<BlobEntry> {
        let Some(&pos) = idx.pack_pos.get(pack) else { return Vec::new() };
        let others = idx.others.iter().flat_map(|(id, slots)| slots.iter().map(move |s| (id, s)));
        let mut v: Vec<BlobEntry> = idx
            .blobs
            .iter()
            .chain(others)
            .filter(|(_, s)| s.pack == pos)
            .map(|(id, s)| BlobEntry {
                blob_type: s.blob_type,
                id: *id,
                offset: s.offset,
                length: s.length,
                raw_len: s.raw_len,
            })
            .collect();
        v.sort_by_key(|b| b.offset);
        v
    }

    /// Packs of up to 8 blobs drawn from 12 ids (so blobs repeat across
    /// packs and within one), some packs listed twice.
    fn packs_strategy() -> impl Strategy<Value = Vec<IndexedPack>> {
        let blob = (0u8..12, any::<bool>(), 1u32..1000).prop_map(|(id, tree, len)| BlobEntry {
            blob_type: if tree { BlobType::Tree } else { BlobType::Data },
            id: Id([id; 32]),
            offset: 0,
            length: len,
            raw_len: len * 2,
        });
        let pack = (0u8..10, prop::collection::vec(blob, 0..8)).prop_map(|(id, mut blobs)| {
            let mut offset = 0;
            for b in &mut blobs {
                b.offset = offset;
                offset += b.length;
            }
            IndexedPack { id: Id([id; 32]), size: u64::from(offset), blobs }
        });
        prop::collection::vec(pack, 0..12)
    }

    proptest! {
        #[test]
        fn blobs_by_pack_gives_what_a_scan_per_pack_gives(packs in packs_strategy(), unknown in 10u8..20) {
            let mut idx = MasterIndex::default();
            for p in &packs {
                idx.add_pack(p);
            }
            let mut asked: Vec<Id> = idx.packs().iter().map(|(id, _)| *id).collect();
            asked.push(Id([unknown; 32]));
            let by_pack = idx.blobs_by_pack(&asked);
            prop_assert!(!by_pack.contains_key(&Id([unknown; 32])));
            for (id, _) in idx.packs() {
                let scanned = scan_pack(&idx, id);
                prop_assert_eq!(by_pack.get(id).cloned().unwrap_or_default(), scanned.clone());
                prop_assert_eq!(idx.blobs_in_pack(id), scanned);
            }
            // A subset of the packs gets the same lists.
            let half: Vec<Id> = asked.iter().step_by(2).copied().collect();
            for (id, list) in idx.blobs_by_pack(&half) {
                prop_assert_eq!(list, scan_pack(&idx, &id));
            }
        }
    }

    #[test]
    fn first_location_wins_and_lookups_work() {
        let mut idx = MasterIndex::default();
        let blob = BlobEntry { blob_type: BlobType::Data, id: Id([1; 32]), offset: 0, length: 100, raw_len: 50 };
        idx.add_pack(&IndexedPack { id: Id([9; 32]), size: 200, blobs: vec![blob] });
        idx.add_pack(&IndexedPack { id: Id([8; 32]), size: 300, blobs: vec![blob] });
        assert_eq!(idx.lookup(&Id([1; 32])).unwrap().pack, Id([9; 32]));
        assert!(!idx.contains(&Id([2; 32])));
        assert_eq!(idx.packs().len(), 2);
        assert_eq!(idx.blobs_in_pack(&Id([9; 32])), vec![blob]);
        assert_eq!(idx.blobs_in_pack(&Id([8; 32])), vec![blob], "a pack lists every blob it holds");
    }

    #[test]
    fn every_location_of_a_blob_is_kept_first_one_first() {
        let mut idx = MasterIndex::default();
        let blob = BlobEntry { blob_type: BlobType::Data, id: Id([1; 32]), offset: 0, length: 100, raw_len: 50 };
        for pack in [9u8, 8, 7] {
            idx.add_pack(&IndexedPack { id: Id([pack; 32]), size: 200, blobs: vec![blob] });
        }
        // A pack listed twice adds no location.
        idx.add_pack(&IndexedPack { id: Id([8; 32]), size: 200, blobs: vec![blob] });
        let packs: Vec<Id> = idx.locations(&Id([1; 32])).iter().map(|l| l.pack).collect();
        assert_eq!(packs, vec![Id([9; 32]), Id([8; 32]), Id([7; 32])]);
        assert!(idx.locations(&Id([2; 32])).is_empty());
        assert_eq!(idx.blob_count(), 1);
    }
}
