//! Object names for storage that must name what it holds (Telegram documents;
//! docs/format.md §23.4). A name is a deterministic, invertible, keyed encoding
//! of a domain byte (the object kind, or the head) and a 32-byte id, written
//! as 98 lowercase hex digits that look random to anyone without the key:
//!
//! ```text
//! p    = domain ‖ id                                   33 bytes
//! siv  = blake3::keyed_hash(K_mac, p)[0..16]           synthetic IV
//! name = hex(siv ‖ (p ⊕ blake3 keyed XOF(K_enc, siv)[0..33]))
//! ```
//!
//! Decoding recomputes the key stream from the synthetic IV, recovers `p` and
//! checks the synthetic IV in constant time: a name made under another key,
//! or altered in any digit, does not decode. A repository names its objects
//! under a key pair derived from its `K_names` subkey, except the config and
//! its key slots, which must be found before that key exists: they are named
//! under a public key pair that anyone with this code can derive.

#[cfg(test)]
use crate::backend::names::{is_name_shaped, NAME_HEX_LEN};
use crate::backend::names::{name_from_hex, name_to_hex, Named, ObjectNames, NAME_LEN};
use crate::format::head::HEAD_DOMAIN;
use crate::format::{Id, ObjectKind};

const SIV_LEN: usize = 16;
const PLAIN_LEN: usize = 1 + 32;
const _: () = assert!(NAME_LEN == SIV_LEN + PLAIN_LEN);

const CTX_NAME_MAC: &str = "tstor 2026-11-24 object name mac key";
const CTX_NAME_ENC: &str = "tstor 2026-11-24 object name encryption key";
const CTX_PUBLIC_NAMES: &str = "tstor 2026-11-24 public object names";

/// The two keys of the name construction.
#[derive(Clone)]
pub struct NameKey {
    mac: [u8; 32],
    enc: [u8; 32],
}

impl NameKey {
    /// The key pair derived from a 32-byte secret (a repository's `K_names`).
    pub fn derive(secret: &[u8; 32]) -> NameKey {
        NameKey { mac: blake3::derive_key(CTX_NAME_MAC, secret), enc: blake3::derive_key(CTX_NAME_ENC, secret) }
    }

    /// The key pair everyone has: derived from a secret that is itself a
    /// constant (`blake3::derive_key(CTX_PUBLIC_NAMES, "")`).
    pub fn public() -> NameKey {
        NameKey::derive(&blake3::derive_key(CTX_PUBLIC_NAMES, b""))
    }

    fn synthetic_iv(&self, plain: &[u8; PLAIN_LEN]) -> [u8; SIV_LEN] {
        let mut siv = [0u8; SIV_LEN];
        siv.copy_from_slice(&blake3::keyed_hash(&self.mac, plain).as_bytes()[..SIV_LEN]);
        siv
    }

    fn key_stream(&self, siv: &[u8]) -> [u8; PLAIN_LEN] {
        let mut stream = [0u8; PLAIN_LEN];
        blake3::Hasher::new_keyed(&self.enc).update(siv).finalize_xof().fill(&mut stream);
        stream
    }

    /// The name bytes of (`domain`, `id`).
    pub fn seal(&self, domain: u8, id: &Id) -> [u8; NAME_LEN] {
        let mut plain = [0u8; PLAIN_LEN];
        plain[0] = domain;
        plain[1..].copy_from_slice(&id.0);
        let siv = self.synthetic_iv(&plain);
        let stream = self.key_stream(&siv);
        let mut name = [0u8; NAME_LEN];
        name[..SIV_LEN].copy_from_slice(&siv);
        for (out, (p, k)) in name[SIV_LEN..].iter_mut().zip(plain.iter().zip(stream.iter())) {
            *out = p ^ k;
        }
        name
    }

