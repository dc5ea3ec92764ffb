//! `repair index` and `repair packs`, both under an exclusive lock. Neither
//! loses what could be read before it ran.
//!
//! `repair index` rebuilds the index from storage: it reads storage afresh
//! (for Telegram, every message of the chat) and the sealed header of every
//! pack. A pack whose header does not open (a flipped bit, a truncated pack)
//! keeps the blobs the old index places in it wherever they still
//! authenticate there; a tree blob that only the local cache still holds (its
//! pack is gone or damaged) is written to a new pack. It then writes one
//! index object superseding every index object stored, and deletes those.
//!
//! `repair packs` heals damaged or missing packs: it downloads and verifies
//! the packs named (or every pack), copies every blob of a damaged pack that
//! still authenticates into new packs (plus tree blobs the local cache
//! holds), writes one index superseding all others that lists neither the
//! damaged packs nor the blobs that could not be saved, and only then
//! deletes the damaged packs. The next snapshot of the same sources stores
//! the lost blobs again, since no index lists them any more.
//!
//! Both report every blob they could not keep and the `snapshot:path`s that
//! need one. The head is written when the exclusive lock is released.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::archiver::pipeline::PipelineOptions;
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::pack::{header_offset, pack_id, BlobEntry, TRAILER_LEN};
use crate::format::tree::NodeKind;
use crate::format::{BlobType, Id, ObjectKind};
use crate::repo::index::MasterIndex;
use crate::repo::packer::Packer;
use crate::repo::{lock, RepoError, Repository};

/// Pack headers read at once.
const HEADERS_IN_FLIGHT: usize = 4;

/// A blob that a repair could not keep.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LostBlob {
    pub blob: String,
    /// `data` or `tree`.
    pub blob_type: String,
    /// The pack the old index placed it in.
    pub pack: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    /// Packs in the new index, and their blobs.
    pub packs: usize,
    pub blobs: usize,
    /// Packs whose headers could not be read, with the reason; their blobs
    /// are kept where they authenticate at the old index's locations.
    pub unreadable: Vec<(String, String)>,
    /// Blobs kept at the old index's locations in packs whose header does not open.
    pub blobs_kept_from_old_index: usize,
    /// Tree blobs only the local cache still held, written to new packs.
    pub trees_from_cache: usize,
    pub packs_written: usize,
    /// Index objects that could not be read: what they listed is unknown.
    pub unreadable_indexes: Vec<(String, String)>,
    /// Blobs the old index listed that are in no pack of the new one.
    pub lost: Vec<LostBlob>,
    /// Every `snapshot:path` that needs a blob the new index lacks.
    pub damaged_paths: Vec<String>,
    /// The new index object that supersedes the old ones (the last of them
    /// when the index takes several), if one was written.
    pub index: Option<String>,
    /// Index objects replaced by it.
    pub replaced: usize,
}

/// A pack `repair packs` found damaged, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DamagedPack {
    pub pack: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct PackRepairReport {
    /// Packs downloaded and verified (or found missing), and their size.
    pub packs_checked: usize,
    pub bytes_checked: u64,
    pub damaged: Vec<DamagedPack>,
    /// Blobs of damaged packs that authenticated, copied into new packs.
    pub blobs_salvaged: usize,
    /// Tree blobs only the local cache still held, written to new packs.
    pub trees_from_cache: usize,
    pub packs_written: usize,
    /// Blobs of damaged packs that could not be saved; no index lists them now.
    pub lost: Vec<LostBlob>,
    /// Every `snapshot:path` that needs a blob the new index lacks.
    pub damaged_paths: Vec<String>,
    pub index: Option<String>,
    pub index_objects_replaced: usize,
    /// Damaged packs deleted from storage.
    pub packs_deleted: usize,
}

/// Rebuilds the index under an exclusive lock.
pub async fn repair_index(repo: &Repository) -> Result<RepairReport, RepoError> {
    let guard = lock::acquire(repo, true).await?;
    let result = rebuild(repo, &guard).await;
    guard.release().await;
    result
}

