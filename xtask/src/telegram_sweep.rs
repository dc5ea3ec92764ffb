//! `cargo xtask telegram-sweep`: tstor against the loopback Telegram server
//! with every random fault on at once (flood waits, dropped connections,
//! lost answers if asked, missing parts, expired file references), once per
//! seed: `init` of a new channel, `snapshot` of a generated tree, `restore`
//! compared byte for byte, `check --verify`; and no request sent while its
//! method's flood wait ran (`early_calls`). Each seed's faults are rolled
//! from that seed, so a failing seed is replayed with `--seeds` and
//! `--first-seed`. `cargo test` runs a one-seed slice of the same
//! (tests/integration/telegram_faults.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tstor_tgloop::{Rates, Server};

use crate::bench::{data, verify};

const USAGE: &str = "usage: cargo xtask telegram-sweep [--seeds N] [--first-seed S] [--faults SPEC] [--size SIZE] \
[--tstor PATH] [--dir DIR]

  --seeds N        how many seeds (default 10): S, S+1, ..., S+N-1
  --first-seed S   the first seed (default 1)
  --faults SPEC    the rates (default flood:0.1,drop:0.05,part-missing:0.05,file-reference:0.2)
  --size SIZE      the generated tree (default 16MiB)
  --tstor PATH     the tstor binary to run (default: built with `cargo build --release -p tstor`)
  --dir DIR        working directory (default target/telegram-sweep)";

const DEFAULT_RATES: &str = "flood:0.1,drop:0.05,part-missing:0.05,file-reference:0.2";
const PASSWORD: &str = "telegram sweep password";

