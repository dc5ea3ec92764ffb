//! The Telegram backend: every object is one document message in a private
//! channel or in Saved Messages, with a constant MIME type, an empty caption
//! and an opaque file name (98 hex digits) made by the [`ObjectNames`] the
//! repository gave it (docs/format.md §23.4); an empty object is a text
//! message holding only that name. The channel's history is the source of
//! truth. The in-memory catalog maps stored names to message ids, and what
//! the names stand for under the names in use: names seen before the
//! repository keys arrive are classified again when they do. It is seeded
//! from the pinned head document (see `head`) and the messages after it, or
//! else built by a full history scan (for a bot session, which Telegram
//! refuses history reads, from messages read by id: see `bot`). Talks to
//! Telegram through grammers
//! with tstor's own retry policy, a calls-per-minute budget and a shared
//! limit on upload parts in flight.

mod bot;
mod catalog;
mod dcs;
mod delete;
mod download;
mod errors;
pub mod head;
mod peers;
mod resend;
pub mod retry;
pub mod session;
mod target;
mod transfer_pool;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use grammers_client::sender::{ConnectionParams, SenderPoolHandle};
use grammers_client::session::types::{PeerKind, PeerRef};
use grammers_client::{tl, Client, SenderPool};
use tokio::sync::Mutex;

use self::catalog::Catalog;
pub use self::download::chunk_plan;
use self::download::{FileReferences, RANGES_IN_FLIGHT};
use self::errors::{classify, permanent};
use self::head::{Placed, Placement};
use self::retry::{Budget, FloodGate, Line, TstorRetry};
pub use self::session::TelegramSession;
pub use self::target::Target;
use self::transfer_pool::TransferPool;
pub use self::transfer_pool::TRANSFER_CONNECTIONS;
use self::upload::Source;
use super::names::{self, Named, ObjectNames};
use super::{Backend, BackendError, ObjectInfo, Result, SpilledObject, StoredHandle};
use crate::format::{Id, ObjectKind};

/// Upload part size: Telegram's largest, which also reaches its 2000 MiB cap.
pub const PART_SIZE: usize = 512 * 1024;
/// Files above this size must be uploaded with `upload.saveBigFilePart`.
pub const BIG_FILE: usize = 10 * 1024 * 1024;
/// Most parts of one file for a non-premium account.
pub const MAX_PARTS: usize = 4000;
/// Largest `upload.getFile` chunk tstor asks for: grammers 0.11 cannot
/// receive a 1 MiB chunk (see docs/telegram.md).
pub const MAX_CHUNK: usize = 512 * 1024;
/// The data pack size suggested to the repository by default.
pub const DEFAULT_PACK_SIZE: usize = 64 << 20;
/// How long Telegram may stay unreachable before a request gives up.
pub const DEFAULT_UNREACHABLE_AFTER: Duration = Duration::from_secs(300);
/// The largest pack size accepted: far below Telegram's 2000 MiB per file.
pub const MAX_PACK_SIZE: usize = 512 << 20;
const MIME: &str = "application/octet-stream";
const PAGE: i32 = 100;
/// Messages fetched by id in one request.
const FETCH_BATCH: usize = 100;
/// Head documents downloaded at most, newest first.
const MAX_HEADS: usize = 8;

/// How the backend behaves; the defaults suit Telegram.
#[derive(Clone, Debug)]
pub struct Options {
    pub api_id: i32,
    /// Upload parts in flight at most, across every object being uploaded.
    pub parts_in_flight: usize,
    /// Every API call is paced to at most this many per minute (0: unpaced).
    pub calls_per_minute: u32,
    /// Longest flood wait to sit out; a longer one fails the operation.
    pub max_flood_wait: Duration,
    /// Rounds of attempts per part and per request for dropped connections
    /// and server failures, each of as many resends: `attempts` times
    /// `attempts + 1` sends in all, every one through the flood gate;
    /// flood waits are not counted.
    pub attempts: u32,
    /// First back-off after a dropped connection.
    pub retry_delay: Duration,
    /// How long a request keeps trying while Telegram cannot be reached
    /// (connections refused or dropped in a row) before it fails with
    /// [`BackendError::Unreachable`].
    pub unreachable_after: Duration,
    /// Data pack size suggested to the repository, at most [`MAX_PACK_SIZE`].
    pub pack_size: usize,
    /// Connections for upload parts and downloaded chunks, besides the one
    /// for every other call (0: transfers use that one too).
    pub transfer_connections: usize,
}

