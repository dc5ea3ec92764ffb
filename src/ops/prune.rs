//! `prune`: removes the data no snapshot needs, under an exclusive lock.
//!
//! It reads every index object and every snapshot, walks all their trees to
//! find the blobs in use, and gives each used blob one *home*: a stored pack
//! that holds it (packs with the least unused content first, so duplicates
//! left by interrupted runs collapse into the cleanest copy). Then:
//!
//! - packs with no home blob are deleted (indexed ones, and packs no index
//!   lists: leftovers of interrupted snapshots and prunes), except packs no
//!   index lists that are younger than the grace period
//!   ([`UNINDEXED_PACK_GRACE`]; a snapshot may be uploading them) or whose
//!   header cannot be read (they may hold the only copy of some data): those
//!   are left alone and reported;
//! - packs partly unused are repacked, the most wasteful first, until the
//!   unused space left is under `--max-unused` (restic's rule: `5%` means
//!   unused ≤ 5% of everything stored) and within `--max-repack-size`: their
//!   home blobs are read with ranged reads, authenticated, and copied as sealed
//!   bytes (blobs are not bound to their pack) into new packs; *small* packs
//!   (under 1/25 of their target size) are repacked first whatever the unused
//!   space, and wholly used small ones too once there are at least ten of them
//!   (restic's rule), so that many small snapshots end in few packs;
//! - the rest is kept as it is.
//!
//! Order of the writes, which is what makes an interruption harmless:
//!
//! 1. upload the new packs;
//! 2. write ONE index object listing every kept and new pack, whose
//!    `supersedes` names every index object in storage (also those already
//!    superseded, so that deleting them in any order never revives one);
//! 3. delete the old index objects;
//! 4. delete the packs that are no longer listed;
//! 5. drop the trees no snapshot uses from the local cache.
//!
//! The index is also rewritten (steps 2 and 3 alone) when more index objects
//! are in force than the kept packs need: each snapshot writes one.
//!
//! Interrupted before 2, the old index is intact and the new packs are merely
//! unindexed (`check` warns; the next prune deletes them or, if a snapshot
//! indexed them meanwhile, treats their blobs as duplicates). Interrupted after
//! 2, readers see only the new index, which lists every used blob in a pack
//! that exists; the packs still awaiting deletion are unindexed (a warning) or
//! re-indexed by the next snapshot, and the next prune deletes them either way,
//! because every run decides from scratch. The lock is proved held (re-read
//! and refreshed) before the index is written and before the packs are
//! deleted, and checked for freshness before every deletion.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::archiver::pipeline::PipelineOptions;
use crate::format::index::{index_objects_for, IndexFile, IndexedPack, MAX_INDEX_ENTRIES};
use crate::format::pack::BlobEntry;
use crate::format::{BlobType, Id, ObjectKind};
use crate::repo::index::MasterIndex;
use crate::repo::lock::LockGuard;
use crate::repo::packer::{FinishedPack, Packer};
use crate::repo::{RepoError, Repository};

/// Packs no index lists are deleted only once storage says they are at
/// least this old: younger ones may belong to a snapshot still uploading
/// (one whose lock a user removed, or that was paused past the stale limit:
/// it will not commit, but nothing should be deleted under it either). Twice
/// the stale limit of locks; a pack of unknown age counts as young.
pub const UNINDEXED_PACK_GRACE: Duration = Duration::from_secs(60 * 60);

/// A pack smaller than this share of its kind's target size (`1/25`, as in
/// restic) is *small*: a snapshot of few changes writes such packs, and on
/// Telegram each pack is a message of its own.
const SMALL_PACK_DIVISOR: u64 = 25;

/// Small packs wholly in use are merged only when at least this many exist
/// (restic's rule): fewer are not worth rewriting, and a lone pack below the
/// target must not be rewritten by every prune.
const MIN_SMALL_PACKS: usize = 10;

/// How much unused space may stay in packs that are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// Unused space at most this share (0–100) of all pack content after the prune.
    Percent(f64),
    Bytes(u64),
    Unlimited,
}

impl MaxUnused {
    /// The unused bytes tolerated when `used` bytes are in use.
    fn limit(&self, used: u64) -> u64 {
        match *self {
            MaxUnused::Percent(p) if p >= 100.0 => u64::MAX,
            MaxUnused::Percent(p) => (p / (100.0 - p) * used as f64) as u64,
            MaxUnused::Bytes(b) => b,
            MaxUnused::Unlimited => u64::MAX,
        }
    }
}

