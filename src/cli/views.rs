//! JSON views of what the commands print (`ls`, `find`, `diff`, `cat`,
//! `tag`, `key`, `snapshots`, `forget`, `unlock`, `init`, `version`, `cache`,
//! `telegram login`), as `#[derive(Serialize)]` types: the
//! stored formats have no serde encoding of their own. Names are shown
//! lossily (each byte that is not UTF-8 becomes U+FFFD); a name that is not
//! UTF-8 also carries its exact bytes, escaped, as `<field>_escaped`. Times
//! are RFC 3339 with the offset, next to the stored nanoseconds.

use serde::Serialize;

use crate::format::config::Config;
use crate::format::index::IndexFile;
use crate::format::lock::Lock;
use crate::format::pack::BlobEntry;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind};
use crate::format::Id;
use crate::ops::diff::{Change, DiffTotals};
use crate::ops::forget::{ForgetGroup, ForgetReport, GroupKey};
use crate::ops::prune::PruneReport;
use crate::repo::keyring::KeyInfo;

use super::output::escape_bytes;
use super::times;

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// The escaped form of `raw`, after `prefix`, when it is not UTF-8.
fn escaped(raw: &[u8], prefix: &str) -> Option<String> {
    std::str::from_utf8(raw).is_err().then(|| format!("{prefix}{}", escape_bytes(raw)))
}

/// The fields of a node every listing shows.
#[derive(Serialize)]
pub struct NodeView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_escaped: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: u32,
    pub permissions: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: String,
    pub mtime_ns: i64,
    pub link_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target_escaped: Option<String>,
    pub content_blobs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_escaped: Option<String>,
}

impl NodeView {
    /// `path` is from the snapshot's root, without the leading `/`.
    pub fn of(path: Option<&[u8]>, n: &Node) -> NodeView {
        let symlink = n.kind == NodeKind::Symlink;
        NodeView {
            name: lossy(&n.name),
            name_escaped: escaped(&n.name, ""),
            kind: n.kind.name(),
            mode: n.mode,
            permissions: super::inspect::mode_string(n.kind, n.mode),
            uid: n.uid,
            gid: n.gid,
            size: n.size,
            mtime: times::json(n.mtime_ns),
            mtime_ns: n.mtime_ns,
            link_target: symlink.then(|| lossy(&n.symlink_target)),
            link_target_escaped: if symlink { escaped(&n.symlink_target, "") } else { None },
            content_blobs: n.content.len(),
            path: path.map(|p| format!("/{}", lossy(p))),
            path_escaped: path.and_then(|p| escaped(p, "/")),
        }
    }
}

#[derive(Serialize)]
pub struct XattrView {
    pub name: String,
    pub value_hex: String,
}

/// Every field of a node, for `cat tree`.
#[derive(Serialize)]
pub struct FullNodeView {
    #[serde(flatten)]
    pub node: NodeView,
    pub ctime: String,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    pub rdev: u64,
    pub content: Vec<String>,
    pub subtree: Option<String>,
    pub xattrs: Vec<XattrView>,
}

impl FullNodeView {
    pub fn of(n: &Node) -> FullNodeView {
        FullNodeView {
            node: NodeView::of(None, n),
            ctime: times::json(n.ctime_ns),
            ctime_ns: n.ctime_ns,
            inode: n.inode,
            device: n.device,
            links: n.links,
            rdev: n.rdev,
            content: n.content.iter().map(Id::to_hex).collect(),
            subtree: n.subtree.map(|s| s.to_hex()),
            xattrs: n.xattrs.iter().map(|(k, v)| XattrView { name: lossy(k), value_hex: hex::encode(v) }).collect(),
        }
    }
}

/// One `find` match.
#[derive(Serialize)]
pub struct FoundView {
    pub snapshot: String,
    pub short_id: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_escaped: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub mtime: String,
    pub mtime_ns: i64,
}

impl FoundView {
    pub fn of(id: &Id, path: &[u8], n: &Node) -> FoundView {
        FoundView {
            snapshot: id.to_hex(),
            short_id: id.short(),
            path: format!("/{}", lossy(path)),
            path_escaped: escaped(path, "/"),
            kind: n.kind.name(),
            size: n.size,
            mtime: times::json(n.mtime_ns),
            mtime_ns: n.mtime_ns,
        }
    }
}

