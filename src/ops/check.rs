//! `check`: the repository's structure (every snapshot's trees and blobs are
//! indexed and their packs exist) and, with verification, the content of
//! every pack or a random part of them (downloaded, hashed, every blob
//! authenticated and its id recomputed). Damage is reported by pack, by blob
//! and by every `snapshot:path` it affects. A snapshot filter (host, tags,
//! ids) limits the reading to the chosen snapshots' trees and, with
//! verification, to the packs they use.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::seq::SliceRandom;
use serde::Serialize;

use crate::format::pack::{header_offset, pack_id, BlobEntry, TRAILER_LEN};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{validate_name, NodeKind};
use crate::format::{Id, ObjectKind};
use crate::repo::index::MasterIndex;
use crate::repo::{RepoError, Repository};

/// How much pack content to download and verify.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VerifyScope {
    /// Structure only.
    None,
    All,
    /// A random share of the packs (0.0–1.0).
    Fraction(f64),
    /// Random packs up to about this many bytes.
    Bytes(u64),
}

impl VerifyScope {
    /// Parses `10%`, `500MiB`, `2G` or a plain byte count.
    pub fn parse_subset(s: &str) -> Result<VerifyScope, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| format!("`{s}` is not a percentage"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("`{s}` is not between 0% and 100%"));
            }
            return Ok(VerifyScope::Fraction(v / 100.0));
        }
        parse_size(s).map(VerifyScope::Bytes)
    }
}

/// Parses a size such as `500MiB`, `2G`, `10k` or `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("`{s}` has an unknown unit")),
    };
    Ok((n * mult as f64) as u64)
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub pack: Option<String>,
    pub blob: Option<String>,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub blobs: usize,
    pub trees_checked: usize,
    pub packs_verified: usize,
    pub bytes_verified: u64,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// Every `snapshot:path` whose data is damaged or missing.
    pub damaged_paths: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, pack: Option<&Id>, blob: Option<&Id>, message: impl Into<String>) {
        let message = message.into();
        tracing::error!(pack = pack.map(|p| p.short()), blob = blob.map(|b| b.short()), %message, "check found a problem");
        self.problems.push(Problem { pack: pack.map(Id::to_hex), blob: blob.map(Id::to_hex), message });
    }
}

/// What `check` tells while it runs.
/// What a check has done: first the packs downloaded and verified (with
/// `--verify`), then the snapshots whose trees were walked. Each call
/// follows the work it counts, so that a bar ends when the check does.
pub trait CheckProgress: Send + Sync {
    fn verify_total(&self, _packs: usize, _bytes: u64) {}
    /// A pack of `bytes` was downloaded and verified.
    fn pack_verified(&self, _bytes: u64) {}
    /// The trees of `snapshots` snapshots are walked next.
    fn trees_total(&self, _snapshots: usize) {}
    /// One snapshot's trees were walked.
    fn snapshot_checked(&self) {}
}

pub struct NoCheckProgress;
impl CheckProgress for NoCheckProgress {}

/// Verifies one pack's bytes: its id, its header against the index, and every
/// blob. Returns the problems and the blobs found damaged.
fn verify_pack(repo: &Repository, id: &Id, data: &[u8], indexed: &[BlobEntry]) -> (Vec<(Option<Id>, String)>, Vec<Id>) {
    let mut problems = Vec::new();
    let mut damaged = Vec::new();
    if pack_id(data) != *id {
        problems.push((None, "pack content does not match its id (the file is damaged)".to_string()));
    }
    let header = (|| {
        if data.len() < TRAILER_LEN {
            return Err("too short to be a pack".to_string());
        }
        let trailer: [u8; TRAILER_LEN] = data[data.len() - TRAILER_LEN..].try_into().expect("4 bytes");
        let start = header_offset(data.len() as u64, &trailer).map_err(|e| e.to_string())?;
        repo.open_pack_header(id, &data[start as usize..data.len() - TRAILER_LEN], start).map_err(|e| e.to_string())
    })();
    match header {
        Ok(entries) => {
            let in_header: HashSet<&BlobEntry> = entries.iter().collect();
            for b in indexed {
                if !in_header.contains(b) {
                    problems.push((Some(b.id), "the index places this blob where the pack header does not".into()));
                }
            }
        }
        Err(e) => problems.push((None, format!("pack header unreadable: {e}"))),
    }
    for b in indexed {
        let end = b.offset as usize + b.length as usize;
        let result = match data.get(b.offset as usize..end) {
            Some(sealed) => repo.open_blob(b.blob_type, &b.id, sealed, b.raw_len).map(|_| ()),
            None => Err(RepoError::Damaged { what: format!("blob {}", b.id), reason: "outside the pack".into() }),
        };
        if let Err(e) = result {
            problems.push((Some(b.id), e.to_string()));
            damaged.push(b.id);
        }
    }
    (problems, damaged)
}