/// Verifies the packs named by `packs` (ids or unique prefixes; none: every
/// pack stored or indexed) and repairs the damaged ones, under an exclusive lock.
pub async fn repair_packs(repo: &Repository, packs: &[String]) -> Result<PackRepairReport, RepoError> {
    let guard = lock::acquire(repo, true).await?;
    let result = heal_packs(repo, &guard, packs).await;
    guard.release().await;
    result
}

/// The packs the current (not superseded) index objects list, each with the
/// entries of the first object that lists it.
struct OldIndex {
    packs: Vec<IndexedPack>,
    pos: HashMap<Id, usize>,
}

impl OldIndex {
    fn new(files: &[(Id, IndexFile)]) -> OldIndex {
        let superseded: HashSet<Id> = files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
        let mut old = OldIndex { packs: Vec::new(), pos: HashMap::new() };
        for (id, file) in files {
            if superseded.contains(id) {
                continue;
            }
            for p in &file.packs {
                if !old.pos.contains_key(&p.id) {
                    old.pos.insert(p.id, old.packs.len());
                    old.packs.push(p.clone());
                }
            }
        }
        old
    }

    fn pack(&self, id: &Id) -> Option<&IndexedPack> {
        self.pos.get(id).map(|&i| &self.packs[i])
    }
}

/// Writes salvaged sealed blobs into new packs and uploads them as they fill.
struct Salvager<'a> {
    repo: &'a Repository,
    data: Packer,
    trees: Packer,
    have: HashSet<Id>,
    written: Vec<IndexedPack>,
}

