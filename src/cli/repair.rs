//! Flags and printing for `repair`: `repair index` rebuilds the index from
//! the pack headers, keeping what the old index still locates; `repair packs`
//! rewrites damaged or missing packs (see `ops::repair`); `repair snapshots`
//! rewrites snapshots without what can no longer be read (`ops::rewrite`).

use anyhow::Result;
use clap::Subcommand;

use super::output::escape;
use super::{open_repo, Global};
use crate::ops;
use crate::ops::repair::LostBlob;

#[derive(Subcommand)]
pub(super) enum RepairCommand {
    /// Rebuild the index from the headers of every pack in storage (for
    /// Telegram, found by reading the whole chat) and write a new head. Blobs
    /// in packs whose header is damaged are kept where the old index places
    /// them if they still authenticate there; trees only the local cache
    /// holds are stored again. Exits 1 if any blob could not be kept.
    Index,
    /// Download and verify packs, copy every blob of a damaged or missing
    /// pack that still authenticates into new packs, drop the rest from the
    /// index and delete the damaged packs. The next `snapshot` of the same
    /// sources stores the dropped blobs again. Exits 1 if any blob could not
    /// be saved.
    Packs {
        /// Packs to repair, by id or unique id prefix (as `check --verify`
        /// names them); with none, every pack is verified
        #[arg(value_name = "PACK_ID")]
        packs: Vec<String>,
    },
    /// Rewrite snapshots whose trees or data are damaged or missing, as
    /// restic does: a file missing data blobs (as the index says) is removed
    /// and named, a directory whose tree cannot be read becomes an empty
    /// directory. The new snapshots name the originals and are tagged
    /// `repaired`. Run `repair index` (and `repair packs`) first. A snapshot
    /// whose root cannot be read cannot be repaired: exit 1, or with
    /// --forget it is removed.
    Snapshots {
        /// Snapshots to repair: ids, unique prefixes or `latest` (default:
        /// every snapshot the filters match)
        snapshots: Vec<String>,
        /// Delete each original once its repaired copy is saved
        #[arg(long)]
        forget: bool,
        /// Show what would change; write nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
        #[command(flatten)]
        filter: super::snapshot_commands::FilterArgs,
    },
}

fn print_lost(lost: &[LostBlob], damaged_paths: &[String]) {
    for l in lost {
        errln!("warning: {} blob {} (pack {}) could not be kept: {}", l.blob_type, l.blob, l.pack, escape(&l.reason));
    }
    for p in damaged_paths {
        errln!("damaged: {}", escape(p));
    }
    if !lost.is_empty() {
        errln!(
            "tstor: {} blobs could not be kept; a `tstor snapshot` of the same sources stores again those they still hold",
            lost.len()
        );
    }
}

pub(super) async fn cmd_repair(g: &Global, c: RepairCommand) -> Result<u8> {
    match c {
        RepairCommand::Index => {
            let repo = open_repo(g).await?;
            let report = ops::repair::repair_index(&repo).await?;
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!(
                    "indexed {} packs ({} blobs); replaced {} index objects",
                    report.packs,
                    report.blobs,
                    report.replaced
                );
                if report.blobs_kept_from_old_index > 0 || report.trees_from_cache > 0 {
                    outln!(
                        "kept {} blobs at the old index's locations; stored {} trees from the local cache in {} new packs",
                        report.blobs_kept_from_old_index, report.trees_from_cache, report.packs_written
                    );
                }
                for (pack, why) in &report.unreadable {
                    errln!("warning: pack {pack}: {}", escape(why));
                }
                for (index, why) in &report.unreadable_indexes {
                    errln!("warning: index object {index} could not be read: {}", escape(why));
                }
                print_lost(&report.lost, &report.damaged_paths);
            }
            Ok(if report.lost.is_empty() { 0 } else { 1 })
        }
        RepairCommand::Snapshots { snapshots, forget, dry_run, filter } => {
            let target = ops::rewrite::RewriteTarget { specs: snapshots, filter: filter.filter()?, forget, dry_run };
            let repo = open_repo(g).await?;
            let report = ops::rewrite::repair_snapshots(&repo, &target).await?;
            super::snapshot_commands::print_report(g, &report, "repaired")
        }
        RepairCommand::Packs { packs } => {
            let repo = open_repo(g).await?;
            let report = ops::repair::repair_packs(&repo, &packs).await?;
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!(
                    "verified {} packs ({}); {} damaged",
                    report.packs_checked,
                    super::human(report.bytes_checked),
                    report.damaged.len()
                );
                for d in &report.damaged {
                    errln!("damaged pack {}: {}", d.pack, escape(&d.reason));
                }
                if report.damaged.is_empty() {
                    outln!("nothing to repair");
                } else {
                    outln!(
                        "saved {} blobs ({} trees from the local cache) in {} new packs; replaced {} index objects; deleted {} packs",
                        report.blobs_salvaged + report.trees_from_cache,
                        report.trees_from_cache,
                        report.packs_written,
                        report.index_objects_replaced,
                        report.packs_deleted
                    );
                }
                print_lost(&report.lost, &report.damaged_paths);
            }
            Ok(if report.lost.is_empty() { 0 } else { 1 })
        }
    }
}
