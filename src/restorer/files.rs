//! The regular files of a restore while their content arrives: creating them
//! (never through a symlink), writing blobs at their offsets with holes for
//! zero blocks, counting the blob placements still missing, finishing a file
//! once its last one is written (length, metadata, optional verification),
//! and remembering why a file failed. Every file is reached relative to
//! its directory's open handle (held by the file while it is in flight), by
//! its name, never through a symlink, whatever the length of its path.
//! Files are reopened for every range that writes to them, so a restore of
//! many files holds few descriptors; a reopened file must be the very inode
//! this restore created.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::apply_metadata_fd;
use super::dirs::{clear_at, Dir};
use crate::dirfd;
use crate::format::tree::Node;
use crate::repo::index::MasterIndex;
use crate::repo::Repository;

/// A regular file to restore: where it goes and what the snapshot says of it.
pub(super) struct FileTarget {
    /// Path relative to the restore target, for messages.
    pub rel: PathBuf,
    /// The directory it goes in; its name there is `node.name`.
    pub dir: Arc<Dir>,
    pub node: Node,
}

/// Why a file was not restored, and whether what was written must go.
struct Failure {
    message: String,
    remove: bool,
}

#[derive(Default)]
struct FileState {
    /// (device, inode) of the file this restore created; `None` until then.
    identity: Option<(u64, u64)>,
    /// Blob placements not yet written.
    pending: usize,
    /// Length of the restored content: the sum of its blobs' lengths.
    size: u64,
    complete: bool,
    failure: Option<Failure>,
}

/// What became of the files once no more content arrives.
pub(super) struct FilesOutcome {
    /// Relative path, length (the sum of its blobs) and recorded size of
    /// every complete file.
    pub restored: Vec<(PathBuf, u64, u64)>,
    /// Relative path and reason for every file not restored.
    pub failures: Vec<(PathBuf, String)>,
}

pub(super) struct FileTable {
    files: Vec<FileTarget>,
    states: Vec<Mutex<FileState>>,
    /// Restore owners (only as root).
    owners: bool,
    verify: bool,
}

impl FileTable {
    pub fn new(files: Vec<FileTarget>, owners: bool, verify: bool) -> FileTable {
        let states = files.iter().map(|_| Mutex::default()).collect();
        FileTable { files, states, owners, verify }
    }

    pub fn files(&self) -> &[FileTarget] {
        &self.files
    }

    fn state(&self, file: usize) -> MutexGuard<'_, FileState> {
        self.states[file].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates every file empty, mode 0600, replacing a non-directory in the
    /// way; a file that cannot be created is failed.
    pub fn create_all(&self) {
        for (i, target) in self.files.iter().enumerate() {
            match create(target) {
                Ok(identity) => self.state(i).identity = Some(identity),
                Err(message) => self.fail_keeping(i, message),
            }
        }
    }

    /// Records how many blob placements file `file` waits for and its final length.
    pub fn expect(&self, file: usize, placements: usize, size: u64) {
        let mut state = self.state(file);
        state.pending = placements;
        state.size = size;
    }

    /// Whether the file was created and has not failed.
    pub fn is_live(&self, file: usize) -> bool {
        let state = self.state(file);
        state.identity.is_some() && state.failure.is_none()
    }

    /// Fails a file whose content is wrong or incomplete: it is removed later.
    pub fn fail(&self, file: usize, message: String) {
        self.record_failure(file, Failure { message, remove: true });
    }

    /// Fails a file whose bytes are right (or that was never created): it stays.
    fn fail_keeping(&self, file: usize, message: String) {
        self.record_failure(file, Failure { message, remove: false });
    }

    fn record_failure(&self, file: usize, failure: Failure) {
        let mut state = self.state(file);
        if state.failure.is_none() {
            state.failure = Some(failure);
        }
    }

