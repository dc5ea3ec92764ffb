//! `cargo xtask bench scale`: tstor against restic on many small files.
//!
//! For each size (`--files 100000,1000000`) it generates a tree of that many
//! small files in nested directories and runs both tools through init, an
//! initial and an unchanged snapshot, `ls`, `find`, a restore (checked byte
//! for byte, then deleted), `check`, a verifying check and
//! `forget --keep-last 1 --prune`, measuring wall time, CPU time and peak RSS
//! of every child (GNU time, which reads `wait4`'s rusage; /proc otherwise).
//! With two sizes or more it prints each command's growth exponent between
//! consecutive sizes (`ln(t2/t1) / ln(n2/n1)`). Then a history: `--history`
//! snapshots of a small changing tree, `forget --keep-last 10 --prune`, and
//! the packs and index objects left. Finally the memory the in-memory index
//! takes per blob, measured in this process.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::measure::{self, CmdSpec, Measurement, Method};
use super::rng::Rng;
use super::{build_tstor, find_on_path, first_line_of, flag_value, mib, remove_tree, split_flag, verify};
use super::{workspace_root, Flavor, Tool};

const USAGE: &str = "\
usage: cargo xtask bench scale [--files N[,N...]] [--history N] [--dir DIR] [--only tstor|restic] [--skip-tree] [--skip-history] [--keep]

  --files N,M     sizes of the generated trees, in files (default 100000,1000000)
  --history N     snapshots of the changing tree before forget --prune (default 300; 0 skips)
  --dir DIR       working directory (default benchdata in the workspace)
  --only TOOL     run only tstor or only restic
  --skip-tree     only the history and the index memory
  --skip-history  only the trees and the index memory
  --bin PATH      the tstor binary to measure (default: build it with cargo build --release)
  --keep          keep the generated trees and repositories

Every measurement is also appended to DIR/scale-cells.tsv; the report's growth
exponents use every size found there, so sizes may be measured in separate runs.";

struct Options {
    sizes: Vec<u64>,
    history: usize,
    dir: Option<PathBuf>,
    only: Option<Flavor>,
    skip_tree: bool,
    keep: bool,
    bin: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options {
        sizes: vec![100_000, 1_000_000],
        history: 300,
        dir: None,
        only: None,
        skip_tree: false,
        keep: false,
        bin: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = split_flag(a);
        let mut value = || flag_value(flag, &inline, &mut it);
        match flag {
            "--files" => {
                o.sizes = value()?
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse::<u64>().with_context(|| format!("bad --files `{s}`")))
                    .collect::<Result<_>>()?;
                if o.sizes.contains(&0) {
                    bail!("--files takes positive counts");
                }
            }
            "--history" => o.history = value()?.parse().context("bad --history")?,
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            "--only" => {
                o.only = Some(match value()?.as_str() {
                    "tstor" => Flavor::Tstor,
                    "restic" => Flavor::Restic,
                    other => bail!("--only takes tstor or restic, not `{other}`"),
                })
            }
            "--skip-tree" => o.skip_tree = true,
            "--skip-history" => o.history = 0,
            "--keep" => o.keep = true,
            "--bin" => o.bin = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(o)
}

/// The commands measured on each tree, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    Initial,
    Unchanged,
    Ls,
    Find,
    Restore,
    Check,
    CheckVerify,
    ForgetPrune,
}

impl Row {
    const ALL: [Row; 8] = [
        Row::Initial,
        Row::Unchanged,
        Row::Ls,
        Row::Find,
        Row::Restore,
        Row::Check,
        Row::CheckVerify,
        Row::ForgetPrune,
    ];

