//! The benchmark's data tree: a deterministic plan (paths, kinds, sizes and
//! per-file seeds derived from one seed and a target size), its generation
//! on disk, and the marker file that lets a later run reuse it.

use std::collections::HashSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use super::rng::{derive, Rng};
use super::text::{self, Lang};

/// Bump whenever the plan or the generators change, so old trees are rebuilt.
const GENERATOR_VERSION: u32 = 1;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Small source-like text.
    Source(Lang),
    Log,
    Csv,
    /// Incompressible bytes (medium or large).
    Random,
    /// Random blocks mixed with repeated text.
    Semi,
    /// A copy of file `of` with `insert` bytes put in at offset `at`.
    NearDup {
        of: usize,
        at: u64,
        insert: u64,
    },
    Empty,
}

#[derive(Clone, Debug)]
pub struct FileSpec {
    /// Path relative to the data root.
    pub rel: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub seed: u64,
    /// Large files (random or semi-compressible) are candidates for in-place edits.
    pub large: bool,
}

pub struct Plan {
    pub files: Vec<FileSpec>,
    /// Directories that must exist even when empty.
    pub empty_dirs: Vec<PathBuf>,
}

impl Plan {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn clamp(v: u64, lo: u64, hi: u64) -> u64 {
    v.clamp(lo, hi)
}

/// Splits `budget` bytes into file sizes drawn by `draw`.
fn split_budget(budget: u64, mut draw: impl FnMut() -> u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut left = budget;
    while left > 0 {
        let s = draw().min(left);
        sizes.push(s);
        left -= s;
    }
    sizes
}

struct Names {
    used: HashSet<PathBuf>,
}

impl Names {
    /// `dir/stem.ext`, made unique with a counter when needed.
    fn unique(&mut self, dir: &Path, stem: &str, ext: &str) -> PathBuf {
        let dot = if ext.is_empty() { "" } else { "." };
        let mut p = dir.join(format!("{stem}{dot}{ext}"));
        let mut n = 2;
        while self.used.contains(&p) {
            p = dir.join(format!("{stem}-{n}{dot}{ext}"));
            n += 1;
        }
        self.used.insert(p.clone());
        p
    }
}

/// The deterministic plan for a tree of about `size` bytes.
pub fn plan(size: u64, seed: u64) -> Plan {
    let mut r = Rng::new(derive(seed, 1));
    let mut names = Names { used: HashSet::new() };
    let mut files: Vec<FileSpec> = Vec::new();
    let pct = |p: u64| size * p / 100;

    // Small source-like files (8%) in a nested directory tree.
    let small = split_budget(pct(8), || r.log_range(200, 48 * KIB));
    let n_dirs = (small.len() / 24).max(4);
    let mut dirs: Vec<(PathBuf, u32)> = vec![(PathBuf::from("src"), 0)];
    let mut dir_set = HashSet::new();
    while dirs.len() < n_dirs + 1 {
        let (parent, depth) = dirs[r.below(dirs.len() as u64) as usize].clone();
        if depth >= 5 {
            continue;
        }
        let mut d = parent.join(text::word(&mut r));
        if !dir_set.insert(d.clone()) {
            d = parent.join(format!("{}_{}", text::word(&mut r), dirs.len()));
            dir_set.insert(d.clone());
        }
        dirs.push((d, depth + 1));
    }
    for s in small {
        let lang = *r.pick(&Lang::ALL);
        let dir = dirs[r.below(dirs.len() as u64) as usize].0.clone();
        let rel = names.unique(&dir, &text::ident(&mut r), lang.ext());
        files.push(FileSpec { rel, kind: Kind::Source(lang), size: s, seed: r.next_u64(), large: false });
    }

    // Medium logs and CSV exports (12%).
    let med_max = clamp(size / 64, 256 * KIB, 4 * MIB);
    for (i, s) in split_budget(pct(12), || r.range(med_max / 16, med_max)).into_iter().enumerate() {
        let (kind, rel) = if r.chance(0.6) {
            let dir = PathBuf::from(format!("logs/2024-{:02}", i % 12 + 1));
            (Kind::Log, names.unique(&dir, &format!("{}-{i}", text::word(&mut r)), "log"))
        } else {
            (Kind::Csv, names.unique(Path::new("exports"), &format!("{}-{i}", text::ident(&mut r)), "csv"))
        };
        files.push(FileSpec { rel, kind, size: s, seed: r.next_u64(), large: false });
    }

    // Medium random files (10%), stored like a content-addressed object store.
    let rnd_max = clamp(size / 128, 128 * KIB, 2 * MIB);
    for s in split_budget(pct(10), || r.range(rnd_max / 32, rnd_max)) {
        let dir = PathBuf::from(format!("objects/{:02x}", r.below(256)));
        let rel = names.unique(&dir, &format!("{:016x}", r.next_u64()), "bin");
        files.push(FileSpec { rel, kind: Kind::Random, size: s, seed: r.next_u64(), large: false });
    }

    // Large random (32%) and large semi-compressible (28%) files.
    let large_max = clamp(size / 16, MIB, 64 * MIB);
    for (i, s) in split_budget(pct(32), || r.range(large_max / 4, large_max)).into_iter().enumerate() {
        let rel = names.unique(Path::new("media"), &format!("{}-{i:03}", text::word(&mut r)), "mp4");
        files.push(FileSpec { rel, kind: Kind::Random, size: s, seed: r.next_u64(), large: true });
    }
    for (i, s) in split_budget(pct(28), || r.range(large_max / 4, large_max)).into_iter().enumerate() {
        let (dir, ext) = if i % 2 == 0 { ("images", "img") } else { ("backups", "tar") };
        let rel = names.unique(Path::new(dir), &format!("{}-{i:03}", text::word(&mut r)), ext);
        files.push(FileSpec { rel, kind: Kind::Semi, size: s, seed: r.next_u64(), large: true });
    }

    // Near-duplicates (about 10%): copies of large files with a few bytes inserted near the middle.
    let mut large: Vec<usize> = (0..files.len()).filter(|&i| files[i].large).collect();
    for i in (1..large.len()).rev() {
        large.swap(i, r.below(i as u64 + 1) as usize);
    }
    let mut dup_left = pct(10) as i64;
    for &of in &large {
        if dup_left <= 0 {
            break;
        }
        let src = files[of].clone();
        let jitter = r.below(src.size / 8 + 1);
        let at = (src.size / 2 + jitter).saturating_sub(src.size / 16).min(src.size);
        let insert = r.range(1, 16);
        let stem = src.rel.file_stem().and_then(|s| s.to_str()).unwrap_or("copy").to_string();
        let ext = src.rel.extension().and_then(|s| s.to_str()).unwrap_or("").to_string();
        let rel = names.unique(Path::new("copies"), &format!("{stem}.v2"), &ext);
        files.push(FileSpec {
            rel,
            kind: Kind::NearDup { of, at, insert },
            size: src.size + insert,
            seed: r.next_u64(),
            large: false,
        });
        dup_left -= src.size as i64;
    }

    // A few edge cases.
    for rel in ["EMPTY", "src/.keep", "logs/.gitkeep"] {
        files.push(FileSpec { rel: rel.into(), kind: Kind::Empty, size: 0, seed: 0, large: false });
    }
    Plan { files, empty_dirs: vec![PathBuf::from("empty-dir"), PathBuf::from("objects/empty")] }
}

/// Writes `n` bytes of semi-compressible content: random blocks between runs of
/// paragraphs picked from a small per-file pool (repeated text).
fn write_semi(r: &mut Rng, w: &mut impl Write, n: u64) -> Result<()> {
    let mut t = 0;
    let pool: Vec<Vec<u8>> = (0..8)
        .map(|_| {
            let len = r.range(KIB, 8 * KIB) as usize;
            text::log_lines(r, &mut t, len)
        })
        .collect();
    let mut buf = vec![0u8; 64 * KIB as usize];
    let mut left = n;
    while left > 0 {
        if r.chance(0.5) {
            let len = (r.range(4 * KIB, 64 * KIB)).min(left) as usize;
            r.fill(&mut buf[..len]);
            w.write_all(&buf[..len])?;
            left -= len as u64;
        } else {
            let mut want = r.range(4 * KIB, 64 * KIB).min(left);
            left -= want;
            while want > 0 {
                let p = &pool[r.below(pool.len() as u64) as usize];
                let take = (p.len() as u64).min(want) as usize;
                w.write_all(&p[..take])?;
                want -= take as u64;
            }
        }
    }
    Ok(())
}

fn write_random(r: &mut Rng, w: &mut impl Write, n: u64) -> Result<()> {
    let mut buf = vec![0u8; MIB as usize];
    let mut left = n;
    while left > 0 {
        let len = left.min(buf.len() as u64) as usize;
        r.fill(&mut buf[..len]);
        w.write_all(&buf[..len])?;
        left -= len as u64;
    }
    Ok(())
}

/// Writes one planned file under `root`; near-duplicates read their source,
/// which must already exist.
fn write_file(root: &Path, plan: &Plan, f: &FileSpec) -> Result<()> {
    let path = root.join(&f.rel);
    let mut r = Rng::new(f.seed);
    match &f.kind {
        Kind::Source(lang) => fs::write(&path, text::source(&mut r, *lang, f.size as usize))?,
        Kind::Log => {
            let mut t = r.below(1_000_000);
            fs::write(&path, text::log_lines(&mut r, &mut t, f.size as usize))?
        }
        Kind::Csv => fs::write(&path, text::csv(&mut r, f.size as usize))?,
        Kind::Empty => fs::write(&path, b"")?,
        Kind::Random | Kind::Semi => {
            let mut w = BufWriter::with_capacity(MIB as usize, fs::File::create(&path)?);
            if f.kind == Kind::Random {
                write_random(&mut r, &mut w, f.size)?;
            } else {
                write_semi(&mut r, &mut w, f.size)?;
            }
            w.flush()?;
        }
        Kind::NearDup { of, at, insert } => {
            let src = fs::read(root.join(&plan.files[*of].rel))?;
            let mut extra = vec![0u8; *insert as usize];
            r.fill(&mut extra);
            let at = *at as usize;
            let mut w = BufWriter::with_capacity(MIB as usize, fs::File::create(&path)?);
            w.write_all(&src[..at])?;
            w.write_all(&extra)?;
            w.write_all(&src[at..])?;
            w.flush()?;
        }
    }
    Ok(())
}

fn marker_text(size: u64, seed: u64) -> String {
    format!("tstor-bench data v{GENERATOR_VERSION} size={size} seed={seed} pristine\n")
}

/// Whether `marker` says the tree was generated with these parameters and is unmodified.
pub fn is_current(marker: &Path, size: u64, seed: u64) -> bool {
    fs::read_to_string(marker).is_ok_and(|t| t == marker_text(size, seed))
}

pub fn write_marker(marker: &Path, size: u64, seed: u64) -> Result<()> {
    fs::write(marker, marker_text(size, seed)).with_context(|| format!("cannot write {}", marker.display()))
}

pub fn remove_marker(marker: &Path) -> Result<()> {
    match fs::remove_file(marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", marker.display()))
        }
        _ => Ok(()),
    }
}

