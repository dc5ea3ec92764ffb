//! An opened repository: the crypto layer above a backend. It seals and opens
//! objects and blobs, holds the keys and config, reads the index (through the
//! local cache when there is one) and resolves snapshot names. Storage below
//! it sees only sealed bytes, and names objects with the `ObjectNames` it is
//! given as soon as the keys exist (never the keys themselves).

pub mod head;
pub mod index;
pub mod keyring;
pub mod keys;
pub mod lock;
pub mod packer;
pub mod select;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, BackendError};
use crate::cache::Cache;
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::kdf::KdfParams;
use crate::crypto::{random_secret, RepoKeys};
use crate::format::config::Config;
use crate::format::envelope::{append_payload, open_payload_owned, seal_payload};
use crate::format::index::{decode_packs, split_index, IndexFile, IndexedPack, MAX_INDEX_ENTRIES};
use crate::format::key::{KeyOwner, KeyPayload, KeySlot};
use crate::format::pack::{decode_header, header_offset, BlobEntry, TRAILER_LEN};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Tree, TreeBlob};
use crate::format::{
    associated_data, blob_domain, BlobType, FormatError, Id, ObjectKind, MAX_BLOB_LEN, MAX_OBJECT_LEN,
    PACK_HEADER_DOMAIN,
};
use crate::host;
use index::MasterIndex;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no repository at {0} (run `tstor init` first)")]
    NoRepository(String),
    #[error("wrong password: no key of this repository opens with it")]
    WrongPassword,
    #[error("repository is locked: {0}")]
    Locked(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{what} is damaged: {reason}")]
    Damaged { what: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    /// A run stopped on purpose at a limit it was given (a snapshot's
    /// `--max-upload` or `--max-duration`): what it uploaded is indexed, and
    /// it committed nothing else.
    #[error("stopped early: {reason}; {packs} packs ({bytes} bytes) uploaded and indexed, no snapshot saved; run the same snapshot again to go on")]
    Stopped { reason: String, packs: usize, bytes: u64 },
}

impl RepoError {
    fn damaged(what: impl Into<String>, reason: impl ToString) -> RepoError {
        RepoError::Damaged { what: what.into(), reason: reason.to_string() }
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Settings for a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { chunker: ChunkerParams::default(), compression_level: 3, kdf: KdfParams::DEFAULT }
    }
}

/// A blob sealed and ready for a pack.
pub struct SealedBlob {
    pub blob_type: BlobType,
    pub id: Id,
    pub sealed: Vec<u8>,
    pub raw_len: u32,
}

struct Inner {
    backend: Arc<dyn Backend>,
    keys: RepoKeys,
    config: Config,
    key_id: Id,
    /// The master secret, kept only to wrap it into new key slots
    /// (see `keyring`); never exposed.
    master: [u8; 32],
    cache: Option<Cache>,
    chunker: Chunker,
    head: head::HeadState,
}

/// An open repository; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

impl Repository {
    /// Creates a repository in empty storage, with one key for `password`.
    pub async fn init(backend: Arc<dyn Backend>, password: &[u8], opts: InitOptions) -> Result<Repository> {
        Repository::init_with(backend, password, opts, random_secret(), Id::random(), 0).await
    }

    /// Creates a repository in empty storage that `copy` can fill from
    /// `source`: with the source's chunker parameters and compression level,
    /// and with `same_keys`, the source's master secret and repository id
    /// too, so that the source's packs, index entries and snapshots are
    /// valid in it as they are (and one password opens both: the key slot
    /// made here wraps the source's master secret). Its first head is above
    /// every generation of the source seen so far.
    pub async fn init_from(
        backend: Arc<dyn Backend>,
        password: &[u8],
        mut opts: InitOptions,
        source: &Repository,
        same_keys: bool,
    ) -> Result<Repository> {
        let c = source.config();
        opts.chunker = ChunkerParams { min: c.chunk_min, avg: c.chunk_avg, max: c.chunk_max };
        opts.compression_level = c.compression_level;
        if !same_keys {
            return Repository::init(backend, password, opts).await;
        }
        let generation = source.head_generation();
        Repository::init_with(backend, password, opts, source.inner.master, c.repo_id, generation).await
    }

    /// Whether `other` has this repository's keys and id: its packs, blobs
    /// and objects are then valid here as they are stored there.
    pub fn has_same_keys_as(&self, other: &Repository) -> bool {
        // Both secrets are this process's own: no timing to hide.
        self.repo_id() == other.repo_id() && self.inner.master == other.inner.master
    }

    async fn init_with(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: InitOptions,
        master: [u8; 32],
        repo_id: Id,
        start_generation: u64,
    ) -> Result<Repository> {
        if !opts.chunker.is_valid() {
            return Err(RepoError::Invalid(format!(
                "invalid chunker parameters: min {}, average {}, max {}",
                opts.chunker.min, opts.chunker.avg, opts.chunker.max
            )));
        }
        if !(1..=19).contains(&opts.compression_level) {
            return Err(RepoError::Invalid(format!("compression level {} is outside 1..=19", opts.compression_level)));
        }
        backend.create().await?;
        // Key slots without a config are left by an init that did not finish;
        // they belong to no repository.
        for stale in backend.list(ObjectKind::Key).await? {
            backend.delete(ObjectKind::Key, &stale.id).await?;
        }
        let config = Config {
            repo_id,
            chunk_min: opts.chunker.min,
            chunk_avg: opts.chunker.avg,
            chunk_max: opts.chunker.max,
            compression_level: opts.compression_level,
            created_ns: host::now_ns(),
        };
        let key_id = Id::random();
        let payload = KeyPayload { master, repo_id };
        let owner = KeyOwner { created_ns: config.created_ns, hostname: host::hostname(), username: host::username() };
        let keys = RepoKeys::derive(&master);
        // Before anything but config and key slots is stored, the backend
        // learns how this repository names its objects.
        backend.use_object_names(Arc::new(keys.object_names())).await;
        let slot = keys::make_slot(password, &payload, &owner, &keys, opts.kdf, &key_id)?;
        // The key goes first: a config without a key would be unopenable.
        backend.put(ObjectKind::Key, &key_id, Bytes::from(slot.encode())).await?;
        let sealed = seal_object(&keys, &repo_id, ObjectKind::Config, &Id::ZERO, &config.encode(), 3)
            .map_err(|e| RepoError::Invalid(format!("the config cannot be sealed: {e}")))?;
        backend.put(ObjectKind::Config, &Id::ZERO, Bytes::from(sealed)).await?;
        let repo = Repository::assemble(backend, keys, config, key_id, &payload, None);
        repo.raise_head_generation(start_generation);
        // A backend that keeps a head gets its first one now.
        repo.write_head().await?;
        Ok(repo)
    }

    /// Opens a repository with `password`, using a cache under `cache_dir` if given.
    pub async fn open(backend: Arc<dyn Backend>, password: &[u8], cache_dir: Option<&Path>) -> Result<Repository> {
        // Config and key slots are named so that they are found before the
        // keys exist. A backend that keeps a head learns from it where
        // everything is on the first read (Telegram: no full history scan).
        let config_bytes = match backend.get(ObjectKind::Config, &Id::ZERO).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(RepoError::NoRepository(backend.location())),
            Err(e) => return Err(e.into()),
        };
        let slots = backend.list(ObjectKind::Key).await?;
        if slots.is_empty() {
            return Err(RepoError::damaged("repository", "it has a config but no keys"));
        }
        // Every slot is read and decoded first, so that the cheapest can be
        // tried first (docs/format.md §9).
        let mut decoded = Vec::with_capacity(slots.len());
        for info in &slots {
            let bytes = backend.get(ObjectKind::Key, &info.id).await?;
            match KeySlot::decode(&bytes) {
                Ok(s) => decoded.push((info.id, s)),
                Err(e) => tracing::warn!(key = %info.id.short(), error = %e, "skipping unreadable key slot"),
            }
        }
        if decoded.is_empty() {
            return Err(RepoError::damaged("repository", "none of its key slots can be read"));
        }
        let params: Vec<KdfParams> =
            decoded.iter().map(|(_, s)| KdfParams { m_kib: s.m_kib, t: s.t, p: s.p }).collect();
        let cap_kib = keys::kdf_memory_cap_kib(keys::available_memory_kib());
        let plan = keys::plan_slot_trials(&params, cap_kib);
        for &i in &plan.over_cap {
            tracing::warn!(
                key = %decoded[i].0.short(),
                mib = params[i].m_kib >> 10,
                cap_mib = cap_kib >> 10,
                "skipping a key slot that asks for more memory than this machine can spare"
            );
        }
        let mut found = None;
        for &i in &plan.order {
            let (slot_id, slot) = decoded[i].clone();
            let pw = password.to_vec();
            let opened = tokio::task::spawn_blocking(move || keys::open_slot(&pw, &slot, &slot_id))
                .await
                .map_err(|e| RepoError::Invalid(format!("key derivation failed: {e}")))?;
            match opened {
                Ok(Some(payload)) => {
                    found = Some((slot_id, payload));
                    break;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(key = %slot_id.short(), error = %e, "skipping key slot"),
            }
        }
        let Some((key_id, payload)) = found else {
            if let Some(most) = plan.over_cap.iter().map(|&i| params[i].m_kib).max() {
                return Err(RepoError::Invalid(format!(
                    "wrong password, or a password of one of the {} key slots skipped because they ask for \
                     more memory than this machine can spare (up to {} MiB; the limit here is {} MiB)",
                    plan.over_cap.len(),
                    most >> 10,
                    cap_kib >> 10
                )));
            }
            return Err(RepoError::WrongPassword);
        };
        let keys = RepoKeys::derive(&payload.master);
        // From here on the backend can tell this repository's objects (and
        // heads) apart; nothing else has been read yet.
        backend.use_object_names(Arc::new(keys.object_names())).await;
        let heads = if backend.keeps_head() { backend.heads(false).await? } else { Vec::new() };
        let plain = open_object(&keys, &payload.repo_id, ObjectKind::Config, &Id::ZERO, &config_bytes)
            .map_err(|e| RepoError::damaged("config", e))?;
        let config = Config::decode(&plain).map_err(|e| RepoError::damaged("config", e))?;
        if config.repo_id != payload.repo_id {
            return Err(RepoError::damaged("config", "it belongs to another repository than the key"));
        }
        let params = ChunkerParams { min: config.chunk_min, avg: config.chunk_avg, max: config.chunk_max };
        if !params.is_valid() {
            return Err(RepoError::damaged("config", "invalid chunker parameters"));
        }
        let cache = cache_dir.and_then(|dir| match Cache::open(dir, &config.repo_id) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "running without the local cache");
                None
            }
        });
        let repo = Repository::assemble(backend, keys, config, key_id, &payload, cache);
        repo.adopt_head(heads).await?;
        Ok(repo)
    }

    fn assemble(
        backend: Arc<dyn Backend>,
        keys: RepoKeys,
        config: Config,
        key_id: Id,
        payload: &KeyPayload,
        cache: Option<Cache>,
    ) -> Self {
        let params = ChunkerParams { min: config.chunk_min, avg: config.chunk_avg, max: config.chunk_max };
        let chunker = Chunker::new(params, keys.chunker_seed);
        let master = payload.master;
        let head = head::HeadState::default();
        Repository { inner: Arc::new(Inner { backend, keys, config, key_id, master, cache, chunker, head }) }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn repo_id(&self) -> &Id {
        &self.inner.config.repo_id
    }

    pub fn keys(&self) -> &RepoKeys {
        &self.inner.keys
    }

    /// The key slot this repository was opened with.
    pub fn key_id(&self) -> &Id {
        &self.inner.key_id
    }

    pub fn chunker(&self) -> &Chunker {
        &self.inner.chunker
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.inner.cache.as_ref()
    }

    // ---- blobs ----

    /// Hashes, compresses and seals a blob (CPU only).
    pub fn seal_blob(&self, blob_type: BlobType, raw: &[u8]) -> Result<SealedBlob> {
        let id = self.inner.keys.blob_id(blob_type, raw);
        self.seal_blob_with_id(blob_type, id, raw)
    }

    /// Seals a blob whose id the caller already computed. A plaintext over
    /// `MAX_BLOB_LEN`, which no reader would open, is refused.
    pub fn seal_blob_with_id(&self, blob_type: BlobType, id: Id, raw: &[u8]) -> Result<SealedBlob> {
        if raw.len() > MAX_BLOB_LEN as usize {
            return Err(RepoError::Invalid(format!(
                "a {} blob of {} bytes is over the limit of {MAX_BLOB_LEN} bytes",
                blob_type.name(),
                raw.len()
            )));
        }
        let ad = associated_data(self.repo_id(), blob_domain(blob_type), &id);
        let level = self.inner.config.compression_level;
        let mut appended = Ok(());
        let sealed =
            self.inner.keys.seal.seal_with(&ad, raw.len() + 5, |out| appended = append_payload(out, raw, level));
        appended.map_err(|e| RepoError::Invalid(e.to_string()))?;
        Ok(SealedBlob { blob_type, id, sealed, raw_len: raw.len() as u32 })
    }

    /// Authenticates, decrypts and decompresses a sealed blob and checks that
    /// its plaintext hashes to `id`.
    pub fn open_blob(&self, blob_type: BlobType, id: &Id, sealed: &[u8], raw_len: u32) -> Result<Vec<u8>> {
        let what = || format!("{} blob {}", blob_type.name(), id);
        let ad = associated_data(self.repo_id(), blob_domain(blob_type), id);
        let env = self.inner.keys.seal.open(&ad, sealed).map_err(|e| RepoError::damaged(what(), e))?;
        let raw = open_payload_owned(env, raw_len).map_err(|e| RepoError::damaged(what(), e))?;
        if raw.len() != raw_len as usize {
            return Err(RepoError::damaged(what(), "length differs from the index"));
        }
        if self.inner.keys.blob_id(blob_type, &raw) != *id {
            return Err(RepoError::damaged(what(), "content does not match its id"));
        }
        Ok(raw)
    }

    /// Reads one blob through the index: from its first location, or, when
    /// that fails (missing, unreadable, damaged), from the next (format.md
    /// §14). Storage that wants new credentials stops the search.
    pub async fn read_blob(&self, index: &MasterIndex, id: &Id) -> Result<Vec<u8>> {
        self.read_blob_sealed(index, id, None).await.map(|(raw, _)| raw)
    }

    /// Like [`read_blob`](Self::read_blob), also returning the sealed bytes
    /// read; with `blob_type`, the blob is opened as that type whatever the
    /// index says.
    async fn read_blob_sealed(
        &self,
        index: &MasterIndex,
        id: &Id,
        blob_type: Option<BlobType>,
    ) -> Result<(Vec<u8>, Bytes)> {
        let mut first_error = None;
        for mut loc in index.locations(id) {
            loc.blob_type = blob_type.unwrap_or(loc.blob_type);
            match self.read_blob_at(id, loc).await {
                Ok(read) => return Ok(read),
                Err(RepoError::Backend(e)) if e.needs_login() => return Err(RepoError::Backend(e)),
                Err(e) => {
                    tracing::warn!(blob = %id, pack = %loc.pack, error = %e, "blob unreadable here; trying its next location");
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| RepoError::damaged(format!("blob {id}"), "it is not in the index")))
    }

    async fn read_blob_at(&self, id: &Id, loc: index::BlobLocation) -> Result<(Vec<u8>, Bytes)> {
        let sealed = self.inner.backend.get_range(ObjectKind::Pack, &loc.pack, loc.offset as u64, loc.length).await?;
        let this = self.clone();
        let id = *id;
        let open = move || this.open_blob(loc.blob_type, &id, &sealed, loc.raw_len).map(|raw| (raw, sealed));
        if sealed_len_is_small(loc.length) {
            open()
        } else {
            tokio::task::spawn_blocking(open).await.map_err(|e| RepoError::Invalid(e.to_string()))?
        }
    }

    /// Reads and decodes a directory's tree from storage, bypassing the cache.
    pub async fn load_tree_from_storage(&self, index: &MasterIndex, id: &Id) -> Result<Tree> {
        self.load_directory(index, id, false).await.map(|(tree, _)| tree)
    }

    /// Reads and decodes a directory's tree, through the cache when possible.
    pub async fn load_tree(&self, index: &MasterIndex, id: &Id) -> Result<Tree> {
        self.load_directory(index, id, true).await.map(|(tree, _)| tree)
    }

    /// Like [`load_tree`](Self::load_tree), also returning the ids of the
    /// tree blobs a split directory is stored in (format.md §15.1; empty
    /// for a directory stored as one blob). Everything that decides which
    /// blobs are in use (prune) must count them beside `id`.
    pub async fn load_tree_parts(&self, index: &MasterIndex, id: &Id) -> Result<(Tree, Vec<Id>)> {
        self.load_directory(index, id, true).await
    }

    /// Every reader's way to a directory: the tree blob `id`, and when it is
    /// a part list, each of its parts in order, joined into one tree. The
    /// whole directory is held in memory.
    async fn load_directory(&self, index: &MasterIndex, id: &Id, use_cache: bool) -> Result<(Tree, Vec<Id>)> {
        let what = || format!("tree {id}");
        let raw = self.read_tree_blob(index, id, use_cache).await?;
        let parts = match TreeBlob::decode(&raw).map_err(|e| RepoError::damaged(what(), e))? {
            TreeBlob::Entries(tree) => return Ok((tree, Vec::new())),
            TreeBlob::Parts(parts) => parts,
        };
        drop(raw);
        let mut tree = Tree::default();
        for (i, part) in parts.iter().enumerate() {
            let whose = || format!("{} (part {} of {}, tree blob {part})", what(), i + 1, parts.len());
            let raw = self.read_tree_blob(index, part, use_cache).await.map_err(|e| match e {
                RepoError::Damaged { reason, .. } => RepoError::damaged(whose(), reason),
                other => other,
            })?;
            let part_tree = Tree::decode(&raw).map_err(|e| RepoError::damaged(whose(), e))?;
            tree.append_part(part_tree).map_err(|reason| RepoError::damaged(whose(), reason))?;
        }
        Ok((tree, parts))
    }

    /// The plaintext of tree blob `id`, from the cache when `use_cache` and
    /// it holds an authentic copy, otherwise from storage (then cached).
    async fn read_tree_blob(&self, index: &MasterIndex, id: &Id, use_cache: bool) -> Result<Vec<u8>> {
        let loc = index.lookup(id).ok_or_else(|| RepoError::damaged(format!("tree {id}"), "it is not in the index"))?;
        let cache = self.cache().filter(|_| use_cache);
        if let Some(cache) = cache {
            if let Ok(Some(sealed)) = cache.tree(id) {
                if let Ok(raw) = self.open_blob(BlobType::Tree, id, &sealed, loc.raw_len) {
                    return Ok(raw);
                }
            }
        }
        let (raw, sealed) = self.read_blob_sealed(index, id, Some(BlobType::Tree)).await?;
        if let Some(cache) = cache {
            if let Err(e) = cache.put_trees([(id, &sealed[..])]) {
                tracing::debug!(error = %e, "could not cache a tree");
            }
        }
        Ok(raw)
    }

    /// The sealed bytes of tree `id` as the local cache holds them, if they
    /// authenticate as that tree with plaintext length `raw_len`: a copy
    /// that outlives its pack, for repairs.
    pub fn cached_tree_blob(&self, id: &Id, raw_len: u32) -> Option<Vec<u8>> {
        let sealed = self.cache()?.tree(id).ok().flatten()?;
        self.open_blob(BlobType::Tree, id, &sealed, raw_len).ok().map(|_| sealed)
    }

    // ---- objects ----

    /// Seals and stores an index, snapshot or lock object; returns its id.
    pub async fn save_object(&self, kind: ObjectKind, plaintext: &[u8]) -> Result<Id> {
        // What readers would refuse is never written (an index object's cap
        // grows with its size, so only the general limit bounds it).
        let cap = kind.plain_cap(plaintext.len());
        if plaintext.len() > cap as usize {
            return Err(RepoError::Invalid(format!(
                "a {} object of {} bytes is over its limit of {cap} bytes",
                kind.name().trim_end_matches('s'),
                plaintext.len()
            )));
        }
        let id = self.inner.keys.object_id(kind, plaintext);
        let sealed =
            seal_object(&self.inner.keys, self.repo_id(), kind, &id, plaintext, self.inner.config.compression_level)
                .map_err(|e| RepoError::Invalid(format!("a {} object cannot be sealed: {e}", kind.name())))?;
        self.inner.backend.put(kind, &id, Bytes::from(sealed)).await?;
        if matches!(kind, ObjectKind::Index | ObjectKind::Snapshot) {
            self.inner.head.mark_dirty();
        }
        Ok(id)
    }

    /// Loads, authenticates and checks an object.
    pub async fn load_object(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let sealed = self.inner.backend.get(kind, id).await?;
        self.open_stored_object(kind, id, &sealed)
    }

    /// Authenticates a sealed object and checks that its plaintext hashes to `id`.
    pub fn open_stored_object(&self, kind: ObjectKind, id: &Id, sealed: &[u8]) -> Result<Vec<u8>> {
        let what = || format!("{} object {}", kind.name().trim_end_matches('s'), id);
        if sealed.len() > MAX_OBJECT_LEN as usize + 64 {
            return Err(RepoError::damaged(what(), "larger than any object may be"));
        }
        let plain = open_object(&self.inner.keys, self.repo_id(), kind, id, sealed)
            .map_err(|e| RepoError::damaged(what(), e))?;
        if self.inner.keys.object_id(kind, &plain) != *id {
            return Err(RepoError::damaged(what(), "content does not match its id"));
        }
        Ok(plain)
    }

    /// Every snapshot, oldest first. Unreadable ones are returned as errors
    /// beside the readable ones so that one damaged object hides nothing else.
    pub async fn snapshots(&self) -> Result<(Vec<(Id, Snapshot)>, Vec<(Id, RepoError)>)> {
        let list = self.inner.backend.list(ObjectKind::Snapshot).await?;
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for info in list {
            match self.load_object(ObjectKind::Snapshot, &info.id).await {
                Ok(plain) => match Snapshot::decode(&plain) {
                    Ok(s) => ok.push((info.id, s)),
                    Err(e) => bad.push((info.id, RepoError::damaged(format!("snapshot {}", info.id), e))),
                },
                Err(e) => bad.push((info.id, e)),
            }
        }
        ok.sort_by(|a: &(Id, Snapshot), b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
        Ok((ok, bad))
    }

    /// Resolves `latest`, a full id or a unique id prefix.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        self.find_snapshot_filtered(spec, &select::SnapshotFilter::default()).await
    }

    /// Resolves `latest` (the newest snapshot `filter` accepts: restic's
    /// `--host/--path/--tag`), a full id or a unique id prefix (whatever
    /// the filter). An ambiguous prefix lists the candidates.
    pub async fn find_snapshot_filtered(&self, spec: &str, filter: &select::SnapshotFilter) -> Result<(Id, Snapshot)> {
        let (snaps, _) = self.snapshots().await?;
        select::select_snapshot(snaps, spec, filter)
    }

    // ---- index ----

    /// Loads every index object not superseded by another, through the cache;
    /// any unreadable index object is an error.
    pub async fn load_index(&self) -> Result<MasterIndex> {
        let (index, mut bad) = self.load_index_report(true).await?;
        match bad.pop() {
            Some((_, e)) => Err(e),
            None => Ok(index),
        }
    }

    /// Loads every readable index object, logging the unreadable ones. For
    /// commands that stay correct when blobs seem absent (a snapshot stores
    /// them again, and its pack recovery re-indexes their packs; a restore
    /// names the files it cannot restore). Prune and check use the strict forms.
    pub async fn load_index_lenient(&self) -> Result<MasterIndex> {
        let (index, bad) = self.load_index_report(true).await?;
        for (id, e) in bad {
            tracing::warn!(index = %id.short(), error = %e, "ignoring an unreadable index object; run `tstor check`");
        }
        Ok(index)
    }

    /// Loads what index objects can be read, returning the unreadable ones
    /// beside it. `use_cache: false` reads every object from storage.
    ///
    /// One object at a time is read, opened, checked and added to the index,
    /// then dropped: memory holds the index and one object, never every
    /// object decoded. An object's packs count only if every object
    /// superseding it fails to decode; the superseded set is known only once
    /// every object is read, so in the rare case that an object already
    /// added turns out superseded (an interrupted prune left both), the
    /// index is built again from the objects in force.
    pub async fn load_index_report(&self, use_cache: bool) -> Result<(MasterIndex, Vec<(Id, RepoError)>)> {
        let listed = self.listed_index_objects(use_cache).await?;
        let mut reader = IndexObjectReader::new(self.cache().filter(|_| use_cache), self.cache());
        let mut superseded: HashSet<Id> = HashSet::new();
        let mut builder = MasterIndex::builder();
        let mut added: Vec<Id> = Vec::new();
        let mut bad = Vec::new();
        for id in &listed {
            let plain = match reader.read(self, id).await {
                Ok(plain) => plain,
                Err(e) => {
                    bad.push((*id, e));
                    continue;
                }
            };
            // Decoded whole first, so that an object that fails half-way adds nothing.
            let supersedes = match decode_packs(&plain, |_| {}) {
                Ok(s) => s,
                Err(e) => {
                    bad.push((*id, RepoError::damaged(format!("index object {id}"), e)));
                    continue;
                }
            };
            superseded.extend(supersedes);
            if superseded.contains(id) {
                continue;
            }
            decode_packs(&plain, |p| builder.add_pack(&p)).expect("the same bytes decoded a moment ago");
            added.push(*id);
        }
        reader.flush();
        if added.iter().any(|id| superseded.contains(id)) {
            builder = MasterIndex::builder();
            added.clear();
            let unreadable: HashSet<Id> = bad.iter().map(|(id, _)| *id).collect();
            for id in listed.iter().filter(|id| !superseded.contains(id) && !unreadable.contains(id)) {
                let plain = match reader.read(self, id).await {
                    Ok(plain) => plain,
                    Err(e) => {
                        bad.push((*id, e));
                        continue;
                    }
                };
                match decode_packs(&plain, |p| builder.add_pack(&p)) {
                    Ok(_) => added.push(*id),
                    // It decoded a moment ago; read again, it is what storage now gives.
                    Err(e) => bad.push((*id, RepoError::damaged(format!("index object {id}"), e))),
                }
            }
            reader.flush();
        }
        let mut index = builder.finish();
        index.index_ids = added;
        Ok((index, bad))
    }

    /// The index objects storage lists; with the cache in use, forgets the
    /// cached ones storage no longer has.
    async fn listed_index_objects(&self, use_cache: bool) -> Result<Vec<Id>> {
        let listed: Vec<Id> = self.inner.backend.list(ObjectKind::Index).await?.into_iter().map(|o| o.id).collect();
        if let Some(cache) = self.cache().filter(|_| use_cache) {
            let listed_ids: HashSet<&Id> = listed.iter().collect();
            if let Ok(cached) = cache.index_ids() {
                let gone: Vec<Id> = cached.into_iter().filter(|id| !listed_ids.contains(id)).collect();
                if !gone.is_empty() {
                    let _ = cache.remove_indexes(&gone);
                }
            }
        }
        Ok(listed)
    }

    /// Every index object in storage that can be read, decoded (superseded
    /// ones included), with the unreadable ones beside them. `use_cache:
    /// false` reads every object from storage. This holds every object
    /// decoded at once: what only needs the index uses
    /// [`load_index_report`](Self::load_index_report).
    pub async fn load_index_files(&self, use_cache: bool) -> Result<(Vec<(Id, IndexFile)>, Vec<(Id, RepoError)>)> {
        let listed = self.listed_index_objects(use_cache).await?;
        let mut reader = IndexObjectReader::new(self.cache().filter(|_| use_cache), self.cache());
        let mut files = Vec::with_capacity(listed.len());
        let mut bad = Vec::new();
        for id in listed {
            match reader.read(self, &id).await {
                Ok(plain) => match IndexFile::decode(&plain) {
                    Ok(file) => files.push((id, file)),
                    Err(e) => bad.push((id, RepoError::damaged(format!("index object {id}"), e))),
                },
                Err(e) => bad.push((id, e)),
            }
        }
        reader.flush();
        Ok((files, bad))
    }

    /// Stores index objects listing `packs`, as many as it takes to keep
    /// each within `MAX_INDEX_ENTRIES` blob entries (format.md §14); the
    /// last one stored carries `supersedes`, so the objects it replaces stay
    /// in force until all of the new ones are stored. Returns their ids, in
    /// the order stored; a caller deletes the replaced objects only after.
    pub async fn write_index(&self, packs: Vec<IndexedPack>, supersedes: Vec<Id>) -> Result<Vec<Id>> {
        self.write_index_bounded(packs, supersedes, MAX_INDEX_ENTRIES).await
    }

    /// [`write_index`](Self::write_index) with another bound on the entries
    /// of one index object (tests use it to split small indexes).
    pub async fn write_index_bounded(
        &self,
        packs: Vec<IndexedPack>,
        supersedes: Vec<Id>,
        max_entries: usize,
    ) -> Result<Vec<Id>> {
        let mut ids: Vec<Id> = Vec::new();
        for mut file in split_index(packs, supersedes, max_entries.max(1)) {
            // An object equal to one stored before (by an interrupted run
            // that wrote the same packs) has the same id: the last object
            // must not supersede what it is written beside.
            file.supersedes.retain(|id| !ids.contains(id));
            let plain = file.encode();
            drop(file);
            ids.push(self.save_object(ObjectKind::Index, &plain).await?);
        }
        Ok(ids)
    }

    /// Reads and authenticates a pack's header from storage.
    pub async fn read_pack_header(&self, pack: &Id, size: u64) -> Result<Vec<BlobEntry>> {
        let what = || format!("pack {pack}");
        if size < TRAILER_LEN as u64 {
            return Err(RepoError::damaged(what(), "too short to be a pack"));
        }
        let trailer =
            self.inner.backend.get_range(ObjectKind::Pack, pack, size - TRAILER_LEN as u64, TRAILER_LEN as u32).await?;
        let trailer: [u8; TRAILER_LEN] =
            trailer[..].try_into().map_err(|_| RepoError::damaged(what(), "short read"))?;
        let start = header_offset(size, &trailer).map_err(|e| RepoError::damaged(what(), e))?;
        let len = (size - TRAILER_LEN as u64 - start) as u32;
        let sealed = self.inner.backend.get_range(ObjectKind::Pack, pack, start, len).await?;
        self.open_pack_header(pack, &sealed, start)
    }

    /// Opens a sealed pack header that starts at `header_start` in its pack.
    pub fn open_pack_header(&self, pack: &Id, sealed: &[u8], header_start: u64) -> Result<Vec<BlobEntry>> {
        let what = || format!("header of pack {pack}");
        let ad = associated_data(self.repo_id(), PACK_HEADER_DOMAIN, &Id::ZERO);
        let plain = self.inner.keys.seal.open(&ad, sealed).map_err(|e| RepoError::damaged(what(), e))?;
        decode_header(&plain, header_start).map_err(|e| RepoError::damaged(what(), e))
    }

    /// Adds packs that storage holds but no index lists (left by an
    /// interrupted run) to `index`, writing an index object for them, so that
    /// their blobs are reused. Returns how many packs were recovered, and the
    /// unindexed packs whose header could not be read, with the reason
    /// (see [`describe_unreadable_pack`]).
    pub async fn index_unindexed_packs(&self, index: &mut MasterIndex) -> Result<(usize, Vec<(Id, String)>)> {
        let listed = self.inner.backend.list(ObjectKind::Pack).await?;
        let mut recovered = Vec::new();
        let mut unreadable = Vec::new();
        for info in listed.iter().filter(|p| !index.has_pack(&p.id)) {
            match self.read_pack_header(&info.id, info.size).await {
                Ok(blobs) => recovered.push(IndexedPack { id: info.id, size: info.size, blobs }),
                // Deleted since the listing (by a prune that held its lock before ours).
                Err(RepoError::Backend(e)) if e.is_not_found() => {}
                Err(RepoError::Backend(e)) if e.needs_login() => return Err(RepoError::Backend(e)),
                Err(e) => {
                    tracing::warn!(pack = %info.id, error = %e, "an unindexed pack cannot be read");
                    unreadable.push((info.id, e.to_string()));
                }
            }
        }
        if recovered.is_empty() {
            return Ok((0, unreadable));
        }
        let n = recovered.len();
        for p in &recovered {
            index.add_pack(p);
        }
        tracing::info!(packs = n, "indexing packs left by an interrupted run");
        let ids = self.write_index(recovered, Vec::new()).await?;
        index.index_ids.extend(ids);
        Ok((n, unreadable))
    }
}

/// Cached index objects written in one transaction at most this large.
const INDEX_CACHE_BATCH: usize = 8 << 20;

/// Reads index objects one by one, from the cache when it has them (the
/// cache holds sealed objects: what it gives is opened and checked against
/// its id like anything read from storage), and puts what it fetched from
/// storage into the cache in batches of bounded size.
struct IndexObjectReader<'c> {
    read_from: Option<&'c Cache>,
    write_to: Option<&'c Cache>,
    fresh: Vec<(Id, Bytes)>,
    fresh_bytes: usize,
}

