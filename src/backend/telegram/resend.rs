//! Storing an object without uploading it: the document another chat holds
//! is sent again to this one (`messages.sendMedia` with an
//! `inputMediaDocument`), so Telegram keeps one file for both messages. Used
//! by `copy` between repositories with the same keys, whose objects have the
//! same names and bytes in both chats. A file reference that expired is
//! fetched again from the source chat's message.

use grammers_client::session::types::{PeerKind, PeerRef};
use grammers_client::tl;

use super::catalog::{messages_of, new_messages, parse_message, DocRef};
use super::errors::{classify, is_rpc, permanent};
use super::retry;
use super::upload::{random_id, send_media};
use super::TelegramBackend;
use crate::backend::names::Named;
use crate::backend::{BackendError, Result, StoredHandle};
use crate::format::{Id, ObjectKind};

/// Fresh file references fetched for one re-send before giving up.
const MAX_REFRESHES: usize = 4;

/// Where a document of another chat is: what [`TelegramBackend`] gives as a
/// [`StoredHandle`].
#[derive(Clone, Debug)]
struct DocumentHandle {
    /// The chat holding it, and its message there.
    peer: PeerRef,
    msg_id: i32,
    /// The document's stored name (docs/format.md §23.4).
    name: String,
    size: u64,
    doc: DocRef,
}

/// Telegram's answers that mean this document cannot be re-sent here (another
/// account's document, one gone since): the caller copies the bytes instead.
const NOT_RESENDABLE: [&str; 4] = ["MEDIA_INVALID", "MEDIA_EMPTY", "CHAT_FORWARDS_RESTRICTED", "DOCUMENT_INVALID"];

impl TelegramBackend {
    /// A handle on the document of object `id`; `None` for an empty object
    /// (a text message: nothing to save by re-sending it).
    pub(super) async fn document_handle(&self, kind: ObjectKind, id: &Id) -> Result<Option<StoredHandle>> {
        let entry = self.resolved(kind, id).await?.ok_or_else(|| BackendError::not_found(kind, id))?;
        let Some(doc) = entry.doc else { return Ok(None) };
        let name = match self.catalog.lock().await.named.get(&Named::Object(kind, *id)) {
            Some(name) => name.clone(),
            None => return Err(BackendError::not_found(kind, id)),
        };
        let peer = self.peer().await?;
        Ok(Some(StoredHandle::new(DocumentHandle { peer, msg_id: entry.msg_id, name, size: entry.size, doc })))
    }

    /// Stores object `id` by re-sending the document `handle` names; false
    /// when it cannot be (not a Telegram handle, a name this repository
    /// would not give the object, a document Telegram will not re-send here).
    pub(super) async fn resend(&self, kind: ObjectKind, id: &Id, handle: &StoredHandle) -> Result<bool> {
        let Some(h) = handle.downcast_ref::<DocumentHandle>() else { return Ok(false) };
        self.ensure_loaded().await?;
        let named = Named::Object(kind, *id);
        {
            let catalog = self.catalog.lock().await;
            if catalog.entries(named).is_some() {
                return Ok(true);
            }
            // The message is found by its document's name: under other keys
            // the same document would stand for nothing here.
            if catalog.names.name(named) != h.name {
                return Ok(false);
            }
        }
        let peer = self.peer().await?;
        let random_id = random_id();
        let mut doc = h.doc.clone();
        let mut refreshes = 0;
        loop {
            let input = tl::types::InputDocument {
                id: doc.id,
                access_hash: doc.access_hash,
                file_reference: doc.file_reference.clone(),
            };
            let result = retry::invoke_retrying(&self.client, &self.gate, self.budget(), || {
                send_media(
                    peer,
                    tl::types::InputMediaDocument {
                        spoiler: false,
                        id: input.clone().into(),
                        video_cover: None,
                        video_timestamp: None,
                        ttl_seconds: None,
                        query: None,
                    }
                    .into(),
                    random_id,
                )
            })
            .await;
            match result {
                Ok(updates) => {
                    let mut catalog = self.catalog.lock().await;
                    let mut stored = false;
                    for m in new_messages(&updates) {
                        if let Some(found) = parse_message(m) {
                            stored |= found.0 == h.name && found.1.size == h.size;
                            catalog.add(found);
                        }
                    }
                    return if stored {
                        Ok(true)
                    } else {
                        Err(permanent(format!("Telegram did not say where the re-sent {} object {id} is", kind.name())))
                    };
                }
                Err(e) if is_rpc(&e, "RANDOM_ID_DUPLICATE") => {
                    return match self.find_sent(&h.name).await? {
                        Some(_) => Ok(true),
                        None => Err(permanent(format!("{} was reported sent but is not in the history", h.name))),
                    };
                }
                Err(e) if is_rpc(&e, "FILE_REFERENCE_EXPIRED") && refreshes < MAX_REFRESHES => {
                    refreshes += 1;
                    match self.fetch_foreign_document(h).await? {
                        Some(fresh) => doc = fresh,
                        // The source message is gone: nothing to re-send.
                        None => return Err(BackendError::not_found(kind, id)),
                    }
                }
                Err(e) if NOT_RESENDABLE.iter().any(|n| is_rpc(&e, n)) => {
                    tracing::debug!(error = %e, object = %id, "the document cannot be re-sent; copying its bytes");
                    return Ok(false);
                }
                Err(e) => return Err(classify(e, "re-send document")),
            }
        }
    }

    /// The document of the handle's message as its chat holds it now (with
    /// a fresh file reference); `None` if the message is gone or holds
    /// another document.
    async fn fetch_foreign_document(&self, h: &DocumentHandle) -> Result<Option<DocRef>> {
        let input = vec![tl::enums::InputMessage::Id(tl::types::InputMessageId { id: h.msg_id })];
        let res = if h.peer.id.kind() == PeerKind::Channel {
            self.invoke(
                &tl::functions::channels::GetMessages { channel: h.peer.into(), id: input },
                "fetch the source message",
            )
            .await?
        } else {
            self.invoke(&tl::functions::messages::GetMessages { id: input }, "fetch the source message").await?
        };
        Ok(messages_of(res)
            .iter()
            .filter(|m| m.id() == h.msg_id)
            .filter_map(parse_message)
            .find(|(name, e)| *name == h.name && e.size == h.size)
            .and_then(|(_, e)| e.doc)
            .filter(|d| d.id == h.doc.id))
    }
}