    fn name(self) -> &'static str {
        match self {
            Row::Initial => "snapshot initial",
            Row::Unchanged => "snapshot unchanged",
            Row::Ls => "ls latest",
            Row::Find => "find",
            Row::Restore => "restore",
            Row::Check => "check",
            Row::CheckVerify => "check --verify",
            Row::ForgetPrune => "forget --prune",
        }
    }

    fn from_name(name: &str) -> Option<Row> {
        Row::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The name pattern `find` looks for: one file in a thousand.
const FIND_PATTERN: &str = "f*123";

fn command(t: &Tool, row: Row, data: &Path) -> CmdSpec {
    let c = t.base();
    match (t.flavor, row) {
        (Flavor::Tstor, Row::Initial | Row::Unchanged) => c.arg("snapshot").arg(data),
        (Flavor::Restic, Row::Initial | Row::Unchanged) => c.arg("backup").arg(data),
        (_, Row::Ls) => c.arg("ls").arg("latest"),
        (_, Row::Find) => c.arg("find").arg(FIND_PATTERN),
        (_, Row::Restore) => c.arg("restore").arg("latest").arg("--target").arg(&t.restore),
        (_, Row::Check) => c.arg("check"),
        (Flavor::Tstor, Row::CheckVerify) => c.arg("check").arg("--verify"),
        (Flavor::Restic, Row::CheckVerify) => c.arg("check").arg("--read-data"),
        (_, Row::ForgetPrune) => c.arg("forget").arg("--keep-last").arg("1").arg("--prune"),
    }
}

/// Writes `n` small files (16–512 bytes, each different) as
/// `dNNN/eNN/fNNNNNNN`: a hundred files per directory, a hundred directories
/// per top-level directory.
fn generate_tree(root: &Path, n: u64, seed: u64) -> Result<u64> {
    let mut rng = Rng::new(seed ^ n);
    let mut bytes = 0;
    let mut buf = vec![0u8; 512];
    let mut dir = PathBuf::new();
    for i in 0..n {
        if i % 100 == 0 {
            dir = root.join(format!("d{:03}", i / 10_000)).join(format!("e{:02}", (i / 100) % 100));
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let len = rng.range(16, 512) as usize;
        rng.fill(&mut buf[..len]);
        buf[..8].copy_from_slice(&i.to_le_bytes());
        let path = dir.join(format!("f{i:07}"));
        fs::write(&path, &buf[..len]).with_context(|| format!("cannot write {}", path.display()))?;
        bytes += len as u64;
    }
    Ok(bytes)
}

struct Cell {
    tool: String,
    files: u64,
    row: Row,
    m: Measurement,
}

fn run_measured(method: &Method, spec: &CmdSpec, scratch: &Path) -> Result<Measurement> {
    // Flush dirty pages left by earlier steps so their writeback is not billed to this one.
    let _ = std::process::Command::new("sync").status();
    measure::run(method, spec, scratch)
}

fn tree_part(
    tools: &[Tool],
    method: &Method,
    dir: &Path,
    scratch: &Path,
    files: u64,
    out: &mut Vec<Cell>,
) -> Result<()> {
    let data = dir.join(format!("tree-{files}"));
    remove_tree(&data)?;
    let start = Instant::now();
    let bytes = generate_tree(&data, files, 42)?;
    println!("\n== {files} files, {:.1} MiB, generated in {:.1}s ==", mib(bytes), start.elapsed().as_secs_f64());
    for t in tools {
        for d in t.dirs() {
            remove_tree(d)?;
        }
        measure::run(method, &t.base().arg("init"), scratch).with_context(|| format!("{}: init", t.name))?;
    }
    for row in Row::ALL {
        for t in tools {
            if row == Row::Restore {
                remove_tree(&t.restore)?;
                fs::create_dir_all(&t.restore)?;
            }
            let m = run_measured(method, &command(t, row, &data), scratch)
                .with_context(|| format!("{}: {} on {files} files", t.name, row.name()))?;
            println!(
                "  {:<7} {:<20} {:>8.2} s wall {:>8.2} s cpu {:>8.1} MiB RSS",
                t.name,
                row.name(),
                m.wall_s,
                m.cpu_s(),
                m.rss_mib()
            );
            if row == Row::Restore {
                let v = verify::compare(&data, &t.restored_root(&data))?;
                println!("  {:<7} restore verified: {} files, {} mismatches", t.name, v.files, v.mismatches());
                if v.mismatches() > 0 || v.files != files {
                    bail!("{}: restored tree differs from the source: {:?}", t.name, v.examples);
                }
                remove_tree(&t.restore)?;
            }
            let cell = Cell { tool: t.name.to_string(), files, row, m };
            append_cell(&dir.join(CELLS_FILE), &cell)?;
            out.push(cell);
        }
    }
    for t in tools {
        for d in t.dirs() {
            remove_tree(d)?;
        }
    }
    remove_tree(&data)?;
    Ok(())
}

const CELLS_FILE: &str = "scale-cells.tsv";

fn append_cell(path: &Path, c: &Cell) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(
        f,
        "{}\t{}\t{}\t{:.3}\t{:.3}\t{:.3}\t{}",
        c.tool,
        c.files,
        c.row.name(),
        c.m.wall_s,
        c.m.user_s,
        c.m.sys_s,
        c.m.max_rss_kib
    )?;
    Ok(())
}

/// Every cell recorded under `path`, the latest of each tool, size and row.
fn read_cells(path: &Path) -> Vec<Cell> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut cells: Vec<Cell> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let parsed = (|| -> Option<Cell> {
            Some(Cell {
                tool: f.first()?.to_string(),
                files: f.get(1)?.parse().ok()?,
                row: Row::from_name(f.get(2)?)?,
                m: Measurement {
                    wall_s: f.get(3)?.parse().ok()?,
                    user_s: f.get(4)?.parse().ok()?,
                    sys_s: f.get(5)?.parse().ok()?,
                    max_rss_kib: f.get(6)?.parse().ok()?,
                    stdout: String::new(),
                },
            })
        })();
        if let Some(c) = parsed {
            cells.retain(|o| !(o.tool == c.tool && o.files == c.files && o.row == c.row));
            cells.push(c);
        }
    }
    cells
}

