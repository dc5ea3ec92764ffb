//! The Telegram backend against the loopback MTProto server: the backend
//! conformance suite in Saved Messages and in a new channel, opaque names,
//! big objects, ranged reads, expired file references, flood waits and lost
//! answers.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tstor_tgloop::{Fault, Server, Where};

use super::*;
use crate::backend::conformance;
use crate::backend::names::NAME_HEX_LEN;
use crate::crypto::names::ObjectNameCodec;

/// The names a backend starts with, as the CLI gives them.
fn public_names() -> Arc<ObjectNameCodec> {
    Arc::new(ObjectNameCodec::public())
}

/// The object names a repository would give the backend.
fn repo_names() -> Arc<ObjectNameCodec> {
    Arc::new(ObjectNameCodec::for_repository(&[0x5a; 32]))
}

fn session(server: &Server) -> Arc<TelegramSession> {
    let SocketAddr::V4(v4) = server.addr() else { panic!("loopback server listens on IPv4") };
    let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
    let v6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
    Arc::new(TelegramSession::with_dc(server.dc_id(), v4, v6, server.auth_key()))
}

fn options() -> Options {
    Options { api_id: 1, retry_delay: Duration::from_millis(20), ..Options::default() }
}

fn data(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed as u32) as u8 ^ (i >> 9) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// A backend on the loopback server with a repository's object names, as
/// `Repository::open` gives them.
async fn connect(server: &Server, target: Target) -> TelegramBackend {
    let b = TelegramBackend::connect(session(server), target, options(), public_names());
    b.use_object_names(repo_names()).await;
    b
}

#[test]
fn chunk_plans_are_aligned() {
    let cases = [
        (0u64, 1),
        (1000, 6000),
        (99_990, 100_000),
        (0, 3 << 20),
        (524_287, 1_048_577),
        (4096, 8192),
        (300 << 10, (300 << 10) + (8 << 20)),
        (123_456_789, 123_456_789 + 40_000),
    ];
    for (start, end) in cases {
        let plan = chunk_plan(start, end);
        assert!(plan[0].0 <= start && plan.last().map(|(o, l)| o + *l as u64).unwrap() >= end);
        for w in plan.windows(2) {
            assert_eq!(w[0].0 + w[0].1 as u64, w[1].0);
        }
        let wasted = start - plan[0].0;
        assert!(wasted < 4096 || wasted <= end - start, "{start}..{end} starts reading at {}", plan[0].0);
        for &(offset, limit) in &plan {
            assert!(limit >= 4096 && limit as usize <= MAX_CHUNK && limit.is_power_of_two());
            assert_eq!(offset % limit as u64, 0, "{offset}+{limit}");
            assert_eq!(offset >> 20, (offset + limit as u64 - 1) >> 20);
        }
    }
    // An unaligned 8 MiB read takes full-size requests from the start.
    assert_eq!(chunk_plan(300 << 10, (300 << 10) + (8 << 20)).len(), 17);
}

#[tokio::test]
async fn saved_messages_conform() {
    let server = Server::start().await.unwrap();
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, options(), public_names());
    conformance::run(&b, repo_names()).await.unwrap();
}

#[tokio::test]
async fn new_channel_conforms() {
    let server = Server::start().await.unwrap();
    let b =
        TelegramBackend::connect(session(&server), Target::NewChannel("tstor repo".into()), options(), public_names());
    conformance::run(&b, repo_names()).await.unwrap();
    let (id, hash) = b.channel().await.expect("the channel was created");
    assert_eq!(server.with_world(|w| w.channel_ids()), vec![id]);

    // A second client, opened on the channel by id, sees the same objects.
    let again = connect(&server, Target::Channel { id, access_hash: hash }).await;
    assert_eq!(again.list(ObjectKind::Snapshot).await.unwrap().len(), 20);
    assert!(again.create().await.is_err());
}

