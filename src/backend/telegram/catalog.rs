//! The catalog: which message holds the document of which stored name, and
//! what the names stand for under the names in use. Loaded from the pinned
//! head and the messages after it, or from a full history scan; kept up to
//! date by reading the newest messages and fetching messages by id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use grammers_client::session::types::{PeerKind, PeerRef};
use grammers_client::tl;

use super::errors::permanent;
use super::head;
use super::{TelegramBackend, FETCH_BATCH, PAGE};
use crate::backend::names;
use crate::backend::{Named, ObjectNames, Result};
use crate::format::{Id, ObjectKind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DocRef {
    pub(super) id: i64,
    pub(super) access_hash: i64,
    pub(super) file_reference: Vec<u8>,
    /// The DC that stores the document (`document.dc_id`).
    pub(super) dc_id: i32,
}

#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) msg_id: i32,
    pub(super) size: u64,
    /// `None` for an empty object (a text message), and for an object
    /// known only from a head's placement until its message is fetched.
    pub(super) doc: Option<DocRef>,
    /// When the message was sent (ns since the epoch, Telegram's clock);
    /// `None` for an object known only from a head's placement.
    pub(super) sent_ns: Option<i64>,
}

impl Entry {
    /// Known from a placement only: the message must be fetched before reading.
    pub(super) fn is_hint(&self) -> bool {
        self.size > 0 && self.doc.is_none()
    }
}

/// A message that may be tstor's: its stored name and where it is.
pub(super) type Found = (String, Entry);

pub(super) struct Catalog {
    /// The catalog can be used: built by a scan or seeded from a head.
    pub(super) loaded: bool,
    /// Every message with an id up to this one has been read.
    pub(super) scanned_through: i32,
    /// The names in use: the public ones until the repository gives its own.
    pub(super) names: Arc<dyn ObjectNames>,
    /// Every message whose document name (or text, for an empty object) has
    /// the shape of a stored name, by that name. Several messages hold one
    /// name when two writers raced, or a head document was sent twice.
    pub(super) by_name: HashMap<String, Vec<Entry>>,
    /// What the names in `by_name` stand for under `names`. A name that
    /// stands for nothing known (another repository's, or one seen before
    /// the repository keys arrived) is left out until `use_names`.
    pub(super) named: HashMap<Named, String>,
    /// The pinned head the catalog was seeded from: a head whatever `names`
    /// can tell of its name (it is found before the repository keys exist).
    pub(super) seeded_head: Option<i32>,
}

impl Catalog {
    pub(super) fn new(names: Arc<dyn ObjectNames>) -> Catalog {
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
    pub(super) fn reset(&mut self, scanned_through: i32) {
        *self = Catalog { loaded: true, scanned_through, ..Catalog::new(Arc::clone(&self.names)) };
    }

    pub(super) fn add(&mut self, (name, entry): Found) {
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
    pub(super) fn use_names(&mut self, names: Arc<dyn ObjectNames>) {
        self.named = self.by_name.keys().filter_map(|n| Some((names.parse(n)?, n.clone()))).collect();
        self.names = names;
    }

    /// Forgets every message with one of these ids.
    pub(super) fn forget(&mut self, ids: &HashSet<i32>) {
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

    pub(super) fn entries(&self, named: Named) -> Option<&Vec<Entry>> {
        self.named.get(&named).and_then(|name| self.by_name.get(name))
    }

    pub(super) fn first(&self, named: Named) -> Option<Entry> {
        self.entries(named).and_then(|v| v.first()).cloned()
    }

    /// Every object of `kind` with its messages.
    pub(super) fn of_kind(&self, kind: ObjectKind) -> impl Iterator<Item = (Id, &Vec<Entry>)> + '_ {
        self.named.iter().filter_map(move |(named, name)| match named {
            Named::Object(k, id) if *k == kind => Some((*id, self.by_name.get(name)?)),
            _ => None,
        })
    }

    /// Every head document known, newest first.
    pub(super) fn heads(&self) -> Vec<Entry> {
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
    pub(super) fn doc_of(&self, msg_id: i32) -> Option<DocRef> {
        self.by_name.values().flatten().find(|e| e.msg_id == msg_id).and_then(|e| e.doc.clone())
    }
}

pub(super) fn file_name(d: &tl::types::Document) -> Option<&str> {
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
pub(super) fn parse_message(message: &tl::enums::Message) -> Option<Found> {
    let tl::enums::Message::Message(m) = message else { return None };
    match &m.media {
        Some(tl::enums::MessageMedia::Document(md)) => {
            let Some(tl::enums::Document::Document(d)) = &md.document else { return None };
            let name = file_name(d).filter(|n| names::is_name_shaped(n))?;
            let doc = DocRef {
                id: d.id,
                access_hash: d.access_hash,
                file_reference: d.file_reference.clone(),
                dc_id: d.dc_id,
            };
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

pub(super) fn messages_of(res: tl::enums::messages::Messages) -> Vec<tl::enums::Message> {
    use tl::enums::messages::Messages as M;
    match res {
        M::Messages(m) => m.messages,
        M::Slice(m) => m.messages,
        M::ChannelMessages(m) => m.messages,
        M::NotModified(_) => Vec::new(),
    }
}

pub(super) fn new_messages(updates: &tl::enums::Updates) -> Vec<&tl::enums::Message> {
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

impl TelegramBackend {
    /// One page of history, newest first: messages older than `offset_id`
    /// (0: the newest) and newer than `min_id`.
    pub(super) async fn history_page(
        &self,
        peer: PeerRef,
        offset_id: i32,
        min_id: i32,
    ) -> Result<Vec<tl::enums::Message>> {
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
    pub(super) async fn read_history(&self, min_id: i32) -> Result<(Vec<Found>, i32)> {
        if self.is_bot().await? {
            return self.read_by_ids(min_id).await;
        }
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
    pub(super) async fn full_scan(&self) -> Result<()> {
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
    pub(super) async fn scan_new(&self) -> Result<()> {
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
    pub(super) async fn ensure_loaded(&self) -> Result<()> {
        if self.catalog.lock().await.loaded {
            return Ok(());
        }
        let _loading = self.loading.lock().await;
        if self.catalog.lock().await.loaded {
            return Ok(());
        }
        // A chat that cannot be used (Saved Messages of a bot, an unknown
        // channel) is said so at once, not after trying the head.
        self.peer().await?;
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
    pub(super) async fn pinned_documents(&self) -> Result<Vec<Found>> {
        if self.is_bot().await? {
            return self.bot_pinned_documents().await;
        }
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
    pub(super) async fn seed_from_pinned_head(&self) -> Result<bool> {
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
    pub(super) async fn lookup(&self, kind: ObjectKind, id: &Id) -> Result<Option<Entry>> {
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
    pub(super) async fn resolved(&self, kind: ObjectKind, id: &Id) -> Result<Option<Entry>> {
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
    pub(super) async fn fetch_messages(&self, ids: &[i32]) -> Result<()> {
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
}