/// Files in a directory tree.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

struct HistoryResult {
    tool: &'static str,
    snapshots_wall_s: f64,
    snapshots_cpu_s: f64,
    snapshots_max_rss_kib: u64,
    prune: Measurement,
    packs_before: usize,
    packs_after: usize,
    index_before: usize,
    index_after: usize,
    repo_bytes_after: u64,
}

fn pack_dir(t: &Tool) -> PathBuf {
    t.repo.join(if t.flavor == Flavor::Tstor { "packs" } else { "data" })
}

/// `snapshots` snapshots of a small tree in which every step rewrites a few
/// files, adds one and removes one; then `forget --keep-last 10 --prune`.
fn history_part(
    tools: &[Tool],
    method: &Method,
    dir: &Path,
    scratch: &Path,
    snapshots: usize,
) -> Result<Vec<HistoryResult>> {
    let data = dir.join("history");
    remove_tree(&data)?;
    let mut rng = Rng::new(7);
    let mut live: Vec<PathBuf> = Vec::new();
    let mut next = 0u64;
    let write = |rng: &mut Rng, path: &Path| -> Result<()> {
        let mut buf = vec![0u8; rng.range(200, 8192) as usize];
        rng.fill(&mut buf);
        fs::create_dir_all(path.parent().unwrap_or(&data))?;
        fs::write(path, &buf).with_context(|| format!("cannot write {}", path.display()))
    };
    for _ in 0..200 {
        let p = data.join(format!("d{}", next % 10)).join(format!("f{next}"));
        next += 1;
        write(&mut rng, &p)?;
        live.push(p);
    }
    println!("\n== history: {snapshots} snapshots of a changing tree of {} files ==", live.len());
    let mut results = Vec::new();
    let mut sums: Vec<(f64, f64, u64)> = vec![(0.0, 0.0, 0); tools.len()];
    for t in tools {
        for d in t.dirs() {
            remove_tree(d)?;
        }
        measure::run(method, &t.base().arg("init"), scratch).with_context(|| format!("{}: init", t.name))?;
    }
    for s in 0..snapshots {
        if s > 0 {
            for _ in 0..3 {
                let p = live[rng.below(live.len() as u64) as usize].clone();
                write(&mut rng, &p)?;
            }
            let gone = live.swap_remove(rng.below(live.len() as u64) as usize);
            fs::remove_file(&gone)?;
            let p = data.join(format!("d{}", next % 10)).join(format!("f{next}"));
            next += 1;
            write(&mut rng, &p)?;
            live.push(p);
        }
        for (ti, t) in tools.iter().enumerate() {
            let spec = match t.flavor {
                Flavor::Tstor => t.base().arg("snapshot").arg(&data),
                Flavor::Restic => t.base().arg("backup").arg(&data),
            };
            let m =
                measure::run(method, &spec, scratch).with_context(|| format!("{}: history snapshot {s}", t.name))?;
            sums[ti].0 += m.wall_s;
            sums[ti].1 += m.cpu_s();
            sums[ti].2 = sums[ti].2.max(m.max_rss_kib);
        }
        if (s + 1) % 50 == 0 {
            println!("  {} snapshots taken", s + 1);
        }
    }
    for (ti, t) in tools.iter().enumerate() {
        let packs_before = count_files(&pack_dir(t));
        let index_before = count_files(&t.repo.join("index"));
        let spec = t.base().arg("forget").arg("--keep-last").arg("10").arg("--prune");
        let prune = run_measured(method, &spec, scratch).with_context(|| format!("{}: forget --prune", t.name))?;
        let r = HistoryResult {
            tool: t.name,
            snapshots_wall_s: sums[ti].0,
            snapshots_cpu_s: sums[ti].1,
            snapshots_max_rss_kib: sums[ti].2,
            prune,
            packs_before,
            packs_after: count_files(&pack_dir(t)),
            index_before,
            index_after: count_files(&t.repo.join("index")),
            repo_bytes_after: measure::disk_usage(&t.repo),
        };
        println!(
            "  {:<7} {snapshots} snapshots {:.1} s wall {:.1} s cpu; forget --prune {:.2} s wall {:.2} s cpu {:.1} MiB RSS; \
             packs {} -> {}, index objects {} -> {}",
            t.name,
            r.snapshots_wall_s,
            r.snapshots_cpu_s,
            r.prune.wall_s,
            r.prune.cpu_s(),
            r.prune.rss_mib(),
            r.packs_before,
            r.packs_after,
            r.index_before,
            r.index_after
        );
        results.push(r);
    }
    for t in tools {
        for d in t.dirs() {
            remove_tree(d)?;
        }
    }
    remove_tree(&data)?;
    Ok(results)
}

