//! The simulated Telegram account behind the loopback server: one user, their
//! Saved Messages, the channels they create, their bot (which the key can
//! log in as, and which reaches only the channels where the user made it an
//! administrator), pending file uploads and stored documents, all in memory. Every method enforces the rule Telegram applies
//! to the same request and fails with the same error name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use grammers_tl_types as tl;
use rand::Rng;

use crate::mtproto::now_secs;

/// An RPC error as Telegram reports it: an HTTP-like code and an upper-case name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcErr {
    pub code: i32,
    pub message: String,
}

impl RpcErr {
    pub fn bad(message: impl Into<String>) -> RpcErr {
        RpcErr { code: 400, message: message.into() }
    }
}

pub type RpcResult<T> = Result<T, RpcErr>;

/// The limits of a non-premium account.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest part accepted by upload.saveFilePart / saveBigFilePart.
    pub max_part_size: usize,
    /// Most parts in one file (2000 MiB at 512 KiB parts).
    pub max_parts: i32,
    /// Largest file that may be sent as `inputFile` (saveFilePart).
    pub max_small_file: usize,
    /// Caption length, in UTF-16 code units.
    pub caption_length: usize,
    /// Text message length, in UTF-16 code units.
    pub message_length: usize,
    /// Largest page of messages.getHistory / messages.search.
    pub max_page: i32,
    /// Largest upload.getFile chunk.
    pub max_chunk: i32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_part_size: 512 * 1024,
            max_parts: 4000,
            max_small_file: 10 * 1024 * 1024,
            caption_length: 1024,
            message_length: 4096,
            max_page: 100,
            max_chunk: 1024 * 1024,
        }
    }
}

/// The logged-in user.
#[derive(Clone, Debug)]
pub struct Me {
    pub id: i64,
    pub access_hash: i64,
    pub first_name: String,
    pub username: String,
    pub phone: String,
}

/// A stored document (what a message with a file points to).
pub struct Doc {
    pub id: i64,
    pub access_hash: i64,
    pub file_reference: Vec<u8>,
    pub date: i32,
    pub mime_type: String,
    pub attributes: Vec<tl::enums::DocumentAttribute>,
    pub data: Arc<Vec<u8>>,
    /// The DC its parts were uploaded to, which alone serves it.
    pub dc_id: i32,
}

#[derive(Clone)]
enum Body {
    Text,
    Document(i64),
    ChannelCreate(String),
    Pin(i32),
}

#[derive(Clone)]
struct Stored {
    id: i32,
    date: i32,
    text: String,
    body: Body,
    edit_date: Option<i32>,
    pinned: bool,
}

impl Stored {
    fn is_service(&self) -> bool {
        matches!(self.body, Body::ChannelCreate(_) | Body::Pin(_))
    }
}

#[derive(Default)]
struct Chat {
    messages: BTreeMap<i32, Stored>,
    random_ids: HashMap<i64, i32>,
    pts: i32,
}

struct ChannelInfo {
    id: i64,
    access_hash: i64,
    /// Access hashes are per account: the bot sees the channel under another one.
    bot_access_hash: i64,
    /// What the bot may do here, once the user made it an administrator.
    bot_rights: Option<BotRights>,
    title: String,
    username: Option<String>,
    date: i32,
    chat: Chat,
    next_id: i32,
}

struct Upload {
    /// The DC the parts went to: only a file sent from there can use them.
    dc: i32,
    big: Option<i32>,
    parts: BTreeMap<i32, Vec<u8>>,
}

/// The administrator rights of the bot in a channel that tstor needs:
/// posting, editing (which in a channel includes pinning) and deleting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BotRights {
    pub post: bool,
    pub edit: bool,
    pub delete: bool,
}

impl BotRights {
    /// Every right tstor needs.
    pub const ALL: BotRights = BotRights { post: true, edit: true, delete: true };
}

/// A right a call needs in a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    Post,
    Edit,
    Delete,
}

/// Which chat a request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    Saved,
    Channel(i64),
}

/// A page request shared by messages.getHistory and messages.search.
#[derive(Clone, Copy, Debug, Default)]
pub struct Paging {
    pub offset_id: i32,
    pub offset_date: i32,
    pub add_offset: i32,
    pub limit: i32,
    pub max_id: i32,
    pub min_id: i32,
}

/// Which messages a search returns.
#[derive(Clone, Debug, Default)]
pub struct SearchFilter {
    pub query: String,
    pub pinned_only: bool,
    pub documents_only: bool,
    pub min_date: i32,
    pub max_date: i32,
}

/// The whole simulated account.
pub struct World {
    pub me: Me,
    /// The account's bot, which logs in with `login.bot_token`. It has no
    /// Saved Messages, cannot create channels, and reaches a channel only
    /// once the user made it an administrator there.
    pub bot: Me,
    pub limits: Limits,
    /// Whether the auth key is logged in, and how it logs in.
    pub login: crate::auth::Login,
    saved: Chat,
    /// Private-chat message ids are shared by all of a user's private chats,
    /// so Saved Messages sees gaps; this is the next id of that sequence.
    next_private_id: i32,
    /// Ids other chats take between two messages of ours, cycled.
    private_gaps: Vec<i32>,
    private_sends: usize,
    channels: BTreeMap<i64, ChannelInfo>,
    uploads: HashMap<i64, Upload>,
    docs: HashMap<i64, Arc<Doc>>,
    pts: i32,
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn random_i64() -> i64 {
    rand::thread_rng().gen::<i64>() & i64::MAX
}

fn now() -> i32 {
    now_secs() as i32
}

fn file_reference() -> Vec<u8> {
    let mut r = vec![0u8; 16];
    rand::thread_rng().fill(&mut r[..]);
    r
}

impl Default for World {
    fn default() -> World {
        World::new(Limits::default())
    }
}

impl World {
    pub fn new(limits: Limits) -> World {
        World {
            me: Me {
                id: 7_000_000_000 + (random_i64() % 1_000_000),
                access_hash: random_i64(),
                first_name: "Loopback".into(),
                username: "tgloop_user".into(),
                phone: "42777".into(),
            },
            bot: Me {
                id: 8_000_000_000 + (random_i64() % 1_000_000),
                access_hash: random_i64(),
                first_name: "Loopback Bot".into(),
                username: "tgloop_bot".into(),
                phone: String::new(),
            },
            limits,
            login: crate::auth::Login::default(),
            saved: Chat::default(),
            next_private_id: 1 + (random_i64() % 500) as i32,
            private_gaps: vec![0, 2, 0, 1, 5, 0, 0, 3],
            private_sends: 0,
            channels: BTreeMap::new(),
            uploads: HashMap::new(),
            docs: HashMap::new(),
            pts: 1,
        }
    }

    /// Turns off the gaps other private chats leave in Saved Messages ids.
    pub fn contiguous_private_ids(&mut self) {
        self.private_gaps = vec![0];
    }

    // ---- peers ----

    pub fn resolve_peer(&self, peer: &tl::enums::InputPeer) -> RpcResult<Where> {
        use tl::enums::InputPeer as P;
        match peer {
            // A bot has no chat with itself.
            P::PeerSelf if self.is_bot() => Err(crate::auth::bot_method_invalid()),
            P::User(u) if self.is_bot() && u.user_id == self.bot.id => Err(crate::auth::bot_method_invalid()),
            P::PeerSelf => Ok(Where::Saved),
            P::User(u) if u.user_id == self.me.id && u.access_hash == self.me.access_hash => Ok(Where::Saved),
            P::Channel(c) => self.check_channel(c.channel_id, c.access_hash),
            P::Empty => Err(RpcErr::bad("PEER_ID_INVALID")),
            _ => Err(RpcErr::bad("PEER_ID_INVALID")),
        }
    }

    pub fn resolve_channel(&self, channel: &tl::enums::InputChannel) -> RpcResult<Where> {
        match channel {
            tl::enums::InputChannel::Channel(c) => self.check_channel(c.channel_id, c.access_hash),
            _ => Err(RpcErr::bad("CHANNEL_INVALID")),
        }
    }

