//! Tree blobs: one directory each, as a list of nodes sorted by raw name bytes,
//! or, for a directory too large for one blob, a part list naming the tree
//! blobs its entries are split across (format.md §15.1). Names are raw bytes
//! (not necessarily UTF-8); which names are safe to create on disk is decided
//! by [`validate_name`].

use super::codec::{Decoder, Encoder};
use super::{FormatError, Id};

const TREE_VERSION: u8 = 1;
/// Version byte of a part list: a tree blob that names the parts of a split
/// directory instead of holding its entries.
const PART_LIST_VERSION: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDevice = 6,
    BlockDevice = 7,
}

impl NodeKind {
    fn from_tag(t: u8) -> Option<NodeKind> {
        Some(match t {
            1 => NodeKind::File,
            2 => NodeKind::Dir,
            3 => NodeKind::Symlink,
            4 => NodeKind::Fifo,
            5 => NodeKind::Socket,
            6 => NodeKind::CharDevice,
            7 => NodeKind::BlockDevice,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
            NodeKind::CharDevice => "chardev",
            NodeKind::BlockDevice => "blockdev",
        }
    }
}

/// One directory entry with the metadata needed to restore it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (mask 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// File size in bytes; 0 for anything but regular files.
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    /// Hard link count at backup time.
    pub links: u64,
    /// Device number for character and block devices.
    pub rdev: u64,
    pub symlink_target: Vec<u8>,
    /// Data blob ids, in file order (regular files only).
    pub content: Vec<Id>,
    /// Tree blob id (directories only).
    pub subtree: Option<Id>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Node {
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            symlink_target: Vec::new(),
            content: Vec::new(),
            subtree: None,
            xattrs: Vec::new(),
        }
    }

    /// The name for display: lossy UTF-8.
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// Fixed part of an encoded node: every field but the variable-length ones
/// (each of those contributes at least its 4-byte length or 1-byte flag).
const MIN_NODE_LEN: usize = 4 + 1 + 4 * 3 + 8 * 2 + 8 * 5 + 4 + 4 + 1 + 4;

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(TREE_VERSION);
        e.count(self.nodes.len());
        for n in &self.nodes {
            encode_node(&mut e, n);
        }
        e.finish()
    }

    /// Encodes the directory as tree blobs of at most `max_len` bytes each
    /// when it can: one blob if its whole encoding fits, otherwise the
    /// encodings of consecutive runs of its entries, in order, each filled
    /// up to `max_len` (format.md §15.1; the caller stores them and a part
    /// list naming them). A part holds at least one entry, so an entry whose
    /// own encoding is longer than `max_len` gives a part longer than it.
    pub fn encode_split(&self, max_len: usize) -> Vec<Vec<u8>> {
        const HEADER: usize = 1 + 4;
        let mut e = Encoder::new(TREE_VERSION);
        e.count(self.nodes.len());
        let mut ends = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            encode_node(&mut e, n);
            ends.push(e.len());
        }
        let whole = e.finish();
        if whole.len() <= max_len || self.nodes.len() < 2 {
            return vec![whole];
        }
        let mut parts = Vec::new();
        let (mut start, mut count) = (HEADER, 0usize);
        let mut flush = |start: usize, end: usize, count: usize| {
            let mut part = Vec::with_capacity(HEADER + end - start);
            part.push(TREE_VERSION);
            part.extend_from_slice(&(count as u32).to_le_bytes());
            part.extend_from_slice(&whole[start..end]);
            parts.push(part);
        };
        let mut prev_end = HEADER;
        for &end in &ends {
            if count > 0 && HEADER + end - start > max_len {
                flush(start, prev_end, count);
                start = prev_end;
                count = 0;
            }
            count += 1;
            prev_end = end;
        }
        flush(start, prev_end, count);
        parts
    }

    /// Decodes a tree: structure, and names strictly increasing (sorted, no
    /// repeats). Whether a name is safe on disk is checked by
    /// [`validate_name`] where it is used, so that one bad entry does not hide
    /// its siblings.
    pub fn decode(buf: &[u8]) -> Result<Tree, FormatError> {
        let mut d = Decoder::new(buf, "tree", TREE_VERSION)?;
        let count = d.count(MIN_NODE_LEN)?;
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let name = d.bytes()?.to_vec();
            let kind = NodeKind::from_tag(d.u8()?).ok_or_else(|| d.invalid("unknown node kind"))?;
            let mut n = Node::new(name, kind);
            n.mode = d.u32()?;
            n.uid = d.u32()?;
            n.gid = d.u32()?;
            n.mtime_ns = d.i64()?;
            n.ctime_ns = d.i64()?;
            n.size = d.u64()?;
            n.inode = d.u64()?;
            n.device = d.u64()?;
            n.links = d.u64()?;
            n.rdev = d.u64()?;
            n.symlink_target = d.bytes()?.to_vec();
            let blobs = d.count(32)?;
            n.content = (0..blobs).map(|_| d.id()).collect::<Result<_, _>>()?;
            n.subtree = d.opt_id()?;
            let xattrs = d.count(8)?;
            for _ in 0..xattrs {
                let k = d.bytes()?.to_vec();
                let v = d.bytes()?.to_vec();
                n.xattrs.push((k, v));
            }
            if kind == NodeKind::Dir && n.subtree.is_none() {
                return Err(d.invalid("directory without subtree"));
            }
            if kind != NodeKind::Dir && n.subtree.is_some() {
                return Err(d.invalid("subtree on a node that is not a directory"));
            }
            if kind != NodeKind::File && !n.content.is_empty() {
                return Err(d.invalid("content on a node that is not a file"));
            }
            check_node_fields(&n).map_err(|reason| d.invalid(reason))?;
            if nodes.last().is_some_and(|prev: &Node| prev.name >= n.name) {
                return Err(d.invalid("entries are not sorted by name, or a name repeats"));
            }
            nodes.push(n);
        }
        d.finish()?;
        Ok(Tree { nodes })
    }

    /// Sorts nodes by name, the order in which they are stored.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }

    /// Appends the next part of a split directory (format.md §15.1): a part
    /// holds at least one entry, and its first name follows the last name of
    /// the parts before it.
    pub fn append_part(&mut self, part: Tree) -> Result<(), &'static str> {
        let Some(first) = part.nodes.first() else {
            return Err("a part of a split directory is empty");
        };
        if self.nodes.last().is_some_and(|last| last.name >= first.name) {
            return Err("the parts of a split directory are not sorted by name, or a name repeats");
        }
        self.nodes.extend(part.nodes);
        Ok(())
    }
}

