//! Lock objects: who holds the repository, how (shared or exclusive) and when
//! the holder last showed it was alive.

use super::codec::{Decoder, Encoder};
use super::FormatError;

const LOCK_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    pub created_ns: i64,
    pub refreshed_ns: i64,
    /// Random bytes that make every lock object's id unique.
    pub nonce: [u8; 16],
}

impl Lock {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(LOCK_VERSION);
        e.u8(self.exclusive as u8).str(&self.hostname).str(&self.username).u32(self.pid);
        e.i64(self.created_ns).i64(self.refreshed_ns).bytes(&self.nonce);
        e.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<Lock, FormatError> {
        let mut d = Decoder::new(buf, "lock", LOCK_VERSION)?;
        let exclusive = match d.u8()? {
            0 => false,
            1 => true,
            _ => return Err(d.invalid("exclusive flag is neither 0 nor 1")),
        };
        let hostname = d.string()?;
        let username = d.string()?;
        let pid = d.u32()?;
        let created_ns = d.i64()?;
        let refreshed_ns = d.i64()?;
        let nonce = d.bytes()?.try_into().map_err(|_| d.invalid("nonce is not 16 bytes"))?;
        d.finish()?;
        Ok(Lock { exclusive, hostname, username, pid, created_ns, refreshed_ns, nonce })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(ex in any::<bool>(), host in ".{0,10}", pid in any::<u32>(), c in any::<i64>(), r in any::<i64>(), nonce in any::<[u8; 16]>()) {
            let l = Lock { exclusive: ex, hostname: host, username: "root".into(), pid, created_ns: c, refreshed_ns: r, nonce };
            prop_assert_eq!(Lock::decode(&l.encode()).unwrap(), l);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Lock::decode(&buf);
        }
    }
}