/// One `diff` change; the path ends in `/` for a directory.
#[derive(Serialize)]
pub struct ChangeView {
    pub change: String,
    pub kind: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_escaped: Option<String>,
    #[serde(rename = "type")]
    pub node_type: &'static str,
    pub old_type: Option<&'static str>,
    pub fields: Vec<&'static str>,
}

impl ChangeView {
    pub fn of(c: &Change) -> ChangeView {
        let dir = if c.node().kind == NodeKind::Dir { "/" } else { "" };
        ChangeView {
            change: c.kind.symbol().to_string(),
            kind: c.kind.name(),
            path: format!("/{}{dir}", lossy(&c.path)),
            path_escaped: escaped(&c.path, "/"),
            node_type: c.node().kind.name(),
            old_type: c.old.as_ref().map(|n| n.kind.name()),
            fields: c.fields.clone(),
        }
    }
}

/// What `diff --json` prints after its changes.
#[derive(Serialize)]
pub struct DiffTail<'a> {
    pub a: String,
    pub b: String,
    pub totals: &'a DiffTotals,
}

/// A snapshot in listings.
#[derive(Serialize)]
pub struct SnapshotView<'a> {
    pub id: String,
    pub short_id: String,
    pub time: String,
    pub time_ns: i64,
    pub hostname: &'a str,
    pub username: &'a str,
    pub paths: Vec<String>,
    pub tags: &'a [String],
    pub parent: Option<String>,
    /// The snapshot this one was rewritten or copied from.
    pub original: Option<String>,
    pub tree: String,
    pub summary: &'a Summary,
}

impl<'a> SnapshotView<'a> {
    pub fn of(id: &Id, s: &'a Snapshot) -> SnapshotView<'a> {
        SnapshotView {
            id: id.to_hex(),
            short_id: id.short(),
            time: times::json(s.time_ns),
            time_ns: s.time_ns,
            hostname: &s.hostname,
            username: &s.username,
            paths: s.paths.iter().map(|p| lossy(p)).collect(),
            tags: &s.tags,
            parent: s.parent.map(|p| p.to_hex()),
            original: s.original.map(|p| p.to_hex()),
            tree: s.tree.to_hex(),
            summary: &s.summary,
        }
    }
}

/// Every field of a snapshot, for `cat snapshot`.
#[derive(Serialize)]
pub struct FullSnapshotView<'a> {
    #[serde(flatten)]
    pub snapshot: SnapshotView<'a>,
    pub uid: u32,
    pub gid: u32,
    pub program_version: &'a str,
    pub paths_escaped: Vec<String>,
}