impl Options {
    /// The retries one request gets in tstor's own loop: as many sends in
    /// all as `attempts` rounds of `attempts` resends each, all of them
    /// through the gate.
    fn budget(&self) -> Budget {
        Budget {
            attempts: self.attempts * (self.attempts + 1),
            delay: self.retry_delay,
            max_flood_wait: self.max_flood_wait,
            give_up_after: self.unreachable_after,
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            api_id: 0,
            parts_in_flight: 8,
            calls_per_minute: 3000,
            max_flood_wait: Duration::from_secs(600),
            attempts: 5,
            retry_delay: Duration::from_millis(500),
            unreachable_after: DEFAULT_UNREACHABLE_AFTER,
            pack_size: DEFAULT_PACK_SIZE,
            transfer_connections: TRANSFER_CONNECTIONS,
        }
    }
}

pub struct TelegramBackend {
    client: Line,
    /// The client's handle below grammers' retry policy, for a call that
    /// must not be resent blindly after a dropped connection
    /// (`channels.createChannel`: see `peers`).
    raw: SenderPoolHandle,
    runner: tokio::task::JoinHandle<()>,
    /// The connections upload parts and downloaded chunks go through.
    transfers: Arc<TransferPool>,
    gate: Arc<FloodGate>,
    target: Target,
    options: Options,
    session: Arc<TelegramSession>,
    peer: Mutex<Option<PeerRef>>,
    catalog: Mutex<Catalog>,
    /// Held while the history is read, so that two readers do not both scan.
    scanning: Mutex<()>,
    /// Held while the catalog is first loaded.
    loading: Mutex<()>,
    /// The id of the channel [`Backend::create`] made, for `location`.
    created: std::sync::Mutex<Option<i64>>,
    /// The newest file reference fetched for each document (by document
    /// id). Every `upload.getFile` takes it just before it is sent, so one
    /// read's refresh serves every read of that document in flight.
    references: Arc<FileReferences>,
    /// Held while a read fetches a fresh file reference, so that reads
    /// refused together refresh once.
    refreshing: Mutex<()>,
    /// Whether the session is a bot's, once found out.
    bot: tokio::sync::OnceCell<bool>,
    /// The authorizations copied into other DCs for their documents.
    foreign_dcs: Arc<dcs::ForeignDcs>,
}

impl Drop for TelegramBackend {
    fn drop(&mut self) {
        self.runner.abort();
    }
}

impl TelegramBackend {
    /// Starts a client on `session` for the repository at `target`, naming
    /// and reading everything under `public_names` (under which the config
    /// and key slots are found) until the repository gives its own with
    /// [`Backend::use_object_names`].
    pub fn connect(
        session: Arc<TelegramSession>,
        target: Target,
        options: Options,
        public_names: Arc<dyn ObjectNames>,
    ) -> TelegramBackend {
        let gate = Arc::new(FloodGate::new(options.calls_per_minute, options.parts_in_flight));
        let params = ConnectionParams { retry_policy: Box::new(TstorRetry), ..Default::default() };
        let pool = SenderPool::with_configuration(Arc::clone(&session), options.api_id, params);
        let raw = pool.handle.thin.clone();
        let client = Line::new(Client::new(pool.handle));
        let runner = tokio::spawn(pool.runner.run());
        let transfers = Arc::new(TransferPool::new(Arc::clone(&session), options.clone(), client.clone()));
        TelegramBackend {
            client,
            raw,
            runner,
            transfers,
            gate,
            target,
            options,
            session,
            peer: Mutex::new(None),
            catalog: Mutex::new(Catalog::new(public_names)),
            scanning: Mutex::new(()),
            loading: Mutex::new(()),
            created: std::sync::Mutex::new(None),
            references: Arc::default(),
            refreshing: Mutex::new(()),
            bot: tokio::sync::OnceCell::new(),
            foreign_dcs: Arc::default(),
        }
    }