impl FromStr for MaxUnused {
    type Err = String;
    fn from_str(s: &str) -> Result<MaxUnused, String> {
        let s = s.trim();
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| format!("`{s}` is not a percentage"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("`{s}` is not between 0% and 100%"));
            }
            return Ok(MaxUnused::Percent(v));
        }
        crate::ops::check::parse_size(s).map(MaxUnused::Bytes)
    }
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Decide and report, change nothing.
    pub dry_run: bool,
    pub max_unused: MaxUnused,
    /// Repack at most this many bytes of packs.
    pub max_repack_bytes: Option<u64>,
    pub data_pack_size: usize,
    pub tree_pack_size: usize,
    /// Unindexed packs younger than this are left alone.
    pub unindexed_grace: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        let p = PipelineOptions::default();
        PruneOptions {
            dry_run: false,
            max_unused: MaxUnused::Percent(5.0),
            max_repack_bytes: None,
            data_pack_size: p.data_pack_size,
            tree_pack_size: p.tree_pack_size,
            unindexed_grace: UNINDEXED_PACK_GRACE,
        }
    }
}

/// What a prune found and did (or, in a dry run, would do). Byte counts of
/// packs are whole pack files; used and unused bytes count sealed blobs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    /// Packs in storage before the prune, and their size.
    pub packs: usize,
    pub bytes: u64,
    /// Blobs the snapshots use, and their sealed size (one copy each).
    pub used_blobs: usize,
    pub used_bytes: u64,
    /// Sealed bytes of everything else in stored packs (unused blobs and duplicates).
    pub unused_bytes: u64,
    /// Packs no index listed (left by interrupted runs), included in the counts below.
    pub unindexed_packs: usize,
    /// Unindexed packs left alone because they are younger than the grace period.
    pub young_unindexed_packs: usize,
    /// Unindexed packs left alone because their header cannot be read.
    pub unreadable_unindexed_packs: Vec<UnreadablePack>,
    /// Packs deleted because nothing in them is used.
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    /// Used blobs copied out of repacked packs.
    pub blobs_repacked: usize,
    pub bytes_repacked: u64,
    pub packs_written: usize,
    pub bytes_written: u64,
    pub packs_kept: usize,
    /// Indexed packs missing from storage that no snapshot needs, dropped from the index.
    pub missing_packs_dropped: usize,
    /// Index objects replaced by the new one.
    pub index_objects_replaced: usize,
    /// Size of every pack deleted (unused and repacked).
    pub bytes_deleted: u64,
    /// `bytes_deleted - bytes_written`.
    pub bytes_reclaimed: u64,
    /// Unused sealed bytes left in kept packs.
    pub unused_bytes_after: u64,
    /// Packs in storage afterwards, and their size.
    pub packs_after: usize,
    pub bytes_after: u64,
    /// Whether the repository needed no change.
    pub nothing_to_do: bool,
}

/// An unindexed pack prune could not read and therefore kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnreadablePack {
    /// The pack id in hex.
    pub id: String,
    pub reason: String,
}

/// One pack as prune sees it.
struct PackInfo {
    pack: IndexedPack,
    indexed: bool,
    stored: bool,
    /// Unindexed and younger than the grace period: never deleted or repacked.
    young: bool,
}

/// Everything prune reads before deciding.
struct State {
    /// Every index object in storage.
    index_ids: Vec<Id>,
    superseded_in_storage: usize,
    packs: Vec<PackInfo>,
    /// Unindexed packs whose header does not open: kept, and reported.
    unreadable_unindexed: Vec<(Id, String)>,
    used: HashSet<Id>,
    snapshots: usize,
    stored_packs: usize,
    stored_bytes: u64,
}