    fn check_channel(&self, id: i64, access_hash: i64) -> RpcResult<Where> {
        match self.channels.get(&id) {
            // A bot that is no administrator there cannot read the private channel.
            Some(c) if self.is_bot() && c.bot_access_hash == access_hash && c.bot_rights.is_none() => {
                Err(RpcErr::bad("CHANNEL_PRIVATE"))
            }
            Some(c) if self.is_bot() && c.bot_access_hash == access_hash => Ok(Where::Channel(id)),
            Some(c) if !self.is_bot() && c.access_hash == access_hash => Ok(Where::Channel(id)),
            Some(_) => Err(RpcErr::bad("CHANNEL_INVALID")),
            None => Err(RpcErr::bad("CHANNEL_INVALID")),
        }
    }

    /// Whether the key is logged in as the bot.
    pub fn is_bot(&self) -> bool {
        self.login.as_bot
    }

    /// Refuses a call that needs `right` in `w` when the bot lacks it (the
    /// user created every channel and may do anything there).
    pub fn require(&self, w: Where, right: Right) -> RpcResult<()> {
        let Where::Channel(id) = w else { return Ok(()) };
        if !self.is_bot() {
            return Ok(());
        }
        let rights = self.channels.get(&id).and_then(|c| c.bot_rights).ok_or_else(|| RpcErr::bad("CHANNEL_PRIVATE"))?;
        match right {
            Right::Post if !rights.post => Err(RpcErr { code: 403, message: "CHAT_WRITE_FORBIDDEN".into() }),
            Right::Edit if !rights.edit => Err(RpcErr::bad("CHAT_ADMIN_REQUIRED")),
            Right::Delete if !rights.delete => Err(RpcErr { code: 403, message: "MESSAGE_DELETE_FORBIDDEN".into() }),
            _ => Ok(()),
        }
    }

    /// The logged-in account: the user, or the bot.
    pub fn user(&self) -> tl::enums::User {
        if self.is_bot() {
            Self::user_tl(&self.bot, true, true)
        } else {
            Self::user_tl(&self.me, true, false)
        }
    }

    fn user_tl(who: &Me, is_self: bool, bot: bool) -> tl::enums::User {
        tl::enums::User::User(tl::types::User {
            is_self,
            contact: false,
            mutual_contact: false,
            deleted: false,
            bot,
            bot_chat_history: false,
            bot_nochats: false,
            verified: false,
            restricted: false,
            min: false,
            bot_inline_geo: false,
            support: false,
            scam: false,
            apply_min_photo: false,
            fake: false,
            bot_attach_menu: false,
            premium: false,
            attach_menu_enabled: false,
            bot_can_edit: false,
            close_friend: false,
            stories_hidden: false,
            stories_unavailable: false,
            contact_require_premium: false,
            bot_business: false,
            bot_has_main_app: false,
            bot_forum_view: false,
            bot_forum_can_manage_topics: false,
            bot_can_manage_bots: false,
            bot_guestchat: false,
            bot_guard: false,
            id: who.id,
            access_hash: Some(who.access_hash),
            first_name: Some(who.first_name.clone()),
            last_name: None,
            username: Some(who.username.clone()),
            phone: (!who.phone.is_empty()).then(|| who.phone.clone()),
            photo: None,
            status: None,
            // `bot` and `bot_info_version` share one flag bit: both or neither.
            bot_info_version: bot.then_some(1),
            restriction_reason: None,
            bot_inline_placeholder: None,
            lang_code: None,
            emoji_status: None,
            usernames: None,
            stories_max_id: None,
            color: None,
            profile_color: None,
            bot_active_users: None,
            bot_verification_icon: None,
            send_paid_messages_stars: None,
            linked_community_id: None,
        })
    }

    fn channel_tl(&self, c: &ChannelInfo) -> tl::enums::Chat {
        let (access_hash, creator) = if self.is_bot() { (c.bot_access_hash, false) } else { (c.access_hash, true) };
        tl::enums::Chat::Channel(tl::types::Channel {
            creator,
            left: false,
            broadcast: true,
            verified: false,
            megagroup: false,
            restricted: false,
            signatures: false,
            min: false,
            scam: false,
            has_link: false,
            has_geo: false,
            slowmode_enabled: false,
            call_active: false,
            call_not_empty: false,
            fake: false,
            gigagroup: false,
            noforwards: false,
            join_to_send: false,
            join_request: false,
            forum: false,
            stories_hidden: false,
            stories_hidden_min: false,
            stories_unavailable: false,
            signature_profiles: false,
            autotranslation: false,
            broadcast_messages_allowed: false,
            monoforum: false,
            forum_tabs: false,
            id: c.id,
            access_hash: Some(access_hash),
            title: c.title.clone(),
            username: c.username.clone(),
            photo: tl::enums::ChatPhoto::Empty,
            date: c.date,
            restriction_reason: None,
            admin_rights: None,
            banned_rights: None,
            default_banned_rights: None,
            participants_count: Some(1),
            usernames: None,
            stories_max_id: None,
            color: None,
            profile_color: None,
            emoji_status: None,
            level: None,
            subscription_until_date: None,
            bot_verification_icon: None,
            send_paid_messages_stars: None,
            linked_monoforum_id: None,
            linked_community_id: None,
        })
    }

    /// The `chats` list that goes with an answer about `w`.
    pub fn chats_for(&self, w: Where) -> Vec<tl::enums::Chat> {
        match w {
            Where::Saved => vec![],
            Where::Channel(id) => self.channels.get(&id).map(|c| self.channel_tl(c)).into_iter().collect(),
        }
    }

    fn peer_tl(&self, w: Where) -> tl::enums::Peer {
        match w {
            Where::Saved => tl::enums::Peer::User(tl::types::PeerUser { user_id: self.me.id }),
            Where::Channel(id) => tl::enums::Peer::Channel(tl::types::PeerChannel { channel_id: id }),
        }
    }

    /// Whether a message the logged-in account can read holds document `id`:
    /// in Saved Messages (not a bot's), or in a channel it reads.
    fn can_read_document(&self, id: i64) -> bool {
        let holds = |chat: &Chat| chat.messages.values().any(|m| matches!(m.body, Body::Document(d) if d == id));
        (!self.is_bot() && holds(&self.saved))
            || self.channels.values().filter(|c| !self.is_bot() || c.bot_rights.is_some()).any(|c| holds(&c.chat))
    }

    fn chat(&self, w: Where) -> &Chat {
        match w {
            Where::Saved => &self.saved,
            Where::Channel(id) => &self.channels[&id].chat,
        }
    }

    fn chat_mut(&mut self, w: Where) -> &mut Chat {
        match w {
            Where::Saved => &mut self.saved,
            Where::Channel(id) => &mut self.channels.get_mut(&id).expect("resolved channel").chat,
        }
    }

    /// Takes the next message id of a chat: per channel, or from the
    /// account-wide private sequence for Saved Messages.
    fn next_id(&mut self, w: Where) -> i32 {
        match w {
            Where::Saved => {
                let id = self.next_private_id;
                let gap = self.private_gaps[self.private_sends % self.private_gaps.len()];
                self.private_sends += 1;
                self.next_private_id += 1 + gap;
                id
            }
            Where::Channel(cid) => {
                let c = self.channels.get_mut(&cid).expect("resolved channel");
                let id = c.next_id;
                c.next_id += 1;
                id
            }
        }
    }

    fn bump_pts(&mut self, w: Where, by: i32) -> i32 {
        match w {
            Where::Saved => {
                self.pts += by;
                self.pts
            }
            Where::Channel(_) => {
                let chat = self.chat_mut(w);
                chat.pts += by;
                chat.pts
            }
        }
    }

