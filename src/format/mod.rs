//! The repository's stored formats, as pure encode/decode functions with no I/O.
//! `docs/format.md` is the normative description of every byte written here;
//! the two change together. Every encoded object starts with a version byte and
//! every integer is fixed-width little-endian.

pub mod codec;
pub mod config;
pub mod envelope;
pub mod head;
pub mod index;
pub mod key;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;

use std::fmt;
use std::str::FromStr;

/// Version of the repository format as a whole, bound into every seal.
pub const REPO_FORMAT_VERSION: u8 = 1;

/// Largest plaintext a single blob may have (data chunks are at most 4 MiB;
/// the rest is head-room for trees of very large directories).
pub const MAX_BLOB_LEN: u32 = 64 << 20;

/// Largest plaintext of a stored object other than a pack (index, snapshot, ...).
pub const MAX_OBJECT_LEN: u32 = 1 << 30;

/// Envelope caps of config and lock objects: a few hundred bytes each, and
/// their caps keep an object of a few KiB from costing more than 1 MiB of work.
pub const MAX_CONFIG_LEN: u32 = 1 << 20;
pub const MAX_LOCK_LEN: u32 = 1 << 20;
/// Envelope cap of snapshot objects: their size follows the source paths
/// given on one command line (at most a few MiB), plus tags and names.
pub const MAX_SNAPSHOT_LEN: u32 = 16 << 20;
/// Index objects and heads are lists of random 32-byte ids (at least one in
/// every 45 bytes), which compress less than 1.5:1. One may expand to at most
/// this many times its stored envelope ...
pub const MAX_EXPANSION: u32 = 16;
/// ... or to this, whichever is more (and never beyond `MAX_OBJECT_LEN`).
pub const MIN_EXPANSION_CAP: u32 = 1 << 20;

/// The expansion cap of index objects and heads for an envelope of
/// `envelope_len` bytes (docs/format.md §8).
pub fn expansion_cap(envelope_len: usize) -> u32 {
    let scaled = (envelope_len as u64).saturating_mul(MAX_EXPANSION as u64);
    scaled.clamp(MIN_EXPANSION_CAP as u64, MAX_OBJECT_LEN as u64) as u32
}

/// Deepest entry a reader accepts: entries of a snapshot's root tree are at
/// depth 1, the entries of a directory at depth d are at depth d + 1.
pub const MAX_TREE_DEPTH: usize = 4096;

/// Longest path a reader accepts, in bytes: the names from the snapshot's
/// root tree down to the entry, joined by `/`.
pub const MAX_PATH_LEN: usize = 65_536;

/// Most entries a reader accepts in one snapshot, counting every entry of
/// every tree as often as it is reached (a tree referenced twice counts twice).
pub const MAX_SNAPSHOT_ENTRIES: u64 = 100_000_000;

/// An entry beyond the limits of format.md §22.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    #[error("more than {MAX_TREE_DEPTH} directory levels deep")]
    TooDeep,
    #[error("path longer than {MAX_PATH_LEN} bytes")]
    PathTooLong,
}