/// Reads the index objects, the packs in storage and every snapshot's trees.
/// Anything unreadable stops the prune before it changes anything: what a
/// damaged object refers to cannot be known, so nothing can be safely deleted.
async fn load_state(repo: &Repository, forgotten: &HashSet<Id>, grace: Duration) -> Result<State, RepoError> {
    let backend = repo.backend();
    let listed = backend.list(ObjectKind::Index).await?;
    let mut files: Vec<(Id, IndexFile)> = Vec::with_capacity(listed.len());
    for info in &listed {
        let what = || format!("index object {}", info.id.short());
        let plain = repo.load_object(ObjectKind::Index, &info.id).await.map_err(|e| refuse(what(), e))?;
        let file = IndexFile::decode(&plain).map_err(|e| refuse(what(), RepoError::Invalid(e.to_string())))?;
        files.push((info.id, file));
    }
    let superseded: HashSet<Id> = files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
    let listed_packs = backend.list(ObjectKind::Pack).await?;
    let stored: HashMap<Id, u64> = listed_packs.iter().map(|o| (o.id, o.size)).collect();
    let now = crate::host::now_ns();
    let young: HashSet<Id> = listed_packs
        .iter()
        .filter(|o| o.stored_ns.is_none_or(|t| now.saturating_sub(t) < grace.as_nanos() as i64))
        .map(|o| o.id)
        .collect();

    let mut packs: Vec<PackInfo> = Vec::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let index_ids: Vec<Id> = files.iter().map(|(id, _)| *id).collect();
    let superseded_in_storage = index_ids.iter().filter(|id| superseded.contains(id)).count();
    // Consumed as they are sorted out: each pack's list is held once.
    for (id, file) in files {
        if superseded.contains(&id) {
            continue;
        }
        for p in file.packs {
            if !seen.insert(p.id) {
                continue;
            }
            let stored_size = stored.get(&p.id).copied();
            if stored_size.is_some_and(|s| s != p.size) {
                tracing::warn!(pack = %p.id.short(), indexed = p.size, stored = stored_size, "pack size differs from the index");
            }
            packs.push(PackInfo { pack: p, indexed: true, stored: stored_size.is_some(), young: false });
        }
    }
    let mut unindexed: Vec<(Id, u64)> =
        stored.iter().filter(|(id, _)| !seen.contains(id)).map(|(i, s)| (*i, *s)).collect();
    unindexed.sort();
    let mut unreadable_unindexed = Vec::new();
    for (id, size) in unindexed {
        match repo.read_pack_header(&id, size).await {
            Ok(blobs) => packs.push(PackInfo {
                pack: IndexedPack { id, size, blobs },
                indexed: false,
                stored: true,
                young: young.contains(&id),
            }),
            Err(RepoError::Damaged { reason, .. }) => {
                tracing::warn!(pack = %id.short(), %reason, "an unindexed pack's header does not open; it is left alone");
                unreadable_unindexed.push((id, reason));
            }
            Err(e) => return Err(e),
        }
    }

    let (snapshots, bad) = repo.snapshots().await?;
    if let Some((id, e)) = bad.into_iter().find(|(id, _)| !forgotten.contains(id)) {
        return Err(refuse(format!("snapshot {}", id.short()), e));
    }
    // Trees are read through the packs that exist, indexed ones first.
    let mut builder = MasterIndex::builder();
    for p in packs.iter().filter(|p| p.stored && p.indexed).chain(packs.iter().filter(|p| !p.indexed)) {
        builder.add_pack(&p.pack);
    }
    let lookup = builder.finish();
    let mut used: HashSet<Id> = HashSet::new();
    let mut stack: Vec<Id> = Vec::new();
    let mut counted = 0;
    for (id, snap) in &snapshots {
        if forgotten.contains(id) {
            continue;
        }
        counted += 1;
        if used.insert(snap.tree) {
            stack.push(snap.tree);
        }
    }
    while let Some(tree_id) = stack.pop() {
        let (tree, parts) = repo
            .load_tree_parts(&lookup, &tree_id)
            .await
            .map_err(|e| refuse(format!("tree {}", tree_id.short()), e))?;
        // The blobs a split directory is stored in are used like the tree itself.
        used.extend(parts);
        for node in &tree.nodes {
            if let Some(sub) = node.subtree {
                if used.insert(sub) {
                    stack.push(sub);
                }
            }
            used.extend(node.content.iter().copied());
        }
    }
    Ok(State {
        index_ids,
        superseded_in_storage,
        packs,
        unreadable_unindexed,
        used,
        snapshots: counted,
        stored_packs: stored.len(),
        stored_bytes: stored.values().sum(),
    })
}

/// Damage found while reading: prune stops before changing anything. Storage
/// errors pass through as they are.
fn refuse(what: String, e: RepoError) -> RepoError {
    let reason = match e {
        RepoError::Damaged { reason, .. } => reason,
        RepoError::Invalid(reason) => reason,
        other => return other,
    };
    RepoError::Damaged { what, reason: format!("{reason}; prune changes nothing until `tstor check` passes") }
}