impl<'a> Salvager<'a> {
    fn new(repo: &'a Repository) -> Salvager<'a> {
        let defaults = PipelineOptions::default();
        let data_size = repo.backend().preferred_pack_size().unwrap_or(defaults.data_pack_size);
        Salvager {
            repo,
            data: Packer::new(data_size.max(1)),
            trees: Packer::new(defaults.tree_pack_size.max(1)),
            have: HashSet::new(),
            written: Vec::new(),
        }
    }

    /// Adds an authenticated sealed blob; false if it was already added.
    async fn add(&mut self, blob_type: BlobType, id: Id, sealed: &[u8], raw_len: u32) -> Result<bool, RepoError> {
        if !self.have.insert(id) {
            return Ok(false);
        }
        let packer = match blob_type {
            BlobType::Data => &mut self.data,
            BlobType::Tree => &mut self.trees,
        };
        packer.add(blob_type, id, sealed, raw_len);
        if packer.is_full() {
            let fp = packer.finish(self.repo.keys(), self.repo.repo_id());
            self.written.push(upload(self.repo, fp).await?);
        }
        Ok(true)
    }

    async fn finish(mut self) -> Result<Vec<IndexedPack>, RepoError> {
        for blob_type in [BlobType::Data, BlobType::Tree] {
            let packer = match blob_type {
                BlobType::Data => &mut self.data,
                BlobType::Tree => &mut self.trees,
            };
            if !packer.is_empty() {
                let fp = packer.finish(self.repo.keys(), self.repo.repo_id());
                self.written.push(upload(self.repo, fp).await?);
            }
        }
        Ok(self.written)
    }
}

async fn upload(repo: &Repository, fp: crate::repo::packer::FinishedPack) -> Result<IndexedPack, RepoError> {
    let size = fp.data.len() as u64;
    repo.backend().put(ObjectKind::Pack, &fp.id, fp.data).await?;
    tracing::info!(pack = %fp.id.short(), size, blobs = fp.blobs.len(), "pack of salvaged blobs uploaded");
    Ok(IndexedPack { id: fp.id, size, blobs: fp.blobs })
}

/// The entries of `entries` whose sealed bytes inside `data` authenticate.
fn authenticating(repo: &Repository, data: &[u8], entries: &[BlobEntry]) -> (Vec<BlobEntry>, Vec<(BlobEntry, String)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for b in entries {
        let end = b.offset as usize + b.length as usize;
        match data.get(b.offset as usize..end) {
            Some(sealed) => match repo.open_blob(b.blob_type, &b.id, sealed, b.raw_len) {
                Ok(_) => good.push(*b),
                Err(e) => bad.push((*b, e.to_string())),
            },
            None => bad.push((*b, "it lies past the end of the pack".to_string())),
        }
    }
    (good, bad)
}

fn lost(b: &BlobEntry, pack: &Id, reason: impl Into<String>) -> LostBlob {
    LostBlob {
        blob: b.id.to_hex(),
        blob_type: b.blob_type.name().to_string(),
        pack: pack.to_hex(),
        reason: reason.into(),
    }
}

async fn rebuild(repo: &Repository, guard: &lock::LockGuard) -> Result<RepairReport, RepoError> {
    repo.backend().rescan().await?;
    let mut report = RepairReport::default();
    let listed: Vec<Id> = repo.backend().list(ObjectKind::Index).await?.into_iter().map(|o| o.id).collect();
    let (files, bad) = repo.load_index_files(false).await?;
    for (id, e) in bad {
        match e {
            // Storage errors are not damage: nothing is changed.
            RepoError::Backend(be) if !be.is_not_found() => return Err(be.into()),
            e => {
                tracing::warn!(index = %id.short(), error = %e, "an index object cannot be read; what it lists is rebuilt from pack headers only");
                report.unreadable_indexes.push((id.to_hex(), e.to_string()));
            }
        }
    }
    let old = OldIndex::new(&files);
    let packs = repo.backend().list(ObjectKind::Pack).await?;
    let mut stored: HashSet<Id> = packs.iter().map(|p| p.id).collect();
    let limit = Arc::new(Semaphore::new(HEADERS_IN_FLIGHT));
    let mut reads = tokio::task::JoinSet::new();
    for info in packs {
        let (repo, limit) = (repo.clone(), Arc::clone(&limit));
        reads.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (info, repo.read_pack_header(&info.id, info.size).await)
        });
    }
    let mut indexed = Vec::new();
    let mut headless = Vec::new();
    while let Some(done) = reads.join_next().await {
        let (info, header) = done.map_err(|e| RepoError::Invalid(format!("reading a pack header failed: {e}")))?;
        match header {
            Ok(blobs) => indexed.push(IndexedPack { id: info.id, size: info.size, blobs }),
            Err(RepoError::Damaged { what, reason }) => headless.push((info, format!("{what} is damaged: {reason}"))),
            // Gone since the listing: its blobs are treated as missing.
            Err(RepoError::Backend(e)) if e.is_not_found() => {
                stored.remove(&info.id);
            }
            // Storage errors are not damage: nothing is changed.
            Err(e) => return Err(e),
        }
    }
    headless.sort_by_key(|(info, _)| info.id);

    // Packs whose header does not open: keep what the old index places in
    // them, wherever it still authenticates.
    let mut lost_entries: Vec<(BlobEntry, Id, String)> = Vec::new();
    for (info, why) in headless {
        let entries = old.pack(&info.id).map(|p| p.blobs.clone()).unwrap_or_default();
        let (good, bad) = if entries.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let data = repo.backend().get(ObjectKind::Pack, &info.id).await?;
            let (repo2, entries2) = (repo.clone(), entries.clone());
            tokio::task::spawn_blocking(move || authenticating(&repo2, &data, &entries2))
                .await
                .map_err(|e| RepoError::Invalid(format!("verification task failed: {e}")))?
        };
        tracing::warn!(pack = %info.id, error = %why, kept = good.len(), of = entries.len(), "a pack header does not open");
        report.unreadable.push((
            info.id.to_hex(),
            format!(
                "{why}; kept {} of the {} blobs the old index places in it (`tstor repair packs {}` rewrites it)",
                good.len(),
                entries.len(),
                info.id.short()
            ),
        ));
        for (b, e) in bad {
            lost_entries.push((b, info.id, format!("its pack's header does not open and the blob does not authenticate at the old index's location: {e}")));
        }
        if !good.is_empty() {
            report.blobs_kept_from_old_index += good.len();
            indexed.push(IndexedPack { id: info.id, size: info.size, blobs: good });
        }
    }
    for p in &old.packs {
        if !stored.contains(&p.id) {
            lost_entries.extend(p.blobs.iter().map(|b| (*b, p.id, "its pack is missing from storage".to_string())));
        }
    }
    let mut present: HashSet<Id> = indexed.iter().flat_map(|p| p.blobs.iter().map(|b| b.id)).collect();
    // Blobs of packs whose header opens but does not list them.
    let noted: HashSet<Id> = lost_entries.iter().map(|(b, _, _)| b.id).collect();
    for p in old.packs.iter().filter(|p| stored.contains(&p.id)) {
        for b in &p.blobs {
            if !present.contains(&b.id) && !noted.contains(&b.id) {
                lost_entries.push((*b, p.id, "its pack's header does not list it".to_string()));
            }
        }
    }

    // What is still missing: trees may survive in the local cache.
    let mut salvager = Salvager::new(repo);
    let mut lost_blobs = Vec::new();
    let mut gone: HashSet<Id> = HashSet::new();
    lost_entries.sort_by_key(|(b, _, _)| b.id);
    for (b, pack, why) in lost_entries {
        if present.contains(&b.id) {
            continue;
        }
        if b.blob_type == BlobType::Tree {
            if let Some(sealed) = repo.cached_tree_blob(&b.id, b.raw_len) {
                if salvager.add(BlobType::Tree, b.id, &sealed, b.raw_len).await? {
                    report.trees_from_cache += 1;
                }
                present.insert(b.id);
                continue;
            }
        }
        present.insert(b.id);
        gone.insert(b.id);
        lost_blobs.push(lost(&b, &pack, why));
    }
    let written = salvager.finish().await?;
    report.packs_written = written.len();
    indexed.extend(written);
    indexed.sort_by_key(|p| p.id);
    report.packs = indexed.len();
    report.blobs = indexed.iter().map(|p| p.blobs.len()).sum();

    let mut builder = MasterIndex::builder();
    for p in &indexed {
        builder.add_pack(p);
    }
    let new_index = builder.finish();
    guard.ensure_held().await?;
    let ids = repo.write_index(indexed, listed.clone()).await?;
    report.index = ids.last().map(Id::to_hex);
    for o in listed.iter().filter(|o| !ids.contains(o)) {
        guard.ensure_fresh()?;
        repo.backend().delete(ObjectKind::Index, o).await?;
        report.replaced += 1;
    }
    if !gone.is_empty() {
        report.damaged_paths = affected_paths(repo, &new_index, &gone).await;
    }
    report.lost = lost_blobs;
    Ok(report)
}

