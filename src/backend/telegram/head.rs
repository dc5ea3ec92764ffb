//! The Telegram head document (docs/format.md §23.3): a container the
//! backend pins, holding its placement (which message holds the document of
//! which stored name, and up to which message id the history was read) in
//! the clear beside the repository's sealed head, which it never opens. The
//! placement carries names as stored, opaque without the repository keys:
//! no kinds, no ids, nothing readable. Pure encode/decode.

use crate::backend::names::NAME_LEN;

/// First bytes of every head document: the first 8 bytes of
/// BLAKE3(`MAGIC_CONTEXT`), so that nothing in it is readable text.
pub const MAGIC: [u8; 8] = [0xe5, 0x74, 0x89, 0xae, 0x4e, 0x0e, 0xb0, 0xbd];
/// What [`MAGIC`] is derived from.
pub const MAGIC_CONTEXT: &str = "tstor 2026-11-24 telegram head document";
/// Version byte of the placement.
pub const PLACEMENT_VERSION: u8 = 2;
/// Encoded size of one placement entry: stored name bytes, message id, size.
pub const ENTRY_LEN: usize = NAME_LEN + 4 + 8;

/// Where the document of one stored name was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The name's bytes (the stored name is their lowercase hex).
    pub name: [u8; NAME_LEN],
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
    #[error("head document placement has trailing bytes")]
    Trailing,
}

/// Whether the first bytes of a document are those of a head document, so
/// that a big document that is not one need not be read in full.
pub fn starts_like_head(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(&MAGIC)
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
        out.extend_from_slice(&p.name);
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

fn array<const N: usize>(b: &[u8]) -> Result<[u8; N], HeadDocError> {
    b.try_into().map_err(|_| HeadDocError::Truncated)
}

/// Splits a head document into its placement and the sealed head.
pub fn decode(document: &[u8]) -> Result<(Placement, &[u8]), HeadDocError> {
    let mut buf = document;
    if take(&mut buf, MAGIC.len()).map_err(|_| HeadDocError::BadMagic)? != MAGIC {
        return Err(HeadDocError::BadMagic);
    }
    let len = u32::from_le_bytes(array(take(&mut buf, 4)?)?) as usize;
    let mut body = take(&mut buf, len)?;
    let sealed = buf;
    let version = take(&mut body, 1)?[0];
    if version != PLACEMENT_VERSION {
        return Err(HeadDocError::Version(version));
    }
    let scanned_through = i32::from_le_bytes(array(take(&mut body, 4)?)?);
    let count = u32::from_le_bytes(array(take(&mut body, 4)?)?) as usize;
    if count.checked_mul(ENTRY_LEN).is_none_or(|n| n > body.len()) {
        return Err(HeadDocError::Truncated);
    }
    let mut objects = Vec::with_capacity(count);
    for _ in 0..count {
        let e = take(&mut body, ENTRY_LEN)?;
        let (name, rest) = e.split_at(NAME_LEN);
        let (msg_id, size) = rest.split_at(4);
        objects.push(Placed {
            name: array(name)?,
            msg_id: i32::from_le_bytes(array(msg_id)?),
            size: u64::from_le_bytes(array(size)?),
        });
    }
    if !body.is_empty() {
        return Err(HeadDocError::Trailing);
    }
    Ok((Placement { scanned_through, objects }, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn placement() -> Placement {
        Placement {
            scanned_through: 4242,
            objects: vec![
                Placed { name: [3; NAME_LEN], msg_id: 3, size: 200 },
                Placed { name: [0xa7; NAME_LEN], msg_id: 90, size: 64 << 20 },
            ],
        }
    }

    #[test]
    fn the_magic_comes_from_its_context_and_reads_as_nothing() {
        assert_eq!(MAGIC[..], blake3::hash(MAGIC_CONTEXT.as_bytes()).as_bytes()[..8]);
        assert!(MAGIC.windows(2).all(|w| !w.iter().all(|b| b.is_ascii_alphabetic())), "no two letters in a row");
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let placement = placement();
        let doc = encode(&placement, b"sealed bytes");
        let (p, sealed) = decode(&doc).unwrap();
        assert_eq!(p, placement);
        assert_eq!(sealed, b"sealed bytes");
        assert!(starts_like_head(&doc[..8]));
        assert!(!starts_like_head(&doc[..7]));

        assert_eq!(decode(&MAGIC[..7]), Err(HeadDocError::BadMagic));
        assert_eq!(decode(b"something else entirely"), Err(HeadDocError::BadMagic));
        for cut in 8..doc.len() - 12 {
            assert!(decode(&doc[..cut]).is_err(), "cut at {cut}");
        }
        let mut old_version = doc.clone();
        old_version[8 + 4] = 1;
        assert_eq!(decode(&old_version), Err(HeadDocError::Version(1)));
        let mut huge = doc.clone();
        huge[8 + 4 + 5..8 + 4 + 9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), Err(HeadDocError::Truncated));
        let mut fewer = doc.clone();
        fewer[8 + 4 + 5..8 + 4 + 9].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode(&fewer), Err(HeadDocError::Trailing));
    }

    #[test]
    fn nothing_in_a_head_document_is_text() {
        let doc = encode(&placement(), &[0x99; 64]);
        let text: String = doc.iter().map(|&b| if b.is_ascii_alphabetic() { b as char } else { ' ' }).collect();
        for word in ["tstor", "head", "pack", "index", "snapshot", "config", "key", "lock"] {
            assert!(!text.to_ascii_lowercase().contains(word), "{word} in {text:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_documents_never_panic_and_decode_strictly(
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut doc = MAGIC.to_vec();
            doc.extend_from_slice(&body);
            if let Ok((p, sealed)) = decode(&doc) {
                prop_assert_eq!(encode(&p, sealed), doc);
            }
        }
    }
}
