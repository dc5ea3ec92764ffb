//! `dump`: one file of a snapshot written to a stream, or a directory (or
//! the whole snapshot) as a tar or zip archive, under a shared lock.
//!
//! Streaming: file content is read one data blob at a time (with the next
//! few already being fetched) and written on, and trees are walked depth
//! first with one frame per directory on the current path, so memory follows
//! the largest blob and the widest directory, never the size of a file or
//! of the snapshot.
//!
//! Entries are named by their path inside the snapshot, without a leading
//! `/` (`work/src/main.rs`), as restic names them; a dumped directory's
//! entries are those below it. Tar (POSIX pax where ustar is not enough:
//! long names and link targets, large ids, sizes and times, xattrs as
//! `SCHILY.xattr.*`) keeps modes, owners (numeric: trees record no names),
//! modification times, symlinks, hard links (a file whose device and inode
//! were already written becomes a link to the first path), FIFOs and
//! devices; sockets cannot be archived and are skipped. Zip keeps permission
//! bits (not setuid, setgid or sticky), times from 1980 on, and symlinks;
//! hard links become separate files, and FIFOs, sockets and devices are
//! skipped. Every skipped entry is named in the summary.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::forget::SnapshotFilter;
use super::inspect::{push_name, resolve_path, Target};
use crate::format::tree::{device_major, device_minor, Node, NodeKind};
use crate::format::Id;
use crate::repo::index::MasterIndex;
use crate::repo::lock;
use crate::repo::{RepoError, Repository};

/// Blob reads of one file in flight ahead of the one being written: they
/// hide storage latency (a Telegram round trip) at the cost of that many
/// blobs in memory.
const READ_AHEAD: usize = 3;

/// The archive a directory is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveFormat {
    Tar,
    Zip,
}

/// What a dump wrote.
#[derive(Debug, Default, Serialize)]
pub struct DumpSummary {
    pub snapshot_id: String,
    /// The path inside the snapshot that was dumped (empty: all of it).
    pub path: String,
    /// `file` (its content, as is) or the archive format.
    pub written_as: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// FIFOs and devices.
    pub special: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries the archive format cannot hold, with what they are.
    pub skipped: Vec<SkippedEntry>,
}

#[derive(Debug, Serialize)]
pub struct SkippedEntry {
    pub path: String,
    pub kind: &'static str,
}

/// Why a dump failed: the repository, or the stream written to.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot write the output: {0}")]
    Write(#[source] io::Error),
}

/// Writes `subpath` of the snapshot `spec` (`latest` under `filter`, an id
/// or prefix) to `out`: a regular file's content as is, a directory as
/// `format`. Anything else is refused, and so is a directory when
/// `archive_allowed` is false (the caller's `out` is a terminal).
pub async fn dump(
    repo: &Repository,
    spec: &str,
    filter: &SnapshotFilter,
    subpath: &[Vec<u8>],
    format: ArchiveFormat,
    out: Box<dyn Write + Send>,
    archive_allowed: bool,
) -> Result<DumpSummary, DumpError> {
    let guard = lock::acquire(repo, false).await?;
    let result = async {
        let (id, snap) = super::select::find_snapshot(repo, spec, filter).await?;
        let index = Arc::new(repo.load_index_lenient().await?);
        let target = resolve_path(repo, &index, &snap.tree, subpath).await?;
        if matches!(target, Target::Dir(_)) && !archive_allowed {
            return Err(RepoError::Invalid(
                "standard output is a terminal: redirect it, or give --target, to receive an archive".into(),
            )
            .into());
        }
        let prefix = subpath.join(&b'/');
        let mut summary = DumpSummary {
            snapshot_id: id.to_hex(),
            path: String::from_utf8_lossy(&prefix).into_owned(),
            ..Default::default()
        };
        let (repo, handle) = (repo.clone(), Handle::current());
        let job = tokio::task::spawn_blocking(move || {
            let mut dumper = Dumper { repo, index, handle, failure: Arc::new(Mutex::new(None)) };
            dumper.run(target, prefix, format, out, &mut summary).map(|()| summary)
        });
        job.await.map_err(|e| RepoError::Invalid(format!("the dump task failed: {e}")))?
    }
    .await;
    guard.release().await;
    result
}

/// The blocking half: reads through the runtime's handle, writes to `out`.
struct Dumper {
    repo: Repository,
    index: Arc<MasterIndex>,
    handle: Handle,
    /// A repository error met while a content reader was being read; the
    /// archive writer sees only an `io::Error`.
    failure: Arc<Mutex<Option<RepoError>>>,
}

