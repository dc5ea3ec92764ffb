//! The Telegram backend: every object is one document message in a private
//! channel or in Saved Messages, with a constant MIME type, an empty caption
//! and an opaque file name (98 hex digits) made by the [`ObjectNames`] the
//! repository gave it (docs/format.md §23.4); an empty object is a text
//! message holding only that name. The channel's history is the source of
//! truth. The in-memory catalog maps stored names to message ids, and what
//! the names stand for under the names in use: names seen before the
//! repository keys arrive are classified again when they do. It is seeded
//! from the pinned head document (see `head`) and the messages after it, or
//! else built by a full history scan. Talks to Telegram through grammers
//! with tstor's own retry policy, a calls-per-minute budget and a shared
//! limit on upload parts in flight.

pub mod head;
pub mod retry;
pub mod session;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use grammers_client::sender::ConnectionParams;
use grammers_client::session::types::{PeerAuth, PeerId, PeerKind, PeerRef};
use grammers_client::{tl, Client, InvocationError, SenderPool};
use tokio::sync::Mutex;

use self::head::{Placed, Placement};
use self::retry::{FloodGate, TstorRetry};
pub use self::session::TelegramSession;
use super::{Backend, BackendError, Named, ObjectInfo, ObjectNames, Result};
use crate::crypto::names::{self, ObjectNameCodec};
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
/// The largest pack size accepted: far below Telegram's 2000 MiB per file.
pub const MAX_PACK_SIZE: usize = 512 << 20;
const MIME: &str = "application/octet-stream";
const PAGE: i32 = 100;
/// Messages fetched by id in one request.
const FETCH_BATCH: usize = 100;
/// Head documents downloaded at most, newest first.
const MAX_HEADS: usize = 8;

/// Where the repository's messages live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    SavedMessages,
    Channel {
        id: i64,
        access_hash: i64,
    },
    /// A channel known by id only; its access hash comes from the session,
    /// or from the account's dialogs.
    ChannelId(i64),
    /// A public channel or user name, resolved on first use.
    Username(String),
    /// A channel with this title, created by [`Backend::create`].
    NewChannel(String),
}

