//! Rules of docs/format.md that a reader must hold whatever a repository
//! holds: restore semantics for crafted trees (sizes, hard links), blob
//! locations that fail, and the limits of §22. Each test builds the
//! repository it needs with the library, then drives the `tstor` binary.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use tstor::backend::local::LocalBackend;
use tstor::backend::Backend;
use tstor::crypto::kdf::KdfParams;
use tstor::format::index::IndexedPack;
use tstor::format::snapshot::Snapshot;
use tstor::format::tree::{Node, NodeKind, Tree};
use tstor::format::{BlobType, Id, ObjectKind};
use tstor::repo::packer::Packer;
use tstor::repo::{InitOptions, Repository};

use crate::common::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes blobs, trees and one snapshot straight into a new repository, as a
/// writer that breaks (or stretches) the rules could.
struct Crafter {
    repo: Repository,
    packer: Packer,
}

impl Crafter {
    async fn init(path: &Path) -> Crafter {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(path));
        let opts = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
        let repo = Repository::init(backend, PASSWORD.as_bytes(), opts).await.unwrap();
        Crafter { repo, packer: Packer::new(1 << 20) }
    }

    fn blob(&mut self, blob_type: BlobType, raw: &[u8]) -> Id {
        let sealed = self.repo.seal_blob(blob_type, raw).unwrap();
        self.packer.add(blob_type, sealed.id, &sealed.sealed, sealed.raw_len);
        sealed.id
    }

    fn data(&mut self, raw: &[u8]) -> Id {
        self.blob(BlobType::Data, raw)
    }

    fn tree(&mut self, nodes: Vec<Node>) -> Id {
        let mut tree = Tree { nodes };
        tree.sort();
        self.blob(BlobType::Tree, &tree.encode())
    }

    /// Stores the pack and its index; returns the pack.
    async fn flush(&mut self) -> IndexedPack {
        let mut packer = std::mem::replace(&mut self.packer, Packer::new(1 << 20));
        let pack = packer.finish(self.repo.keys(), self.repo.repo_id());
        self.repo.backend().put(ObjectKind::Pack, &pack.id, pack.data.clone()).await.unwrap();
        let indexed = IndexedPack { id: pack.id, size: pack.data.len() as u64, blobs: pack.blobs };
        self.repo.write_index(vec![indexed.clone()], vec![]).await.unwrap();
        indexed
    }

    /// Stores what was added and a snapshot of the root `nodes`.
    async fn finish(mut self, nodes: Vec<Node>) -> Repository {
        let root = self.tree(nodes);
        self.flush().await;
        self.snapshot(root).await;
        self.repo
    }

    /// Stores a snapshot whose root tree is `root`.
    async fn snapshot(&self, root: Id) {
        let snap = Snapshot {
            time_ns: 1,
            tree: root,
            paths: vec![b"/crafted".to_vec()],
            hostname: "crafter".into(),
            username: "x".into(),
            uid: 0,
            gid: 0,
            tags: vec![],
            parent: None,
            program_version: "0".into(),
            summary: Default::default(),
            original: None,
        };
        self.repo.save_object(ObjectKind::Snapshot, &snap.encode()).await.unwrap();
    }
}

fn file(name: &[u8], content: Vec<Id>, size: u64) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.mode = 0o644;
    n.content = content;
    n.size = size;
    n
}

fn dir(name: &[u8], subtree: Id) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::Dir);
    n.mode = 0o755;
    n.subtree = Some(subtree);
    n
}

/// A member of the hard-link group (device 1, inode `inode`).
fn linked(mut n: Node, inode: u64) -> Node {
    n.device = 1;
    n.inode = inode;
    n.links = 2;
    n
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

fn restore(env: &Env, what: &str, target: &Path) -> std::process::Output {
    env.cmd().args(["restore", what, "--target"]).arg(target).output().unwrap()
}

#[test]
fn a_file_whose_size_disagrees_with_its_content_is_restored_from_its_content_and_reported() {
    let env = Env::new();
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let payload = c.data(b"payload");
        c.finish(vec![file(b"longer", vec![payload], 100), file(b"shorter", vec![payload, payload], 3)]).await;
    });
    let target = env.path("out");
    let out = restore(&env, "latest", &target);
    assert_eq!(out.status.code(), Some(1), "the disagreement is an error");
    let err = stderr_of(&out);
    assert!(err.contains("longer: restored its 7 bytes of content, but the snapshot records a size of 100"), "{err}");
    assert!(err.contains("shorter: restored its 14 bytes of content, but the snapshot records a size of 3"), "{err}");
    assert_eq!(fs::read(target.join("longer")).unwrap(), b"payload");
    assert_eq!(fs::read(target.join("shorter")).unwrap(), b"payloadpayload");
    let out = env.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("longer: size 100 differs from its content's 7 bytes"), "{err}");
    assert!(err.contains("shorter: size 3 differs from its content's 14 bytes"), "{err}");
}

