//! How a bot session reaches and reads its channel. Telegram answers a bot
//! `400 BOT_METHOD_INVALID` for `messages.getHistory`, `messages.search`,
//! `messages.getDialogs` and `channels.createChannel`, and a bot has no
//! Saved Messages. So a bot finds the pinned head through
//! `channels.getFullChannel` (`pinned_msg_id`), reads messages by id with
//! `channels.getMessages`, 100 ids a request, in ranges from just above
//! what was read up to the channel's newest message and on until a whole
//! batch of ids past it is empty, and learns a channel's access hash with
//! `channels.getChannels` (a bot may name a channel it administers with
//! access hash 0). Whether the session is a bot is found out once: from the
//! session file (grammers records it at login) or from `users.getUsers`.

use grammers_client::session::types::{PeerKind, PeerRef};
use grammers_client::tl;

use super::catalog::{messages_of, parse_message, Found};
use super::errors::permanent;
use super::peers::channel_ref;
use super::{TelegramBackend, FETCH_BATCH};
use crate::backend::{BackendError, Result};

/// What a bot's owner does so that the bot can hold a repository.
pub(super) const BOT_SETUP: &str = "create a channel with your own Telegram account, add the bot to it as an \
     administrator allowed to post, edit and delete messages, and use --repo telegram:@<channel name> or \
     telegram:-100<channel id>";

/// What `channels.getFullChannel` tells of a channel's newest messages.
struct ChannelTop {
    /// The pinned message (the newest pinned one).
    pinned: Option<i32>,
    /// The newest message id the channel reports (its read marks); ids are
    /// read past it anyway, in case it lags.
    newest: i32,
}

impl TelegramBackend {
    /// Whether the session is a bot's, found out once per backend.
    pub(super) async fn is_bot(&self) -> Result<bool> {
        self.bot
            .get_or_try_init(|| async {
                if let Some(bot) = self.session.self_is_bot() {
                    return Ok(bot);
                }
                let users = self
                    .invoke(&tl::functions::users::GetUsers { id: vec![tl::enums::InputUser::UserSelf] }, "get_me")
                    .await?;
                match users.first() {
                    Some(tl::enums::User::User(u)) => {
                        if let Err(e) = self.session.remember_self(u.id, u.access_hash, u.bot) {
                            tracing::warn!(error = %e, "could not save the account in the session");
                        }
                        Ok(u.bot)
                    }
                    _ => Err(permanent("Telegram did not return the logged-in account")),
                }
            })
            .await
            .copied()
    }

    /// The repository's channel, for the bot read path.
    async fn bot_channel(&self) -> Result<PeerRef> {
        let peer = self.peer().await?;
        if peer.id.kind() != PeerKind::Channel {
            return Err(permanent(format!("a bot can only keep a repository in a channel: {BOT_SETUP}")));
        }
        Ok(peer)
    }

    async fn channel_top(&self, peer: PeerRef) -> Result<ChannelTop> {
        let full =
            self.invoke(&tl::functions::channels::GetFullChannel { channel: peer.into() }, "read the channel").await?;
        let tl::enums::messages::ChatFull::Full(full) = full;
        match full.full_chat {
            tl::enums::ChatFull::ChannelFull(c) => Ok(ChannelTop {
                pinned: c.pinned_msg_id.filter(|&id| id > 0),
                newest: c.read_inbox_max_id.max(c.read_outbox_max_id),
            }),
            _ => Err(permanent("Telegram did not describe the channel")),
        }
    }

    /// The messages with these ids (at most [`FETCH_BATCH`]); deleted or
    /// never used ids are left out.
    async fn messages_by_id(&self, peer: PeerRef, ids: &[i32]) -> Result<Vec<tl::enums::Message>> {
        let input = ids.iter().map(|&id| tl::enums::InputMessage::Id(tl::types::InputMessageId { id })).collect();
        let res = self
            .invoke(&tl::functions::channels::GetMessages { channel: peer.into(), id: input }, "read messages by id")
            .await?;
        Ok(messages_of(res)
            .into_iter()
            .filter(|m| !matches!(m, tl::enums::Message::Empty(_)) && ids.contains(&m.id()))
            .collect())
    }

    /// The pinned document named like an object, for a bot: the channel's
    /// pinned message, read by id.
    pub(super) async fn bot_pinned_documents(&self) -> Result<Vec<Found>> {
        let peer = self.bot_channel().await?;
        let Some(id) = self.channel_top(peer).await?.pinned else { return Ok(Vec::new()) };
        Ok(self
            .messages_by_id(peer, &[id])
            .await?
            .iter()
            .filter_map(parse_message)
            .filter(|(_, e)| e.doc.is_some())
            .collect())
    }

    /// Reads the messages above `min_id` by id, for a bot: batches of
    /// [`FETCH_BATCH`] ids up to the newest message the channel reports,
    /// then on until a whole batch past the newest message seen is empty.
    /// Returns what it found and the newest message id known to exist.
    pub(super) async fn read_by_ids(&self, min_id: i32) -> Result<(Vec<Found>, i32)> {
        let peer = self.bot_channel().await?;
        let top = self.channel_top(peer).await?;
        let batch = FETCH_BATCH as i32;
        let mut newest = min_id.max(top.newest).max(top.pinned.unwrap_or(0));
        let mut found = Vec::new();
        let mut from = min_id.max(0) + 1;
        loop {
            let ids: Vec<i32> = (from..from.saturating_add(batch)).collect();
            let messages = self.messages_by_id(peer, &ids).await?;
            newest = newest.max(messages.iter().map(|m| m.id()).max().unwrap_or(0));
            found.extend(messages.iter().filter_map(parse_message));
            from = from.saturating_add(batch);
            if from - 1 - newest >= batch || from == i32::MAX {
                break;
            }
        }
        Ok((found, newest))
    }

    /// The access hash of channel `id` as this bot sees it: a bot names a
    /// channel it administers with access hash 0 in `channels.getChannels`.
    pub(super) async fn bot_channel_hash(&self, id: i64) -> Result<i64> {
        let input = tl::types::InputChannel { channel_id: id, access_hash: 0 }.into();
        let res = self
            .invoke(&tl::functions::channels::GetChannels { id: vec![input] }, "find the channel")
            .await
            .map_err(|e| match e {
                BackendError::Permanent { message } => {
                    permanent(format!("{message}: this bot cannot reach channel -100{id}; {BOT_SETUP}"))
                }
                e => e,
            })?;
        let chats = match res {
            tl::enums::messages::Chats::Chats(c) => c.chats,
            tl::enums::messages::Chats::Slice(c) => c.chats,
        };
        let (_, hash) = chats
            .iter()
            .filter_map(channel_ref)
            .find(|(c, _)| *c == id)
            .ok_or_else(|| permanent(format!("this bot cannot reach channel -100{id}; {BOT_SETUP}")))?;
        self.remember_channel(id, hash);
        Ok(hash)
    }
}
