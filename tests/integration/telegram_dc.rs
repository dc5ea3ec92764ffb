//! A Telegram channel holding documents from two data centres, end to end:
//! two hosts whose sessions are homed on different DCs of the loopback
//! server snapshot into one channel repository, so each host's packs live on
//! its own DC. Either host restores the other's snapshot byte for byte and
//! `check --verify` passes; reads go to the document's DC directly (never
//! answered FILE_MIGRATE), copying the authorization there once per foreign
//! DC and run, and not again in later runs.

use std::fs;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use grammers_client::session::types::DcOption;
use grammers_client::session::{Session, SessionData};
use tstor::backend::telegram::TelegramSession;
use tstor_tgloop::{Fault, Server, Where};

use crate::common::*;

/// One machine: its own cache and session file, the shared channel.
struct Host {
    env: Env,
    session: PathBuf,
    repo: String,
}

impl Host {
    fn new(rt: &tokio::runtime::Runtime, data: SessionData, repo: &str) -> Host {
        let env = Env::new();
        let session = env.path("telegram.session");
        write_session(rt, &data, &session);
        Host { env, session, repo: repo.to_string() }
    }

    fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("TSTOR_REPOSITORY", &self.repo)
            .env("TSTOR_TG_SESSION", &self.session)
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0")
            .env("TSTOR_TG_PACK_MIB", "1")
            .timeout(std::time::Duration::from_secs(120));
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "tstor {args:?} failed ({:?}):\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Snapshots `src`; returns the snapshot's id.
    fn snapshot(&self, src: &Path) -> String {
        let out = self.cmd().args(["snapshot", "--json"]).arg(src).output().unwrap();
        assert!(out.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&out.stderr));
        let summary = summary_line(&out.stdout);
        summary["snapshot_id"].as_str().expect("a snapshot id").to_string()
    }

    fn restore(&self, id: &str, target: &Path) {
        let out = self.cmd().args(["restore", id, "--target"]).arg(target).output().unwrap();
        assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Writes a tstor session file holding every DC of `data` with its key.
fn write_session(rt: &tokio::runtime::Runtime, data: &SessionData, path: &Path) {
    let home = &data.dc_options[&data.home_dc];
    let mut session =
        TelegramSession::with_dc(data.home_dc, home.ipv4, home.ipv6, home.auth_key.expect("a seeded key"));
    session.set_api_id(1).unwrap();
    for option in data.dc_options.values().filter(|o| o.id != data.home_dc) {
        rt.block_on(session.set_dc_option(option)).unwrap();
    }
    session.save_to(path).unwrap();
}

/// The server's own session (homed on DC 2) with a key for DC 1 that is
/// not authorized yet, as a key exchange with DC 1 would leave it.
fn home_session(server: &Server) -> SessionData {
    let mut data = server.session_data();
    let SocketAddr::V4(ipv4) = server.addr_of(1).unwrap() else { panic!("loopback is IPv4") };
    let ipv6 = std::net::SocketAddrV6::new(ipv4.ip().to_ipv6_mapped(), ipv4.port(), 0, 0);
    let ipv4 = SocketAddrV4::new(*ipv4.ip(), ipv4.port());
    data.dc_options.insert(1, DcOption { id: 1, ipv4, ipv6, auth_key: Some(server.new_key_on(1)) });
    data
}

/// What one run cost on the server: imports per DC, exports per DC.
fn authorizations(server: &Server) -> [usize; 4] {
    [
        server.calls_on(1, "auth.importAuthorization"),
        server.calls_on(2, "auth.importAuthorization"),
        server.calls_on(1, "auth.exportAuthorization"),
        server.calls_on(2, "auth.exportAuthorization"),
    ]
}

fn delta(before: [usize; 4], after: [usize; 4]) -> [usize; 4] {
    std::array::from_fn(|i| after[i] - before[i])
}

fn make_tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..3 {
        fs::write(root.join(format!("sub/file{i}.bin")), random_bytes(700_000, seed + i)).unwrap();
    }
    fs::write(root.join("small.txt"), format!("host {seed}\n")).unwrap();
}

#[test]
fn a_channel_written_from_two_dcs_restores_from_either_host() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(Server::start()).unwrap();
    let (channel, _) = server.with_world(|w| w.create_channel("backups", None)).unwrap();
    let repo = format!("telegram:-100{channel}");
    let near = Host::new(&rt, home_session(&server), &repo);
    let far = Host::new(&rt, server.session_data_on(1), &repo);

    near.ok(&["init"]);
    let near_src = near.env.path("src");
    make_tree(&near_src, 1);
    let near_id = near.snapshot(&near_src);
    assert_eq!(authorizations(&server), [0; 4], "the home DC needs no copied authorization");

    // The far host's first run reads the config, key and head from DC 2
    // and uploads its packs to DC 1.
    let far_src = far.env.path("src");
    make_tree(&far_src, 100);
    let before = authorizations(&server);
    let far_id = far.snapshot(&far_src);
    assert_eq!(delta(before, authorizations(&server)), [0, 1, 1, 0], "one export at home, one import on DC 2");
    let dcs: Vec<i32> =
        server.with_world(|w| w.document_dcs(Where::Channel(channel))).into_iter().map(|d| d.1).collect();
    assert!(dcs.contains(&1) && dcs.contains(&2), "{dcs:?}");
    assert!(dcs.iter().filter(|&&dc| dc == 1).count() >= 3, "the far host's packs are on DC 1: {dcs:?}");

    // The near host restores the far host's snapshot from DC 1, through a
    // flood wait and expired file references there: one import for all
    // the reads in flight.
    server.inject_after("upload.getFile", 2, Fault::FloodWait(1), 1);
    server.inject_after("upload.getFile", 4, Fault::ExpireReferences, 1);
    let before = authorizations(&server);
    let dc1_reads = server.calls_on(1, "upload.getFile");
    let out = near.env.path("out-far");
    near.restore(&far_id, &out);
    assert_same_tree(&far_src, &out.join("src"));
    assert_eq!(delta(before, authorizations(&server)), [1, 0, 0, 1], "one export at home, one import on DC 1");
    assert!(server.calls_on(1, "upload.getFile") > dc1_reads);
    assert_eq!(server.pending_faults(), 0);

    // Later runs find the keys authorized: no more copies.
    let before = authorizations(&server);
    let out = far.env.path("out-near");
    far.restore(&near_id, &out);
    assert_same_tree(&near_src, &out.join("src"));
    near.ok(&["check", "--verify"]);
    assert_eq!(delta(before, authorizations(&server)), [0; 4]);
    assert_eq!(server.errors_answered("FILE_MIGRATE_"), 0, "reads went to the document's DC");
}
