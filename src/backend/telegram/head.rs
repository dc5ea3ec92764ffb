//! The Telegram head document (docs/format.md §23.3): a container the
//! backend pins, holding its placement (which message holds which object,
//! and up to which message id the history was read) in the clear beside the
//! repository's sealed head, which it never opens. Pure encode/decode.

use crate::format::{Id, ObjectKind};

/// First bytes of every head document.
pub const MAGIC: [u8; 8] = *b"tstorTH\x01";
/// Version byte of the placement.
pub const PLACEMENT_VERSION: u8 = 1;
/// Encoded size of one placement entry: kind, id, message id, size.
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 8;
/// File name prefix of head documents; the rest is 64 hex digits.
pub const NAME_PREFIX: &str = "tstor-head-";

/// Where one object was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub kind: ObjectKind,
    pub id: Id,
    pub msg_id: i32,
    pub size: u64,
}

/// What a head document says about the chat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Every message with an id up to this one had been read when the head
    /// was written; anything newer must be read from the history.
    pub scanned_through: i32,
    pub objects: Vec<Placed>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadDocError {
    #[error("not a head document")]
    BadMagic,
    #[error("head document is truncated")]
    Truncated,
    #[error("head document placement has version {0}")]
    Version(u8),
    #[error("head document names an unknown object kind {0}")]
    Kind(u8),
    #[error("head document placement has trailing bytes")]
    Trailing,
}

/// The file name of a head document: its unkeyed BLAKE3 hash, like a pack.
pub fn head_name(document: &[u8]) -> String {
    format!("{NAME_PREFIX}{}", blake3::hash(document).to_hex())
}

/// Whether a document name is a head document's.
pub fn is_head_name(name: &str) -> bool {
    name.strip_prefix(NAME_PREFIX).is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Magic ‖ u32 placement length ‖ placement ‖ sealed head.
pub fn encode(placement: &Placement, sealed: &[u8]) -> Vec<u8> {
    let body_len = 1 + 4 + 4 + placement.objects.len() * ENTRY_LEN;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + body_len + sealed.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.push(PLACEMENT_VERSION);
    out.extend_from_slice(&placement.scanned_through.to_le_bytes());
    out.extend_from_slice(&(placement.objects.len() as u32).to_le_bytes());
    for p in &placement.objects {
        out.push(p.kind.tag());
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.msg_id.to_le_bytes());
        out.extend_from_slice(&p.size.to_le_bytes());
    }
    out.extend_from_slice(sealed);
    out
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], HeadDocError> {
    if buf.len() < n {
        return Err(HeadDocError::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Splits a head document into its placement and the sealed head.
pub fn decode(document: &[u8]) -> Result<(Placement, &[u8]), HeadDocError> {
    let mut buf = document;
    if take(&mut buf, MAGIC.len()).map_err(|_| HeadDocError::BadMagic)? != MAGIC {
        return Err(HeadDocError::BadMagic);
    }
    let len = u32_of(take(&mut buf, 4)?) as usize;
    let mut body = take(&mut buf, len)?;
    let sealed = buf;
    let version = take(&mut body, 1)?[0];
    if version != PLACEMENT_VERSION {
        return Err(HeadDocError::Version(version));
    }
    let scanned_through = u32_of(take(&mut body, 4)?) as i32;
    let count = u32_of(take(&mut body, 4)?) as usize;
    if count.checked_mul(ENTRY_LEN).is_none_or(|n| n > body.len()) {
        return Err(HeadDocError::Truncated);
    }
    let mut objects = Vec::with_capacity(count);
    for _ in 0..count {
        let e = take(&mut body, ENTRY_LEN)?;
        let kind = ObjectKind::ALL.into_iter().find(|k| k.tag() == e[0]).ok_or(HeadDocError::Kind(e[0]))?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&e[1..33]);
        let msg_id = u32_of(&e[33..37]) as i32;
        let size = u64::from_le_bytes(e[37..45].try_into().map_err(|_| HeadDocError::Truncated)?);
        objects.push(Placed { kind, id: Id(id), msg_id, size });
    }
    if !body.is_empty() {
        return Err(HeadDocError::Trailing);
    }
    Ok((Placement { scanned_through, objects }, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let placement = Placement {
            scanned_through: 4242,
            objects: vec![
                Placed { kind: ObjectKind::Config, id: Id::ZERO, msg_id: 3, size: 200 },
                Placed { kind: ObjectKind::Pack, id: Id([7; 32]), msg_id: 90, size: 64 << 20 },
            ],
        };
        let doc = encode(&placement, b"sealed bytes");
        let (p, sealed) = decode(&doc).unwrap();
        assert_eq!(p, placement);
        assert_eq!(sealed, b"sealed bytes");
        assert!(is_head_name(&head_name(&doc)));
        assert!(!is_head_name("tstor-head-12"));

        assert_eq!(decode(b"tstorTH"), Err(HeadDocError::BadMagic));
        assert_eq!(decode(b"something else entirely"), Err(HeadDocError::BadMagic));
        for cut in 8..doc.len() - 12 {
            assert!(decode(&doc[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_kind = doc.clone();
        bad_kind[8 + 4 + 9] = 9;
        assert_eq!(decode(&bad_kind), Err(HeadDocError::Kind(9)));
        let mut huge = doc.clone();
        huge[8 + 4 + 5..8 + 4 + 9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), Err(HeadDocError::Truncated));
    }
}
