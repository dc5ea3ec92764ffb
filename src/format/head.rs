//! The head: a sealed pointer to the repository's current index objects and
//! snapshots, with a generation number that only grows. Backends that keep
//! one (Telegram: the pinned message) find it without listing everything;
//! a reader that saw a higher generation before refuses an older head.

use super::codec::{Decoder, Encoder};
use super::{FormatError, Id};

const HEAD_VERSION: u8 = 1;

/// Seal domain of the head; its id field in the associated data is `ZERO`.
pub const HEAD_DOMAIN: u8 = 0x07;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// One more than the highest generation its writer had seen.
    pub generation: u64,
    /// When it was written.
    pub time_ns: i64,
    /// Every index object stored when it was written.
    pub indexes: Vec<Id>,
    /// Every snapshot stored when it was written.
    pub snapshots: Vec<Id>,
}

impl Head {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(HEAD_VERSION);
        e.u64(self.generation).i64(self.time_ns).count(self.indexes.len());
        for id in &self.indexes {
            e.id(id);
        }
        e.count(self.snapshots.len());
        for id in &self.snapshots {
            e.id(id);
        }
        e.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<Head, FormatError> {
        let mut d = Decoder::new(buf, "head", HEAD_VERSION)?;
        let generation = d.u64()?;
        let time_ns = d.i64()?;
        let n = d.count(32)?;
        let indexes = (0..n).map(|_| d.id()).collect::<Result<_, _>>()?;
        let n = d.count(32)?;
        let snapshots = (0..n).map(|_| d.id()).collect::<Result<_, _>>()?;
        d.finish()?;
        Ok(Head { generation, time_ns, indexes, snapshots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let h =
            Head { generation: 7, time_ns: -3, indexes: vec![Id([1; 32]), Id([2; 32])], snapshots: vec![Id([3; 32])] };
        let bytes = h.encode();
        assert_eq!(bytes.len(), 1 + 8 + 8 + 4 + 64 + 4 + 32);
        assert_eq!(Head::decode(&bytes).unwrap(), h);
        for cut in 0..bytes.len() {
            assert!(Head::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Head::decode(&trailing).is_err());
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(Head::decode(&version).is_err());
        let mut huge = bytes;
        huge[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Head::decode(&huge).is_err());
    }
}
