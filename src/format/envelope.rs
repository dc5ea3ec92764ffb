//! The envelope: the plaintext inside every seal. One byte says how the payload
//! is compressed, a u32 gives the uncompressed length, then the payload. Data
//! that does not compress is stored as is, and a quick trial on a sample keeps
//! incompressible chunks from costing a full compression pass.

use super::FormatError;

const ENVELOPE_STORED: u8 = 0;
const ENVELOPE_ZSTD: u8 = 1;
const HEADER_LEN: usize = 5;

/// Inputs shorter than this are never compressed.
const MIN_COMPRESS_LEN: usize = 256;
/// Inputs longer than twice this are first tried on samples of this total size.
const SAMPLE_LEN: usize = 32 << 10;

/// Wraps `raw` into an envelope, compressing it with zstd at `level` when that
/// saves at least 2%. An input whose length does not fit the envelope's
/// `u32` is refused.
pub fn seal_payload(raw: &[u8], level: i32) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::with_capacity(HEADER_LEN + raw.len());
    append_payload(&mut out, raw, level)?;
    Ok(out)
}

thread_local! {
    /// One zstd context per thread and level, reused across blobs.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `raw` onto the end of `out`; returns false (leaving `out` as it
/// was) if that does not save at least 2%.
fn append_compressed(out: &mut Vec<u8>, raw: &[u8], level: i32) -> bool {
    let start = out.len();
    // Room for the compressed form only up to the size worth keeping.
    let budget = raw.len() - raw.len() / 50;
    out.reserve(budget);
    let written = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        let (_, c) = slot.as_mut()?;
        let spare = &mut out.spare_capacity_mut()[..budget];
        // SAFETY: zstd only writes into the spare capacity and reports how
        // much it wrote; those bytes are initialised before `set_len`.
        let spare = unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        c.compress_to_buffer(raw, spare).ok()
    });
    match written {
        Some(n) if n < budget => {
            // SAFETY: zstd initialised the first `n` bytes of the spare capacity.
            unsafe { out.set_len(start + n) };
            true
        }
        _ => false,
    }
}

/// Appends the envelope of `raw` to `out` (see [`seal_payload`]); appends
/// nothing and refuses an input of 4 GiB or more.
pub fn append_payload(out: &mut Vec<u8>, raw: &[u8], level: i32) -> Result<(), FormatError> {
    let raw_len = u32::try_from(raw.len()).map_err(|_| FormatError::OverLimit {
        what: "envelope",
        declared: raw.len() as u64,
        limit: u32::MAX as u64,
    })?;
    let header_at = out.len();
    out.push(ENVELOPE_ZSTD);
    out.extend_from_slice(&raw_len.to_le_bytes());
    if raw.len() >= MIN_COMPRESS_LEN && looks_compressible(raw) && append_compressed(out, raw, level) {
        return Ok(());
    }
    out[header_at] = ENVELOPE_STORED;
    out.extend_from_slice(raw);
    Ok(())
}

fn looks_compressible(raw: &[u8]) -> bool {
    if raw.len() <= 2 * SAMPLE_LEN {
        return true;
    }
    // Slices spread over the input: a chunk of a mixed file (an archive with
    // text and media, say) is worth compressing if any part of it is.
    const SLICES: usize = 4;
    const SLICE_LEN: usize = SAMPLE_LEN / SLICES;
    (0..SLICES).any(|i| {
        let start = raw.len() * (2 * i + 1) / (2 * SLICES) - SLICE_LEN / 2;
        let slice = &raw[start..start + SLICE_LEN];
        zstd::bulk::compress(slice, 1).map_or(true, |c| c.len() < SLICE_LEN * 9 / 10)
    })
}

/// Unwraps an envelope. The declared length is checked against `max_len`
/// before anything is allocated, and decompression can never produce more.
pub fn open_payload(env: &[u8], max_len: u32) -> Result<Vec<u8>, FormatError> {
    open_payload_owned(env.to_vec(), max_len)
}

