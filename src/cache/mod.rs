//! The local cache: a redb database per repository holding sealed index
//! objects and sealed tree blobs, so that opening a repository and walking a
//! parent snapshot need not download them again, and the highest head
//! generation seen, so that a rolled-back head is noticed. It is only ever a
//! cache: the repository is the source of truth, every entry is checked
//! against it, and a missing, locked, damaged or unwritable cache only costs
//! speed.
//!
//! redb returns errors for some damage and panics for the rest (a file
//! shorter than its header says trips an assertion when it is opened; redb
//! 3.x and 4.x do the same). So every call into redb runs behind one guard:
//! the file's integrity is checked when it is opened, a damaged file is set
//! aside as `cache.redb.damaged-<unix seconds>` and a new one made, and any
//! later panic or error inside redb (damage it could not see at open, a full
//! disk) turns the cache off for the rest of the process. The user hears of
//! it once, through the warning sink the command line installs.
//!
//! The full check reads every page of the file (redb's repair walk), which
//! for the cache of a repository of 10^6 files cost 0.3 s and 100 MiB on
//! every command. So a process that closes the cache cleanly leaves a stamp
//! beside it (`cache.redb.clean`: the file's device, inode, size and
//! modification and change times, and when it was last checked in full);
//! the next open skips the full check when the file is exactly as that
//! stamp says and was checked in full within [`FULL_CHECK_EVERY`]. The
//! stamp is removed as soon as the file is open, so a process that does not
//! close cleanly leaves none; anything else that touched the file since
//! (another program, a copy put in its place) changed its change time,
//! which no program can set. Either way the file is checked in full again.

// The guarded closures return redb's own error type, as redb hands it over;
// it is large, and only ever on the cold path of a failing cache.
#![allow(clippy::result_large_err)]

pub mod housekeeping;

use std::cell::Cell;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::format::Id;

/// Index object id → the object as sealed in storage.
const INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_v2");
/// Tree blob id → the blob as sealed in its pack.
const TREES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("trees_v1");
/// [`head_scope`] → the highest head generation seen of that copy of the
/// repository.
const HEAD: TableDefinition<&str, u64> = TableDefinition::new("head_v1");
/// The one key of [`HEAD`] before scopes.
const LEGACY_GENERATION: &str = "generation";

/// The key under which the head generation of one copy of a repository is
/// kept: copies with the same keys and repository id (`init --same-keys`)
/// share a cache directory, but each has its own heads and generations; the
/// config of each was made at its own time.
pub fn head_scope(config_created_ns: i64) -> String {
    format!("generation@{config_created_ns}")
}

/// The cache file's name in its repository's directory.
pub const CACHE_FILE: &str = "cache.redb";
/// What a damaged cache file's name starts with once set aside.
const DAMAGED_PREFIX: &str = "cache.redb.damaged-";
/// The stamp a clean close leaves beside the cache file (see the module
/// comment).
const CLEAN_STAMP: &str = "cache.redb.clean";
/// How long a cache file found as a clean close left it is trusted without
/// reading all of it again.
pub const FULL_CHECK_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
#[error("cache {path}: {message}")]
pub struct CacheError {
    path: String,
    message: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError { path: path.display().to_string(), message: e.to_string() }
}

// ---- the one warning a process gives about its cache ----

static WARNING_SINK: OnceLock<fn(&str)> = OnceLock::new();
static WARNED: AtomicBool = AtomicBool::new(false);

/// Sets where the one line about cache trouble goes (the command line prints
/// it on stderr). The library itself only logs.
pub fn set_warning_sink(sink: fn(&str)) {
    let _ = WARNING_SINK.set(sink);
}

/// Logs `message`, and hands the first such message of the process to the
/// warning sink: however many cache calls fail, the user reads one line.
fn warn_once(message: &str) {
    tracing::warn!("{message}");
    if !WARNED.swap(true, Ordering::SeqCst) {
        if let Some(sink) = WARNING_SINK.get() {
            sink(message);
        }
    }
}

// ---- panics inside redb ----

thread_local! {
    /// Set while this thread runs redb code whose panics the guard catches.
    static IN_REDB: Cell<bool> = const { Cell::new(false) };
}