    /// Opens a created file for positional writes, refusing anything that is
    /// not the inode this restore created there.
    pub fn open_for_writing(&self, file: usize) -> io::Result<File> {
        let identity = self.state(file).identity;
        let target = &self.files[file];
        let opened = dirfd::open_write_at(target.dir.file(), &target.node.name)?;
        let meta = opened.metadata()?;
        if identity != Some((meta.dev(), meta.ino())) {
            return Err(io::Error::other("the file was replaced while it was being restored"));
        }
        Ok(opened)
    }

    /// Counts one placement of file `file` as written; once the last one is,
    /// finishes the file. Returns whether the file is now complete.
    pub fn placement_written(&self, file: usize, repo: &Repository, index: &MasterIndex) -> bool {
        {
            let mut state = self.state(file);
            if state.failure.is_some() || state.pending == 0 {
                return false;
            }
            state.pending -= 1;
            if state.pending > 0 {
                return false;
            }
        }
        self.finish(file, repo, index)
    }

    /// Finishes every live file that waits for no blob (empty files).
    pub fn finish_empty(&self, repo: &Repository, index: &MasterIndex) {
        for i in 0..self.files.len() {
            let ready = {
                let state = self.state(i);
                state.identity.is_some() && state.failure.is_none() && state.pending == 0 && !state.complete
            };
            if ready {
                self.finish(i, repo, index);
            }
        }
    }

    /// Sets the final length, applies metadata and, if asked, verifies.
    fn finish(&self, file: usize, repo: &Repository, index: &MasterIndex) -> bool {
        let target = &self.files[file];
        let size = self.state(file).size;
        let opened = self.open_for_writing(file);
        let sized = opened.and_then(|f| f.set_len(size).map(|()| f));
        let f = match sized {
            Ok(f) => f,
            Err(e) => {
                self.fail(file, format!("cannot set length: {e}"));
                return false;
            }
        };
        if let Err(e) = apply_metadata_fd(&f, &target.node, self.owners, &target.rel.display()) {
            self.fail_keeping(file, format!("cannot set metadata: {e}"));
            return false;
        }
        drop(f);
        if self.verify {
            if let Err(e) = verify_file(repo, index, target) {
                self.fail(file, format!("verification failed: {e}"));
                return false;
            }
        }
        self.state(file).complete = true;
        true
    }

    /// Fails every live file that is still waiting for content (after a
    /// worker died): nothing will write the rest.
    pub fn fail_unfinished(&self, message: &str) {
        for i in 0..self.files.len() {
            if self.is_live(i) && !self.state(i).complete {
                self.fail(i, message.to_string());
            }
        }
    }

    /// Removes every file this restore created whose content is not complete
    /// (when a restore is abandoned): none is left with wrong or missing bytes.
    pub fn remove_incomplete(&self) {
        for (i, target) in self.files.iter().enumerate() {
            let state = self.state(i);
            let bytes_right = state.complete || state.failure.as_ref().is_some_and(|f| !f.remove);
            if state.identity.is_some() && !bytes_right {
                remove_created(target, state.identity);
            }
        }
    }

    /// Removes the failed files whose bytes are wrong and reports what became
    /// of every file.
    pub fn into_outcome(self) -> FilesOutcome {
        let mut outcome = FilesOutcome { restored: Vec::new(), failures: Vec::new() };
        for (target, state) in self.files.into_iter().zip(self.states) {
            let state = state.into_inner().unwrap_or_else(|p| p.into_inner());
            match state.failure {
                Some(failure) => {
                    if failure.remove && state.identity.is_some() {
                        remove_created(&target, state.identity);
                    }
                    outcome.failures.push((target.rel, failure.message));
                }
                None if state.complete => outcome.restored.push((target.rel, state.size, target.node.size)),
                None => {}
            }
        }
        outcome
    }
}