struct Options {
    seeds: u64,
    first_seed: u64,
    rates: String,
    size: u64,
    tstor: Option<PathBuf>,
    dir: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut o =
        Options { seeds: 10, first_seed: 1, rates: DEFAULT_RATES.to_string(), size: 16 << 20, tstor: None, dir: None };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if matches!(flag.as_str(), "-h" | "--help") {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--seeds" => o.seeds = value.parse().with_context(|| format!("--seeds {value}"))?,
            "--first-seed" => o.first_seed = value.parse().with_context(|| format!("--first-seed {value}"))?,
            "--faults" => {
                Rates::parse(value).map_err(|e| anyhow!("--faults: {e}"))?;
                o.rates = value.clone();
            }
            "--size" => o.size = crate::bench::parse_size(value)?,
            "--tstor" => o.tstor = Some(PathBuf::from(value)),
            "--dir" => o.dir = Some(PathBuf::from(value)),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if o.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    Ok(Some(o))
}

/// What one seed did.
struct Outcome {
    seed: u64,
    failure: Option<String>,
    secs: f64,
    flood_waits: usize,
    early_calls: usize,
    calls: usize,
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(o) = parse(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let root = crate::bench::workspace_root();
    let dir = o.dir.clone().unwrap_or_else(|| root.join("target").join("telegram-sweep"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let bin = match &o.tstor {
        Some(p) => p.canonicalize().with_context(|| format!("--tstor {}", p.display()))?,
        None => crate::bench::build_tstor(&root)?,
    };
    let data_dir = dir.join("data");
    let plan = data::plan(o.size, 42);
    data::ensure(&data_dir, &dir.join("data.marker"), o.size, 42, &plan)?;
    println!(
        "sweep: {} seeds from {}, faults {}, tree {} files ({:.1} MiB), tstor {}",
        o.seeds,
        o.first_seed,
        o.rates,
        plan.files.len(),
        plan.total_bytes() as f64 / (1 << 20) as f64,
        bin.display()
    );
    let rates = Rates::parse(&o.rates).map_err(|e| anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut outcomes = Vec::new();
    for seed in o.first_seed..o.first_seed + o.seeds {
        let work = dir.join(format!("seed-{seed}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let started = Instant::now();
        let server = rt.block_on(crate::telegram::start(&crate::telegram::Args {
            listen: "127.0.0.1:0".parse()?,
            session_file: work.join("tg.session"),
            rates,
            premium_wait: None,
            upload_mib_per_s: None,
            download_mib_per_s: None,
            connection_mib_per_s: None,
            latency: Duration::ZERO,
            seed: Some(seed),
        }))?;
        let failure = run_seed(&bin, &work, &data_dir, &server).err().map(|e| format!("{e:#}"));
        let early = server.early_calls();
        let failure = failure
            .or_else(|| (!early.is_empty()).then(|| format!("calls sent while their flood wait ran: {early:?}")));
        let outcome = Outcome {
            seed,
            secs: started.elapsed().as_secs_f64(),
            flood_waits: server.traffic().flood_waits,
            early_calls: early.len(),
            calls: server.call_counts().iter().map(|(_, n)| n).sum(),
            failure,
        };
        println!(
            "seed {:>4}: {} in {:>6.1}s, {:>5} calls, {:>4} flood waits, {} early calls{}",
            outcome.seed,
            if outcome.failure.is_none() { "ok    " } else { "FAILED" },
            outcome.secs,
            outcome.calls,
            outcome.flood_waits,
            outcome.early_calls,
            outcome.failure.as_ref().map(|f| format!("\n    {f}")).unwrap_or_default()
        );
        if outcome.failure.is_none() {
            let _ = std::fs::remove_dir_all(&work);
        }
        outcomes.push(outcome);
        drop(server);
    }
    let failed: Vec<u64> = outcomes.iter().filter(|o| o.failure.is_some()).map(|o| o.seed).collect();
    if failed.is_empty() {
        println!("sweep: all {} seeds passed", outcomes.len());
        Ok(())
    } else {
        bail!(
            "seeds {failed:?} failed; replay one with `cargo xtask telegram-sweep --seeds 1 --first-seed SEED --faults {}` \
(its files are kept under {})",
            o.rates,
            dir.display()
        )
    }
}

/// init of a new channel, snapshot, restore compared byte for byte, check --verify.
fn run_seed(bin: &Path, work: &Path, data_dir: &Path, server: &Server) -> Result<()> {
    let tstor = |repo: &str, args: &[&str]| -> Result<String> {
        let out = Command::new(bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", work.join("home"))
            .env("TSTOR_REPOSITORY", repo)
            .env("TSTOR_TG_SESSION", work.join("tg.session"))
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0")
            .env("TSTOR_CACHE_DIR", work.join("cache"))
            .env("TSTOR_PASSWORD", PASSWORD)
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("tstor {} failed ({:?}): {}", args.join(" "), out.status.code(), stderr.trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let out = tstor("telegram:new:sweep", &["init"])?;
    let repo = out
        .lines()
        .find_map(|l| l.strip_prefix("From now on use --repo "))
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| anyhow!("init printed no spec: {out}"))?
        .to_string();
    let channels = server.with_world(|w| w.channel_ids());
    if channels.len() != 1 {
        bail!("init left {} channels", channels.len());
    }
    tstor(&repo, &["snapshot", data_dir.to_str().context("data path")?])?;
    let target = work.join("restore");
    tstor(&repo, &["restore", "latest", "--target", target.to_str().context("restore path")?])?;
    let name = data_dir.file_name().context("data dir name")?;
    let v = verify::compare(data_dir, &target.join(name))?;
    if v.mismatches() > 0 {
        bail!(
            "the restore differs: {} missing, {} differing, {} extra: {:?}",
            v.missing,
            v.differing,
            v.extra,
            v.examples
        );
    }
    tstor(&repo, &["check", "--verify"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let list = |l: &[&str]| parse(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = list(&["--seeds", "3", "--first-seed", "9", "--size", "4MiB"]).unwrap().unwrap();
        assert_eq!((o.seeds, o.first_seed, o.size), (3, 9, 4 << 20));
        assert_eq!(o.rates, DEFAULT_RATES);
        assert!(list(&["--help"]).unwrap().is_none());
        assert!(list(&["--seeds", "0"]).is_err());
        assert!(list(&["--faults", "bogus:1"]).is_err());
    }
}