impl<'c> IndexObjectReader<'c> {
    fn new(read_from: Option<&'c Cache>, write_to: Option<&'c Cache>) -> Self {
        IndexObjectReader { read_from, write_to, fresh: Vec::new(), fresh_bytes: 0 }
    }

    /// The plaintext of index object `id`.
    async fn read(&mut self, repo: &Repository, id: &Id) -> Result<Vec<u8>> {
        let cached = self
            .read_from
            .and_then(|c| c.index(id).ok().flatten())
            .and_then(|sealed| repo.open_stored_object(ObjectKind::Index, id, &sealed).ok());
        if let Some(plain) = cached {
            return Ok(plain);
        }
        let sealed = repo.inner.backend.get(ObjectKind::Index, id).await?;
        let plain = repo.open_stored_object(ObjectKind::Index, id, &sealed)?;
        if self.write_to.is_some() {
            self.fresh_bytes += sealed.len();
            self.fresh.push((*id, sealed));
            if self.fresh_bytes >= INDEX_CACHE_BATCH {
                self.flush();
            }
        }
        Ok(plain)
    }

    /// Puts what was fetched since the last flush into the cache.
    fn flush(&mut self) {
        let fresh = std::mem::take(&mut self.fresh);
        self.fresh_bytes = 0;
        if let (Some(cache), false) = (self.write_to, fresh.is_empty()) {
            if let Err(e) = cache.put_indexes(fresh.iter().map(|(id, p)| (id, &p[..]))) {
                tracing::debug!(error = %e, "could not cache index objects");
            }
        }
    }
}

