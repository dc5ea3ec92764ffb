//! File transfers to and from a Telegram repository, end to end against
//! the loopback server: upload parts and downloaded chunks are spread over
//! several connections (Telegram serves each connection only so fast), and
//! a snapshot holds its packs in spill files, not in memory, while they
//! upload, so its peak memory stays far below the packs it has in flight.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use tstor::backend::telegram::TelegramSession;
use tstor_tgloop::{Config, ConnectionTraffic, Server};

use crate::common::*;

/// A loopback server with a session file for it, and a tstor environment.
struct Loop {
    server: Server,
    env: Env,
    session: PathBuf,
    // Last: the server's tasks run on it until the end.
    _rt: tokio::runtime::Runtime,
}

impl Loop {
    fn start(config: Config) -> Loop {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(Server::start_with(config)).unwrap();
        let env = Env::new();
        let session = env.path("telegram.session");
        let SocketAddr::V4(v4) = server.addr() else { panic!("loopback server listens on IPv4") };
        let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
        let v6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
        let mut s = TelegramSession::with_dc(server.dc_id(), v4, v6, server.auth_key());
        s.set_api_id(1).unwrap();
        s.save_to(&session).unwrap();
        Loop { server, env, session, _rt: rt }
    }

    fn cmd(&self) -> std::process::Command {
        let mut c = self.env.std_cmd();
        c.env("TSTOR_REPOSITORY", "telegram:me")
            .env("TSTOR_TG_SESSION", &self.session)
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0");
        c
    }

    fn ok(&self, args: &[&str]) {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "tstor {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Incompressible files of `file_mib` MiB each under `root`.
fn incompressible_tree(root: &Path, files: usize, file_mib: usize) {
    fs::create_dir_all(root).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut buf = vec![0u8; file_mib << 20];
    for i in 0..files {
        rng.fill_bytes(&mut buf);
        fs::write(root.join(format!("f{i:03}")), &buf).unwrap();
    }
}

/// Connections that carried upload parts, and those that carried chunks.
fn busy_connections(traffic: &[ConnectionTraffic]) -> (usize, usize) {
    (traffic.iter().filter(|c| c.parts > 0).count(), traffic.iter().filter(|c| c.chunks > 0).count())
}

#[test]
fn transfers_are_spread_over_several_connections() {
    // Each connection carries at most 16 MiB/s each way: one connection
    // could not use a faster link alone.
    let tg = Loop::start(Config { connection_bytes_per_sec: Some(16 << 20), ..Config::default() });
    let src = tg.env.path("src");
    incompressible_tree(&src, 3, 4);
    tg.ok(&["init"]);
    tg.ok(&["snapshot", src.to_str().unwrap()]);
    let after_snapshot = tg.server.connection_traffic();
    let (uploading, _) = busy_connections(&after_snapshot);
    assert!(uploading > 1, "upload parts went through {uploading} connection(s): {after_snapshot:?}");

    let target = tg.env.path("restore");
    tg.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &target.join("src"));
    let all = tg.server.connection_traffic();
    // Only the restore's connections: those opened after the snapshot.
    let (_, downloading) = busy_connections(&all[after_snapshot.len()..]);
    assert!(downloading > 1, "chunks went through {downloading} connection(s): {all:?}");
}

#[test]
fn a_snapshot_to_telegram_keeps_its_packs_out_of_memory() {
    // 256 MiB that neither compresses nor deduplicates: at the default 64
    // MiB packs, the ramp (16, 32, 64, 64, ...) reaches full packs, two
    // of which upload while the next fills.
    let tg = Loop::start(Config::default());
    let src = tg.env.path("src");
    incompressible_tree(&src, 16, 16);
    tg.ok(&["init"]);
    let mut cmd = tg.cmd();
    cmd.args(["snapshot", "--quiet", src.to_str().unwrap()]);
    let done = run_measured_cmd(&tg.env, cmd, false);
    let (peak_kib, stderr) = (done.peak_rss_kib, done.stderr);
    assert!(done.code == Some(0), "snapshot failed:\n{stderr}");
    let part_mib = tg.server.traffic().part_bytes >> 20;
    assert!(part_mib >= 256, "the whole tree was uploaded ({part_mib} MiB)");
    let peak_mib = peak_kib / 1024;
    eprintln!("snapshot of 256 MiB to Telegram: peak RSS {peak_mib} MiB");
    assert!(peak_mib <= 160, "a snapshot to Telegram peaked at {peak_mib} MiB of memory");
    // The spill files had no names: nothing is left in the cache directory.
    let mut spilled = Vec::new();
    walk(&tg.env.cache(), &mut |p, _| {
        if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".spill-")) {
            spilled.push(p.to_path_buf());
        }
    });
    assert!(spilled.is_empty(), "spill files left behind: {spilled:?}");
}