impl Dumper {
    fn run(
        &mut self,
        target: Target,
        prefix: Vec<u8>,
        format: ArchiveFormat,
        out: Box<dyn Write + Send>,
        summary: &mut DumpSummary,
    ) -> Result<(), DumpError> {
        let mut out = io::BufWriter::with_capacity(1 << 20, out);
        match target {
            Target::Entry(node) if node.kind == NodeKind::File => {
                summary.written_as = "file".into();
                let mut content = self.content(&node);
                let copied = io::copy(&mut content, &mut out);
                let copied = self.check(copied)?;
                summary.files = 1;
                summary.bytes = copied;
                out.flush().map_err(DumpError::Write)
            }
            Target::Entry(node) => Err(RepoError::Invalid(format!(
                "`{}` is a {}; dump writes a file, or a directory as an archive",
                String::from_utf8_lossy(&prefix),
                node.kind.name()
            ))
            .into()),
            Target::Dir(tree) => {
                summary.written_as = match format {
                    ArchiveFormat::Tar => "tar",
                    ArchiveFormat::Zip => "zip",
                }
                .into();
                let sink = match format {
                    ArchiveFormat::Tar => Sink::Tar(Box::new(tar::Builder::new(out))),
                    ArchiveFormat::Zip => Sink::Zip(Box::new(zip::ZipWriter::new_stream(out))),
                };
                self.archive(tree, prefix, sink, summary)
            }
        }
    }

    /// A reader of a regular file's content, one blob at a time.
    fn content(&self, node: &Node) -> ContentReader {
        ContentReader {
            repo: self.repo.clone(),
            index: Arc::clone(&self.index),
            handle: self.handle.clone(),
            blobs: node.content.clone().into_iter(),
            ahead: VecDeque::new(),
            size: node.size,
            produced: 0,
            buf: Vec::new(),
            pos: 0,
            failure: Arc::clone(&self.failure),
        }
    }

    /// Turns an I/O error into the repository error behind it, if any.
    fn check<T>(&self, r: io::Result<T>) -> Result<T, DumpError> {
        r.map_err(|e| match self.failure.lock().ok().and_then(|mut f| f.take()) {
            Some(repo_error) => DumpError::Repo(repo_error),
            None => DumpError::Write(e),
        })
    }

    fn archive(
        &mut self,
        root: Id,
        prefix: Vec<u8>,
        mut sink: Sink,
        summary: &mut DumpSummary,
    ) -> Result<(), DumpError> {
        // (device, inode) of files with several links already written, and where.
        let mut linked: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        let mut path = prefix;
        let first = self.handle.block_on(self.repo.load_tree(&self.index, &root))?;
        let mut stack: Vec<(usize, std::vec::IntoIter<Node>)> = vec![(path.len(), first.nodes.into_iter())];
        while let Some((dir_len, entries)) = stack.last_mut() {
            let Some(node) = entries.next() else {
                stack.pop();
                continue;
            };
            path.truncate(*dir_len);
            push_name(&mut path, &node.name);
            let shown = || String::from_utf8_lossy(&path).into_owned();
            match node.kind {
                NodeKind::Dir => {
                    let r = sink.dir(&path, &node);
                    self.check(r)?;
                    summary.dirs += 1;
                    if let Some(sub) = node.subtree {
                        let tree = self.handle.block_on(self.repo.load_tree(&self.index, &sub))?;
                        stack.push((path.len(), tree.nodes.into_iter()));
                    }
                }
                NodeKind::File => {
                    let key = (node.device, node.inode);
                    if node.links > 1 {
                        if let Some(first) = linked.get(&key) {
                            let r = sink.hardlink(&path, &node, first);
                            if self.check(r)? {
                                summary.hardlinks += 1;
                                continue;
                            }
                        }
                    }
                    let mut content = self.content(&node);
                    let r = sink.file(&path, &node, &mut content);
                    self.check(r)?;
                    summary.files += 1;
                    summary.bytes += node.size;
                    if node.links > 1 {
                        linked.entry(key).or_insert_with(|| path.clone());
                    }
                }
                NodeKind::Symlink => {
                    let r = sink.symlink(&path, &node);
                    self.check(r)?;
                    summary.symlinks += 1;
                }
                NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                    let r = sink.special(&path, &node);
                    if self.check(r)? {
                        summary.special += 1;
                    } else {
                        summary.skipped.push(SkippedEntry { path: shown(), kind: node.kind.name() });
                    }
                }
            }
        }
        let r = sink.finish();
        self.check(r)
    }
}

/// Reads a file's content blob by blob; refuses to give more or fewer
/// bytes than the node's size, since the archive header announced it.
struct ContentReader {
    repo: Repository,
    index: Arc<MasterIndex>,
    handle: Handle,
    blobs: std::vec::IntoIter<Id>,
    /// Reads of the next blobs, already started.
    ahead: VecDeque<JoinHandle<Result<Vec<u8>, RepoError>>>,
    size: u64,
    produced: u64,
    buf: Vec<u8>,
    pos: usize,
    failure: Arc<Mutex<Option<RepoError>>>,
}

