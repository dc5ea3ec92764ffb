//! `cargo xtask bench telegram`: tstor against the loopback Telegram server
//! (`tstor-tgloop`) on a throttled link. Starts the server in this process
//! (upload bandwidth and a latency per call, optionally random faults),
//! initialises a repository in Saved Messages through the server's session,
//! snapshots the deterministic benchmark tree with a release build of tstor,
//! restores it and compares the restore byte for byte with the source.
//! Reports the bytes uploaded and the share of the link they used, the API
//! calls per GiB of source data by method, the time lost to flood waits (as
//! the server answered them and as tstor logged them at `-v`) and whether
//! the restore is identical. With `--copy`, also mirrors the repository
//! into a new channel with the same keys (`init --same-keys`, `copy`) and
//! reports what that took: bytes uploaded, API calls, wall time.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tstor_tgloop::{ConnectionTraffic, PremiumWait, Rates, Server, Traffic};

use super::json::Json;
use super::measure::{self, CmdSpec, Measurement, Method};
use super::verify::{self, Verification};
use super::{
    build_tstor, data, first_line_of, flag_value, mib, parse_size, remove_tree, split_flag, workspace_root, PASSWORD,
};

const USAGE: &str = "\
usage: cargo xtask bench telegram [--size SIZE] [--upload-mib-per-s N] [--download-mib-per-s N]
                                  [--connection-mib-per-s N] [--latency-ms N] [--faults SPEC]
                                  [--premium-wait SPEC] [--dir DIR] [--seed N] [--keep] [--copy]

  --size SIZE            size of the generated tree (default 1GiB, the tree of `cargo xtask bench`)
  --upload-mib-per-s N   upload bandwidth of the loopback server's link, MiB/s (default 20)
  --download-mib-per-s N download bandwidth of the link, MiB/s (default: as the upload)
  --connection-mib-per-s N  bandwidth of each connection, each way, MiB/s (default 8)
  --latency-ms N         added to every answer of the server (default 50)
  --faults SPEC          random faults, e.g. flood:0.05,drop:0.02,part-missing:0.02,file-reference:0.1
  --premium-wait SPEC    a free account's transfer budget (FLOOD_PREMIUM_WAIT_X once spent), e.g.
                         after=64MiB,rate=8MiB,window=2,jitter=0.2,seed=7
  --dir DIR              working directory (default target/bench/telegram)
  --seed N               seed of the generated data (default 42)
  --keep                 keep the cache and the restored tree afterwards
  --copy                 then copy the repository to a new channel with the same keys
                         (`init --same-keys`, `copy`): documents re-sent, not uploaded

TSTOR_TG_PARTS_IN_FLIGHT, TSTOR_TG_CALLS_PER_MINUTE, TSTOR_TG_PACK_MIB, TSTOR_TG_MAX_FLOOD_WAIT and
TSTOR_TG_TRANSFER_CONNECTIONS are passed on to tstor; TSTOR_BENCH_BIN=PATH runs that tstor instead of
building a release one.";

/// Methods shown in the table of API calls.
const TOP_METHODS: usize = 8;

/// Tuning variables passed on to tstor (and printed) when set.
const TUNING: [&str; 5] = [
    "TSTOR_TG_PARTS_IN_FLIGHT",
    "TSTOR_TG_CALLS_PER_MINUTE",
    "TSTOR_TG_PACK_MIB",
    "TSTOR_TG_MAX_FLOOD_WAIT",
    "TSTOR_TG_TRANSFER_CONNECTIONS",
];

const GIB: f64 = (1u64 << 30) as f64;

struct Options {
    size: u64,
    upload_mib_per_s: f64,
    download_mib_per_s: Option<f64>,
    connection_mib_per_s: f64,
    latency_ms: u64,
    faults: Option<String>,
    rates: Rates,
    premium: Option<String>,
    premium_wait: Option<PremiumWait>,
    dir: Option<PathBuf>,
    seed: u64,
    keep: bool,
    copy: bool,
}