#[test]
fn hard_links_join_the_first_member_in_path_order() {
    let env = Env::new();
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let shared = c.data(b"shared content");
        let other = c.data(b"other content");
        let inner = c.tree(vec![linked(file(b"second", vec![shared], 14), 7)]);
        c.finish(vec![
            // Path order: `a/second` < `b` < `c`; `b` is not in `a`'s group's
            // path order first, `a/second` is.
            dir(b"a", inner),
            linked(file(b"b", vec![shared], 14), 7),
            // Same (device, inode), different content: restored on its own.
            linked(file(b"c", vec![other], 13), 7),
        ])
        .await;
    });
    let target = env.path("out");
    let out = restore(&env, "latest", &target);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let first = fs::metadata(target.join("a/second")).unwrap();
    let b = fs::metadata(target.join("b")).unwrap();
    let c = fs::metadata(target.join("c")).unwrap();
    assert_eq!((first.ino(), first.nlink()), (b.ino(), 2), "b is a hard link of a/second");
    assert_ne!(c.ino(), first.ino(), "different content is not linked");
    assert_eq!(fs::read(target.join("c")).unwrap(), b"other content");
    assert_eq!(fs::read(target.join("b")).unwrap(), b"shared content");
}

#[test]
fn a_sub_path_restore_links_only_the_members_it_restores() {
    let env = Env::new();
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let shared = c.data(b"shared content");
        let inner = c.tree(vec![linked(file(b"one", vec![shared], 14), 9), linked(file(b"two", vec![shared], 14), 9)]);
        c.finish(vec![linked(file(b"outside", vec![shared], 14), 9), dir(b"sub", inner)]).await;
    });
    let target = env.path("out");
    let out = restore(&env, "latest:sub", &target);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let one = fs::metadata(target.join("one")).unwrap();
    let two = fs::metadata(target.join("two")).unwrap();
    assert_eq!((one.ino(), one.nlink()), (two.ino(), 2));
    assert_eq!(fs::read(target.join("one")).unwrap(), b"shared content");
    assert!(!target.join("outside").exists());
}

#[test]
fn a_refused_first_member_leaves_the_next_member_first() {
    let env = Env::new();
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let shared = c.data(b"shared content");
        // ".." sorts before "a" but is refused: "a" becomes the first member.
        c.finish(vec![
            linked(file(b"..", vec![shared], 14), 3),
            linked(file(b"a", vec![shared], 14), 3),
            linked(file(b"b", vec![shared], 14), 3),
        ])
        .await;
    });
    let target = env.path("jail/out");
    let out = restore(&env, "latest", &target);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("refused"), "{}", stderr_of(&out));
    let a = fs::metadata(target.join("a")).unwrap();
    let b = fs::metadata(target.join("b")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(fs::read(target.join("b")).unwrap(), b"shared content");
    assert_eq!(fs::read_dir(env.path("jail")).unwrap().count(), 1, "nothing beside the target");
}

