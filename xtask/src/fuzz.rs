//! `cargo xtask fuzz`: runs every cargo-fuzz target under `fuzz/` for a
//! given time each, then the model-based fault test of the integration suite
//! (`tests/integration/model.rs`) from random seeds for about as long, and
//! reports how each went. Installs cargo-fuzz from crates.io when it is
//! missing (or, with `--no-install`, says how to).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

const USAGE: &str = "usage: cargo xtask fuzz [--secs N] [--target NAME]... [--no-install]

  --secs N        seconds for each fuzz target, and about as long for the model test (default: 60)
  --target NAME   run only this fuzz target (repeatable); `model` names the model test
  --no-install    if cargo-fuzz is missing, say how to install it instead of installing it

Fuzz targets run as `RUSTC_BOOTSTRAP=1 cargo fuzz run NAME -- -max_total_time=N`; what
they find lands in fuzz/artifacts/NAME. The model test runs with TSTOR_MODEL_SEED=random
and prints the seed of any failure.";

/// The name `--target` gives the model test.
const MODEL: &str = "model";
/// Cases per batch and steps per case of the long model run (cargo test runs fewer).
const MODEL_CASES: u32 = 16;
const MODEL_STEPS: u32 = 24;

#[derive(Debug, PartialEq)]
pub(crate) struct Args {
    pub(crate) secs: u64,
    /// Targets to run (fuzz targets and `model`); empty: all.
    pub(crate) only: Vec<String>,
    pub(crate) install: bool,
}

pub(crate) fn parse(args: &[String]) -> Result<Option<Args>> {
    let mut parsed = Args { secs: 60, only: Vec::new(), install: true };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--no-install" => parsed.install = false,
            "--secs" | "--target" => {
                let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
                if flag == "--secs" {
                    parsed.secs =
                        value.parse().with_context(|| format!("--secs {value} is not a number of seconds"))?;
                    if parsed.secs == 0 {
                        bail!("--secs must be at least 1");
                    }
                } else {
                    parsed.only.push(value.clone());
                }
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    Ok(Some(parsed))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The fuzz targets: one source file each in `fuzz/fuzz_targets/`.
fn fuzz_targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("fuzz/fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Which of `available` fuzz targets to run, and whether to run the model test.
pub(crate) fn select(available: &[String], only: &[String]) -> Result<(Vec<String>, bool)> {
    if only.is_empty() {
        return Ok((available.to_vec(), true));
    }
    for name in only {
        if name != MODEL && !available.contains(name) {
            bail!("no fuzz target `{name}`: the targets are {} (and `{MODEL}`)", available.join(", "));
        }
    }
    let targets = available.iter().filter(|t| only.contains(t)).cloned().collect();
    Ok((targets, only.iter().any(|n| n == MODEL)))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn cargo_fuzz_installed() -> bool {
    Command::new(cargo()).args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success())
}

fn ensure_cargo_fuzz(install: bool) -> Result<()> {
    if cargo_fuzz_installed() {
        return Ok(());
    }
    if !install {
        bail!("cargo-fuzz is not installed; install it with `cargo install cargo-fuzz --locked`");
    }
    eprintln!("xtask: cargo-fuzz is missing; running `cargo install cargo-fuzz --locked`");
    let status = Command::new(cargo())
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !cargo_fuzz_installed() {
        bail!("installing cargo-fuzz failed; install it with `cargo install cargo-fuzz --locked`");
    }
    Ok(())
}

/// How one run went.
struct Outcome {
    name: String,
    passed: bool,
    took: Duration,
    note: String,
}

fn run_fuzz_target(root: &Path, name: &str, secs: u64) -> Result<Outcome> {
    eprintln!("xtask: fuzzing {name} for {secs}s");
    let started = Instant::now();
    let status = Command::new(cargo())
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", name, "--", &format!("-max_total_time={secs}")])
        .status()
        .with_context(|| format!("cannot run cargo fuzz for {name}"))?;
    let note = if status.success() {
        "no crash".to_string()
    } else {
        format!("{status}; inputs in {}", root.join("fuzz/artifacts").join(name).display())
    };
    Ok(Outcome { name: name.to_string(), passed: status.success(), took: started.elapsed(), note })
}

fn run_model(root: &Path, secs: u64) -> Result<Outcome> {
    eprintln!("xtask: running the model test for about {secs}s");
    let started = Instant::now();
    let status = Command::new(cargo())
        .current_dir(root)
        .env("TSTOR_MODEL_SEED", "random")
        .env("TSTOR_MODEL_SECS", secs.to_string())
        .env("TSTOR_MODEL_CASES", MODEL_CASES.to_string())
        .env("TSTOR_MODEL_STEPS", MODEL_STEPS.to_string())
        .args(["test", "--test", "integration", "model::", "--", "--nocapture"])
        .status()
        .context("cannot run cargo test")?;
    let note = if status.success() {
        "held to the model".to_string()
    } else {
        format!("{status}; the failure above names its seed (TSTOR_MODEL_SEED) and minimal steps")
    };
    Ok(Outcome { name: MODEL.to_string(), passed: status.success(), took: started.elapsed(), note })
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(args) = parse(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let root = workspace_root();
    let (targets, model) = select(&fuzz_targets(&root)?, &args.only)?;
    if !targets.is_empty() {
        ensure_cargo_fuzz(args.install)?;
    }
    let mut outcomes = Vec::new();
    for name in &targets {
        outcomes.push(run_fuzz_target(&root, name, args.secs)?);
    }
    if model {
        outcomes.push(run_model(&root, args.secs)?);
    }
    println!("{:<16} {:<6} {:>8}  note", "target", "result", "time");
    for o in &outcomes {
        let result = if o.passed { "ok" } else { "FAILED" };
        println!("{:<16} {:<6} {:>7.0}s  {}", o.name, result, o.took.as_secs_f64(), o.note);
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.passed).map(|o| o.name.as_str()).collect();
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>> {
        parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_parse() {
        assert_eq!(args(&[]).unwrap().unwrap(), Args { secs: 60, only: Vec::new(), install: true });
        let a =
            args(&["--secs", "5", "--target", "pack_header", "--target", "model", "--no-install"]).unwrap().unwrap();
        assert_eq!(a, Args { secs: 5, only: vec!["pack_header".into(), "model".into()], install: false });
        assert!(args(&["--help"]).unwrap().is_none());
        assert!(args(&["--secs"]).is_err(), "--secs needs a value");
        assert!(args(&["--secs", "soon"]).is_err());
        assert!(args(&["--secs", "0"]).is_err());
        assert!(args(&["--bogus"]).is_err());
    }

    #[test]
    fn targets_are_chosen_by_name() {
        let available = vec!["decode_objects".to_string(), "pack_header".to_string()];
        assert_eq!(select(&available, &[]).unwrap(), (available.clone(), true));
        assert_eq!(select(&available, &["model".into()]).unwrap(), (Vec::new(), true));
        assert_eq!(select(&available, &["pack_header".into()]).unwrap(), (vec!["pack_header".to_string()], false));
        let err = select(&available, &["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("decode_objects, pack_header"), "{err}");
    }

    #[test]
    fn every_fuzz_target_is_found() {
        let targets = fuzz_targets(&workspace_root()).unwrap();
        for expected in ["decode_objects", "open_payload", "pack_header"] {
            assert!(targets.iter().any(|t| t == expected), "{expected} missing from {targets:?}");
        }
    }
}