impl Target {
    /// Parses what follows `telegram:` in a repository spec: `me`,
    /// `@username`, `-100<channel id>` or `new:Title` (the title may be in
    /// double quotes).
    pub fn parse(spec: &str) -> std::result::Result<Target, String> {
        let bad = |why: &str| format!("`telegram:{spec}`: {why}");
        if spec == "me" {
            return Ok(Target::SavedMessages);
        }
        if let Some(name) = spec.strip_prefix('@') {
            let ok = (4..=32).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && name.as_bytes()[0].is_ascii_alphabetic();
            return if ok { Ok(Target::Username(name.to_string())) } else { Err(bad("not a Telegram username")) };
        }
        if let Some(digits) = spec.strip_prefix("-100") {
            return match digits.parse::<i64>() {
                Ok(id) if id > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Target::ChannelId(id)),
                _ => Err(bad("a channel id is -100 followed by digits")),
            };
        }
        if let Some(title) = spec.strip_prefix("new:") {
            let title = title.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(title).trim();
            if title.is_empty() || title.chars().count() > 128 {
                return Err(bad("a channel title has 1 to 128 characters"));
            }
            return Ok(Target::NewChannel(title.to_string()));
        }
        Err(bad("expected `me`, `@username`, `-100…` (a channel id) or `new:\"Title\"`"))
    }

    /// The repository spec (after `telegram:`) naming this target.
    pub fn spec(&self) -> String {
        match self {
            Target::SavedMessages => "me".into(),
            Target::Channel { id, .. } | Target::ChannelId(id) => format!("-100{id}"),
            Target::Username(u) => format!("@{u}"),
            Target::NewChannel(title) => format!("new:{title:?}"),
        }
    }
}

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
    /// Attempts per part and per request, beyond grammers' own retries.
    pub attempts: u32,
    /// First back-off after a dropped connection.
    pub retry_delay: Duration,
    /// Data pack size suggested to the repository, at most [`MAX_PACK_SIZE`].
    pub pack_size: usize,
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
            pack_size: DEFAULT_PACK_SIZE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DocRef {
    id: i64,
    access_hash: i64,
    file_reference: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Entry {
    msg_id: i32,
    size: u64,
    /// `None` for an empty object (a text message), and for an object
    /// known only from a head's placement until its message is fetched.
    doc: Option<DocRef>,
    /// When the message was sent (ns since the epoch, Telegram's clock);
    /// `None` for an object known only from a head's placement.
    sent_ns: Option<i64>,
}

impl Entry {
    /// Known from a placement only: the message must be fetched before reading.
    fn is_hint(&self) -> bool {
        self.size > 0 && self.doc.is_none()
    }
}

/// A message that may be tstor's: its stored name and where it is.
type Found = (String, Entry);

struct Catalog {
    /// The catalog can be used: built by a scan or seeded from a head.
    loaded: bool,
    /// Every message with an id up to this one has been read.
    scanned_through: i32,
    /// The names in use: the public ones until the repository gives its own.
    names: Arc<dyn ObjectNames>,
    /// Every message whose document name (or text, for an empty object) has
    /// the shape of a stored name, by that name. Several messages hold one
    /// name when two writers raced, or a head document was sent twice.
    by_name: HashMap<String, Vec<Entry>>,
    /// What the names in `by_name` stand for under `names`. A name that
    /// stands for nothing known (another repository's, or one seen before
    /// the repository keys arrived) is left out until `use_names`.
    named: HashMap<Named, String>,
    /// The pinned head the catalog was seeded from: a head whatever `names`
    /// can tell of its name (it is found before the repository keys exist).
    seeded_head: Option<i32>,
}

impl Catalog {
    fn new(names: Arc<dyn ObjectNames>) -> Catalog {
        Catalog {
            loaded: false,
            scanned_through: 0,
            names,
            by_name: HashMap::new(),
            named: HashMap::new(),
            seeded_head: None,
        }
    }

    /// Empties the catalog for a load that reads through `scanned_through`;
    /// the names in use stay.
    fn reset(&mut self, scanned_through: i32) {
        *self = Catalog { loaded: true, scanned_through, ..Catalog::new(Arc::clone(&self.names)) };
    }

    fn add(&mut self, (name, entry): Found) {
        let list = match self.by_name.get_mut(&name) {
            Some(list) => list,
            None => {
                if let Some(named) = self.names.parse(&name) {
                    self.named.insert(named, name.clone());
                }
                self.by_name.entry(name).or_default()
            }
        };
        match list.iter_mut().find(|e| e.msg_id == entry.msg_id) {
            Some(e) if e.is_hint() || entry.doc.is_some() => *e = entry,
            Some(_) => {}
            None => list.push(entry),
        }
    }

    /// Takes `names` from now on and works out again what every name seen
    /// so far stands for.
    fn use_names(&mut self, names: Arc<dyn ObjectNames>) {
        self.named = self.by_name.keys().filter_map(|n| Some((names.parse(n)?, n.clone()))).collect();
        self.names = names;
    }

    /// Forgets every message with one of these ids.
    fn forget(&mut self, ids: &HashSet<i32>) {
        self.by_name.retain(|_, list| {
            list.retain(|e| !ids.contains(&e.msg_id));
            !list.is_empty()
        });
        let by_name = &self.by_name;
        self.named.retain(|_, name| by_name.contains_key(name));
        if self.seeded_head.is_some_and(|id| ids.contains(&id)) {
            self.seeded_head = None;
        }
    }

    fn entries(&self, named: Named) -> Option<&Vec<Entry>> {
        self.named.get(&named).and_then(|name| self.by_name.get(name))
    }

    fn first(&self, named: Named) -> Option<Entry> {
        self.entries(named).and_then(|v| v.first()).cloned()
    }

    /// Every object of `kind` with its messages.
    fn of_kind(&self, kind: ObjectKind) -> impl Iterator<Item = (Id, &Vec<Entry>)> + '_ {
        self.named.iter().filter_map(move |(named, name)| match named {
            Named::Object(k, id) if *k == kind => Some((*id, self.by_name.get(name)?)),
            _ => None,
        })
    }

    /// Every head document known, newest first.
    fn heads(&self) -> Vec<Entry> {
        let named = self
            .named
            .iter()
            .filter(|(named, _)| matches!(named, Named::Head(_)))
            .filter_map(|(_, name)| self.by_name.get(name))
            .flatten();
        let seeded = self.by_name.values().flatten().filter(|e| self.seeded_head == Some(e.msg_id));
        let mut heads: Vec<Entry> = named.chain(seeded).filter(|e| e.doc.is_some()).cloned().collect();
        heads.sort_by_key(|e| std::cmp::Reverse(e.msg_id));
        heads.dedup_by_key(|e| e.msg_id);
        heads
    }

    /// The document of a message, if the catalog knows it.
    fn doc_of(&self, msg_id: i32) -> Option<DocRef> {
        self.by_name.values().flatten().find(|e| e.msg_id == msg_id).and_then(|e| e.doc.clone())
    }
}

pub struct TelegramBackend {
    client: Client,
    runner: tokio::task::JoinHandle<()>,
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
}

/// Newest file reference per document id.
type FileReferences = std::sync::Mutex<HashMap<i64, Vec<u8>>>;

/// The newest reference known for `doc`.
fn newest_reference(references: &FileReferences, doc: &DocRef) -> Vec<u8> {
    let known = references.lock().unwrap_or_else(|p| p.into_inner());
    known.get(&doc.id).cloned().unwrap_or_else(|| doc.file_reference.clone())
}

impl Drop for TelegramBackend {
    fn drop(&mut self) {
        self.runner.abort();
    }
}

fn transient(message: String, retry_after: Option<Duration>) -> BackendError {
    BackendError::Transient { message, retry_after }
}

fn permanent(message: impl Into<String>) -> BackendError {
    BackendError::Permanent { message: message.into() }
}