#[test]
fn only_regular_files_are_restored_as_hard_links() {
    let env = Env::new();
    block_on(async {
        let c = Crafter::init(&env.repo()).await;
        let fifo = |name: &[u8]| {
            let mut n = Node::new(name.to_vec(), NodeKind::Fifo);
            n.mode = 0o600;
            linked(n, 5)
        };
        let link = |name: &[u8]| {
            let mut n = Node::new(name.to_vec(), NodeKind::Symlink);
            n.symlink_target = b"somewhere".to_vec();
            linked(n, 6)
        };
        c.finish(vec![fifo(b"p1"), fifo(b"p2"), link(b"s1"), link(b"s2")]).await;
    });
    let target = env.path("out");
    let out = restore(&env, "latest", &target);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let p1 = fs::symlink_metadata(target.join("p1")).unwrap();
    let p2 = fs::symlink_metadata(target.join("p2")).unwrap();
    assert!(p1.file_type().is_fifo() && p2.file_type().is_fifo());
    assert_ne!(p1.ino(), p2.ino());
    let s1 = fs::symlink_metadata(target.join("s1")).unwrap();
    let s2 = fs::symlink_metadata(target.join("s2")).unwrap();
    assert!(s1.file_type().is_symlink() && s2.file_type().is_symlink());
    assert_ne!(s1.ino(), s2.ino());
}

/// Path of a pack in a local repository.
fn pack_path(repo: &Path, pack: &Id) -> std::path::PathBuf {
    let hex = pack.to_hex();
    repo.join("packs").join(&hex[..2]).join(hex)
}

/// Flips a byte inside every sealed blob of `pack`: each fails to open.
fn corrupt_blobs(repo: &Path, pack: &IndexedPack) {
    let path = pack_path(repo, &pack.id);
    let mut bytes = fs::read(&path).unwrap();
    for b in &pack.blobs {
        bytes[b.offset as usize + 20] ^= 0x55;
    }
    fs::write(&path, bytes).unwrap();
}

/// A repository whose data blob and root tree are each stored in two packs,
/// one snapshot of a file `f` holding `payload`. Returns the two packs, in
/// the order they were written.
fn blob_in_two_packs(env: &Env) -> (IndexedPack, IndexedPack) {
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let mut packs = Vec::new();
        let mut root = Id::ZERO;
        for _ in 0..2 {
            let payload = c.data(b"payload");
            root = c.tree(vec![file(b"f", vec![payload], 7)]);
            packs.push(c.flush().await);
        }
        c.snapshot(root).await;
        (packs.remove(0), packs.remove(0))
    })
}

#[test]
fn a_blob_whose_first_location_is_damaged_is_read_from_the_next() {
    for damaged in 0..2 {
        let env = Env::new();
        let packs = blob_in_two_packs(&env);
        corrupt_blobs(&env.repo(), if damaged == 0 { &packs.0 } else { &packs.1 });
        let target = env.path("out");
        let out = restore(&env, "latest", &target);
        assert!(out.status.success(), "pack {damaged} damaged: {}", stderr_of(&out));
        assert_eq!(fs::read(target.join("f")).unwrap(), b"payload");
        let out = env.cmd().args(["ls", "latest"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
}

#[test]
fn a_blob_whose_first_location_is_missing_is_read_from_the_next() {
    for missing in 0..2 {
        let env = Env::new();
        let packs = blob_in_two_packs(&env);
        fs::remove_file(pack_path(&env.repo(), if missing == 0 { &packs.0.id } else { &packs.1.id })).unwrap();
        let target = env.path("out");
        let out = restore(&env, "latest", &target);
        assert!(out.status.success(), "pack {missing} missing: {}", stderr_of(&out));
        assert_eq!(fs::read(target.join("f")).unwrap(), b"payload");
    }
}

#[test]
fn a_blob_damaged_in_every_location_is_lost_and_named() {
    let env = Env::new();
    let packs = blob_in_two_packs(&env);
    // Only the data blob: the trees stay readable.
    for pack in [&packs.0, &packs.1] {
        let data_only = IndexedPack {
            blobs: pack.blobs.iter().filter(|b| b.blob_type == BlobType::Data).cloned().collect(),
            ..pack.clone()
        };
        corrupt_blobs(&env.repo(), &data_only);
    }
    let target = env.path("out");
    let out = restore(&env, "latest", &target);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("f: data lost"), "{}", stderr_of(&out));
    assert!(!target.join("f").exists());
}

/// A snapshot whose root holds `levels` nested directories named `d`, the
/// deepest holding a file `f` (at depth `levels + 1`).
fn nested(env: &Env, levels: usize) {
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let payload = c.data(b"payload");
        let mut nodes = vec![file(b"f", vec![payload], 7)];
        for _ in 0..levels {
            let sub = c.tree(nodes);
            nodes = vec![dir(b"d", sub)];
        }
        c.finish(nodes).await;
    });
}