/// Creates an empty file (mode 0600) for `target` and returns its (device, inode).
fn create(target: &FileTarget) -> Result<(u64, u64), String> {
    let (dir, name) = (target.dir.file(), target.node.name.as_slice());
    clear_at(dir, name).map_err(|e| format!("cannot replace existing entry: {e}"))?;
    let file = dirfd::create_file_at(dir, name, 0o600).map_err(|e| format!("cannot create: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot create: {e}"))?;
    Ok((meta.dev(), meta.ino()))
}

/// Removes a file this restore created, unless something else took its place.
fn remove_created(target: &FileTarget, identity: Option<(u64, u64)>) {
    let (dir, name) = (target.dir.file(), target.node.name.as_slice());
    let ours = dirfd::metadata_at(dir, name).is_ok_and(|m| m.is_file() && Some((m.dev(), m.ino())) == identity);
    if ours {
        if let Err(e) = dirfd::unlink_at(dir, name, false) {
            tracing::warn!(path = %target.rel.display(), error = %e, "cannot remove a file that was not restored");
        }
    }
}

/// Size of the blocks checked for zeros; all-zero blocks become holes.
const HOLE_BLOCK: usize = 4096;

/// Writes `data` at `offset`, skipping every 4 KiB block that is all zeros so
/// that the file system leaves a hole there. Runs of data blocks are written
/// in one call.
pub(super) fn write_sparse(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + HOLE_BLOCK).min(data.len());
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (true, Some(start)) => {
                file.write_all_at(&data[start..pos], offset + start as u64)?;
                run_start = None;
            }
            (false, None) => run_start = Some(pos),
            _ => {}
        }
        pos = end;
    }
    if let Some(start) = run_start {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

/// Re-reads a restored file and checks every chunk against its id.
fn verify_file(repo: &Repository, index: &MasterIndex, target: &FileTarget) -> Result<(), String> {
    let node = &target.node;
    let file = dirfd::open_file_at(target.dir.file(), &node.name).map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    for id in &node.content {
        let loc = index.lookup(id).ok_or("blob missing from the index")?;
        let mut buf = vec![0u8; loc.raw_len as usize];
        file.read_exact_at(&mut buf, offset).map_err(|e| format!("cannot re-read: {e}"))?;
        if repo.keys().data_id(&buf) != *id {
            return Err(format!("content differs from the snapshot at offset {offset}"));
        }
        offset += buf.len() as u64;
    }
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != offset {
        return Err(format!("restored length {len} differs from {offset}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;

    #[test]
    fn sparse_writes_reproduce_the_data_and_leave_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[10] = 1;
        data[500_000..500_010].copy_from_slice(b"0123456789");
        data[(1 << 20) - 1] = 9;
        write_sparse(&file, &data, 4096).unwrap();
        file.set_len(4096 + data.len() as u64).unwrap();
        let back = fs::read(&path).unwrap();
        assert_eq!(&back[4096..], &data[..]);
        assert!(back[..4096].iter().all(|&b| b == 0));
        assert!(fs::metadata(&path).unwrap().blocks() * 512 <= 64 << 10);
    }

    #[test]
    fn a_replaced_file_is_not_written_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let target = FileTarget {
            rel: PathBuf::from("f"),
            dir: Arc::new(Dir::open_target(dir.path()).unwrap()),
            node: Node::new(b"f".to_vec(), crate::format::tree::NodeKind::File),
        };
        let table = FileTable::new(vec![target], false, false);
        table.create_all();
        assert!(table.is_live(0));
        // Moved away rather than removed, so that its inode number stays taken.
        fs::rename(&path, dir.path().join("moved")).unwrap();
        fs::write(&path, b"someone else's").unwrap();
        assert!(table.open_for_writing(0).is_err());
        table.fail(0, "data lost: test".into());
        let outcome = table.into_outcome();
        assert_eq!(outcome.failures, vec![(PathBuf::from("f"), "data lost: test".to_string())]);
        assert_eq!(fs::read(&path).unwrap(), b"someone else's");
    }
}
