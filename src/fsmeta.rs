//! File-system metadata: turning `lstat` results into tree nodes when backing
//! up, and applying a node's owner, mode, times and extended attributes when
//! restoring. Nothing here follows a symlink.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::format::tree::{Node, NodeKind};

/// The node kind of an `lstat` result.
pub fn node_kind(meta: &Metadata) -> NodeKind {
    let t = meta.file_type();
    if t.is_symlink() {
        NodeKind::Symlink
    } else if t.is_dir() {
        NodeKind::Dir
    } else if t.is_file() {
        NodeKind::File
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_socket() {
        NodeKind::Socket
    } else if t.is_char_device() {
        NodeKind::CharDevice
    } else {
        NodeKind::BlockDevice
    }
}

/// A node carrying everything `lstat` says; content, subtree and symlink
/// target are filled in by the caller.
pub fn node_from_metadata(name: Vec<u8>, meta: &Metadata) -> Node {
    let kind = node_kind(meta);
    let mut n = Node::new(name, kind);
    n.mode = meta.mode() & 0o7777;
    n.uid = meta.uid();
    n.gid = meta.gid();
    n.mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    n.ctime_ns = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
    n.size = if kind == NodeKind::File { meta.size() } else { 0 };
    n.inode = meta.ino();
    n.device = meta.dev();
    n.links = meta.nlink();
    if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        n.rdev = meta.rdev();
    }
    n
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Extended attributes of `path` (not following a symlink), sorted by name.
/// File systems without xattr support give an empty list.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = cpath(path)?;
    // SAFETY: a NULL buffer of size 0 asks for the needed size.
    let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) | Some(libc::ENOSYS) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: the buffer is valid for its length.
    let size = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(size as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split on NUL");
        // SAFETY: as above.
        let len = unsafe { libc::lgetxattr(p.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            continue;
        }
        let mut value = vec![0u8; len as usize];
        // SAFETY: the buffer is valid for its length.
        let len = unsafe { libc::lgetxattr(p.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            continue;
        }
        value.truncate(len as usize);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Writes extended attributes on `path` itself (a symlink is not followed).
pub fn write_xattrs(path: &Path, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let p = cpath(path)?;
    for (name, value) in xattrs {
        let cname = CString::new(name.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name contains NUL"))?;
        // SAFETY: pointers and lengths are valid.
        check(unsafe { libc::lsetxattr(p.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) })?;
    }
    Ok(())
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec { tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t, tv_nsec: ns.rem_euclid(1_000_000_000) as _ }
}

/// Sets access and modification times with nanoseconds, on the link itself
/// for symlinks.
pub fn set_times(path: &Path, atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let p = cpath(path)?;
    let times = [timespec(atime_ns), timespec(mtime_ns)];
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

// ---- restoring: on an open handle, or relative to a directory handle ----

fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// Sets the owner of the open file or directory `f` (only meaningful as root).
pub fn set_owner_fd(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    check(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })
}

/// Sets the permission bits of the open file or directory `f`.
pub fn set_mode_fd(f: &File, mode: u32) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    check(unsafe { libc::fchmod(f.as_raw_fd(), (mode & 0o7777) as libc::mode_t) })
}

/// Sets access and modification times of the open file or directory `f`.
pub fn set_times_fd(f: &File, atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let times = [timespec(atime_ns), timespec(mtime_ns)];
    // SAFETY: a valid descriptor and a two-element timespec array.
    check(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) })
}

/// Writes extended attributes on the open file or directory `f`.
pub fn write_xattrs_fd(f: &File, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    for (name, value) in xattrs {
        let cname = CString::new(name.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name contains NUL"))?;
        // SAFETY: a valid descriptor; pointers and lengths are valid.
        check(unsafe { libc::fsetxattr(f.as_raw_fd(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) })?;
    }
    Ok(())
}

/// Sets the owner of the entry `name` of `dir`, not following a symlink.
pub fn set_owner_at(dir: &File, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
}

/// Sets the permission bits of the entry `name` of `dir`, which is not a
/// symlink: never through one (where the C library cannot refuse to follow,
/// it is asked plainly).
pub fn set_mode_at(dir: &File, name: &[u8], mode: u32) -> io::Result<()> {
    let n = cname(name)?;
    let mode = (mode & 0o7777) as libc::mode_t;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let rc = unsafe { libc::fchmodat(dir.as_raw_fd(), n.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
            // SAFETY: as above.
            check(unsafe { libc::fchmodat(dir.as_raw_fd(), n.as_ptr(), mode, 0) })
        }
        _ => Err(e),
    }
}

/// Sets access and modification times of the entry `name` of `dir`, on
/// the link itself for a symlink.
pub fn set_times_at(dir: &File, name: &[u8], atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let n = cname(name)?;
    let times = [timespec(atime_ns), timespec(mtime_ns)];
    // SAFETY: a valid descriptor, a NUL-terminated name and a two-element array.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), n.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// The `S_IF*` file type bits of a special file's kind.
pub fn special_file_type(kind: NodeKind) -> io::Result<libc::mode_t> {
    match kind {
        NodeKind::Fifo => Ok(libc::S_IFIFO),
        NodeKind::CharDevice => Ok(libc::S_IFCHR),
        NodeKind::BlockDevice => Ok(libc::S_IFBLK),
        NodeKind::Socket => Ok(libc::S_IFSOCK),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a special file")),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}