/// Resident memory of this process, KiB.
fn vm_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes of resident memory per blob of tstor's in-memory index, filled
/// with `blobs` entries (packs of 1,000 blobs) in this process: built at
/// once as loading the index builds it (`loaded`), or pack by pack as a
/// snapshot adds to it.
fn index_memory_per_blob(blobs: u32, loaded: bool) -> f64 {
    use tstor::format::index::IndexedPack;
    use tstor::format::pack::BlobEntry;
    use tstor::format::{BlobType, Id};
    use tstor::repo::index::MasterIndex;
    let mut rng = Rng::new(blobs.into());
    let mut id = move || {
        let mut b = [0u8; 32];
        rng.fill(&mut b);
        Id(b)
    };
    let before = vm_rss_kib();
    let mut builder = MasterIndex::builder();
    let mut index = MasterIndex::default();
    for p in 0..blobs.div_ceil(1000) {
        let entries = (0..1000u32.min(blobs - p * 1000))
            .map(|b| BlobEntry { blob_type: BlobType::Data, id: id(), offset: b * 100, length: 100, raw_len: 90 })
            .collect();
        let pack = IndexedPack { id: id(), size: 1 << 20, blobs: entries };
        if loaded {
            builder.add_pack(&pack);
        } else {
            index.add_pack(&pack);
        }
    }
    if loaded {
        index = builder.finish();
    }
    let after = vm_rss_kib();
    let per_blob = (after.saturating_sub(before) * 1024) as f64 / f64::from(blobs);
    drop(index);
    per_blob
}

