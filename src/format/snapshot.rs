//! Snapshot objects: when, from where and of what a snapshot was taken, its
//! root tree, its parent, a summary of what the run did and, for a snapshot
//! made by `rewrite` or `repair snapshots`, the snapshot it was made from.

use super::codec::{Decoder, Encoder};
use super::{FormatError, Id};

/// The version of a snapshot that records no original: the bytes every
/// earlier writer produced.
const SNAPSHOT_VERSION: u8 = 1;
/// The version of a snapshot made from another (format.md §16): version 1's
/// fields, then the original's id.
const SNAPSHOT_VERSION_WITH_ORIGINAL: u8 = 2;

/// What a snapshot run did. Counts are of regular files unless named otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub other_nodes: u64,
    /// Files and directories that could not be read and are missing from the snapshot.
    pub errors: u64,
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    /// Bytes read from disk.
    pub bytes_read: u64,
    /// Plaintext bytes of the blobs this run added.
    pub bytes_added: u64,
    /// Bytes this run added to the repository (sealed, compressed).
    pub bytes_stored: u64,
    /// Total size of the regular files in the snapshot.
    pub total_bytes: u64,
    pub start_ns: i64,
    pub end_ns: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub time_ns: i64,
    pub tree: Id,
    /// Absolute source paths, as raw bytes.
    pub paths: Vec<Vec<u8>>,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub tags: Vec<String>,
    pub parent: Option<Id>,
    pub program_version: String,
    pub summary: Summary,
    /// The snapshot this one was made from: rewritten from (`rewrite`,
    /// `repair snapshots`) or copied from another repository (`copy`); the
    /// first original of a chain, kept through later rewrites and copies.
    /// `None` for a snapshot taken here.
    pub original: Option<Id>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let version = if self.original.is_some() { SNAPSHOT_VERSION_WITH_ORIGINAL } else { SNAPSHOT_VERSION };
        let mut e = Encoder::new(version);
        e.i64(self.time_ns).id(&self.tree).count(self.paths.len());
        for p in &self.paths {
            e.bytes(p);
        }
        e.str(&self.hostname).str(&self.username).u32(self.uid).u32(self.gid);
        e.count(self.tags.len());
        for t in &self.tags {
            e.str(t);
        }
        e.opt_id(self.parent.as_ref()).str(&self.program_version);
        let s = &self.summary;
        for v in [
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs,
            s.other_nodes,
            s.errors,
            s.data_blobs_added,
            s.tree_blobs_added,
            s.bytes_read,
            s.bytes_added,
            s.bytes_stored,
            s.total_bytes,
        ] {
            e.u64(v);
        }
        e.i64(s.start_ns).i64(s.end_ns);
        if let Some(original) = &self.original {
            e.id(original);
        }
        e.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<Snapshot, FormatError> {
        let version = match buf.first() {
            Some(&SNAPSHOT_VERSION_WITH_ORIGINAL) => SNAPSHOT_VERSION_WITH_ORIGINAL,
            _ => SNAPSHOT_VERSION,
        };
        let mut d = Decoder::new(buf, "snapshot", version)?;
        let time_ns = d.i64()?;
        let tree = d.id()?;
        let n = d.count(4)?;
        let paths = (0..n).map(|_| d.bytes().map(<[u8]>::to_vec)).collect::<Result<_, _>>()?;
        let hostname = d.string()?;
        let username = d.string()?;
        let uid = d.u32()?;
        let gid = d.u32()?;
        let n = d.count(4)?;
        let tags = (0..n).map(|_| d.string()).collect::<Result<_, _>>()?;
        let parent = d.opt_id()?;
        let program_version = d.string()?;
        let mut s = Summary::default();
        for v in [
            &mut s.files_new,
            &mut s.files_changed,
            &mut s.files_unchanged,
            &mut s.dirs,
            &mut s.other_nodes,
            &mut s.errors,
            &mut s.data_blobs_added,
            &mut s.tree_blobs_added,
            &mut s.bytes_read,
            &mut s.bytes_added,
            &mut s.bytes_stored,
            &mut s.total_bytes,
        ] {
            *v = d.u64()?;
        }
        s.start_ns = d.i64()?;
        s.end_ns = d.i64()?;
        let original = if version == SNAPSHOT_VERSION_WITH_ORIGINAL { Some(d.id()?) } else { None };
        d.finish()?;
        Ok(Snapshot {
            time_ns,
            tree,
            paths,
            hostname,
            username,
            uid,
            gid,
            tags,
            parent,
            program_version,
            summary: s,
            original,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(t in any::<i64>(), tree in any::<[u8; 32]>(), paths in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..10), 0..3), host in ".{0,10}", tags in proptest::collection::vec("[a-z]{1,5}", 0..3), parent in proptest::option::of(any::<[u8; 32]>()), original in proptest::option::of(any::<[u8; 32]>()), n in any::<u64>()) {
            let s = Snapshot {
                time_ns: t, tree: Id(tree), paths, hostname: host, username: "u".into(), uid: 1, gid: 2, tags,
                parent: parent.map(Id), program_version: "0.1.0".into(),
                summary: Summary { files_new: n, bytes_added: n / 2, end_ns: -1, ..Default::default() },
                original: original.map(Id),
            };
            prop_assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Snapshot::decode(&buf);
        }
    }

    fn sample(original: Option<Id>) -> Snapshot {
        Snapshot {
            time_ns: 5,
            tree: Id([1; 32]),
            paths: vec![b"/a".to_vec()],
            hostname: "h".into(),
            username: "u".into(),
            uid: 1,
            gid: 2,
            tags: vec![],
            parent: None,
            program_version: "0.1.0".into(),
            summary: Summary::default(),
            original,
        }
    }

    #[test]
    fn a_snapshot_without_an_original_keeps_version_1_bytes() {
        let plain = sample(None).encode();
        assert_eq!(plain[0], 1);
        let with = sample(Some(Id([7; 32]))).encode();
        assert_eq!(with[0], 2);
        assert_eq!(&with[1..plain.len()], &plain[1..], "version 2 is version 1's fields, then the original");
        assert_eq!(&with[plain.len()..], &[7u8; 32]);
        // A version-1 snapshot may not carry an original, nor a version 2 lack one.
        let mut v1_with_tail = with.clone();
        v1_with_tail[0] = 1;
        assert!(Snapshot::decode(&v1_with_tail).is_err());
        let mut v2_without = plain.clone();
        v2_without[0] = 2;
        assert!(Snapshot::decode(&v2_without).is_err());
    }
}