fn encode_node(e: &mut Encoder, n: &Node) {
    e.bytes(&n.name)
        .u8(n.kind as u8)
        .u32(n.mode)
        .u32(n.uid)
        .u32(n.gid)
        .i64(n.mtime_ns)
        .i64(n.ctime_ns)
        .u64(n.size)
        .u64(n.inode)
        .u64(n.device)
        .u64(n.links)
        .u64(n.rdev)
        .bytes(&n.symlink_target)
        .count(n.content.len());
    for id in &n.content {
        e.id(id);
    }
    e.opt_id(n.subtree.as_ref()).count(n.xattrs.len());
    for (k, v) in &n.xattrs {
        e.bytes(k).bytes(v);
    }
}

/// What one tree blob holds (format.md §15, §15.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeBlob {
    /// A directory's entries (version 1).
    Entries(Tree),
    /// The tree blobs a split directory's entries are stored in, in order
    /// (version 2); each is a version-1 tree.
    Parts(Vec<Id>),
}

/// Fewest parts a part list names: a directory that fits one blob is stored
/// as one.
pub const MIN_PARTS: usize = 2;

impl TreeBlob {
    /// Decodes a tree blob of either version.
    pub fn decode(buf: &[u8]) -> Result<TreeBlob, FormatError> {
        if buf.first() == Some(&PART_LIST_VERSION) {
            decode_part_list(buf).map(TreeBlob::Parts)
        } else {
            Tree::decode(buf).map(TreeBlob::Entries)
        }
    }
}

/// The part list of a directory split across the tree blobs `parts`.
pub fn encode_part_list(parts: &[Id]) -> Vec<u8> {
    let mut e = Encoder::new(PART_LIST_VERSION);
    e.count(parts.len());
    for id in parts {
        e.id(id);
    }
    e.finish()
}

