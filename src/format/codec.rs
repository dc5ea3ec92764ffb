//! Byte-level encoding primitives shared by every stored object: fixed-width
//! little-endian integers, 32-byte ids and length-prefixed byte strings, with a
//! decoder that never reads past its input and never allocates more than the
//! input could possibly describe.

use super::{FormatError, Id};

/// Appends fields to a growing buffer.
#[derive(Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new(version: u8) -> Self {
        let mut e = Encoder { buf: Vec::with_capacity(256) };
        e.u8(version);
        e
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn id(&mut self, id: &Id) -> &mut Self {
        self.buf.extend_from_slice(id.as_bytes());
        self
    }

    pub fn opt_id(&mut self, id: Option<&Id>) -> &mut Self {
        match id {
            Some(id) => self.u8(1).id(id),
            None => self.u8(0),
        }
    }

    /// A byte string: u32 length, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).expect("byte string longer than 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(b);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// A list length: u32.
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).expect("list longer than 2^32 entries"))
    }

    /// Bytes written so far, version byte included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a byte slice; every read is bounds-checked.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Decoder<'a> {
    /// Starts decoding `what`, checking its leading version byte against `version`.
    pub fn new(buf: &'a [u8], what: &'static str, version: u8) -> Result<Self, FormatError> {
        let mut d = Decoder { buf, pos: 0, what };
        let found = d.u8()?;
        if found != version {
            return Err(FormatError::UnsupportedVersion { what, found });
        }
        Ok(d)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return Err(FormatError::Truncated { what: self.what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub fn id(&mut self) -> Result<Id, FormatError> {
        Ok(Id(self.take(32)?.try_into().expect("32 bytes")))
    }

    pub fn opt_id(&mut self) -> Result<Option<Id>, FormatError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.id()?)),
            _ => Err(self.invalid("optional id flag is neither 0 nor 1")),
        }
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub fn string(&mut self) -> Result<String, FormatError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.invalid("string is not UTF-8"))
    }

    /// A list length, checked against the bytes left: each element needs at
    /// least `min_element_len` bytes, so a hostile count cannot force a huge
    /// allocation.
    pub fn count(&mut self, min_element_len: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_element_len.max(1)) > self.remaining() {
            return Err(FormatError::Truncated { what: self.what });
        }
        Ok(n)
    }

    pub fn invalid(&self, reason: &'static str) -> FormatError {
        FormatError::Invalid { what: self.what, reason }
    }

    /// Ends decoding; trailing bytes are an error.
    pub fn finish(self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(FormatError::TrailingBytes { what: self.what });
        }
        Ok(())
    }
}
