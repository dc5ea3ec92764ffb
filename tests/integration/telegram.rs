//! Telegram repositories end to end: the `tstor` binary, through the real
//! grammers client, against the loopback MTProto server (`tstor-tgloop`)
//! running in the test. Round trips in Saved Messages and in a created
//! channel, opaque names and empty captions, an empty cache, a revoked
//! session, a deleted pack message, injected faults. A live test against
//! real Telegram runs only with TSTOR_TG_LIVE=1 and credentials.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use grammers_client::tl;
use tstor::backend::telegram::TelegramSession;
use tstor::backend::{Named, ObjectNames};
use tstor::crypto::names::ObjectNameCodec;
use tstor::crypto::RepoKeys;
use tstor::format::key::KeySlot;
use tstor::format::{Id, ObjectKind};
use tstor::repo::keys::open_slot;
use tstor_tgloop::world::Paging;
use tstor_tgloop::{Fault, Server, Where};

use crate::common::*;
use crate::roundtrip::make_full_tree;

/// A loopback server, a session file for it, and a tstor environment.
pub(crate) struct Tg {
    server: Server,
    pub(crate) env: Env,
    session: PathBuf,
    repo: String,
    /// The repository's object names, once worked out.
    names: OnceLock<ObjectNameCodec>,
    // Last: the server's tasks run on it until the end.
    _rt: tokio::runtime::Runtime,
}

impl Tg {
    pub(crate) fn start(repo: &str) -> Tg {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(Server::start()).unwrap();
        let env = Env::new();
        let session = env.path("telegram.session");
        let tg = Tg { server, env, session, repo: repo.to_string(), names: OnceLock::new(), _rt: rt };
        tg.write_session(&tg.session);
        tg
    }

    /// Writes a session file for the server: its address and auth key, no peers.
    fn write_session(&self, path: &Path) {
        let SocketAddr::V4(v4) = self.server.addr() else { panic!("loopback server listens on IPv4") };
        let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
        let v6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
        let mut s = TelegramSession::with_dc(self.server.dc_id(), v4, v6, self.server.auth_key());
        s.set_api_id(1).unwrap();
        s.save_to(path).unwrap();
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("TSTOR_REPOSITORY", &self.repo)
            .env("TSTOR_TG_SESSION", &self.session)
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0")
            .timeout(std::time::Duration::from_secs(300));
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tstor {args:?} failed ({:?}):\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn snapshot(&self, path: &Path) -> serde_json::Value {
        let out = self.cmd().args(["snapshot", "--json"]).arg(path).output().unwrap();
        assert!(out.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&out.stderr));
        summary_line(&out.stdout)
    }