/// What to do with each pack (indices into `State::packs`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    keep: Vec<usize>,
    /// Partly used packs to rewrite, with the blobs to copy out of each.
    repack: Vec<(usize, Vec<BlobEntry>)>,
    /// Stored packs holding nothing used.
    delete: Vec<usize>,
    /// Indexed packs missing from storage that nothing needs.
    dropped: Vec<usize>,
    /// Unindexed packs younger than the grace period holding nothing used: left alone.
    young: Vec<usize>,
    used_bytes: u64,
    unused_bytes: u64,
    unused_after: u64,
}

/// Decides what to keep, repack and delete (pure).
fn make_plan(packs: &[PackInfo], used: &HashSet<Id>, opts: &PruneOptions) -> Result<Plan, RepoError> {
    let n = packs.len();
    let total: Vec<u64> = packs.iter().map(|p| p.pack.blobs.iter().map(|b| u64::from(b.length)).sum()).collect();
    let used_any: Vec<u64> = packs
        .iter()
        .map(|p| p.pack.blobs.iter().filter(|b| used.contains(&b.id)).map(|b| u64::from(b.length)).sum())
        .collect();
    // Homes go to the cleanest packs first, then the fullest, indexed before unindexed.
    let mut order: Vec<usize> = (0..n).filter(|&i| packs[i].stored).collect();
    order.sort_by_key(|&i| (total[i] - used_any[i], Reverse(used_any[i]), !packs[i].indexed, packs[i].pack.id));
    let mut homed: HashSet<Id> = HashSet::with_capacity(used.len());
    let mut homes: Vec<Vec<BlobEntry>> = vec![Vec::new(); n];
    for &i in &order {
        for b in &packs[i].pack.blobs {
            if used.contains(&b.id) && homed.insert(b.id) {
                homes[i].push(*b);
            }
        }
    }
    if homed.len() < used.len() {
        let mut missing: Vec<String> = used.iter().filter(|id| !homed.contains(id)).map(Id::short).collect();
        let count = missing.len();
        missing.sort();
        missing.truncate(5);
        return Err(RepoError::Damaged {
            what: "repository".into(),
            reason: format!(
                "{count} blobs that snapshots use are in no stored pack (e.g. {}); prune changes nothing until `tstor check` passes",
                missing.join(", ")
            ),
        });
    }

    let small = |p: &PackInfo| {
        let trees_only = p.pack.blobs.iter().all(|b| b.blob_type == BlobType::Tree);
        let target = if trees_only { opts.tree_pack_size } else { opts.data_pack_size };
        p.pack.size < target as u64 / SMALL_PACK_DIVISOR
    };
    let mut plan = Plan::default();
    let mut candidates: Vec<(usize, u64, u64)> = Vec::new(); // (pack, home bytes, unused bytes)
    let mut small_full: Vec<(usize, u64, u64)> = Vec::new();
    for (i, p) in packs.iter().enumerate() {
        if !p.stored {
            plan.dropped.push(i);
            continue;
        }
        let home: u64 = homes[i].iter().map(|b| u64::from(b.length)).sum();
        plan.used_bytes += home;
        plan.unused_bytes += total[i] - home;
        if homes[i].is_empty() && p.young {
            plan.young.push(i);
        } else if homes[i].is_empty() {
            plan.delete.push(i);
        } else if p.young {
            plan.keep.push(i);
        } else if homes[i].len() == p.pack.blobs.len() && small(p) {
            small_full.push((i, home, 0));
        } else if homes[i].len() == p.pack.blobs.len() {
            plan.keep.push(i);
        } else {
            candidates.push((i, home, total[i] - home));
        }
    }
    if small_full.len() < MIN_SMALL_PACKS {
        plan.keep.extend(small_full.iter().map(|c| c.0));
        small_full.clear();
    }
    // Most unused share first (restic's order), then by id for determinism.
    candidates.sort_by(|a, b| {
        let share_a = u128::from(a.2) * u128::from(b.1 + b.2);
        let share_b = u128::from(b.2) * u128::from(a.1 + a.2);
        share_b.cmp(&share_a).then(packs[a.0].pack.id.cmp(&packs[b.0].pack.id))
    });
    // Small packs go first and are merged whatever the unused space (restic's
    // order and rule); the others only while too much unused space is left.
    let (small_partly, large): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|c| small(&packs[c.0]));
    let limit = opts.max_unused.limit(plan.used_bytes);
    let mut unused_left: u64 = small_partly.iter().chain(&large).map(|c| c.2).sum();
    let mut repack_bytes = 0u64;
    let small_count = small_full.len() + small_partly.len();
    for (n, (i, _, unused)) in small_full.into_iter().chain(small_partly).chain(large).enumerate() {
        let size = packs[i].pack.size;
        let over_budget = opts.max_repack_bytes.is_some_and(|max| repack_bytes + size > max);
        if over_budget || (n >= small_count && unused_left < limit) {
            plan.keep.push(i);
            continue;
        }
        repack_bytes += size;
        unused_left -= unused;
        let mut blobs = std::mem::take(&mut homes[i]);
        blobs.sort_by_key(|b| b.offset);
        plan.repack.push((i, blobs));
    }
    plan.unused_after = unused_left;
    plan.keep.sort_unstable();
    Ok(plan)
}

