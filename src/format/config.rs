//! The repository config: repository id, chunker parameters and compression
//! level. Sealed with the repository keys and stored once, at `init`.

use super::codec::{Decoder, Encoder};
use super::{FormatError, Id};

const CONFIG_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub repo_id: Id,
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    pub compression_level: i32,
    pub created_ns: i64,
}

impl Config {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(CONFIG_VERSION);
        e.id(&self.repo_id).u32(self.chunk_min).u32(self.chunk_avg).u32(self.chunk_max);
        e.u32(self.compression_level as u32).i64(self.created_ns);
        e.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<Config, FormatError> {
        let mut d = Decoder::new(buf, "config", CONFIG_VERSION)?;
        let c = Config {
            repo_id: d.id()?,
            chunk_min: d.u32()?,
            chunk_avg: d.u32()?,
            chunk_max: d.u32()?,
            compression_level: d.u32()? as i32,
            created_ns: d.i64()?,
        };
        d.finish()?;
        if !(1..=19).contains(&c.compression_level) {
            return Err(FormatError::Invalid { what: "config", reason: "compression level outside 1..=19" });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(repo in any::<[u8; 32]>(), a in any::<u32>(), b in any::<u32>(), c in any::<u32>(), l in 1i32..=19, t in any::<i64>()) {
            let cfg = Config { repo_id: Id(repo), chunk_min: a, chunk_avg: b, chunk_max: c, compression_level: l, created_ns: t };
            prop_assert_eq!(Config::decode(&cfg.encode()).unwrap(), cfg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Config::decode(&buf);
        }
    }
}