fn decode_part_list(buf: &[u8]) -> Result<Vec<Id>, FormatError> {
    let mut d = Decoder::new(buf, "tree part list", PART_LIST_VERSION)?;
    let n = d.count(32)?;
    if n < MIN_PARTS {
        return Err(d.invalid("a part list names fewer than two parts"));
    }
    let parts = (0..n).map(|_| d.id()).collect::<Result<Vec<_>, _>>()?;
    d.finish()?;
    Ok(parts)
}

/// Permission bits a node's mode may have: rwx for owner, group and others,
/// setuid, setgid and sticky.
pub const MODE_BITS: u32 = 0o7777;

/// The value rules of format.md §15 that concern one node's fields (the
/// structural ones on `content` and `subtree` are checked beside them).
fn check_node_fields(n: &Node) -> Result<(), &'static str> {
    if n.mode & !MODE_BITS != 0 {
        return Err("mode has bits above 0o7777");
    }
    if n.kind != NodeKind::File && n.size != 0 {
        return Err("size on a node that is not a file");
    }
    let device = matches!(n.kind, NodeKind::CharDevice | NodeKind::BlockDevice);
    if !device && n.rdev != 0 {
        return Err("device number on a node that is not a device");
    }
    match (n.kind == NodeKind::Symlink, n.symlink_target.is_empty()) {
        (true, true) => return Err("symlink with an empty target"),
        (false, false) => return Err("symlink target on a node that is not a symlink"),
        _ => {}
    }
    for (i, (name, _)) in n.xattrs.iter().enumerate() {
        if name.is_empty() {
            return Err("extended attribute with an empty name");
        }
        if name.contains(&0) {
            return Err("extended attribute name contains a NUL byte");
        }
        if i > 0 && n.xattrs[i - 1].0 >= *name {
            return Err("extended attributes are not sorted by name, or a name repeats");
        }
    }
    Ok(())
}

/// Major number of a device number in its stored form (Linux's 64-bit
/// `dev_t`, as glibc's `makedev` builds it; format.md §15).
pub fn device_major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32
}

/// Minor number of a device number in its stored form.
pub fn device_minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as u32
}

/// The stored form of the device number (`major`, `minor`).
pub fn device_number(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | (minor & 0xff)
}

/// Why a stored name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    #[error("empty name")]
    Empty,
    #[error("name is \".\" or \"..\"")]
    Dots,
    #[error("name contains '/'")]
    Slash,
    #[error("name contains a NUL byte")]
    Nul,
}