/// Classifies a grammers error for the layers above.
fn classify(e: InvocationError, what: &str) -> BackendError {
    let message = format!("Telegram {what}: {e}");
    match &e {
        InvocationError::Rpc(r) if r.code == 420 => transient(message, retry::flood_wait(&e)),
        InvocationError::Rpc(r) if r.code >= 500 => transient(message, None),
        InvocationError::Rpc(r) if r.code == 401 || r.name == "AUTH_KEY_DUPLICATED" => BackendError::NeedsLogin {
            message: format!("{message}: the Telegram session is no longer valid; run `tstor login`"),
        },
        InvocationError::Io(_) | InvocationError::Dropped(_) | InvocationError::Transport(_) => {
            transient(message, None)
        }
        _ => BackendError::Permanent { message },
    }
}

/// Fresh file references Telegram may refuse in a row, with no byte read in
/// between, before a read gives up. References expire at any time, so a
/// refusal or two is routine; eight in a row means something else is wrong.
const MAX_REFUSED_REFERENCES: u32 = 8;
/// Pauses (1, 2, 4 and 8 s) a read takes after `MAX_REFUSED_REFERENCES`
/// refusals in a row before it gives up: about 15 s more for a document
/// whose references are really never accepted.
const REFERENCE_PAUSES: u32 = 4;

