//! Telegram repositories under seeded random faults, end to end: `init` of
//! a new channel over a link that loses answers leaves exactly one channel;
//! a bounded slice of the seeded sweep (`cargo xtask telegram-sweep` runs
//! it for many seeds): snapshot, byte-identical restore and `check
//! --verify` with flood waits, dropped connections, missing parts and
//! expired file references all at once, and no request sent while its
//! method's flood wait ran; `stats` shows the chat's message count. The
//! seed of every server is printed, so that a failure can be replayed.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tstor::backend::telegram::TelegramSession;
use tstor_tgloop::{Config, Fault, Rates, Server, Where};

use crate::common::*;

/// The rates of the sweep: every fault at once.
pub const SWEEP_RATES: &str = "flood:0.1,drop:0.05,part-missing:0.05,file-reference:0.2";

/// A loopback server rolling its faults from a seed, a session for it, a tstor environment.
struct Seeded {
    server: Server,
    env: Env,
    session: PathBuf,
    repo: String,
    // Last: the server's tasks run on it until the end.
    _rt: tokio::runtime::Runtime,
}

impl Seeded {
    fn start(repo: &str, rates: &str, seed: u64) -> Seeded {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = Config::default().with_rates(Rates::parse(rates).unwrap()).with_seed(seed);
        let server = rt.block_on(Server::start_with(config)).unwrap();
        eprintln!("loopback server: faults {rates}, seed {}", server.seed());
        let env = Env::new();
        let session = env.path("telegram.session");
        let SocketAddr::V4(v4) = server.addr() else { panic!("loopback server listens on IPv4") };
        let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
        let v6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
        let mut s = TelegramSession::with_dc(server.dc_id(), v4, v6, server.auth_key());
        s.set_api_id(1).unwrap();
        s.save_to(&session).unwrap();
        Seeded { server, env, session, repo: repo.to_string(), _rt: rt }
    }

    fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("TSTOR_REPOSITORY", &self.repo)
            .env("TSTOR_TG_SESSION", &self.session)
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0")
            // Short back-offs: the test sits out flood waits, not idle pauses.
            .timeout(std::time::Duration::from_secs(300));
        c
    }

    /// Runs tstor; a failure names the seed to replay.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "tstor {args:?} failed ({:?}) with faults rolled from seed {}:\n{}",
            out.status.code(),
            self.server.seed(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn channels(&self) -> Vec<i64> {
        self.server.with_world(|w| w.channel_ids())
    }
}

/// Creates a repository in a new channel and returns the spec `init` printed.
fn init_new_channel(s: &Seeded) -> String {
    let out = s.ok(&["init"]);
    out.lines()
        .find_map(|l| l.strip_prefix("From now on use --repo "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("init printed no spec: {out}"))
        .to_string()
}

/// The repository in the one channel works: a snapshot, a byte-identical restore, a verified check.
fn assert_works(s: &Seeded, src: &Path) {
    s.ok(&["snapshot", src.to_str().unwrap()]);
    let out = s.env.path("out");
    s.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_same_tree(src, &out.join(src.file_name().unwrap()));
    s.ok(&["check", "--verify"]);
}

fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("docs")).unwrap();
    for i in 0..6u64 {
        fs::write(root.join(format!("docs/file{i}.txt")), random_bytes(3000 + i as usize * 700, i)).unwrap();
    }
    fs::write(root.join("big.bin"), random_bytes(3 << 20, 77)).unwrap();
}