/// Whether an entry at `depth` whose path is `path_len` bytes is within the
/// limits a reader accepts.
pub fn check_entry_limits(depth: usize, path_len: usize) -> Result<(), LimitError> {
    if depth > MAX_TREE_DEPTH {
        return Err(LimitError::TooDeep);
    }
    if path_len > MAX_PATH_LEN {
        return Err(LimitError::PathTooLong);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    #[error("{what} has unsupported version {found}")]
    UnsupportedVersion { what: &'static str, found: u8 },
    #[error("{what} is invalid: {reason}")]
    Invalid { what: &'static str, reason: &'static str },
    #[error("{what} has trailing bytes")]
    TrailingBytes { what: &'static str },
    #[error("{what} declares {declared} bytes, over its limit of {limit}")]
    OverLimit { what: &'static str, declared: u64, limit: u64 },
}

/// A 32-byte identifier: keyed blake3 of a blob or object plaintext, or the
/// unkeyed blake3 of a pack's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub const ZERO: Id = Id([0; 32]);

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses an object's name in storage: exactly 64 lowercase hex digits
    /// (format.md §2). Any other spelling, uppercase included, names nothing.
    pub fn from_stored_name(name: &str) -> Option<Id> {
        if name.len() != 64 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        name.parse().ok()
    }

    pub fn random() -> Id {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        Id(b)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)
            .map_err(|_| FormatError::Invalid { what: "id", reason: "not 64 hex digits" })?;
        Ok(Id(b))
    }
}

/// The kinds of object a backend stores. The numeric tag is bound into seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Config = 1,
    Key = 2,
    Pack = 3,
    Index = 4,
    Snapshot = 5,
    Lock = 6,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
    ];

    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The most an object of this kind may decompress to, given the length
    /// of its envelope (docs/format.md §8). Key slots and packs are not
    /// opened as objects; they get the general limit.
    pub fn plain_cap(self, envelope_len: usize) -> u32 {
        match self {
            ObjectKind::Config => MAX_CONFIG_LEN,
            ObjectKind::Snapshot => MAX_SNAPSHOT_LEN,
            ObjectKind::Lock => MAX_LOCK_LEN,
            ObjectKind::Index => expansion_cap(envelope_len),
            ObjectKind::Key | ObjectKind::Pack => MAX_OBJECT_LEN,
        }
    }

    /// Name used for directories, logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "packs",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Lock => "locks",
        }
    }
}

/// The two kinds of blob stored inside packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobType {
    Data = 0,
    Tree = 1,
}

impl BlobType {
    pub fn from_tag(tag: u8) -> Option<BlobType> {
        match tag {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }

    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

/// Associated data bound into a seal: which repository, which kind of thing
/// and which id. Built once per seal; see `docs/format.md`, "Seal".
pub fn associated_data(repo_id: &Id, domain: u8, id: &Id) -> [u8; 72] {
    let mut ad = [0u8; 72];
    ad[..5].copy_from_slice(b"tstor");
    ad[5] = REPO_FORMAT_VERSION;
    ad[6] = domain;
    ad[7] = 0;
    ad[8..40].copy_from_slice(repo_id.as_bytes());
    ad[40..72].copy_from_slice(id.as_bytes());
    ad
}

/// Seal domains: object kinds use their tag, blobs use 0x10 + blob type and
/// the pack header uses 0x20.
pub fn blob_domain(t: BlobType) -> u8 {
    0x10 + t.tag()
}
pub const PACK_HEADER_DOMAIN: u8 = 0x20;
pub const KEY_SLOT_DOMAIN: u8 = 0x30;
/// Seal domain of a key slot's owner record (sealed with the repository keys).
pub const KEY_OWNER_DOMAIN: u8 = 0x31;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn id_hex_round_trip(b in any::<[u8; 32]>()) {
            let id = Id(b);
            prop_assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        }
    }

    #[test]
    fn stored_names_are_lowercase_hex_only() {
        let id = Id([0xab; 32]);
        assert_eq!(Id::from_stored_name(&id.to_hex()), Some(id));
        assert_eq!(Id::from_stored_name(&id.to_hex().to_uppercase()), None);
        assert_eq!(Id::from_stored_name(&format!("AB{}", &id.to_hex()[2..])), None);
        assert_eq!(Id::from_stored_name(&id.to_hex()[..62]), None);
        assert_eq!(Id::from_stored_name(&format!("{}0", id.to_hex())), None);
        // Typed by a user, either case is the same id.
        assert_eq!(id.to_hex().to_uppercase().parse::<Id>().unwrap(), id);
    }

    #[test]
    fn id_parse_rejects_garbage() {
        assert!("zz".parse::<Id>().is_err());
        assert!("00".repeat(31).parse::<Id>().is_err());
    }
}
