//! The Telegram backend: every object is one document message (file name
//! `tstor-<kind>-<id hex>`, constant MIME type, empty caption) in a private
//! channel or in Saved Messages; an empty object is a text message holding
//! only that name. The channel's history is the source of truth; the
//! in-memory catalog maps objects to message ids and is rebuilt by a history
//! scan. Talks to Telegram through grammers with tstor's own retry policy.

pub mod retry;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use grammers_client::sender::ConnectionParams;
use grammers_client::session::types::{PeerAuth, PeerId, PeerKind, PeerRef};
use grammers_client::{tl, Client, InvocationError, SenderPool};
use tokio::sync::Mutex;

use self::retry::{FloodGate, TstorRetry};
pub use self::session::TelegramSession;
use super::{Backend, BackendError, ObjectInfo, Result};
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
const MIME: &str = "application/octet-stream";
const PAGE: i32 = 100;

/// Where the repository's messages live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    SavedMessages,
    Channel {
        id: i64,
        access_hash: i64,
    },
    /// A public channel or user name, resolved on first use.
    Username(String),
    /// A channel with this title, created by [`Backend::create`].
    NewChannel(String),
}

/// How the backend behaves; the defaults suit Telegram.
#[derive(Clone, Debug)]
pub struct Options {
    pub api_id: i32,
    /// Upload parts in flight per object.
    pub parts_in_flight: usize,
    /// Longest flood wait to sit out before reporting the error.
    pub max_flood_wait: Duration,
    /// Attempts per part and per request, beyond grammers' own retries.
    pub attempts: u32,
    /// First back-off after a dropped connection.
    pub retry_delay: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            api_id: 0,
            parts_in_flight: 4,
            max_flood_wait: Duration::from_secs(600),
            attempts: 5,
            retry_delay: Duration::from_millis(500),
        }
    }
}