/// Which snapshots `check` reads (restic's snapshot filters): all when
/// empty, else those of `host`, carrying every tag of `tags`, and, when ids
/// (or id prefixes) are given, only those.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub ids: Vec<String>,
}

impl SnapshotFilter {
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.tags.is_empty() && self.ids.is_empty()
    }

    /// The snapshots of `snaps` it selects; an id that matches none, or
    /// more than one, is an error.
    pub fn select(&self, snaps: Vec<(Id, Snapshot)>) -> Result<Vec<(Id, Snapshot)>, RepoError> {
        let mut wanted: HashSet<Id> = HashSet::new();
        for spec in &self.ids {
            let spec_lc = spec.to_ascii_lowercase();
            let matching: Vec<Id> = if spec_lc == "latest" {
                snaps.last().map(|(id, _)| *id).into_iter().collect()
            } else {
                snaps.iter().filter(|(id, _)| id.to_hex().starts_with(&spec_lc)).map(|(id, _)| *id).collect()
            };
            match matching.len() {
                1 => wanted.insert(matching[0]),
                0 => return Err(RepoError::Invalid(format!("no snapshot matches `{spec}`"))),
                n => return Err(RepoError::Invalid(format!("`{spec}` matches {n} snapshots; give more of the id"))),
            };
        }
        Ok(snaps
            .into_iter()
            .filter(|(id, _)| self.ids.is_empty() || wanted.contains(id))
            .filter(|(_, s)| self.host.as_ref().is_none_or(|h| &s.hostname == h))
            .filter(|(_, s)| self.tags.iter().all(|t| s.tags.contains(t)))
            .collect())
    }
}

/// The packs holding the blobs of the trees `roots` (trees and data), for a
/// verification limited to some snapshots. A tree that cannot be read is
/// skipped here; the tree walk reports it.
async fn packs_of_snapshots(repo: &Repository, index: &MasterIndex, roots: &[Id]) -> HashSet<Id> {
    let mut packs = HashSet::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut todo: Vec<Id> = roots.to_vec();
    while let Some(tree_id) = todo.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        packs.extend(index.lookup(&tree_id).map(|l| l.pack));
        let Ok(tree) = repo.load_tree(index, &tree_id).await else { continue };
        for node in tree.nodes {
            packs.extend(node.content.iter().filter_map(|b| index.lookup(b)).map(|l| l.pack));
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                todo.push(sub);
            }
        }
    }
    packs
}

fn choose_packs(mut packs: Vec<(Id, u64)>, scope: VerifyScope) -> Vec<(Id, u64)> {
    match scope {
        VerifyScope::None => Vec::new(),
        VerifyScope::All => packs,
        VerifyScope::Fraction(f) => {
            packs.shuffle(&mut rand::thread_rng());
            let n = ((packs.len() as f64) * f).ceil() as usize;
            packs.truncate(n.min(packs.len()));
            packs
        }
        VerifyScope::Bytes(limit) => {
            packs.shuffle(&mut rand::thread_rng());
            let mut total = 0u64;
            packs
                .into_iter()
                .take_while(|(_, size)| {
                    let take = total < limit;
                    total += size;
                    take
                })
                .collect()
        }
    }
}

/// The shape of a subtree found clean: how many levels of entries it holds
/// and its longest path (from inside it), which decide whether it is within
/// the limits of §22 where else it is reached.
#[derive(Clone, Copy, Default)]
struct Extent {
    levels: usize,
    longest: usize,
}