/// A panic inside redb is caught and turned into a warning; the default
/// hook would print it (with a backtrace) first. This hook stays quiet for
/// panics on a thread inside a guarded redb call and defers to the previous
/// hook for every other panic.
fn install_quiet_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_REDB.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// What went wrong inside a guarded redb call.
enum Failure {
    /// redb panicked: its structures are not what it expects.
    Panic(String),
    /// redb reported an error.
    Error(redb::Error),
}

impl Failure {
    /// Whether the file itself is at fault (and so must be set aside), as
    /// opposed to the disk or the moment (a full disk, an I/O error).
    /// redb reports some damage as `Io` errors of its own making
    /// (`InvalidData`); an error the system returned (no space, EIO, no
    /// permission) carries an OS error code.
    fn is_damage(&self) -> bool {
        match self {
            Failure::Panic(_) => true,
            Failure::Error(redb::Error::Io(e)) => e.raw_os_error().is_none(),
            Failure::Error(redb::Error::PreviousIo | redb::Error::DatabaseAlreadyOpen) => false,
            Failure::Error(_) => true,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Panic(m) => write!(f, "redb failed on it: {m}"),
            Failure::Error(e) => e.fmt(f),
        }
    }
}

/// Runs `f`, catching a panic inside it as a `Failure` (quietly).
fn guarded<T>(f: impl FnOnce() -> Result<T, redb::Error>) -> Result<T, Failure> {
    install_quiet_panic_hook();
    let was = IN_REDB.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    IN_REDB.with(|c| c.set(was));
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(Failure::Panic(message))
        }
    }
}

/// Opens (or creates) the database at `path`, checking its integrity in
/// full when `full_check`, all behind the guard. An unclean file that redb
/// repairs counts as healthy (redb repairs a file not closed cleanly on
/// open, whether or not it is checked in full).
fn open_checked(path: &Path, full_check: bool) -> Result<Database, Failure> {
    guarded(|| {
        let mut db = Database::builder().set_cache_size(CACHE_MEMORY).create(path)?;
        if full_check {
            db.check_integrity()?;
        }
        Ok(db)
    })
}