#[tokio::test]
async fn names_say_nothing_and_are_told_apart_once_the_names_arrive() {
    let server = Server::start().await.unwrap();
    let b = TelegramBackend::connect(session(&server), Target::NewChannel("opaque".into()), options(), public_names());
    conformance::run(&b, repo_names()).await.unwrap();
    b.put_head(Bytes::from_static(b"sealed head")).await.unwrap();
    let (id, hash) = b.channel().await.unwrap();
    // Someone else's files in the chat are ignored.
    server.with_world(|w| w.post_document(Where::Channel(id), "holiday.jpg", vec![1; 100]));
    server.with_world(|w| w.post_text(Where::Channel(id), "hello"));

    let docs = server.with_world(|w| w.documents(Where::Channel(id)));
    let ours: Vec<&(i32, String, usize)> = docs.iter().filter(|d| d.1 != "holiday.jpg").collect();
    assert_eq!(ours.len(), 20 + 1 + 1, "snapshots, config and head (the lock is empty: a text message)");
    for (_, name, _) in &ours {
        assert_eq!(name.len(), NAME_HEX_LEN, "{name}");
        assert!(!["tstor", "pack", "index", "snapshot", "head", "config", "key", "lock"]
            .iter()
            .any(|w| name.contains(w)));
    }

    // A client without the repository's names finds the config, and nothing it cannot name.
    let other = TelegramBackend::connect(
        session(&server),
        Target::Channel { id, access_hash: hash },
        options(),
        public_names(),
    );
    assert_eq!(other.list(ObjectKind::Config).await.unwrap().len(), 1);
    assert!(other.list(ObjectKind::Snapshot).await.unwrap().is_empty());
    // Given them, it tells every object and the head apart without reading the chat again.
    let pages = server.calls("messages.getHistory");
    other.use_object_names(repo_names()).await;
    assert_eq!(other.list(ObjectKind::Snapshot).await.unwrap().len(), 20);
    assert_eq!(other.heads(false).await.unwrap(), vec![Bytes::from_static(b"sealed head")]);
    assert!(server.calls("messages.getHistory") - pages <= 4, "no full scan");
    // The empty lock is a text message holding only its name (locks are never placed: a scan finds it).
    other.rescan().await.unwrap();
    assert_eq!(other.list(ObjectKind::Lock).await.unwrap().len(), 1);

    // Another repository's names stand for nothing here.
    let stranger = TelegramBackend::connect(
        session(&server),
        Target::Channel { id, access_hash: hash },
        options(),
        public_names(),
    );
    stranger.use_object_names(Arc::new(ObjectNameCodec::for_repository(&[1; 32]))).await;
    assert!(stranger.list(ObjectKind::Snapshot).await.unwrap().is_empty());
    assert_eq!(stranger.list(ObjectKind::Config).await.unwrap().len(), 1, "config names are public");
}

#[tokio::test]
async fn big_objects_and_ranges() {
    let server = Server::start().await.unwrap();
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, options(), public_names());
    b.create().await.unwrap();
    let big = data(BIG_FILE + 700 * 1024 + 5, 1);
    let id = Id([1; 32]);
    b.put(ObjectKind::Pack, &id, big.clone()).await.unwrap();
    assert_eq!(server.calls("upload.saveBigFilePart"), big.len().div_ceil(PART_SIZE));
    assert_eq!(b.get(ObjectKind::Pack, &id).await.unwrap(), big);
    for (offset, len) in [(0u64, 1u32), (1_048_000, 2000), (5_000_001, 700_000), (big.len() as u64 - 10, 10)] {
        let got = b.get_range(ObjectKind::Pack, &id, offset, len).await.unwrap();
        assert_eq!(got, big.slice(offset as usize..offset as usize + len as usize), "{offset}+{len}");
    }
    assert!(b.get_range(ObjectKind::Pack, &id, big.len() as u64 - 10, 11).await.is_err());
}

#[tokio::test]
async fn expired_file_references_are_refreshed() {
    let server = Server::start().await.unwrap();
    let b = connect(&server, Target::NewChannel("refs".into())).await;
    b.create().await.unwrap();
    let id = Id([2; 32]);
    let blob = data(300_000, 2);
    b.put(ObjectKind::Index, &id, blob.clone()).await.unwrap();
    server.with_world(|w| w.expire_file_references());
    assert_eq!(b.get(ObjectKind::Index, &id).await.unwrap(), blob);
}

#[tokio::test]
async fn a_message_deleted_elsewhere_is_not_found() {
    let server = Server::start().await.unwrap();
    let b = connect(&server, Target::NewChannel("gone".into())).await;
    b.create().await.unwrap();
    let id = Id([3; 32]);
    b.put(ObjectKind::Snapshot, &id, data(5000, 3)).await.unwrap();
    let (channel, _) = b.channel().await.unwrap();
    let msg = server.with_world(|w| w.message_ids(Where::Channel(channel)))[0];
    assert!(server.with_world(|w| w.delete_behind_the_back(Where::Channel(channel), msg)));
    server.with_world(|w| w.expire_file_references());
    assert!(b.get(ObjectKind::Snapshot, &id).await.unwrap_err().is_not_found());
    assert!(b.list(ObjectKind::Snapshot).await.unwrap().is_empty());
}