    /// The (domain, id) a name stands for, if it was made under this key.
    pub fn open(&self, name: &[u8; NAME_LEN]) -> Option<(u8, Id)> {
        let (siv, sealed) = name.split_at(SIV_LEN);
        let stream = self.key_stream(siv);
        let mut plain = [0u8; PLAIN_LEN];
        for (out, (c, k)) in plain.iter_mut().zip(sealed.iter().zip(stream.iter())) {
            *out = c ^ k;
        }
        if !constant_time_eq(&self.synthetic_iv(&plain), siv) {
            return None;
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&plain[1..]);
        Some((plain[0], Id(id)))
    }
}

/// Whether two byte strings are equal, in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

fn domain_of(named: Named) -> (u8, Id) {
    match named {
        Named::Object(kind, id) => (kind.tag(), id),
        Named::Head(id) => (HEAD_DOMAIN, id),
    }
}

fn named_of(domain: u8, id: Id) -> Option<Named> {
    if domain == HEAD_DOMAIN {
        return Some(Named::Head(id));
    }
    ObjectKind::ALL.into_iter().find(|k| k.tag() == domain).map(|kind| Named::Object(kind, id))
}

/// Whether an object must be found before the repository keys exist.
fn read_before_keys(named: Named) -> bool {
    matches!(named, Named::Object(ObjectKind::Config | ObjectKind::Key, _))
}

/// The names of one repository's objects and heads, as given to a backend.
#[derive(Clone)]
pub struct ObjectNameCodec {
    public: NameKey,
    /// The repository's key pair; `None` names everything under the public key.
    repository: Option<NameKey>,
}

impl ObjectNameCodec {
    /// Names everything under the public key: what a backend uses before a
    /// repository gives it its names, or when it is used on its own. Under it
    /// a repository's config and key slots can be found.
    pub fn public() -> ObjectNameCodec {
        ObjectNameCodec { public: NameKey::public(), repository: None }
    }

    /// The names of the repository whose `K_names` subkey is `names`: config
    /// and key slots under the public key, everything else under its own.
    pub fn for_repository(names: &[u8; 32]) -> ObjectNameCodec {
        ObjectNameCodec { public: NameKey::public(), repository: Some(NameKey::derive(names)) }
    }

    fn key_for(&self, named: Named) -> &NameKey {
        match &self.repository {
            Some(key) if !read_before_keys(named) => key,
            _ => &self.public,
        }
    }
}

impl ObjectNames for ObjectNameCodec {
    fn name(&self, named: Named) -> String {
        let (domain, id) = domain_of(named);
        name_to_hex(&self.key_for(named).seal(domain, &id))
    }