/// Prunes under `lock`, which must be exclusive unless this is a dry run.
pub async fn prune(repo: &Repository, lock: &LockGuard, opts: &PruneOptions) -> Result<PruneReport, RepoError> {
    run(repo, lock, opts, &HashSet::new()).await
}

/// A dry run as if the snapshots in `forgotten` were already gone (for
/// `forget --dry-run --prune`).
pub async fn simulate(
    repo: &Repository,
    lock: &LockGuard,
    opts: &PruneOptions,
    forgotten: &HashSet<Id>,
) -> Result<PruneReport, RepoError> {
    run(repo, lock, &PruneOptions { dry_run: true, ..opts.clone() }, forgotten).await
}

async fn run(
    repo: &Repository,
    lock: &LockGuard,
    opts: &PruneOptions,
    forgotten: &HashSet<Id>,
) -> Result<PruneReport, RepoError> {
    if !opts.dry_run && !lock.is_exclusive() {
        return Err(RepoError::Invalid("prune needs an exclusive lock".into()));
    }
    let state = load_state(repo, forgotten, opts.unindexed_grace).await?;
    let plan = make_plan(&state.packs, &state.used, opts)?;
    let p = |i: usize| &state.packs[i];
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        snapshots: state.snapshots,
        packs: state.stored_packs,
        bytes: state.stored_bytes,
        used_blobs: state.used.len(),
        used_bytes: plan.used_bytes,
        unused_bytes: plan.unused_bytes,
        unindexed_packs: state.packs.iter().filter(|p| !p.indexed).count() + state.unreadable_unindexed.len(),
        young_unindexed_packs: plan.young.len(),
        unreadable_unindexed_packs: state
            .unreadable_unindexed
            .iter()
            .map(|(id, reason)| UnreadablePack { id: id.to_hex(), reason: reason.clone() })
            .collect(),
        packs_deleted: plan.delete.len(),
        packs_repacked: plan.repack.len(),
        blobs_repacked: plan.repack.iter().map(|(_, b)| b.len()).sum(),
        bytes_repacked: plan.repack.iter().map(|(i, _)| p(*i).pack.size).sum(),
        packs_kept: plan.keep.len(),
        missing_packs_dropped: plan.dropped.len(),
        unused_bytes_after: plan.unused_after,
        ..Default::default()
    };
    report.bytes_deleted = report.bytes_repacked + plan.delete.iter().map(|&i| p(i).pack.size).sum::<u64>();
    let adopted = plan.keep.iter().any(|&i| !p(i).indexed);
    // Every snapshot writes an index object of its own: more objects than the
    // kept packs need are merged, even when no pack changes.
    let live_index_objects = state.index_ids.len() - state.superseded_in_storage;
    let index_objects_needed = index_objects_for(plan.keep.iter().map(|&i| p(i).pack.blobs.len()), MAX_INDEX_ENTRIES);
    report.nothing_to_do = plan.delete.is_empty()
        && plan.repack.is_empty()
        && plan.dropped.is_empty()
        && state.superseded_in_storage == 0
        && live_index_objects <= index_objects_needed
        && !adopted;
    if opts.dry_run || report.nothing_to_do {
        if !report.nothing_to_do {
            // Estimates: the used blobs copied, in packs of the configured sizes.
            report.index_objects_replaced = state.index_ids.len();
            let copied = |t: BlobType| -> u64 {
                plan.repack
                    .iter()
                    .flat_map(|(_, b)| b.iter())
                    .filter(|b| b.blob_type == t)
                    .map(|b| u64::from(b.length))
                    .sum()
            };
            let packs_for = |bytes: u64, target: usize| bytes.div_ceil(target.max(1) as u64) as usize;
            let (data, trees) = (copied(BlobType::Data), copied(BlobType::Tree));
            report.bytes_written = data + trees;
            report.packs_written = packs_for(data, opts.data_pack_size) + packs_for(trees, opts.tree_pack_size);
        }
        if !opts.dry_run {
            evict_unused_trees(repo, &state.used);
        }
        finish_counts(&mut report);
        return Ok(report);
    }
    tracing::info!(delete = plan.delete.len(), repack = plan.repack.len(), keep = plan.keep.len(), "prune plan made");

    // 1. New packs, from the used blobs of the packs being repacked.
    let new_packs = repack(repo, &state, &plan, opts).await?;
    report.packs_written = new_packs.len();
    report.bytes_written = new_packs.iter().map(|p| p.size).sum();

    // 2. The index of everything kept, superseding every index object.
    let mut listed: Vec<IndexedPack> = plan.keep.iter().map(|&i| p(i).pack.clone()).collect();
    listed.extend(new_packs);
    lock.ensure_held().await?;
    let index_ids = repo.write_index(listed, state.index_ids.clone()).await?;
    let replaced: Vec<&Id> = state.index_ids.iter().filter(|id| !index_ids.contains(id)).collect();
    tracing::info!(objects = index_ids.len(), replaced = replaced.len(), "new index written");
    report.index_objects_replaced = replaced.len();

    // 3. The old index objects, once every new one is stored (harmless to
    // delete: the last new one supersedes them).
    for id in replaced {
        lock.ensure_fresh()?;
        repo.backend().delete(ObjectKind::Index, id).await?;
    }

    // 4. Packs no index lists any more.
    let doomed = plan.delete.iter().chain(plan.repack.iter().map(|(i, _)| i)).map(|&i| p(i).pack.id);
    lock.ensure_held().await?;
    for id in doomed {
        lock.ensure_fresh()?;
        repo.backend().delete(ObjectKind::Pack, &id).await?;
        tracing::debug!(pack = %id.short(), "pack deleted");
    }
    // 5. The trees no snapshot uses leave the local cache.
    evict_unused_trees(repo, &state.used);
    finish_counts(&mut report);
    tracing::info!(reclaimed = report.bytes_reclaimed, "prune finished");
    Ok(report)
}