#[tokio::test]
async fn flood_waits_and_lost_answers_are_survived() {
    let server = Server::start().await.unwrap();
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, options(), public_names());
    b.create().await.unwrap();

    // Two flood waits in a row on one part, more than grammers' default policy takes.
    server.inject_after("upload.saveFilePart", 1, Fault::FloodWait(1), 2);
    // A dropped connection mid-upload.
    server.inject_after("upload.saveFilePart", 2, Fault::Drop, 1);
    // The document is stored but its answer is lost: the resend is a duplicate.
    server.inject("messages.sendMedia", Fault::LoseAnswer, 1);
    let id = Id([4; 32]);
    let blob = data(3 * PART_SIZE + 10, 4);
    let started = std::time::Instant::now();
    b.put(ObjectKind::Pack, &id, blob.clone()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "waited as long as Telegram asked");
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(server.with_world(|w| w.message_ids(Where::Saved)).len(), 1, "stored once");
    assert_eq!(b.get(ObjectKind::Pack, &id).await.unwrap(), blob);

    // A session Telegram no longer accepts is a permanent error naming the fix.
    server.inject("messages.getHistory", Fault::Error { code: 401, message: "AUTH_KEY_UNREGISTERED".into() }, 1);
    let err = b.list(ObjectKind::Pack).await.unwrap_err();
    assert!(err.to_string().contains("tstor login"), "{err}");
}

#[test]
fn targets_parse_and_print() {
    assert_eq!(Target::parse("me"), Ok(Target::SavedMessages));
    assert_eq!(Target::parse("@my_backups"), Ok(Target::Username("my_backups".into())));
    assert_eq!(Target::parse("-1001234567890"), Ok(Target::ChannelId(1234567890)));
    assert_eq!(Target::parse("new:\"My backups\""), Ok(Target::NewChannel("My backups".into())));
    assert_eq!(Target::parse("new:plain"), Ok(Target::NewChannel("plain".into())));
    for bad in ["", "you", "@", "@a b", "@1abc", "-100", "-100x", "-1001-2", "12345", "new:", "new:\"\""] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
    for t in [Target::SavedMessages, Target::Username("abcd".into()), Target::ChannelId(42)] {
        assert_eq!(Target::parse(&t.spec()), Ok(t));
    }
    assert_eq!(Target::Channel { id: 42, access_hash: 7 }.spec(), "-10042");
}

#[tokio::test]
async fn the_pinned_head_seeds_a_new_client() {
    let server = Server::start().await.unwrap();
    let b = connect(&server, Target::NewChannel("heads".into())).await;
    b.create().await.unwrap();
    for i in 0..30u8 {
        b.put(ObjectKind::Snapshot, &Id([i; 32]), data(2000 + i as usize, i)).await.unwrap();
    }
    b.put(ObjectKind::Lock, &Id([99; 32]), data(100, 9)).await.unwrap();
    // A busy chat: fifteen pages of history that are not tstor's.
    let (id, hash) = b.channel().await.unwrap();
    for i in 0..1500 {
        server.with_world(|w| w.post_text(Where::Channel(id), &format!("chatter {i}")));
    }
    b.put_head(Bytes::from_static(b"sealed head one")).await.unwrap();
    b.put_head(Bytes::from_static(b"sealed head two")).await.unwrap();
    let docs = server.with_world(|w| w.documents(Where::Channel(id)));
    let names = repo_names();
    let is_head = |name: &str| matches!(names.parse(name), Some(Named::Head(_)));
    assert_eq!(docs.iter().filter(|d| is_head(&d.1)).count(), 1, "the older head is removed");
    assert_eq!(server.with_world(|w| w.pinned_ids(Where::Channel(id))).len(), 1);
    // Something written after the head is found too.
    b.put(ObjectKind::Index, &Id([7; 32]), data(500, 7)).await.unwrap();

    let before = server.calls("messages.getHistory");
    let again = connect(&server, Target::Channel { id, access_hash: hash }).await;
    let heads = again.heads(false).await.unwrap();
    assert_eq!(heads, vec![Bytes::from_static(b"sealed head two")]);
    assert_eq!(again.list(ObjectKind::Snapshot).await.unwrap().len(), 30);
    assert_eq!(again.list(ObjectKind::Index).await.unwrap().len(), 1);
    assert_eq!(again.get(ObjectKind::Snapshot, &Id([5; 32])).await.unwrap(), data(2005, 5));
    let pages = server.calls("messages.getHistory") - before;
    // Each look at what is new reads a page and an empty one; a full scan would read 15.
    assert!(pages <= 6, "{pages} pages of history read: no full scan");
    // Hints fetched by id, many at once.
    assert!(server.calls("channels.getMessages") >= 1);

    // A message deleted behind the back: a hint that resolves to nothing is not-found.
    let victim = docs.iter().find(|d| d.1 == names.name(Named::Object(ObjectKind::Snapshot, Id([6; 32])))).unwrap().0;
    let third = connect(&server, Target::Channel { id, access_hash: hash }).await;
    assert!(server.with_world(|w| w.delete_behind_the_back(Where::Channel(id), victim)));
    assert!(third.get(ObjectKind::Snapshot, &Id([6; 32])).await.unwrap_err().is_not_found());
    // A rescan reads everything again.
    third.rescan().await.unwrap();
    assert_eq!(third.list(ObjectKind::Snapshot).await.unwrap().len(), 29);
}