    /// The channel's id and access hash, once known (e.g. after creating it).
    pub async fn channel(&self) -> Option<(i64, i64)> {
        let peer = (*self.peer.lock().await)?;
        (peer.id.kind() == PeerKind::Channel).then(|| (peer.id.bare_id_unchecked(), peer.auth.hash()))
    }

    /// The repository spec (after `telegram:`) to use from now on: for a
    /// channel created by [`Backend::create`], its id.
    pub fn spec(&self) -> String {
        let loc = self.location();
        loc.strip_prefix("telegram:").unwrap_or(&loc).to_string()
    }

    /// The flood and pacing state, for tests and progress.
    pub fn gate(&self) -> &Arc<FloodGate> {
        &self.gate
    }

    /// The retries one request gets in tstor's own loop.
    fn budget(&self) -> Budget {
        self.options.budget()
    }

    /// Sends `request` until it is answered, as [`retry::invoke_retrying`] does.
    async fn invoke<R>(&self, request: &R, what: &str) -> Result<R::Return>
    where
        R: tl::RemoteCall + Clone + Send + Sync + 'static,
        R::Return: Send + 'static,
    {
        retry::invoke_retrying(&self.client, &self.gate, self.budget(), || request.clone())
            .await
            .map_err(|e| classify(e, what))
    }
}

#[async_trait]
impl Backend for TelegramBackend {
    /// The repository spec; for a channel this backend created, its id.
    fn location(&self) -> String {
        match (&self.target, *self.created.lock().unwrap_or_else(|e| e.into_inner())) {
            (Target::NewChannel(_), Some(id)) => format!("telegram:-100{id}"),
            (t, _) => format!("telegram:{}", t.spec()),
        }
    }

