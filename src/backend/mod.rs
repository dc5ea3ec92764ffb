//! The storage seam: one narrow async trait over opaque bytes keyed by
//! (object kind, id). Backends never see plaintext or keys; a backend that
//! must name what it stores (Telegram) gets an [`ObjectNames`] from the
//! repository layer, which holds the keys. Retries and fault injection are
//! decorators around any backend.

pub mod conformance;
pub mod faults;
pub mod local;
pub mod memory;
pub mod names;
pub mod retry;
pub mod spill;
pub mod telegram;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::names::{Named, ObjectNames};
pub use self::spill::SpilledObject;
use crate::format::{Id, ObjectKind};

/// What a listing says about one stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub id: Id,
    pub size: u64,
    /// When the object was stored (ns since the epoch, by the storage's
    /// clock), where the backend knows: `prune` leaves unindexed packs younger
    /// than its grace period alone, and treats an unknown age as young.
    pub stored_ns: Option<i64>,
}

impl ObjectInfo {
    pub fn new(id: Id, size: u64, stored_ns: Option<i64>) -> ObjectInfo {
        ObjectInfo { id, size, stored_ns }
    }
}

/// Where one stored object lives, in a form another backend of the same
/// kind may use to store the very same bytes without moving them
/// (Telegram: the document, and the message of the chat that holds it).
/// Made by [`Backend::stored_handle`], used by [`Backend::put_from_handle`];
/// opaque to everything above the backends, and never anything but where
/// sealed bytes are.
#[derive(Clone)]
pub struct StoredHandle(Arc<dyn std::any::Any + Send + Sync>);

impl StoredHandle {
    pub fn new<T: std::any::Any + Send + Sync>(inner: T) -> StoredHandle {
        StoredHandle(Arc::new(inner))
    }

    /// The backend's own description, if this handle is of its kind.
    pub fn downcast_ref<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for StoredHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredHandle")
    }
}

/// How an error should be handled by the layers above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    NotFound,
    /// Worth retrying, after the given delay if the backend said so.
    Transient(Option<Duration>),
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{kind} object {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("temporary storage failure: {message}")]
    Transient { message: String, retry_after: Option<Duration> },
    #[error("storage failure: {message}")]
    Permanent { message: String },
    /// The storage refuses our credentials (a Telegram session that was
    /// revoked or never logged in): nothing will work until the user logs in
    /// again. Handled like `Permanent`, but the CLI exits with its own code.
    #[error("{message}")]
    NeedsLogin { message: String },
    /// `create` found the place taken (a repository already there, or a
    /// directory holding other files): the user's mistake, not a failure
    /// of the storage.
    #[error("{message}")]
    Occupied { message: String },
    /// The storage could not be reached for as long as it was given (a
    /// Telegram server refusing or dropping every connection). Handled like
    /// `Permanent`, but the CLI says so and exits with its own code.
    #[error("{message}; check the network connection, then run the command again")]
    Unreachable { message: String },
}

impl BackendError {
    pub fn class(&self) -> ErrorClass {
        match self {
            BackendError::NotFound { .. } => ErrorClass::NotFound,
            BackendError::Transient { retry_after, .. } => ErrorClass::Transient(*retry_after),
            BackendError::Permanent { .. }
            | BackendError::NeedsLogin { .. }
            | BackendError::Unreachable { .. }
            | BackendError::Occupied { .. } => ErrorClass::Permanent,
        }
    }