#[test]
fn a_snapshot_at_the_depth_limit_is_listed_and_checked() {
    let env = Env::new();
    nested(&env, tstor::format::MAX_TREE_DEPTH - 1);
    let out = env.cmd().args(["ls", "latest"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let deepest = format!("{}f", "d/".repeat(tstor::format::MAX_TREE_DEPTH - 1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&deepest));
    let out = env.cmd().arg("check").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn an_entry_beyond_the_depth_limit_is_refused_naming_its_path() {
    let env = Env::new();
    nested(&env, tstor::format::MAX_TREE_DEPTH);
    let message = "more than 4096 directory levels deep";
    let out = env.cmd().args(["ls", "latest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let shown = "d/".repeat(100);
    assert!(stderr_of(&out).contains(&shown) && stderr_of(&out).contains(message), "{}", stderr_of(&out));
    let out = env.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains(message), "{}", stderr_of(&out));
    let out = restore(&env, "latest", &env.path("out"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains(&format!("… (8193 bytes): refused: {message}")), "{err}");
}

#[test]
fn an_entry_beyond_the_path_length_limit_is_refused_naming_its_path() {
    let env = Env::new();
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let payload = c.data(b"payload");
        let inner = c.tree(vec![file(&[b'f'; 30_000], vec![payload], 7)]);
        c.finish(vec![dir(&[b'd'; 40_000], inner), file(b"short", vec![payload], 7)]).await;
    });
    let message = "path longer than 65536 bytes";
    let out = env.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains(message), "{}", stderr_of(&out));
    let target = env.path("out");
    let out = restore(&env, "latest", &target);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains(&format!("(70001 bytes): refused: {message}")), "{}", stderr_of(&out));
    assert_eq!(fs::read(target.join("short")).unwrap(), b"payload", "the rest is restored");
}

#[test]
fn a_snapshot_with_more_entries_than_allowed_is_refused_before_anything_is_written() {
    let dir_path = tempfile::tempdir().unwrap();
    block_on(async {
        let mut c = Crafter::init(&dir_path.path().join("repo")).await;
        let payload = c.data(b"payload");
        // Each level holds its subtree twice: 190 entries in all from seven
        // small trees.
        let mut tree = c.tree(vec![file(b"f", vec![payload], 7)]);
        for _ in 0..6 {
            tree = c.tree(vec![dir(b"a", tree), dir(b"b", tree)]);
        }
        c.flush().await;
        let repo = c.repo.clone();
        let index = Arc::new(repo.load_index().await.unwrap());
        let target = dir_path.path().join("out");
        let mut opts = tstor::restorer::RestoreOptions::new(target.clone());
        opts.max_entries = 100;
        let progress = Arc::new(tstor::restorer::NoRestoreProgress);
        let err = tstor::restorer::restore(&repo, index.clone(), &tree, &opts, progress.clone()).await.unwrap_err();
        assert!(err.to_string().contains("more than 100 entries"), "{err}");
        assert!(!target.exists(), "nothing was written");
        // 126 directories and 64 files: exactly at the limit.
        opts.max_entries = 190;
        let done = tstor::restorer::restore(&repo, index, &tree, &opts, progress).await.unwrap();
        assert_eq!((done.dirs, done.files), (126, 64), "{:?}", &done.errors[..done.errors.len().min(3)]);
    });
}

#[test]
fn the_archiver_stores_a_tree_as_deep_as_the_file_system_allows() {
    let env = Env::new();
    env.init();
    // As deep as paths allow: the archiver reads by path, so PATH_MAX (4096)
    // bounds its recursion well within the reader's depth limit.
    let src = env.path("src");
    let room = 4000 - src.as_os_str().len();
    let levels = room / 2 - 2;
    let deepest = src.join("d/".repeat(levels).trim_end_matches('/'));
    fs::create_dir_all(&deepest).unwrap();
    fs::write(deepest.join("f"), b"deep").unwrap();
    let out = env.cmd().args(["snapshot"]).arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = env.cmd().arg("check").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = env.cmd().args(["ls", "latest"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}f", "d/".repeat(levels))));
}