/// A name may become one path component under a restore target only if it is
/// non-empty, not `.` or `..`, and contains neither `/` nor NUL.
pub fn validate_name(name: &[u8]) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name == b"." || name == b".." {
        return Err(BadName::Dots);
    }
    if name.contains(&b'/') {
        return Err(BadName::Slash);
    }
    if name.contains(&0) {
        return Err(BadName::Nul);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(any::<u8>(), 0..20),
            1u8..=7,
            any::<(u32, u32, u32, i64, i64, u64, u64)>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
            any::<[u8; 32]>(),
        )
            .prop_map(|(name, kind, (mode, uid, gid, m, c, size, ino), content, xattrs, sub)| {
                let kind = NodeKind::from_tag(kind).unwrap();
                let mut n = Node::new(name, kind);
                n.mode = mode & MODE_BITS;
                n.uid = uid;
                n.gid = gid;
                n.mtime_ns = m;
                n.ctime_ns = c;
                n.size = if kind == NodeKind::File { size } else { 0 };
                n.inode = ino;
                let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattrs
                    .into_iter()
                    .map(|(mut k, v)| {
                        k.retain(|&b| b != 0);
                        k.insert(0, b'u');
                        (k, v)
                    })
                    .collect();
                xattrs.sort();
                xattrs.dedup_by(|a, b| a.0 == b.0);
                n.xattrs = xattrs;
                match kind {
                    NodeKind::File => n.content = content.into_iter().map(Id).collect(),
                    NodeKind::Dir => n.subtree = Some(Id(sub)),
                    NodeKind::Symlink => n.symlink_target = b"../target".to_vec(),
                    NodeKind::CharDevice | NodeKind::BlockDevice => n.rdev = 0x0801,
                    NodeKind::Fifo | NodeKind::Socket => {}
                }
                n
            })
    }

    proptest! {
        #[test]
        fn round_trip(nodes in proptest::collection::vec(arb_node(), 0..8)) {
            let mut t = Tree { nodes };
            t.sort();
            t.nodes.dedup_by(|a, b| a.name == b.name);
            prop_assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut buf in proptest::collection::vec(any::<u8>(), 0..400)) {
            if !buf.is_empty() { buf[0] = TREE_VERSION; }
            let _ = Tree::decode(&buf);
        }

        #[test]
        fn truncation_is_an_error(nodes in proptest::collection::vec(arb_node(), 1..4), cut in 1usize..100) {
            let enc = Tree { nodes }.encode();
            let cut = cut.min(enc.len() - 1);
            prop_assert!(Tree::decode(&enc[..enc.len() - cut]).is_err());
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name(b"ok name\xff").is_ok());
        assert_eq!(validate_name(b""), Err(BadName::Empty));
        assert_eq!(validate_name(b".."), Err(BadName::Dots));
        assert_eq!(validate_name(b"."), Err(BadName::Dots));
        assert_eq!(validate_name(b"../x"), Err(BadName::Slash));
        assert_eq!(validate_name(b"a\0b"), Err(BadName::Nul));
    }

    #[test]
    fn unsorted_or_repeated_names_are_refused() {
        let a = Node::new(b"a".to_vec(), NodeKind::File);
        let b = Node::new(b"b".to_vec(), NodeKind::File);
        assert!(Tree::decode(&Tree { nodes: vec![b.clone(), a.clone()] }.encode()).is_err());
        assert!(Tree::decode(&Tree { nodes: vec![a.clone(), a.clone()] }.encode()).is_err());
        assert!(Tree::decode(&Tree { nodes: vec![a, b] }.encode()).is_ok());
    }

    fn decodes(n: &Node) -> Result<Tree, FormatError> {
        Tree::decode(&Tree { nodes: vec![n.clone()] }.encode())
    }

    fn refused_because(n: &Node, reason: &str) {
        match decodes(n) {
            Err(FormatError::Invalid { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("expected {reason:?}, got {other:?}"),
        }
    }

    #[test]
    fn mode_bits_above_0o7777_are_refused() {
        let mut n = Node::new(b"f".to_vec(), NodeKind::File);
        n.mode = 0o7777;
        assert!(decodes(&n).is_ok());
        n.mode = 0o100644;
        refused_because(&n, "mode has bits above 0o7777");
    }

    #[test]
    fn fields_that_do_not_belong_to_the_kind_are_refused() {
        let mut dir = Node::new(b"d".to_vec(), NodeKind::Dir);
        dir.subtree = Some(Id([1; 32]));
        let mut with_size = dir.clone();
        with_size.size = 4096;
        refused_because(&with_size, "size on a node that is not a file");
        let mut with_rdev = dir.clone();
        with_rdev.rdev = 0x801;
        refused_because(&with_rdev, "device number on a node that is not a device");
        let mut with_target = dir.clone();
        with_target.symlink_target = b"x".to_vec();
        refused_because(&with_target, "symlink target on a node that is not a symlink");
        let mut empty_link = Node::new(b"l".to_vec(), NodeKind::Symlink);
        refused_because(&empty_link, "symlink with an empty target");
        empty_link.symlink_target = b"t".to_vec();
        assert!(decodes(&empty_link).is_ok());
        let mut device = Node::new(b"sda1".to_vec(), NodeKind::BlockDevice);
        device.rdev = 0x801;
        assert!(decodes(&device).is_ok());
        let mut file = Node::new(b"f".to_vec(), NodeKind::File);
        file.size = 10;
        assert!(decodes(&file).is_ok());
    }

    #[test]
    fn xattrs_must_be_sorted_unique_and_named() {
        let mut n = Node::new(b"f".to_vec(), NodeKind::File);
        n.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec()), (b"user.b".to_vec(), Vec::new())];
        assert!(decodes(&n).is_ok());
        n.xattrs.reverse();
        refused_because(&n, "extended attributes are not sorted by name, or a name repeats");
        n.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec()), (b"user.a".to_vec(), b"2".to_vec())];
        refused_because(&n, "extended attributes are not sorted by name, or a name repeats");
        n.xattrs = vec![(Vec::new(), b"1".to_vec())];
        refused_because(&n, "extended attribute with an empty name");
        n.xattrs = vec![(b"user.\0x".to_vec(), b"1".to_vec())];
        refused_because(&n, "extended attribute name contains a NUL byte");
    }

    #[test]
    fn device_numbers_are_linux_dev_t() {
        for (major, minor) in [(8, 1), (0, 0), (259, 65_536), (0xfff, 0xff), (0xffff_ffff, 0xffff_ffff), (4096, 256)] {
            let rdev = device_number(major, minor);
            assert_eq!(rdev, libc::makedev(major, minor), "({major}, {minor})");
            assert_eq!((device_major(rdev), device_minor(rdev)), (major, minor));
            assert_eq!((libc::major(rdev), libc::minor(rdev)), (major, minor));
        }
        assert_eq!(device_number(8, 1), 0x801);
        assert_eq!(device_number(259, 65_536), 0x1001_0300);
    }

    fn files(n: usize) -> Tree {
        Tree { nodes: (0..n).map(|i| Node::new(format!("file-{i:06}").into_bytes(), NodeKind::File)).collect() }
    }

    #[test]
    fn a_directory_that_fits_one_blob_is_encoded_as_one() {
        let t = files(100);
        assert_eq!(t.encode_split(1 << 20), vec![t.encode()]);
        assert_eq!(TreeBlob::decode(&t.encode()).unwrap(), TreeBlob::Entries(t));
    }

    #[test]
    fn a_directory_over_the_limit_splits_into_sorted_parts_within_it() {
        let t = files(1000);
        let limit = 4096;
        let parts = t.encode_split(limit);
        assert!(parts.len() > 2, "{} parts", parts.len());
        let mut joined = Tree::default();
        for p in &parts {
            assert!(p.len() <= limit, "part of {} bytes", p.len());
            let TreeBlob::Entries(part) = TreeBlob::decode(p).unwrap() else { panic!("a part is a version-1 tree") };
            joined.append_part(part).unwrap();
        }
        assert_eq!(joined, t);
    }

    #[test]
    fn an_entry_longer_than_the_limit_gets_a_part_of_its_own() {
        let mut t = files(3);
        t.nodes[1].xattrs = vec![(b"user.big".to_vec(), vec![7; 10_000])];
        let parts = t.encode_split(1000);
        assert_eq!(parts.len(), 3);
        assert!(parts[1].len() > 10_000);
    }

    #[test]
    fn part_lists_round_trip_and_name_at_least_two_parts() {
        let ids = vec![Id([1; 32]), Id([2; 32]), Id([3; 32])];
        assert_eq!(TreeBlob::decode(&encode_part_list(&ids)).unwrap(), TreeBlob::Parts(ids));
        for n in 0..MIN_PARTS {
            let err = TreeBlob::decode(&encode_part_list(&vec![Id([1; 32]); n])).unwrap_err();
            assert!(matches!(err, FormatError::Invalid { .. }), "{err:?}");
        }
        let mut trailing = encode_part_list(&[Id([1; 32]), Id([2; 32])]);
        trailing.push(0);
        assert!(TreeBlob::decode(&trailing).is_err());
        // A reader of version-1 trees refuses a part list by its version.
        assert!(matches!(
            Tree::decode(&encode_part_list(&[Id([1; 32]), Id([2; 32])])),
            Err(FormatError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn parts_out_of_order_or_empty_are_refused() {
        let t = files(4);
        let (a, b) = (Tree { nodes: t.nodes[..2].to_vec() }, Tree { nodes: t.nodes[2..].to_vec() });
        let mut joined = b.clone();
        assert!(joined.append_part(a.clone()).is_err(), "later names first");
        let mut joined = a.clone();
        assert!(joined.append_part(a.clone()).is_err(), "a name repeats");
        assert!(joined.append_part(Tree::default()).is_err(), "an empty part");
        assert!(joined.append_part(b).is_ok());
        assert_eq!(joined, t);
    }

    #[test]
    fn huge_count_is_rejected_without_allocating() {
        let mut buf = vec![TREE_VERSION];
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Tree::decode(&buf), Err(FormatError::Truncated { .. })));
    }
}