fn parse_args(args: &[String]) -> Result<Option<Options>> {
    let mut o = Options {
        size: 1 << 30,
        upload_mib_per_s: 20.0,
        download_mib_per_s: None,
        connection_mib_per_s: 8.0,
        latency_ms: 50,
        faults: None,
        rates: Rates::default(),
        premium: None,
        premium_wait: None,
        dir: None,
        seed: 42,
        keep: false,
        copy: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = split_flag(a);
        let mut value = || flag_value(flag, &inline, &mut it);
        match flag {
            "--size" => o.size = parse_size(&value()?)?,
            "--upload-mib-per-s" => o.upload_mib_per_s = crate::telegram::parse_rate(flag, &value()?)?,
            "--download-mib-per-s" => o.download_mib_per_s = Some(crate::telegram::parse_rate(flag, &value()?)?),
            "--connection-mib-per-s" => o.connection_mib_per_s = crate::telegram::parse_rate(flag, &value()?)?,
            "--latency-ms" => o.latency_ms = value()?.parse().context("bad --latency-ms")?,
            "--faults" => {
                let spec = value()?;
                o.rates = Rates::parse(&spec).map_err(|e| anyhow!("--faults: {e}"))?;
                o.faults = Some(spec).filter(|s| !s.trim().is_empty());
            }
            "--premium-wait" => {
                let spec = value()?;
                o.premium_wait = Some(PremiumWait::parse(&spec).map_err(|e| anyhow!("--premium-wait: {e}"))?);
                o.premium = Some(spec);
            }
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            "--seed" => o.seed = value()?.parse().context("bad --seed")?,
            "--keep" => o.keep = true,
            "--copy" => o.copy = true,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if o.size < 1 << 20 {
        bail!("--size must be at least 1MiB");
    }
    Ok(Some(o))
}

impl Options {
    fn download_mib_per_s(&self) -> f64 {
        self.download_mib_per_s.unwrap_or(self.upload_mib_per_s)
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Calls per method made between two readings of the server's counters, most first.
fn calls_between(before: &[(&'static str, usize)], after: &[(&'static str, usize)]) -> Vec<(&'static str, usize)> {
    let mut v: Vec<_> = after
        .iter()
        .map(|(m, n)| (*m, n - before.iter().find(|(b, _)| b == m).map_or(0, |(_, k)| *k)))
        .filter(|(_, n)| *n > 0)
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

/// Connections that carried file bytes between two readings of the
/// server's per-connection counters.
fn transfer_connections(before: &[ConnectionTraffic], after: &[ConnectionTraffic]) -> usize {
    let moved = |c: &ConnectionTraffic| c.part_bytes + c.chunk_bytes;
    after.iter().enumerate().filter(|(i, c)| moved(c) > before.get(*i).map_or(0, moved)).count()
}

/// `text` without ANSI escape sequences (colours in tstor's log).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, then a final byte in @..=~.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Flood waits tstor reported at `-v` ("Telegram asked to slow down wait_s=N"):
/// how many, and their seconds summed.
fn logged_flood_waits(stderr: &str) -> (u64, u64) {
    strip_ansi(stderr).lines().filter(|l| l.contains("asked to slow down")).fold((0, 0), |(n, s), l| {
        let secs = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("wait_s="))
            .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u64>().ok())
            .unwrap_or(0);
        (n + 1, s + secs)
    })
}

/// The `key=value` fields of a log line, ANSI colours and quotes removed.
fn log_fields(line: &str) -> Vec<(&str, &str)> {
    line.split_whitespace().filter_map(|w| w.split_once('=')).map(|(k, v)| (k, v.trim_matches('"'))).collect()
}

/// The snapshot's `-v` progress lines: (seconds into the run, ETA in
/// seconds), and the run's length from the last line (`done=true`).
fn eta_samples(stderr: &str) -> (Vec<(f64, f64)>, Option<f64>) {
    let mut samples = Vec::new();
    let mut total = None;
    for line in strip_ansi(stderr).lines().filter(|l| l.contains("snapshot progress")) {
        let fields = log_fields(line);
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).and_then(|(_, v)| v.parse::<f64>().ok());
        let Some(elapsed) = get("elapsed_s") else { continue };
        if fields.iter().any(|(k, v)| *k == "done" && *v == "true") {
            total = Some(elapsed);
        } else if let Some(eta) = get("eta_s") {
            samples.push((elapsed, eta));
        }
    }
    (samples, total)
}

/// The ETA's error at each fraction of the run: the first estimate made
/// once that much of the run had passed, as (fraction, seconds into the
/// run, predicted total, error of the predicted total against the actual).
fn eta_errors(samples: &[(f64, f64)], total: Option<f64>) -> Vec<(f64, f64, f64, f64)> {
    let Some(total) = total.filter(|t| *t > 0.0) else { return Vec::new() };
    [0.25, 0.5, 0.75]
        .iter()
        .filter_map(|&f| {
            let &(at, eta) = samples.iter().find(|(t, _)| *t >= f * total)?;
            let predicted = at + eta;
            Some((f, at, predicted, predicted / total - 1.0))
        })
        .collect()
}

/// One measured tstor command with what the server saw meanwhile.
struct Phase {
    name: &'static str,
    m: Measurement,
    calls: Vec<(&'static str, usize)>,
    traffic: Traffic,
    /// Flood waits in tstor's own log: count and seconds.
    logged_floods: (u64, u64),
    /// The last line of the error, when the command failed.
    failed: Option<String>,
    /// Connections that carried file bytes (upload parts or downloaded chunks).
    transfer_connections: usize,
    /// The ETA's error at 25, 50 and 75% of the run (see [`eta_errors`]).
    eta: Vec<(f64, f64, f64, f64)>,
}

impl Phase {
    fn total_calls(&self) -> usize {
        self.calls.iter().map(|(_, n)| n).sum()
    }
}

struct Bench<'a> {
    method: &'a Method,
    server: &'a Server,
    scratch: &'a Path,
    phases: Vec<Phase>,
}

impl Bench<'_> {
    /// Runs one tstor command; a failed one is recorded too (wall time,
    /// calls, flood waits), with its error, and the error returned.
    fn run(&mut self, name: &'static str, spec: &CmdSpec) -> Result<()> {
        let calls = self.server.call_counts();
        let conns_before = self.server.connection_traffic();
        self.server.take_traffic();
        let _ = std::process::Command::new("sync").status();
        let start = Instant::now();
        let result = measure::run(self.method, spec, self.scratch).with_context(|| format!("tstor {name}"));
        let stderr = fs::read_to_string(self.scratch.join("stderr.txt")).unwrap_or_default();
        let (m, error) = match result {
            Ok(m) => (m, None),
            Err(e) => (Measurement { wall_s: start.elapsed().as_secs_f64(), ..Measurement::default() }, Some(e)),
        };
        let phase = Phase {
            name,
            calls: calls_between(&calls, &self.server.call_counts()),
            traffic: self.server.take_traffic(),
            transfer_connections: transfer_connections(&conns_before, &self.server.connection_traffic()),
            logged_floods: logged_flood_waits(&stderr),
            eta: {
                let (samples, total) = eta_samples(&stderr);
                eta_errors(&samples, total)
            },
            failed: error.as_ref().map(|e| {
                let text = strip_ansi(&format!("{e:#}"));
                let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                let summary = text.lines().map(str::trim).rfind(|l| l.starts_with("tstor:"));
                summary.or_else(|| lines.next_back()).unwrap_or("").to_string()
            }),
            m,
        };
        match &phase.failed {
            None => println!(
                "  {:<10} {:>8.2} s wall {:>7.2} s cpu {:>7.1} MiB RSS {:>7} API calls",
                name,
                phase.m.wall_s,
                phase.m.cpu_s(),
                phase.m.rss_mib(),
                phase.total_calls()
            ),
            Some(last) => println!(
                "  {:<10} {:>8.2} s wall, FAILED after {} API calls: {last}",
                name,
                phase.m.wall_s,
                phase.total_calls()
            ),
        }
        self.phases.push(phase);
        error.map_or(Ok(()), Err)
    }
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(o) = parse_args(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let root = workspace_root();
    let dir = match &o.dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => std::env::current_dir()?.join(d),
        None => root.join("target").join("bench").join("telegram"),
    };
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let scratch = dir.join("scratch");
    fs::create_dir_all(&scratch)?;
    let method = measure::detect(&scratch);

    // TSTOR_BENCH_BIN runs a tstor already built (e.g. a debug build, for
    // a quick look at pacing) instead of building a release one.
    let bin = match std::env::var_os("TSTOR_BENCH_BIN") {
        Some(b) => PathBuf::from(b),
        None => build_tstor(&root)?,
    };
    let version = first_line_of(&bin, &["--version"]);
    println!("tstor: {version} ({})", bin.display());

    let data_dir = dir.join("data");
    let marker = dir.join("data.marker");
    let plan = data::plan(o.size, o.seed);
    let data_bytes = plan.total_bytes();
    println!("data: {} ({} files, {:.1} MiB, seed {})", data_dir.display(), plan.files.len(), mib(data_bytes), o.seed);
    let start = Instant::now();
    if data::ensure(&data_dir, &marker, o.size, o.seed, &plan)? {
        println!("data: generated in {:.1}s", start.elapsed().as_secs_f64());
    } else {
        println!("data: reused (marker matches)");
    }

    let rate = o.upload_mib_per_s * 1024.0 * 1024.0;
    let down_rate = o.download_mib_per_s() * 1024.0 * 1024.0;
    let faults = o.faults.clone().unwrap_or_else(|| "none".to_string());
    let tuning: Vec<(&str, String)> = TUNING.iter().filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))).collect();
    println!(
        "link: {} MiB/s upload, {} MiB/s download, {} MiB/s per connection, {} ms per call; faults: {faults}; \
         tstor tuning: {}",
        o.upload_mib_per_s,
        o.download_mib_per_s(),
        o.connection_mib_per_s,
        o.latency_ms,
        if tuning.is_empty() {
            "defaults".to_string()
        } else {
            tuning.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        }
    );
    let load_before = loadavg();
    println!("load average before the run: {load_before} ({} cores)", std::thread::available_parallelism()?);

    // The server runs on this runtime's threads while tstor runs as a child.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let session_file = dir.join("tg.session");
    let server = rt.block_on(crate::telegram::start(&crate::telegram::Args {
        listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
        session_file: session_file.clone(),
        rates: o.rates,
        premium_wait: o.premium_wait,
        upload_mib_per_s: Some(o.upload_mib_per_s),
        download_mib_per_s: Some(o.download_mib_per_s()),
        connection_mib_per_s: Some(o.connection_mib_per_s),
        latency: Duration::from_millis(o.latency_ms),
        seed: None,
    }))?;
    println!("server: listening on {}", server.addr());

    let cache = dir.join("cache");
    let restore = dir.join("restore");
    remove_tree(&cache)?;
    remove_tree(&restore)?;
    fs::create_dir_all(&restore)?;
    let base = || {
        let mut c = CmdSpec::new(&bin);
        c.env.push(("TSTOR_PASSWORD".into(), PASSWORD.into()));
        c.env.push(("TSTOR_REPOSITORY".into(), "telegram:me".into()));
        c.env.push(("TSTOR_TG_SESSION".into(), session_file.clone().into()));
        c.env.push(("TSTOR_CACHE_DIR".into(), cache.clone().into()));
        c.env_remove = vec![
            "TSTOR_PASSWORD_FILE",
            "TSTOR_PASSWORD_COMMAND",
            "TSTOR_LOG",
            "TSTOR_TG_API_ID",
            "TSTOR_TG_API_HASH",
            "TSTOR_TG_BOT_TOKEN",
        ];
        c
    };

    let mut bench = Bench { method: &method, server: &server, scratch: &scratch, phases: Vec::new() };
    let mut outcome = bench
        .run("init", &base().arg("--quiet").arg("init"))
        .and_then(|()| bench.run("snapshot", &base().arg("-v").arg("--json").arg("snapshot").arg(&data_dir)));
    // The restore is compared with the source even when tstor reports
    // entries it could not restore.
    let mut verification = None;
    if outcome.is_ok() {
        let restored =
            bench.run("restore", &base().arg("-v").arg("restore").arg("latest").arg("--target").arg(&restore));
        match verify::compare(&data_dir, &restore.join(data_dir.file_name().unwrap_or_default())) {
            Ok(v) => verification = Some(v),
            Err(e) => outcome = Err(e),
        }
        outcome = outcome.and(restored);
    }
    if o.copy && outcome.is_ok() {
        // The mirror: a new channel with the source's keys, then the copy.
        let to = |spec: &str| {
            let mut c = base();
            c.env.push(("TSTOR_REPOSITORY".into(), spec.into()));
            c.env.push(("TSTOR_FROM_PASSWORD".into(), PASSWORD.into()));
            c
        };
        let mirror = ["--quiet", "init", "--same-keys", "--from-repo", "telegram:me"]
            .iter()
            .fold(to("telegram:new:mirror"), |c, a| c.arg(a));
        outcome = bench.run("mirror", &mirror).and_then(|()| {
            let channel = server.with_world(|w| w.channel_ids()).into_iter().next();
            let spec = format!("telegram:-100{}", channel.ok_or_else(|| anyhow!("init made no channel"))?);
            let copy = ["--json", "copy", "--from-repo", "telegram:me"].iter().fold(to(&spec), |c, a| c.arg(a));
            bench.run("copy", &copy)
        });
    }
    let load_after = loadavg();
    let phases = bench.phases;
    drop(server);
    drop(rt);

    let v = verification.as_ref();
    let rates = LinkRates { up: rate, down: down_rate };
    print_report(&o, &phases, data_bytes, rates, v, &load_before, &load_after);
    let json = to_json(&o, &version, &phases, data_bytes, rates, v, &load_before, &load_after, &outcome);
    let name = match (&o.faults, &o.premium) {
        (Some(_), _) => "bench-telegram-faults.json",
        (None, Some(_)) => "bench-telegram-premium.json",
        (None, None) => "bench-telegram.json",
    };
    let results = dir.join(name);
    fs::write(&results, json.pretty()).with_context(|| format!("cannot write {}", results.display()))?;
    println!("\nresults: {}", results.display());

    outcome.with_context(|| format!("the cache and logs are kept under {} for inspection", dir.display()))?;
    let v = verification.unwrap_or_default();
    if o.keep {
        println!("kept the cache and the restored tree under {}", dir.display());
    } else {
        remove_tree(&cache)?;
        remove_tree(&restore)?;
        remove_tree(&scratch)?;
    }
    if v.mismatches() > 0 {
        bail!("the restored tree differs from the source ({} mismatches)", v.mismatches());
    }
    Ok(())
}

