//! The in-memory view of every index object: blob id → where it is stored.
//! This lookup is the hot path of an incremental snapshot.
//!
//! Every location is one fixed-size entry of 48 bytes (the blob id, the
//! pack's ordinal, offset, length and plaintext length, the blob type in the
//! ordinal's top bit) in a vector sorted by blob id and then by the order the
//! packs were added, so that a blob stored in several packs has its
//! locations side by side, first one first. A table of where each prefix of
//! the ids starts narrows a lookup to a handful of entries. Packs added
//! after the index is loaded (a snapshot, prune or copy adds them as it
//! goes) land in a small unsorted part with a hash map beside it, merged
//! into the sorted vector once it grows past an eighth of it. An index
//! loaded from storage is built with [`IndexBuilder`], which appends every
//! entry and sorts once.

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

/// The top bit of [`Entry::pack`]: set for a tree blob.
const TREE_BIT: u32 = 1 << 31;
/// Packs an index can hold: their ordinals leave the top bit free.
const MAX_PACKS: usize = TREE_BIT as usize;
/// The unsorted part is merged once it holds this many entries and an
/// eighth of the sorted part (four in unit tests, so that they merge often).
const MERGE_AT_LEAST: usize = if cfg!(test) { 4 } else { 1 << 14 };
/// No further entry in a chain of the unsorted part.
const END: u32 = u32::MAX;

/// One location of one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Entry {
    id: Id,
    /// Ordinal of the pack in `MasterIndex::packs`, [`TREE_BIT`] set for a tree blob.
    pack: u32,
    offset: u32,
    length: u32,
    raw_len: u32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 48);

impl Entry {
    fn new(pack: u32, b: &BlobEntry) -> Entry {
        let tree = if b.blob_type == BlobType::Tree { TREE_BIT } else { 0 };
        Entry { id: b.id, pack: pack | tree, offset: b.offset, length: b.length, raw_len: b.raw_len }
    }

    fn pack(&self) -> u32 {
        self.pack & !TREE_BIT
    }

    fn blob_type(&self) -> BlobType {
        if self.pack & TREE_BIT != 0 {
            BlobType::Tree
        } else {
            BlobType::Data
        }
    }

    /// The order of the sorted part: by blob id, then by when the pack was added.
    fn key(&self) -> (&Id, u32) {
        (&self.id, self.pack())
    }

    fn blob_entry(&self) -> BlobEntry {
        BlobEntry {
            blob_type: self.blob_type(),
            id: self.id,
            offset: self.offset,
            length: self.length,
            raw_len: self.raw_len,
        }
    }
}

/// The first 32 bits of an id, the bucket it falls in among `1 << bits`.
fn bucket(id: &Id, bits: u32) -> usize {
    let head = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
    (u64::from(head) >> (32 - bits)) as usize
}

#[derive(Default)]
pub struct MasterIndex {
    packs: Vec<(Id, u64)>,
    pack_pos: HashMap<Id, u32>,
    /// Every location merged so far, in [`Entry::key`] order.
    sorted: Vec<Entry>,
    /// `sorted[starts[b]..starts[b + 1]]` holds the ids whose first
    /// `prefix_bits` bits are `b`; empty when `sorted` is.
    starts: Vec<u32>,
    prefix_bits: u32,
    /// Locations added since the last merge, in the order added.
    recent: Vec<Entry>,
    /// The first position in `recent` of each id there...
    recent_first: HashMap<Id, u32>,
    /// ...and, for each position, the next one with the same id ([`END`]).
    recent_next: Vec<u32>,
    /// Distinct blob ids.
    distinct: usize,
    /// Index objects whose contents are loaded (superseded ones excluded).
    pub index_ids: Vec<Id>,
}

/// Builds a [`MasterIndex`] from many packs at once (loading the index):
/// the entries are appended as they come and sorted once, so the index
/// takes its final size and no more while it is built.
#[derive(Default)]
pub struct IndexBuilder {
    index: MasterIndex,
}

impl IndexBuilder {
    pub fn new() -> IndexBuilder {
        IndexBuilder::default()
    }

    /// Adds a pack's blobs, as [`MasterIndex::add_pack`] does.
    pub fn add_pack(&mut self, p: &IndexedPack) {
        if let Some(pos) = self.index.register_pack(p) {
            for_each_first_in_pack(&p.blobs, |b| self.index.sorted.push(Entry::new(pos, b)));
        }
    }