/// What identifies one state of the cache file: anything that writes to it,
/// replaces it or changes its metadata changes its change time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileState {
    fn of(path: &Path) -> Option<FileState> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(FileState {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The stamp a clean close leaves: the file as it was closed, and when it
/// was last checked in full (seconds since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CleanStamp {
    file: FileState,
    checked_secs: u64,
}

const STAMP_HEADER: &str = "tstor cache stamp 1";

impl CleanStamp {
    fn encode(&self) -> String {
        let f = &self.file;
        format!(
            "{STAMP_HEADER}\n{} {} {} {} {} {} {} {}\n",
            f.dev, f.ino, f.size, f.mtime.0, f.mtime.1, f.ctime.0, f.ctime.1, self.checked_secs
        )
    }

    /// Reads a stamp; anything but exactly what `encode` writes is none.
    fn decode(text: &str) -> Option<CleanStamp> {
        let mut lines = text.split('\n');
        if lines.next()? != STAMP_HEADER {
            return None;
        }
        let fields: Vec<&str> = lines.next()?.split(' ').collect();
        if fields.len() != 8 || lines.next() != Some("") || lines.next().is_some() {
            return None;
        }
        let u = |i: usize| fields[i].parse::<u64>().ok();
        let i = |i: usize| fields[i].parse::<i64>().ok();
        Some(CleanStamp {
            file: FileState { dev: u(0)?, ino: u(1)?, size: u(2)?, mtime: (i(3)?, i(4)?), ctime: (i(5)?, i(6)?) },
            checked_secs: u(7)?,
        })
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// When the cache file at `path` was last checked in full, if the stamp
/// beside it says a clean close left it exactly as it is now and that check
/// is recent enough to trust (within [`FULL_CHECK_EVERY`], and not in the
/// future).
fn trusted_since(stamp: &Path, path: &Path, now_secs: u64) -> Option<u64> {
    let stamp = CleanStamp::decode(&std::fs::read_to_string(stamp).ok()?)?;
    let fresh = stamp.checked_secs <= now_secs && now_secs - stamp.checked_secs < FULL_CHECK_EVERY.as_secs();
    (fresh && FileState::of(path)? == stamp.file).then_some(stamp.checked_secs)
}

/// Leaves the stamp of a clean close beside the cache file at `path`
/// (written aside and renamed, so that a stamp is whole or absent).
fn write_stamp(stamp: &Path, path: &Path, checked_secs: u64) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(file) = FileState::of(path) else { return Ok(()) };
    let text = CleanStamp { file, checked_secs }.encode();
    let tmp = stamp.with_extension("clean.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, stamp)
}

/// Moves a damaged cache file aside (keeping only the newest one set aside,
/// for a post-mortem) and returns its new name.
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(DAMAGED_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("{DAMAGED_PREFIX}{secs}"));
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// Memory redb may keep of the file's pages (a tenth of it for pages
/// written and not yet flushed). redb's default, 1 GiB, let a restore of a
/// million files hold every tree and index object it read or wrote; the
/// operating system's page cache keeps the file's pages warm anyway.
const CACHE_MEMORY: usize = 32 << 20;

/// Trees are written in batches of this many, or of this many bytes.
const TREE_BATCH: usize = 1024;
const TREE_BATCH_BYTES: usize = 16 << 20;

/// Trees handed to the cache and not yet written.
#[derive(Default)]
struct PendingTrees {
    trees: HashMap<Id, Vec<u8>>,
    bytes: usize,
}

pub struct Cache {
    /// Never dropped once the cache failed: redb's own drop could panic on
    /// the same damage, outside any guard.
    db: ManuallyDrop<Database>,
    path: PathBuf,
    /// Where a clean close leaves its stamp.
    stamp: PathBuf,
    /// When the file was last checked in full (seconds since the epoch).
    checked_secs: u64,
    /// Whether this open checked the file in full.
    checked_at_open: bool,
    /// Set after the first failure; every call then answers "not cached".
    failed: AtomicBool,
    /// Trees waiting for the next batch. A walk that fills the cache hands
    /// over one tree at a time; writing each in a transaction of its own
    /// (with its fsync) made filling the cache slower than reading without
    /// it.
    pending: Mutex<PendingTrees>,
    /// Whether a batch was written without waiting for the disk since the
    /// last durable write.
    undurable: AtomicBool,
}

/// Writes a `CACHEDIR.TAG` (<https://bford.info/cachedir/>) into the cache
/// directory, once, so that backup tools (tstor's own `--exclude-caches`
/// among them) leave it out. Best effort: a cache without the tag works.
fn mark_as_cache(dir: &Path) {
    let tag = dir.join(crate::archiver::exclude::CACHEDIR_TAG);
    if tag.exists() {
        return;
    }
    let mut content = crate::archiver::exclude::CACHEDIR_SIGNATURE.to_vec();
    content.extend_from_slice(b"\n# This file is a cache directory tag created by tstor.\n# For information about cache directory tags, see https://bford.info/cachedir/\n");
    if let Err(e) = std::fs::write(&tag, content) {
        tracing::debug!(path = %tag.display(), error = %e, "cannot write the cache directory tag");
    }
}

impl Cache {
    /// Opens (or creates) the cache of repository `repo_id` under `dir`. A
    /// damaged cache file is set aside and made anew (with one warning).
    pub fn open(dir: &Path, repo_id: &Id) -> Result<Cache, CacheError> {
        let repo_dir = dir.join(repo_id.to_hex());
        create_private_dir(dir).map_err(|e| err(dir, e))?;
        mark_as_cache(dir);
        create_private_dir(&repo_dir).map_err(|e| err(&repo_dir, e))?;
        let path = repo_dir.join(CACHE_FILE);
        let stamp = repo_dir.join(CLEAN_STAMP);
        let now = now_secs();
        let trusted = trusted_since(&stamp, &path, now);
        let mut checked_secs = trusted.unwrap_or(now);
        let mut checked_at_open = trusted.is_none();
        let db = match open_checked(&path, checked_at_open) {
            Ok(db) => db,
            Err(Failure::Error(redb::Error::DatabaseAlreadyOpen)) => {
                return Err(err(&path, "in use by another tstor process"));
            }
            Err(f) if f.is_damage() => {
                let aside =
                    set_aside(&path).map_err(|e| err(&path, format!("damaged ({f}), cannot set it aside: {e}")));
                let aside = match aside {
                    Ok(a) => a,
                    Err(e) => {
                        warn_once(&format!("{e}; running without the local cache"));
                        return Err(e);
                    }
                };
                (checked_secs, checked_at_open) = (now, true);
                match open_checked(&path, true) {
                    Ok(db) => {
                        warn_once(&format!(
                            "local cache {} was damaged ({f}); set it aside as {} and started a new one",
                            path.display(),
                            aside.display()
                        ));
                        db
                    }
                    Err(again) => {
                        let e = err(&path, format!("damaged ({f}); a new one cannot be made either ({again})"));
                        warn_once(&format!("{e}; running without the local cache"));
                        return Err(e);
                    }
                }
            }
            Err(f) => {
                let e = err(&path, f);
                warn_once(&format!("{e}; running without the local cache"));
                return Err(e);
            }
        };
        make_private_file(&path);
        // The stamp speaks only of a file no process has open; this one is
        // open now, and its next clean close leaves a new stamp.
        let _ = std::fs::remove_file(&stamp);
        Ok(Cache {
            db: ManuallyDrop::new(db),
            path,
            stamp,
            checked_secs,
            checked_at_open,
            failed: AtomicBool::new(false),
            pending: Mutex::default(),
            undurable: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether opening the cache read all of it to check it (rather than
    /// trusting the stamp of a clean close).
    pub fn checked_in_full_at_open(&self) -> bool {
        self.checked_at_open
    }

    /// Whether an earlier call failed and the cache is off for this process.
    pub fn is_off(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Runs one redb operation behind the guard. The first failure turns the
    /// cache off (setting a damaged file aside) with one warning; later calls
    /// fail at once without touching redb.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, redb::Error>) -> Result<T, CacheError> {
        if self.is_off() {
            return Err(err(&self.path, "off after an earlier failure"));
        }
        match guarded(|| f(&self.db)) {
            Ok(v) => Ok(v),
            Err(failure) => {
                if !self.failed.swap(true, Ordering::SeqCst) {
                    let mut message = format!("local cache {} failed ({failure})", self.path.display());
                    if failure.is_damage() {
                        match set_aside(&self.path) {
                            Ok(aside) => message.push_str(&format!("; set it aside as {}", aside.display())),
                            Err(e) => message.push_str(&format!("; cannot set it aside: {e}")),
                        }
                    }
                    message.push_str("; running without it from now on");
                    warn_once(&message);
                }
                Err(err(&self.path, failure))
            }
        }
    }

    fn get(&self, table: TableDefinition<&[u8], &[u8]>, id: &Id) -> Result<Option<Vec<u8>>, CacheError> {
        self.with_db(|db| {
            let tx = db.begin_read()?;
            let t = match tx.open_table(table) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let v = t.get(&id.0[..])?;
            Ok(v.map(|v| v.value().to_vec()))
        })
    }

    fn put_many<'a>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        items: impl IntoIterator<Item = (&'a Id, &'a [u8])>,
        durability: Durability,
    ) -> Result<(), CacheError> {
        self.with_db(|db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(durability);
            {
                let mut t = tx.open_table(table)?;
                for (id, v) in items {
                    t.insert(&id.0[..], v)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Ids of the index objects held.
    pub fn index_ids(&self) -> Result<Vec<Id>, CacheError> {
        self.with_db(|db| {
            let tx = db.begin_read()?;
            let t = match tx.open_table(INDEX) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, _) = row?;
                if let Ok(b) = <[u8; 32]>::try_from(k.value()) {
                    out.push(Id(b));
                }
            }
            Ok(out)
        })
    }

    pub fn index(&self, id: &Id) -> Result<Option<Vec<u8>>, CacheError> {
        self.get(INDEX, id)
    }

    pub fn put_indexes<'a>(&self, items: impl IntoIterator<Item = (&'a Id, &'a [u8])>) -> Result<(), CacheError> {
        self.put_many(INDEX, items, Durability::Immediate)
    }

    /// Drops index objects the repository no longer has.
    pub fn remove_indexes(&self, ids: &[Id]) -> Result<(), CacheError> {
        self.with_db(|db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(INDEX)?;
                for id in ids {
                    t.remove(&id.0[..])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn tree(&self, id: &Id) -> Result<Option<Vec<u8>>, CacheError> {
        if let Some(sealed) = self.pending_trees().trees.get(id) {
            return Ok(Some(sealed.clone()));
        }
        self.get(TREES, id)
    }

    /// Ids of the trees held (written or queued).
    pub fn tree_ids(&self) -> Result<Vec<Id>, CacheError> {
        let mut out: Vec<Id> = self.pending_trees().trees.keys().copied().collect();
        let written = self.with_db(|db| {
            let tx = db.begin_read()?;
            let t = match tx.open_table(TREES) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut ids = Vec::new();
            for row in t.iter()? {
                let (k, _) = row?;
                if let Ok(b) = <[u8; 32]>::try_from(k.value()) {
                    ids.push(Id(b));
                }
            }
            Ok(ids)
        })?;
        out.extend(written);
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Drops trees no snapshot uses any more (prune deleted them).
    pub fn remove_trees(&self, ids: &[Id]) -> Result<(), CacheError> {
        {
            let mut pending = self.pending_trees();
            for id in ids {
                if let Some(old) = pending.trees.remove(id) {
                    pending.bytes -= old.len();
                }
            }
        }
        self.with_db(|db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(TREES)?;
                for id in ids {
                    t.remove(&id.0[..])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn pending_trees(&self) -> std::sync::MutexGuard<'_, PendingTrees> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues trees for the cache. They are written in batches, many trees
    /// to a transaction and without waiting for the disk (a cache may lose
    /// its last writes in a crash); [`flush`](Self::flush) and dropping the
    /// cache write the rest durably.
    pub fn put_trees<'a>(&self, items: impl IntoIterator<Item = (&'a Id, &'a [u8])>) -> Result<(), CacheError> {
        let batch = {
            let mut pending = self.pending_trees();
            for (id, sealed) in items {
                pending.bytes += sealed.len();
                if let Some(old) = pending.trees.insert(*id, sealed.to_vec()) {
                    pending.bytes -= old.len();
                }
            }
            if pending.trees.len() < TREE_BATCH && pending.bytes < TREE_BATCH_BYTES {
                return Ok(());
            }
            std::mem::take(&mut *pending)
        };
        self.undurable.store(true, Ordering::SeqCst);
        self.put_many(TREES, batch.trees.iter().map(|(id, t)| (id, &t[..])), Durability::None)
    }

    /// Writes the queued trees and makes everything written so far durable.
    pub fn flush(&self) -> Result<(), CacheError> {
        let batch = std::mem::take(&mut *self.pending_trees());
        if batch.trees.is_empty() && !self.undurable.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.put_many(TREES, batch.trees.iter().map(|(id, t)| (id, &t[..])), Durability::Immediate)
    }

    /// The highest head generation this cache has seen of the copy of the
    /// repository `scope` names (see [`head_scope`]), if any. Before scopes,
    /// one generation was kept per repository id; it still counts for a
    /// scope that has none of its own (a mirror made by `init --same-keys`
    /// starts above its source's generation, so it is never below it).
    pub fn head_generation(&self, scope: &str) -> Result<Option<u64>, CacheError> {
        self.with_db(|db| {
            let tx = db.begin_read()?;
            let t = match tx.open_table(HEAD) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if let Some(v) = t.get(scope)? {
                return Ok(Some(v.value()));
            }
            let v = t.get(LEGACY_GENERATION)?;
            Ok(v.map(|v| v.value()))
        })
    }

    /// Raises the highest head generation seen of `scope` to `generation`
    /// (never lowers it).
    pub fn raise_head_generation(&self, scope: &str, generation: u64) -> Result<(), CacheError> {
        self.with_db(|db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(HEAD)?;
                let seen = t.get(scope)?.map(|v| v.value());
                if seen.is_none_or(|s| s < generation) {
                    t.insert(scope, generation)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if !self.is_off() {
            let _ = self.flush();
        }
        if self.is_off() {
            // Leaked on purpose: see `db`.
            return;
        }
        let closed = guarded(|| {
            // SAFETY: `db` is not used again; `drop` runs once.
            unsafe { ManuallyDrop::drop(&mut self.db) };
            Ok(())
        });
        if closed.is_ok() {
            if let Err(e) = write_stamp(&self.stamp, &self.path, self.checked_secs) {
                // The next open checks the file in full: slower, not wrong.
                tracing::debug!(path = %self.stamp.display(), error = %e, "cannot leave the cache's clean stamp");
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The cache holds sealed objects only, but nothing in it is anyone else's
/// business: mode 0600 (its directory is 0700 already).
fn make_private_file(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_survives_damage() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Id([1; 32]);
        {
            let c = Cache::open(dir.path(), &repo).unwrap();
            c.put_indexes([(&Id([2; 32]), &b"abc"[..])]).unwrap();
            assert_eq!(c.index(&Id([2; 32])).unwrap().unwrap(), b"abc");
            assert_eq!(c.index_ids().unwrap(), vec![Id([2; 32])]);
            assert!(c.tree(&Id([3; 32])).unwrap().is_none());
            c.remove_indexes(&[Id([2; 32])]).unwrap();
            assert!(c.index_ids().unwrap().is_empty());
            assert_eq!(c.head_generation("g").unwrap(), None);
            c.raise_head_generation("g", 5).unwrap();
            c.raise_head_generation("g", 3).unwrap();
            assert_eq!(c.head_generation("g").unwrap(), Some(5));
            // Another copy of the repository has generations of its own.
            assert_eq!(c.head_generation("h").unwrap(), None);
            c.raise_head_generation("h", 2).unwrap();
            assert_eq!(c.head_generation("h").unwrap(), Some(2));
            assert_eq!(c.head_generation("g").unwrap(), Some(5));
        }
        let path = dir.path().join(repo.to_hex()).join("cache.redb");
        std::fs::write(&path, b"garbage that is not a redb file at all").unwrap();
        let c = Cache::open(dir.path(), &repo).unwrap();
        assert!(c.index_ids().unwrap().is_empty());
    }

    #[test]
    fn trees_put_one_at_a_time_are_kept_across_batches_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Id([1; 32]);
        let ids: Vec<Id> = (0..2500u32).map(|i| Id(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect();
        {
            let c = Cache::open(dir.path(), &repo).unwrap();
            for (i, id) in ids.iter().enumerate() {
                c.put_trees([(id, &i.to_le_bytes()[..])]).unwrap();
            }
            assert!(c.pending_trees().trees.len() < TREE_BATCH, "full batches were written");
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(c.tree(id).unwrap().as_deref(), Some(&i.to_le_bytes()[..]), "before the last batch");
            }
        }
        let c = Cache::open(dir.path(), &repo).unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(c.tree(id).unwrap().as_deref(), Some(&i.to_le_bytes()[..]), "after reopening");
        }
    }

    /// A cache with enough entries that cutting or tearing it hits live pages.
    fn filled_cache(dir: &Path, repo: &Id) -> PathBuf {
        let c = Cache::open(dir, repo).unwrap();
        let blob = vec![0x5a_u8; 8 << 10];
        for batch in 0..8u8 {
            let ids: Vec<Id> = (0..32u8).map(|i| Id([batch.wrapping_mul(32).wrapping_add(i); 32])).collect();
            c.put_trees(ids.iter().map(|id| (id, &blob[..]))).unwrap();
        }
        c.put_indexes([(&Id([7; 32]), &b"index"[..])]).unwrap();
        c.raise_head_generation("g", 9).unwrap();
        c.path().to_path_buf()
    }

    fn damaged_files(path: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(DAMAGED_PREFIX))
            .collect()
    }

    /// Opens the damaged cache and uses it as a command would: nothing may
    /// panic, and afterwards the cache either works or is off.
    fn use_after_damage(dir: &Path, repo: &Id) {
        let c = Cache::open(dir, repo).expect("a damaged cache is replaced, not an error");
        let path = c.path().to_path_buf();
        let _ = c.index_ids();
        let _ = c.tree(&Id([3; 32]));
        let _ = c.head_generation("g");
        let _ = c.put_trees([(&Id([99; 32]), &b"new"[..])]);
        let _ = c.raise_head_generation("g", 10);
        if !c.is_off() {
            assert_eq!(c.tree(&Id([99; 32])).unwrap().as_deref(), Some(&b"new"[..]));
        }
        drop(c);
        assert_eq!(damaged_files(&path).len(), 1, "the damaged file is set aside once");
        // The next open finds a healthy file.
        let c = Cache::open(dir, repo).unwrap();
        c.put_trees([(&Id([98; 32]), &b"again"[..])]).unwrap();
        assert_eq!(c.tree(&Id([98; 32])).unwrap().as_deref(), Some(&b"again"[..]));
    }

    #[test]
    fn a_cache_cut_to_half_is_set_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Id([1; 32]);
        let path = filled_cache(dir.path(), &repo);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
        use_after_damage(dir.path(), &repo);
    }

    #[test]
    fn a_cache_cut_to_4_kib_is_set_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Id([1; 32]);
        let path = filled_cache(dir.path(), &repo);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
        use_after_damage(dir.path(), &repo);
    }

    #[test]
    fn the_clean_stamp_round_trips_and_nothing_else_reads_as_one() {
        let file = FileState { dev: 2049, ino: 77, size: 1 << 20, mtime: (1_700_000_000, 5), ctime: (-1, 999_999_999) };
        let stamp = CleanStamp { file, checked_secs: 1_700_000_123 };
        assert_eq!(CleanStamp::decode(&stamp.encode()), Some(stamp));
        let text = stamp.encode();
        for bad in [
            String::new(),
            text.replace("stamp 1", "stamp 2"),
            text.trim_end().to_string(),
            format!("{text}more\n"),
            text.replacen(" 77 ", " x ", 1),
            text.replacen(" 77 ", " 77 78 ", 1),
            text[..text.len() / 2].to_string(),
        ] {
            assert_eq!(CleanStamp::decode(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_cleanly_closed_cache_is_trusted_until_anything_touches_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let repo = Id([1; 32]);
        let path = filled_cache(dir.path(), &repo);
        let stamp = path.with_file_name(CLEAN_STAMP);
        assert!(stamp.exists(), "a clean close leaves a stamp");
        // Untouched since: opened without reading all of it, and the stamp
        // is gone while the file is open.
        let c = Cache::open(dir.path(), &repo).unwrap();
        assert!(!c.checked_at_open);
        assert!(!stamp.exists());
        assert_eq!(c.head_generation("g").unwrap(), Some(9));
        drop(c);
        // A change of metadata alone is a touch.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Cache::open(dir.path(), &repo).unwrap();
        assert!(c.checked_at_open);
        drop(c);
        // A stamp that is not whole counts as none.
        std::fs::write(&stamp, b"tstor cache stamp 1\n1 2").unwrap();
        assert!(Cache::open(dir.path(), &repo).unwrap().checked_at_open);
        // A full check older than FULL_CHECK_EVERY is made again, and one in
        // the future is not believed.
        for checked_secs in [now_secs() - FULL_CHECK_EVERY.as_secs() - 1, now_secs() + 3600] {
            drop(Cache::open(dir.path(), &repo).unwrap());
            write_stamp(&stamp, &path, checked_secs).unwrap();
            assert!(Cache::open(dir.path(), &repo).unwrap().checked_at_open, "checked at {checked_secs}");
        }
        // A full check is remembered across clean closes until it is due.
        let long_ago = now_secs() - FULL_CHECK_EVERY.as_secs() / 2;
        drop(Cache::open(dir.path(), &repo).unwrap());
        write_stamp(&stamp, &path, long_ago).unwrap();
        for _ in 0..2 {
            let c = Cache::open(dir.path(), &repo).unwrap();
            assert!(!c.checked_at_open);
            assert_eq!(c.checked_secs, long_ago);
        }
    }

    #[test]
    fn a_cache_torn_after_a_clean_close_is_still_found_out() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let repo = Id([1; 32]);
        let path = filled_cache(dir.path(), &repo);
        assert!(path.with_file_name(CLEAN_STAMP).exists());
        // A quarter of it inverted in place, its size unchanged.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut middle = vec![0u8; (len / 4) as usize];
        f.read_exact_at(&mut middle, len / 4).unwrap();
        middle.iter_mut().for_each(|b| *b = !*b);
        f.write_all_at(&middle, len / 4).unwrap();
        drop(f);
        // Found out at open, by the full check, not later by chance.
        let c = Cache::open(dir.path(), &repo).unwrap();
        assert!(c.checked_in_full_at_open(), "a file written since its clean close is read in full");
        assert_eq!(damaged_files(&path).len(), 1, "and set aside at once");
        assert_eq!(c.head_generation("g").unwrap(), None, "a new cache");
        drop(c);
        use_after_damage(dir.path(), &repo);
    }

    #[test]
    fn a_cache_torn_in_the_middle_is_set_aside_and_rebuilt() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let repo = Id([1; 32]);
        let path = filled_cache(dir.path(), &repo);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&vec![0u8; (len / 4) as usize], len / 4).unwrap();
        drop(f);
        use_after_damage(dir.path(), &repo);
    }
}