#[derive(Clone, Debug)]
struct DocRef {
    id: i64,
    access_hash: i64,
    file_reference: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Entry {
    msg_id: i32,
    size: u64,
    /// `None` for an empty object (a text message).
    doc: Option<DocRef>,
}

#[derive(Default)]
struct Catalog {
    loaded: bool,
    objects: HashMap<(ObjectKind, Id), Vec<Entry>>,
}

pub struct TelegramBackend {
    client: Client,
    runner: tokio::task::JoinHandle<()>,
    gate: Arc<FloodGate>,
    target: Target,
    options: Options,
    peer: Mutex<Option<PeerRef>>,
    catalog: Mutex<Catalog>,
}

impl Drop for TelegramBackend {
    fn drop(&mut self) {
        self.runner.abort();
    }
}

/// The document name of an object.
pub fn object_name(kind: ObjectKind, id: &Id) -> String {
    format!("tstor-{}-{}", kind.name(), id.to_hex())
}

/// The object a document name stands for, if it is one of tstor's.
pub fn parse_object_name(name: &str) -> Option<(ObjectKind, Id)> {
    let rest = name.strip_prefix("tstor-")?;
    let (kind, hex) = rest.rsplit_once('-')?;
    let kind = ObjectKind::ALL.into_iter().find(|k| k.name() == kind)?;
    Some((kind, hex.parse().ok()?))
}

fn transient(message: String, retry_after: Option<Duration>) -> BackendError {
    BackendError::Transient { message, retry_after }
}

/// Classifies a grammers error for the layers above.
fn classify(e: InvocationError, what: &str) -> BackendError {
    let message = format!("Telegram {what}: {e}");
    match &e {
        InvocationError::Rpc(r) if r.code == 420 => transient(message, retry::flood_wait(&e)),
        InvocationError::Rpc(r) if r.code >= 500 => transient(message, None),
        InvocationError::Rpc(r) if r.code == 401 => BackendError::Permanent {
            message: format!("{message} (the Telegram session is no longer valid: run `tstor login`)"),
        },
        InvocationError::Io(_) | InvocationError::Dropped(_) | InvocationError::Transport(_) => {
            transient(message, None)
        }
        _ => BackendError::Permanent { message },
    }
}

fn is_rpc(e: &InvocationError, name: &str) -> bool {
    matches!(e, InvocationError::Rpc(r) if r.name == name)
}

fn random_id() -> i64 {
    loop {
        let v = rand::random::<i64>();
        if v != 0 {
            return v;
        }
    }
}

/// What one message of the history says about tstor's objects.
fn entry_of(message: &tl::enums::Message) -> Option<((ObjectKind, Id), Entry)> {
    let tl::enums::Message::Message(m) = message else { return None };
    match &m.media {
        Some(tl::enums::MessageMedia::Document(md)) => {
            let Some(tl::enums::Document::Document(d)) = &md.document else { return None };
            let name = d.attributes.iter().find_map(|a| match a {
                tl::enums::DocumentAttribute::Filename(f) => Some(f.file_name.as_str()),
                _ => None,
            })?;
            let key = parse_object_name(name)?;
            let doc = DocRef { id: d.id, access_hash: d.access_hash, file_reference: d.file_reference.clone() };
            Some((key, Entry { msg_id: m.id, size: d.size as u64, doc: Some(doc) }))
        }
        None => Some((parse_object_name(&m.message)?, Entry { msg_id: m.id, size: 0, doc: None })),
        _ => None,
    }
}

fn messages_of(res: tl::enums::messages::Messages) -> Vec<tl::enums::Message> {
    use tl::enums::messages::Messages as M;
    match res {
        M::Messages(m) => m.messages,
        M::Slice(m) => m.messages,
        M::ChannelMessages(m) => m.messages,
        M::NotModified(_) => Vec::new(),
    }
}

fn new_messages(updates: &tl::enums::Updates) -> Vec<&tl::enums::Message> {
    let list = match updates {
        tl::enums::Updates::Updates(u) => &u.updates,
        tl::enums::Updates::Combined(u) => &u.updates,
        _ => return Vec::new(),
    };
    list.iter()
        .filter_map(|u| match u {
            tl::enums::Update::NewMessage(m) => Some(&m.message),
            tl::enums::Update::NewChannelMessage(m) => Some(&m.message),
            _ => None,
        })
        .collect()
}

/// The aligned `upload.getFile` requests covering `start..end`: each offset
/// is a multiple of its limit, a power of two between 4 KiB and 512 KiB, so
/// no request crosses a 1 MiB boundary.
pub fn chunk_plan(start: u64, end: u64) -> Vec<(u64, u32)> {
    let mut plan = Vec::new();
    let mut pos = start & !4095;
    while pos < end {
        let align = if pos == 0 { MAX_CHUNK as u64 } else { 1u64 << pos.trailing_zeros() };
        let want = (end - pos).next_power_of_two().max(4096);
        let limit = align.min(want).min(MAX_CHUNK as u64);
        plan.push((pos, limit as u32));
        pos += limit;
    }
    plan
}

impl TelegramBackend {
    /// Starts a client on `session` for the repository at `target`.
    pub fn connect(session: Arc<TelegramSession>, target: Target, options: Options) -> TelegramBackend {
        let gate = Arc::new(FloodGate::default());
        let policy = TstorRetry {
            gate: Arc::clone(&gate),
            max_flood_wait: options.max_flood_wait,
            flood_tries: 8,
            io_tries: options.attempts,
            io_delay: options.retry_delay,
        };
        let params = ConnectionParams { retry_policy: Box::new(policy), ..Default::default() };
        let pool = SenderPool::with_configuration(session, options.api_id, params);
        let client = Client::new(pool.handle);
        let runner = tokio::spawn(pool.runner.run());
        TelegramBackend {
            client,
            runner,
            gate,
            target,
            options,
            peer: Mutex::new(None),
            catalog: Mutex::new(Catalog::default()),
        }
    }

    /// The channel's id and access hash, once known (e.g. after creating it).
    pub async fn channel(&self) -> Option<(i64, i64)> {
        let peer = (*self.peer.lock().await)?;
        (peer.id.kind() == PeerKind::Channel).then(|| (peer.id.bare_id_unchecked(), peer.auth.hash()))
    }