    fn restore(&self, target: &Path) {
        let out = self.cmd().args(["restore", "latest", "--target"]).arg(target).output().unwrap();
        assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The chat the repository lives in.
    fn chat(&self) -> Where {
        match self.repo.strip_prefix("telegram:-100") {
            Some(id) => Where::Channel(id.parse().unwrap()),
            None => Where::Saved,
        }
    }

    /// Document messages of the repository's chat: id, name, size.
    fn documents(&self) -> Vec<(i32, String, usize)> {
        self.server.with_world(|w| w.documents(self.chat()))
    }

    /// The repository's object names, worked out as `Repository::open` does:
    /// key slots are found under the public names, and one opens with the
    /// password.
    fn names(&self) -> &ObjectNameCodec {
        self.names.get_or_init(|| {
            let public = ObjectNameCodec::public();
            for (msg, name, _) in self.documents() {
                let Some(Named::Object(ObjectKind::Key, id)) = public.parse(&name) else { continue };
                let bytes = self.server.with_world(|w| w.document_bytes(self.chat(), msg)).unwrap();
                let slot = KeySlot::decode(&bytes).unwrap();
                if let Ok(Some(payload)) = open_slot(PASSWORD.as_bytes(), &slot, &id) {
                    return RepoKeys::derive(&payload.master).object_names();
                }
            }
            panic!("no key slot in the chat opens with the password");
        })
    }

    /// The repository's documents: message id, what the name stands for, size.
    fn objects(&self) -> Vec<(i32, Named, usize)> {
        let names = self.names();
        self.documents().into_iter().filter_map(|(msg, name, size)| Some((msg, names.parse(&name)?, size))).collect()
    }

    /// The pack documents: message id, pack id, size.
    fn packs(&self) -> Vec<(i32, Id, usize)> {
        self.objects()
            .into_iter()
            .filter_map(|(msg, named, size)| match named {
                Named::Object(ObjectKind::Pack, id) => Some((msg, id, size)),
                _ => None,
            })
            .collect()
    }

    /// Asserts that no object is stored twice.
    fn assert_one_copy_each(&self) {
        let mut seen: HashMap<Named, usize> = HashMap::new();
        for (_, named, _) in self.objects() {
            *seen.entry(named).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(n, c)| **c > 1 && !matches!(n, Named::Head(_))).collect();
        assert!(twice.is_empty(), "objects stored more than once: {twice:?}");
        assert!(seen.keys().any(|n| matches!(n, Named::Object(ObjectKind::Pack, _))), "no packs at all");
    }

    /// Every message of the chat but service messages, newest first: its
    /// text (a caption, for a document), and for a document its file name
    /// and MIME type.
    fn messages(&self) -> Vec<(String, Option<(String, String)>)> {
        let mut out = Vec::new();
        let mut offset_id = 0;
        loop {
            let page = self
                .server
                .with_world(|w| w.history(self.chat(), Paging { offset_id, limit: 100, ..Paging::default() }));
            let messages = match page {
                tl::enums::messages::Messages::Messages(m) => m.messages,
                tl::enums::messages::Messages::Slice(m) => m.messages,
                tl::enums::messages::Messages::ChannelMessages(m) => m.messages,
                tl::enums::messages::Messages::NotModified(_) => Vec::new(),
            };
            let Some(lowest) = messages.iter().map(|m| m.id()).min() else { break };
            for m in messages {
                let tl::enums::Message::Message(m) = m else { continue };
                let document = match m.media {
                    Some(tl::enums::MessageMedia::Document(d)) => match d.document {
                        Some(tl::enums::Document::Document(d)) => {
                            let name = d.attributes.iter().find_map(|a| match a {
                                tl::enums::DocumentAttribute::Filename(f) => Some(f.file_name.clone()),
                                _ => None,
                            });
                            Some((name.unwrap_or_default(), d.mime_type))
                        }
                        _ => None,
                    },
                    _ => None,
                };
                out.push((m.message, document));
            }
            if offset_id != 0 && lowest >= offset_id {
                break;
            }
            offset_id = lowest;
        }
        out
    }
}

impl Tg {
    /// A server with a repository in a new channel, opened by its id from then on.
    fn with_channel() -> Tg {
        let mut tg = Tg::start("telegram:new:backups");
        tg.ok(&["init"]);
        let id = tg.server.with_world(|w| w.channel_ids())[0];
        tg.repo = format!("telegram:-100{id}");
        tg
    }
}

/// A tree with small and big files: a pack over 10 MiB takes the big-file upload path.
fn make_tree(root: &Path) {
    make_full_tree(root);
    fs::write(root.join("work/large.bin"), random_bytes(13 << 20, 9)).unwrap();
}

#[test]
fn saved_messages_round_trip() {
    let tg = Tg::start("telegram:me");
    tg.ok(&["init"]);
    let src = tg.env.path("src");
    make_tree(&src);
    let summary = tg.snapshot(&src.join("work"));
    assert!(summary["files_new"].as_u64().unwrap() >= 10);
    assert!(tg.server.calls("upload.saveBigFilePart") > 0, "a pack over 10 MiB uses big parts");

    let snaps: Vec<serde_json::Value> = serde_json::from_str(&tg.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 1);
    let out = tg.env.path("out");
    tg.restore(&out);
    assert_same_tree(&src, &out);
    tg.ok(&["check", "--verify"]);

    // A second snapshot of the same tree stores nothing new.
    let again = tg.snapshot(&src.join("work"));
    assert_eq!(again["files_unchanged"], summary["files_new"]);
    assert_eq!(again["bytes_added"].as_u64(), Some(0));
    tg.assert_one_copy_each();
    // Every document in the chat is one of the repository's, named so that only it can tell.
    assert_eq!(tg.objects().len(), tg.documents().len());
}

#[test]
fn names_and_captions_say_nothing() {
    let tg = Tg::with_channel();
    let src = tg.env.path("src");
    make_tree(&src);
    tg.snapshot(&src.join("work"));
    tg.ok(&["check"]);

    let words = ["tstor", "pack", "index", "snapshot", "head", "config", "key", "lock"];
    let mut name_lengths = HashSet::new();
    for (text, document) in tg.messages() {
        assert!(words.iter().all(|w| !text.to_lowercase().contains(w)), "a message says {text:?}");
        let Some((name, mime)) = document else { panic!("a text message {text:?}: no object is empty") };
        assert!(text.is_empty(), "a caption: {text:?}");
        assert_eq!(mime, "application/octet-stream");
        assert!(words.iter().all(|w| !name.to_lowercase().contains(w)), "a name says {name}");
        name_lengths.insert(name.len());
    }
    assert_eq!(name_lengths.len(), 1, "names of every kind have one length: {name_lengths:?}");

    // Yet the repository tells every kind apart, and the head is the pinned document.
    let objects = tg.objects();
    let kinds: HashSet<Option<ObjectKind>> = objects
        .iter()
        .map(|(_, named, _)| match named {
            Named::Object(kind, _) => Some(*kind),
            Named::Head(_) => None,
        })
        .collect();
    for kind in [ObjectKind::Config, ObjectKind::Key, ObjectKind::Pack, ObjectKind::Index, ObjectKind::Snapshot] {
        assert!(kinds.contains(&Some(kind)), "no {} object", kind.name());
    }
    let heads = tg.heads();
    assert_eq!(heads.len(), 1);
    assert_eq!(tg.pinned(), vec![heads[0].0]);
    // The head document's contents hold no readable word either.
    let bytes = tg.server.with_world(|w| w.document_bytes(tg.chat(), heads[0].0)).unwrap();
    let text = String::from_utf8_lossy(&bytes).to_lowercase();
    assert!(words.iter().all(|w| !text.contains(w)), "the head document says something");
}

#[test]
fn a_new_channel_prints_the_spec_to_use() {
    let mut tg = Tg::start("telegram:new:\"My backups\"");
    let out = tg.ok(&["init"]);
    let spec = out
        .lines()
        .find_map(|l| l.strip_prefix("From now on use --repo "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("init printed no spec: {out}"))
        .to_string();
    assert!(spec.starts_with("telegram:-100"), "{spec}");
    let channels = tg.server.with_world(|w| w.channel_ids());
    assert_eq!(spec, format!("telegram:-100{}", channels[0]));

    // `new:` once more would make another channel; the printed spec opens this one.
    tg.repo = spec;
    let src = tg.env.path("src");
    make_tree(&src);
    tg.snapshot(&src.join("work"));
    let out = tg.env.path("out");
    tg.restore(&out);
    assert_same_tree(&src, &out);
    tg.ok(&["check", "--verify"]);
    tg.assert_one_copy_each();
}

#[test]
fn a_missing_or_revoked_session_asks_for_login() {
    let tg = Tg::start("telegram:me");
    tg.ok(&["init"]);

    let out = tg.cmd().env("TSTOR_TG_SESSION", tg.env.path("nothing-here")).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tstor login"));

    let src = tg.env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"hello").unwrap();
    for method in ["messages.getHistory", "messages.search", "users.getUsers", "upload.saveFilePart"] {
        tg.server.inject(method, Fault::Error { code: 401, message: "AUTH_KEY_UNREGISTERED".into() }, 1000);
    }
    let out = tg.cmd().args(["snapshot"]).arg(&src).output().unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tstor login"));
}

/// A session revoked in the middle of a restore stops it with the login
/// exit code, not with per-file losses, and leaves no half-written file.
#[test]
fn a_session_revoked_during_a_restore_asks_for_login() {
    let tg = Tg::start("telegram:me");
    tg.ok(&["init"]);
    let src = tg.env.path("src");
    make_tree(&src);
    tg.snapshot(&src.join("work"));
    // A first restore counts the reads; the second is refused from half way,
    // which is among the file contents (they make up most of the reads).
    let before = tg.server.calls("upload.getFile");
    tg.restore(&tg.env.path("first"));
    let reads = tg.server.calls("upload.getFile") - before;
    assert!(reads >= 20, "the tree needs many reads, got {reads}");
    let revoked = Fault::Error { code: 401, message: "SESSION_REVOKED".into() };
    tg.server.inject_after("upload.getFile", reads / 2, revoked, 10_000);
    let out_dir = tg.env.path("out");
    let out = tg.cmd().args(["restore", "latest", "--target"]).arg(&out_dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(13), "{err}");
    assert!(err.contains("tstor login"), "{err}");
    assert!(!err.contains("data lost"), "a refused login is not data loss: {err}");
    // Whatever was written is complete: every restored file equals its source.
    for entry in walk_files(&out_dir) {
        let rel = entry.strip_prefix(&out_dir).unwrap();
        assert_eq!(fs::read(&entry).unwrap(), fs::read(src.join(rel)).unwrap(), "{}", rel.display());
    }
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return out };
    for e in entries {
        let path = e.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(walk_files(&path));
        } else if meta.is_file() {
            out.push(path);
        }
    }
    out
}