    pub fn finish(self) -> MasterIndex {
        let mut index = self.index;
        index.sorted.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        index.sorted.shrink_to_fit();
        index.distinct = count_distinct(&index.sorted);
        index.rebuild_starts();
        index
    }
}

/// Calls `f` on each blob of a pack but the repeats of an id already met in
/// it (a pack is one location of a blob, however often it lists it).
fn for_each_first_in_pack(blobs: &[BlobEntry], mut f: impl FnMut(&BlobEntry)) {
    if blobs.len() < 2 {
        blobs.iter().for_each(f);
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(blobs.len());
    for b in blobs {
        if seen.insert(b.id) {
            f(b);
        }
    }
}

fn count_distinct(sorted: &[Entry]) -> usize {
    sorted.iter().enumerate().filter(|(i, e)| *i == 0 || sorted[i - 1].id != e.id).count()
}

impl MasterIndex {
    /// An index built from many packs at once.
    pub fn builder() -> IndexBuilder {
        IndexBuilder::new()
    }

    /// Gives a new pack its ordinal; `None` for a pack already indexed.
    fn register_pack(&mut self, p: &IndexedPack) -> Option<u32> {
        if self.pack_pos.contains_key(&p.id) {
            return None;
        }
        assert!(self.packs.len() < MAX_PACKS, "more than 2^31 packs in one index");
        let pos = self.packs.len() as u32;
        self.packs.push((p.id, p.size));
        self.pack_pos.insert(p.id, pos);
        Some(pos)
    }

    /// Adds a pack's blobs. A pack already indexed adds nothing; a blob
    /// already indexed gets a further location.
    pub fn add_pack(&mut self, p: &IndexedPack) {
        let Some(pos) = self.register_pack(p) else { return };
        for_each_first_in_pack(&p.blobs, |b| {
            if !self.contains(&b.id) {
                self.distinct += 1;
            }
            let at = self.recent.len() as u32;
            self.recent.push(Entry::new(pos, b));
            self.recent_next.push(END);
            match self.recent_first.entry(b.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(at);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    let mut last = *o.get() as usize;
                    while self.recent_next[last] != END {
                        last = self.recent_next[last] as usize;
                    }
                    self.recent_next[last] = at;
                }
            }
        });
        if self.recent.len() >= MERGE_AT_LEAST.max(self.sorted.len() / 8) {
            self.merge_recent();
        }
    }

    /// Moves the recent additions into the sorted part, merging from the
    /// back in place: the only extra memory is the recent part itself.
    fn merge_recent(&mut self) {
        let mut tail = std::mem::take(&mut self.recent);
        self.recent_first = HashMap::new();
        self.recent_next = Vec::new();
        // Recent packs were added after every sorted one: for the same id,
        // the sorted entries come first.
        tail.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        let old = self.sorted.len();
        let zero = Entry { id: Id::ZERO, pack: 0, offset: 0, length: 0, raw_len: 0 };
        self.sorted.resize(old + tail.len(), zero);
        let (mut i, mut j) = (old, tail.len());
        let mut k = old + tail.len();
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1].key() > tail[j - 1].key() {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = tail[j - 1];
                j -= 1;
            }
        }
        self.rebuild_starts();
    }

    /// Sizes the prefix table to about eight entries a bucket, and fills it.
    fn rebuild_starts(&mut self) {
        if self.sorted.is_empty() {
            self.starts = Vec::new();
            self.prefix_bits = 0;
            return;
        }
        let buckets = (self.sorted.len() / 8).max(1);
        self.prefix_bits = (usize::BITS - 1 - buckets.leading_zeros()).min(22);
        let n = 1usize << self.prefix_bits;
        let mut starts = Vec::with_capacity(n + 1);
        let mut at = 0usize;
        for b in 0..n {
            while at < self.sorted.len() && bucket(&self.sorted[at].id, self.prefix_bits) < b {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(self.sorted.len() as u32);
        self.starts = starts;
    }

    /// The sorted entries of `id` (empty if it has none there).
    fn sorted_run(&self, id: &Id) -> &[Entry] {
        if self.starts.is_empty() {
            return &[];
        }
        let b = bucket(id, self.prefix_bits);
        let within = &self.sorted[self.starts[b] as usize..self.starts[b + 1] as usize];
        let from = within.partition_point(|e| e.id < *id);
        let to = from + within[from..].iter().take_while(|e| e.id == *id).count();
        &within[from..to]
    }

    /// The recent entries of `id`, in the order added.
    fn recent_chain(&self, id: &Id) -> impl Iterator<Item = &Entry> + '_ {
        let mut at = if self.recent.is_empty() { END } else { self.recent_first.get(id).copied().unwrap_or(END) };
        std::iter::from_fn(move || {
            if at == END {
                return None;
            }
            let e = &self.recent[at as usize];
            at = self.recent_next[at as usize];
            Some(e)
        })
    }

    fn location(&self, e: &Entry) -> BlobLocation {
        BlobLocation {
            pack: self.packs[e.pack() as usize].0,
            blob_type: e.blob_type(),
            offset: e.offset,
            length: e.length,
            raw_len: e.raw_len,
        }
    }

    /// Every location of a blob: the first (what [`lookup`](Self::lookup)
    /// gives), then the others in the order their packs were added. A reader
    /// whose read of one fails tries the next (format.md §14).
    pub fn locations(&self, id: &Id) -> Vec<BlobLocation> {
        self.sorted_run(id).iter().chain(self.recent_chain(id)).map(|e| self.location(e)).collect()
    }

    pub fn lookup(&self, id: &Id) -> Option<BlobLocation> {
        self.sorted_run(id).first().or_else(|| self.recent_chain(id).next()).map(|e| self.location(e))
    }

    pub fn contains(&self, id: &Id) -> bool {
        !self.sorted_run(id).is_empty() || (!self.recent.is_empty() && self.recent_first.contains_key(id))
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// Every indexed pack with its size.
    pub fn packs(&self) -> &[(Id, u64)] {
        &self.packs
    }

    pub fn blob_count(&self) -> usize {
        self.distinct
    }

    /// Every blob with its (first) location, in no particular order.
    pub fn blobs(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        let sorted =
            self.sorted.iter().enumerate().filter(|(i, e)| *i == 0 || self.sorted[i - 1].id != e.id).map(|(_, e)| e);
        let recent = self
            .recent
            .iter()
            .enumerate()
            .filter(|(i, e)| self.recent_first.get(&e.id) == Some(&(*i as u32)) && self.sorted_run(&e.id).is_empty())
            .map(|(_, e)| e);
        sorted.chain(recent).map(|e| (e.id, self.location(e)))
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
        for e in self.sorted.iter().chain(&self.recent) {
            if let Some(list) = lists.get_mut(&e.pack()) {
                list.push(e.blob_entry());
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
    use std::collections::HashSet;

    /// What the index should answer, kept the plain way: every location of
    /// every blob in the order added.
    #[derive(Default)]
    struct Model {
        packs: Vec<(Id, u64)>,
        locations: HashMap<Id, Vec<BlobLocation>>,
        pack_blobs: HashMap<Id, Vec<BlobEntry>>,
    }

    impl Model {
        fn add_pack(&mut self, p: &IndexedPack) {
            if self.packs.iter().any(|(id, _)| *id == p.id) {
                return;
            }
            self.packs.push((p.id, p.size));
            let mut seen = HashSet::new();
            let mut list = Vec::new();
            for b in p.blobs.iter().filter(|b| seen.insert(b.id)) {
                let loc = BlobLocation {
                    pack: p.id,
                    blob_type: b.blob_type,
                    offset: b.offset,
                    length: b.length,
                    raw_len: b.raw_len,
                };
                self.locations.entry(b.id).or_default().push(loc);
                list.push(*b);
            }
            list.sort_by_key(|b| b.offset);
            self.pack_blobs.insert(p.id, list);
        }
    }

    fn assert_same(idx: &MasterIndex, model: &Model, ids: &[Id]) {
        assert_eq!(idx.packs(), &model.packs[..]);
        assert_eq!(idx.blob_count(), model.locations.len());
        for id in ids {
            let expected = model.locations.get(id).cloned().unwrap_or_default();
            assert_eq!(idx.locations(id), expected, "locations of {id}");
            assert_eq!(idx.lookup(id), expected.first().copied());
            assert_eq!(idx.contains(id), !expected.is_empty());
        }
        let blobs: HashMap<Id, BlobLocation> = idx.blobs().collect();
        assert_eq!(blobs.len(), idx.blob_count(), "blobs() lists each blob once");
        let firsts: HashMap<Id, BlobLocation> = model.locations.iter().map(|(id, l)| (*id, l[0])).collect();
        assert_eq!(blobs, firsts);
        let mut asked: Vec<Id> = model.packs.iter().map(|(id, _)| *id).collect();
        asked.push(Id([0xfe; 32]));
        let by_pack = idx.blobs_by_pack(&asked);
        assert_eq!(by_pack.len(), model.packs.len());
        for (pack, _) in &model.packs {
            assert!(idx.has_pack(pack));
            assert_eq!(by_pack[pack], model.pack_blobs[pack]);
            assert_eq!(idx.blobs_in_pack(pack), model.pack_blobs[pack]);
        }
        assert!(!idx.has_pack(&Id([0xfe; 32])));
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

    fn all_ids() -> Vec<Id> {
        (0u8..14).map(|i| Id([i; 32])).collect()
    }

    proptest! {
        #[test]
        fn answers_as_a_plain_map_does_added_one_by_one(packs in packs_strategy()) {
            let (mut idx, mut model) = (MasterIndex::default(), Model::default());
            for p in &packs {
                idx.add_pack(p);
                model.add_pack(p);
                // Lookups between additions see every pack added so far.
                assert_same(&idx, &model, &all_ids());
            }
        }

        #[test]
        fn answers_as_a_plain_map_does_built_then_added_to(packs in packs_strategy(), split in 0usize..12) {
            let split = split.min(packs.len());
            let (mut builder, mut model) = (MasterIndex::builder(), Model::default());
            for p in &packs[..split] {
                builder.add_pack(p);
                model.add_pack(p);
            }
            let mut idx = builder.finish();
            assert_same(&idx, &model, &all_ids());
            for p in &packs[split..] {
                idx.add_pack(p);
                model.add_pack(p);
            }
            assert_same(&idx, &model, &all_ids());
        }
    }

    /// Random ids in packs of 1,000, some blobs stored again in later packs:
    /// enough entries for a prefix table of many buckets and many merges.
    #[test]
    fn many_random_blobs_answer_as_a_plain_map_does() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut id = || {
            let mut b = [0u8; 32];
            for chunk in b.chunks_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            Id(b)
        };
        let mut ids: Vec<Id> = Vec::new();
        let mut packs = Vec::new();
        for p in 0..60u32 {
            let blobs = (0..1000u32)
                .map(|b| {
                    let blob_id = if b % 7 == 0 && !ids.is_empty() {
                        ids[(b as usize * 31 + p as usize) % ids.len()]
                    } else {
                        id()
                    };
                    ids.push(blob_id);
                    BlobEntry {
                        blob_type: if b % 50 == 0 { BlobType::Tree } else { BlobType::Data },
                        id: blob_id,
                        offset: b * 100,
                        length: 100,
                        raw_len: 60 + b % 30,
                    }
                })
                .collect();
            packs.push(IndexedPack { id: id(), size: 100_000, blobs });
        }
        let absent: Vec<Id> = (0..1000).map(|_| id()).collect();
        let asked: Vec<Id> = ids.iter().chain(&absent).copied().collect();

        let mut model = Model::default();
        let mut one_by_one = MasterIndex::default();
        let mut builder = MasterIndex::builder();
        for p in &packs {
            model.add_pack(p);
            one_by_one.add_pack(p);
            builder.add_pack(p);
        }
        assert_same(&one_by_one, &model, &asked);
        let mut built = builder.finish();
        assert_same(&built, &model, &asked);
        assert!(built.prefix_bits >= 12, "{} prefix bits", built.prefix_bits);
        // Packs repeated add nothing; a new pack of known blobs adds locations.
        built.add_pack(&packs[3]);
        let again = IndexedPack { id: id(), size: 100_000, blobs: packs[5].blobs.clone() };
        built.add_pack(&again);
        model.add_pack(&again);
        assert_same(&built, &model, &asked);
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

    #[test]
    fn an_entry_takes_48_bytes() {
        let mut b = MasterIndex::builder();
        let blobs = (0..10_000u32)
            .map(|i| BlobEntry {
                blob_type: BlobType::Data,
                id: Id(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                offset: i * 100,
                length: 100,
                raw_len: 50,
            })
            .collect();
        b.add_pack(&IndexedPack { id: Id([1; 32]), size: 1_000_000, blobs });
        let idx = b.finish();
        assert_eq!(idx.sorted.capacity(), 10_000);
        assert!(idx.starts.len() <= 10_000 / 8 + 1);
    }
}
