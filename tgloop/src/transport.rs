//! The `Full` TCP transport as the server sees it: every packet is
//! `length (4) | sequence number (4) | payload | crc32 (4)`, little endian,
//! with one sequence counter per direction starting at zero. A negative
//! length alone is a transport error code (e.g. -404: unknown auth key).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest packet accepted from a client: a full 1 MiB container plus headers.
pub const MAX_PACKET: usize = 2 * 1024 * 1024;

/// Reads client packets, checking length, sequence and checksum.
pub struct Reader<R> {
    inner: R,
    seq: i32,
}

/// Writes server packets with increasing sequence numbers.
pub struct Writer<W> {
    inner: W,
    seq: i32,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, seq: 0 }
    }

    /// The next payload, or `None` at a clean end of stream.
    pub async fn read_packet(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut head = [0u8; 8];
        match self.inner.read_exact(&mut head[..4]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        self.inner.read_exact(&mut head[4..]).await?;
        let len = i32::from_le_bytes(head[..4].try_into().unwrap());
        if len < 12 || len as usize > MAX_PACKET || len % 4 != 0 {
            return Err(invalid(format!("bad packet length {len}")));
        }
        let seq = i32::from_le_bytes(head[4..].try_into().unwrap());
        if seq != self.seq {
            return Err(invalid(format!("bad packet sequence {seq}, expected {}", self.seq)));
        }
        let mut rest = vec![0u8; len as usize - 8];
        self.inner.read_exact(&mut rest).await?;
        let crc_at = rest.len() - 4;
        let got = u32::from_le_bytes(rest[crc_at..].try_into().unwrap());
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        h.update(&rest[..crc_at]);
        if h.finalize() != got {
            return Err(invalid("bad packet checksum".into()));
        }
        self.seq += 1;
        rest.truncate(crc_at);
        Ok(Some(rest))
    }
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(inner: W) -> Self {
        Writer { inner, seq: 0 }
    }

    pub async fn write_packet(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = (payload.len() + 12) as i32;
        let mut out = Vec::with_capacity(payload.len() + 12);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        self.inner.write_all(&out).await?;
        self.inner.flush().await?;
        self.seq += 1;
        Ok(())
    }

    /// Sends a bare transport error code (a negative length) and nothing else.
    pub async fn write_error(&mut self, code: i32) -> io::Result<()> {
        self.inner.write_all(&(-code).to_le_bytes()).await?;
        self.inner.flush().await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grammers_crypto::DequeBuffer;
    use grammers_mtproto::transport::{Full, Transport};

    #[tokio::test]
    async fn reads_what_grammers_packs_and_back() {
        let mut client = Full::new();
        let mut wire = Vec::new();
        for n in [4usize, 64, 1000] {
            let mut buf = DequeBuffer::with_capacity(n, 8);
            buf.extend(vec![n as u8; n]);
            client.pack(&mut buf);
            wire.extend_from_slice(&buf[..]);
        }
        let mut r = Reader::new(&wire[..]);
        for n in [4usize, 64, 1000] {
            assert_eq!(r.read_packet().await.unwrap().unwrap(), vec![n as u8; n]);
        }
        assert!(r.read_packet().await.unwrap().is_none());

        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.write_packet(&[1, 2, 3, 4]).await.unwrap();
        w.write_packet(&[5, 6, 7, 8]).await.unwrap();
        let mut first = out.clone();
        let a = client.unpack(&mut first).unwrap();
        assert_eq!(&first[a.data_range], &[1, 2, 3, 4]);
        let b = client.unpack(&mut first[a.next_offset..]).unwrap();
        assert_eq!(&out[a.next_offset..][b.data_range], &[5, 6, 7, 8]);
    }

    #[tokio::test]
    async fn rejects_bad_checksum_and_sequence() {
        let mut client = Full::new();
        let mut buf = DequeBuffer::with_capacity(8, 8);
        buf.extend([1u8; 8]);
        client.pack(&mut buf);
        let mut wire = buf[..].to_vec();
        wire[10] ^= 0xff;
        assert!(Reader::new(&wire[..]).read_packet().await.is_err());

        let mut buf = DequeBuffer::with_capacity(8, 8);
        buf.extend([1u8; 8]);
        client.pack(&mut buf); // sequence 1 where 0 is expected
        assert!(Reader::new(&buf[..]).read_packet().await.is_err());
    }
}