/// What verifying one stored pack found.
struct Verdict {
    /// Why the pack is damaged; `None` when it is intact.
    damage: Option<String>,
    good: Vec<BlobEntry>,
    bad: Vec<(BlobEntry, String)>,
}

/// Verifies a downloaded pack: its id, its size against the index, its
/// header, and every blob that the index or the header places in it.
fn verify_pack(repo: &Repository, id: &Id, data: &[u8], indexed: Option<&IndexedPack>) -> Verdict {
    let mut damage = Vec::new();
    if pack_id(data) != *id {
        damage.push("its content does not match its id".to_string());
    }
    if let Some(p) = indexed.filter(|p| p.size != data.len() as u64) {
        damage.push(format!("it is {} bytes, the index says {}", data.len(), p.size));
    }
    let header = (|| {
        if data.len() < TRAILER_LEN {
            return Err("too short to be a pack".to_string());
        }
        let trailer: [u8; TRAILER_LEN] = data[data.len() - TRAILER_LEN..].try_into().map_err(|_| "short trailer")?;
        let start = header_offset(data.len() as u64, &trailer).map_err(|e| e.to_string())?;
        repo.open_pack_header(id, &data[start as usize..data.len() - TRAILER_LEN], start).map_err(|e| e.to_string())
    })();
    let mut entries: Vec<BlobEntry> = indexed.map(|p| p.blobs.clone()).unwrap_or_default();
    match header {
        Ok(listed) => {
            let known: HashSet<BlobEntry> = entries.iter().copied().collect();
            entries.extend(listed.into_iter().filter(|b| !known.contains(b)));
        }
        Err(e) => damage.push(format!("its header does not open: {e}")),
    }
    let (good, bad) = authenticating(repo, data, &entries);
    if !bad.is_empty() {
        damage.push(format!("{} of its {} blobs do not authenticate", bad.len(), entries.len()));
    }
    Verdict { damage: (!damage.is_empty()).then(|| damage.join("; ")), good, bad }
}

