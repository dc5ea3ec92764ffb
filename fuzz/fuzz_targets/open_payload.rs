//! The envelope decoder (decompression with a declared-length cap) and the
//! seal opener on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tstor::crypto::SealKey;
use tstor::format::envelope::open_payload;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = open_payload(data, 1 << 20) {
        assert!(out.len() <= 1 << 20);
    }
    let key = SealKey::from_parts([1; 32], [2; 32]);
    assert!(key.open(b"ad", data).is_err() || data.len() >= 64);
});