/// Drops from the local cache every tree not in `used`: the trees of
/// forgotten snapshots, which prune deleted or left unused, would otherwise
/// stay cached for good. Best effort: the cache is never the source of truth.
fn evict_unused_trees(repo: &Repository, used: &HashSet<Id>) {
    let Some(cache) = repo.cache() else { return };
    let unused: Vec<Id> = match cache.tree_ids() {
        Ok(ids) => ids.into_iter().filter(|id| !used.contains(id)).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the cached trees");
            return;
        }
    };
    if unused.is_empty() {
        return;
    }
    match cache.remove_trees(&unused) {
        Ok(()) => tracing::info!(trees = unused.len(), "unused trees evicted from the cache"),
        Err(e) => tracing::debug!(error = %e, "cannot evict unused trees from the cache"),
    }
}

fn finish_counts(r: &mut PruneReport) {
    r.bytes_reclaimed = r.bytes_deleted.saturating_sub(r.bytes_written);
    r.packs_after = (r.packs + r.packs_written).saturating_sub(r.packs_deleted + r.packs_repacked);
    r.bytes_after = (r.bytes + r.bytes_written).saturating_sub(r.bytes_deleted);
}

/// Gaps between wanted blobs up to this size are read through rather than
/// splitting a ranged read.
const READ_THROUGH_GAP: u32 = 256 << 10;

