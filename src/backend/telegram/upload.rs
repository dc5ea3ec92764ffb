//! Storing one object: its parts uploaded with a bounded number in flight
//! across all uploads, each part retried on its own, then one
//! `messages.sendMedia` (or `messages.sendMessage` for an empty object)
//! with a `random_id` drawn once, so that a resend is idempotent. Parts
//! go through the transfer connections (see `transfer_pool`), and are read
//! from memory or, for a pack waiting in a spill file, from that file one
//! part at a time.

use std::sync::Arc;

use bytes::Bytes;
use grammers_client::session::types::PeerRef;
use grammers_client::tl;

use super::catalog::{new_messages, parse_message};
use super::errors::{classify, is_rpc, permanent, rpc_value, transient};
use super::retry::{self, Exclusive, FloodGate};
use super::{Options, TelegramBackend, BIG_FILE, MAX_PARTS, MIME, PART_SIZE};
use crate::backend::names::Named;
use crate::backend::{BackendError, Result, SpilledObject};
use crate::format::{Id, ObjectKind};

/// The bytes of an object to store.
#[derive(Clone)]
pub(super) enum Source {
    Memory(Bytes),
    /// Sealed bytes in a spill file, read one part at a time.
    Spilled(Arc<SpilledObject>),
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Memory(b) => b.len(),
            Source::Spilled(f) => f.len() as usize,
        }
    }

    /// Upload part `part`: [`PART_SIZE`] bytes, fewer for the last.
    async fn part(&self, part: usize) -> Result<Bytes> {
        let range = part * PART_SIZE..((part + 1) * PART_SIZE).min(self.len());
        match self {
            Source::Memory(b) => Ok(b.slice(range)),
            Source::Spilled(f) => {
                let f = Arc::clone(f);
                let read = tokio::task::spawn_blocking(move || f.read_at(range.start as u64, range.len()))
                    .await
                    .map_err(|e| permanent(format!("reading a spilled part failed: {e}")))?;
                read.map(Bytes::from).map_err(|e| BackendError::from_io(e, "reading a spilled pack"))
            }
        }
    }
}

/// `messages.sendMedia` of `media` to `peer` as tstor sends every
/// document: silently, with no caption and the given `random_id` (which
/// makes a resend of the same request a duplicate Telegram recognises).
pub(super) fn send_media(
    peer: PeerRef,
    media: tl::enums::InputMedia,
    random_id: i64,
) -> tl::functions::messages::SendMedia {
    tl::functions::messages::SendMedia {
        silent: true,
        background: false,
        clear_draft: false,
        noforwards: false,
        update_stickersets_order: false,
        invert_media: false,
        allow_paid_floodskip: false,
        peer: peer.into(),
        reply_to: None,
        media,
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
    }
}

pub(super) fn random_id() -> i64 {
    loop {
        let v = rand::random::<i64>();
        if v != 0 {
            return v;
        }
    }
}

impl TelegramBackend {
    /// Stores an object unless the catalog holds it already.
    pub(super) async fn put_from(&self, kind: ObjectKind, id: &Id, data: Source) -> Result<()> {
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

    pub(super) async fn upload(&self, data: &Source, name: &str) -> Result<tl::enums::InputFile> {
        let file_id = random_id();
        let total = data.len().div_ceil(PART_SIZE);
        if total > MAX_PARTS {
            return Err(permanent(format!("{name} is {} bytes, more than Telegram's 2000 MiB limit", data.len())));
        }
        let big = data.len() > BIG_FILE;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.options.parts_in_flight.clamp(1, total) {
            let (transfers, gate, data, next, options) = (
                Arc::clone(&self.transfers),
                Arc::clone(&self.gate),
                data.clone(),
                Arc::clone(&next),
                self.options.clone(),
            );
            workers.spawn(async move {
                loop {
                    let part = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if part >= total {
                        return Ok(());
                    }
                    // One place among the parts in flight of every upload,
                    // then a connection with nothing else in flight.
                    let _permit = gate.part().await;
                    let bytes = data.part(part).await?;
                    let line = transfers.lease_part().await;
                    save_part(&line, &gate, &options, file_id, part, total, big, bytes).await?;
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
    pub(super) async fn resave_part(&self, input: &tl::enums::InputFile, data: &Source, part: usize) -> Result<()> {
        let (file_id, total, big) = match input {
            tl::enums::InputFile::File(f) => (f.id, f.parts as usize, false),
            tl::enums::InputFile::Big(f) => (f.id, f.parts as usize, true),
            _ => return Err(permanent("not an uploaded file")),
        };
        if part >= total {
            return Err(permanent(format!("Telegram names part {part} of a {total}-part file")));
        }
        let bytes = data.part(part).await?;
        tracing::info!(part, total, "re-sending a part Telegram no longer has");
        let _permit = self.gate.part().await;
        let line = self.transfers.lease_part().await;
        let result = save_part(&line, &self.gate, &self.options, file_id, part, total, big, bytes).await;
        self.gate.part_done();
        result
    }

    /// Finds a message sent earlier, after its answer was lost.
    pub(super) async fn find_sent(&self, name: &str) -> Result<Option<i32>> {
        self.scan_new().await?;
        let catalog = self.catalog.lock().await;
        Ok(catalog.by_name.get(name).and_then(|v| v.iter().map(|e| e.msg_id).max()))
    }

    /// Sends one document (or, for empty data, a text message) named `name`;
    /// returns its message id when Telegram said it.
    pub(super) async fn send(&self, peer: PeerRef, name: &str, data: &Source) -> Result<Option<i32>> {
        let random_id = random_id();
        let mut file = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = if data.len() == 0 {
                retry::invoke_retrying(&self.client, &self.gate, self.budget(), || {
                    tl::functions::messages::SendMessage {
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
                    }
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
                retry::invoke_retrying(&self.client, &self.gate, self.budget(), || {
                    send_media(
                        peer,
                        tl::types::InputMediaUploadedDocument {
                            nosound_video: false,
                            force_file: true,
                            spoiler: false,
                            file: input.clone(),
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
                        random_id,
                    )
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
                // Flood waits and dropped connections were retried already;
                // the same random_id made every resend safe.
                Err(e) => return Err(classify(e, "send document")),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn save_part(
    line: &Exclusive,
    gate: &FloodGate,
    options: &Options,
    file_id: i64,
    part: usize,
    total: usize,
    big: bool,
    bytes: Bytes,
) -> Result<()> {
    for _ in 0..options.attempts.max(1) {
        let result = if big {
            retry::invoke_exclusive(line, gate, options.budget(), || tl::functions::upload::SaveBigFilePart {
                file_id,
                file_part: part as i32,
                file_total_parts: total as i32,
                bytes: bytes.to_vec(),
            })
            .await
        } else {
            retry::invoke_exclusive(line, gate, options.budget(), || tl::functions::upload::SaveFilePart {
                file_id,
                file_part: part as i32,
                bytes: bytes.to_vec(),
            })
            .await
        };
        match result {
            Ok(true) => return Ok(()),
            // Not stored, for no reason given: send it again.
            Ok(false) => gate.hold(options.retry_delay),
            Err(e) => return Err(classify(e, "upload part")),
        }
    }
    Err(transient(format!("Telegram did not store part {part}"), None))
}