/// The number inside an RPC error name such as `FILE_PART_3_MISSING`.
fn rpc_value(e: &InvocationError) -> Option<u32> {
    match e {
        InvocationError::Rpc(r) => r.value,
        _ => None,
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

fn file_name(d: &tl::types::Document) -> Option<&str> {
    d.attributes.iter().find_map(|a| match a {
        tl::enums::DocumentAttribute::Filename(f) => Some(f.file_name.as_str()),
        _ => None,
    })
}

/// A message date (seconds since the epoch) in nanoseconds.
fn sent_ns(date: i32) -> i64 {
    i64::from(date) * 1_000_000_000
}

/// The stored name and place of one message of the history, if it may be
/// tstor's: a document, or a text message, named like an object.
fn parse_message(message: &tl::enums::Message) -> Option<Found> {
    let tl::enums::Message::Message(m) = message else { return None };
    match &m.media {
        Some(tl::enums::MessageMedia::Document(md)) => {
            let Some(tl::enums::Document::Document(d)) = &md.document else { return None };
            let name = file_name(d).filter(|n| names::is_name_shaped(n))?;
            let doc = DocRef { id: d.id, access_hash: d.access_hash, file_reference: d.file_reference.clone() };
            Some((
                name.to_string(),
                Entry { msg_id: m.id, size: d.size as u64, doc: Some(doc), sent_ns: Some(sent_ns(m.date)) },
            ))
        }
        None if names::is_name_shaped(&m.message) => {
            Some((m.message.clone(), Entry { msg_id: m.id, size: 0, doc: None, sent_ns: Some(sent_ns(m.date)) }))
        }
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

fn channel_ref(c: &tl::enums::Chat) -> Option<(i64, i64)> {
    match c {
        tl::enums::Chat::Channel(c) => Some((c.id, c.access_hash.unwrap_or(0))),
        _ => None,
    }
}

/// The aligned `upload.getFile` requests covering `start..end`: each offset
/// is a multiple of its limit, a power of two between 4 KiB and 512 KiB, so
/// no request crosses a 1 MiB boundary. The plan starts at a multiple of the
/// largest such power of two not above the length: that reads at most the
/// length again before `start`, but spares the run of small requests an
/// unaligned start would need before it reaches full-size ones.
pub fn chunk_plan(start: u64, end: u64) -> Vec<(u64, u32)> {
    let mut plan = Vec::new();
    let len = end.saturating_sub(start).max(1);
    let step = (1u64 << len.ilog2()).clamp(4096, MAX_CHUNK as u64);
    let mut pos = start - start % step;
    while pos < end {
        let align = if pos == 0 { MAX_CHUNK as u64 } else { 1u64 << pos.trailing_zeros() };
        let want = (end - pos).next_power_of_two().max(4096);
        let limit = align.min(want).min(MAX_CHUNK as u64);
        plan.push((pos, limit as u32));
        pos += limit;
    }
    plan
}

/// `upload.getFile` requests one read keeps in flight.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Ranged reads a restore should keep in flight: with four requests each,
/// up to 32 round trips overlap. A 1 GiB restore at 50 ms per call took
/// 9.7 s with 8 and 34.6 s with 4.
const RANGES_IN_FLIGHT: usize = 8;

/// A spawned request that is cancelled when the read stops waiting for it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a download stopped.
enum DownloadError {
    /// This file reference expired: use a newer one, or fetch the message again.
    Expired(Vec<u8>),
    Failed(BackendError),
}

impl TelegramBackend {
    /// Starts a client on `session` for the repository at `target`.
    pub fn connect(session: Arc<TelegramSession>, target: Target, options: Options) -> TelegramBackend {
        let gate = Arc::new(FloodGate::new(options.calls_per_minute, options.parts_in_flight));
        let policy = TstorRetry {
            gate: Arc::clone(&gate),
            max_flood_wait: options.max_flood_wait,
            flood_tries: 8,
            io_tries: options.attempts,
            io_delay: options.retry_delay,
        };
        let params = ConnectionParams { retry_policy: Box::new(policy), ..Default::default() };
        let pool = SenderPool::with_configuration(Arc::clone(&session), options.api_id, params);
        let client = Client::new(pool.handle);
        let runner = tokio::spawn(pool.runner.run());
        TelegramBackend {
            client,
            runner,
            gate,
            target,
            options,
            session,
            peer: Mutex::new(None),
            catalog: Mutex::new(Catalog::new(Arc::new(ObjectNameCodec::public()))),
            scanning: Mutex::new(()),
            loading: Mutex::new(()),
            created: std::sync::Mutex::new(None),
            references: Arc::default(),
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
                            match retry_after {
                                Some(w) if *w > self.options.max_flood_wait => return Err(err),
                                Some(w) => self.gate.flooded(*w),
                                None => self.gate.hold(self.options.retry_delay * attempt),
                            }
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
        let channel =
            |id: i64, hash: i64| PeerRef { id: PeerId::channel_unchecked(id), auth: PeerAuth::from_hash(hash) };
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
                    _ => return Err(permanent("Telegram did not return the user")),
                }
            }
            Target::Channel { id, access_hash } => channel(*id, *access_hash),
            Target::ChannelId(id) => {
                let hash = match self.session.channel_hash(*id) {
                    Some(h) => h,
                    None => self.find_channel_in_dialogs(*id).await?,
                };
                channel(*id, hash)
            }
            Target::Username(name) => {
                let resolved = self
                    .invoke(
                        &tl::functions::contacts::ResolveUsername { username: name.clone(), referer: None },
                        "resolve username",
                    )
                    .await?;
                let tl::enums::contacts::ResolvedPeer::Peer(r) = resolved;
                let (id, hash) = r
                    .chats
                    .iter()
                    .find_map(channel_ref)
                    .ok_or_else(|| permanent(format!("@{name} is not a channel")))?;
                self.remember_channel(id, hash);
                channel(id, hash)
            }
            Target::NewChannel(title) => {
                return Err(permanent(format!(
                    "the channel \"{title}\" does not exist yet: create the repository first"
                )))
            }
        };
        *slot = Some(peer);
        Ok(peer)
    }

    fn remember_channel(&self, id: i64, hash: i64) {
        if let Err(e) = self.session.remember_channel(id, hash) {
            tracing::warn!(error = %e, "could not save the channel in the session");
        }
    }

    /// The access hash of channel `id`, from the account's dialogs.
    async fn find_channel_in_dialogs(&self, id: i64) -> Result<i64> {
        let mut offset_date = 0;
        let mut offset_id = 0;
        let mut offset_peer = tl::enums::InputPeer::Empty;
        for _ in 0..100 {
            let res = self
                .invoke(
                    &tl::functions::messages::GetDialogs {
                        exclude_pinned: false,
                        folder_id: None,
                        offset_date,
                        offset_id,
                        offset_peer: offset_peer.clone(),
                        limit: PAGE,
                        hash: 0,
                    },
                    "list dialogs",
                )
                .await?;
            use tl::enums::messages::Dialogs as D;
            let (dialogs, messages, chats, users, complete) = match res {
                D::Dialogs(d) => (d.dialogs, d.messages, d.chats, d.users, true),
                D::Slice(d) => (d.dialogs, d.messages, d.chats, d.users, false),
                D::NotModified(_) => break,
            };
            if let Some((_, hash)) = chats.iter().filter_map(channel_ref).find(|(c, _)| *c == id) {
                self.remember_channel(id, hash);
                return Ok(hash);
            }
            // The next page starts after the last dialog's top message.
            let Some(tl::enums::Dialog::Dialog(last)) = dialogs.last() else { break };
            if complete {
                break;
            }
            let top = messages.iter().find_map(|m| match m {
                tl::enums::Message::Message(m) if m.id == last.top_message && m.peer_id == last.peer => Some(m.date),
                tl::enums::Message::Service(m) if m.id == last.top_message && m.peer_id == last.peer => Some(m.date),
                _ => None,
            });
            let Some(date) = top else { break };
            offset_peer = match &last.peer {
                tl::enums::Peer::Channel(p) => {
                    let hash = chats.iter().filter_map(channel_ref).find(|(c, _)| *c == p.channel_id).map(|x| x.1);
                    tl::types::InputPeerChannel { channel_id: p.channel_id, access_hash: hash.unwrap_or(0) }.into()
                }
                tl::enums::Peer::Chat(p) => tl::types::InputPeerChat { chat_id: p.chat_id }.into(),
                tl::enums::Peer::User(p) => {
                    let hash = users.iter().find_map(|u| match u {
                        tl::enums::User::User(u) if u.id == p.user_id => u.access_hash,
                        _ => None,
                    });
                    tl::types::InputPeerUser { user_id: p.user_id, access_hash: hash.unwrap_or(0) }.into()
                }
            };
            if (offset_date, offset_id) == (date, last.top_message) {
                break;
            }
            offset_date = date;
            offset_id = last.top_message;
        }
        Err(permanent(format!(
            "channel -100{id} is not among this account's chats: check the id, and that this account is a member"
        )))
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
            _ => return Err(permanent("Telegram did not return the new channel")),
        };
        let (id, hash) =
            chats.iter().find_map(channel_ref).ok_or_else(|| permanent("Telegram did not return the new channel"))?;
        self.remember_channel(id, hash);
        *self.created.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        let peer = PeerRef { id: PeerId::channel_unchecked(id), auth: PeerAuth::from_hash(hash) };
        *self.peer.lock().await = Some(peer);
        Ok(peer)
    }

    /// One page of history, newest first: messages older than `offset_id`
    /// (0: the newest) and newer than `min_id`.
    async fn history_page(&self, peer: PeerRef, offset_id: i32, min_id: i32) -> Result<Vec<tl::enums::Message>> {
        let page = self
            .invoke(
                &tl::functions::messages::GetHistory {
                    peer: peer.into(),
                    offset_id,
                    offset_date: 0,
                    add_offset: 0,
                    limit: PAGE,
                    max_id: 0,
                    min_id,
                    hash: 0,
                },
                "read history",
            )
            .await?;
        Ok(messages_of(page))
    }

    /// Reads the history newer than `min_id` (all of it for 0); returns what
    /// it found and the newest message id seen.
    async fn read_history(&self, min_id: i32) -> Result<(Vec<Found>, i32)> {
        let peer = self.peer().await?;
        let mut found = Vec::new();
        let mut newest = min_id;
        let mut offset_id = 0;
        loop {
            let messages = self.history_page(peer, offset_id, min_id).await?;
            let Some(lowest) = messages.iter().map(|m| m.id()).min() else { break };
            newest = newest.max(messages.iter().map(|m| m.id()).max().unwrap_or(0));
            found.extend(messages.iter().filter(|m| m.id() > min_id).filter_map(parse_message));
            if (offset_id != 0 && lowest >= offset_id) || lowest <= min_id {
                break;
            }
            offset_id = lowest;
        }
        Ok((found, newest))
    }

    /// Reads the whole history and rebuilds the catalog from it.
    async fn full_scan(&self) -> Result<()> {
        let _scanning = self.scanning.lock().await;
        let (found, newest) = self.read_history(0).await?;
        let mut catalog = self.catalog.lock().await;
        catalog.reset(newest);
        for f in found {
            catalog.add(f);
        }
        tracing::debug!(names = catalog.by_name.len(), newest, "read the whole history");
        Ok(())
    }

    /// Reads the messages newer than any read so far into the catalog.
    async fn scan_new(&self) -> Result<()> {
        let _scanning = self.scanning.lock().await;
        let since = self.catalog.lock().await.scanned_through;
        let (found, newest) = self.read_history(since).await?;
        let mut catalog = self.catalog.lock().await;
        for f in found {
            catalog.add(f);
        }
        catalog.scanned_through = catalog.scanned_through.max(newest);
        Ok(())
    }

    /// Loads the catalog once: from the pinned head and the messages after
    /// it, or, without a usable head, from the whole history.
    async fn ensure_loaded(&self) -> Result<()> {
        if self.catalog.lock().await.loaded {
            return Ok(());
        }
        let _loading = self.loading.lock().await;
        if self.catalog.lock().await.loaded {
            return Ok(());
        }
        match self.seed_from_pinned_head().await {
            Ok(true) => self.scan_new().await,
            Ok(false) => self.full_scan().await,
            Err(e) if e.needs_login() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the pinned head; reading the whole history");
                self.full_scan().await
            }
        }
    }

    /// The pinned documents named like objects, newest first: the head is
    /// among them, but before the repository keys exist its name cannot
    /// tell it from the others; its contents do.
    async fn pinned_documents(&self) -> Result<Vec<Found>> {
        let peer = self.peer().await?;
        let res = self
            .invoke(
                &tl::functions::messages::Search {
                    peer: peer.into(),
                    q: String::new(),
                    from_id: None,
                    saved_peer_id: None,
                    saved_reaction: None,
                    top_msg_id: None,
                    filter: tl::enums::MessagesFilter::InputMessagesFilterPinned,
                    min_date: 0,
                    max_date: 0,
                    offset_id: 0,
                    add_offset: 0,
                    limit: 20,
                    max_id: 0,
                    min_id: 0,
                    hash: 0,
                },
                "find the pinned head",
            )
            .await?;
        let mut pinned: Vec<Found> =
            messages_of(res).iter().filter_map(parse_message).filter(|(_, e)| e.doc.is_some()).collect();
        pinned.sort_by_key(|(_, e)| std::cmp::Reverse(e.msg_id));
        Ok(pinned)
    }

    /// Seeds the catalog from the placement of the newest pinned head
    /// document; false if there is none.
    async fn seed_from_pinned_head(&self) -> Result<bool> {
        for (name, pinned) in self.pinned_documents().await? {
            let Some(bytes) = self.read_head(&pinned).await? else { continue };
            let placement = match head::decode(&bytes) {
                Ok((p, _)) => p,
                Err(e) => {
                    tracing::warn!(message = pinned.msg_id, error = %e, "a pinned document is no head");
                    continue;
                }
            };
            let mut catalog = self.catalog.lock().await;
            catalog.reset(placement.scanned_through);
            for p in placement.objects {
                catalog.add((
                    names::name_to_hex(&p.name),
                    Entry { msg_id: p.msg_id, size: p.size, doc: None, sent_ns: None },
                ));
            }
            catalog.seeded_head = Some(pinned.msg_id);
            catalog.add((name, pinned));
            tracing::debug!(names = catalog.by_name.len(), "catalog seeded from the pinned head");
            return Ok(true);
        }
        Ok(false)
    }

    /// An object's first copy; reads the newest messages once if it is not known.
    async fn lookup(&self, kind: ObjectKind, id: &Id) -> Result<Option<Entry>> {
        self.ensure_loaded().await?;
        let named = Named::Object(kind, *id);
        if let Some(e) = self.catalog.lock().await.first(named) {
            return Ok(Some(e));
        }
        // Not known here: another writer may have added it since.
        self.scan_new().await?;
        Ok(self.catalog.lock().await.first(named))
    }

    /// An object's first copy, with its document fetched if it was only a hint.
    async fn resolved(&self, kind: ObjectKind, id: &Id) -> Result<Option<Entry>> {
        for _ in 0..4 {
            let Some(entry) = self.lookup(kind, id).await? else { return Ok(None) };
            if !entry.is_hint() {
                return Ok(Some(entry));
            }
            // Fetch this message with other hinted ones, a batch per request.
            let batch: Vec<i32> = {
                let catalog = self.catalog.lock().await;
                let others = catalog
                    .of_kind(kind)
                    .flat_map(|(_, v)| v.iter())
                    .filter(|e| e.is_hint() && e.msg_id != entry.msg_id)
                    .map(|e| e.msg_id);
                std::iter::once(entry.msg_id).chain(others).take(FETCH_BATCH).collect()
            };
            self.fetch_messages(&batch).await?;
        }
        Err(permanent(format!("{} object {} could not be located", kind.name(), id)))
    }

    /// Fetches messages by id and brings the catalog up to date with them:
    /// fresh file references, hints resolved, messages that are gone forgotten.
    async fn fetch_messages(&self, ids: &[i32]) -> Result<()> {
        let peer = self.peer().await?;
        let input: Vec<tl::enums::InputMessage> =
            ids.iter().map(|&id| tl::enums::InputMessage::Id(tl::types::InputMessageId { id })).collect();
        let res = if peer.id.kind() == PeerKind::Channel {
            self.invoke(&tl::functions::channels::GetMessages { channel: peer.into(), id: input }, "fetch messages")
                .await?
        } else {
            self.invoke(&tl::functions::messages::GetMessages { id: input }, "fetch messages").await?
        };
        let messages = messages_of(res);
        let mut catalog = self.catalog.lock().await;
        catalog.forget(&ids.iter().copied().collect());
        for m in messages.iter().filter(|m| ids.contains(&m.id())) {
            if let Some(found) = parse_message(m) {
                if let Some(doc) = &found.1.doc {
                    let mut known = self.references.lock().unwrap_or_else(|p| p.into_inner());
                    known.insert(doc.id, doc.file_reference.clone());
                }
                catalog.add(found);
            }
        }
        Ok(())
    }

    async fn upload(&self, data: &Bytes, name: &str) -> Result<tl::enums::InputFile> {
        let file_id = random_id();
        let total = data.len().div_ceil(PART_SIZE);
        if total > MAX_PARTS {
            return Err(permanent(format!("{name} is {} bytes, more than Telegram's 2000 MiB limit", data.len())));
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
                    // One place among the parts in flight of every upload.
                    let _permit = gate.part().await;
                    save_part(&client, &gate, &options, file_id, part, total, big, bytes).await?;
                    gate.part_done();
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            let result = done.map_err(|e| permanent(format!("upload task failed: {e}")));
            if let Err(e) = result.and_then(|r| r) {
                workers.abort_all();
                return Err(e);
            }
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

    /// Uploads part `part` of an already uploaded file again, under its id.
    async fn resave_part(&self, input: &tl::enums::InputFile, data: &Bytes, part: usize) -> Result<()> {
        let (file_id, total, big) = match input {
            tl::enums::InputFile::File(f) => (f.id, f.parts as usize, false),
            tl::enums::InputFile::Big(f) => (f.id, f.parts as usize, true),
            _ => return Err(permanent("not an uploaded file")),
        };
        if part >= total {
            return Err(permanent(format!("Telegram names part {part} of a {total}-part file")));
        }
        let bytes = data.slice(part * PART_SIZE..((part + 1) * PART_SIZE).min(data.len()));
        tracing::info!(part, total, "re-sending a part Telegram no longer has");
        let _permit = self.gate.part().await;
        let result = save_part(&self.client, &self.gate, &self.options, file_id, part, total, big, bytes).await;
        self.gate.part_done();
        result
    }

    /// Finds a message sent earlier, after its answer was lost.
    async fn find_sent(&self, name: &str) -> Result<Option<i32>> {
        self.scan_new().await?;
        let catalog = self.catalog.lock().await;
        Ok(catalog.by_name.get(name).and_then(|v| v.iter().map(|e| e.msg_id).max()))
    }

    /// Sends one document (or, for empty data, a text message) named `name`;
    /// returns its message id when Telegram said it.
    async fn send(&self, peer: PeerRef, name: &str, data: &Bytes) -> Result<Option<i32>> {
        let random_id = random_id();
        let mut file = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = if data.is_empty() {
                self.gate.wait().await;
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
                        message: name.to_string(),
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
                        let f = self.upload(data, name).await?;
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
                            attributes: vec![
                                tl::types::DocumentAttributeFilename { file_name: name.to_string() }.into()
                            ],
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
                    let mut sent = None;
                    for m in new_messages(&updates) {
                        if let Some(found) = parse_message(m) {
                            sent = Some(m.id());
                            catalog.add(found);
                        }
                    }
                    return Ok(sent);
                }
                // A resend of a message whose answer was lost: it is there.
                Err(e) if is_rpc(&e, "RANDOM_ID_DUPLICATE") => {
                    return match self.find_sent(name).await? {
                        Some(id) => Ok(Some(id)),
                        None => Err(permanent(format!("{name} was reported sent but is not in the history"))),
                    };
                }
                // An uploaded part expired on Telegram's side: send that part
                // again under the same file id, or everything if the answer
                // does not say which.
                Err(e) if is_rpc(&e, "FILE_PART_MISSING") && attempt < self.options.attempts => {
                    match (rpc_value(&e), &file) {
                        (Some(part), Some(input)) => {
                            if let Err(resend) = self.resave_part(input, data, part as usize).await {
                                tracing::debug!(error = %resend, "re-sending one part failed; uploading the file again");
                                file = None;
                            }
                        }
                        _ => file = None,
                    }
                }
                Err(e) => {
                    let err = classify(e, "send document");
                    match &err {
                        BackendError::Transient { retry_after, .. } if attempt < self.options.attempts => {
                            // The send may have happened: the same random_id makes a resend safe.
                            match retry_after {
                                Some(w) if *w > self.options.max_flood_wait => return Err(err),
                                Some(w) => self.gate.flooded(*w),
                                None => self.gate.hold(self.options.retry_delay * attempt),
                            }
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }

    /// Appends bytes `offset..end` of a document to `out`, in aligned
    /// chunks; on an error, what was read so far stays in `out`.
    async fn download(
        &self,
        doc: &DocRef,
        offset: u64,
        end: u64,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), DownloadError> {
        // Up to CHUNKS_IN_FLIGHT requests overlap their round trips; bytes are
        // appended strictly in order, so after an error `out` holds exactly
        // the bytes before the failed chunk and a read can resume there.
        let mut plan = chunk_plan(offset, end).into_iter();
        let mut in_flight = std::collections::VecDeque::new();
        loop {
            while in_flight.len() < CHUNKS_IN_FLIGHT {
                let Some((pos, limit)) = plan.next() else { break };
                let (client, gate, references, doc) =
                    (self.client.clone(), Arc::clone(&self.gate), Arc::clone(&self.references), doc.clone());
                let fetch = tokio::spawn(async move {
                    gate.wait().await;
                    // The reference is taken only now: a refresh made while
                    // this request waited for its turn is used.
                    let file_reference = newest_reference(&references, &doc);
                    let location = tl::types::InputDocumentFileLocation {
                        id: doc.id,
                        access_hash: doc.access_hash,
                        file_reference: file_reference.clone(),
                        thumb_size: String::new(),
                    };
                    let request = tl::functions::upload::GetFile {
                        precise: false,
                        cdn_supported: false,
                        location: location.into(),
                        offset: pos as i64,
                        limit: limit as i32,
                    };
                    (client.invoke(&request).await, file_reference)
                });
                in_flight.push_back((pos, limit, AbortOnDrop(fetch)));
            }
            let Some((pos, limit, mut fetch)) = in_flight.pop_front() else { return Ok(()) };
            let (answer, used_reference) = (&mut fetch.0)
                .await
                .map_err(|e| DownloadError::Failed(permanent(format!("download task failed: {e}"))))?;
            let bytes = match answer {
                Ok(tl::enums::upload::File::File(f)) => f.bytes,
                Ok(tl::enums::upload::File::CdnRedirect(_)) => {
                    return Err(DownloadError::Failed(permanent("Telegram redirected a download to a CDN")))
                }
                Err(e) if is_rpc(&e, "FILE_REFERENCE_EXPIRED") => return Err(DownloadError::Expired(used_reference)),
                Err(e) => return Err(DownloadError::Failed(classify(e, "download"))),
            };
            let have_from = (offset.max(pos) - pos) as usize;
            let have_to = ((end.min(pos + limit as u64)) - pos) as usize;
            if bytes.len() < have_to {
                return Err(DownloadError::Failed(permanent("a document came back shorter than its size")));
            }
            out.extend_from_slice(&bytes[have_from..have_to]);
        }
    }

    async fn read(&self, kind: ObjectKind, id: &Id, offset: u64, len: u64) -> Result<Bytes> {
        let mut out = Vec::new();
        // Fresh file references fetched in a row without reading a byte,
        // and the pauses taken after too many of them.
        let mut stuck = 0;
        let mut pauses = 0;
        loop {
            let entry = self.resolved(kind, id).await?.ok_or_else(|| BackendError::not_found(kind, id))?;
            let end = offset.checked_add(len).filter(|&e| e <= entry.size).ok_or_else(|| {
                permanent(format!(
                    "{} object {} is {} bytes, shorter than the requested range {}+{}",
                    kind.name(),
                    id,
                    entry.size,
                    offset,
                    len
                ))
            })?;
            if len == 0 {
                return Ok(Bytes::new());
            }
            let doc = entry.doc.clone().ok_or_else(|| BackendError::not_found(kind, id))?;
            out.reserve_exact(len as usize - out.len());
            let had = out.len();
            // After a fresh reference, the read goes on where it stopped.
            match self.download(&doc, offset + had as u64, end, &mut out).await {
                Ok(()) => return Ok(Bytes::from(out)),
                Err(DownloadError::Expired(used)) if stuck < MAX_REFUSED_REFERENCES || out.len() > had => {
                    stuck = if out.len() > had { 0 } else { stuck + 1 };
                    // Another read may have fetched a newer reference meanwhile.
                    if newest_reference(&self.references, &doc) == used {
                        self.fetch_messages(&[entry.msg_id]).await?;
                    }
                }
                Err(DownloadError::Expired(_)) if pauses < REFERENCE_PAUSES => {
                    // References keep expiring faster than this read uses
                    // them: step back, so that the reads still in flight
                    // (and their refreshes) thin out, then start over.
                    let pause = Duration::from_secs(1 << pauses);
                    tracing::info!(object = %id.short(), pause_s = pause.as_secs(), "file references keep expiring");
                    tokio::time::sleep(pause).await;
                    pauses += 1;
                    stuck = 0;
                    self.fetch_messages(&[entry.msg_id]).await?;
                }
                Err(DownloadError::Expired(_)) => {
                    return Err(transient(format!("Telegram keeps refusing the file reference of {id}"), None))
                }
                Err(DownloadError::Failed(e)) => return Err(e),
            }
        }
    }

    /// A head document's bytes; `None` if its message is gone or its first
    /// bytes are not those of a head document (then it is not read in full).
    async fn read_head(&self, h: &Entry) -> Result<Option<Vec<u8>>> {
        let Some(mut doc) = h.doc.clone() else { return Ok(None) };
        let mut bytes = Vec::new();
        let mut end = h.size.min(MAX_CHUNK as u64);
        let mut refused = 0;
        loop {
            match self.download(&doc, bytes.len() as u64, end, &mut bytes).await {
                Ok(()) if end == h.size => return Ok(Some(bytes)),
                Ok(()) if head::starts_like_head(&bytes) => end = h.size,
                Ok(()) => return Ok(None),
                Err(DownloadError::Expired(used)) if refused < MAX_REFUSED_REFERENCES => {
                    refused += 1;
                    if newest_reference(&self.references, &doc) != used {
                        continue;
                    }
                    self.fetch_messages(&[h.msg_id]).await?;
                    match self.catalog.lock().await.doc_of(h.msg_id) {
                        Some(fresh) => doc = fresh,
                        None => return Ok(None),
                    }
                }
                Err(DownloadError::Expired(_)) => {
                    return Err(transient("Telegram keeps refusing the file reference of the head".into(), None))
                }
                Err(DownloadError::Failed(e)) => return Err(e),
            }
        }
    }

    async fn delete_messages(&self, ids: Vec<i32>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let peer = self.peer().await?;
        for chunk in ids.chunks(FETCH_BATCH) {
            if peer.id.kind() == PeerKind::Channel {
                self.invoke(
                    &tl::functions::channels::DeleteMessages { channel: peer.into(), id: chunk.to_vec() },
                    "delete",
                )
                .await?;
            } else {
                self.invoke(&tl::functions::messages::DeleteMessages { revoke: true, id: chunk.to_vec() }, "delete")
                    .await?;
            }
        }
        self.catalog.lock().await.forget(&ids.into_iter().collect());
        Ok(())
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
                    return Err(transient(format!("Telegram did not store part {part}"), None));
                }
            }
            Err(e) => {
                let err = classify(e, "upload part");
                match &err {
                    BackendError::Transient { retry_after, .. } if attempt < options.attempts => match retry_after {
                        Some(w) if *w > options.max_flood_wait => return Err(err),
                        Some(w) => gate.flooded(*w),
                        None => gate.hold(options.retry_delay * attempt),
                    },
                    _ => return Err(err),
                }
            }
        }
        attempt += 1;
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
                self.create_channel(title).await?;
            }
        }
        self.full_scan().await?;
        if self.catalog.lock().await.of_kind(ObjectKind::Config).next().is_none() {
            Ok(())
        } else {
            Err(permanent(format!("a repository already exists at {}", self.location())))
        }
    }

    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        self.ensure_loaded().await?;
        let named = Named::Object(kind, *id);
        let name = {
            let catalog = self.catalog.lock().await;
            if catalog.entries(named).is_some() {
                return Ok(());
            }
            catalog.names.name(named)
        };
        let peer = self.peer().await?;
        self.send(peer, &name, &data).await.map(drop)
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
            .send(peer, &name, &Bytes::from(document))
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
}

#[cfg(test)]
mod tests;