/// Like [`open_payload`], reusing the envelope's buffer for stored payloads.
pub fn open_payload_owned(mut env: Vec<u8>, max_len: u32) -> Result<Vec<u8>, FormatError> {
    const WHAT: &str = "envelope";
    if env.len() < HEADER_LEN {
        return Err(FormatError::Truncated { what: WHAT });
    }
    let raw_len = u32::from_le_bytes(env[1..5].try_into().expect("4 bytes"));
    if raw_len > max_len {
        return Err(FormatError::OverLimit { what: WHAT, declared: raw_len as u64, limit: max_len as u64 });
    }
    match env[0] {
        ENVELOPE_STORED => {
            if env.len() - HEADER_LEN != raw_len as usize {
                return Err(FormatError::Invalid { what: WHAT, reason: "length does not match" });
            }
            env.drain(..HEADER_LEN);
            Ok(env)
        }
        ENVELOPE_ZSTD => {
            // At least one frame (format.md §8); zstd itself reads no input as no output.
            if env.len() == HEADER_LEN {
                return Err(FormatError::Invalid { what: WHAT, reason: "zstd payload has no frame" });
            }
            let out =
                zstd::bulk::decompress(&env[HEADER_LEN..], raw_len as usize).map_err(|_| FormatError::Invalid {
                    what: WHAT,
                    reason: "zstd payload is corrupt or expands beyond its declared length",
                })?;
            if out.len() != raw_len as usize {
                return Err(FormatError::Invalid { what: WHAT, reason: "length does not match" });
            }
            Ok(out)
        }
        _ => Err(FormatError::Invalid { what: WHAT, reason: "unknown compression" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compressible_data_is_compressed() {
        let raw = vec![7u8; 1 << 20];
        let env = seal_payload(&raw, 3).unwrap();
        assert_eq!(env[0], ENVELOPE_ZSTD);
        assert!(env.len() < 10_000);
        assert_eq!(open_payload(&env, 1 << 20).unwrap(), raw);
    }

    #[test]
    fn random_data_is_stored() {
        let raw: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let mut rnd = vec![0u8; 300_000];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut rnd);
        assert_eq!(seal_payload(&rnd, 3).unwrap()[0], ENVELOPE_STORED);
        assert_eq!(open_payload(&seal_payload(&raw, 3).unwrap(), u32::MAX).unwrap(), raw);
    }

    #[test]
    fn declared_length_is_capped_before_decompression() {
        let env = seal_payload(&vec![0u8; 100_000], 3).unwrap();
        assert!(open_payload(&env, 99_999).is_err());
    }

    /// A zstd frame of `expands_to` zero bytes behind a header declaring `declared`.
    fn bomb(declared: u32, expands_to: usize) -> Vec<u8> {
        let mut env = vec![ENVELOPE_ZSTD];
        env.extend_from_slice(&declared.to_le_bytes());
        env.extend_from_slice(&zstd::bulk::compress(&vec![0u8; expands_to], 3).unwrap());
        env
    }

    #[test]
    fn a_small_frame_declaring_a_large_length_is_refused_before_decompressing() {
        let env = bomb(64 << 20, 64 << 20);
        assert!(env.len() < 8 << 10);
        let cap = crate::format::ObjectKind::Snapshot.plain_cap(env.len());
        match open_payload(&env, cap) {
            Err(FormatError::OverLimit { declared, limit, .. }) => {
                assert_eq!((declared, limit), (64 << 20, crate::format::MAX_SNAPSHOT_LEN as u64));
            }
            other => panic!("expected OverLimit, got {other:?}"),
        }
    }

    /// An envelope holding `payload` as zstd data for `raw_len` bytes.
    fn zstd_envelope(raw_len: usize, payload: &[u8]) -> Vec<u8> {
        let mut env = vec![ENVELOPE_ZSTD];
        env.extend_from_slice(&(raw_len as u32).to_le_bytes());
        env.extend_from_slice(payload);
        env
    }

    /// A skippable frame (RFC 8878 §3.1.2) carrying `data`.
    fn skippable_frame(magic_low: u8, data: &[u8]) -> Vec<u8> {
        let mut f = (0x184D_2A50u32 | u32::from(magic_low & 0xF)).to_le_bytes().to_vec();
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(data);
        f
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i / 1000) as u8).collect()
    }

    #[test]
    fn several_zstd_frames_are_one_payload() {
        let (a, b) = (sample(3000), sample(5000));
        let mut payload = zstd::bulk::compress(&a, 3).unwrap();
        payload.extend(zstd::bulk::compress(&b, 1).unwrap());
        let env = zstd_envelope(a.len() + b.len(), &payload);
        assert_eq!(open_payload(&env, 1 << 20).unwrap(), [a, b].concat());
    }

    #[test]
    fn skippable_zstd_frames_are_skipped() {
        let raw = sample(4000);
        let mut payload = skippable_frame(0, b"ignored");
        payload.extend(zstd::bulk::compress(&raw, 3).unwrap());
        payload.extend(skippable_frame(0xF, b""));
        let env = zstd_envelope(raw.len(), &payload);
        assert_eq!(open_payload(&env, 1 << 20).unwrap(), raw);
    }

    #[test]
    fn a_payload_of_only_skippable_frames_is_an_empty_plaintext() {
        let env = zstd_envelope(0, &skippable_frame(3, b"nothing"));
        assert_eq!(open_payload(&env, 1 << 20).unwrap(), Vec::<u8>::new());
        let env = zstd_envelope(1, &skippable_frame(3, b"nothing"));
        assert!(open_payload(&env, 1 << 20).is_err(), "raw_len must still match");
    }

    #[test]
    fn a_zstd_frame_without_content_size_is_accepted() {
        let raw = sample(70_000);
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false)).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true)).unwrap();
        let payload = c.compress(&raw).unwrap();
        assert!(matches!(zstd::zstd_safe::get_frame_content_size(&payload), Ok(None)), "no size in the frame header");
        assert_eq!(open_payload(&zstd_envelope(raw.len(), &payload), 1 << 20).unwrap(), raw);
        // Without a declared size, the cap still holds: a frame that yields
        // more than raw_len is refused.
        assert!(open_payload(&zstd_envelope(raw.len() - 1, &payload), 1 << 20).is_err());
    }

    #[test]
    fn bytes_after_the_last_zstd_frame_are_rejected() {
        let raw = sample(4000);
        let frame = zstd::bulk::compress(&raw, 3).unwrap();
        for trailing in [&b"\0"[..], b"garbage", &[0x28, 0xB5, 0x2F, 0xFD][..], &frame[..frame.len() / 2]] {
            let env = zstd_envelope(raw.len(), &[&frame[..], trailing].concat());
            assert!(open_payload(&env, 1 << 20).is_err(), "trailing {trailing:?} accepted");
        }
    }

    #[test]
    fn a_frame_expanding_beyond_its_declared_length_stops_at_it() {
        // Declares 1 MiB, holds 8 MiB: decompression never writes past 1 MiB.
        let env = bomb(1 << 20, 8 << 20);
        assert!(open_payload(&env, 1 << 20).is_err());
    }

    #[test]
    fn index_caps_follow_the_stored_size_and_admit_real_index_objects() {
        use crate::format::index::{IndexFile, IndexedPack};
        use crate::format::pack::BlobEntry;
        use crate::format::{BlobType, Id, ObjectKind};
        // A real index object: random ids compress little.
        let packs = (0..300)
            .map(|_| IndexedPack {
                id: Id::random(),
                size: 1 << 30,
                blobs: (0..100u32)
                    .map(|b| BlobEntry {
                        blob_type: BlobType::Data,
                        id: Id::random(),
                        offset: b * 1000,
                        length: 1000,
                        raw_len: 1000,
                    })
                    .collect(),
            })
            .collect();
        let raw = IndexFile { supersedes: vec![Id::random()], packs }.encode();
        let env = seal_payload(&raw, 19).unwrap();
        assert!(raw.len() > 1 << 20, "larger than the floor of the cap");
        assert_eq!(open_payload(&env, ObjectKind::Index.plain_cap(env.len())).unwrap(), raw);
        // 32 KiB that would expand to 1 GiB may expand to 1 MiB at most.
        assert_eq!(ObjectKind::Index.plain_cap(32 << 10), 1 << 20);
        assert_eq!(ObjectKind::Index.plain_cap(usize::MAX), crate::format::MAX_OBJECT_LEN);
    }

    #[test]
    fn a_truncated_zstd_frame_is_rejected() {
        let raw = sample(4000);
        let frame = zstd::bulk::compress(&raw, 3).unwrap();
        assert!(open_payload(&zstd_envelope(raw.len(), &frame[..frame.len() - 1]), 1 << 20).is_err());
        assert!(open_payload(&zstd_envelope(0, &[]), 1 << 20).is_err(), "no frame at all");
    }

    #[test]
    fn a_zstd_frame_with_a_wrong_checksum_is_rejected() {
        let raw = sample(4000);
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true)).unwrap();
        let mut frame = c.compress(&raw).unwrap();
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(open_payload(&zstd_envelope(raw.len(), &frame), 1 << 20).is_err());
    }

    #[test]
    fn a_zstd_frame_that_needs_a_dictionary_is_rejected() {
        let raw = sample(4000);
        let mut frame = zstd::bulk::compress(&raw, 3).unwrap();
        // Give the frame header a one-byte dictionary id (RFC 8878 §3.1.1.1.1):
        // the frame is otherwise intact, but names a dictionary we do not have.
        let descriptor = frame[4];
        assert_eq!(descriptor & 3, 0, "written without a dictionary id");
        frame[4] = descriptor | 1;
        let single_segment = descriptor & 0x20 != 0;
        frame.insert(if single_segment { 5 } else { 6 }, 7);
        assert!(open_payload(&zstd_envelope(raw.len(), &frame), 1 << 20).is_err());
    }

    #[test]
    fn an_input_over_4_gib_is_refused_not_a_panic() {
        // No 4 GiB buffer: a slice of that length over a mapping that is
        // never touched (reserved address space, zero pages on demand).
        let len = u32::MAX as usize + 1;
        let layout = std::alloc::Layout::from_size_align(len, 1).unwrap();
        // SAFETY: alloc_zeroed returns `len` initialised (zero) bytes or null.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "the test needs 4 GiB of address space");
        let raw = unsafe { std::slice::from_raw_parts(ptr, len) };
        let mut out = vec![9u8];
        let result = append_payload(&mut out, raw, 3);
        unsafe { std::alloc::dealloc(ptr, layout) };
        assert!(matches!(result, Err(FormatError::OverLimit { declared, .. }) if declared == len as u64), "{result:?}");
        assert_eq!(out, vec![9u8], "nothing appended");
    }

    proptest! {
        #[test]
        fn round_trip(raw in proptest::collection::vec(any::<u8>(), 0..5000), level in 1i32..5) {
            let env = seal_payload(&raw, level).unwrap();
            prop_assert_eq!(open_payload(&env, raw.len() as u32).unwrap(), raw);
        }

        #[test]
        fn arbitrary_bytes_never_panic(env in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open_payload(&env, 1 << 20);
        }
    }
}
