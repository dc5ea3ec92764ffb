//! The chat a repository lives in: Saved Messages, a channel by id (its
//! access hash from the session, the account's dialogs, or for a bot
//! `channels.getChannels`), a public name, or a channel created for a new
//! repository (exactly once, however many answers are lost). A bot has no
//! Saved Messages and creates no channels.

use std::collections::HashSet;

use grammers_client::session::types::{PeerAuth, PeerId, PeerRef};
use grammers_client::session::Session;
use grammers_client::tl::{self, Deserializable};
use grammers_client::InvocationError;

use super::bot::BOT_SETUP;
use super::errors::{classify, permanent};
use super::{retry, Target, TelegramBackend, PAGE};
use crate::backend::Result;

pub(super) fn channel_ref(c: &tl::enums::Chat) -> Option<(i64, i64)> {
    match c {
        tl::enums::Chat::Channel(c) => Some((c.id, c.access_hash.unwrap_or(0))),
        _ => None,
    }
}

impl TelegramBackend {
    pub(super) async fn peer(&self) -> Result<PeerRef> {
        let mut slot = self.peer.lock().await;
        if let Some(p) = *slot {
            return Ok(p);
        }
        let channel =
            |id: i64, hash: i64| PeerRef { id: PeerId::channel_unchecked(id), auth: PeerAuth::from_hash(hash) };
        let peer = match &self.target {
            Target::SavedMessages if self.is_bot().await? => {
                return Err(permanent(format!("a bot has no Saved Messages (telegram:me): {BOT_SETUP}")))
            }
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
                    None if self.is_bot().await? => self.bot_channel_hash(*id).await?,
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

    pub(super) fn remember_channel(&self, id: i64, hash: i64) {
        if let Err(e) = self.session.remember_channel(id, hash) {
            tracing::warn!(error = %e, "could not save the channel in the session");
        }
    }

    /// The access hash of channel `id`, from the account's dialogs.
    pub(super) async fn find_channel_in_dialogs(&self, id: i64) -> Result<i64> {
        if let Some(c) = self.dialog_channels().await?.into_iter().find(|c| c.id == id) {
            self.remember_channel(id, c.access_hash);
            return Ok(c.access_hash);
        }
        Err(permanent(format!(
            "channel -100{id} is not among this account's chats: check the id, and that this account is a member"
        )))
    }

    /// Every channel among the account's dialogs (`messages.getDialogs`, page by page).
    pub(super) async fn dialog_channels(&self) -> Result<Vec<DialogChannel>> {
        let mut found: Vec<DialogChannel> = Vec::new();
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
            for chat in &chats {
                if let tl::enums::Chat::Channel(c) = chat {
                    if !found.iter().any(|f| f.id == c.id) {
                        found.push(DialogChannel {
                            id: c.id,
                            access_hash: c.access_hash.unwrap_or(0),
                            title: c.title.clone(),
                            creator: c.creator,
                        });
                    }
                }
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
        Ok(found)
    }

    /// Sends `request` once, below grammers' retry policy: a dropped
    /// connection comes back as an error instead of a blind resend.
    async fn invoke_once<R: tl::RemoteCall>(&self, request: &R) -> std::result::Result<R::Return, InvocationError> {
        let dc = self.session.home_dc_id().map_err(|e| InvocationError::Dropped(leak_session_error(&e)))?;
        let body = self.raw.raw_invoke_in_dc(dc, request.to_bytes()).await?;
        Ok(R::Return::from_bytes(&body)?)
    }

    /// Creates the repository's channel, exactly once even when answers
    /// are lost: `channels.createChannel` is not idempotent (a resend makes
    /// a second channel), so it is sent without grammers' blind resends,
    /// and after any failure that may have come after Telegram carried it
    /// out (a dropped connection, a lost answer, a server error) the
    /// account's channels are read again: a channel this account created
    /// with the repository's title that was not among them before the first
    /// attempt is the one the lost call made, and it is adopted. Only when
    /// there is none is the call sent again. Flood waits are sat out (the
    /// call was not carried out).
    pub(super) async fn create_channel(&self, title: &str) -> Result<PeerRef> {
        let known_before: HashSet<i64> =
            self.dialog_channels().await?.into_iter().filter(|c| c.title == title).map(|c| c.id).collect();
        let request = tl::functions::channels::CreateChannel {
            broadcast: true,
            megagroup: false,
            for_import: false,
            forum: false,
            title: title.to_string(),
            about: String::new(),
            geo_point: None,
            address: None,
            ttl_period: None,
        };
        let budget = self.budget();
        let (mut failures, mut floods) = (0, 0);
        let (id, hash) = loop {
            self.gate.wait().await;
            let error = match self.invoke_once(&request).await {
                Ok(updates) => break created_channel(&updates)?,
                Err(e) => e,
            };
            if let Some(wait) = retry::flood_wait(&error) {
                floods += 1;
                if wait > budget.max_flood_wait || floods > retry::MAX_FLOODS_PER_REQUEST {
                    return Err(classify(error, "create channel"));
                }
                self.gate.flooded(wait);
                continue;
            }
            if !retry::is_transient(&error) {
                return Err(classify(error, "create channel"));
            }
            let made = self
                .dialog_channels()
                .await?
                .into_iter()
                .find(|c| c.creator && c.title == title && !known_before.contains(&c.id));
            if let Some(c) = made {
                tracing::info!(channel = c.id, error = %error, "the channel was created though its answer was lost");
                break (c.id, c.access_hash);
            }
            failures += 1;
            if failures >= budget.attempts {
                return Err(classify(error, "create channel"));
            }
            tracing::debug!(error = %error, attempt = failures, "creating the channel again");
            self.gate.hold(retry::back_off(budget.delay, failures));
        };
        self.remember_channel(id, hash);
        *self.created.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        let peer = PeerRef { id: PeerId::channel_unchecked(id), auth: PeerAuth::from_hash(hash) };
        *self.peer.lock().await = Some(peer);
        Ok(peer)
    }
}

/// A channel among the account's dialogs.
pub(super) struct DialogChannel {
    pub(super) id: i64,
    pub(super) access_hash: i64,
    pub(super) title: String,
    /// Whether this account created it.
    pub(super) creator: bool,
}

/// The channel a `channels.createChannel` answer names.
fn created_channel(updates: &tl::enums::Updates) -> Result<(i64, i64)> {
    let chats = match updates {
        tl::enums::Updates::Updates(u) => &u.chats,
        tl::enums::Updates::Combined(u) => &u.chats,
        _ => return Err(permanent("Telegram did not return the new channel")),
    };
    chats.iter().find_map(channel_ref).ok_or_else(|| permanent("Telegram did not return the new channel"))
}

/// A session that cannot name its home DC, as the static message grammers' error carries.
fn leak_session_error(_: &impl std::fmt::Display) -> &'static str {
    "the session names no home DC"
}
