//! The directories of a restore target, reached relative to open directory
//! handles: from the target's handle, each directory is opened in its
//! parent's with `O_NOFOLLOW | O_DIRECTORY`, so no path handed to the
//! system is longer than one name (a tree deeper than `PATH_MAX` allows to
//! name is restored whole) and no symlink inside the target is ever
//! followed.
//!
//! A [`DirCursor`] stands in one directory of the target at a time and keeps
//! the handles of the directories above it, the [`OPEN_PER_CURSOR`]
//! deepest of them open: moving to a directory closes what it leaves and
//! opens what it enters; going up to a directory whose handle was closed
//! opens it again as the `..` of the one left, which must be the very
//! directory (device and inode) opened on the way down. Each cursor thus
//! holds a bounded number of handles however deep the tree, and memory
//! follows the depth of the path it stands at.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use crate::dirfd;

/// Directory handles a cursor keeps open at most.
pub(super) const OPEN_PER_CURSOR: usize = 64;

/// An open directory of the target.
pub(super) struct Dir {
    file: File,
    /// (device, inode), to know it again when it is opened anew.
    identity: (u64, u64),
}

impl Dir {
    fn new(file: File) -> io::Result<Dir> {
        let meta = file.metadata()?;
        Ok(Dir { file, identity: (meta.dev(), meta.ino()) })
    }

    /// Opens the target itself (a symlink naming it is the user's choice,
    /// and followed).
    pub fn open_target(path: &std::path::Path) -> io::Result<Dir> {
        Dir::new(File::open(path)?)
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

/// One directory of the path a cursor stands at.
struct Level {
    /// End of its name in the cursor's path.
    end: usize,
    dir: Option<Arc<Dir>>,
    identity: (u64, u64),
}

/// A position in the target's directories, with the handles that reach it.
pub(super) struct DirCursor {
    /// The target; none in a dry run whose target does not exist.
    root: Option<Arc<Dir>>,
    levels: Vec<Level>,
    /// `levels[lo..]` hold open handles, those above them (`levels[..lo]`) none.
    lo: usize,
    /// The path of the directory it stands at, relative to the target:
    /// names joined by `/`.
    path: Vec<u8>,
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "the target does not exist")
}

impl DirCursor {
    pub fn new(root: Option<Arc<Dir>>) -> DirCursor {
        DirCursor { root, levels: Vec::new(), lo: 0, path: Vec::new() }
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.levels[i - 1].end + 1
        }
    }

    fn name(&self, i: usize) -> &[u8] {
        &self.path[self.start(i)..self.levels[i].end]
    }

    fn top(&self) -> io::Result<Arc<Dir>> {
        match self.levels.last() {
            None => self.root.clone().ok_or_else(not_found),
            Some(level) => level.dir.clone().ok_or_else(|| io::Error::other("directory handle closed")),
        }
    }

    /// The directory at `rel` (names relative to the target joined by `/`;
    /// empty for the target), opened without following a symlink; the
    /// cursor stands there afterwards (or as far down as it got).
    pub fn open(&mut self, rel: &[u8]) -> io::Result<Arc<Dir>> {
        if rel == self.path.as_slice() && self.lo < self.levels.len() {
            return self.top();
        }
        let mut names = rel.split(|&b| b == b'/').filter(|n| !n.is_empty()).peekable();
        let mut common = 0;
        while common < self.levels.len() && names.peek() == Some(&self.name(common)) {
            names.next();
            common += 1;
        }
        while self.levels.len() > common {
            self.pop();
        }
        self.ensure_top_open()?;
        for name in names {
            self.push(name)?;
        }
        self.top()
    }

    /// Makes `rel` a real directory (a symlink or file in the way is
    /// removed), the directory above it being reached as by [`open`]; the
    /// cursor stands in it afterwards.
    ///
    /// [`open`]: DirCursor::open
    pub fn make(&mut self, rel: &[u8]) -> io::Result<Arc<Dir>> {
        let (parent, name) = split_last(rel);
        let dir = self.open(parent)?;
        ensure_dir_at(dir.file(), name)?;
        self.push(name)?;
        self.top()
    }