#[test]
fn restore_with_an_empty_cache_on_a_new_machine() {
    let tg = Tg::with_channel();
    let src = tg.env.path("src");
    make_tree(&src);
    tg.snapshot(&src.join("work"));

    // A new machine: no cache, and a session that knows nothing of the channel.
    fs::remove_dir_all(tg.env.cache()).unwrap();
    let fresh = tg.env.path("fresh.session");
    tg.write_session(&fresh);
    let out = tg.env.path("out");
    let o =
        tg.cmd().env("TSTOR_TG_SESSION", &fresh).args(["restore", "latest", "--target"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_tree(&src, &out);
}

#[test]
fn check_names_the_files_behind_a_deleted_pack_message() {
    let tg = Tg::with_channel();
    let src = tg.env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("docs/file{i}.bin")), random_bytes(300_000, i)).unwrap();
    }
    tg.snapshot(&src);
    tg.ok(&["check", "--verify"]);
    let short = tg.ok(&["snapshots", "--json"]);
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&short).unwrap();
    let short = snaps[0]["short_id"].as_str().unwrap().to_string();

    // Someone else deletes the data pack (the largest one) from the channel.
    let (msg, pack, _) = tg.packs().into_iter().max_by_key(|d| d.2).unwrap();
    assert!(tg.server.with_world(|w| w.delete_behind_the_back(tg.chat(), msg)));

    let out = tg.run(&["check", "--verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&pack.to_hex()), "{err}");
    for i in 0..4 {
        assert!(err.contains(&format!("damaged: {short}:src/docs/file{i}.bin")), "{err}");
    }
}

/// Injects faults before a snapshot and a restore; everything must come back
/// byte-identical, with one copy of each object in the chat.
fn survives(before_snapshot: impl Fn(&Server), before_restore: impl Fn(&Server)) -> Tg {
    let tg = Tg::start("telegram:me");
    tg.ok(&["init"]);
    let src = tg.env.path("src");
    make_tree(&src);
    before_snapshot(&tg.server);
    tg.snapshot(&src.join("work"));
    before_restore(&tg.server);
    let out = tg.env.path("out");
    tg.restore(&out);
    assert_same_tree(&src, &out);
    assert_eq!(tg.server.pending_faults(), 0, "every injected fault fired");
    tg.assert_one_copy_each();
    tg
}

fn floods(s: &Server) {
    s.inject_after("upload.saveBigFilePart", 3, Fault::FloodWait(1), 3);
    s.inject_after("upload.saveFilePart", 2, Fault::FloodWait(1), 1);
    s.inject("messages.sendMedia", Fault::FloodPremiumWait(1), 1);
    s.inject("messages.getHistory", Fault::FloodWait(1), 1);
}

fn drops(s: &Server) {
    s.inject_after("upload.saveBigFilePart", 5, Fault::Drop, 2);
    s.inject_after("upload.saveFilePart", 1, Fault::Drop, 1);
    s.inject_after("messages.sendMedia", 1, Fault::Drop, 1);
}

fn lost_answers(s: &Server) {
    s.inject_after("upload.saveBigFilePart", 7, Fault::LoseAnswer, 2);
    s.inject_after("messages.sendMedia", 1, Fault::LoseAnswer, 2);
}

fn parts_missing(s: &Server) {
    s.inject_after("messages.sendMedia", 2, Fault::Error { code: 400, message: "FILE_PART_0_MISSING".into() }, 1);
}

fn read_faults(s: &Server) {
    s.with_world(|w| w.expire_file_references());
    s.inject_after("upload.getFile", 3, Fault::Drop, 2);
    s.inject_after("upload.getFile", 10, Fault::FloodWait(1), 1);
}

fn nothing(_: &Server) {}

#[test]
fn flood_waits_alone() {
    let tg = survives(floods, nothing);
    assert!(tg.server.calls("upload.saveBigFilePart") > 3);
}

#[test]
fn dropped_connections_alone() {
    survives(drops, nothing);
}

#[test]
fn lost_answers_alone() {
    survives(lost_answers, nothing);
}

#[test]
fn missing_parts_alone() {
    survives(parts_missing, nothing);
}

#[test]
fn expired_references_and_read_faults_alone() {
    survives(nothing, read_faults);
}

#[test]
fn every_fault_together() {
    survives(
        |s| {
            floods(s);
            drops(s);
            lost_answers(s);
            parts_missing(s);
        },
        read_faults,
    );
}

impl Tg {
    /// The head documents in the chat: message id and name.
    fn heads(&self) -> Vec<(i32, String)> {
        let names = self.names();
        self.documents()
            .into_iter()
            .filter(|(_, n, _)| matches!(names.parse(n), Some(Named::Head(_))))
            .map(|(i, n, _)| (i, n))
            .collect()
    }

    fn pinned(&self) -> Vec<i32> {
        self.server.with_world(|w| w.pinned_ids(self.chat()))
    }
}

#[test]
fn the_pinned_head_spares_a_history_scan() {
    let tg = Tg::with_channel();
    // A busy chat: thousands of messages that are not tstor's (30 pages of history).
    for i in 0..3000 {
        tg.server.with_world(|w| w.post_text(tg.chat(), &format!("chatter {i}")));
    }
    let src = tg.env.path("src");
    make_tree(&src);
    tg.snapshot(&src.join("work"));
    let heads = tg.heads();
    assert_eq!(heads.len(), 1, "one head, the older ones removed");
    assert_eq!(tg.pinned(), vec![heads[0].0], "the head is pinned");

    // A new machine: no cache, a session that knows nothing; the head says where everything is.
    fs::remove_dir_all(tg.env.cache()).unwrap();
    let fresh = tg.env.path("fresh.session");
    tg.write_session(&fresh);
    let before = tg.server.calls("messages.getHistory");
    let out = tg.env.path("out");
    let o =
        tg.cmd().env("TSTOR_TG_SESSION", &fresh).args(["restore", "latest", "--target"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_tree(&src, &out);
    // Each listing reads the messages newer than the head (one page), never the 30 pages behind it.
    let pages = tg.server.calls("messages.getHistory") - before;
    assert!(pages < 20, "{pages} history pages read for a restore with a head");

    // Without the head the whole history is read, and it still works.
    assert!(tg.server.with_world(|w| w.delete_behind_the_back(tg.chat(), heads[0].0)));
    fs::remove_dir_all(tg.env.cache()).unwrap();
    let before = tg.server.calls("messages.getHistory");
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&tg.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 1);
    assert!(tg.server.calls("messages.getHistory") - before >= 30, "the whole history was read");
}

#[test]
fn an_unpinned_head_is_found_and_replaced() {
    let tg = Tg::with_channel();
    let src = tg.env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"first").unwrap();
    tg.snapshot(&src);
    let (head, _) = tg.heads()[0].clone();
    assert!(tg.server.with_world(|w| w.unpin_behind_the_back(tg.chat(), head)));
    assert!(tg.pinned().is_empty());

    // Found by a scan; the next change pins a new head and removes the old one.
    fs::remove_dir_all(tg.env.cache()).unwrap();
    fs::write(src.join("b.txt"), b"second").unwrap();
    tg.snapshot(&src);
    let heads = tg.heads();
    assert_eq!(heads.len(), 1);
    assert_ne!(heads[0].0, head);
    assert_eq!(tg.pinned(), vec![heads[0].0]);
}

#[test]
fn a_head_older_than_the_cache_saw_is_refused() {
    let tg = Tg::with_channel();
    let src = tg.env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"first").unwrap();
    tg.snapshot(&src);
    let (old_id, old_name) = tg.heads()[0].clone();
    let old_bytes = tg.server.with_world(|w| w.document_bytes(tg.chat(), old_id)).unwrap();
    fs::write(src.join("b.txt"), b"second").unwrap();
    tg.snapshot(&src);
    tg.ok(&["snapshots"]);

    // Someone with access to the channel puts the old head back in place of the new one.
    let (new_id, _) = tg.heads()[0].clone();
    tg.server.with_world(|w| {
        assert!(w.delete_behind_the_back(tg.chat(), new_id));
        let id = w.post_document(tg.chat(), &old_name, old_bytes);
        w.update_pinned(tg.chat(), id, false).unwrap();
    });
    let out = tg.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rolled back"), "{err}");

    // A machine that never saw the newer head accepts the old one.
    fs::remove_dir_all(tg.env.cache()).unwrap();
    tg.ok(&["snapshots"]);
}

