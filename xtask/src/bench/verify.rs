//! Checking a restored tree against its source: every file compared byte for
//! byte, symlink targets and directory structure compared, and entries that
//! are missing or extra counted. Permission differences are counted apart.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

#[derive(Debug, Default)]
pub struct Verification {
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub missing: u64,
    pub differing: u64,
    pub extra: u64,
    pub mode_differences: u64,
    /// A few offending paths, for the report.
    pub examples: Vec<String>,
}

impl Verification {
    pub fn mismatches(&self) -> u64 {
        self.missing + self.differing + self.extra
    }

    fn note(&mut self, what: &str, rel: &Path) {
        if self.examples.len() < 10 {
            self.examples.push(format!("{what}: {}", rel.display()));
        }
    }
}

/// Compares the tree at `restored` with the one at `source`.
pub fn compare(source: &Path, restored: &Path) -> Result<Verification> {
    let mut v = Verification::default();
    if !restored.is_dir() {
        v.missing += 1;
        v.note("restored root missing", restored);
        return Ok(v);
    }
    walk(source, restored, Path::new(""), &mut v)?;
    extras(source, restored, Path::new(""), &mut v)?;
    Ok(v)
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

fn walk(src: &Path, dst: &Path, rel: &Path, v: &mut Verification) -> Result<()> {
    for name in sorted_names(src)? {
        let (s, d, r) = (src.join(&name), dst.join(&name), rel.join(&name));
        let sm = fs::symlink_metadata(&s)?;
        let Ok(dm) = fs::symlink_metadata(&d) else {
            v.missing += 1;
            v.note("missing", &r);
            continue;
        };
        if sm.file_type() != dm.file_type() {
            v.differing += 1;
            v.note("different type", &r);
            continue;
        }
        if !sm.file_type().is_symlink() && sm.permissions().mode() & 0o7777 != dm.permissions().mode() & 0o7777 {
            v.mode_differences += 1;
        }
        if sm.is_dir() {
            v.dirs += 1;
            walk(&s, &d, &r, v)?;
        } else if sm.file_type().is_symlink() {
            if fs::read_link(&s)? != fs::read_link(&d)? {
                v.differing += 1;
                v.note("different link", &r);
            }
        } else if sm.is_file() {
            v.files += 1;
            if sm.len() != dm.len() || !same_bytes(&s, &d)? {
                v.differing += 1;
                v.note("different content", &r);
            } else {
                v.bytes += sm.len();
            }
        }
    }
    Ok(())
}

fn extras(src: &Path, dst: &Path, rel: &Path, v: &mut Verification) -> Result<()> {
    for name in sorted_names(dst)? {
        let (s, d, r) = (src.join(&name), dst.join(&name), rel.join(&name));
        match fs::symlink_metadata(&s) {
            Err(_) => {
                v.extra += 1;
                v.note("extra", &r);
            }
            Ok(sm) if sm.is_dir() && fs::symlink_metadata(&d)?.is_dir() => extras(&s, &d, &r, v)?,
            Ok(_) => {}
        }
    }
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let (na, nb) = (read_full(&mut fa, &mut ba)?, read_full(&mut fb, &mut bb)?);
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_differences() {
        let base = std::env::temp_dir().join(format!("xtask-verify-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d.join("sub")).unwrap();
            fs::write(d.join("same"), b"hello").unwrap();
            fs::write(d.join("sub/x"), b"12345").unwrap();
        }
        assert_eq!(compare(&a, &b).unwrap().mismatches(), 0);
        fs::write(b.join("sub/x"), b"12346").unwrap();
        fs::write(b.join("new"), b"").unwrap();
        fs::remove_file(b.join("same")).unwrap();
        let v = compare(&a, &b).unwrap();
        assert_eq!((v.missing, v.differing, v.extra), (1, 1, 1));
        fs::remove_dir_all(&base).unwrap();
    }
}