    fn message_tl(&self, w: Where, m: &Stored) -> tl::enums::Message {
        let peer_id = self.peer_tl(w);
        let post = matches!(w, Where::Channel(_));
        match &m.body {
            Body::ChannelCreate(title) => tl::enums::Message::Service(service(
                m,
                peer_id,
                post,
                tl::enums::MessageAction::ChannelCreate(tl::types::MessageActionChannelCreate { title: title.clone() }),
                None,
            )),
            Body::Pin(target) => tl::enums::Message::Service(service(
                m,
                peer_id,
                post,
                tl::enums::MessageAction::PinMessage,
                Some(*target),
            )),
            Body::Text | Body::Document(_) => {
                let media = match &m.body {
                    Body::Document(doc_id) => self.docs.get(doc_id).map(|d| document_media(d)),
                    _ => None,
                };
                tl::enums::Message::Message(plain_message(m, peer_id, post, media))
            }
        }
    }

    fn empty_tl(&self, w: Where, id: i32) -> tl::enums::Message {
        tl::enums::Message::Empty(tl::types::MessageEmpty { id, peer_id: Some(self.peer_tl(w)) })
    }

    // ---- channels and users ----

    pub fn create_channel(&mut self, title: &str, username: Option<&str>) -> RpcResult<(i64, tl::enums::Updates)> {
        if title.trim().is_empty() {
            return Err(RpcErr::bad("CHAT_TITLE_EMPTY"));
        }
        if utf16_len(title) > 128 {
            return Err(RpcErr::bad("CHAT_TITLE_TOO_LONG"));
        }
        if let Some(u) = username {
            self.check_username_free(u)?;
        }
        let id = 1_000_000_000 + (random_i64() % 1_000_000_000);
        let date = now();
        self.channels.insert(
            id,
            ChannelInfo {
                id,
                access_hash: random_i64(),
                bot_access_hash: random_i64(),
                bot_rights: None,
                title: title.to_string(),
                username: username.map(str::to_string),
                date,
                chat: Chat { pts: 1, ..Chat::default() },
                next_id: 1,
            },
        );
        let w = Where::Channel(id);
        let msg_id = self.next_id(w);
        let stored = Stored {
            id: msg_id,
            date,
            text: String::new(),
            body: Body::ChannelCreate(title.into()),
            edit_date: None,
            pinned: false,
        };
        self.chat_mut(w).messages.insert(msg_id, stored.clone());
        let pts = self.bump_pts(w, 1);
        let updates = vec![
            tl::enums::Update::Channel(tl::types::UpdateChannel { channel_id: id }),
            tl::enums::Update::NewChannelMessage(tl::types::UpdateNewChannelMessage {
                message: self.message_tl(w, &stored),
                pts,
                pts_count: 1,
            }),
        ];
        Ok((id, self.updates(w, updates)))
    }