/// The number after `"key":` in tstor's JSON output.
fn json_number(text: &str, key: &str) -> Option<u64> {
    let quoted = format!("\"{key}\"");
    let rest = &text[text.find(&quoted)? + quoted.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

/// The link's rate each way, bytes per second.
#[derive(Clone, Copy)]
struct LinkRates {
    up: f64,
    down: f64,
}

/// A restore's share of the download link over its wall time.
fn download_share(p: &Phase, rate: f64) -> f64 {
    p.traffic.chunk_bytes as f64 / (rate * p.m.wall_s)
}

/// The snapshot's upload figures: (share of the link over the wall time,
/// share over the window from the first to the last stored part).
fn shares(p: &Phase, rate: f64) -> (f64, Option<f64>) {
    let bytes = p.traffic.part_bytes as f64;
    let wall = bytes / (rate * p.m.wall_s);
    let window = match (p.traffic.first_part_at, p.traffic.last_part_at) {
        (Some(a), Some(b)) if b > a => Some(bytes / (rate * (b - a).as_secs_f64())),
        _ => None,
    };
    (wall, window)
}

fn print_calls(p: &Phase, data_bytes: u64) {
    let gib = data_bytes as f64 / GIB;
    println!("    {:<28} {:>8} {:>10}", "method", "calls", "per GiB");
    for (m, n) in p.calls.iter().take(TOP_METHODS) {
        println!("    {:<28} {:>8} {:>10.1}", m, n, *n as f64 / gib);
    }
    let rest: usize = p.calls.iter().skip(TOP_METHODS).map(|(_, n)| n).sum();
    if rest > 0 {
        println!("    {:<28} {:>8} {:>10.1}", "(others)", rest, rest as f64 / gib);
    }
    println!("    {:<28} {:>8} {:>10.1}", "total", p.total_calls(), p.total_calls() as f64 / gib);
}

fn print_report(
    o: &Options,
    phases: &[Phase],
    data_bytes: u64,
    rates: LinkRates,
    v: Option<&Verification>,
    load_before: &str,
    load_after: &str,
) {
    let rate = rates.up;
    let find = |n: &str| phases.iter().find(|p| p.name == n);
    println!(
        "\n== tstor on the loopback Telegram server: {:.1} MiB source, {} MiB/s link up, {} MiB/s down, \
         {} MiB/s per connection, {} ms per call, faults: {}",
        mib(data_bytes),
        o.upload_mib_per_s,
        o.download_mib_per_s(),
        o.connection_mib_per_s,
        o.latency_ms,
        o.faults.as_deref().unwrap_or("none")
    );
    if let Some(p) = &o.premium {
        println!("premium waits: {p}");
    }
    println!("load average: {load_before} before, {load_after} after");
    if let Some(s) = find("snapshot") {
        let (wall, window) = shares(s, rate);
        println!(
            "snapshot:       {:.2} s wall{}, {:.1} MiB uploaded in {} parts ({:.2} MiB/s)",
            s.m.wall_s,
            s.failed.as_ref().map_or(String::new(), |e| format!(" (FAILED: {e})")),
            mib(s.traffic.part_bytes),
            s.traffic.parts,
            mib(s.traffic.part_bytes) / s.m.wall_s
        );
        println!(
            "link share:     {:.1}% of {} MiB/s over the snapshot's wall time{}, {} connections carried parts",
            100.0 * wall,
            o.upload_mib_per_s,
            window.map_or(String::new(), |w| format!(" ({:.1}% between the first and the last part)", 100.0 * w)),
            s.transfer_connections
        );
        println!(
            "API calls:      {} for the snapshot, {:.1} per GiB of source",
            s.total_calls(),
            s.total_calls() as f64 * GIB / data_bytes as f64
        );
        print_calls(s, data_bytes);
        for (f, at, predicted, error) in &s.eta {
            println!(
                "ETA at {:>3.0}%:    {at:.1} s in, predicted {predicted:.1} s in all ({:+.1}% of the actual)",
                100.0 * f,
                100.0 * error
            );
        }
    }
    if let Some(r) = find("restore") {
        println!(
            "restore:        {:.2} s wall{}, {} API calls ({:.1} per GiB)",
            r.m.wall_s,
            r.failed.as_ref().map_or(String::new(), |e| format!(", FAILED: {e}")),
            r.total_calls(),
            r.total_calls() as f64 * GIB / data_bytes as f64
        );
        println!(
            "link share:     {:.1}% of {} MiB/s down over the restore's wall time ({:.1} MiB in {} chunks, \
             {:.2} MiB/s), {} connections carried chunks",
            100.0 * download_share(r, rates.down),
            o.download_mib_per_s(),
            mib(r.traffic.chunk_bytes),
            r.traffic.chunks,
            mib(r.traffic.chunk_bytes) / r.m.wall_s,
            r.transfer_connections
        );
        print_calls(r, data_bytes);
    }
    if let Some(c) = find("copy") {
        let field = |key: &str| json_number(&c.m.stdout, key).map_or("?".to_string(), |v| v.to_string());
        println!(
            "copy (same keys, Telegram to Telegram): {:.2} s wall{}, {} API calls; {} packs ({} re-sent) of \
             {:.1} MiB copied, {} pack bytes uploaded; {:.1} MiB of upload parts in all (index, snapshots, \
             locks, head)",
            c.m.wall_s,
            c.failed.as_ref().map_or(String::new(), |e| format!(" (FAILED: {e})")),
            c.total_calls(),
            field("packs_copied"),
            field("packs_resent"),
            json_number(&c.m.stdout, "bytes_copied").map_or(0.0, mib),
            field("bytes_uploaded"),
            mib(c.traffic.part_bytes),
        );
        print_calls(c, data_bytes);
    }
    let (n, secs, hold) = phases.iter().fold((0, 0, 0.0), |(n, s, h), p| {
        (n + p.traffic.flood_waits, s + p.traffic.flood_wait_secs, h + p.traffic.flood_hold_secs)
    });
    let (ln, lsecs) = phases.iter().fold((0, 0), |(n, s), p| (n + p.logged_floods.0, s + p.logged_floods.1));
    println!(
        "flood waits:    server answered {n} asking {secs} s in all, {hold:.1} s with a wait running; \
         tstor -v logged {ln} ({lsecs} s)"
    );
    match v {
        Some(v) => println!(
            "restore check:  {} ({} files, {:.1} MiB compared, {} missing, {} differing, {} extra)",
            if v.mismatches() == 0 { "byte-identical" } else { "DIFFERS" },
            v.files,
            mib(v.bytes),
            v.missing,
            v.differing,
            v.extra
        ),
        None => println!("restore check:  not reached"),
    }
    if let Some(v) = v {
        for e in &v.examples {
            println!("                {e}");
        }
    }
}

fn calls_json(p: &Phase) -> Json {
    Json::Obj(vec![
        ("total", Json::Int(p.total_calls() as u64)),
        (
            "by_method",
            Json::Arr(
                p.calls
                    .iter()
                    .map(|(m, n)| Json::Obj(vec![("method", Json::str(*m)), ("calls", Json::Int(*n as u64))]))
                    .collect(),
            ),
        ),
    ])
}

#[allow(clippy::too_many_arguments)]
fn to_json(
    o: &Options,
    version: &str,
    phases: &[Phase],
    data_bytes: u64,
    rates: LinkRates,
    v: Option<&Verification>,
    load_before: &str,
    load_after: &str,
    outcome: &Result<()>,
) -> Json {
    let phase_json = |p: &Phase| {
        let (wall_share, window_share) = shares(p, rates.up);
        Json::Obj(vec![
            ("step", Json::str(p.name)),
            ("failed", p.failed.as_deref().map_or(Json::Null, Json::str)),
            ("wall_s", Json::Num(p.m.wall_s)),
            ("cpu_s", Json::Num(p.m.cpu_s())),
            ("max_rss_kib", Json::Int(p.m.max_rss_kib)),
            ("part_bytes", Json::Int(p.traffic.part_bytes)),
            ("parts", Json::Int(p.traffic.parts as u64)),
            ("link_share", Json::Num(wall_share)),
            ("link_share_part_window", window_share.map_or(Json::Null, Json::Num)),
            ("chunk_bytes", Json::Int(p.traffic.chunk_bytes)),
            ("chunks", Json::Int(p.traffic.chunks as u64)),
            ("download_link_share", Json::Num(download_share(p, rates.down))),
            ("transfer_connections", Json::Int(p.transfer_connections as u64)),
            ("calls_per_gib", Json::Num(p.total_calls() as f64 * GIB / data_bytes as f64)),
            ("calls", calls_json(p)),
            ("flood_waits", Json::Int(p.traffic.flood_waits as u64)),
            ("flood_wait_secs", Json::Int(p.traffic.flood_wait_secs)),
            ("flood_hold_secs", Json::Num(p.traffic.flood_hold_secs)),
            ("logged_flood_waits", Json::Int(p.logged_floods.0)),
            ("logged_flood_wait_secs", Json::Int(p.logged_floods.1)),
            (
                "eta",
                Json::Arr(
                    p.eta
                        .iter()
                        .map(|(f, at, predicted, error)| {
                            Json::Obj(vec![
                                ("at_fraction", Json::Num(*f)),
                                ("at_s", Json::Num(*at)),
                                ("predicted_total_s", Json::Num(*predicted)),
                                ("error", Json::Num(*error)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ])
    };
    Json::Obj(vec![
        ("tstor", Json::str(version)),
        ("source_bytes", Json::Int(data_bytes)),
        ("size_target", Json::Int(o.size)),
        ("seed", Json::Int(o.seed)),
        ("upload_mib_per_s", Json::Num(o.upload_mib_per_s)),
        ("download_mib_per_s", Json::Num(o.download_mib_per_s())),
        ("connection_mib_per_s", Json::Num(o.connection_mib_per_s)),
        ("latency_ms", Json::Int(o.latency_ms)),
        ("faults", o.faults.as_deref().map_or(Json::Null, Json::str)),
        ("premium_wait", o.premium.as_deref().map_or(Json::Null, Json::str)),
        ("loadavg_before", Json::str(load_before)),
        ("loadavg_after", Json::str(load_after)),
        ("steps", Json::Arr(phases.iter().map(phase_json).collect())),
        ("restore_identical", v.map_or(Json::Null, |v| Json::Bool(v.mismatches() == 0))),
        ("error", outcome.as_ref().err().map_or(Json::Null, |e| Json::str(format!("{e:#}")))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_number_reads_a_field_of_pretty_json() {
        let text = "{\n  \"packs_copied\": 17,\n  \"packs_resent\": 16,\n  \"bytes_uploaded\": 0\n}";
        assert_eq!(json_number(text, "packs_copied"), Some(17));
        assert_eq!(json_number(text, "packs_resent"), Some(16));
        assert_eq!(json_number(text, "bytes_uploaded"), Some(0));
        assert_eq!(json_number(text, "missing"), None);
    }

    #[test]
    fn flags_parse() {
        let args = |l: &[&str]| parse_args(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = args(&[]).unwrap().unwrap();
        assert_eq!((o.size, o.upload_mib_per_s, o.latency_ms, o.faults.is_none()), (1 << 30, 20.0, 50, true));
        let o = args(&["--size=64MiB", "--faults", "flood:0.05,drop:0.02", "--latency-ms", "5"]).unwrap().unwrap();
        assert_eq!((o.size, o.rates.flood, o.latency_ms), (64 << 20, 0.05, 5));
        assert!(args(&["--faults", "bogus:1"]).is_err());
        assert!(args(&["--upload-mib-per-s", "0"]).is_err());
        let o = args(&["--upload-mib-per-s", "40", "--connection-mib-per-s", "8"]).unwrap().unwrap();
        assert_eq!((o.download_mib_per_s(), o.connection_mib_per_s), (40.0, 8.0));
        assert!(args(&["--connection-mib-per-s", "0"]).is_err());
        assert!(args(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn flood_waits_are_read_from_the_log() {
        let log = "2024 INFO tstor::backend::telegram::retry: Telegram asked to slow down wait_s=1 parts_in_flight=4\n\
                   other line\n\x1b[2mINFO\x1b[0m Telegram asked to slow down \x1b[3mwait_s\x1b[0m=3 parts_in_flight=2\n";
        assert_eq!(logged_flood_waits(log), (2, 4));
        assert_eq!(logged_flood_waits("nothing").0, 0);
    }

    #[test]
    fn eta_errors_are_read_from_the_progress_log() {
        let log = "INFO snapshot progress settled=10 total=100 elapsed_s=1.0 eta_s=50.0 done=false\n\
                   \x1b[2mINFO\x1b[0m snapshot progress settled=0 total=100 elapsed_s=2.0 done=false\n\
                   INFO snapshot progress settled=30 total=100 elapsed_s=3.0 eta_s=7.0 done=false\n\
                   INFO snapshot progress settled=60 total=100 elapsed_s=6.0 eta_s=5.0 done=false\n\
                   INFO snapshot progress settled=90 total=100 elapsed_s=9.0 eta_s=1.5 done=false\n\
                   INFO snapshot progress settled=100 total=100 elapsed_s=10.0 eta_s=0.0 done=true\n";
        let (samples, total) = eta_samples(log);
        assert_eq!(samples, vec![(1.0, 50.0), (3.0, 7.0), (6.0, 5.0), (9.0, 1.5)]);
        assert_eq!(total, Some(10.0));
        let errors = eta_errors(&samples, total);
        let rounded: Vec<_> = errors.iter().map(|(f, at, p, e)| (*f, *at, *p, (e * 100.0).round())).collect();
        assert_eq!(rounded, vec![(0.25, 3.0, 10.0, 0.0), (0.5, 6.0, 11.0, 10.0), (0.75, 9.0, 10.5, 5.0)]);
        assert!(eta_errors(&samples, None).is_empty());
    }

    #[test]
    fn calls_are_differenced() {
        let d = calls_between(&[("a", 2), ("b", 1)], &[("a", 5), ("b", 1), ("c", 4)]);
        assert_eq!(d, vec![("c", 4), ("a", 3)]);
    }
}