impl ContentReader {
    /// Starts reads of the next blobs, up to [`READ_AHEAD`] in flight, and
    /// returns the next blob's plaintext (`None` after the last).
    fn next_blob(&mut self) -> Option<Result<Vec<u8>, RepoError>> {
        while self.ahead.len() < READ_AHEAD {
            let Some(id) = self.blobs.next() else { break };
            let (repo, index) = (self.repo.clone(), Arc::clone(&self.index));
            self.ahead.push_back(self.handle.spawn(async move { repo.read_blob(&index, &id).await }));
        }
        let read = self.ahead.pop_front()?;
        Some(self.handle.block_on(read).unwrap_or_else(|e| Err(RepoError::Invalid(format!("a blob read failed: {e}")))))
    }

    fn fail(&self, e: RepoError) -> io::Error {
        let message = e.to_string();
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(e);
        }
        io::Error::other(message)
    }
}

impl Read for ContentReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(read) = self.next_blob() else {
                if self.produced != self.size {
                    return Err(self.fail(RepoError::Damaged {
                        what: "a file's content".into(),
                        reason: format!("its blobs hold {} bytes, its size is {}", self.produced, self.size),
                    }));
                }
                return Ok(0);
            };
            match read {
                Ok(raw) => {
                    self.buf = raw;
                    self.pos = 0;
                }
                Err(e) => return Err(self.fail(e)),
            }
            self.produced += self.buf.len() as u64;
            if self.produced > self.size {
                return Err(self.fail(RepoError::Damaged {
                    what: "a file's content".into(),
                    reason: format!("its blobs hold more than its size of {} bytes", self.size),
                }));
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ContentReader {
    /// Reads started ahead of a failure are not waited for.
    fn drop(&mut self) {
        for read in &self.ahead {
            read.abort();
        }
    }
}

type Out = io::BufWriter<Box<dyn Write + Send>>;

/// The archive being written.
enum Sink {
    Tar(Box<tar::Builder<Out>>),
    Zip(Box<zip::ZipWriter<zip::write::StreamWriter<Out>>>),
}

/// The largest value a ustar numeric field of `digits` octal digits holds.
fn octal_max(digits: u32) -> u64 {
    (1u64 << (3 * digits)) - 1
}

/// A pax extended header record: key and value.
type PaxRecord = (String, Vec<u8>);

/// A ustar header for `node` at `path`, and the pax records it needs.
fn tar_header(
    path: &[u8],
    node: &Node,
    entry_type: tar::EntryType,
    size: u64,
    link: Option<&[u8]>,
) -> io::Result<(tar::Header, Vec<PaxRecord>)> {
    let mut pax: Vec<PaxRecord> = Vec::new();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(entry_type);
    h.set_mode(node.mode & 0o7777);
    let mut name = path.to_vec();
    if entry_type == tar::EntryType::Directory {
        name.push(b'/');
    }
    {
        let old = h.as_old_mut();
        if name.len() > old.name.len() {
            pax.push(("path".into(), name.clone()));
        }
        let n = name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&name[..n]);
        if let Some(link) = link {
            if link.len() > old.linkname.len() {
                pax.push(("linkpath".into(), link.to_vec()));
            }
            let n = link.len().min(old.linkname.len());
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
    }
    for (key, id) in [("uid", node.uid), ("gid", node.gid)] {
        let fits = u64::from(id) <= octal_max(7);
        if !fits {
            pax.push((key.into(), id.to_string().into_bytes()));
        }
        let v = if fits { u64::from(id) } else { 0 };
        if key == "uid" {
            h.set_uid(v);
        } else {
            h.set_gid(v);
        }
    }
    let secs = node.mtime_ns.div_euclid(1_000_000_000);
    match u64::try_from(secs) {
        Ok(s) if s <= octal_max(11) => h.set_mtime(s),
        _ => {
            pax.push(("mtime".into(), secs.to_string().into_bytes()));
            h.set_mtime(0);
        }
    }
    if size > octal_max(11) {
        pax.push(("size".into(), size.to_string().into_bytes()));
    }
    h.set_size(size);
    if matches!(entry_type, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(device_major(node.rdev))?;
        h.set_device_minor(device_minor(node.rdev))?;
    }
    for (name, value) in &node.xattrs {
        if let Ok(name) = std::str::from_utf8(name) {
            pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
        }
    }
    h.set_cksum();
    Ok((h, pax))
}

/// A zip entry name: the path as UTF-8 (invalid bytes replaced).
fn zip_name(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn zip_options(node: &Node) -> zip::write::SimpleFileOptions {
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(node.mode & 0o7777)
        .large_file(node.size >= u64::from(u32::MAX));
    match zip_time(node.mtime_ns) {
        Some(t) => opts.last_modified_time(t),
        None => opts,
    }
}

/// A zip (MS-DOS) time, in local time as zip tools read it, when the time
/// is within its range (1980–2107).
fn zip_time(ns: i64) -> Option<zip::DateTime> {
    let t = crate::time::zoned(ns, &crate::time::local());
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .ok()
}

fn zip_error(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl Sink {
    fn tar_entry(
        b: &mut tar::Builder<Out>,
        path: &[u8],
        node: &Node,
        entry_type: tar::EntryType,
        size: u64,
        link: Option<&[u8]>,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let (h, pax) = tar_header(path, node, entry_type, size, link)?;
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        b.append(&h, data)
    }

    fn dir(&mut self, path: &[u8], node: &Node) -> io::Result<()> {
        match self {
            Sink::Tar(b) => Self::tar_entry(b, path, node, tar::EntryType::Directory, 0, None, &mut io::empty()),
            Sink::Zip(z) => z.add_directory(zip_name(path), zip_options(node)).map_err(zip_error),
        }
    }

    fn file(&mut self, path: &[u8], node: &Node, content: &mut dyn Read) -> io::Result<()> {
        match self {
            Sink::Tar(b) => Self::tar_entry(b, path, node, tar::EntryType::Regular, node.size, None, content),
            Sink::Zip(z) => {
                z.start_file(zip_name(path), zip_options(node)).map_err(zip_error)?;
                io::copy(content, z.as_mut()).map(|_| ())
            }
        }
    }

    /// A hard link to `first`; false when the format has none (write a copy).
    fn hardlink(&mut self, path: &[u8], node: &Node, first: &[u8]) -> io::Result<bool> {
        match self {
            Sink::Tar(b) => {
                Self::tar_entry(b, path, node, tar::EntryType::Link, 0, Some(first), &mut io::empty()).map(|()| true)
            }
            Sink::Zip(_) => Ok(false),
        }
    }

    fn symlink(&mut self, path: &[u8], node: &Node) -> io::Result<()> {
        match self {
            Sink::Tar(b) => {
                Self::tar_entry(b, path, node, tar::EntryType::Symlink, 0, Some(&node.symlink_target), &mut io::empty())
            }
            Sink::Zip(z) => {
                z.add_symlink(zip_name(path), zip_name(&node.symlink_target), zip_options(node)).map_err(zip_error)
            }
        }
    }

    /// FIFOs, devices and sockets; false when the format cannot hold one.
    fn special(&mut self, path: &[u8], node: &Node) -> io::Result<bool> {
        let entry_type = match node.kind {
            NodeKind::Fifo => tar::EntryType::Fifo,
            NodeKind::CharDevice => tar::EntryType::Char,
            NodeKind::BlockDevice => tar::EntryType::Block,
            _ => return Ok(false),
        };
        match self {
            Sink::Tar(b) => Self::tar_entry(b, path, node, entry_type, 0, None, &mut io::empty()).map(|()| true),
            Sink::Zip(_) => Ok(false),
        }
    }

    fn finish(self) -> io::Result<()> {
        let mut out = match self {
            Sink::Tar(b) => b.into_inner()?,
            Sink::Zip(z) => z.finish().map_err(zip_error)?.into_inner(),
        };
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_move_what_ustar_cannot_hold_to_pax_records() {
        let mut node = Node::new(b"x".to_vec(), NodeKind::File);
        node.mode = 0o4755;
        node.uid = 3_000_000;
        node.gid = 7;
        node.mtime_ns = -1_500_000_000;
        node.xattrs = vec![(b"user.a".to_vec(), b"v".to_vec())];
        let long = vec![b'a'; 150];
        let (h, pax) = tar_header(&long, &node, tar::EntryType::Regular, 1 << 34, None).unwrap();
        let keys: Vec<&str> = pax.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["path", "uid", "mtime", "size", "SCHILY.xattr.user.a"]);
        assert_eq!(pax[0].1, long);
        assert_eq!(pax[1].1, b"3000000");
        assert_eq!(pax[2].1, b"-2");
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.gid().unwrap(), 7);
        let (_, none) =
            tar_header(b"short", &Node::new(b"s".to_vec(), NodeKind::File), tar::EntryType::Regular, 3, None).unwrap();
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn zip_times_outside_the_dos_range_are_left_out() {
        assert!(zip_time(0).is_none(), "1970 is before 1980");
        let t = zip_time(1_700_000_000 * 1_000_000_000).unwrap();
        assert_eq!((t.year(), t.month(), t.day()), (2023, 11, 14));
    }
}