#[test]
fn repair_index_rebuilds_from_the_packs_when_head_and_index_are_gone() {
    let tg = Tg::with_channel();
    let src = tg.env.path("src");
    make_tree(&src);
    tg.snapshot(&src.join("work"));
    // The head and every index object are deleted behind tstor's back.
    for (id, named, _) in tg.objects() {
        if matches!(named, Named::Head(_) | Named::Object(ObjectKind::Index, _)) {
            assert!(tg.server.with_world(|w| w.delete_behind_the_back(tg.chat(), id)));
        }
    }
    fs::remove_dir_all(tg.env.cache()).unwrap();
    assert_eq!(tg.run(&["check"]).status.code(), Some(1), "check sees the missing index");

    let out = tg.ok(&["repair", "index"]);
    assert!(out.contains("indexed"), "{out}");
    assert_eq!(tg.heads().len(), 1, "a new head");
    assert_eq!(tg.pinned().len(), 1);
    fs::remove_dir_all(tg.env.cache()).unwrap();
    tg.ok(&["check", "--verify"]);
    let restored = tg.env.path("out");
    tg.restore(&restored);
    assert_same_tree(&src, &restored);
}

#[test]
fn a_flood_wait_storm_still_completes() {
    let started = std::time::Instant::now();
    survives(
        |s| {
            s.inject("upload.saveBigFilePart", Fault::FloodWait(1), 6);
            s.inject_after("upload.saveFilePart", 1, Fault::FloodWait(1), 4);
            s.inject("messages.sendMedia", Fault::FloodWait(1), 2);
            s.inject_after("messages.getHistory", 1, Fault::FloodPremiumWait(1), 2);
        },
        |s| s.inject_after("upload.getFile", 2, Fault::FloodWait(1), 3),
    );
    // Every wait was sat out for as long as Telegram asked.
    assert!(started.elapsed() >= std::time::Duration::from_secs(6));
}

