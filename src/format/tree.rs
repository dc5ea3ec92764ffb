//! Tree blobs: one directory each, as a list of nodes sorted by raw name bytes.
//! Names are raw bytes (not necessarily UTF-8); which names are safe to create
//! on disk is decided by [`validate_name`].

use super::codec::{Decoder, Encoder};
use super::{FormatError, Id};

const TREE_VERSION: u8 = 1;

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
        e.finish()
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

    #[test]
    fn huge_count_is_rejected_without_allocating() {
        let mut buf = vec![TREE_VERSION];
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Tree::decode(&buf), Err(FormatError::Truncated { .. })));
    }
}
