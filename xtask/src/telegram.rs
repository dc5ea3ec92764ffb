//! `cargo xtask telegram-server`: the loopback Telegram server
//! (`tstor-tgloop`) as a program, for trying tstor's Telegram repositories
//! without an account. Writes a session file that tstor uses through
//! `TSTOR_TG_SESSION`, prints `listening on ADDR` when ready, and serves
//! until killed. The account lives in memory: it is gone when the server
//! stops.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tstor::backend::telegram::TelegramSession;
use tstor_tgloop::{Config, PremiumWait, Rates, Server};

const USAGE: &str = "usage: cargo xtask telegram-server --listen ADDR --session-file PATH \
[--faults SPEC] [--seed N] [--premium-wait SPEC] [--upload-mib-per-s N] [--download-mib-per-s N]
[--connection-mib-per-s N] [--latency-ms N]

  --listen ADDR          where to listen, e.g. 127.0.0.1:8443 (port 0: any free port)
  --session-file PATH    where to write a session for tstor (use it with TSTOR_TG_SESSION=PATH)
  --faults SPEC          random failures per call, e.g. flood:0.05,drop:0.02,lose:0.01,part-missing:0.02,file-reference:0.1
  --seed N               the seed the random failures are rolled from (default: random, printed)
  --premium-wait SPEC    a free account's transfer budget, answered with FLOOD_PREMIUM_WAIT_X once spent,
                         e.g. after=64MiB,rate=4MiB,window=2,jitter=0.2,seed=7
  --upload-mib-per-s N   upload bandwidth in MiB/s, across connections (default: unlimited)
  --download-mib-per-s N download bandwidth in MiB/s, across connections (default: unlimited)
  --connection-mib-per-s N  bandwidth of each connection, each way, in MiB/s (default: unlimited)
  --latency-ms N         added to every answer (default: 0)";

pub(crate) struct Args {
    pub(crate) listen: SocketAddr,
    pub(crate) session_file: PathBuf,
    pub(crate) rates: Rates,
    pub(crate) premium_wait: Option<PremiumWait>,
    pub(crate) upload_mib_per_s: Option<f64>,
    pub(crate) download_mib_per_s: Option<f64>,
    pub(crate) connection_mib_per_s: Option<f64>,
    pub(crate) latency: Duration,
    pub(crate) seed: Option<u64>,
}

/// A bandwidth flag's value: a positive number of MiB/s.
pub(crate) fn parse_rate(flag: &str, value: &str) -> Result<f64> {
    let v: f64 = value.parse().with_context(|| format!("{flag} {value}"))?;
    if !v.is_finite() || v <= 0.0 {
        bail!("{flag} must be positive");
    }
    Ok(v)
}

fn bytes_per_sec(mib_per_s: Option<f64>) -> Option<u64> {
    mib_per_s.map(|m| (m * 1024.0 * 1024.0) as u64)
}