    /// Whether the storage could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, BackendError::Unreachable { .. })
    }

    /// Whether the storage wants new credentials (`tstor login`).
    pub fn needs_login(&self) -> bool {
        matches!(self, BackendError::NeedsLogin { .. })
    }

    pub fn not_found(kind: ObjectKind, id: &Id) -> BackendError {
        BackendError::NotFound { kind: kind.name(), id: id.to_hex() }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// Classifies an I/O error that happened while doing `what`.
    pub fn from_io(e: std::io::Error, what: impl std::fmt::Display) -> BackendError {
        use std::io::ErrorKind::*;
        let message = format!("{what}: {e}");
        match e.kind() {
            Interrupted | TimedOut | WouldBlock | ConnectionReset | ConnectionAborted | BrokenPipe => {
                BackendError::Transient { message, retry_after: None }
            }
            _ => BackendError::Permanent { message },
        }
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// Storage for sealed objects. Every method is idempotent: putting an object
/// twice stores it once, deleting a missing object succeeds. `put` is atomic:
/// an object is either listed and complete, or absent.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Where the repository lives, for messages.
    fn location(&self) -> String;

    /// Prepares empty storage for a new repository; fails if one is there.
    async fn create(&self) -> Result<()>;

    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()>;

    /// Whether [`Backend::put_spilled`] streams the object from its file,
    /// so that writers gain by keeping large objects on disk, not in
    /// memory, while they wait to be stored (Telegram: packs upload for
    /// seconds each).
    fn streams_spilled(&self) -> bool {
        false
    }

    /// Stores an object kept in a spill file, as [`Backend::put`] does; by
    /// default it is read back into memory first.
    async fn put_spilled(&self, kind: ObjectKind, id: &Id, object: Arc<SpilledObject>) -> Result<()> {
        let data = object.read_all().map_err(|e| BackendError::from_io(e, "a spilled object"))?;
        self.put(kind, id, Bytes::from(data)).await
    }

    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes>;

    /// `len` bytes from `offset`; reading past the end is an error.
    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes>;

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;

    async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()>;

    // ---- optional capabilities; the defaults suit a backend that lists cheaply ----

    /// Gives the backend the names of the repository's objects, as soon as
    /// the repository keys exist and before anything other than the config
    /// and key slots is read or written. Until then a backend that names
    /// objects names them all under the public names it was made with
    /// (`crate::crypto::names::ObjectNameCodec::public`), under which config
    /// and key slots are found. Backends that do not name objects ignore it.
    async fn use_object_names(&self, _names: Arc<dyn ObjectNames>) {}

    /// The data pack size that suits this storage, if it differs from the
    /// pipeline's default.
    fn preferred_pack_size(&self) -> Option<usize> {
        None
    }

    /// How many ranged reads a restore should keep in flight, if this
    /// storage wants more than the restorer's default (one per core, twice):
    /// where every read waits out a network round trip, more reads overlap.
    fn preferred_reads_in_flight(&self) -> Option<usize> {
        None
    }

    /// Whether this backend keeps a head (docs/format.md §23): one small
    /// object it finds without listing, which lets it skip a full listing.
    fn keeps_head(&self) -> bool {
        false
    }

    /// Stores `sealed` as the new head and makes it the one [`Backend::heads`]
    /// finds first; older heads may be removed. The bytes are opaque here.
    async fn put_head(&self, _sealed: Bytes) -> Result<()> {
        Err(BackendError::Permanent { message: format!("{} keeps no head", self.location()) })
    }

    /// Candidate heads, newest first, as given to [`Backend::put_head`]. With
    /// `scan: false` only those found cheaply (Telegram: the pinned message
    /// and any newer head); with `scan: true` every head in storage.
    async fn heads(&self, _scan: bool) -> Result<Vec<Bytes>> {
        Ok(Vec::new())
    }

    /// A warning if other users of this machine can read the repository
    /// (a local directory with open modes), for `check` to pass on.
    fn readable_by_others(&self) -> Option<String> {
        None
    }

    /// Forgets what the backend remembers about storage and reads it again
    /// in full, so that the next listings miss nothing that changed behind
    /// its back (Telegram: a full history scan).
    async fn rescan(&self) -> Result<()> {
        Ok(())
    }

    /// How many items the storage holds, counted as it counts them
    /// (Telegram: the messages in the chat, every kind; a directory: its
    /// object files), for `stats`. `None` where there is no such count.
    async fn stored_items(&self) -> Result<Option<StoredItems>> {
        Ok(None)
    }

    /// A handle on the stored object `id` that another backend's
    /// [`Backend::put_from_handle`] may take, where this backend can give
    /// one (`None`: the object must be copied by its bytes).
    async fn stored_handle(&self, _kind: ObjectKind, _id: &Id) -> Result<Option<StoredHandle>> {
        Ok(None)
    }

    /// Stores object `id` as the object `handle` names in other storage,
    /// without transferring its bytes, where this backend can (Telegram:
    /// re-sends the document of another chat the account can read).
    /// `Ok(false)` where it cannot: the caller then copies the bytes. The
    /// bytes stored are exactly those of the object the handle names.
    async fn put_from_handle(&self, _kind: ObjectKind, _id: &Id, _handle: &StoredHandle) -> Result<bool> {
        Ok(false)
    }
}

/// A count of what a backend holds, in its own unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoredItems {
    pub count: u64,
    /// What is counted: "messages" or "files".
    pub unit: &'static str,
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn location(&self) -> String {
        (**self).location()
    }
    async fn create(&self) -> Result<()> {
        (**self).create().await
    }
    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        (**self).put(kind, id, data).await
    }
    fn streams_spilled(&self) -> bool {
        (**self).streams_spilled()
    }
    async fn put_spilled(&self, kind: ObjectKind, id: &Id, object: Arc<SpilledObject>) -> Result<()> {
        (**self).put_spilled(kind, id, object).await
    }
    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
        (**self).get(kind, id).await
    }
    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
        (**self).get_range(kind, id, offset, len).await
    }
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        (**self).list(kind).await
    }
    async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()> {
        (**self).delete(kind, id).await
    }
    async fn use_object_names(&self, names: Arc<dyn ObjectNames>) {
        (**self).use_object_names(names).await
    }
    fn preferred_pack_size(&self) -> Option<usize> {
        (**self).preferred_pack_size()
    }
    fn preferred_reads_in_flight(&self) -> Option<usize> {
        (**self).preferred_reads_in_flight()
    }
    fn keeps_head(&self) -> bool {
        (**self).keeps_head()
    }
    async fn put_head(&self, sealed: Bytes) -> Result<()> {
        (**self).put_head(sealed).await
    }
    async fn heads(&self, scan: bool) -> Result<Vec<Bytes>> {
        (**self).heads(scan).await
    }
    async fn rescan(&self) -> Result<()> {
        (**self).rescan().await
    }
    async fn stored_items(&self) -> Result<Option<StoredItems>> {
        (**self).stored_items().await
    }
    fn readable_by_others(&self) -> Option<String> {
        (**self).readable_by_others()
    }
    async fn stored_handle(&self, kind: ObjectKind, id: &Id) -> Result<Option<StoredHandle>> {
        (**self).stored_handle(kind, id).await
    }
    async fn put_from_handle(&self, kind: ObjectKind, id: &Id, handle: &StoredHandle) -> Result<bool> {
        (**self).put_from_handle(kind, id, handle).await
    }
}

/// The byte range `offset..offset+len` of `data`, or an error naming the object.
pub(crate) fn slice_range(data: &Bytes, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
    let end =
        offset.checked_add(len as u64).filter(|&e| e <= data.len() as u64).ok_or_else(|| BackendError::Permanent {
            message: format!(
                "{} object {} is {} bytes, shorter than the requested range {}+{}",
                kind.name(),
                id,
                data.len(),
                offset,
                len
            ),
        })?;
    Ok(data.slice(offset as usize..end as usize))
}
