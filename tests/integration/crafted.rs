//! Crafted but valid repositories for the scale tests: data blobs, tree
//! blobs and snapshots written straight through the library, so that a
//! snapshot of 10^6 entries or 20,000 levels costs a few blobs, not a tree
//! on disk.

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

use crate::common::PASSWORD;

/// Writes blobs, packed as a writer would, and snapshots into a new
/// local repository.
pub struct Crafter {
    repo: Repository,
    packer: Packer,
    packs: Vec<IndexedPack>,
}

impl Crafter {
    pub async fn init(path: &Path) -> Crafter {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(path));
        let opts = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
        let repo = Repository::init(backend, PASSWORD.as_bytes(), opts).await.unwrap();
        Crafter { repo, packer: Packer::new(4 << 20), packs: Vec::new() }
    }

    pub async fn blob(&mut self, blob_type: BlobType, raw: &[u8]) -> Id {
        let sealed = self.repo.seal_blob(blob_type, raw).unwrap();
        self.packer.add(blob_type, sealed.id, &sealed.sealed, sealed.raw_len);
        if self.packer.is_full() {
            self.flush_pack().await;
        }
        sealed.id
    }

    pub async fn data(&mut self, raw: &[u8]) -> Id {
        self.blob(BlobType::Data, raw).await
    }

    pub async fn tree(&mut self, nodes: Vec<Node>) -> Id {
        let mut tree = Tree { nodes };
        tree.sort();
        self.blob(BlobType::Tree, &tree.encode()).await
    }

    async fn flush_pack(&mut self) {
        let mut packer = std::mem::replace(&mut self.packer, Packer::new(4 << 20));
        if packer.is_empty() {
            return;
        }
        let pack = packer.finish(self.repo.keys(), self.repo.repo_id());
        self.repo.backend().put(ObjectKind::Pack, &pack.id, pack.data.clone()).await.unwrap();
        self.packs.push(IndexedPack { id: pack.id, size: pack.data.len() as u64, blobs: pack.blobs });
    }

    /// Stores what was added, an index of it and a snapshot of tree `root`
    /// taken at `time_ns`.
    pub async fn snapshot(&mut self, root: Id, time_ns: i64) {
        self.flush_pack().await;
        let packs = std::mem::take(&mut self.packs);
        if !packs.is_empty() {
            self.repo.write_index(packs, vec![]).await.unwrap();
        }
        let snap = Snapshot {
            time_ns,
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

    /// Stores what was added and one snapshot of tree `root`.
    pub async fn finish(mut self, root: Id) {
        self.snapshot(root, 1).await;
    }
}

pub fn file(name: &[u8], content: Vec<Id>, size: u64) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.mode = 0o644;
    n.mtime_ns = 1_600_000_000_000_000_000;
    n.content = content;
    n.size = size;
    n
}

pub fn dir(name: &[u8], subtree: Id) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::Dir);
    n.mode = 0o755;
    n.mtime_ns = 1_600_000_000_000_000_000;
    n.subtree = Some(subtree);
    n
}