impl Extent {
    /// Takes in an entry named with `name_len` bytes holding `below`.
    fn include(&mut self, name_len: usize, below: Extent) {
        self.levels = self.levels.max(1 + below.levels);
        let longest = if below.levels == 0 { name_len } else { name_len + 1 + below.longest };
        self.longest = self.longest.max(longest);
    }
}

/// One directory being checked: its entries still to look at.
struct Frame {
    tree: Id,
    nodes: std::vec::IntoIter<crate::format::tree::Node>,
    /// Length of the walk's path buffer at this directory.
    path_len: usize,
    /// Bytes of this directory's own name (0 for a root).
    name_len: usize,
    clean: bool,
    extent: Extent,
}

/// The tree walk of `check`, one snapshot after another. The walk keeps an
/// explicit stack whose frames hold only their directory's unvisited
/// entries, and one path buffer; a tree found clean (it and everything below
/// readable, indexed and undamaged) is remembered by id with its extent and
/// not read again where it fits the limits, so a snapshot costs its distinct
/// trees, however often they are referenced.
struct TreeWalk<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    damaged: &'a HashSet<Id>,
    clean: HashMap<Id, Extent>,
    /// Trees read and found not clean: read again where they are reached again.
    unclean: HashSet<Id>,
    /// Trees that could not be read, and why.
    failed: HashMap<Id, String>,
    damaged_paths: Vec<String>,
}

impl<'a> TreeWalk<'a> {
    /// Reads a tree, or says why it cannot be read.
    async fn load(&mut self, id: &Id, report: &mut CheckReport) -> Result<crate::format::tree::Tree, String> {
        if let Some(e) = self.failed.get(id) {
            return Err(e.clone());
        }
        if !self.unclean.contains(id) {
            report.trees_checked += 1;
        }
        let result = if self.damaged.contains(id) {
            Err("tree blob is damaged".to_string())
        } else {
            self.repo.load_tree_from_storage(self.index, id).await.map_err(|e| e.to_string())
        };
        if let Err(e) = &result {
            self.failed.insert(*id, e.clone());
        }
        result
    }

    async fn snapshot(&mut self, snap_id: &Id, root: &Id, report: &mut CheckReport) {
        let (index, damaged) = (self.index, self.damaged);
        let snap = snap_id.short();
        let lossy = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let cut = |p: &[u8]| lossy(&p[..p.len().min(200)]);
        let mut path: Vec<u8> = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        // The tree to enter next: (id, its name length).
        let mut enter: Option<(Id, usize)> = (!self.clean.contains_key(root)).then_some((*root, 0));
        loop {
            if let Some((tree_id, name_len)) = enter.take() {
                match self.load(&tree_id, report).await {
                    Ok(tree) => stack.push(Frame {
                        tree: tree_id,
                        nodes: tree.nodes.into_iter(),
                        path_len: path.len(),
                        name_len,
                        clean: true,
                        extent: Extent::default(),
                    }),
                    Err(e) => {
                        let shown = if path.is_empty() { "/".to_string() } else { lossy(&path) };
                        report.problem(None, Some(&tree_id), format!("snapshot {snap} directory {shown}: {e}"));
                        self.damaged_paths.push(format!("{snap}:{shown}"));
                        if let Some(parent) = stack.last_mut() {
                            parent.clean = false;
                            path.truncate(parent.path_len);
                        }
                    }
                }
            }
            let Some(top) = stack.last_mut() else { break };
            let Some(node) = top.nodes.next() else {
                let done = stack.pop().expect("non-empty");
                if done.clean {
                    self.clean.insert(done.tree, done.extent);
                    self.unclean.remove(&done.tree);
                } else {
                    self.unclean.insert(done.tree);
                }
                if let Some(parent) = stack.last_mut() {
                    parent.clean &= done.clean;
                    parent.extent.include(done.name_len, done.extent);
                    path.truncate(parent.path_len);
                }
                continue;
            };
            let depth = stack.len();
            let top = stack.last_mut().expect("non-empty");
            path.truncate(top.path_len);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&node.name);
            if let Err(e) = crate::format::check_entry_limits(depth, path.len()) {
                report.problem(None, Some(&top.tree), format!("snapshot {snap} {}: {e}", cut(&path)));
                top.clean = false;
                continue;
            }
            if let Err(e) = validate_name(&node.name) {
                report.problem(None, Some(&top.tree), format!("snapshot {snap} {}: unsafe name: {e}", lossy(&path)));
                top.clean = false;
                continue;
            }
            match node.kind {
                NodeKind::Dir => match node.subtree {
                    Some(sub) if index.contains(&sub) || damaged.contains(&sub) => {
                        // A clean tree is entered again only where it would
                        // pass a limit.
                        match self.clean.get(&sub) {
                            Some(below)
                                if crate::format::check_entry_limits(
                                    depth + below.levels,
                                    path.len() + usize::from(below.levels > 0) + below.longest,
                                )
                                .is_ok() =>
                            {
                                top.extent.include(node.name.len(), *below);
                            }
                            _ => enter = Some((sub, node.name.len())),
                        }
                    }
                    Some(sub) => {
                        report.problem(
                            None,
                            Some(&sub),
                            format!("snapshot {snap} {}: tree not in the index", lossy(&path)),
                        );
                        self.damaged_paths.push(format!("{snap}:{}", lossy(&path)));
                        top.clean = false;
                    }
                    None => top.extent.include(node.name.len(), Extent::default()),
                },
                NodeKind::File => {
                    top.extent.include(node.name.len(), Extent::default());
                    let mut lost = false;
                    let content_len: u64 =
                        node.content.iter().filter_map(|b| index.lookup(b)).map(|l| u64::from(l.raw_len)).sum();
                    let all_indexed = node.content.iter().all(|b| index.contains(b));
                    if all_indexed && content_len != node.size {
                        report.problem(
                            None,
                            Some(&top.tree),
                            format!(
                                "snapshot {snap} {}: size {} differs from its content's {content_len} bytes",
                                lossy(&path),
                                node.size
                            ),
                        );
                    }
                    for blob in &node.content {
                        if damaged.contains(blob) {
                            lost = true;
                        } else if !index.contains(blob) {
                            report.problem(
                                None,
                                Some(blob),
                                format!("snapshot {snap} {}: data blob not in the index", lossy(&path)),
                            );
                            lost = true;
                        }
                    }
                    if lost {
                        self.damaged_paths.push(format!("{snap}:{}", lossy(&path)));
                        top.clean = false;
                    }
                }
                _ => top.extent.include(node.name.len(), Extent::default()),
            }
        }
    }
}