/// Generates the whole tree under `root` (which is wiped first), using all cores.
pub fn generate(root: &Path, plan: &Plan) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("cannot remove {}", root.display()))?;
    }
    let mut dirs: HashSet<PathBuf> = plan.files.iter().filter_map(|f| f.rel.parent().map(Path::to_path_buf)).collect();
    dirs.extend(plan.empty_dirs.iter().cloned());
    for d in &dirs {
        fs::create_dir_all(root.join(d)).with_context(|| format!("cannot create {}", root.join(d).display()))?;
    }
    let (originals, dups): (Vec<&FileSpec>, Vec<&FileSpec>) =
        plan.files.iter().partition(|f| !matches!(f.kind, Kind::NearDup { .. }));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    for batch in [originals, dups] {
        let next = AtomicUsize::new(0);
        let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = batch.get(i) else { break };
                    if let Err(e) = write_file(root, plan, f) {
                        let e = e.context(format!("cannot write {}", root.join(&f.rel).display()));
                        failure.lock().unwrap().get_or_insert(e);
                        break;
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap() {
            return Err(e);
        }
    }
    Ok(())
}

/// Makes sure `root` holds the tree for (size, seed), regenerating unless the marker matches.
/// Returns whether it was (re)generated.
pub fn ensure(root: &Path, marker: &Path, size: u64, seed: u64, plan: &Plan) -> Result<bool> {
    if root.is_dir() && is_current(marker, size, seed) {
        return Ok(false);
    }
    if plan.files.is_empty() {
        bail!("empty plan");
    }
    remove_marker(marker)?;
    generate(root, plan)?;
    write_marker(marker, size, seed)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_sized() {
        let size = 16 * MIB;
        let (a, b) = (plan(size, 42), plan(size, 42));
        assert_eq!(a.files.len(), b.files.len());
        for (x, y) in a.files.iter().zip(&b.files) {
            assert_eq!((&x.rel, x.size, x.seed), (&y.rel, y.size, y.seed));
        }
        let total = a.total_bytes();
        assert!(total > size * 95 / 100 && total < size * 115 / 100, "{total}");
        let paths: HashSet<_> = a.files.iter().map(|f| &f.rel).collect();
        assert_eq!(paths.len(), a.files.len());
    }

    #[test]
    fn generators_hit_exact_sizes() {
        let mut r = Rng::new(3);
        for lang in Lang::ALL {
            assert_eq!(text::source(&mut r, lang, 777).len(), 777);
        }
        assert_eq!(text::csv(&mut r, 5000).len(), 5000);
        let mut v = Vec::new();
        write_semi(&mut r, &mut v, 300_000).unwrap();
        assert_eq!(v.len(), 300_000);
    }
}