#[test]
fn init_of_a_new_channel_whose_answer_is_lost_leaves_one_channel() {
    let mut s = Seeded::start("telegram:new:\"My backups\"", "", 1);
    // Someone's own channel of the same title is neither adopted nor touched.
    s.server.with_world(|w| w.create_channel("My backups", None)).unwrap();
    let theirs = s.channels()[0];
    // Telegram creates the channel twice and both answers are lost.
    s.server.inject("channels.createChannel", Fault::LoseAnswer, 2);
    let spec = init_new_channel(&s);
    let ours: Vec<i64> = s.channels().into_iter().filter(|c| *c != theirs).collect();
    assert_eq!(ours.len(), 1, "one channel made by init, not {ours:?}");
    assert_eq!(spec, format!("telegram:-100{}", ours[0]));
    assert_eq!(s.server.calls("channels.createChannel"), 1, "a lost answer is looked for, not resent");
    assert!(s.server.with_world(|w| w.message_ids(Where::Channel(theirs))).is_empty());
    s.repo = spec;
    let src = s.env.path("src");
    small_tree(&src);
    assert_works(&s, &src);
}

#[test]
fn init_over_a_link_losing_two_answers_in_five_leaves_one_channel() {
    // With seed 3 the first answer of `channels.createChannel` is lost.
    let seed = 3;
    let mut s = Seeded::start("telegram:new:backups", "lose:0.4", seed);
    let spec = init_new_channel(&s);
    assert_eq!(s.channels().len(), 1, "seed {seed}: channels {:?}", s.channels());
    s.server.set_rates(Rates::default());
    s.repo = spec;
    let src = s.env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), random_bytes(5000, 1)).unwrap();
    assert_works(&s, &src);
}

/// One seed of the sweep: every command of a round trip succeeds under all
/// the faults at once, the restore is byte-identical, and no request went
/// out while its method's flood wait ran (resends after a dropped
/// connection included).
fn sweep_one(seed: u64) {
    let s = Seeded::start("telegram:me", SWEEP_RATES, seed);
    s.ok(&["init"]);
    let src = s.env.path("src");
    small_tree(&src);
    assert_works(&s, &src);
    let early = s.server.early_calls();
    assert!(early.is_empty(), "seed {seed}: calls sent while their flood wait ran: {early:?}");
    assert!(s.server.traffic().flood_waits > 0, "seed {seed}: no flood wait was answered at all");
}

#[test]
fn a_seeded_round_trip_survives_every_fault_at_once() {
    sweep_one(20261203);
}

#[test]
fn stats_shows_the_message_count_of_the_chat() {
    let mut s = Seeded::start("telegram:new:counted", "", 5);
    s.repo = init_new_channel(&s);
    let src = s.env.path("src");
    small_tree(&src);
    s.ok(&["snapshot", src.to_str().unwrap()]);
    let channel = Where::Channel(s.channels()[0]);
    let in_chat = || {
        use tstor_tgloop::world::Paging;
        match s.server.with_world(|w| w.history(channel, Paging { limit: 1, ..Paging::default() })) {
            grammers_client::tl::enums::messages::Messages::ChannelMessages(m) => m.count as u64,
            other => panic!("a channel's history: {other:?}"),
        }
    };
    let stats: serde_json::Value = serde_json::from_str(&s.ok(&["--json", "stats"])).unwrap();
    assert_eq!(stats["stored_items"]["unit"], "messages");
    let count = stats["stored_items"]["count"].as_u64().unwrap();
    // Counted while `stats` held its lock, a message of its own.
    assert!(count == in_chat() || count == in_chat() + 1, "stats says {count}, the chat holds {}", in_chat());
    // Config, key, pack(s), index, snapshot and head documents, the head's pin and the creation message.
    let documents = s.server.with_world(|w| w.documents(channel)).len() as u64;
    assert!(documents >= 6 && count > documents, "{count} messages, {documents} documents");
    let text = s.ok(&["stats"]);
    assert!(text.contains(&format!("storage holds:      {count} messages")), "{text}");

    // A local repository counts its object files.
    let env = Env::new();
    env.init();
    let out = env.cmd().args(["--json", "stats"]).output().unwrap();
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["stored_items"]["unit"], "files");
    let mut files = 0;
    walk(&env.repo(), &mut |_, m| files += m.is_file() as u64);
    let count = stats["stored_items"]["count"].as_u64().unwrap();
    assert!(count == files || count == files + 1, "stats says {count}, the directory holds {files} files");
}