/// What `check`, `snapshot` and `prune` all say of a pack no index lists
/// whose header cannot be read: its blobs cannot be reused, and prune keeps
/// it, because it may hold the only copy of some data.
pub fn describe_unreadable_pack(short_id: &str, reason: &str) -> String {
    format!(
        "pack {short_id} is in no index and its header cannot be read ({reason}): no snapshot can reuse what it holds; \
         prune leaves it alone in case it holds the only copy of some data"
    )
}

fn sealed_len_is_small(len: u32) -> bool {
    len < 64 << 10
}

fn seal_object(
    keys: &RepoKeys,
    repo_id: &Id,
    kind: ObjectKind,
    id: &Id,
    plain: &[u8],
    level: i32,
) -> std::result::Result<Vec<u8>, FormatError> {
    let env = seal_payload(plain, level)?;
    Ok(keys.seal.seal(&associated_data(repo_id, kind.tag(), id), &env))
}

#[derive(Debug, thiserror::Error)]
enum ObjectOpenError {
    #[error(transparent)]
    Seal(#[from] crate::crypto::OpenError),
    #[error(transparent)]
    Format(#[from] FormatError),
}

fn open_object(
    keys: &RepoKeys,
    repo_id: &Id,
    kind: ObjectKind,
    id: &Id,
    sealed: &[u8],
) -> std::result::Result<Vec<u8>, ObjectOpenError> {
    let env = keys.seal.open(&associated_data(repo_id, kind.tag(), id), sealed)?;
    let cap = kind.plain_cap(env.len());
    Ok(open_payload_owned(env, cap)?)
}