#[tokio::test]
async fn floods_lower_the_parts_in_flight_and_calls_are_paced() {
    let server = Server::start().await.unwrap();
    let opts = Options { parts_in_flight: 8, calls_per_minute: 600, ..options() };
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, opts, public_names());
    b.create().await.unwrap();
    server.inject_after("upload.saveBigFilePart", 2, Fault::FloodWait(1), 2);
    let started = std::time::Instant::now();
    let big = data(BIG_FILE + 3 * PART_SIZE, 8);
    b.put(ObjectKind::Pack, &Id([8; 32]), big.clone()).await.unwrap();
    assert!(b.gate().floods() >= 2);
    assert!(b.gate().parts_limit() < 8, "parallelism lowered to {}", b.gate().parts_limit());
    // 24 parts at 10 calls per second, plus the waits.
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(b.get(ObjectKind::Pack, &Id([8; 32])).await.unwrap(), big);
}

#[tokio::test]
async fn a_missing_part_is_sent_again_alone() {
    let server = Server::start().await.unwrap();
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, options(), public_names());
    b.create().await.unwrap();
    // Telegram has lost the last part by the time the document is sent.
    server.inject("messages.sendMedia", Fault::PartMissing, 1);
    let id = Id([6; 32]);
    let blob = data(3 * PART_SIZE + 10, 6);
    let parts = blob.len().div_ceil(PART_SIZE);
    b.put(ObjectKind::Pack, &id, blob.clone()).await.unwrap();
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(server.calls("upload.saveFilePart"), parts + 1, "only the missing part goes again");
    assert_eq!(server.with_world(|w| w.message_ids(Where::Saved)).len(), 1, "stored once");
    assert_eq!(b.get(ObjectKind::Pack, &id).await.unwrap(), blob);
}

#[tokio::test]
async fn flood_waits_do_not_spend_the_attempts_meant_for_dropped_connections() {
    let server = Server::start().await.unwrap();
    let b = connect(&server, Target::SavedMessages).await;
    b.create().await.unwrap();
    let id = Id([9; 32]);
    let blob = data(100_000, 9);
    b.put(ObjectKind::Pack, &id, blob.clone()).await.unwrap();
    // One read, one request: five flood waits in a row, then its connection drops.
    server.inject("upload.getFile", Fault::FloodWait(1), 5);
    server.inject("upload.getFile", Fault::Drop, 1);
    assert_eq!(b.get(ObjectKind::Pack, &id).await.unwrap(), blob);
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(server.early_calls(), Vec::<&str>::new());
}

#[tokio::test]
async fn resends_after_a_dropped_connection_wait_for_a_known_flood_wait() {
    let server = Server::start().await.unwrap();
    // Resends after the back-off tstor uses by default, which is shorter than the flood wait.
    let opts = Options { retry_delay: Duration::from_millis(500), calls_per_minute: 0, ..options() };
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, opts, public_names());
    b.use_object_names(repo_names()).await;
    b.create().await.unwrap();
    let id = Id([10; 32]);
    let blob = data(4 * MAX_CHUNK, 10);
    b.put(ObjectKind::Pack, &id, blob.clone()).await.unwrap();
    // Four chunks in flight: the first is told to wait a second, the second
    // is slow, and the connection drops under the third and fourth.
    server.inject("upload.getFile", Fault::FloodWait(1), 1);
    server.inject("upload.getFile", Fault::Delay(Duration::from_millis(100)), 1);
    server.inject("upload.getFile", Fault::Drop, 1);
    assert_eq!(b.get(ObjectKind::Pack, &id).await.unwrap(), blob);
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(server.early_calls(), Vec::<&str>::new(), "requests sent while a known flood wait ran");
}