    /// Enters `name` of the directory the cursor stands in, whose handle is open.
    fn push(&mut self, name: &[u8]) -> io::Result<()> {
        let parent = self.top()?;
        let dir = Arc::new(Dir::new(dirfd::open_dir_at(parent.file(), name)?)?);
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name);
        self.levels.push(Level { end: self.path.len(), identity: dir.identity, dir: Some(dir) });
        while self.levels.len() - self.lo > OPEN_PER_CURSOR {
            self.levels[self.lo].dir = None;
            self.lo += 1;
        }
        Ok(())
    }

    /// Leaves the directory the cursor stands in for the one above it,
    /// opening that one as `..` if its handle was closed.
    fn pop(&mut self) {
        let left = self.levels.pop().expect("a level to leave");
        let start = self.start(self.levels.len());
        self.path.truncate(start.saturating_sub(1));
        let len = self.levels.len();
        self.lo = self.lo.min(len);
        if len == 0 || self.lo < len {
            return;
        }
        let Some(child) = left.dir else { return };
        let expected = self.levels[len - 1].identity;
        let reopened = dirfd::open_dir_at(child.file(), b"..").and_then(Dir::new);
        match reopened {
            Ok(dir) if dir.identity == expected => {
                self.levels[len - 1].dir = Some(Arc::new(dir));
                self.lo = len - 1;
            }
            // Opened again from the target down when next needed.
            _ => {}
        }
    }

    /// Opens the handles of the path the cursor stands at again, from the
    /// target down, when none is open; each directory must be the one
    /// opened before.
    fn ensure_top_open(&mut self) -> io::Result<()> {
        let len = self.levels.len();
        if len == 0 || self.lo < len {
            return Ok(());
        }
        let keep_from = len.saturating_sub(OPEN_PER_CURSOR);
        let mut parent = self.root.clone().ok_or_else(not_found)?;
        for i in 0..len {
            let dir = Arc::new(Dir::new(dirfd::open_dir_at(parent.file(), self.name(i))?)?);
            if dir.identity != self.levels[i].identity {
                return Err(io::Error::other("a directory was replaced while being restored"));
            }
            if i >= keep_from {
                self.levels[i].dir = Some(dir.clone());
            }
            parent = dir;
        }
        self.lo = keep_from;
        Ok(())
    }
}

/// Splits `a/b/c` into `a/b` and `c`.
pub(super) fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Makes `name` in `dir` a real directory: a symlink or file in the way is removed.
fn ensure_dir_at(dir: &File, name: &[u8]) -> io::Result<()> {
    match dirfd::metadata_at(dir, name) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            dirfd::unlink_at(dir, name, false)?;
            dirfd::make_dir_at(dir, name, 0o777)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => dirfd::make_dir_at(dir, name, 0o777),
        Err(e) => Err(e),
    }
}

/// Removes a non-directory in the way of a new entry `name` of `dir`.
pub(super) fn clear_at(dir: &File, name: &[u8]) -> io::Result<()> {
    match dirfd::metadata_at(dir, name) {
        Ok(m) if m.is_dir() => Err(io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the way")),
        Ok(_) => dirfd::unlink_at(dir, name, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reaches_any_depth_with_few_handles() {
        let t = tempfile::tempdir().unwrap();
        let root = Arc::new(Dir::open_target(t.path()).unwrap());
        let mut cursor = DirCursor::new(Some(root));
        let levels = 3 * OPEN_PER_CURSOR + 5;
        let mut rel = Vec::new();
        for i in 0..levels {
            if i > 0 {
                rel.push(b'/');
            }
            rel.extend_from_slice(format!("level{i}").as_bytes());
            cursor.make(&rel).unwrap();
            assert!(cursor.levels.len() - cursor.lo <= OPEN_PER_CURSOR);
        }
        assert!(rel.len() > 1000);
        // Up one by one (each through `..`), then down again and sideways.
        let mut up = rel.clone();
        for _ in 0..levels - 1 {
            up.truncate(split_last(&up).0.len());
            let dir = cursor.open(&up).unwrap();
            assert_eq!(dir.identity, cursor.levels.last().unwrap().identity);
            assert!(cursor.lo < cursor.levels.len(), "the handle above was opened again through `..`");
        }
        cursor.open(&rel).unwrap();
        assert_eq!(cursor.levels.len(), levels);
        cursor.make(b"level0/side").unwrap();
        assert!(cursor.open(&rel).is_ok());
        // A symlink in the way of a directory is never followed.
        std::os::unix::fs::symlink(t.path(), t.path().join("level0/link")).unwrap();
        assert!(cursor.open(b"level0/link").is_err());
        cursor.make(b"level0/link").unwrap();
        assert!(t.path().join("level0/link").symlink_metadata().unwrap().is_dir());
        assert!(cursor.open(b"missing/x").is_err());
        assert!(DirCursor::new(None).open(b"").is_err());
    }
}