    async fn create(&self) -> Result<()> {
        if let Target::NewChannel(title) = &self.target {
            if self.peer.lock().await.is_none() {
                if self.is_bot().await? {
                    return Err(permanent(format!(
                        "a bot cannot create channels (telegram:new:…): {}",
                        bot::BOT_SETUP
                    )));
                }
                self.create_channel(title).await?;
            }
        }
        self.full_scan().await?;
        if self.catalog.lock().await.of_kind(ObjectKind::Config).next().is_none() {
            Ok(())
        } else {
            Err(BackendError::Occupied { message: "a repository already exists there".into() })
        }
    }

    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        self.put_from(kind, id, Source::Memory(data)).await
    }

    /// Packs upload part by part straight from their spill files.
    fn streams_spilled(&self) -> bool {
        true
    }

    async fn put_spilled(&self, kind: ObjectKind, id: &Id, object: Arc<SpilledObject>) -> Result<()> {
        self.put_from(kind, id, Source::Spilled(object)).await
    }

    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
        let entry = self.lookup(kind, id).await?.ok_or_else(|| BackendError::not_found(kind, id))?;
        self.read(kind, id, 0, entry.size).await
    }

    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
        self.read(kind, id, offset, len as u64).await
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        if self.catalog.lock().await.loaded {
            self.scan_new().await?;
        } else {
            self.ensure_loaded().await?;
        }
        let catalog = self.catalog.lock().await;
        let mut out: Vec<ObjectInfo> = catalog
            .of_kind(kind)
            .filter_map(|(id, v)| Some(ObjectInfo::new(id, v.first()?.size, v.first()?.sent_ns)))
            .collect();
        out.sort_by_key(|o| o.id);
        Ok(out)
    }

    async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()> {
        if self.lookup(kind, id).await?.is_none() {
            return Ok(());
        }
        let ids: Vec<i32> = self
            .catalog
            .lock()
            .await
            .entries(Named::Object(kind, *id))
            .map(|v| v.iter().map(|e| e.msg_id).collect())
            .unwrap_or_default();
        self.delete_messages(ids).await
    }

    fn preferred_pack_size(&self) -> Option<usize> {
        Some(self.options.pack_size.clamp(1 << 20, MAX_PACK_SIZE))
    }

    fn preferred_reads_in_flight(&self) -> Option<usize> {
        Some(RANGES_IN_FLIGHT)
    }

    fn keeps_head(&self) -> bool {
        true
    }

    async fn put_head(&self, sealed: Bytes) -> Result<()> {
        self.ensure_loaded().await?;
        self.scan_new().await?;
        let (placement, old_heads, object_names) = {
            let catalog = self.catalog.lock().await;
            // Only this repository's objects are placed: no locks (they
            // change every few minutes), no heads, no names it did not make.
            let mut objects: Vec<Placed> = catalog
                .named
                .iter()
                .filter(|(named, _)| matches!(named, Named::Object(kind, _) if *kind != ObjectKind::Lock))
                .filter_map(|(_, name)| Some((names::name_from_hex(name)?, catalog.by_name.get(name)?)))
                .flat_map(|(name, v)| v.iter().map(move |e| Placed { name, msg_id: e.msg_id, size: e.size }))
                .collect();
            objects.sort_by_key(|p| p.msg_id);
            let old: Vec<i32> = catalog.heads().iter().map(|h| h.msg_id).collect();
            (Placement { scanned_through: catalog.scanned_through, objects }, old, Arc::clone(&catalog.names))
        };
        let document = head::encode(&placement, &sealed);
        let name = object_names.name(Named::Head(Id(*blake3::hash(&document).as_bytes())));
        let peer = self.peer().await?;
        let msg_id = self
            .send(peer, &name, &Source::Memory(Bytes::from(document)))
            .await?
            .ok_or_else(|| permanent("Telegram did not say where the head was stored"))?;
        self.invoke(
            &tl::functions::messages::UpdatePinnedMessage {
                silent: true,
                unpin: false,
                pm_oneside: false,
                peer: peer.into(),
                id: msg_id,
            },
            "pin the head",
        )
        .await?;
        let old: Vec<i32> = old_heads.into_iter().filter(|&id| id != msg_id).collect();
        if let Err(e) = self.delete_messages(old).await {
            tracing::warn!(error = %e, "could not remove older heads");
        }
        Ok(())
    }

    async fn heads(&self, scan: bool) -> Result<Vec<Bytes>> {
        if scan {
            self.full_scan().await?;
        } else if self.catalog.lock().await.loaded {
            self.scan_new().await?;
        } else {
            self.ensure_loaded().await?;
        }
        let heads = self.catalog.lock().await.heads();
        let mut out = Vec::new();
        for h in heads.iter().take(MAX_HEADS) {
            if let Some(bytes) = self.read_head(h).await? {
                match head::decode(&bytes) {
                    Ok((_, sealed)) => out.push(Bytes::copy_from_slice(sealed)),
                    Err(e) => tracing::warn!(message = h.msg_id, error = %e, "ignoring an unreadable head"),
                }
            }
        }
        Ok(out)
    }

    async fn rescan(&self) -> Result<()> {
        self.full_scan().await
    }

    async fn use_object_names(&self, names: Arc<dyn ObjectNames>) {
        self.catalog.lock().await.use_names(names);
    }

    async fn stored_handle(&self, kind: ObjectKind, id: &Id) -> Result<Option<StoredHandle>> {
        self.document_handle(kind, id).await
    }

    /// Re-sends the document of another chat (see `resend`): no byte is
    /// uploaded.
    async fn put_from_handle(&self, kind: ObjectKind, id: &Id, handle: &StoredHandle) -> Result<bool> {
        self.resend(kind, id, handle).await
    }

    /// The messages in the chat as Telegram counts them (one
    /// `messages.getHistory` of one message): objects, heads, pins and
    /// service messages, and in Saved Messages whatever else is there.
    async fn stored_items(&self) -> Result<Option<super::StoredItems>> {
        let peer = self.peer().await?;
        let page = self
            .invoke(
                &tl::functions::messages::GetHistory {
                    peer: peer.into(),
                    offset_id: 0,
                    offset_date: 0,
                    add_offset: 0,
                    limit: 1,
                    max_id: 0,
                    min_id: 0,
                    hash: 0,
                },
                "count messages",
            )
            .await?;
        use tl::enums::messages::Messages as M;
        let count = match page {
            M::Messages(m) => m.messages.len() as i32,
            M::Slice(m) => m.count,
            M::ChannelMessages(m) => m.count,
            M::NotModified(m) => m.count,
        };
        Ok(Some(super::StoredItems { count: count.max(0) as u64, unit: "messages" }))
    }
}

#[cfg(test)]
mod tests;
