//! Telegram repositories kept by a bot, end to end: the `tstor` binary
//! logged in with a bot token, against the loopback server, which refuses
//! bots what Telegram refuses them (`messages.getHistory`,
//! `messages.search`, `messages.getDialogs`, `channels.createChannel`,
//! Saved Messages) with `BOT_METHOD_INVALID`. The user creates the channel
//! and makes the bot an administrator through the API, as an app would;
//! the bot does the rest. Every test checks that the server refused
//! nothing and that restores are byte-identical.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use grammers_client::{tl, Client, SenderPool};
use tstor::backend::telegram::TelegramSession;
use tstor_tgloop::{Server, Where};

use crate::common::*;
use crate::roundtrip::make_full_tree;

/// Methods a bot must never call.
const REFUSED: [&str; 4] = ["messages.getHistory", "messages.search", "messages.getDialogs", "channels.createChannel"];

struct BotTg {
    server: Server,
    env: Env,
    session: PathBuf,
    repo: String,
    /// Calls of each refused method before the bot logged in (the user's).
    before_bot: [usize; REFUSED.len()],
    rt: tokio::runtime::Runtime,
}

impl BotTg {
    /// A server whose key is logged in as the user, with a session file for it.
    fn start() -> BotTg {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(Server::start()).unwrap();
        let env = Env::new();
        let session = env.path("telegram.session");
        let tg = BotTg { server, env, session, repo: "telegram:me".into(), before_bot: [0; REFUSED.len()], rt };
        tg.write_session(&tg.session);
        tg
    }

    /// A server with a channel the user created and made the bot an
    /// administrator of, a bot session, and a repository the bot made there.
    fn with_channel() -> BotTg {
        let mut tg = BotTg::start();
        let channel = tg.user_makes_a_channel_for_the_bot();
        tg.log_in_as_bot();
        tg.repo = format!("telegram:-100{channel}");
        tg.ok(&["init"]);
        tg
    }

    /// A session file for the server: its address and auth key, nothing else.
    fn write_session(&self, path: &Path) {
        let (v4, v6) = self.addrs();
        let mut s = TelegramSession::with_dc(self.server.dc_id(), v4, v6, self.server.auth_key());
        s.set_api_id(1).unwrap();
        s.save_to(path).unwrap();
    }