/// Resolves pack ids or unique prefixes among `known`.
fn resolve_packs(specs: &[String], known: &HashSet<Id>) -> Result<Vec<Id>, RepoError> {
    let mut out = Vec::new();
    for spec in specs {
        let lc = spec.to_ascii_lowercase();
        if lc.is_empty() || lc.len() > 64 || !lc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!("`{spec}` is not a pack id")));
        }
        let matches: Vec<Id> = known.iter().filter(|id| id.to_hex().starts_with(&lc)).copied().collect();
        match matches.len() {
            0 => return Err(RepoError::Invalid(format!("no pack in storage or in the index matches `{spec}`"))),
            1 => out.push(matches[0]),
            _ => {
                let candidates: Vec<(Id, String)> = matches.iter().map(|id| (*id, String::new())).collect();
                return Err(crate::repo::select::ambiguous(spec, "packs", &candidates));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn heal_packs(
    repo: &Repository,
    guard: &lock::LockGuard,
    specs: &[String],
) -> Result<PackRepairReport, RepoError> {
    repo.backend().rescan().await?;
    let mut report = PackRepairReport::default();
    let (files, bad) = repo.load_index_files(false).await?;
    if let Some((id, e)) = bad.into_iter().next() {
        return Err(RepoError::Damaged {
            what: format!("index object {}", id.short()),
            reason: format!("{e}; run `tstor repair index` first (repair packs changed nothing)"),
        });
    }
    let listed: Vec<Id> = files.iter().map(|(id, _)| *id).collect();
    let old = OldIndex::new(&files);
    let stored: HashMap<Id, u64> =
        repo.backend().list(ObjectKind::Pack).await?.into_iter().map(|o| (o.id, o.size)).collect();
    let known: HashSet<Id> = stored.keys().chain(old.pos.keys()).copied().collect();
    let chosen = if specs.is_empty() {
        let mut all: Vec<Id> = known.into_iter().collect();
        all.sort();
        all
    } else {
        resolve_packs(specs, &known)?
    };

    // 1. Verify; copy what authenticates out of every damaged pack.
    let mut salvager = Salvager::new(repo);
    let mut damaged: HashSet<Id> = HashSet::new();
    let mut unsaved: Vec<(BlobEntry, Id, String)> = Vec::new();
    for id in chosen {
        report.packs_checked += 1;
        let indexed = old.pack(&id);
        let data = match stored.get(&id) {
            None => None,
            Some(_) => match repo.backend().get(ObjectKind::Pack, &id).await {
                Ok(d) => Some(d),
                Err(e) if e.is_not_found() => None,
                // Storage errors are not damage: nothing is changed.
                Err(e) => return Err(e.into()),
            },
        };
        let Some(data) = data else {
            tracing::warn!(pack = %id, "pack is missing from storage");
            damaged.insert(id);
            report.damaged.push(DamagedPack { pack: id.to_hex(), reason: "it is missing from storage".into() });
            if let Some(p) = indexed {
                unsaved.extend(p.blobs.iter().map(|b| (*b, id, "its pack is missing from storage".to_string())));
            }
            continue;
        };
        report.bytes_checked += data.len() as u64;
        let (repo2, data2, indexed2) = (repo.clone(), data.clone(), indexed.cloned());
        let verdict = tokio::task::spawn_blocking(move || verify_pack(&repo2, &id, &data2, indexed2.as_ref()))
            .await
            .map_err(|e| RepoError::Invalid(format!("verification task failed: {e}")))?;
        let Some(why) = verdict.damage else { continue };
        tracing::warn!(pack = %id, reason = %why, salvaged = verdict.good.len(), "damaged pack");
        damaged.insert(id);
        report.damaged.push(DamagedPack { pack: id.to_hex(), reason: why });
        for b in &verdict.good {
            let sealed = &data[b.offset as usize..b.offset as usize + b.length as usize];
            if salvager.add(b.blob_type, b.id, sealed, b.raw_len).await? {
                report.blobs_salvaged += 1;
            }
        }
        unsaved.extend(verdict.bad.into_iter().map(|(b, e)| (b, id, e)));
    }
    if damaged.is_empty() {
        return Ok(report);
    }

    // 2. What no copy was saved of: an intact pack may hold it, or the cache (trees).
    let elsewhere: HashSet<Id> = old
        .packs
        .iter()
        .filter(|p| !damaged.contains(&p.id) && stored.contains_key(&p.id))
        .flat_map(|p| p.blobs.iter().map(|b| b.id))
        .collect();
    unsaved.sort_by_key(|(b, _, _)| b.id);
    let mut gone: HashSet<Id> = HashSet::new();
    for (b, pack, why) in unsaved {
        if salvager.have.contains(&b.id) || elsewhere.contains(&b.id) || gone.contains(&b.id) {
            continue;
        }
        if b.blob_type == BlobType::Tree {
            if let Some(sealed) = repo.cached_tree_blob(&b.id, b.raw_len) {
                salvager.add(BlobType::Tree, b.id, &sealed, b.raw_len).await?;
                report.trees_from_cache += 1;
                continue;
            }
        }
        gone.insert(b.id);
        report.lost.push(lost(&b, &pack, why));
    }
    let written = salvager.finish().await?;
    report.packs_written = written.len();

    // 3. One index without the damaged packs, superseding every index object.
    let mut packs: Vec<IndexedPack> = old.packs.iter().filter(|p| !damaged.contains(&p.id)).cloned().collect();
    packs.extend(written);
    let mut builder = MasterIndex::builder();
    for p in &packs {
        builder.add_pack(p);
    }
    let new_index = builder.finish();
    guard.ensure_held().await?;
    let index_ids = repo.write_index(packs, listed.clone()).await?;
    report.index = index_ids.last().map(Id::to_hex);
    for o in listed.iter().filter(|o| !index_ids.contains(o)) {
        guard.ensure_fresh()?;
        repo.backend().delete(ObjectKind::Index, o).await?;
        report.index_objects_replaced += 1;
    }

    // 4. Only now the damaged packs.
    let mut doomed: Vec<Id> = damaged.iter().filter(|id| stored.contains_key(id)).copied().collect();
    doomed.sort();
    if !doomed.is_empty() {
        guard.ensure_held().await?;
    }
    for id in doomed {
        guard.ensure_fresh()?;
        repo.backend().delete(ObjectKind::Pack, &id).await?;
        report.packs_deleted += 1;
    }
    report.damaged.sort_by(|a, b| a.pack.cmp(&b.pack));
    if !gone.is_empty() {
        report.damaged_paths = affected_paths(repo, &new_index, &gone).await;
    }
    Ok(report)
}

/// Every `snapshot:path` whose file data or directory is in `gone` or not in
/// `index`. Best effort: a snapshot that cannot be listed is left out.
async fn affected_paths(repo: &Repository, index: &MasterIndex, gone: &HashSet<Id>) -> Vec<String> {
    let snapshots = match repo.snapshots().await {
        Ok((s, _)) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list snapshots to name the paths affected");
            return Vec::new();
        }
    };
    let mut memo: HashMap<Id, Arc<Vec<String>>> = HashMap::new();
    let mut out = Vec::new();
    for (id, snap) in &snapshots {
        for p in affected_in(repo, index, gone, &mut memo, snap.tree).await.iter() {
            out.push(format!("{}:{}", id.short(), if p.is_empty() { "/" } else { p }));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The paths below tree `root` (relative; empty for the tree itself) that
/// are affected, each tree's list remembered in `memo`. Walked with an
/// explicit stack: one frame per directory on the current path.
async fn affected_in(
    repo: &Repository,
    index: &MasterIndex,
    gone: &HashSet<Id>,
    memo: &mut HashMap<Id, Arc<Vec<String>>>,
    root: Id,
) -> Arc<Vec<String>> {
    /// A tree being looked through: its entries left, what was found so
    /// far, and the name of the directory entered below it.
    struct Frame {
        tree: Id,
        nodes: std::vec::IntoIter<crate::format::tree::Node>,
        found: Vec<String>,
        entered: String,
    }
    fn prefixed<'s>(name: &'s str, paths: &'s [String]) -> impl Iterator<Item = String> + 's {
        paths.iter().map(move |p| if p.is_empty() { name.to_string() } else { format!("{name}/{p}") })
    }
    if let Some(v) = memo.get(&root) {
        return Arc::clone(v);
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut enter = Some(root);
    loop {
        if let Some(tree) = enter.take() {
            let (nodes, found) = match repo.load_tree(index, &tree).await {
                Err(_) => (Vec::new(), vec![String::new()]),
                Ok(t) => (t.nodes, Vec::new()),
            };
            stack.push(Frame { tree, nodes: nodes.into_iter(), found, entered: String::new() });
        }
        let top = stack.last_mut().expect("the root frame is popped last");
        let Some(node) = top.nodes.next() else {
            let done = stack.pop().expect("non-empty");
            let found = Arc::new(done.found);
            memo.insert(done.tree, Arc::clone(&found));
            match stack.last_mut() {
                None => return found,
                Some(parent) => {
                    let name = std::mem::take(&mut parent.entered);
                    parent.found.extend(prefixed(&name, &found));
                }
            }
            continue;
        };
        let name = String::from_utf8_lossy(&node.name).into_owned();
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => match memo.get(&sub) {
                Some(v) => top.found.extend(prefixed(&name, v)),
                None => {
                    top.entered = name;
                    enter = Some(sub);
                }
            },
            (NodeKind::File, _) if node.content.iter().any(|b| gone.contains(b) || !index.contains(b)) => {
                top.found.push(name);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_ids_resolve_by_unique_prefix_or_are_refused() {
        let a = Id([0xab; 32]);
        let b = Id([0xac; 32]);
        let known: HashSet<Id> = [a, b].into_iter().collect();
        assert_eq!(resolve_packs(&["ABAB".into(), a.to_hex()], &known).unwrap(), vec![a]);
        let err = |spec: &str| resolve_packs(&[spec.to_string()], &known).unwrap_err().to_string();
        assert!(err("a").contains("matches 2 packs"), "{}", err("a"));
        assert!(err("ff").contains("no pack"), "{}", err("ff"));
        assert!(err("xyz").contains("not a pack id"), "{}", err("xyz"));
        assert!(err("").contains("not a pack id"));
        assert!(err(&"a".repeat(65)).contains("not a pack id"));
    }
}