    fn parse(&self, name: &str) -> Option<Named> {
        let bytes = name_from_hex(name)?;
        std::iter::once(&self.public).chain(self.repository.as_ref()).find_map(|key| {
            let (domain, id) = key.open(&bytes)?;
            let named = named_of(domain, id)?;
            // Each kind has one key: a pack under the public key is not this repository's.
            std::ptr::eq(self.key_for(named), key).then_some(named)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn every_named(id: Id) -> Vec<Named> {
        ObjectKind::ALL.into_iter().map(|k| Named::Object(k, id)).chain([Named::Head(id)]).collect()
    }

    fn repository(b: u8) -> ObjectNameCodec {
        ObjectNameCodec::for_repository(&[b; 32])
    }

    proptest! {
        #[test]
        fn names_round_trip_for_every_kind(id in any::<[u8; 32]>(), secret in any::<[u8; 32]>()) {
            let codec = ObjectNameCodec::for_repository(&secret);
            for named in every_named(Id(id)) {
                let name = codec.name(named);
                prop_assert_eq!(name.len(), NAME_HEX_LEN);
                prop_assert_eq!(codec.parse(&name), Some(named));
            }
        }

        #[test]
        fn a_name_under_another_key_does_not_decode(id in any::<[u8; 32]>(), a in any::<u8>(), b in any::<u8>()) {
            prop_assume!(a != b);
            for named in every_named(Id(id)).into_iter().filter(|n| !read_before_keys(*n)) {
                prop_assert_eq!(repository(b).parse(&repository(a).name(named)), None);
                prop_assert_eq!(ObjectNameCodec::public().parse(&repository(a).name(named)), None);
            }
        }

        #[test]
        fn any_changed_digit_makes_a_name_fail(id in any::<[u8; 32]>(), pos in 0..NAME_HEX_LEN, to in 0u8..16) {
            let codec = repository(7);
            for named in every_named(Id(id)) {
                let name = codec.name(named);
                let digit = char::from_digit(to as u32, 16).unwrap();
                prop_assume!(name.as_bytes()[pos] != digit as u8);
                let mut changed = name.clone().into_bytes();
                changed[pos] = digit as u8;
                prop_assert_eq!(codec.parse(&String::from_utf8(changed).unwrap()), None);
            }
        }

        #[test]
        fn arbitrary_names_never_panic(s in "\\PC{0,120}", hex in "[0-9a-f]{98}") {
            prop_assert!(repository(1).parse(&s).is_none());
            prop_assert_eq!(repository(1).parse(&hex), None);
        }
    }

    #[test]
    fn every_digit_of_every_name_matters() {
        let codec = repository(3);
        for named in every_named(Id([0x5a; 32])) {
            let name = codec.name(named);
            for pos in 0..NAME_HEX_LEN {
                for digit in "0123456789abcdef".bytes().filter(|&d| d != name.as_bytes()[pos]) {
                    let mut changed = name.clone().into_bytes();
                    changed[pos] = digit;
                    assert_eq!(codec.parse(&String::from_utf8(changed).unwrap()), None, "{named:?} at {pos}");
                }
            }
        }
    }

    #[test]
    fn config_and_key_slots_are_found_without_the_repository_keys() {
        let public = ObjectNameCodec::public();
        let codec = repository(9);
        for kind in [ObjectKind::Config, ObjectKind::Key] {
            let named = Named::Object(kind, Id([4; 32]));
            assert_eq!(codec.name(named), public.name(named));
            assert_eq!(public.parse(&codec.name(named)), Some(named));
        }
        // A pack named under the public key is no pack of a repository.
        let pack = Named::Object(ObjectKind::Pack, Id([4; 32]));
        assert_eq!(codec.parse(&public.name(pack)), None);
        assert_eq!(public.parse(&public.name(pack)), Some(pack));
    }

    #[test]
    fn names_of_one_kind_share_no_structure() {
        let codec = repository(11);
        for named in every_named(Id::ZERO) {
            let names: Vec<Vec<u8>> = (0..64u8)
                .map(|i| {
                    let mut id = [0u8; 32];
                    id[31] = i;
                    let n = match named {
                        Named::Object(kind, _) => Named::Object(kind, Id(id)),
                        Named::Head(_) => Named::Head(Id(id)),
                    };
                    codec.name(n).into_bytes()
                })
                .collect();
            for pos in 0..NAME_HEX_LEN {
                assert!(names.iter().any(|n| n[pos] != names[0][pos]), "{named:?}: digit {pos} is always the same");
            }
        }
        // The same id under two kinds gives unrelated names.
        let a = codec.name(Named::Object(ObjectKind::Pack, Id([1; 32])));
        let b = codec.name(Named::Object(ObjectKind::Index, Id([1; 32])));
        assert!(a.bytes().zip(b.bytes()).filter(|(x, y)| x == y).count() < NAME_HEX_LEN / 4, "{a} {b}");
    }

    #[test]
    fn no_name_says_what_it_is() {
        let words = ["tstor", "config", "key", "pack", "index", "snapshot", "lock", "head"];
        for codec in [ObjectNameCodec::public(), repository(2)] {
            for i in 0..=255u8 {
                for named in every_named(Id([i; 32])) {
                    let name = codec.name(named);
                    assert!(words.iter().all(|w| !name.contains(w)), "{name}");
                }
            }
        }
    }

    /// The shape rules themselves are the backend's (`backend::names`);
    /// here: what the codec writes has that shape and reads back.
    #[test]
    fn encoded_names_have_the_backends_name_shape() {
        let name = repository(5).name(Named::Head(Id([8; 32])));
        assert!(is_name_shaped(&name));
        assert_eq!(name_from_hex(&name).map(|b| name_to_hex(&b)), Some(name));
    }
}