#[tokio::test]
async fn a_lost_send_answer_is_taken_as_sent_at_once() {
    let server = Server::start().await.unwrap();
    let b = connect(&server, Target::SavedMessages).await;
    b.create().await.unwrap();
    server.inject("messages.sendMedia", Fault::LoseAnswer, 1);
    let id = Id([11; 32]);
    b.put(ObjectKind::Pack, &id, data(20_000, 11)).await.unwrap();
    // The send and one resend, answered RANDOM_ID_DUPLICATE: no more.
    assert_eq!(server.calls("messages.sendMedia"), 2);
    assert_eq!(server.with_world(|w| w.message_ids(Where::Saved)).len(), 1, "stored once");
    assert_eq!(b.get(ObjectKind::Pack, &id).await.unwrap(), data(20_000, 11));
}

#[tokio::test]
async fn concurrent_reads_refresh_an_expired_reference_once() {
    let server = Server::start().await.unwrap();
    let b = Arc::new(connect(&server, Target::SavedMessages).await);
    b.create().await.unwrap();
    let id = Id([12; 32]);
    let blob = data(64 * 1024, 12);
    b.put(ObjectKind::Pack, &id, blob.clone()).await.unwrap();
    b.get(ObjectKind::Pack, &id).await.unwrap();
    let before = server.calls("messages.getMessages");
    // One rotation while sixteen reads are in flight.
    server.with_world(|w| w.expire_file_references());
    let reads: Vec<_> = (0..16u64)
        .map(|i| {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.get_range(ObjectKind::Pack, &id, i * 4096, 4096).await })
        })
        .collect();
    for (i, r) in reads.into_iter().enumerate() {
        assert_eq!(r.await.unwrap().unwrap(), blob.slice(i * 4096..(i + 1) * 4096));
    }
    assert_eq!(server.calls("messages.getMessages") - before, 1, "one refresh for one rotation");
}

/// A premium wait is a free account's pace, not a refusal: a part told to
/// wait more times than a request sits out flood waits still goes through.
#[tokio::test]
async fn premium_waits_pace_a_part_past_the_flood_wait_limit() {
    let server = Server::start().await.unwrap();
    let b = connect(&server, Target::SavedMessages).await;
    b.create().await.unwrap();
    server.inject("upload.saveFilePart", Fault::FloodPremiumWait(0), 70);
    let id = Id([7; 32]);
    let blob = data(1000, 7);
    b.put(ObjectKind::Pack, &id, blob.clone()).await.unwrap();
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(b.get(ObjectKind::Pack, &id).await.unwrap(), blob);
    // Flood waits keep their limit: a request never let through ends.
    server.inject("upload.saveFilePart", Fault::FloodWait(0), 70);
    assert!(b.put(ObjectKind::Pack, &Id([8; 32]), blob).await.is_err());
}

/// The first 4 KiB of a document.
fn first_chunk(doc: &catalog::DocRef) -> tl::functions::upload::GetFile {
    tl::functions::upload::GetFile {
        precise: false,
        cdn_supported: false,
        location: tl::types::InputDocumentFileLocation {
            id: doc.id,
            access_hash: doc.access_hash,
            file_reference: doc.file_reference.clone(),
            thumb_size: String::new(),
        }
        .into(),
        offset: 0,
        limit: 4096,
    }
}

