//! The "2% change" applied to the data tree between snapshots: appends to
//! logs and sources, in-place edits of sources and binary files, a few new
//! files. Every change is recorded in an undo log first, so the tree can be
//! put back byte for byte afterwards (and a crash leaves the marker removed,
//! which forces regeneration).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::data::{FileSpec, Kind, Plan};
use super::rng::{derive, Rng};
use super::text::{self, Lang};

enum Undo {
    Truncate(PathBuf, u64),
    Restore(PathBuf, u64, Vec<u8>),
    Remove(PathBuf),
    RemoveDir(PathBuf),
}

/// What was changed, and how to take it back.
#[derive(Default)]
pub struct Mutation {
    undo: Vec<Undo>,
    /// Existing files touched, and their total size before the change.
    pub files_changed: u64,
    pub changed_file_bytes: u64,
    pub files_added: u64,
    pub added_bytes: u64,
    /// Bytes actually written (appended, overwritten or new).
    pub bytes_written: u64,
}

fn shuffled(r: &mut Rng, mut v: Vec<usize>) -> Vec<usize> {
    for i in (1..v.len()).rev() {
        v.swap(i, r.below(i as u64 + 1) as usize);
    }
    v
}

/// Picks files (in random order) whose sizes add up to about `budget`.
fn pick(r: &mut Rng, plan: &Plan, budget: u64, keep: impl Fn(&FileSpec) -> bool) -> Vec<usize> {
    let candidates: Vec<usize> = (0..plan.files.len()).filter(|&i| keep(&plan.files[i])).collect();
    let mut out = Vec::new();
    let mut left = budget;
    for i in shuffled(r, candidates) {
        let s = plan.files[i].size;
        if left == 0 {
            break;
        }
        if s == 0 || s > left + left / 2 {
            continue;
        }
        out.push(i);
        left = left.saturating_sub(s);
    }
    out
}

impl Mutation {
    fn append(&mut self, path: &Path, old_len: u64, bytes: &[u8]) -> Result<()> {
        self.undo.push(Undo::Truncate(path.to_path_buf(), old_len));
        let mut f = OpenOptions::new().append(true).open(path)?;
        f.write_all(bytes)?;
        self.files_changed += 1;
        self.changed_file_bytes += old_len;
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }

    fn overwrite(&mut self, path: &Path, old_len: u64, at: u64, bytes: &[u8]) -> Result<()> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        let mut old = vec![0u8; bytes.len()];
        f.read_exact_at(&mut old, at)?;
        self.undo.push(Undo::Restore(path.to_path_buf(), at, old));
        f.write_all_at(bytes, at)?;
        self.files_changed += 1;
        self.changed_file_bytes += old_len;
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }

    fn add(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.undo.push(Undo::Remove(path.to_path_buf()));
        fs::write(path, bytes)?;
        self.files_added += 1;
        self.added_bytes += bytes.len() as u64;
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// Applies the change for this plan and seed to the tree at `root`. On
    /// error, whatever was done so far is still recorded and can be reverted.
    pub fn apply(&mut self, root: &Path, plan: &Plan, seed: u64) -> Result<()> {
        let mut r = Rng::new(derive(seed, 2));
        let budget = plan.total_bytes() / 50;

        // Logs grow (40% of the budget).
        for i in pick(&mut r, plan, budget * 2 / 5, |f| f.kind == Kind::Log) {
            let f = &plan.files[i];
            let mut t = 2_000_000 + r.below(100_000);
            let extra = text::log_lines(&mut r, &mut t, (f.size / 50).max(4096) as usize);
            self.append(&root.join(&f.rel), f.size, &extra).with_context(|| f.rel.display().to_string())?;
        }
        // Sources: half get new code appended, half a same-size edit (20%).
        for (n, i) in pick(&mut r, plan, budget / 5, |f| matches!(f.kind, Kind::Source(_))).into_iter().enumerate() {
            let f = &plan.files[i];
            let Kind::Source(lang) = f.kind else { unreachable!() };
            let path = root.join(&f.rel);
            if n % 2 == 0 {
                let len = r.range(100, 2000) as usize;
                let extra = text::source(&mut r, lang, len);
                self.append(&path, f.size, &extra)
            } else {
                let len = r.range(16, 64).min(f.size);
                let at = r.below(f.size - len + 1);
                let patch = text::source(&mut r, lang, len as usize);
                self.overwrite(&path, f.size, at, &patch)
            }
            .with_context(|| f.rel.display().to_string())?;
        }
        // Binary files, medium and (when one is small enough) large, are patched in place (20%).
        for i in pick(&mut r, plan, budget / 5, |f| f.kind == Kind::Random || f.kind == Kind::Semi) {
            let f = &plan.files[i];
            let len = r.range(4096, 65_536).min(f.size);
            let at = (f.size / 2).min(f.size - len);
            let mut patch = vec![0u8; len as usize];
            r.fill(&mut patch);
            self.overwrite(&root.join(&f.rel), f.size, at, &patch).with_context(|| f.rel.display().to_string())?;
        }
        // New files (20%): a new directory with sources and one binary, and a note in src/.
        let new_dir = root.join("new-files");
        self.undo.push(Undo::RemoveDir(new_dir.clone()));
        fs::create_dir(&new_dir).with_context(|| new_dir.display().to_string())?;
        let mut left = budget / 5;
        let note = text::source(&mut r, Lang::Markdown, 1500);
        self.add(&root.join("src/CHANGES-NEW.md"), &note)?;
        for k in 0..r.range(3, 8) {
            let lang = *r.pick(&Lang::ALL);
            let size = r.range(500, 20_000).min(left / 2);
            let body = text::source(&mut r, lang, size as usize);
            self.add(&new_dir.join(format!("{}-{k}.{}", text::ident(&mut r), lang.ext())), &body)?;
            left = left.saturating_sub(size);
        }
        let mut blob = vec![0u8; left as usize];
        r.fill(&mut blob);
        self.add(&new_dir.join("payload.bin"), &blob)?;
        Ok(())
    }

    /// Puts the tree back as it was, newest change first.
    pub fn revert(&mut self) -> Result<()> {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Truncate(p, len) => OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.set_len(len))
                    .with_context(|| format!("cannot truncate {}", p.display()))?,
                Undo::Restore(p, at, bytes) => OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.write_all_at(&bytes, at))
                    .with_context(|| format!("cannot restore {}", p.display()))?,
                Undo::Remove(p) => match fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("cannot remove {}", p.display()))
                    }
                    _ => {}
                },
                Undo::RemoveDir(p) => match fs::remove_dir(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("cannot remove {}", p.display()))
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}