impl<'a> FullSnapshotView<'a> {
    pub fn of(id: &Id, s: &'a Snapshot) -> FullSnapshotView<'a> {
        FullSnapshotView {
            snapshot: SnapshotView::of(id, s),
            uid: s.uid,
            gid: s.gid,
            program_version: &s.program_version,
            paths_escaped: s.paths.iter().map(|p| escape_bytes(p)).collect(),
        }
    }
}

#[derive(Serialize)]
pub struct ChunkerView {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

#[derive(Serialize)]
pub struct ConfigView {
    pub repo_id: String,
    pub chunker: ChunkerView,
    pub compression_level: i32,
    pub created: String,
    pub created_ns: i64,
}

impl ConfigView {
    pub fn of(c: &Config) -> ConfigView {
        ConfigView {
            repo_id: c.repo_id.to_hex(),
            chunker: ChunkerView { min: c.chunk_min, avg: c.chunk_avg, max: c.chunk_max },
            compression_level: c.compression_level,
            created: times::json(c.created_ns),
            created_ns: c.created_ns,
        }
    }
}

#[derive(Serialize)]
pub struct BlobView {
    #[serde(rename = "type")]
    pub blob_type: &'static str,
    pub id: String,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

impl BlobView {
    pub fn of(b: &BlobEntry) -> BlobView {
        BlobView {
            blob_type: b.blob_type.name(),
            id: b.id.to_hex(),
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_len,
        }
    }
}

/// A pack: in an index, or its header (`cat pack-header`).
#[derive(Serialize)]
pub struct PackView {
    pub id: String,
    pub size: u64,
    pub blobs: Vec<BlobView>,
}

impl PackView {
    pub fn of(id: &Id, size: u64, blobs: &[BlobEntry]) -> PackView {
        PackView { id: id.to_hex(), size, blobs: blobs.iter().map(BlobView::of).collect() }
    }
}

#[derive(Serialize)]
pub struct IndexView {
    pub id: String,
    pub supersedes: Vec<String>,
    pub packs: Vec<PackView>,
}

impl IndexView {
    pub fn of(id: &Id, f: &IndexFile) -> IndexView {
        IndexView {
            id: id.to_hex(),
            supersedes: f.supersedes.iter().map(Id::to_hex).collect(),
            packs: f.packs.iter().map(|p| PackView::of(&p.id, p.size, &p.blobs)).collect(),
        }
    }
}

#[derive(Serialize)]
pub struct TreeView {
    pub id: String,
    pub nodes: Vec<FullNodeView>,
}

#[derive(Serialize)]
pub struct KeyView<'a> {
    pub id: String,
    pub short_id: String,
    pub current: bool,
    pub kdf: &'static str,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    pub salt: String,
    pub sealed_payload_len: usize,
    pub created: Option<String>,
    pub created_ns: Option<i64>,
    pub hostname: Option<&'a str>,
    pub username: Option<&'a str>,
    pub error: &'a Option<String>,
}

impl<'a> KeyView<'a> {
    pub fn of(k: &'a KeyInfo) -> KeyView<'a> {
        let owner = k.owner.as_ref();
        KeyView {
            id: k.id.to_hex(),
            short_id: k.id.short(),
            current: k.current,
            kdf: k.kdf,
            m_kib: k.params.m_kib,
            t: k.params.t,
            p: k.params.p,
            salt: hex::encode(k.salt),
            sealed_payload_len: k.sealed_len,
            created: owner.map(|o| times::json(o.created_ns)),
            created_ns: owner.map(|o| o.created_ns),
            hostname: owner.map(|o| o.hostname.as_str()),
            username: owner.map(|o| o.username.as_str()),
            error: &k.error,
        }
    }
}

#[derive(Serialize)]
pub struct LockView<'a> {
    pub id: String,
    pub exclusive: bool,
    pub hostname: &'a str,
    pub username: &'a str,
    pub pid: u32,
    pub created: String,
    pub created_ns: i64,
    pub refreshed: String,
    pub refreshed_ns: i64,
}

impl<'a> LockView<'a> {
    pub fn of(id: &Id, l: &'a Lock) -> LockView<'a> {
        LockView {
            id: id.to_hex(),
            exclusive: l.exclusive,
            hostname: &l.hostname,
            username: &l.username,
            pid: l.pid,
            created: times::json(l.created_ns),
            created_ns: l.created_ns,
            refreshed: times::json(l.refreshed_ns),
            refreshed_ns: l.refreshed_ns,
        }
    }
}

#[derive(Serialize)]
pub struct RetaggedView<'a> {
    pub old_id: String,
    pub new_id: String,
    pub tags: &'a [String],
}

#[derive(Serialize)]
pub struct TagView<'a> {
    pub changed: Vec<RetaggedView<'a>>,
}

/// A key added (`key add`).
#[derive(Serialize)]
pub struct KeyAdded {
    pub id: String,
    pub short_id: String,
}

/// A key removed (`key remove`).
#[derive(Serialize)]
pub struct KeyRemoved {
    pub removed: String,
}

/// A password changed (`key passwd`).
#[derive(Serialize)]
pub struct KeyReplaced {
    pub old_id: String,
    pub new_id: String,
}

/// What a `snapshots --group-by` group has in common: only the fields
/// grouped by are present (restic's `group_key`).
#[derive(Serialize, Clone, PartialEq, Eq, Default)]
pub struct GroupKeyView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// One group of `snapshots --group-by --json`.
#[derive(Serialize)]
pub struct SnapshotGroupView<'a> {
    pub group_key: &'a GroupKeyView,
    pub snapshots: Vec<SnapshotView<'a>>,
}