    fn check_username_free(&self, u: &str) -> RpcResult<()> {
        let valid = u.len() >= 4
            && u.len() <= 32
            && u.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(RpcErr::bad("USERNAME_INVALID"));
        }
        let taken = u.eq_ignore_ascii_case(&self.me.username)
            || self.channels.values().any(|c| c.username.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(u)));
        if taken {
            return Err(RpcErr::bad("USERNAME_OCCUPIED"));
        }
        Ok(())
    }

    pub fn resolve_username(&self, username: &str) -> RpcResult<tl::enums::contacts::ResolvedPeer> {
        let u = username.trim_start_matches('@');
        if u.is_empty() || !u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(RpcErr::bad("USERNAME_INVALID"));
        }
        for (who, bot) in [(&self.me, false), (&self.bot, true)] {
            if u.eq_ignore_ascii_case(&who.username) {
                return Ok(tl::enums::contacts::ResolvedPeer::Peer(tl::types::contacts::ResolvedPeer {
                    peer: tl::enums::Peer::User(tl::types::PeerUser { user_id: who.id }),
                    chats: vec![],
                    users: vec![Self::user_tl(who, bot == self.is_bot(), bot)],
                }));
            }
        }
        let c = self
            .channels
            .values()
            .find(|c| c.username.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(u)))
            .ok_or_else(|| RpcErr::bad("USERNAME_NOT_OCCUPIED"))?;
        Ok(tl::enums::contacts::ResolvedPeer::Peer(tl::types::contacts::ResolvedPeer {
            peer: self.peer_tl(Where::Channel(c.id)),
            chats: vec![self.channel_tl(c)],
            users: vec![],
        }))
    }

    pub fn get_users(&self, ids: &[tl::enums::InputUser]) -> Vec<tl::enums::User> {
        ids.iter()
            .filter_map(|u| match u {
                tl::enums::InputUser::UserSelf => Some(self.user()),
                tl::enums::InputUser::User(u) => [(&self.me, false), (&self.bot, true)]
                    .into_iter()
                    .find(|(who, _)| u.user_id == who.id && u.access_hash == who.access_hash)
                    .map(|(who, bot)| Self::user_tl(who, bot == self.is_bot(), bot)),
                _ => None,
            })
            .collect()
    }

    /// channels.editAdmin by the user, the channel's creator: makes the bot
    /// an administrator with `rights` (or, with none of them, no longer one).
    pub fn edit_admin(
        &mut self,
        w: Where,
        user: &tl::enums::InputUser,
        rights: &tl::enums::ChatAdminRights,
    ) -> RpcResult<tl::enums::Updates> {
        let Where::Channel(id) = w else { return Err(RpcErr::bad("CHANNEL_INVALID")) };
        if self.is_bot() {
            // Only the creator adds administrators here.
            return Err(RpcErr::bad("CHAT_ADMIN_REQUIRED"));
        }
        match user {
            tl::enums::InputUser::User(u) if u.user_id == self.bot.id && u.access_hash == self.bot.access_hash => {}
            tl::enums::InputUser::User(u) if u.user_id == self.me.id => return Err(RpcErr::bad("USER_CREATOR")),
            _ => return Err(RpcErr::bad("USER_ID_INVALID")),
        }
        let tl::enums::ChatAdminRights::Rights(r) = rights;
        let rights = BotRights { post: r.post_messages, edit: r.edit_messages, delete: r.delete_messages };
        self.channels.get_mut(&id).expect("resolved channel").bot_rights =
            (rights != BotRights { post: false, edit: false, delete: false }).then_some(rights);
        Ok(self.updates(w, vec![tl::enums::Update::Channel(tl::types::UpdateChannel { channel_id: id })]))
    }

    /// Makes the bot an administrator of channel `id` with `rights`, as the
    /// user would in an app; false if there is no such channel.
    pub fn make_bot_admin(&mut self, id: i64, rights: BotRights) -> bool {
        match self.channels.get_mut(&id) {
            Some(c) => {
                c.bot_rights = Some(rights);
                true
            }
            None => false,
        }
    }

    /// channels.getChannels. A bot may name a channel it administers with
    /// access hash 0 and learns the hash from the answer.
    pub fn get_channels(&self, ids: &[tl::enums::InputChannel]) -> RpcResult<tl::enums::messages::Chats> {
        let mut chats = Vec::new();
        for input in ids {
            let tl::enums::InputChannel::Channel(c) = input else { return Err(RpcErr::bad("CHANNEL_INVALID")) };
            let id = match self.channels.get(&c.channel_id) {
                Some(info) if self.is_bot() && c.access_hash == 0 && info.bot_rights.is_some() => c.channel_id,
                _ => match self.check_channel(c.channel_id, c.access_hash)? {
                    Where::Channel(id) => id,
                    Where::Saved => return Err(RpcErr::bad("CHANNEL_INVALID")),
                },
            };
            chats.extend(self.chats_for(Where::Channel(id)));
        }
        Ok(tl::enums::messages::Chats::Chats(tl::types::messages::Chats { chats }))
    }

    /// channels.getFullChannel: what tstor reads of it is `pinned_msg_id`
    /// (the newest pinned message) and the read marks, which the loopback
    /// server keeps at the channel's newest message.
    pub fn full_channel(&self, w: Where) -> RpcResult<tl::enums::messages::ChatFull> {
        let Where::Channel(id) = w else { return Err(RpcErr::bad("CHANNEL_INVALID")) };
        let chat = self.chat(w);
        let top = chat.messages.keys().next_back().copied().unwrap_or(0);
        let pinned = chat.messages.values().rev().find(|m| m.pinned).map(|m| m.id);
        let full = tl::types::ChannelFull {
            can_view_participants: false,
            can_set_username: !self.is_bot(),
            can_set_stickers: false,
            hidden_prehistory: false,
            can_set_location: false,
            has_scheduled: false,
            can_view_stats: false,
            blocked: false,
            can_delete_channel: !self.is_bot(),
            antispam: false,
            participants_hidden: false,
            translations_disabled: false,
            stories_pinned_available: false,
            view_forum_as_messages: false,
            restricted_sponsored: false,
            can_view_revenue: false,
            paid_media_allowed: false,
            can_view_stars_revenue: false,
            paid_reactions_available: false,
            stargifts_available: false,
            paid_messages_available: false,
            has_welcome_messages: false,
            id,
            about: String::new(),
            participants_count: Some(1),
            admins_count: Some(1 + i32::from(self.channels[&id].bot_rights.is_some())),
            kicked_count: None,
            banned_count: None,
            online_count: None,
            read_inbox_max_id: top,
            read_outbox_max_id: top,
            unread_count: 0,
            chat_photo: tl::enums::Photo::Empty(tl::types::PhotoEmpty { id: 0 }),
            notify_settings: notify_settings(),
            exported_invite: None,
            bot_info: vec![],
            migrated_from_chat_id: None,
            migrated_from_max_id: None,
            pinned_msg_id: pinned,
            stickerset: None,
            available_min_id: None,
            folder_id: None,
            linked_chat_id: None,
            location: None,
            slowmode_seconds: None,
            slowmode_next_send_date: None,
            stats_dc: None,
            pts: chat.pts,
            call: None,
            ttl_period: None,
            pending_suggestions: None,
            groupcall_default_join_as: None,
            theme_emoticon: None,
            requests_pending: None,
            recent_requesters: None,
            default_send_as: None,
            available_reactions: None,
            reactions_limit: None,
            stories: None,
            wallpaper: None,
            boosts_applied: None,
            boosts_unrestrict: None,
            emojiset: None,
            bot_verification: None,
            stargifts_count: None,
            send_paid_messages_stars: None,
            main_tab: None,
            guard_bot_id: None,
        };
        Ok(tl::enums::messages::ChatFull::Full(tl::types::messages::ChatFull {
            full_chat: tl::enums::ChatFull::ChannelFull(full),
            chats: self.chats_for(w),
            users: vec![self.user()],
        }))
    }

    pub fn state(&self) -> tl::enums::updates::State {
        tl::enums::updates::State::State(tl::types::updates::State {
            pts: self.pts,
            qts: 0,
            date: now(),
            seq: 0,
            unread_count: 0,
        })
    }

    pub fn updates(&self, w: Where, updates: Vec<tl::enums::Update>) -> tl::enums::Updates {
        tl::enums::Updates::Updates(tl::types::Updates {
            updates,
            users: vec![self.user()],
            chats: self.chats_for(w),
            date: now(),
            seq: 0,
        })
    }

    fn new_message_update(&self, w: Where, m: &Stored, pts: i32) -> tl::enums::Update {
        let message = self.message_tl(w, m);
        match w {
            Where::Saved => tl::enums::Update::NewMessage(tl::types::UpdateNewMessage { message, pts, pts_count: 1 }),
            Where::Channel(_) => {
                tl::enums::Update::NewChannelMessage(tl::types::UpdateNewChannelMessage { message, pts, pts_count: 1 })
            }
        }
    }

    // ---- uploads ----

    /// upload.saveFilePart / saveBigFilePart on DC `dc`.
    pub fn save_part(&mut self, dc: i32, file_id: i64, part: i32, total: Option<i32>, bytes: Vec<u8>) -> RpcResult<()> {
        if let Some(total) = total {
            if total < 1 || total > self.limits.max_parts {
                return Err(RpcErr::bad("FILE_PARTS_INVALID"));
            }
        }
        let max_part = total.unwrap_or(self.limits.max_parts);
        if part < 0 || part >= max_part {
            return Err(RpcErr::bad("FILE_PART_INVALID"));
        }
        if bytes.is_empty() {
            return Err(RpcErr::bad("FILE_PART_EMPTY"));
        }
        if bytes.len() > self.limits.max_part_size {
            return Err(RpcErr::bad("FILE_PART_TOO_BIG"));
        }
        // Every part but the last must have a size that divides 512 KiB.
        let is_last = total.is_some_and(|t| part == t - 1);
        if !is_last && total.is_some() && !part_size_ok(bytes.len()) {
            return Err(RpcErr::bad("FILE_PART_SIZE_INVALID"));
        }
        let up = self.uploads.entry(file_id).or_insert_with(|| Upload { dc, big: total, parts: BTreeMap::new() });
        if up.big != total || up.dc != dc {
            return Err(RpcErr::bad("FILE_PARTS_INVALID"));
        }
        up.parts.insert(part, bytes);
        Ok(())
    }

    /// Forgets the last received part of every pending upload, as Telegram
    /// does when uploaded parts expire before the file is used.
    pub fn expire_pending_parts(&mut self) {
        for up in self.uploads.values_mut() {
            if let Some((&last, _)) = up.parts.iter().next_back() {
                up.parts.remove(&last);
            }
        }
    }

    /// Assembles a file uploaded to DC `dc`; the parts stay until the file is used.
    fn take_upload(&mut self, dc: i32, file: &tl::enums::InputFile) -> RpcResult<(Vec<u8>, String)> {
        let (id, parts, name, md5, big) = match file {
            tl::enums::InputFile::File(f) => (f.id, f.parts, f.name.clone(), Some(f.md5_checksum.clone()), false),
            tl::enums::InputFile::Big(f) => (f.id, f.parts, f.name.clone(), None, true),
            _ => return Err(RpcErr::bad("MEDIA_INVALID")),
        };
        if parts < 1 || parts > self.limits.max_parts {
            return Err(RpcErr::bad("FILE_PARTS_INVALID"));
        }
        let up = self.uploads.get(&id).filter(|up| up.dc == dc).ok_or_else(|| RpcErr::bad("FILE_PART_0_MISSING"))?;
        if up.big.is_some() != big || up.big.is_some_and(|t| t != parts) {
            return Err(RpcErr::bad("FILE_PARTS_INVALID"));
        }
        for p in 0..parts {
            if !up.parts.contains_key(&p) {
                return Err(RpcErr::bad(format!("FILE_PART_{p}_MISSING")));
            }
        }
        if up.parts.keys().any(|&p| p >= parts) {
            return Err(RpcErr::bad("FILE_PARTS_INVALID"));
        }
        let part_size = up.parts[&0].len();
        if parts > 1 && !part_size_ok(part_size) {
            return Err(RpcErr::bad("FILE_PART_SIZE_INVALID"));
        }
        for (&p, bytes) in &up.parts {
            let ok = if p == parts - 1 { bytes.len() <= part_size } else { bytes.len() == part_size };
            if !ok {
                return Err(RpcErr::bad("FILE_PART_SIZE_CHANGED"));
            }
        }
        let data: Vec<u8> = up.parts.values().flat_map(|b| b.iter().copied()).collect();
        if !big && data.len() > self.limits.max_small_file {
            return Err(RpcErr::bad("FILE_PARTS_INVALID"));
        }
        if let Some(md5) = md5.filter(|m| !m.is_empty()) {
            if format!("{:x}", md5::compute(&data)) != md5.to_ascii_lowercase() {
                return Err(RpcErr::bad("MD5_CHECKSUM_INVALID"));
            }
        }
        self.uploads.remove(&id);
        Ok((data, name))
    }

    fn media_to_doc(&mut self, dc: i32, media: &tl::enums::InputMedia) -> RpcResult<i64> {
        match media {
            tl::enums::InputMedia::UploadedDocument(d) => {
                let (data, name) = self.take_upload(dc, &d.file)?;
                let mut attributes = d.attributes.clone();
                if !attributes.iter().any(|a| matches!(a, tl::enums::DocumentAttribute::Filename(_))) {
                    attributes.push(tl::enums::DocumentAttribute::Filename(tl::types::DocumentAttributeFilename {
                        file_name: name,
                    }));
                }
                let mime_type =
                    if d.mime_type.is_empty() { "application/octet-stream".into() } else { d.mime_type.clone() };
                let doc = Doc {
                    id: random_i64(),
                    access_hash: random_i64(),
                    file_reference: file_reference(),
                    date: now(),
                    mime_type,
                    attributes,
                    data: Arc::new(data),
                    dc_id: dc,
                };
                let id = doc.id;
                self.docs.insert(id, Arc::new(doc));
                Ok(id)
            }
            tl::enums::InputMedia::Document(d) => match &d.id {
                tl::enums::InputDocument::Document(input) => {
                    let doc = self.docs.get(&input.id).ok_or_else(|| RpcErr::bad("MEDIA_INVALID"))?;
                    if doc.access_hash != input.access_hash {
                        return Err(RpcErr::bad("MEDIA_INVALID"));
                    }
                    if doc.file_reference != input.file_reference {
                        return Err(RpcErr::bad("FILE_REFERENCE_EXPIRED"));
                    }
                    // Only a document of a message the account can read
                    // may be sent again (to this chat or any other).
                    if !self.can_read_document(doc.id) {
                        return Err(RpcErr::bad("MEDIA_INVALID"));
                    }
                    Ok(doc.id)
                }
                tl::enums::InputDocument::Empty => Err(RpcErr::bad("MEDIA_EMPTY")),
            },
            tl::enums::InputMedia::Empty => Err(RpcErr::bad("MEDIA_EMPTY")),
            _ => Err(RpcErr::bad("MEDIA_INVALID")),
        }
    }

    // ---- sending, editing, pinning, deleting ----

    fn check_random_id(&self, w: Where, random_id: i64) -> RpcResult<()> {
        if random_id == 0 {
            return Err(RpcErr::bad("RANDOM_ID_EMPTY"));
        }
        if self.chat(w).random_ids.contains_key(&random_id) {
            // Telegram sends this one with code 500, like a server failure.
            return Err(RpcErr { code: 500, message: "RANDOM_ID_DUPLICATE".into() });
        }
        Ok(())
    }

    fn append(&mut self, w: Where, random_id: i64, text: String, body: Body) -> tl::enums::Updates {
        let id = self.next_id(w);
        let stored = Stored { id, date: now(), text, body, edit_date: None, pinned: false };
        let chat = self.chat_mut(w);
        chat.messages.insert(id, stored.clone());
        chat.random_ids.insert(random_id, id);
        let pts = self.bump_pts(w, 1);
        let updates = vec![
            tl::enums::Update::MessageId(tl::types::UpdateMessageId { id, random_id }),
            self.new_message_update(w, &stored, pts),
        ];
        self.updates(w, updates)
    }

    /// messages.sendMedia on DC `dc` (where an uploaded file's parts must be).
    pub fn send_media(
        &mut self,
        dc: i32,
        w: Where,
        media: &tl::enums::InputMedia,
        caption: &str,
        random_id: i64,
    ) -> RpcResult<tl::enums::Updates> {
        if utf16_len(caption) > self.limits.caption_length {
            return Err(RpcErr::bad("MEDIA_CAPTION_TOO_LONG"));
        }
        self.check_random_id(w, random_id)?;
        let doc = self.media_to_doc(dc, media)?;
        Ok(self.append(w, random_id, caption.to_string(), Body::Document(doc)))
    }

    pub fn send_message(&mut self, w: Where, text: &str, random_id: i64) -> RpcResult<tl::enums::Updates> {
        if text.trim().is_empty() {
            return Err(RpcErr::bad("MESSAGE_EMPTY"));
        }
        if utf16_len(text) > self.limits.message_length {
            return Err(RpcErr::bad("MESSAGE_TOO_LONG"));
        }
        self.check_random_id(w, random_id)?;
        Ok(self.append(w, random_id, text.to_string(), Body::Text))
    }

    /// messages.editMessage on DC `dc` (where a new file's parts must be).
    pub fn edit_message(
        &mut self,
        dc: i32,
        w: Where,
        id: i32,
        text: Option<&str>,
        media: Option<&tl::enums::InputMedia>,
    ) -> RpcResult<tl::enums::Updates> {
        let current = self.chat(w).messages.get(&id).cloned().ok_or_else(|| RpcErr::bad("MESSAGE_ID_INVALID"))?;
        if current.is_service() {
            return Err(RpcErr::bad("MESSAGE_ID_INVALID"));
        }
        let has_media = matches!(current.body, Body::Document(_));
        if let Some(t) = text {
            let max =
                if has_media || media.is_some() { self.limits.caption_length } else { self.limits.message_length };
            if utf16_len(t) > max {
                return Err(RpcErr::bad(if max == self.limits.caption_length {
                    "MEDIA_CAPTION_TOO_LONG"
                } else {
                    "MESSAGE_TOO_LONG"
                }));
            }
        }
        if media.is_none() && text.is_none_or(|t| t == current.text) {
            return Err(RpcErr::bad("MESSAGE_NOT_MODIFIED"));
        }
        if media.is_some() && !has_media {
            return Err(RpcErr::bad("MEDIA_PREV_INVALID"));
        }
        let new_body = match media {
            Some(m) => Body::Document(self.media_to_doc(dc, m)?),
            None => current.body.clone(),
        };
        let mut edited = current;
        edited.body = new_body;
        if let Some(t) = text {
            edited.text = t.to_string();
        }
        edited.edit_date = Some(now());
        self.chat_mut(w).messages.insert(id, edited.clone());
        let pts = self.bump_pts(w, 1);
        let message = self.message_tl(w, &edited);
        let update = match w {
            Where::Saved => tl::enums::Update::EditMessage(tl::types::UpdateEditMessage { message, pts, pts_count: 1 }),
            Where::Channel(_) => tl::enums::Update::EditChannelMessage(tl::types::UpdateEditChannelMessage {
                message,
                pts,
                pts_count: 1,
            }),
        };
        Ok(self.updates(w, vec![update]))
    }

    pub fn update_pinned(&mut self, w: Where, id: i32, unpin: bool) -> RpcResult<tl::enums::Updates> {
        let msg = self.chat_mut(w).messages.get_mut(&id).ok_or_else(|| RpcErr::bad("MESSAGE_ID_INVALID"))?;
        if matches!(msg.body, Body::ChannelCreate(_) | Body::Pin(_)) {
            return Err(RpcErr::bad("MESSAGE_ID_INVALID"));
        }
        if msg.pinned != unpin {
            // Already in the requested state: nothing changes, nothing is posted.
            return Ok(self.updates(w, vec![]));
        }
        msg.pinned = !unpin;
        let pts = self.bump_pts(w, 1);
        let mut updates = vec![match w {
            Where::Saved => tl::enums::Update::PinnedMessages(tl::types::UpdatePinnedMessages {
                pinned: !unpin,
                peer: self.peer_tl(w),
                messages: vec![id],
                pts,
                pts_count: 1,
            }),
            Where::Channel(cid) => tl::enums::Update::PinnedChannelMessages(tl::types::UpdatePinnedChannelMessages {
                pinned: !unpin,
                channel_id: cid,
                messages: vec![id],
                pts,
                pts_count: 1,
            }),
        }];
        if !unpin {
            // Pinning leaves a service message in the history.
            let sid = self.next_id(w);
            let service = Stored {
                id: sid,
                date: now(),
                text: String::new(),
                body: Body::Pin(id),
                edit_date: None,
                pinned: false,
            };
            self.chat_mut(w).messages.insert(sid, service.clone());
            let pts = self.bump_pts(w, 1);
            updates.push(self.new_message_update(w, &service, pts));
        }
        Ok(self.updates(w, updates))
    }

    pub fn delete_messages(&mut self, w: Where, ids: &[i32]) -> tl::enums::messages::AffectedMessages {
        let chat = self.chat_mut(w);
        let mut deleted = 0;
        for id in ids {
            if chat.messages.remove(id).is_some() {
                deleted += 1;
            }
        }
        chat.random_ids.retain(|_, m| !ids.contains(m));
        let pts = self.bump_pts(w, deleted);
        tl::enums::messages::AffectedMessages::Messages(tl::types::messages::AffectedMessages {
            pts,
            pts_count: deleted,
        })
    }

    /// Deletes a message as another admin would: without the client asking.
    pub fn delete_behind_the_back(&mut self, w: Where, id: i32) -> bool {
        self.chat_mut(w).messages.remove(&id).is_some()
    }

    // ---- reading ----

    /// channels.getMessages and messages.getMessages: at most 100 ids, each
    /// answered in order, `messageEmpty` for one that does not exist.
    pub fn get_messages(&self, w: Where, ids: &[tl::enums::InputMessage]) -> RpcResult<tl::enums::messages::Messages> {
        if ids.len() > self.limits.max_page as usize {
            return Err(RpcErr::bad("LIMIT_INVALID"));
        }
        let chat = self.chat(w);
        let messages: Vec<tl::enums::Message> = ids
            .iter()
            .map(|m| {
                let id = match m {
                    tl::enums::InputMessage::Id(i) => Some(i.id),
                    tl::enums::InputMessage::ReplyTo(r) => chat.messages.get(&r.id).and_then(|m| match m.body {
                        Body::Pin(target) => Some(target),
                        _ => None,
                    }),
                    tl::enums::InputMessage::Pinned => match w {
                        // A channel knows its pinned message; in a private chat the
                        // request names no chat, so nothing is found.
                        Where::Channel(_) => chat.messages.values().rev().find(|m| m.pinned).map(|m| m.id),
                        Where::Saved => None,
                    },
                    tl::enums::InputMessage::CallbackQuery(_) => None,
                };
                match id.and_then(|id| chat.messages.get(&id)) {
                    Some(m) => self.message_tl(w, m),
                    None => self.empty_tl(w, id.unwrap_or(0)),
                }
            })
            .collect();
        Ok(self.wrap_messages(w, messages, None, None))
    }

    fn wrap_messages(
        &self,
        w: Where,
        messages: Vec<tl::enums::Message>,
        count: Option<i32>,
        offset_id_offset: Option<i32>,
    ) -> tl::enums::messages::Messages {
        let users = vec![self.user()];
        let chats = self.chats_for(w);
        match w {
            Where::Channel(_) => tl::enums::messages::Messages::ChannelMessages(tl::types::messages::ChannelMessages {
                inexact: false,
                pts: self.chat(w).pts,
                count: count.unwrap_or(messages.len() as i32),
                offset_id_offset,
                messages,
                topics: vec![],
                chats,
                users,
            }),
            Where::Saved => match count {
                Some(count) if count as usize != messages.len() => {
                    tl::enums::messages::Messages::Slice(tl::types::messages::MessagesSlice {
                        inexact: false,
                        count,
                        next_rate: None,
                        offset_id_offset,
                        search_flood: None,
                        messages,
                        topics: vec![],
                        chats,
                        users,
                    })
                }
                _ => tl::enums::messages::Messages::Messages(tl::types::messages::Messages {
                    messages,
                    topics: vec![],
                    chats,
                    users,
                }),
            },
        }
    }

    /// messages.getHistory: every message, service ones included, newest first.
    pub fn history(&self, w: Where, p: Paging) -> tl::enums::messages::Messages {
        let all: Vec<&Stored> = self.chat(w).messages.values().rev().collect();
        let (page, offset) = page(&all, p, self.limits.max_page);
        let messages = page.iter().map(|m| self.message_tl(w, m)).collect();
        self.wrap_messages(w, messages, Some(all.len() as i32), offset)
    }

    /// messages.search: never service messages; filtered, then paged like history.
    pub fn search(&self, w: Where, f: &SearchFilter, p: Paging) -> tl::enums::messages::Messages {
        let q = f.query.to_lowercase();
        let all: Vec<&Stored> = self
            .chat(w)
            .messages
            .values()
            .rev()
            .filter(|m| !m.is_service())
            .filter(|m| !f.pinned_only || m.pinned)
            .filter(|m| !f.documents_only || matches!(m.body, Body::Document(_)))
            .filter(|m| q.is_empty() || m.text.to_lowercase().contains(&q))
            .filter(|m| f.min_date == 0 || m.date >= f.min_date)
            .filter(|m| f.max_date == 0 || m.date <= f.max_date)
            .collect();
        let (page, offset) = page(&all, p, self.limits.max_page);
        let messages = page.iter().map(|m| self.message_tl(w, m)).collect();
        self.wrap_messages(w, messages, Some(all.len() as i32), offset)
    }

    // ---- downloads ----

    /// The document at `location`, asked for on DC `dc`: a document stored
    /// on another DC is answered `303 FILE_MIGRATE_<its DC>`.
    fn doc_for_location(&self, dc: i32, location: &tl::enums::InputFileLocation) -> RpcResult<Arc<Doc>> {
        let loc = match location {
            tl::enums::InputFileLocation::InputDocumentFileLocation(l) => l,
            _ => return Err(RpcErr::bad("LOCATION_INVALID")),
        };
        if !loc.thumb_size.is_empty() {
            return Err(RpcErr::bad("LOCATION_INVALID"));
        }
        let doc = self.docs.get(&loc.id).ok_or_else(|| RpcErr::bad("FILE_ID_INVALID"))?;
        if doc.access_hash != loc.access_hash {
            return Err(RpcErr::bad("FILE_ID_INVALID"));
        }
        if doc.dc_id != dc {
            return Err(RpcErr { code: 303, message: format!("FILE_MIGRATE_{}", doc.dc_id) });
        }
        if doc.file_reference != loc.file_reference {
            return Err(RpcErr::bad("FILE_REFERENCE_EXPIRED"));
        }
        Ok(Arc::clone(doc))
    }

    pub fn get_file(
        &self,
        dc: i32,
        location: &tl::enums::InputFileLocation,
        offset: i64,
        limit: i32,
        precise: bool,
    ) -> RpcResult<tl::enums::upload::File> {
        const MIB: i64 = 1024 * 1024;
        let doc = self.doc_for_location(dc, location)?;
        let align = if precise { 1024 } else { 4096 };
        if limit <= 0 || limit % align != 0 || limit > self.limits.max_chunk || (!precise && MIB % limit as i64 != 0) {
            return Err(RpcErr::bad("LIMIT_INVALID"));
        }
        if offset < 0 || offset % align as i64 != 0 || offset / MIB != (offset + limit as i64 - 1) / MIB {
            return Err(RpcErr::bad("OFFSET_INVALID"));
        }
        let size = doc.data.len() as i64;
        let start = offset.min(size) as usize;
        let end = (offset + limit as i64).min(size) as usize;
        Ok(tl::enums::upload::File::File(tl::types::upload::File {
            r#type: tl::enums::storage::FileType::FilePartial,
            mtime: doc.date,
            bytes: doc.data[start..end].to_vec(),
        }))
    }

    /// SHA-256 of 128 KiB blocks, from the block holding `offset`, at most 1 MiB's worth.
    pub fn file_hashes(
        &self,
        dc: i32,
        location: &tl::enums::InputFileLocation,
        offset: i64,
    ) -> RpcResult<Vec<tl::enums::FileHash>> {
        const BLOCK: i64 = 128 * 1024;
        let doc = self.doc_for_location(dc, location)?;
        if offset < 0 {
            return Err(RpcErr::bad("OFFSET_INVALID"));
        }
        let size = doc.data.len() as i64;
        let mut at = offset / BLOCK * BLOCK;
        let mut out = Vec::new();
        while at < size && out.len() < 8 {
            let end = (at + BLOCK).min(size);
            let hash = <sha2::Sha256 as sha2::Digest>::digest(&doc.data[at as usize..end as usize]).to_vec();
            out.push(tl::enums::FileHash::Hash(tl::types::FileHash { offset: at, limit: (end - at) as i32, hash }));
            at = end;
        }
        Ok(out)
    }

    /// Gives every document a new file reference, as Telegram does over time.
    pub fn expire_file_references(&mut self) {
        for doc in self.docs.values_mut() {
            let d = Doc {
                id: doc.id,
                access_hash: doc.access_hash,
                file_reference: file_reference(),
                date: doc.date,
                mime_type: doc.mime_type.clone(),
                attributes: doc.attributes.clone(),
                data: Arc::clone(&doc.data),
                dc_id: doc.dc_id,
            };
            *doc = Arc::new(d);
        }
    }

    /// messages.getDialogs: every channel, newest message first, in one page.
    pub fn dialogs(&self) -> tl::enums::messages::Dialogs {
        let mut dialogs = Vec::new();
        let mut messages = Vec::new();
        let mut chats = Vec::new();
        for id in self.channels.keys() {
            let w = Where::Channel(*id);
            let chat = self.chat(w);
            let top = chat.messages.values().next_back();
            if let Some(m) = top {
                messages.push(self.message_tl(w, m));
            }
            dialogs.push(tl::enums::Dialog::Dialog(tl::types::Dialog {
                pinned: false,
                unread_mark: false,
                view_forum_as_messages: false,
                peer: self.peer_tl(w),
                top_message: top.map_or(0, |m| m.id),
                read_inbox_max_id: 0,
                read_outbox_max_id: 0,
                unread_count: 0,
                unread_mentions_count: 0,
                unread_reactions_count: 0,
                unread_poll_votes_count: 0,
                notify_settings: notify_settings(),
                pts: Some(chat.pts),
                draft: None,
                folder_id: None,
                ttl_period: None,
            }));
            chats.extend(self.chats_for(w));
        }
        tl::enums::messages::Dialogs::Dialogs(tl::types::messages::Dialogs {
            dialogs,
            messages,
            chats,
            users: vec![self.user()],
        })
    }

    // ---- introspection for tests ----

    /// The document messages of a chat: message id, file name and size.
    pub fn documents(&self, w: Where) -> Vec<(i32, String, usize)> {
        self.chat(w)
            .messages
            .values()
            .filter_map(|m| match m.body {
                Body::Document(doc) => self.docs.get(&doc).map(|d| {
                    let name = d
                        .attributes
                        .iter()
                        .find_map(|a| match a {
                            tl::enums::DocumentAttribute::Filename(f) => Some(f.file_name.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    (m.id, name, d.data.len())
                }),
                _ => None,
            })
            .collect()
    }

    /// The DC that stores the document of each document message of a chat.
    pub fn document_dcs(&self, w: Where) -> Vec<(i32, i32)> {
        self.chat(w)
            .messages
            .values()
            .filter_map(|m| match m.body {
                Body::Document(doc) => self.docs.get(&doc).map(|d| (m.id, d.dc_id)),
                _ => None,
            })
            .collect()
    }

    /// The bytes of the document a message holds.
    pub fn document_bytes(&self, w: Where, id: i32) -> Option<Vec<u8>> {
        match self.chat(w).messages.get(&id)?.body {
            Body::Document(doc) => self.docs.get(&doc).map(|d| d.data.to_vec()),
            _ => None,
        }
    }

    /// Posts a document as another client of the account would; returns its message id.
    pub fn post_document(&mut self, w: Where, name: &str, data: Vec<u8>) -> i32 {
        let doc = Doc {
            id: random_i64(),
            access_hash: random_i64(),
            file_reference: file_reference(),
            date: now(),
            mime_type: "application/octet-stream".into(),
            attributes: vec![tl::enums::DocumentAttribute::Filename(tl::types::DocumentAttributeFilename {
                file_name: name.to_string(),
            })],
            data: Arc::new(data),
            dc_id: crate::DC_ID,
        };
        let doc_id = doc.id;
        self.docs.insert(doc_id, Arc::new(doc));
        self.append(w, random_i64() | 1, String::new(), Body::Document(doc_id));
        *self.chat(w).messages.keys().next_back().expect("just appended")
    }

    /// Posts a text message as another client of the account would; returns its message id.
    pub fn post_text(&mut self, w: Where, text: &str) -> i32 {
        self.append(w, random_i64() | 1, text.to_string(), Body::Text);
        *self.chat(w).messages.keys().next_back().expect("just appended")
    }

    /// Ids of the pinned messages of a chat.
    pub fn pinned_ids(&self, w: Where) -> Vec<i32> {
        self.chat(w).messages.values().filter(|m| m.pinned).map(|m| m.id).collect()
    }

    /// Unpins a message as another admin would.
    pub fn unpin_behind_the_back(&mut self, w: Where, id: i32) -> bool {
        match self.chat_mut(w).messages.get_mut(&id) {
            Some(m) if m.pinned => {
                m.pinned = false;
                true
            }
            _ => false,
        }
    }

    /// Ids of the messages of a chat that are not service messages.
    pub fn message_ids(&self, w: Where) -> Vec<i32> {
        self.chat(w).messages.values().filter(|m| !m.is_service()).map(|m| m.id).collect()
    }

    /// A channel's access hash.
    pub fn channel_access_hash(&self, id: i64) -> Option<i64> {
        self.channels.get(&id).map(|c| c.access_hash)
    }

    pub fn channel_ids(&self) -> Vec<i64> {
        self.channels.keys().copied().collect()
    }

    pub fn pending_uploads(&self) -> usize {
        self.uploads.len()
    }

    pub fn document_count(&self) -> usize {
        self.docs.len()
    }
}

fn notify_settings() -> tl::enums::PeerNotifySettings {
    tl::types::PeerNotifySettings {
        show_previews: None,
        silent: None,
        mute_until: None,
        ios_sound: None,
        android_sound: None,
        other_sound: None,
        stories_muted: None,
        stories_hide_sender: None,
        stories_ios_sound: None,
        stories_android_sound: None,
        stories_other_sound: None,
    }
    .into()
}

fn part_size_ok(size: usize) -> bool {
    size > 0 && size.is_multiple_of(1024) && (512 * 1024usize).is_multiple_of(size)
}

/// One page of `all` (newest first) the way Telegram pages: `min_id`/`max_id`
/// narrow the set, the page starts at the first message older than
/// `offset_id` (or than `offset_date`), shifted by `add_offset` (negative
/// values reach newer messages), and holds at most `limit` (capped) messages.
fn page<'a>(all: &[&'a Stored], p: Paging, max_page: i32) -> (Vec<&'a Stored>, Option<i32>) {
    let set: Vec<&Stored> = all
        .iter()
        .copied()
        .filter(|m| p.max_id <= 0 || m.id < p.max_id)
        .filter(|m| p.min_id <= 0 || m.id > p.min_id)
        .collect();
    let start = if p.offset_id > 0 {
        set.iter().position(|m| m.id < p.offset_id).unwrap_or(set.len())
    } else if p.offset_date > 0 {
        set.iter().position(|m| m.date < p.offset_date).unwrap_or(set.len())
    } else {
        0
    };
    let mut from = start as i64 + p.add_offset as i64;
    let mut n = p.limit.clamp(0, max_page) as i64;
    if from < 0 {
        n += from;
        from = 0;
    }
    let from = (from as usize).min(set.len());
    let to = (from + n.max(0) as usize).min(set.len());
    let offset = (p.offset_id > 0 || p.offset_date > 0).then_some(from as i32);
    (set[from..to].to_vec(), offset)
}