    fn addrs(&self) -> (SocketAddrV4, SocketAddrV6) {
        let SocketAddr::V4(v4) = self.server.addr() else { panic!("loopback server listens on IPv4") };
        let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
        (v4, SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
    }

    /// What the user does in an app: creates a broadcast channel, finds the
    /// bot by its name and makes it an administrator allowed to post, edit
    /// and delete. Returns the channel id.
    fn user_makes_a_channel_for_the_bot(&self) -> i64 {
        let (v4, v6) = self.addrs();
        let session = Arc::new(TelegramSession::with_dc(self.server.dc_id(), v4, v6, self.server.auth_key()));
        self.rt.block_on(async {
            let pool = SenderPool::new(session, 1);
            let client = Client::new(pool.handle);
            let runner = tokio::spawn(pool.runner.run());
            let created = client
                .invoke(&tl::functions::channels::CreateChannel {
                    broadcast: true,
                    megagroup: false,
                    for_import: false,
                    forum: false,
                    title: "Backups".into(),
                    about: String::new(),
                    geo_point: None,
                    address: None,
                    ttl_period: None,
                })
                .await
                .unwrap();
            let tl::enums::Updates::Updates(u) = created else { panic!("no channel in {created:?}") };
            let Some(tl::enums::Chat::Channel(channel)) = u.chats.first() else { panic!("no channel") };
            let (id, hash) = (channel.id, channel.access_hash.unwrap());
            let tl::enums::contacts::ResolvedPeer::Peer(bot) = client
                .invoke(&tl::functions::contacts::ResolveUsername { username: "tgloop_bot".into(), referer: None })
                .await
                .unwrap();
            let Some(tl::enums::User::User(bot)) = bot.users.first() else { panic!("no bot") };
            assert!(bot.bot);
            let rights = tl::types::ChatAdminRights {
                change_info: false,
                post_messages: true,
                edit_messages: true,
                delete_messages: true,
                ban_users: false,
                invite_users: false,
                pin_messages: true,
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
            client
                .invoke(&tl::functions::channels::EditAdmin {
                    channel: tl::types::InputChannel { channel_id: id, access_hash: hash }.into(),
                    user_id: tl::types::InputUser { user_id: bot.id, access_hash: bot.access_hash.unwrap() }.into(),
                    admin_rights: rights.into(),
                    rank: None,
                })
                .await
                .unwrap();
            client.disconnect();
            runner.abort();
            id
        })
    }

    /// `tstor login --bot-token`: the server's key is the bot's from now on.
    fn log_in_as_bot(&mut self) {
        self.before_bot = REFUSED.map(|m| self.server.calls(m));
        let token = self.server.with_world(|w| w.login.bot_token.clone());
        let out = self
            .cmd()
            .env("TSTOR_TG_API_ID", "1")
            .env("TSTOR_TG_API_HASH", "0123456789abcdef")
            .args(["login", "--force", "--bot-token", &token])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(self.server.with_world(|w| w.is_bot()));
    }

    fn cmd(&self) -> Command {
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

    fn restore_to(&self, target: &Path, session: &Path) {
        let out = self
            .cmd()
            .env("TSTOR_TG_SESSION", session)
            .args(["restore", "latest", "--target"])
            .arg(target)
            .output()
            .unwrap();
        assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn chat(&self) -> Where {
        Where::Channel(self.repo.strip_prefix("telegram:-100").unwrap().parse().unwrap())
    }

    /// The server refused nothing, and no method Telegram refuses bots was
    /// even tried.
    fn assert_nothing_refused(&self) {
        assert_eq!(self.server.bot_refusals(), Vec::<&str>::new(), "calls refused to the bot");
        for (method, before) in REFUSED.iter().zip(self.before_bot) {
            assert_eq!(self.server.calls(method), before, "{method} called by the bot");
        }
    }
}

fn make_tree(root: &Path) {
    make_full_tree(root);
    fs::write(root.join("work/big.bin"), random_bytes(3 << 20, 5)).unwrap();
}

#[test]
fn a_bot_backs_up_restores_checks_and_prunes_its_channel() {
    let tg = BotTg::with_channel();
    let src = tg.env.path("src");
    make_tree(&src);
    let work = src.join("work");
    tg.ok(&["snapshot", work.to_str().unwrap()]);
    fs::write(work.join("big.bin"), random_bytes(2 << 20, 6)).unwrap();
    fs::write(work.join("new.txt"), b"written after the first snapshot").unwrap();
    tg.ok(&["snapshot", work.to_str().unwrap()]);

    let out = tg.env.path("out");
    tg.restore_to(&out, &tg.session);
    assert_same_tree(&work, &out.join("work"));
    tg.ok(&["check", "--verify"]);

    tg.ok(&["forget", "--keep-last", "1", "--prune"]);
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&tg.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 1);
    tg.ok(&["check", "--verify"]);
    let again = tg.env.path("again");
    tg.restore_to(&again, &tg.session);
    assert_same_tree(&work, &again.join("work"));

    assert!(tg.server.calls("channels.getFullChannel") > 0, "the head is found through the channel");
    assert_eq!(tg.server.with_world(|w| w.pinned_ids(tg.chat())).len(), 1, "one pinned head");
    tg.assert_nothing_refused();
}

#[test]
fn a_bot_restores_from_an_empty_cache_and_without_a_pinned_head() {
    let tg = BotTg::with_channel();
    // A busy channel: 25 batches of ids before the repository's newest messages.
    for i in 0..2500 {
        tg.server.with_world(|w| w.post_text(tg.chat(), &format!("chatter {i}")));
    }
    let src = tg.env.path("src");
    make_tree(&src);
    let work = src.join("work");
    tg.ok(&["snapshot", work.to_str().unwrap()]);

    // A new machine: no cache, a session that only has the server's key
    // (it finds out it is a bot, and the channel's access hash, by asking).
    fs::remove_dir_all(tg.env.cache()).unwrap();
    let fresh = tg.env.path("fresh.session");
    tg.write_session(&fresh);
    let before = tg.server.calls("channels.getMessages");
    let out = tg.env.path("out");
    tg.restore_to(&out, &fresh);
    assert_same_tree(&work, &out.join("work"));
    let reads = tg.server.calls("channels.getMessages") - before;
    assert!(reads < 20, "{reads} reads by id: the pinned head spares reading the channel");
    assert!(TelegramSession::load(&fresh).unwrap().self_is_bot() == Some(true), "remembered in the session");

    // Unpinned (as another admin might): every id is read, and it still works.
    let pinned = tg.server.with_world(|w| w.pinned_ids(tg.chat()));
    assert_eq!(pinned.len(), 1);
    assert!(tg.server.with_world(|w| w.unpin_behind_the_back(tg.chat(), pinned[0])));
    fs::remove_dir_all(tg.env.cache()).unwrap();
    let before = tg.server.calls("channels.getMessages");
    let again = tg.env.path("again");
    tg.restore_to(&again, &tg.session);
    assert_same_tree(&work, &again.join("work"));
    let reads = tg.server.calls("channels.getMessages") - before;
    assert!(reads >= 25, "only {reads} reads by id: the channel was not read through");

    // The next change pins a head again.
    fs::write(work.join("later.txt"), b"later").unwrap();
    tg.ok(&["snapshot", work.to_str().unwrap()]);
    assert_eq!(tg.server.with_world(|w| w.pinned_ids(tg.chat())).len(), 1);
    tg.ok(&["check"]);
    tg.assert_nothing_refused();
}

#[test]
fn a_bot_is_told_how_to_set_up_its_channel() {
    let mut tg = BotTg::start();
    let elsewhere = tg.server.with_world(|w| w.create_channel("not the bot's", None).unwrap().0);
    tg.log_in_as_bot();
    let elsewhere = format!("telegram:-100{elsewhere}");
    let cases: [(&str, &[&str], &str); 5] = [
        ("telegram:me", &["init"], "no Saved Messages"),
        ("telegram:me", &["snapshots"], "no Saved Messages"),
        ("telegram:new:\"Backups\"", &["init"], "cannot create channels"),
        (&elsewhere, &["init"], "cannot reach channel"),
        (&elsewhere, &["snapshots"], "cannot reach channel"),
    ];
    for (repo, args, why) in cases {
        tg.repo = repo.to_string();
        {
            let out = tg.run(args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{repo} {args:?}: {err}");
            assert!(err.contains(why), "{repo} {args:?}: {err}");
            assert!(
                err.contains("administrator") && err.contains("telegram:-100<channel id>"),
                "{repo} {args:?} does not say what to do: {err}"
            );
        }
    }
    tg.assert_nothing_refused();
}