#[test]
fn a_flood_wait_beyond_the_budget_ends_the_run_and_the_next_reuses_its_uploads() {
    let tg = Tg::start("telegram:me");
    tg.ok(&["init"]);
    let src = tg.env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        fs::write(src.join(format!("f{i:02}.bin")), random_bytes(1 << 20, 100 + i)).unwrap();
    }
    // Small packs, so that several are confirmed before one is refused for an hour.
    let snapshot = || {
        let mut c = tg.cmd();
        c.env("TSTOR_TG_PACK_MIB", "1").env("TSTOR_TG_MAX_FLOOD_WAIT", "5");
        c
    };
    tg.server.inject_after("messages.sendMedia", 6, Fault::FloodWait(3600), 1);
    let started = std::time::Instant::now();
    let out = snapshot().arg("snapshot").arg(&src).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(120), "no hour-long wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLOOD_WAIT"), "{err}");
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&tg.ok(&["snapshots", "--json"])).unwrap();
    assert!(snaps.is_empty(), "nothing committed");
    let confirmed = tg.packs().len();
    assert!(confirmed >= 3, "{confirmed} packs confirmed before the refusal");

    // The next run, once the hour has passed, reuses every pack the first
    // one got confirmed.
    tg.server.end_flood_waits();
    let out = snapshot().args(["snapshot", "--json"]).arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = summary_line(&out.stdout);
    let (read, added) = (summary["bytes_read"].as_u64().unwrap(), summary["bytes_added"].as_u64().unwrap());
    assert_eq!(read, 12 << 20);
    assert!(added + (2 << 20) <= read, "only {} of {read} bytes reused", read - added);
    let restored = tg.env.path("out");
    tg.restore(&restored);
    assert_same_tree(&src, &restored.join("src"));
    tg.assert_one_copy_each();
}