fn service(
    m: &Stored,
    peer_id: tl::enums::Peer,
    post: bool,
    action: tl::enums::MessageAction,
    reply_to: Option<i32>,
) -> tl::types::MessageService {
    tl::types::MessageService {
        out: true,
        mentioned: false,
        media_unread: false,
        reactions_are_possible: false,
        silent: false,
        post,
        legacy: false,
        id: m.id,
        from_id: None,
        peer_id,
        saved_peer_id: None,
        reply_to: reply_to.map(reply_header),
        date: m.date,
        action,
        reactions: None,
        ttl_period: None,
    }
}

fn reply_header(id: i32) -> tl::enums::MessageReplyHeader {
    tl::enums::MessageReplyHeader::Header(tl::types::MessageReplyHeader {
        reply_to_scheduled: false,
        forum_topic: false,
        quote: false,
        reply_to_ephemeral: false,
        reply_to_msg_id: Some(id),
        reply_to_peer_id: None,
        reply_from: None,
        reply_media: None,
        reply_to_top_id: None,
        quote_text: None,
        quote_entities: None,
        quote_offset: None,
        todo_item_id: None,
        poll_option: None,
    })
}

fn document_media(d: &Doc) -> tl::enums::MessageMedia {
    tl::enums::MessageMedia::Document(tl::types::MessageMediaDocument {
        nopremium: false,
        spoiler: false,
        video: false,
        round: false,
        voice: false,
        document: Some(tl::enums::Document::Document(tl::types::Document {
            id: d.id,
            access_hash: d.access_hash,
            file_reference: d.file_reference.clone(),
            date: d.date,
            mime_type: d.mime_type.clone(),
            size: d.data.len() as i64,
            thumbs: None,
            video_thumbs: None,
            dc_id: d.dc_id,
            attributes: d.attributes.clone(),
        })),
        alt_documents: None,
        video_cover: None,
        video_timestamp: None,
        ttl_seconds: None,
    })
}