pub async fn check(
    repo: &Repository,
    scope: VerifyScope,
    filter: &SnapshotFilter,
    progress: Arc<dyn CheckProgress>,
) -> Result<CheckReport, RepoError> {
    let mut report = CheckReport::default();
    // The snapshots to read, chosen first so that a bad filter stops early.
    let (snapshots, bad_snaps) = repo.snapshots().await?;
    let snapshots = filter.select(snapshots)?;
    // Snapshots that cannot be read are named only when all are checked.
    let bad_snaps = if filter.is_empty() { bad_snaps } else { Vec::new() };
    report.warnings.extend(repo.backend().readable_by_others());
    let (index, bad_indexes) = repo.load_index_report(false).await?;
    for (id, e) in bad_indexes {
        report.problem(None, None, format!("index object {}: {e}", id.short()));
    }
    report.packs = index.packs().len();
    report.blobs = index.blob_count();

    // Packs: every indexed pack must be stored, at the indexed size.
    let stored: HashMap<Id, u64> =
        repo.backend().list(ObjectKind::Pack).await?.into_iter().map(|o| (o.id, o.size)).collect();
    let mut damaged: HashSet<Id> = HashSet::new();
    let mut missing: Vec<Id> = Vec::new();
    for (id, size) in index.packs() {
        match stored.get(id) {
            None => {
                report.problem(Some(id), None, "pack is missing from storage");
                missing.push(*id);
            }
            Some(s) if s != size => {
                report.problem(Some(id), None, format!("pack is {s} bytes, the index says {size}"));
            }
            Some(_) => {}
        }
    }
    for blobs in index.blobs_by_pack(&missing).into_values() {
        damaged.extend(blobs.iter().map(|b| b.id));
    }
    // Unindexed packs: the next snapshot indexes those whose header opens;
    // the others are named as `snapshot` and `prune` name them.
    let mut unindexed: Vec<(Id, u64)> =
        stored.iter().filter(|(id, _)| !index.has_pack(id)).map(|(id, s)| (*id, *s)).collect();
    unindexed.sort();
    for (id, size) in unindexed {
        match repo.read_pack_header(&id, size).await {
            Ok(_) => report.warnings.push(format!(
                "pack {} is not in any index (left by an interrupted run): the next snapshot indexes it, or `tstor repair index` now",
                id.short()
            )),
            Err(RepoError::Backend(e)) if e.is_not_found() => {}
            Err(RepoError::Backend(e)) if e.needs_login() => return Err(RepoError::Backend(e)),
            Err(e) => report.warnings.push(crate::repo::describe_unreadable_pack(&id.short(), &e.to_string())),
        }
    }

    // Content verification.
    // With a snapshot filter only the packs its snapshots use are verified.
    let candidates: Vec<(Id, u64)> = if filter.is_empty() || scope == VerifyScope::None {
        index.packs().to_vec()
    } else {
        let roots: Vec<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
        let used = packs_of_snapshots(repo, &index, &roots).await;
        index.packs().iter().filter(|(id, _)| used.contains(id)).copied().collect()
    };
    let chosen: Vec<(Id, u64)> =
        choose_packs(candidates, scope).into_iter().filter(|(id, _)| stored.contains_key(id)).collect();
    progress.verify_total(chosen.len(), chosen.iter().map(|(_, s)| s).sum());
    // Each chosen pack's blobs, from one pass over the index; a pack's list
    // goes to its verification task and is dropped with it.
    let mut pack_blobs = index.blobs_by_pack(&chosen.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    let mut tasks = tokio::task::JoinSet::new();
    let mut chosen = chosen.into_iter();
    let parallel = 2;
    loop {
        while tasks.len() < parallel {
            let Some((id, _)) = chosen.next() else { break };
            let repo = repo.clone();
            let indexed = pack_blobs.remove(&id).unwrap_or_default();
            tasks.spawn(async move {
                let data = repo.backend().get(ObjectKind::Pack, &id).await;
                let len = data.as_ref().map(|d| d.len() as u64).unwrap_or(0);
                let verdict = match data {
                    Ok(data) => tokio::task::spawn_blocking(move || verify_pack(&repo, &id, &data, &indexed))
                        .await
                        .unwrap_or_else(|e| (vec![(None, format!("verification task failed: {e}"))], Vec::new())),
                    Err(e) => (vec![(None, format!("cannot download: {e}"))], indexed.iter().map(|b| b.id).collect()),
                };
                (id, len, verdict)
            });
        }
        let Some(done) = tasks.join_next().await else { break };
        let (id, len, (problems, bad)) =
            done.map_err(|e| RepoError::Invalid(format!("verification task failed: {e}")))?;
        report.packs_verified += 1;
        report.bytes_verified += len;
        progress.pack_verified(len);
        for (blob, msg) in problems {
            report.problem(Some(&id), blob.as_ref(), msg);
        }
        damaged.extend(bad);
    }

    // Snapshots: walk every tree; note each path whose data is gone.
    for (id, e) in bad_snaps {
        report.problem(None, None, format!("snapshot {}: {e}", id.short()));
    }
    report.snapshots = snapshots.len();
    let mut walk = TreeWalk {
        repo,
        index: &index,
        damaged: &damaged,
        clean: HashMap::new(),
        unclean: HashSet::new(),
        failed: HashMap::new(),
        damaged_paths: Vec::new(),
    };
    progress.trees_total(snapshots.len());
    for (snap_id, snap) in &snapshots {
        walk.snapshot(snap_id, &snap.tree, &mut report).await;
        progress.snapshot_checked();
    }
    let mut damaged_paths = walk.damaged_paths;
    damaged_paths.sort();
    damaged_paths.dedup();
    report.damaged_paths = damaged_paths;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subsets() {
        assert_eq!(VerifyScope::parse_subset("10%").unwrap(), VerifyScope::Fraction(0.1));
        assert_eq!(VerifyScope::parse_subset("500MiB").unwrap(), VerifyScope::Bytes(500 << 20));
        assert_eq!(VerifyScope::parse_subset("2G").unwrap(), VerifyScope::Bytes(2 << 30));
        assert!(VerifyScope::parse_subset("150%").is_err());
        assert!(VerifyScope::parse_subset("lots").is_err());
    }
}
