//! Drives the real grammers 0.11 client against the loopback server: a
//! seeded session (no key exchange), get_me, channel creation, a multi-part
//! upload over 10 MiB, documents in Saved Messages and a channel, history,
//! whole and ranged downloads, pins, edits and deletes; a bot refused what
//! Telegram refuses bots, reading its channel by id.

use std::sync::Arc;

use grammers_client::media::{Downloadable, Media};
use grammers_client::message::InputMessage;
use grammers_client::session::storages::MemorySession;
use grammers_client::session::types::{PeerAuth, PeerId, PeerRef};
use grammers_client::session::Session;
use grammers_client::{tl, Client, InvocationError, SenderPool};
use tokio::task::JoinHandle;
use tstor_tgloop::{Fault, Server};

const API_ID: i32 = 1;

struct Connected {
    client: Client,
    session: Arc<MemorySession>,
    runner: JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.runner.abort();
    }
}

fn connect(server: &Server) -> Connected {
    let session = Arc::new(MemorySession::from(server.session_data()));
    let pool = SenderPool::new(Arc::clone(&session), API_ID);
    let client = Client::new(pool.handle);
    let runner = tokio::spawn(pool.runner.run());
    Connected { client, session, runner }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn create_channel(client: &Client, title: &str) -> PeerRef {
    let updates = client
        .invoke(&tl::functions::channels::CreateChannel {
            broadcast: true,
            megagroup: false,
            for_import: false,
            forum: false,
            title: title.into(),
            about: String::new(),
            geo_point: None,
            address: None,
            ttl_period: None,
        })
        .await
        .unwrap();
    let chats = match updates {
        tl::enums::Updates::Updates(u) => u.chats,
        other => panic!("unexpected answer {other:?}"),
    };
    match &chats[..] {
        [tl::enums::Chat::Channel(c)] => {
            PeerRef { id: PeerId::channel(c.id).unwrap(), auth: PeerAuth::from_hash(c.access_hash.unwrap()) }
        }
        other => panic!("unexpected chats {other:?}"),
    }
}

fn document_of(message: &grammers_client::message::Message) -> grammers_client::media::Document {
    match message.media() {
        Some(Media::Document(d)) => d,
        other => panic!("expected a document, got {other:?}"),
    }
}

async fn download_all(client: &Client, doc: &grammers_client::media::Document) -> Vec<u8> {
    let mut it = client.iter_download(doc);
    let mut out = Vec::new();
    while let Some(chunk) = it.next().await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    out
}

async fn get_file(
    client: &Client,
    doc: &grammers_client::media::Document,
    offset: i64,
    limit: i32,
    precise: bool,
) -> Result<Vec<u8>, InvocationError> {
    let location = doc.to_raw_input_location().unwrap();
    match client
        .invoke(&tl::functions::upload::GetFile { precise, cdn_supported: false, location, offset, limit })
        .await?
    {
        tl::enums::upload::File::File(f) => Ok(f.bytes),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn seeded_session_needs_no_key_exchange_and_knows_only_the_servers_dcs() {
    let server = Server::start().await.unwrap();
    let c = connect(&server);
    let me = c.client.get_me().await.unwrap();
    assert_eq!(me.id().bare_id(), Some(server.me().0));
    assert!(c.client.is_authorized().await.unwrap());
    // help.getConfig lists only the server's two DCs, at loopback addresses.
    for dc in [3, 4, 5] {
        assert!(c.session.dc_option(dc).unwrap().is_none(), "dc {dc} must stay unknown");
    }
    assert_eq!(c.session.dc_option(2).unwrap().unwrap().ipv4.port(), server.addr().port());
    let dc1 = c.session.dc_option(1).unwrap().expect("DC 1 listed");
    assert_eq!((dc1.ipv4.port(), dc1.auth_key), (server.addr_of(1).unwrap().port(), None));
    assert_eq!(server.calls("help.getConfig"), 1);
    assert_eq!(server.calls("users.getUsers"), 1);
    // The client started with salt 0, was corrected, then fetched future salts.
    let stats = server.protocol_stats();
    assert_eq!((stats.connections, stats.bad_server_salts, stats.future_salts), (1, 1, 1));
    assert_eq!(stats.bad_msg_notifications, 0);
}

#[tokio::test]
async fn compressed_requests_and_containers_are_understood() {
    let server = Server::start().await.unwrap();
    let c = connect(&server);
    let client = &c.client;
    let saved = client.get_me().await.unwrap().to_ref().await.unwrap().unwrap();
    // Compressible parts travel gzip_packed; four parts in flight share containers.
    let data = vec![b'z'; 11 * 1024 * 1024];
    let uploaded = client.upload_stream(&mut &data[..], data.len(), "zeros".into()).await.unwrap();
    let msg = client.send_message(saved, InputMessage::new().document(uploaded)).await.unwrap();
    let stats = server.protocol_stats();
    assert!(stats.gzipped_requests >= 22, "{stats:?}");
    assert!(stats.containers >= 1, "{stats:?}");

    // upload.getFileHashes: SHA-256 of 128 KiB blocks from the block holding the offset.
    let found = client.get_messages_by_id(saved, &[msg.id()]).await.unwrap().pop().unwrap().unwrap();
    let location = document_of(&found).to_raw_input_location().unwrap();
    let hashes = client.invoke(&tl::functions::upload::GetFileHashes { location, offset: 200_000 }).await.unwrap();
    assert_eq!(hashes.len(), 8);
    for (i, h) in hashes.iter().enumerate() {
        let tl::enums::FileHash::Hash(h) = h;
        assert_eq!(h.offset, (i as i64 + 1) * 128 * 1024);
        let block = &data[h.offset as usize..][..h.limit as usize];
        assert_eq!(h.hash, <sha2::Sha256 as sha2::Digest>::digest(block).to_vec());
    }
}

#[tokio::test]
async fn big_documents_round_trip_through_saved_messages_and_a_channel() {
    let server = Server::start().await.unwrap();
    let c = connect(&server);
    let client = &c.client;
    let me = client.get_me().await.unwrap();
    let saved = me.to_ref().await.unwrap().expect("get_me caches the self user");
    let channel = create_channel(client, "tstor test").await;

    let data = pseudo_random(10 * 1024 * 1024 + 300 * 1024 + 17, 7);
    let mut sent = Vec::new();
    for (i, peer) in [saved, channel].into_iter().enumerate() {
        let uploaded = client.upload_stream(&mut &data[..], data.len(), format!("pack{i}")).await.unwrap();
        let msg = client.send_message(peer, InputMessage::new().text("opaque").document(uploaded)).await.unwrap();
        assert!(msg.id() > 0);
        sent.push((peer, msg.id()));
    }
    // 10 MiB + 300 KiB in 512 KiB parts: 21 parts per file, all with saveBigFilePart.
    assert_eq!(server.calls("upload.saveBigFilePart"), 42);
    assert_eq!(server.calls("upload.saveFilePart"), 0);
    assert_eq!(server.with_world(|w| w.pending_uploads()), 0);

    for &(peer, id) in &sent {
        // History lists the document; the channel also has its creation service message.
        let mut history = client.iter_messages(peer);
        let mut listed = Vec::new();
        while let Some(m) = history.next().await.unwrap() {
            listed.push((m.id(), m.action().is_some()));
        }
        assert!(listed.contains(&(id, false)));
        if peer.id.kind() == grammers_client::session::types::PeerKind::Channel {
            assert_eq!(listed.last(), Some(&(1, true)), "channel history ends with its creation");
        }

        let msg = client.get_messages_by_id(peer, &[id]).await.unwrap().pop().unwrap().expect("message found");
        let doc = document_of(&msg);
        assert_eq!(doc.size(), Some(data.len()));
        assert_eq!(download_all(client, &doc).await, data);

        // Ranged reads with aligned offsets and limits.
        let mib = 1024 * 1024;
        assert_eq!(get_file(client, &doc, mib, 512 * 1024, false).await.unwrap(), &data[mib as usize..][..512 * 1024]);
        assert_eq!(get_file(client, &doc, 8192, 4096, true).await.unwrap(), &data[8192..8192 + 4096]);
        let end = (data.len() as i64 / 4096) * 4096;
        assert_eq!(get_file(client, &doc, end, 4096, false).await.unwrap(), &data[end as usize..]);
        for (offset, limit) in [(1000, 4096), (0, 3000), (mib - 4096, 8192), (0, 3 * 4096)] {
            let err = get_file(client, &doc, offset, limit, false).await.unwrap_err();
            assert!(err.is("OFFSET_INVALID") || err.is("LIMIT_INVALID"), "offset {offset} limit {limit}: {err}");
        }
    }

    // Pins: a channel reads its pinned message with inputMessagePinned...
    let (channel, channel_msg) = sent[1];
    client.pin_message(channel, channel_msg).await.unwrap();
    let pinned = client.get_pinned_message(channel).await.unwrap().expect("channel pin");
    assert_eq!(pinned.id(), channel_msg);
    // ...while Saved Messages is read with messages.search and the pinned filter.
    let (saved, saved_msg) = sent[0];
    client.pin_message(saved, saved_msg).await.unwrap();
    let mut search = client.search_messages(saved).filter(tl::enums::MessagesFilter::InputMessagesFilterPinned);
    assert_eq!(search.next().await.unwrap().map(|m| m.id()), Some(saved_msg));
    assert!(search.next().await.unwrap().is_none());

    // Edit the caption; the same caption again is not a modification.
    client.edit_message(channel, channel_msg, InputMessage::new().text("edited")).await.unwrap();
    let err = client.edit_message(channel, channel_msg, InputMessage::new().text("edited")).await.unwrap_err();
    assert!(err.is("MESSAGE_NOT_MODIFIED"), "{err}");

    // Delete: the id comes back as a message wrapping messageEmpty.
    assert_eq!(client.delete_messages(channel, &[channel_msg]).await.unwrap(), 1);
    let gone = client.get_messages_by_id(channel, &[channel_msg]).await.unwrap().pop().unwrap().unwrap();
    assert!(matches!(gone.raw, tl::enums::Message::Empty(_)));
    assert_eq!(client.delete_messages(saved, &[saved_msg]).await.unwrap(), 1);
    assert!(client
        .get_pinned_message(channel)
        .await
        .unwrap()
        .map(|m| m.raw)
        .is_none_or(|raw| matches!(raw, tl::enums::Message::Empty(_))));
}

#[tokio::test]
async fn saved_messages_need_the_explicit_user_reference() {
    let server = Server::start().await.unwrap();
    let c = connect(&server);
    let client = &c.client;
    let me = client.get_me().await.unwrap();
    let explicit = me.to_ref().await.unwrap().unwrap();
    let sentinel = PeerRef { id: PeerId::self_user(), auth: PeerAuth::default() };

    let uploaded = client.upload_stream(&mut &b"small document"[..], 14, "small".into()).await.unwrap();
    let msg = client.send_message(sentinel, InputMessage::new().document(uploaded)).await.unwrap();
    assert_eq!(server.calls("upload.saveFilePart"), 1);

    // grammers compares the message's peer with the sentinel id and never matches.
    assert!(client.get_messages_by_id(sentinel, &[msg.id()]).await.unwrap()[0].is_none());
    let found = client.get_messages_by_id(explicit, &[msg.id()]).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(download_all(client, &document_of(&found)).await, b"small document");
    client.pin_message(explicit, msg.id()).await.unwrap();
    assert!(client.get_pinned_message(sentinel).await.unwrap().is_none());
    assert!(client
        .get_pinned_message(explicit)
        .await
        .unwrap()
        .is_none_or(|m| matches!(m.raw, tl::enums::Message::Empty(_))));
}

#[tokio::test]
async fn telegram_rules_are_enforced() {
    let server = Server::start().await.unwrap();
    let c = connect(&server);
    let client = &c.client;
    let saved = client.get_me().await.unwrap().to_ref().await.unwrap().unwrap();

    // A caption over 1024 characters.
    let uploaded = client.upload_stream(&mut &[1u8; 100][..], 100, "x".into()).await.unwrap();
    let err = client
        .send_message(saved, InputMessage::new().text("c".repeat(1025)).document(uploaded.clone()))
        .await
        .unwrap_err();
    assert!(err.is("MEDIA_CAPTION_TOO_LONG"), "{err}");

    // A part whose size does not divide 512 KiB.
    let err = client
        .invoke(&tl::functions::upload::SaveBigFilePart {
            file_id: 5,
            file_part: 0,
            file_total_parts: 3,
            bytes: vec![0; 3000],
        })
        .await
        .unwrap_err();
    assert!(err.is("FILE_PART_SIZE_INVALID"), "{err}");
    // More parts than a non-premium account may upload.
    let err = client
        .invoke(&tl::functions::upload::SaveBigFilePart {
            file_id: 6,
            file_part: 0,
            file_total_parts: 4001,
            bytes: vec![0; 1024],
        })
        .await
        .unwrap_err();
    assert!(err.is("FILE_PARTS_INVALID"), "{err}");
    // Sending a file whose parts are not all there.
    client
        .invoke(&tl::functions::upload::SaveBigFilePart {
            file_id: 7,
            file_part: 0,
            file_total_parts: 2,
            bytes: vec![0; 1024],
        })
        .await
        .unwrap();
    let missing = grammers_client::media::Uploaded::from_raw(
        tl::types::InputFileBig { id: 7, parts: 2, name: "m".into() }.into(),
    );
    let err = client.send_message(saved, InputMessage::new().document(missing)).await.unwrap_err();
    // grammers splits the number out of FILE_PART_1_MISSING.
    match err {
        InvocationError::Rpc(e) => assert_eq!((e.name.as_str(), e.value), ("FILE_PART_MISSING", Some(1))),
        other => panic!("{other}"),
    }

    // The same random_id twice.
    let media: tl::enums::InputMedia = tl::types::InputMediaUploadedDocument {
        nosound_video: false,
        force_file: true,
        spoiler: false,
        file: uploaded.raw,
        thumb: None,
        mime_type: "application/octet-stream".into(),
        attributes: vec![],
        stickers: None,
        video_cover: None,
        video_timestamp: None,
        ttl_seconds: None,
    }
    .into();
    let send = tl::functions::messages::SendMedia {
        silent: false,
        background: false,
        clear_draft: false,
        noforwards: false,
        update_stickersets_order: false,
        invert_media: false,
        allow_paid_floodskip: false,
        peer: saved.into(),
        reply_to: None,
        media,
        message: String::new(),
        random_id: 99,
        reply_markup: None,
        entities: None,
        schedule_date: None,
        schedule_repeat_period: None,
        send_as: None,
        quick_reply_shortcut: None,
        effect: None,
        allow_paid_stars: None,
        suggested_post: None,
    };
    client.invoke(&send).await.unwrap();
    let err = client.invoke(&send).await.unwrap_err();
    assert!(err.is("RANDOM_ID_DUPLICATE"), "{err}");

    // An unknown channel.
    let bogus = PeerRef { id: PeerId::channel(12345).unwrap(), auth: PeerAuth::from_hash(1) };
    let err = client.iter_messages(bogus).next().await.unwrap_err();
    assert!(err.is("CHANNEL_INVALID"), "{err}");
}

#[tokio::test]
async fn history_pages_newest_first_and_message_ids_increase() {
    let server = Server::start().await.unwrap();
    let c = connect(&server);
    let client = &c.client;
    let channel = create_channel(client, "paging").await;
    let saved = client.get_me().await.unwrap().to_ref().await.unwrap().unwrap();
    for peer in [channel, saved] {
        let mut ids = Vec::new();
        for i in 0..230 {
            let m = client.send_message(peer, format!("m{i}")).await.unwrap();
            ids.push(m.id());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
        let mut it = client.iter_messages(peer);
        let mut listed = Vec::new();
        while let Some(m) = it.next().await.unwrap() {
            if m.action().is_none() {
                listed.push(m.id());
            }
        }
        ids.reverse();
        assert_eq!(listed, ids);
        let mut back = client.iter_messages(peer).reverse(true);
        let mut forward = Vec::new();
        while let Some(m) = back.next().await.unwrap() {
            if m.action().is_none() {
                forward.push(m.id());
            }
        }
        ids.reverse();
        assert_eq!(forward, ids);
    }
    // Three pages of at most 100 for each chat, in each direction.
    assert!(server.calls("messages.getHistory") >= 12);
}

#[tokio::test]
async fn flood_waits_and_lost_answers_reach_the_caller() {
    let server = Server::start().await.unwrap();
    let c = connect(&server);
    let client = &c.client;
    let saved = client.get_me().await.unwrap().to_ref().await.unwrap().unwrap();

    // grammers' default policy sleeps on the first short flood wait, then gives up.
    server.inject("messages.sendMessage", Fault::FloodWait(1), 2);
    let err = client.send_message(saved, "hello").await.unwrap_err();
    assert!(err.is("FLOOD_WAIT"), "{err}");
    assert_eq!(server.calls("messages.sendMessage"), 2);

    // A lost answer: the message was stored, the connection dropped.
    server.inject("messages.sendMessage", Fault::LoseAnswer, 1);
    let before = server.with_world(|w| w.message_ids(tstor_tgloop::Where::Saved).len());
    let err = client.send_message(saved, "stored but unanswered").await.unwrap_err();
    // grammers' default policy retries a dropped connection once, resending
    // the same request body, so the same random_id: the server refuses it.
    assert!(err.is("RANDOM_ID_DUPLICATE"), "{err}");
    assert_eq!(server.with_world(|w| w.message_ids(tstor_tgloop::Where::Saved).len()), before + 1);
    assert_eq!(server.pending_faults(), 0);
    // The client reconnects on the next call.
    client.get_me().await.unwrap();
}

/// The latency is a round trip: calls in flight on the one connection
/// grammers opens overlap it instead of queueing behind each other. Serial
/// answers could not take less than `CALLS × LATENCY`, whatever the machine.
#[tokio::test]
async fn calls_in_flight_overlap_the_latency_on_one_connection() {
    const LATENCY: std::time::Duration = std::time::Duration::from_millis(400);
    const CALLS: u32 = 8;
    let server = Server::start_with(tstor_tgloop::Config { latency: LATENCY, ..Default::default() }).await.unwrap();
    let c = connect(&server);
    c.client.get_me().await.unwrap();
    let started = std::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let client = c.client.clone();
        calls.spawn(async move { client.get_me().await });
    }
    while let Some(me) = calls.join_next().await {
        assert_eq!(me.unwrap().unwrap().id().bare_id(), Some(server.me().0));
    }
    let took = started.elapsed();
    assert!(took < LATENCY * CALLS, "{CALLS} calls took {took:?}: answered one after another");
    assert!(took >= LATENCY, "answered in {took:?}, before the latency");
    assert_eq!(server.protocol_stats().connections, 1);
}

fn rpc_name(e: &InvocationError) -> String {
    match e {
        InvocationError::Rpc(r) => r.name.clone(),
        other => panic!("not an RPC error: {other}"),
    }
}

#[tokio::test]
async fn a_bot_is_refused_what_telegram_refuses_bots_and_reads_its_channel_by_id() {
    let server = Server::start().await.unwrap();
    let user = connect(&server);
    let channel = create_channel(&user.client, "Backups").await;
    let tl::enums::contacts::ResolvedPeer::Peer(found) = user
        .client
        .invoke(&tl::functions::contacts::ResolveUsername { username: "tgloop_bot".into(), referer: None })
        .await
        .unwrap();
    let Some(tl::enums::User::User(bot)) = found.users.first() else { panic!("no bot") };
    assert!(bot.bot && !bot.is_self);
    let bot_ref = tl::types::InputUser { user_id: bot.id, access_hash: bot.access_hash.unwrap() };
    let rights = |on: bool| tl::types::ChatAdminRights {
        change_info: false,
        post_messages: on,
        edit_messages: on,
        delete_messages: on,
        ban_users: false,
        invite_users: false,
        pin_messages: on,
        add_admins: false,
        anonymous: false,
        manage_call: false,
        other: false,
        manage_topics: false,
        post_stories: false,
        edit_stories: false,
        delete_stories: false,
        manage_direct_messages: false,
        manage_ranks: false,
        manage_linked_peers: false,
        manage_welcome_messages: false,
    };
    let ids: Vec<i32> = (0..3)
        .map(|i| {
            server.with_world(|w| {
                w.post_text(tstor_tgloop::Where::Channel(channel.id.bare_id_unchecked()), &format!("m{i}"))
            })
        })
        .collect();
    drop(user);

    // The bot logs in on the same key: from now on the key is the bot's.
    let token = server.with_world(|w| w.login.bot_token.clone());
    let c = connect(&server);
    let me = c.client.bot_sign_in(&token, "hash").await.unwrap();
    assert!(me.is_bot());
    let channel_id = channel.id.bare_id_unchecked();
    let input =
        |hash: i64| -> tl::enums::InputChannel { tl::types::InputChannel { channel_id, access_hash: hash }.into() };
    // Not an administrator yet: the channel is private to it.
    let err = c.client.invoke(&tl::functions::channels::GetChannels { id: vec![input(0)] }).await.unwrap_err();
    assert_eq!(rpc_name(&err), "CHANNEL_INVALID");

    // Refused methods.
    let peer = tl::enums::InputPeer::PeerSelf;
    let history = tl::functions::messages::GetHistory {
        peer: peer.clone(),
        offset_id: 0,
        offset_date: 0,
        add_offset: 0,
        limit: 10,
        max_id: 0,
        min_id: 0,
        hash: 0,
    };
    assert_eq!(rpc_name(&c.client.invoke(&history).await.unwrap_err()), "BOT_METHOD_INVALID");
    let dialogs = tl::functions::messages::GetDialogs {
        exclude_pinned: false,
        folder_id: None,
        offset_date: 0,
        offset_id: 0,
        offset_peer: tl::enums::InputPeer::Empty,
        limit: 10,
        hash: 0,
    };
    assert_eq!(rpc_name(&c.client.invoke(&dialogs).await.unwrap_err()), "BOT_METHOD_INVALID");
    let create = tl::functions::channels::CreateChannel {
        broadcast: true,
        megagroup: false,
        for_import: false,
        forum: false,
        title: "mine".into(),
        about: String::new(),
        geo_point: None,
        address: None,
        ttl_period: None,
    };
    assert_eq!(rpc_name(&c.client.invoke(&create).await.unwrap_err()), "BOT_METHOD_INVALID");
    let saved = tl::functions::messages::SendMessage {
        no_webpage: false,
        silent: false,
        background: false,
        clear_draft: false,
        noforwards: false,
        update_stickersets_order: false,
        invert_media: false,
        allow_paid_floodskip: false,
        peer,
        reply_to: None,
        message: "to myself".into(),
        random_id: 7,
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
    };
    assert_eq!(rpc_name(&c.client.invoke(&saved).await.unwrap_err()), "BOT_METHOD_INVALID");
    assert_eq!(server.bot_refusals().len(), 4);

    // Made an administrator by the user (the key is the user's for a moment).
    server.with_world(|w| w.login.as_bot = false);
    let user = connect(&server);
    let make_admin = |on: bool| tl::functions::channels::EditAdmin {
        channel: tl::types::InputChannel { channel_id, access_hash: channel.auth.hash() }.into(),
        user_id: bot_ref.clone().into(),
        admin_rights: rights(on).into(),
        rank: None,
    };
    user.client.invoke(&make_admin(true)).await.unwrap();
    drop(user);
    server.with_world(|w| w.login.as_bot = true);

    // The bot learns its own access hash of the channel with hash 0.
    let tl::enums::messages::Chats::Chats(chats) =
        c.client.invoke(&tl::functions::channels::GetChannels { id: vec![input(0)] }).await.unwrap()
    else {
        panic!("a slice")
    };
    let Some(tl::enums::Chat::Channel(seen)) = chats.chats.first() else { panic!("no channel") };
    let bot_hash = seen.access_hash.unwrap();
    assert_ne!(bot_hash, channel.auth.hash(), "access hashes are per account");
    let peer: tl::enums::InputPeer = tl::types::InputPeerChannel { channel_id, access_hash: bot_hash }.into();
    let pin = tl::functions::messages::UpdatePinnedMessage {
        silent: true,
        unpin: false,
        pm_oneside: false,
        peer: peer.clone(),
        id: ids[1],
    };
    c.client.invoke(&pin).await.unwrap();
    let tl::enums::messages::ChatFull::Full(full) =
        c.client.invoke(&tl::functions::channels::GetFullChannel { channel: input(bot_hash) }).await.unwrap();
    let tl::enums::ChatFull::ChannelFull(full) = full.full_chat else { panic!("not a channel") };
    assert_eq!(full.pinned_msg_id, Some(ids[1]));
    assert_eq!(full.read_inbox_max_id, ids[2] + 1, "the newest message is the pin's service message");

    // Messages by id: at most 100, a missing one is messageEmpty.
    let by_id = |ids: Vec<i32>| tl::functions::channels::GetMessages {
        channel: input(bot_hash),
        id: ids.into_iter().map(|id| tl::types::InputMessageId { id }.into()).collect(),
    };
    let got = c.client.invoke(&by_id(vec![ids[0], 999, ids[2]])).await.unwrap();
    let tl::enums::messages::Messages::ChannelMessages(got) = got else { panic!("not channel messages") };
    let kinds: Vec<(i32, bool)> =
        got.messages.iter().map(|m| (m.id(), matches!(m, tl::enums::Message::Empty(_)))).collect();
    assert_eq!(kinds, vec![(ids[0], false), (999, true), (ids[2], false)]);
    let err = c.client.invoke(&by_id((1..=101).collect())).await.unwrap_err();
    assert_eq!(rpc_name(&err), "LIMIT_INVALID");

    // Without the right to delete, deleting is refused.
    server.with_world(|w| {
        w.make_bot_admin(channel_id, tstor_tgloop::BotRights { post: true, edit: true, delete: false })
    });
    let delete = tl::functions::channels::DeleteMessages { channel: input(bot_hash), id: vec![ids[0]] };
    assert_eq!(rpc_name(&c.client.invoke(&delete).await.unwrap_err()), "MESSAGE_DELETE_FORBIDDEN");
    assert_eq!(server.bot_refusals().len(), 4, "no more refusals: these are rights, not methods");
}