fn plain_message(
    m: &Stored,
    peer_id: tl::enums::Peer,
    post: bool,
    media: Option<tl::enums::MessageMedia>,
) -> tl::types::Message {
    tl::types::Message {
        out: true,
        mentioned: false,
        media_unread: false,
        silent: false,
        post,
        from_scheduled: false,
        legacy: false,
        edit_hide: false,
        pinned: m.pinned,
        noforwards: false,
        invert_media: false,
        offline: false,
        video_processing_pending: false,
        paid_suggested_post_stars: false,
        paid_suggested_post_ton: false,
        id: m.id,
        from_id: None,
        from_boosts_applied: None,
        from_rank: None,
        peer_id,
        saved_peer_id: None,
        fwd_from: None,
        via_bot_id: None,
        via_business_bot_id: None,
        guestchat_via_from: None,
        reply_to: None,
        date: m.date,
        message: m.text.clone(),
        media,
        reply_markup: None,
        entities: None,
        // views and forwards share one flag bit: both or neither.
        views: post.then_some(1),
        forwards: post.then_some(0),
        replies: None,
        edit_date: m.edit_date,
        post_author: None,
        grouped_id: None,
        reactions: None,
        restriction_reason: None,
        ttl_period: None,
        quick_reply_shortcut_id: None,
        effect: None,
        factcheck: None,
        report_delivery_until_date: None,
        paid_message_stars: None,
        suggested_post: None,
        schedule_repeat_period: None,
        summary_from_language: None,
        rich_message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(ids: &[i32]) -> Vec<Stored> {
        ids.iter()
            .map(|&id| Stored { id, date: id, text: String::new(), body: Body::Text, edit_date: None, pinned: false })
            .collect()
    }

    fn ids(all: &[Stored], p: Paging) -> Vec<i32> {
        let refs: Vec<&Stored> = all.iter().rev().collect();
        page(&refs, p, 100).0.iter().map(|m| m.id).collect()
    }

    #[test]
    fn pages_like_telegram() {
        let all = msgs(&(1..=10).collect::<Vec<_>>());
        assert_eq!(ids(&all, Paging { limit: 3, ..Paging::default() }), vec![10, 9, 8]);
        assert_eq!(ids(&all, Paging { offset_id: 8, limit: 3, ..Paging::default() }), vec![7, 6, 5]);
        assert_eq!(ids(&all, Paging { offset_id: 8, add_offset: -2, limit: 3, ..Paging::default() }), vec![9, 8, 7]);
        assert_eq!(ids(&all, Paging { offset_id: 3, limit: 5, ..Paging::default() }), vec![2, 1]);
        assert_eq!(ids(&all, Paging { limit: 5, max_id: 6, min_id: 2, ..Paging::default() }), vec![5, 4, 3]);
        // Going forward from the oldest, as grammers does with reverse(true).
        assert_eq!(ids(&all, Paging { offset_id: 1, add_offset: -4, limit: 5, ..Paging::default() }), vec![4, 3, 2, 1]);
        assert_eq!(
            ids(&all, Paging { offset_id: 4, add_offset: -5, limit: 5, min_id: 4, ..Paging::default() }),
            vec![9, 8, 7, 6, 5]
        );
        assert_eq!(ids(&all, Paging { limit: 500, ..Paging::default() }).len(), 10);
        assert!(ids(&all, Paging { limit: 0, ..Paging::default() }).is_empty());
    }

    #[test]
    fn a_document_of_a_readable_chat_is_sent_again_by_reference_only() {
        let mut w = World::default();
        let (a, _) = w.create_channel("a", None).unwrap();
        let (b, _) = w.create_channel("b", None).unwrap();
        let msg = w.post_document(Where::Channel(a), "doc", vec![7; 100]);
        let Body::Document(id) = w.chat(Where::Channel(a)).messages[&msg].body else { panic!("a document") };
        let doc = Arc::clone(&w.docs[&id]);
        let media = |access_hash: i64, file_reference: Vec<u8>| {
            tl::enums::InputMedia::Document(tl::types::InputMediaDocument {
                spoiler: false,
                id: tl::types::InputDocument { id, access_hash, file_reference }.into(),
                video_cover: None,
                video_timestamp: None,
                ttl_seconds: None,
                query: None,
            })
        };
        let send = |w: &mut World, m: &tl::enums::InputMedia| {
            w.send_media(crate::DC_ID, Where::Channel(b), m, "", random_i64() | 1).map_err(|e| e.message)
        };
        let bad_hash = media(doc.access_hash ^ 1, doc.file_reference.clone());
        assert_eq!(send(&mut w, &bad_hash).unwrap_err(), "MEDIA_INVALID");
        assert_eq!(send(&mut w, &media(doc.access_hash, vec![0; 16])).unwrap_err(), "FILE_REFERENCE_EXPIRED");
        let good = media(doc.access_hash, doc.file_reference.clone());
        send(&mut w, &good).unwrap();
        let copies: Vec<_> = w.documents(Where::Channel(b));
        assert_eq!(copies.len(), 1);
        assert_eq!(w.document_bytes(Where::Channel(b), copies[0].0).unwrap(), vec![7; 100]);
        // Once no readable message holds it, it cannot be sent again.
        w.delete_messages(Where::Channel(a), &[msg]);
        w.delete_messages(Where::Channel(b), &[copies[0].0]);
        assert_eq!(send(&mut w, &good).unwrap_err(), "MEDIA_INVALID");
    }

    #[test]
    fn part_sizes() {
        assert!(part_size_ok(512 * 1024) && part_size_ok(1024) && part_size_ok(64 * 1024));
        assert!(!part_size_ok(1000) && !part_size_ok(3 * 1024) && !part_size_ok(1024 * 1024));
    }
}