fn growth(v1: f64, v2: f64, n1: u64, n2: u64) -> String {
    if v1 <= 0.0 || v2 <= 0.0 || n1 == n2 {
        return "-".into();
    }
    format!("{:.2}", (v2 / v1).ln() / (n2 as f64 / n1 as f64).ln())
}

fn report(tools: &[Tool], cells: &[Cell], history: &[HistoryResult], per_blob: (f64, f64)) -> String {
    let mut s = String::new();
    let mut sizes: Vec<u64> = cells.iter().map(|c| c.files).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let find =
        |tool: &str, files: u64, row: Row| cells.iter().find(|c| c.tool == tool && c.files == files && c.row == row);
    let _ = writeln!(s, "\nversions: {}", tools.iter().map(|t| t.version.as_str()).collect::<Vec<_>>().join("; "));
    for &n in &sizes {
        let _ = writeln!(s, "\n{n} files: wall s / cpu s / peak RSS MiB");
        let _ = write!(s, "{:<20}", "command");
        for t in tools {
            let _ = write!(s, " | {:>26}", t.name);
        }
        let _ = writeln!(s);
        for row in Row::ALL {
            let _ = write!(s, "{:<20}", row.name());
            for t in tools {
                match find(t.name, n, row) {
                    Some(c) => {
                        let _ = write!(s, " | {:>8.2} {:>8.2} {:>8.1}", c.m.wall_s, c.m.cpu_s(), c.m.rss_mib());
                    }
                    None => {
                        let _ = write!(s, " | {:>26}", "-");
                    }
                }
            }
            let _ = writeln!(s);
        }
    }
    for w in sizes.windows(2) {
        let (n1, n2) = (w[0], w[1]);
        let _ = writeln!(s, "\ngrowth exponent {n1} -> {n2} files (1 = linear): wall / cpu / RSS");
        for row in Row::ALL {
            let _ = write!(s, "{:<20}", row.name());
            for t in tools {
                if let (Some(a), Some(b)) = (find(t.name, n1, row), find(t.name, n2, row)) {
                    let _ = write!(
                        s,
                        " | {:<7} {:>5} {:>5} {:>5}",
                        t.name,
                        growth(a.m.wall_s, b.m.wall_s, n1, n2),
                        growth(a.m.cpu_s(), b.m.cpu_s(), n1, n2),
                        growth(a.m.max_rss_kib as f64, b.m.max_rss_kib as f64, n1, n2)
                    );
                }
            }
            let _ = writeln!(s);
        }
    }
    if !history.is_empty() {
        let _ = writeln!(s, "\nhistory, then forget --keep-last 10 --prune:");
        for h in history {
            let _ = writeln!(
                s,
                "{:<7} snapshots {:.1} s wall {:.1} s cpu max {:.1} MiB | prune {:.2} s wall {:.2} s cpu {:.1} MiB | \
                 packs {} -> {} | index objects {} -> {} | repository {:.1} MiB",
                h.tool,
                h.snapshots_wall_s,
                h.snapshots_cpu_s,
                h.snapshots_max_rss_kib as f64 / 1024.0,
                h.prune.wall_s,
                h.prune.cpu_s(),
                h.prune.rss_mib(),
                h.packs_before,
                h.packs_after,
                h.index_before,
                h.index_after,
                mib(h.repo_bytes_after)
            );
        }
    }
    let _ = writeln!(
        s,
        "\nindex memory per blob (tstor, 10^6 blobs in memory): {:.0} bytes loaded, {:.0} bytes added pack by pack",
        per_blob.0, per_blob.1
    );
    s
}