    async fn invoke<R: tl::RemoteCall>(&self, request: &R, what: &str) -> Result<R::Return> {
        let mut attempt = 1;
        loop {
            self.gate.wait().await;
            match self.client.invoke(request).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let err = classify(e, what);
                    match &err {
                        BackendError::Transient { retry_after, .. } if attempt < self.options.attempts => {
                            let wait = retry_after.unwrap_or(self.options.retry_delay * attempt);
                            self.gate.hold(wait.min(self.options.max_flood_wait));
                            attempt += 1;
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }

    async fn peer(&self) -> Result<PeerRef> {
        let mut slot = self.peer.lock().await;
        if let Some(p) = *slot {
            return Ok(p);
        }
        let peer = match &self.target {
            Target::SavedMessages => {
                // The explicit user reference: grammers never matches the self sentinel.
                let users = self
                    .invoke(&tl::functions::users::GetUsers { id: vec![tl::enums::InputUser::UserSelf] }, "get_me")
                    .await?;
                match users.first() {
                    Some(tl::enums::User::User(u)) => PeerRef {
                        id: PeerId::user_unchecked(u.id),
                        auth: PeerAuth::from_hash(u.access_hash.unwrap_or(0)),
                    },
                    _ => return Err(BackendError::Permanent { message: "Telegram did not return the user".into() }),
                }
            }
            Target::Channel { id, access_hash } => {
                PeerRef { id: PeerId::channel_unchecked(*id), auth: PeerAuth::from_hash(*access_hash) }
            }
            Target::Username(name) => {
                let resolved = self
                    .invoke(
                        &tl::functions::contacts::ResolveUsername { username: name.clone(), referer: None },
                        "resolve username",
                    )
                    .await?;
                let tl::enums::contacts::ResolvedPeer::Peer(r) = resolved;
                r.chats
                    .iter()
                    .find_map(|c| match c {
                        tl::enums::Chat::Channel(c) => Some(PeerRef {
                            id: PeerId::channel_unchecked(c.id),
                            auth: PeerAuth::from_hash(c.access_hash.unwrap_or(0)),
                        }),
                        _ => None,
                    })
                    .ok_or_else(|| BackendError::Permanent { message: format!("@{name} is not a channel") })?
            }
            Target::NewChannel(title) => {
                return Err(BackendError::Permanent {
                    message: format!("the channel \"{title}\" does not exist yet: create the repository first"),
                })
            }
        };
        *slot = Some(peer);
        Ok(peer)
    }

    async fn create_channel(&self, title: &str) -> Result<PeerRef> {
        let updates = self
            .invoke(
                &tl::functions::channels::CreateChannel {
                    broadcast: true,
                    megagroup: false,
                    for_import: false,
                    forum: false,
                    title: title.to_string(),
                    about: String::new(),
                    geo_point: None,
                    address: None,
                    ttl_period: None,
                },
                "create channel",
            )
            .await?;
        let chats = match &updates {
            tl::enums::Updates::Updates(u) => &u.chats,
            tl::enums::Updates::Combined(u) => &u.chats,
            _ => return Err(BackendError::Permanent { message: "Telegram did not return the new channel".into() }),
        };
        let peer = chats
            .iter()
            .find_map(|c| match c {
                tl::enums::Chat::Channel(c) => Some(PeerRef {
                    id: PeerId::channel_unchecked(c.id),
                    auth: PeerAuth::from_hash(c.access_hash.unwrap_or(0)),
                }),
                _ => None,
            })
            .ok_or_else(|| BackendError::Permanent { message: "Telegram did not return the new channel".into() })?;
        *self.peer.lock().await = Some(peer);
        Ok(peer)
    }

    /// Reads the whole history and rebuilds the catalog from it.
    async fn scan(&self) -> Result<()> {
        let peer = self.peer().await?;
        let mut objects: HashMap<(ObjectKind, Id), Vec<Entry>> = HashMap::new();
        let mut offset_id = 0;
        loop {
            let page = self
                .invoke(
                    &tl::functions::messages::GetHistory {
                        peer: peer.into(),
                        offset_id,
                        offset_date: 0,
                        add_offset: 0,
                        limit: PAGE,
                        max_id: 0,
                        min_id: 0,
                        hash: 0,
                    },
                    "read history",
                )
                .await?;
            let messages = messages_of(page);
            let Some(lowest) = messages.iter().map(|m| m.id()).min() else { break };
            for m in &messages {
                if let Some((key, entry)) = entry_of(m) {
                    objects.entry(key).or_default().push(entry);
                }
            }
            if offset_id != 0 && lowest >= offset_id {
                break;
            }
            offset_id = lowest;
        }
        let mut catalog = self.catalog.lock().await;
        catalog.objects = objects;
        catalog.loaded = true;
        Ok(())
    }

    async fn lookup(&self, kind: ObjectKind, id: &Id) -> Result<Option<Entry>> {
        {
            let catalog = self.catalog.lock().await;
            if let Some(e) = catalog.objects.get(&(kind, *id)).and_then(|v| v.first()) {
                return Ok(Some(e.clone()));
            }
        }
        // Not known here: another writer may have added it since the last scan.
        self.scan().await?;
        Ok(self.catalog.lock().await.objects.get(&(kind, *id)).and_then(|v| v.first()).cloned())
    }

    async fn ensure_loaded(&self) -> Result<()> {
        if !self.catalog.lock().await.loaded {
            self.scan().await?;
        }
        Ok(())
    }

    async fn upload(&self, data: &Bytes, name: &str) -> Result<tl::enums::InputFile> {
        let file_id = random_id();
        let total = data.len().div_ceil(PART_SIZE);
        if total > MAX_PARTS {
            return Err(BackendError::Permanent {
                message: format!("{name} is {} bytes, more than Telegram's 2000 MiB limit", data.len()),
            });
        }
        let big = data.len() > BIG_FILE;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.options.parts_in_flight.clamp(1, total) {
            let (client, gate, data, next, options) =
                (self.client.clone(), Arc::clone(&self.gate), data.clone(), Arc::clone(&next), self.options.clone());
            workers.spawn(async move {
                loop {
                    let part = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if part >= total {
                        return Ok(());
                    }
                    let bytes = data.slice(part * PART_SIZE..((part + 1) * PART_SIZE).min(data.len()));
                    save_part(&client, &gate, &options, file_id, part, total, big, bytes).await?;
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.map_err(|e| BackendError::Permanent { message: format!("upload task failed: {e}") })??;
        }
        Ok(if big {
            tl::types::InputFileBig { id: file_id, parts: total as i32, name: name.to_string() }.into()
        } else {
            tl::types::InputFile {
                id: file_id,
                parts: total as i32,
                name: name.to_string(),
                md5_checksum: String::new(),
            }
            .into()
        })
    }

    async fn send(&self, peer: PeerRef, kind: ObjectKind, id: &Id, data: &Bytes) -> Result<()> {
        let name = object_name(kind, id);
        let random_id = random_id();
        let mut file = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = if data.is_empty() {
                self.client
                    .invoke(&tl::functions::messages::SendMessage {
                        no_webpage: true,
                        silent: true,
                        background: false,
                        clear_draft: false,
                        noforwards: false,
                        update_stickersets_order: false,
                        invert_media: false,
                        allow_paid_floodskip: false,
                        peer: peer.into(),
                        reply_to: None,
                        message: name.clone(),
                        random_id,
                        reply_markup: None,
                        entities: None,
                        schedule_date: None,
                        schedule_repeat_period: None,
                        send_as: None,
                        quick_reply_shortcut: None,
                        effect: None,
                        allow_paid_stars: None,
                        suggested_post: None,
                        rich_message: None,
                    })
                    .await
            } else {
                // Every part is confirmed before the document is sent.
                let input = match &file {
                    Some(f) => Clone::clone(f),
                    None => {
                        let f = self.upload(data, &name).await?;
                        file = Some(f.clone());
                        f
                    }
                };
                self.gate.wait().await;
                self.client
                    .invoke(&tl::functions::messages::SendMedia {
                        silent: true,
                        background: false,
                        clear_draft: false,
                        noforwards: false,
                        update_stickersets_order: false,
                        invert_media: false,
                        allow_paid_floodskip: false,
                        peer: peer.into(),
                        reply_to: None,
                        media: tl::types::InputMediaUploadedDocument {
                            nosound_video: false,
                            force_file: true,
                            spoiler: false,
                            file: input,
                            thumb: None,
                            mime_type: MIME.into(),
                            attributes: vec![tl::types::DocumentAttributeFilename { file_name: name.clone() }.into()],
                            stickers: None,
                            video_cover: None,
                            video_timestamp: None,
                            ttl_seconds: None,
                        }
                        .into(),
                        message: String::new(),
                        random_id,
                        reply_markup: None,
                        entities: None,
                        schedule_date: None,
                        schedule_repeat_period: None,
                        send_as: None,
                        quick_reply_shortcut: None,
                        effect: None,
                        allow_paid_stars: None,
                        suggested_post: None,
                    })
                    .await
            };
            match result {
                Ok(updates) => {
                    let mut catalog = self.catalog.lock().await;
                    for m in new_messages(&updates) {
                        if let Some((key, entry)) = entry_of(m) {
                            catalog.objects.entry(key).or_default().push(entry);
                        }
                    }
                    return Ok(());
                }
                // A resend of a message whose answer was lost: it is there.
                Err(e) if is_rpc(&e, "RANDOM_ID_DUPLICATE") => {
                    return match self.lookup(kind, id).await? {
                        Some(_) => Ok(()),
                        None => Err(BackendError::Permanent {
                            message: format!("{name} was reported sent but is not in the history"),
                        }),
                    };
                }
                // Uploaded parts expire on Telegram's side: upload again.
                Err(e) if is_rpc(&e, "FILE_PART_MISSING") && attempt < self.options.attempts => file = None,
                Err(e) => {
                    let err = classify(e, "send document");
                    match &err {
                        BackendError::Transient { retry_after, .. } if attempt < self.options.attempts => {
                            // The send may have happened: the same random_id makes a resend safe.
                            self.gate.hold(retry_after.unwrap_or(self.options.retry_delay * attempt));
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }

    /// Fetches the message again for a fresh file reference; `None` if it is gone.
    async fn refresh(&self, kind: ObjectKind, id: &Id, entry: &Entry) -> Result<Option<Entry>> {
        let peer = self.peer().await?;
        let ids = vec![tl::enums::InputMessage::Id(tl::types::InputMessageId { id: entry.msg_id })];
        let res = if peer.id.kind() == PeerKind::Channel {
            self.invoke(&tl::functions::channels::GetMessages { channel: peer.into(), id: ids }, "refresh message")
                .await?
        } else {
            self.invoke(&tl::functions::messages::GetMessages { id: ids }, "refresh message").await?
        };
        let fresh = messages_of(res).iter().find_map(entry_of).filter(|(key, _)| *key == (kind, *id)).map(|(_, e)| e);
        let mut catalog = self.catalog.lock().await;
        let list = catalog.objects.entry((kind, *id)).or_default();
        list.retain(|e| e.msg_id != entry.msg_id);
        if let Some(f) = &fresh {
            list.insert(0, f.clone());
        }
        if list.is_empty() {
            catalog.objects.remove(&(kind, *id));
        }
        Ok(fresh)
    }

    async fn read(&self, kind: ObjectKind, id: &Id, offset: u64, len: u64) -> Result<Bytes> {
        let mut entry = self.lookup(kind, id).await?.ok_or_else(|| BackendError::not_found(kind, id))?;
        let end = offset.checked_add(len).filter(|&e| e <= entry.size).ok_or_else(|| BackendError::Permanent {
            message: format!(
                "{} object {} is {} bytes, shorter than the requested range {}+{}",
                kind.name(),
                id,
                entry.size,
                offset,
                len
            ),
        })?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut refreshes = 0;
        let plan = chunk_plan(offset, end);
        let mut i = 0;
        while i < plan.len() {
            let (pos, limit) = plan[i];
            let doc = entry.doc.clone().ok_or_else(|| BackendError::not_found(kind, id))?;
            let request = tl::functions::upload::GetFile {
                precise: false,
                cdn_supported: false,
                location: tl::types::InputDocumentFileLocation {
                    id: doc.id,
                    access_hash: doc.access_hash,
                    file_reference: doc.file_reference,
                    thumb_size: String::new(),
                }
                .into(),
                offset: pos as i64,
                limit: limit as i32,
            };
            self.gate.wait().await;
            let bytes = match self.client.invoke(&request).await {
                Ok(tl::enums::upload::File::File(f)) => f.bytes,
                Ok(tl::enums::upload::File::CdnRedirect(_)) => {
                    return Err(BackendError::Permanent { message: "Telegram redirected a download to a CDN".into() })
                }
                Err(e) if is_rpc(&e, "FILE_REFERENCE_EXPIRED") && refreshes < 3 => {
                    refreshes += 1;
                    entry = self.refresh(kind, id, &entry).await?.ok_or_else(|| BackendError::not_found(kind, id))?;
                    continue;
                }
                Err(e) => return Err(classify(e, "download")),
            };
            let have_from = (offset.max(pos) - pos) as usize;
            let have_to = ((end.min(pos + limit as u64)) - pos) as usize;
            if bytes.len() < have_to {
                return Err(BackendError::Permanent {
                    message: format!("{} object {} came back shorter than its size", kind.name(), id),
                });
            }
            out.extend_from_slice(&bytes[have_from..have_to]);
            i += 1;
        }
        Ok(Bytes::from(out))
    }
}

#[allow(clippy::too_many_arguments)]
async fn save_part(
    client: &Client,
    gate: &FloodGate,
    options: &Options,
    file_id: i64,
    part: usize,
    total: usize,
    big: bool,
    bytes: Bytes,
) -> Result<()> {
    let mut attempt = 1;
    loop {
        gate.wait().await;
        let result = if big {
            client
                .invoke(&tl::functions::upload::SaveBigFilePart {
                    file_id,
                    file_part: part as i32,
                    file_total_parts: total as i32,
                    bytes: bytes.to_vec(),
                })
                .await
        } else {
            client
                .invoke(&tl::functions::upload::SaveFilePart { file_id, file_part: part as i32, bytes: bytes.to_vec() })
                .await
        };
        match result {
            Ok(true) => return Ok(()),
            Ok(false) => {
                if attempt >= options.attempts {
                    return Err(BackendError::Transient {
                        message: format!("Telegram did not store part {part}"),
                        retry_after: None,
                    });
                }
            }
            Err(e) => {
                let err = classify(e, "upload part");
                match &err {
                    BackendError::Transient { retry_after, .. } if attempt < options.attempts => {
                        gate.hold(retry_after.unwrap_or(options.retry_delay * attempt));
                    }
                    _ => return Err(err),
                }
            }
        }
        attempt += 1;
    }
}

#[async_trait]
impl Backend for TelegramBackend {
    fn location(&self) -> String {
        match &self.target {
            Target::SavedMessages => "telegram:saved-messages".into(),
            Target::Channel { id, .. } => format!("telegram:channel:{id}"),
            Target::Username(u) => format!("telegram:@{u}"),
            Target::NewChannel(title) => format!("telegram:new:{title:?}"),
        }
    }

    async fn create(&self) -> Result<()> {
        if let Target::NewChannel(title) = &self.target {
            if self.peer.lock().await.is_none() {
                self.create_channel(title).await?;
            }
        }
        self.scan().await?;
        if !self.catalog.lock().await.objects.keys().any(|(k, _)| *k == ObjectKind::Config) {
            Ok(())
        } else {
            Err(BackendError::Permanent { message: format!("a repository already exists at {}", self.location()) })
        }
    }

    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        self.ensure_loaded().await?;
        if self.catalog.lock().await.objects.contains_key(&(kind, *id)) {
            return Ok(());
        }
        let peer = self.peer().await?;
        self.send(peer, kind, id, &data).await
    }

    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
        let entry = self.lookup(kind, id).await?.ok_or_else(|| BackendError::not_found(kind, id))?;
        self.read(kind, id, 0, entry.size).await
    }

    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
        self.read(kind, id, offset, len as u64).await
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.scan().await?;
        let catalog = self.catalog.lock().await;
        let mut out: Vec<ObjectInfo> = catalog
            .objects
            .iter()
            .filter(|((k, _), v)| *k == kind && !v.is_empty())
            .map(|((_, id), v)| ObjectInfo { id: *id, size: v[0].size })
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
            .objects
            .get(&(kind, *id))
            .map(|v| v.iter().map(|e| e.msg_id).collect())
            .unwrap_or_default();
        let peer = self.peer().await?;
        if peer.id.kind() == PeerKind::Channel {
            self.invoke(&tl::functions::channels::DeleteMessages { channel: peer.into(), id: ids }, "delete").await?;
        } else {
            self.invoke(&tl::functions::messages::DeleteMessages { revoke: true, id: ids }, "delete").await?;
        }
        self.catalog.lock().await.objects.remove(&(kind, *id));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
