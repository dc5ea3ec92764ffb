//! Every object decoder, and the Telegram head document's, on arbitrary
//! bytes: none may panic, allocate without bound or accept trailing garbage;
//! whatever decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tstor::backend::telegram::head;
use tstor::format::config::Config;
use tstor::format::index::IndexFile;
use tstor::format::key::{KeyPayload, KeySlot};
use tstor::format::lock::Lock;
use tstor::format::snapshot::Snapshot;
use tstor::format::tree::Tree;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data) {
        assert_eq!(t.encode(), data);
    }
    if let Ok(i) = IndexFile::decode(data) {
        assert_eq!(i.encode(), data);
    }
    if let Ok(s) = Snapshot::decode(data) {
        assert_eq!(s.encode(), data);
    }
    if let Ok(c) = Config::decode(data) {
        assert_eq!(c.encode(), data);
    }
    if let Ok(k) = KeySlot::decode(data) {
        assert_eq!(k.encode(), data);
    }
    if let Ok(k) = KeyPayload::decode(data) {
        assert_eq!(k.encode(), data);
    }
    if let Ok(l) = Lock::decode(data) {
        assert_eq!(l.encode(), data);
    }
    if let Ok((placement, sealed)) = head::decode(data) {
        assert_eq!(head::encode(&placement, sealed), data);
    }
});