/// Copies the home blobs of every pack in `plan.repack` into new packs and
/// uploads them. Every blob is authenticated before it is copied.
async fn repack(
    repo: &Repository,
    state: &State,
    plan: &Plan,
    opts: &PruneOptions,
) -> Result<Vec<IndexedPack>, RepoError> {
    let mut data = Packer::new(opts.data_pack_size.max(1));
    let mut trees = Packer::new(opts.tree_pack_size.max(1));
    let mut written = Vec::new();
    for (i, blobs) in &plan.repack {
        let pack_id = state.packs[*i].pack.id;
        let mut rest: &[BlobEntry] = blobs;
        while let Some(first) = rest.first() {
            let mut n = 1;
            while n < rest.len() && rest[n].offset <= rest[n - 1].offset + rest[n - 1].length + READ_THROUGH_GAP {
                n += 1;
            }
            let (run, tail) = rest.split_at(n);
            rest = tail;
            let start = first.offset;
            let last = &run[n - 1];
            let len = last.offset + last.length - start;
            let bytes = repo.backend().get_range(ObjectKind::Pack, &pack_id, u64::from(start), len).await?;
            let (repo2, run2, bytes2) = (repo.clone(), run.to_vec(), bytes.clone());
            tokio::task::spawn_blocking(move || -> Result<(), RepoError> {
                for b in &run2 {
                    let at = (b.offset - start) as usize;
                    repo2.open_blob(b.blob_type, &b.id, &bytes2[at..at + b.length as usize], b.raw_len)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| RepoError::Invalid(format!("verification task failed: {e}")))??;
            for b in run {
                let at = (b.offset - start) as usize;
                let packer = match b.blob_type {
                    BlobType::Data => &mut data,
                    BlobType::Tree => &mut trees,
                };
                packer.add(b.blob_type, b.id, &bytes[at..at + b.length as usize], b.raw_len);
                if packer.is_full() {
                    let fp = packer.finish(repo.keys(), repo.repo_id());
                    written.push(upload(repo, fp).await?);
                }
            }
        }
    }
    for packer in [&mut data, &mut trees] {
        if !packer.is_empty() {
            let fp = packer.finish(repo.keys(), repo.repo_id());
            written.push(upload(repo, fp).await?);
        }
    }
    Ok(written)
}

async fn upload(repo: &Repository, fp: FinishedPack) -> Result<IndexedPack, RepoError> {
    let size = fp.data.len() as u64;
    repo.backend().put(ObjectKind::Pack, &fp.id, fp.data).await?;
    tracing::debug!(pack = %fp.id.short(), size, blobs = fp.blobs.len(), "repacked pack uploaded");
    Ok(IndexedPack { id: fp.id, size, blobs: fp.blobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, offset: u32, length: u32) -> BlobEntry {
        BlobEntry { blob_type: BlobType::Data, id: Id([n; 32]), offset, length, raw_len: length }
    }

    fn pack(n: u8, blobs: Vec<BlobEntry>, indexed: bool, stored: bool) -> PackInfo {
        let size = blobs.iter().map(|b| u64::from(b.length)).sum::<u64>() + 100;
        PackInfo { pack: IndexedPack { id: Id([n; 32]), size, blobs }, indexed, stored, young: false }
    }

    /// Targets small enough that none of the packs here counts as small.
    fn opts(max_unused: MaxUnused) -> PruneOptions {
        PruneOptions { max_unused, data_pack_size: 1000, tree_pack_size: 1000, ..Default::default() }
    }

    #[test]
    fn small_packs_are_merged_once_there_are_enough_of_them() {
        // Packs of 200 bytes against a 25 KB target (small below 1 KB).
        let small = PruneOptions { data_pack_size: 25_000, ..opts(MaxUnused::Unlimited) };
        let full =
            |count: u8| -> Vec<PackInfo> { (0..count).map(|n| pack(n, vec![blob(n, 0, 100)], true, true)).collect() };
        let used_all = |count: u8| -> HashSet<Id> { (0..count).map(|n| Id([n; 32])).collect() };
        let nine = make_plan(&full(9), &used_all(9), &small).unwrap();
        assert_eq!((nine.keep.len(), nine.repack.len()), (9, 0), "too few to be worth merging");
        let ten = make_plan(&full(10), &used_all(10), &small).unwrap();
        assert_eq!((ten.keep.len(), ten.repack.len()), (0, 10));
        assert!(ten.repack.iter().all(|(i, b)| b == &vec![blob(*i as u8, 0, 100)]));
        let large = make_plan(&full(10), &used_all(10), &opts(MaxUnused::Unlimited)).unwrap();
        assert_eq!((large.keep.len(), large.repack.len()), (10, 0), "packs near their target stay");

        // A partly used small pack is merged even when unused space is tolerated.
        let partly = vec![pack(1, vec![blob(10, 0, 100), blob(11, 100, 100)], true, true)];
        let used: HashSet<Id> = [Id([10; 32])].into_iter().collect();
        assert_eq!(make_plan(&partly, &used, &small).unwrap().repack.len(), 1);
        assert_eq!(make_plan(&partly, &used, &opts(MaxUnused::Unlimited)).unwrap().repack.len(), 0);
        // The repack budget still binds.
        let capped = PruneOptions { max_repack_bytes: Some(500), ..small };
        assert_eq!(make_plan(&full(10), &used_all(10), &capped).unwrap().repack.len(), 2);
    }

    #[test]
    fn classifies_packs() {
        let packs = vec![
            pack(1, vec![blob(10, 0, 100), blob(11, 100, 100)], true, true), // fully used
            pack(2, vec![blob(20, 0, 100)], true, true),                     // unused
            pack(3, vec![blob(30, 0, 100), blob(31, 100, 900)], true, true), // 90% unused
            pack(4, vec![blob(40, 0, 900), blob(41, 900, 100)], true, true), // 10% unused
            pack(5, vec![blob(50, 0, 100)], true, false),                    // missing, unused
            pack(6, vec![blob(10, 0, 100)], false, true),                    // unindexed duplicate
        ];
        let used: HashSet<Id> = [10, 11, 30, 40].iter().map(|&n| Id([n; 32])).collect();
        let all = make_plan(&packs, &used, &opts(MaxUnused::Percent(0.0))).unwrap();
        assert_eq!(all.keep, vec![0]);
        assert_eq!(all.delete, vec![1, 5]);
        assert_eq!(all.dropped, vec![4]);
        assert_eq!(all.repack.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2, 3], "most wasteful first");
        assert_eq!(all.repack[0].1, vec![blob(30, 0, 100)]);
        assert_eq!((all.used_bytes, all.unused_bytes, all.unused_after), (1200, 1200, 0));
        // 20% unused of what stays tolerates 300 unused bytes beside the 1200 used:
        // pack 3 (900 unused) goes, pack 4 (100) stays.
        let some = make_plan(&packs, &used, &opts(MaxUnused::Percent(20.0))).unwrap();
        assert_eq!(some.repack.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2]);
        assert_eq!(some.keep, vec![0, 3]);
        assert_eq!(some.unused_after, 100);
        let none = make_plan(&packs, &used, &opts(MaxUnused::Unlimited)).unwrap();
        assert!(none.repack.is_empty());
        // Each partly used pack is 1100 bytes: a budget of 1100 repacks one.
        let budget = PruneOptions { max_repack_bytes: Some(1100), ..opts(MaxUnused::Percent(0.0)) };
        let capped = make_plan(&packs, &used, &budget).unwrap();
        assert_eq!(capped.repack.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2]);
        assert_eq!(capped.keep, vec![0, 3]);
    }

    #[test]
    fn duplicates_collapse_into_the_cleanest_copy() {
        // An old pack partly used, and a fully used copy of its used blobs
        // (left by an interrupted repack): the old pack goes.
        let packs = vec![
            pack(1, vec![blob(10, 0, 100), blob(11, 100, 500), blob(12, 600, 100)], true, true),
            pack(2, vec![blob(10, 0, 100), blob(12, 100, 100)], true, true),
        ];
        let used: HashSet<Id> = [10, 12].iter().map(|&n| Id([n; 32])).collect();
        let plan = make_plan(&packs, &used, &opts(MaxUnused::Percent(5.0))).unwrap();
        assert_eq!((plan.keep, plan.delete), (vec![1], vec![0]));
    }

    #[test]
    fn a_used_blob_in_no_pack_stops_everything() {
        let packs = vec![pack(1, vec![blob(10, 0, 100)], true, false)];
        let used: HashSet<Id> = [Id([10; 32])].into_iter().collect();
        assert!(matches!(make_plan(&packs, &used, &opts(MaxUnused::Percent(5.0))), Err(RepoError::Damaged { .. })));
    }

    #[test]
    fn parses_max_unused() {
        assert_eq!("5%".parse::<MaxUnused>().unwrap(), MaxUnused::Percent(5.0));
        assert_eq!("unlimited".parse::<MaxUnused>().unwrap(), MaxUnused::Unlimited);
        assert_eq!("10M".parse::<MaxUnused>().unwrap(), MaxUnused::Bytes(10 << 20));
        assert!("120%".parse::<MaxUnused>().is_err());
        assert_eq!(MaxUnused::Percent(50.0).limit(1000), 1000);
        assert_eq!(MaxUnused::Percent(100.0).limit(1000), u64::MAX);
    }
}