/// What a `forget` group has in common; null for what it is not grouped by.
#[derive(Serialize)]
pub struct ForgetGroupKeyView<'a> {
    pub host: Option<&'a str>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<&'a [String]>,
}

impl<'a> ForgetGroupKeyView<'a> {
    pub fn of(key: &'a GroupKey) -> ForgetGroupKeyView<'a> {
        ForgetGroupKeyView {
            host: key.hostname.as_deref(),
            paths: key.paths.as_ref().map(|p| p.iter().map(|p| lossy(p)).collect()),
            tags: key.tags.as_deref(),
        }
    }
}

/// A snapshot `forget` keeps, with the rules that keep it.
#[derive(Serialize)]
pub struct KeptView<'a> {
    #[serde(flatten)]
    pub snapshot: SnapshotView<'a>,
    pub reasons: &'a [String],
}

#[derive(Serialize)]
pub struct ForgetGroupView<'a> {
    pub group: ForgetGroupKeyView<'a>,
    pub keep: Vec<KeptView<'a>>,
    pub remove: Vec<SnapshotView<'a>>,
}

impl<'a> ForgetGroupView<'a> {
    pub fn of(g: &'a ForgetGroup) -> ForgetGroupView<'a> {
        ForgetGroupView {
            group: ForgetGroupKeyView::of(&g.key),
            keep: g
                .keep
                .iter()
                .map(|(id, s, reasons)| KeptView { snapshot: SnapshotView::of(id, s), reasons })
                .collect(),
            remove: g.remove.iter().map(|(id, s)| SnapshotView::of(id, s)).collect(),
        }
    }
}

/// A snapshot object that could not be read.
#[derive(Serialize)]
pub struct UnreadableView<'a> {
    pub id: String,
    pub error: &'a str,
}

/// What `forget --json` prints: the plan per group, what was (or would be)
/// removed, and the prune that followed with `--prune`.
#[derive(Serialize)]
pub struct ForgetView<'a> {
    pub dry_run: bool,
    /// The policy applied; none when snapshots were named by id.
    pub policy: Option<String>,
    pub groups: Vec<ForgetGroupView<'a>>,
    pub would_remove: Vec<String>,
    pub removed: Vec<String>,
    pub unreadable: Vec<UnreadableView<'a>>,
    pub prune: Option<&'a PruneReport>,
}

impl<'a> ForgetView<'a> {
    pub fn of(policy: Option<String>, r: &'a ForgetReport, prune: Option<&'a PruneReport>) -> ForgetView<'a> {
        ForgetView {
            dry_run: r.dry_run,
            policy,
            groups: r.plan.groups.iter().map(ForgetGroupView::of).collect(),
            would_remove: r.plan.to_remove().iter().map(Id::to_hex).collect(),
            removed: r.removed.iter().map(Id::to_hex).collect(),
            unreadable: r.unreadable.iter().map(|(id, e)| UnreadableView { id: id.to_hex(), error: e }).collect(),
            prune,
        }
    }
}

/// A lock `unlock` removed; `lock` is none when it could not be read.
#[derive(Serialize)]
pub struct RemovedLockView {
    pub id: String,
    pub lock: Option<String>,
}

/// What `unlock --json` prints.
#[derive(Serialize)]
pub struct UnlockView {
    pub removed: Vec<RemovedLockView>,
}

/// What `init --json` prints: restic's `initialized` message (its
/// `message_type`, `id` and `repository`), and whether the repository
/// shares its keys with the one it was made from.
#[derive(Serialize)]
pub struct InitView {
    pub message_type: &'static str,
    pub id: String,
    pub repository: String,
    pub same_keys_as_source: bool,
}

/// What `version --json` prints.
#[derive(Serialize)]
pub struct VersionView {
    pub version: &'static str,
    pub repository_format: u8,
}

/// A cache directory in `cache --json`.
#[derive(Serialize)]
pub struct CacheView<'a> {
    pub repository_id: &'a str,
    pub path: String,
    pub bytes: u64,
    pub days_unused: u64,
}

/// What `telegram login --json` prints.
#[derive(Serialize)]
pub struct LoginView {
    pub user: String,
    pub session: String,
}
