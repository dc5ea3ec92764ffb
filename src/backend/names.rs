//! The naming contract of the storage seam, for a backend that must name
//! what it stores (Telegram documents; docs/format.md §23.4): what a name
//! stands for ([`Named`]), the [`ObjectNames`] the repository layer gives the
//! backend to make and read names, and the shape every name has (98
//! lowercase hex digits), which is all the backend itself knows of them. The
//! codec that makes names from the repository's keys lives with the keys
//! (`crate::crypto::names`).

use crate::format::{Id, ObjectKind};

/// Bytes of a name: a 16-byte synthetic IV and the encrypted domain and id.
pub const NAME_LEN: usize = 16 + 1 + 32;
/// Characters of a name as stored: lowercase hex of its bytes.
pub const NAME_HEX_LEN: usize = 2 * NAME_LEN;

/// What a stored name stands for, to a backend that names what it stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Named {
    Object(ObjectKind, Id),
    /// A head (docs/format.md §23), by the BLAKE3 hash of its stored bytes.
    Head(Id),
}

/// Turns what a backend stores into names and back (docs/format.md §23.4).
/// The repository layer makes it from its keys and gives it to the backend,
/// which never sees the keys themselves.
pub trait ObjectNames: Send + Sync {
    /// The stored name of `named`; the same every time.
    fn name(&self, named: Named) -> String;

    /// What a stored name stands for; `None` for any name this repository
    /// did not make (another repository's, anything else, or damaged).
    fn parse(&self, name: &str) -> Option<Named>;
}

/// The stored form of name bytes.
pub fn name_to_hex(name: &[u8; NAME_LEN]) -> String {
    hex::encode(name)
}

/// The bytes of a stored name: exactly [`NAME_HEX_LEN`] lowercase hex digits,
/// so that every name has one spelling.
pub fn name_from_hex(name: &str) -> Option<[u8; NAME_LEN]> {
    if name.len() != NAME_HEX_LEN || !name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; NAME_LEN];
    hex::decode_to_slice(name, &mut out).ok()?;
    Some(out)
}

/// Whether a stored name has the shape of an object name (it may still stand
/// for nothing under the names at hand).
pub fn is_name_shaped(name: &str) -> bool {
    name_from_hex(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_names_of_the_right_length_are_names() {
        let name = name_to_hex(&[0xa5; NAME_LEN]);
        assert_eq!(name.len(), NAME_HEX_LEN);
        assert!(is_name_shaped(&name));
        assert!(!is_name_shaped(&name.to_ascii_uppercase()));
        assert!(!is_name_shaped(&name[1..]));
        assert!(!is_name_shaped(&format!("{name}0")));
        assert!(!is_name_shaped("holiday.jpg"));
        assert_eq!(name_from_hex(&name).map(|b| name_to_hex(&b)), Some(name));
    }
}