fn parse(args: &[String]) -> Result<Option<Args>> {
    let mut listen = None;
    let mut session_file = None;
    let mut rates = Rates::default();
    let mut premium_wait = None;
    let mut upload_mib_per_s = None;
    let mut download_mib_per_s = None;
    let mut connection_mib_per_s = None;
    let mut latency = Duration::ZERO;
    let mut seed = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if matches!(flag.as_str(), "-h" | "--help") {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().with_context(|| format!("--listen {value}"))?),
            "--session-file" => session_file = Some(PathBuf::from(value)),
            "--faults" => rates = Rates::parse(value).map_err(|e| anyhow!("--faults: {e}"))?,
            "--seed" => seed = Some(value.parse().with_context(|| format!("--seed {value}"))?),
            "--upload-mib-per-s" => upload_mib_per_s = Some(parse_rate(flag, value)?),
            "--download-mib-per-s" => download_mib_per_s = Some(parse_rate(flag, value)?),
            "--connection-mib-per-s" => connection_mib_per_s = Some(parse_rate(flag, value)?),
            "--premium-wait" => {
                premium_wait = Some(PremiumWait::parse(value).map_err(|e| anyhow!("--premium-wait: {e}"))?)
            }
            "--latency-ms" => {
                latency = Duration::from_millis(value.parse().with_context(|| format!("--latency-ms {value}"))?)
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let listen = listen.ok_or_else(|| anyhow!("--listen is required\n{USAGE}"))?;
    let session_file = session_file.ok_or_else(|| anyhow!("--session-file is required\n{USAGE}"))?;
    Ok(Some(Args {
        listen,
        session_file,
        rates,
        premium_wait,
        upload_mib_per_s,
        download_mib_per_s,
        connection_mib_per_s,
        latency,
        seed,
    }))
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(args) = parse(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let server = start(&args).await?;
    println!("listening on {}", server.addr());
    eprintln!(
        "faults rolled from seed {seed}\nsession written to {path}; try:\n  TSTOR_TG_SESSION={path} TSTOR_REPOSITORY=telegram:me tstor init",
        path = args.session_file.display(),
        seed = server.seed()
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    drop(server);
    Ok(())
}

/// Starts the server and writes the session file for it.
pub(crate) async fn start(args: &Args) -> Result<Server> {
    let config = Config {
        listen: args.listen,
        rates: args.rates,
        premium_wait: args.premium_wait,
        latency: args.latency,
        upload_bytes_per_sec: bytes_per_sec(args.upload_mib_per_s),
        download_bytes_per_sec: bytes_per_sec(args.download_mib_per_s),
        connection_bytes_per_sec: bytes_per_sec(args.connection_mib_per_s),
        seed: args.seed,
        ..Config::default()
    };
    let server = Server::start_with(config).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = server.addr();
    let (v4, v6) = match addr {
        SocketAddr::V4(a) => (a, SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0)),
        SocketAddr::V6(a) => (SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, a.port()), a),
    };
    let mut session = TelegramSession::with_dc(server.dc_id(), v4, v6, server.auth_key());
    session.set_api_id(1)?;
    session.save_to(&args.session_file).with_context(|| format!("cannot write {}", args.session_file.display()))?;
    Ok(server)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tstor::backend::telegram::{Options, Target, TelegramBackend};
    use tstor::backend::Backend;
    use tstor::crypto::names::ObjectNameCodec;
    use tstor::format::{Id, ObjectKind};

    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>> {
        parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_parse() {
        let a = args(&[
            "--listen",
            "127.0.0.1:0",
            "--session-file",
            "/tmp/s",
            "--faults",
            "flood:0.5",
            "--latency-ms",
            "7",
            "--seed",
            "42",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.rates.flood, 0.5);
        assert_eq!(a.latency, Duration::from_millis(7));
        assert_eq!(a.seed, Some(42));
        assert!(args(&["--help"]).unwrap().is_none());
        assert!(args(&["--listen", "127.0.0.1:0"]).is_err(), "the session file is required");
        assert!(args(&["--listen", "x", "--session-file", "/tmp/s"]).is_err());
        assert!(args(&["--listen", "127.0.0.1:0", "--session-file", "/tmp/s", "--faults", "bogus:1"]).is_err());
        assert!(args(&["--listen", "127.0.0.1:0", "--session-file", "/tmp/s", "--upload-mib-per-s", "0"]).is_err());
        let a = args(&["--listen", "127.0.0.1:0", "--session-file", "/tmp/s", "--connection-mib-per-s", "8"]);
        assert_eq!(a.unwrap().unwrap().connection_mib_per_s, Some(8.0));
        assert!(args(&["--listen", "127.0.0.1:0", "--session-file", "/tmp/s", "--download-mib-per-s", "-1"]).is_err());
        let premium = args(&["--listen", "127.0.0.1:0", "--session-file", "/tmp/s", "--premium-wait", "rate=1MiB"]);
        assert_eq!(premium.unwrap().unwrap().premium_wait.map(|p| p.bytes_per_sec), Some(1 << 20));
        assert!(args(&["--listen", "127.0.0.1:0", "--session-file", "/tmp/s", "--premium-wait", "rate=x"]).is_err());
    }

    #[tokio::test]
    async fn the_session_file_opens_a_repository() {
        let dir = std::env::temp_dir().join(format!("xtask-tg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("session.json");
        let a = args(&["--listen", "127.0.0.1:0", "--session-file", path.to_str().unwrap()]).unwrap().unwrap();
        let _server = start(&a).await.unwrap();
        let session = Arc::new(TelegramSession::open(&path).unwrap());
        let options = Options { api_id: session.api_id().unwrap(), calls_per_minute: 0, ..Options::default() };
        let b = TelegramBackend::connect(session, Target::SavedMessages, options, Arc::new(ObjectNameCodec::public()));
        b.create().await.unwrap();
        b.put(ObjectKind::Snapshot, &Id([1; 32]), bytes::Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(&b.get(ObjectKind::Snapshot, &Id([1; 32])).await.unwrap()[..], b"hello");
        std::fs::remove_dir_all(&dir).ok();
    }
}