pub fn main(args: &[String]) -> Result<()> {
    let o = parse_args(args)?;
    let root = workspace_root();
    let dir = match &o.dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => std::env::current_dir()?.join(d),
        None => root.join("benchdata"),
    };
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let scratch = dir.join("scratch");
    fs::create_dir_all(&scratch)?;
    let method = measure::detect(&scratch);
    println!("measuring with {} (CPU time and peak RSS of each child)", method.name());

    let mut tools = Vec::new();
    if o.only != Some(Flavor::Restic) {
        let bin = match &o.bin {
            Some(b) => b.canonicalize().with_context(|| format!("no tstor binary at {}", b.display()))?,
            None => build_tstor(&root)?,
        };
        tools.push(Tool::new(Flavor::Tstor, bin, &dir));
    }
    if o.only != Some(Flavor::Tstor) {
        match find_on_path("restic") {
            Some(bin) => tools.push(Tool::new(Flavor::Restic, bin, &dir)),
            None => println!("restic: not on PATH, skipped (apt-get install restic to compare)"),
        }
    }
    for t in &mut tools {
        t.version = match t.flavor {
            Flavor::Tstor => first_line_of(&t.bin, &["--version"]),
            Flavor::Restic => first_line_of(&t.bin, &["version"]),
        };
        println!("{}: {} ({})", t.name, t.version, t.bin.display());
    }
    if let Ok(l) = fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    }

    let mut cells = Vec::new();
    let mut outcome = Ok(());
    println!("measurements are appended to {}", dir.join(CELLS_FILE).display());
    if !o.skip_tree {
        for &n in &o.sizes {
            outcome = tree_part(&tools, &method, &dir, &scratch, n, &mut cells);
            if outcome.is_err() {
                break;
            }
        }
    }
    let history = match (&outcome, o.history) {
        (Ok(()), h) if h > 0 => match history_part(&tools, &method, &dir, &scratch, h) {
            Ok(r) => r,
            Err(e) => {
                outcome = Err(e);
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    let per_blob = (index_memory_per_blob(1_000_000, true), index_memory_per_blob(1_000_000, false));
    let text = report(&tools, &read_cells(&dir.join(CELLS_FILE)), &history, per_blob);
    println!("{text}");
    let results = dir.join("scale-results.txt");
    fs::write(&results, &text).with_context(|| format!("cannot write {}", results.display()))?;
    println!("results: {}", results.display());
    outcome.with_context(|| format!("trees and repositories are left under {} for inspection", dir.display()))?;
    if !o.keep {
        remove_tree(&scratch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_exponent_of_linear_and_quadratic_costs() {
        assert_eq!(growth(1.0, 10.0, 1000, 10_000), "1.00");
        assert_eq!(growth(1.0, 100.0, 1000, 10_000), "2.00");
        assert_eq!(growth(0.0, 100.0, 1000, 10_000), "-");
    }

    #[test]
    fn recorded_cells_read_back_with_the_latest_of_each_kept() {
        let path = std::env::temp_dir().join(format!("tstor-scale-cells-{}.tsv", std::process::id()));
        let _ = fs::remove_file(&path);
        let cell = |wall_s: f64, files: u64| Cell {
            tool: "tstor".into(),
            files,
            row: Row::CheckVerify,
            m: Measurement { wall_s, user_s: 1.5, sys_s: 0.25, max_rss_kib: 2048, stdout: String::new() },
        };
        append_cell(&path, &cell(1.0, 10)).unwrap();
        append_cell(&path, &cell(2.0, 10)).unwrap();
        append_cell(&path, &cell(3.0, 100)).unwrap();
        let cells = read_cells(&path);
        assert_eq!(cells.len(), 2);
        assert_eq!((cells[0].files, cells[0].m.wall_s, cells[0].row), (10, 2.0, Row::CheckVerify));
        assert_eq!((cells[0].m.user_s, cells[0].m.max_rss_kib), (1.5, 2048));
        assert_eq!(cells[1].files, 100);
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn generated_tree_has_the_asked_number_of_distinct_files() {
        let dir = std::env::temp_dir().join(format!("tstor-scale-gen-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let bytes = generate_tree(&dir, 250, 1).unwrap();
        assert_eq!(count_files(&dir), 250);
        assert!(bytes >= 250 * 16);
        let a = fs::read(dir.join("d000/e00/f0000000")).unwrap();
        let b = fs::read(dir.join("d000/e02/f0000200")).unwrap();
        assert_ne!(a, b);
        fs::remove_dir_all(&dir).unwrap();
    }
}