/// A transfer connection dropped under a request: the request's resend is
/// handed to a connection that takes a while to open again (TCP, then
/// `initConnection`, slow here), and meanwhile the other transfer
/// connection is told to wait. grammers holds what it was handed until its
/// connection is up and writes it then, whatever the gate learnt in
/// between: the resend must pass the gate only once its connection is open.
#[tokio::test]
async fn a_resend_on_a_reopening_connection_waits_for_a_flood_wait_learnt_meanwhile() {
    let server = Server::start().await.unwrap();
    let opts =
        Options { retry_delay: Duration::from_millis(20), calls_per_minute: 0, transfer_connections: 2, ..options() };
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, opts, public_names());
    b.use_object_names(repo_names()).await;
    b.create().await.unwrap();
    let id = Id([13; 32]);
    b.put(ObjectKind::Pack, &id, data(20_000, 13)).await.unwrap();
    let doc = b.resolved(ObjectKind::Pack, &id).await.unwrap().unwrap().doc.unwrap();
    // Two leases held at once are two different connections; both opened.
    let (first, second) = (b.transfers.lease(), b.transfers.lease());
    for line in [&first, &second] {
        retry::invoke_retrying(line, &b.gate, b.budget(), || first_chunk(&doc)).await.unwrap();
    }
    // The first connection drops under its next request and opens again slowly.
    server.inject("upload.getFile", Fault::Drop, 1);
    server.inject("help.getConfig", Fault::Delay(Duration::from_millis(1500)), 1);
    let gate = Arc::clone(&b.gate);
    let budget = b.budget();
    let resent = tokio::spawn({
        let doc = doc.clone();
        async move { retry::invoke_retrying(&first, &gate, budget, || first_chunk(&doc)).await.map(drop) }
    });
    // While it opens, the second connection is told to wait three seconds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.inject("upload.getFile", Fault::FloodWait(3), 1);
    retry::invoke_retrying(&second, &b.gate, b.budget(), || first_chunk(&doc)).await.unwrap();
    resent.await.unwrap().unwrap();
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(server.early_calls(), Vec::<&str>::new(), "a resend went out during a known flood wait");
}

/// Opening a connection again makes an API call (`initConnection`), which
/// can itself be told to wait: the request waits it out like any flood
/// wait, and nothing goes out meanwhile.
#[tokio::test]
async fn a_flood_wait_while_a_dropped_connection_opens_is_waited_out() {
    let server = Server::start().await.unwrap();
    let opts =
        Options { retry_delay: Duration::from_millis(20), calls_per_minute: 0, transfer_connections: 1, ..options() };
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, opts, public_names());
    b.use_object_names(repo_names()).await;
    b.create().await.unwrap();
    let id = Id([14; 32]);
    b.put(ObjectKind::Pack, &id, data(20_000, 14)).await.unwrap();
    let doc = b.resolved(ObjectKind::Pack, &id).await.unwrap().unwrap().doc.unwrap();
    let line = b.transfers.lease();
    retry::invoke_retrying(&line, &b.gate, b.budget(), || first_chunk(&doc)).await.unwrap();
    server.inject("upload.getFile", Fault::Drop, 1);
    server.inject("help.getConfig", Fault::FloodWait(1), 1);
    retry::invoke_retrying(&line, &b.gate, b.budget(), || first_chunk(&doc)).await.unwrap();
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(b.gate.floods(), 1);
    assert_eq!(server.early_calls(), Vec::<&str>::new());
}

/// Parts queued on one connection behind other writes: grammers makes a
/// request's msg_id (its send time) only when it writes it, after every
/// request queued before it on that connection, one container at a time
/// (and a 512 KiB part is one container, gzipped first). A part handed over
/// while the gate was open could go out long after a flood wait for its
/// method was learnt (the seeded sweep found such early
/// `upload.saveBigFilePart` calls, and a premium-wait test early
/// `upload.saveFilePart` ones). Here the server stops reading one
/// connection for 1.5 s under its first part while the other connection's
/// first part is told to wait, with many parts in flight on each: nothing
/// may go out on either before the wait ends.
#[tokio::test]
async fn parts_never_wait_in_a_connection_queue_past_a_flood_wait() {
    let server = Server::start().await.unwrap();
    let opts = Options { calls_per_minute: 0, transfer_connections: 2, parts_in_flight: 64, ..options() };
    let b = TelegramBackend::connect(session(&server), Target::SavedMessages, opts, public_names());
    b.use_object_names(repo_names()).await;
    b.create().await.unwrap();
    let method = "upload.saveBigFilePart";
    server.inject(method, Fault::Delay(Duration::from_millis(1500)), 1);
    server.inject(method, Fault::FloodWait(3), 1);
    let id = Id([16; 32]);
    // Sealed bytes, as a pack is: gzip cannot shrink them.
    let mut blob = vec![0; 64 << 20];
    blake3::Hasher::new().update(b"parts").finalize_xof().fill(&mut blob);
    let blob = Bytes::from(blob);
    b.put(ObjectKind::Pack, &id, blob.clone()).await.unwrap();
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(server.early_calls(), Vec::<&str>::new(), "parts went out during a known flood wait");
    assert_eq!(b.get(ObjectKind::Pack, &id).await.unwrap(), blob);
}