/// Against real Telegram: only with TSTOR_TG_LIVE=1, a session from
/// `tstor login` in TSTOR_TG_SESSION and TSTOR_TG_API_ID. Makes a new
/// private channel (left in place, named in the output).
#[test]
fn live_telegram_round_trip() {
    let vars = ["TSTOR_TG_SESSION", "TSTOR_TG_API_ID"];
    let missing: Vec<_> = vars.iter().filter(|v| std::env::var_os(v).is_none_or(|x| x.is_empty())).collect();
    if std::env::var("TSTOR_TG_LIVE").as_deref() != Ok("1") || !missing.is_empty() {
        eprintln!(
            "skipped: the live Telegram test runs with TSTOR_TG_LIVE=1, TSTOR_TG_SESSION (from `tstor login`) \
             and TSTOR_TG_API_ID set"
        );
        return;
    }
    let env = Env::new();
    let cmd = |repo: &str| {
        let mut c = env.cmd();
        c.env("TSTOR_REPOSITORY", repo);
        for v in vars {
            c.env(v, std::env::var_os(v).unwrap());
        }
        c
    };
    let title = format!("tstor live test {}", std::process::id());
    let out = cmd(&format!("telegram:new:{title}")).args(["init", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let init: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let repo = init["repository"].as_str().unwrap().to_string();
    eprintln!("live test repository: {repo} (channel \"{title}\")");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small.txt"), b"hello from tstor").unwrap();
    fs::write(src.join("random.bin"), random_bytes(3 << 20, 5)).unwrap();
    cmd(&repo).arg("snapshot").arg(&src).assert().success();
    let out_dir = env.path("out");
    cmd(&repo).args(["restore", "latest", "--target"]).arg(&out_dir).assert().success();
    assert_same_tree(&src, &out_dir.join("src"));
    fs::remove_dir_all(env.cache()).ok();
    cmd(&repo).args(["check", "--verify"]).assert().success();
}

impl Tg {
    /// `tstor login` with the loopback server's API credentials and `answers` on stdin.
    fn login(&self, args: &[&str], answers: &str) -> std::process::Output {
        self.cmd()
            .env("TSTOR_TG_API_ID", "1")
            .env("TSTOR_TG_API_HASH", "0123456789abcdef")
            .arg("login")
            .args(args)
            .write_stdin(answers)
            .output()
            .unwrap()
    }
}

#[test]
fn login_with_code_password_or_bot_token_and_logout() {
    use std::os::unix::fs::PermissionsExt;
    let tg = Tg::start("telegram:me");
    let phone = tg.server.with_world(|w| {
        w.login.log_out();
        w.me.phone.clone()
    });
    // Not logged in: every command asks for a login.
    assert_eq!(tg.run(&["init"]).status.code(), Some(13));

    // A wrong code is refused and leaves nothing logged in.
    let out = tg.login(&["--phone", &phone], "99999\n");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tg.run(&["init"]).status.code(), Some(13));

    // Phone and code.
    let out = tg.login(&["--phone", &phone], "12345\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("logged in as Loopback (@tgloop_user)"));
    let mode = fs::metadata(&tg.session).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the session file is readable only by its owner");
    tg.ok(&["init"]);
    tg.ok(&["snapshots"]);
    let out = tg.login(&[], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("already logged in"), "{out:?}");

    // One process at a time uses a session.
    let held = TelegramSession::open(&tg.session).unwrap();
    let out = tg.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another tstor process"));
    drop(held);

    // Logout ends the session on the server and removes the file.
    tg.ok(&["logout"]);
    assert!(!tg.session.exists());
    assert!(!tg.server.with_world(|w| w.login.authorized));
    assert_eq!(tg.run(&["snapshots"]).status.code(), Some(13));

    // A two-step verification password, asked after the code (the key is kept from a seeded file).
    tg.write_session(&tg.session);
    tg.server.with_world(|w| {
        w.login.password = Some("correct horse".into());
        w.login.password_hint = Some("horse".into());
    });
    let out = tg.login(&["--phone", &phone], "12345\nwrong horse\n");
    assert_eq!(out.status.code(), Some(1));
    let out = tg.login(&["--phone", &phone], "12345\ncorrect horse\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint: horse"));
    tg.ok(&["snapshots"]);

    // A bot token.
    tg.server.with_world(|w| w.login.log_out());
    let token = tg.server.with_world(|w| w.login.bot_token.clone());
    assert_eq!(tg.login(&["--bot-token", "1:nope"], "").status.code(), Some(1));
    let out = tg.login(&["--json", "--bot-token", &token], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // --json: who logged in and where the session is, as one JSON object.
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(said["user"].as_str().is_some_and(|u| !u.is_empty()), "{said}");
    assert_eq!(said["session"], tg.session.to_str().unwrap(), "{said}");
    // A bot has no Saved Messages: it is told what to do instead (tests/integration/telegram_bot.rs).
    let out = tg.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a bot has no Saved Messages"));
}

#[test]
fn the_configuration_file_names_the_session() {
    let tg = Tg::start("telegram:me");
    tg.ok(&["init"]);
    // The session moves next to a configuration file that names it relatively.
    let dir = tg.env.path("conf");
    fs::create_dir_all(&dir).unwrap();
    fs::rename(&tg.session, dir.join("tg.session")).unwrap();
    let config = dir.join("config.toml");
    fs::write(&config, "repository = \"telegram:me\"\n\n[telegram]\nsession = \"tg.session\"\napi-id = \"1\"\n")
        .unwrap();
    let out =
        tg.env.cmd().env_remove("TSTOR_REPOSITORY").arg("--config").arg(&config).arg("snapshots").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without it, the default session path (under $HOME) holds nothing: log in first.
    let out = tg.env.cmd().env("TSTOR_REPOSITORY", "telegram:me").arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(13));
}

#[test]
fn every_core_command_works_on_a_channel() {
    let tg = Tg::with_channel();
    let src = tg.env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("docs/a.txt"), b"first version").unwrap();
    fs::write(src.join("big.bin"), random_bytes(3 << 20, 3)).unwrap();
    tg.snapshot(&src);
    fs::write(src.join("docs/a.txt"), b"second version").unwrap();
    fs::write(src.join("docs/b.txt"), b"new file").unwrap();
    fs::remove_file(src.join("big.bin")).unwrap();
    tg.snapshot(&src);
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&tg.ok(&["snapshots", "--json"])).unwrap();
    let (first, second) = (snaps[0]["short_id"].as_str().unwrap(), snaps[1]["short_id"].as_str().unwrap());

    assert!(tg.ok(&["ls", "latest"]).contains("docs/b.txt"));
    assert!(tg.ok(&["find", "b.txt"]).contains("b.txt"));
    let diff = tg.ok(&["diff", first, second]);
    assert!(diff.contains("+") && diff.contains("-"), "{diff}");
    tg.ok(&["stats"]);
    tg.ok(&["cat", "config"]);
    tg.ok(&["tag", "--add", "kept", second]);
    let out = tg.cmd().args(["key", "add"]).env("TSTOR_NEW_PASSWORD", "another password").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tg.ok(&["key", "list"]);
    tg.ok(&["unlock"]);

    // Forget the first snapshot and prune its data away.
    let packs_before = tg.packs().len();
    tg.ok(&["forget", "--keep-tag", "kept", "--prune"]);
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&tg.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 1);
    let packs_after = tg.packs().len();
    assert!(packs_after < packs_before + 1, "prune removed or repacked packs ({packs_before} → {packs_after})");
    tg.ok(&["prune"]);
    assert_eq!(tg.heads().len(), 1);
    fs::remove_dir_all(tg.env.cache()).unwrap();
    tg.ok(&["check", "--verify"]);
    let out = tg.env.path("out");
    tg.restore(&out);
    assert_same_tree(&src, &out.join("src"));
    let other = tg.cmd().env("TSTOR_PASSWORD", "another password").arg("snapshots").output().unwrap();
    assert!(other.status.success());
}
