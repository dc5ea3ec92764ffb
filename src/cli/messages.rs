//! The bodies of `--json` lines (see `jsonl`) for `snapshot` and `restore`:
//! status while they run, a line per file with `-v`, the summary at the end.
//! Field names are restic's where the meaning is the same; the snapshot
//! summary also keeps the names tstor used before (`files_unchanged`,
//! `bytes_added`, ...). Times are RFC 3339 with the offset.

use serde::Serialize;

use crate::archiver::{RunSummary, SnapshotOutcome};
use crate::format::Id;
use crate::restorer::RestoreOutcome;

use super::times;

/// `status` while a snapshot runs. Bytes done are settled: read and, when
/// new, stored in an uploaded pack.
#[derive(Serialize, Debug)]
pub struct SnapshotStatus {
    pub seconds_elapsed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_remaining: Option<u64>,
    /// From 0 to 1.
    pub percent_done: f64,
    pub total_files: u64,
    pub files_done: u64,
    pub total_bytes: u64,
    pub bytes_done: u64,
    pub error_count: u64,
    pub current_files: Vec<String>,
}

/// `verbose_status` for each file a snapshot stored (`-v`).
#[derive(Serialize, Debug)]
pub struct FileStatus {
    /// `new`, `modified` or `unchanged`.
    pub action: &'static str,
    pub item: String,
    pub data_size: u64,
    /// Files done so far, this one included.
    pub total_files: u64,
}

/// `verbose_status` for each entry a restore handles (`-v`).
#[derive(Serialize, Debug)]
pub struct RestoreItemStatus {
    /// restic's words: `restored`, `updated`, `unchanged`, `deleted`; and
    /// `skipped` for what the overwrite mode keeps as it is.
    pub action: &'static str,
    pub item: String,
}

/// `status` while a restore runs.
#[derive(Serialize, Debug)]
pub struct RestoreStatus {
    pub seconds_elapsed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_remaining: Option<u64>,
    pub percent_done: f64,
    pub total_bytes: u64,
    pub bytes_restored: u64,
    pub error_count: u64,
}

#[derive(Serialize, Debug)]
pub struct PathError {
    pub path: String,
    pub error: String,
}

#[derive(Serialize, Debug)]
pub struct UnreadablePack {
    pub id: String,
    pub reason: String,
}

/// `summary` of a snapshot.
#[derive(Serialize, Debug)]
pub struct SnapshotSummary {
    /// The snapshot saved; none in a dry run (with `--skip-if-unchanged`
    /// and nothing changed: the parent's).
    pub snapshot_id: Option<String>,
    pub short_id: Option<String>,
    pub dry_run: bool,
    /// `--skip-if-unchanged` found nothing changed: no snapshot saved.
    pub skipped_unchanged: bool,
    pub parent: Option<String>,
    pub files_new: u64,
    pub files_changed: u64,
    /// restic's name for `files_unchanged`.
    pub files_unmodified: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub other_nodes: u64,
    /// restic's names: blobs added.
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    /// restic's `total_files_processed` and `total_bytes_processed`.
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    pub bytes_read: u64,
    /// restic's `data_added` (plaintext) and `data_added_packed` (stored).
    pub data_added: u64,
    pub data_added_packed: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    pub total_bytes: u64,
    pub backup_start: String,
    pub backup_end: String,
    /// Seconds of the whole command, opening the repository included;
    /// `duration_seconds` is the snapshot's own.
    pub total_duration: f64,
    pub total_duration_seconds: f64,
    pub duration_seconds: f64,
    pub recovered_packs: usize,
    pub unreadable_packs: Vec<UnreadablePack>,
    pub errors: Vec<PathError>,
    pub changed_files: Vec<String>,
}

impl SnapshotSummary {
    pub fn of(outcome: &SnapshotOutcome, run: &RunSummary, dry_run: bool) -> SnapshotSummary {
        let s = &outcome.snapshot.summary;
        let duration = (s.end_ns - s.start_ns) as f64 / 1e9;
        SnapshotSummary {
            snapshot_id: (!dry_run).then(|| outcome.id.to_hex()),
            short_id: (!dry_run).then(|| outcome.id.short()),
            dry_run,
            skipped_unchanged: !dry_run && !outcome.saved,
            parent: outcome.snapshot.parent.map(|p| p.to_hex()),
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unchanged,
            files_unchanged: s.files_unchanged,
            dirs: s.dirs,
            dirs_new: run.dirs_new,
            dirs_changed: run.dirs_changed,
            dirs_unmodified: run.dirs_unmodified,
            other_nodes: s.other_nodes,
            data_blobs: s.data_blobs_added,
            tree_blobs: s.tree_blobs_added,
            data_blobs_added: s.data_blobs_added,
            tree_blobs_added: s.tree_blobs_added,
            total_files_processed: s.files_new + s.files_changed + s.files_unchanged,
            total_bytes_processed: s.total_bytes,
            bytes_read: s.bytes_read,
            data_added: s.bytes_added,
            data_added_packed: s.bytes_stored,
            bytes_added: s.bytes_added,
            bytes_stored: s.bytes_stored,
            total_bytes: s.total_bytes,
            backup_start: times::json(s.start_ns),
            backup_end: times::json(s.end_ns),
            total_duration: run.total_duration_seconds,
            total_duration_seconds: run.total_duration_seconds,
            duration_seconds: duration,
            recovered_packs: outcome.recovered_packs,
            unreadable_packs: outcome
                .unreadable_packs
                .iter()
                .map(|(id, reason)| UnreadablePack { id: id.to_hex(), reason: reason.clone() })
                .collect(),
            errors: outcome
                .errors
                .iter()
                .map(|(p, e)| PathError { path: p.display().to_string(), error: e.clone() })
                .collect(),
            changed_files: outcome.changed.iter().map(|p| p.display().to_string()).collect(),
        }
    }
}

/// The line a snapshot that stopped at `--max-upload`/`--max-duration` (or
/// was interrupted) writes before its `exit_error`: what it uploaded, which
/// the next run reuses.
#[derive(Serialize, Debug)]
pub struct SnapshotStopped<'a> {
    pub stopped: &'a str,
    pub packs_uploaded: usize,
    pub bytes_uploaded: u64,
}

/// `summary` of a restore.
#[derive(Serialize, Debug)]
pub struct RestoreSummary<'a> {
    pub snapshot_id: String,
    pub target: String,
    /// `--dry-run`: nothing was written; the counts are what would be.
    pub dry_run: bool,
    pub seconds_elapsed: u64,
    /// restic's names.
    pub files_restored: u64,
    pub bytes_restored: u64,
    pub total_files: u64,
    pub total_bytes: u64,
    /// The whole outcome, as before.
    pub result: &'a RestoreOutcome,
}

impl<'a> RestoreSummary<'a> {
    pub fn of(
        id: &Id,
        target: &std::path::Path,
        outcome: &'a RestoreOutcome,
        seconds: u64,
        dry_run: bool,
    ) -> RestoreSummary<'a> {
        RestoreSummary {
            snapshot_id: id.to_hex(),
            target: target.display().to_string(),
            dry_run,
            seconds_elapsed: seconds,
            files_restored: outcome.files,
            bytes_restored: outcome.bytes,
            total_files: outcome.files + outcome.not_restored(),
            total_bytes: outcome.bytes,
            result: outcome,
        }
    }
}
