//! Pack trailers and headers on arbitrary bytes: lengths are bounded before
//! use, and accepted headers tile the pack exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tstor::format::pack::{decode_header, header_offset, TRAILER_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() >= TRAILER_LEN + 8 {
        let pack_len = u64::from_le_bytes(data[..8].try_into().unwrap());
        let trailer: [u8; TRAILER_LEN] = data[8..8 + TRAILER_LEN].try_into().unwrap();
        if let Ok(start) = header_offset(pack_len, &trailer) {
            assert!(start < pack_len);
        }
    }
    let end = data.first().copied().unwrap_or(0) as u64 * 97;
    if let Ok(entries) = decode_header(data, end) {
        let total: u64 = entries.iter().map(|e| e.length as u64).sum();
        assert_eq!(total, end);
    }
});
