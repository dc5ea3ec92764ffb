//! Reaching a directory tree relative to open directory handles (`openat`
//! and friends), so that the archiver reads and the restorer writes entries
//! whose absolute path is longer than `PATH_MAX`, and a directory renamed or
//! replaced by a symlink meanwhile is never followed. Nothing here follows a
//! symlink.

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The longest path the system resolves in one call.
const PATH_MAX: usize = libc::PATH_MAX as usize;

fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name holds a NUL byte"))
}

/// Opens `name` in `dir` with `flags` (plus `O_NOFOLLOW | O_CLOEXEC`).
fn open_at(dir: &File, name: &[u8], flags: libc::c_int) -> io::Result<File> {
    let name = cname(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens the directory at `path` (a backup root) without following a symlink.
pub fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(path)
}

/// Opens the directory `name` in `dir`.
pub fn open_dir_at(dir: &File, name: &[u8]) -> io::Result<File> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// Opens the entry `name` in `dir` for reading without following a symlink
/// and without blocking on a FIFO that replaced a file.
pub fn open_file_at(dir: &File, name: &[u8]) -> io::Result<File> {
    open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK)
}

/// Creates the directory `name` in `dir` with permission bits `mode`.
pub fn make_dir_at(dir: &File, name: &[u8], mode: u32) -> io::Result<()> {
    let name = cname(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
}

/// Creates the regular file `name` in `dir`, which must not exist, empty,
/// with permission bits `mode`, and opens it for writing.
pub fn create_file_at(dir: &File, name: &[u8], mode: u32) -> io::Result<File> {
    let name = cname(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens the entry `name` in `dir` for writing (a symlink is not followed).
pub fn open_write_at(dir: &File, name: &[u8]) -> io::Result<File> {
    open_at(dir, name, libc::O_WRONLY | libc::O_NONBLOCK)
}

/// Removes the entry `name` of `dir`: a directory (which must be empty)
/// with `dir_too`, anything else without.
pub fn unlink_at(dir: &File, name: &[u8], dir_too: bool) -> io::Result<()> {
    let name = cname(name)?;
    let flags = if dir_too { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: a valid descriptor and a NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// Removes the entry `name` of `dir` and, if it is a directory, everything
/// inside it, walking with an explicit stack (one handle per level) and
/// never through a symlink.
pub fn remove_all_at(dir: &File, name: &[u8]) -> io::Result<()> {
    if !metadata_at(dir, name)?.is_dir() {
        return unlink_at(dir, name, false);
    }
    let top = open_dir_at(dir, name)?;
    let names = list_dir(&top)?;
    // Each level: its handle, its name in the level above, the names left.
    let mut stack: Vec<(File, Vec<u8>, Vec<Vec<u8>>)> = vec![(top, name.to_vec(), names)];
    while let Some((handle, _, names)) = stack.last_mut() {
        let Some(entry) = names.pop() else {
            let (_, own, _) = stack.pop().expect("a level is on the stack");
            let parent = stack.last().map_or(dir, |(h, _, _)| h);
            unlink_at(parent, &own, true)?;
            continue;
        };
        match unlink_at(handle, &entry, false) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                let sub = open_dir_at(handle, &entry)?;
                let names = list_dir(&sub)?;
                stack.push((sub, entry, names));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the symlink `name` in `dir` pointing at `target` (unchanged bytes).
pub fn symlink_at(target: &[u8], dir: &File, name: &[u8]) -> io::Result<()> {
    let target = cname(target)?;
    let name = cname(name)?;
    // SAFETY: a valid descriptor and NUL-terminated strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// Makes `new_name` in `new_dir` a hard link of `old_name` in `old_dir`
/// (a symlink there is linked itself, never followed).
pub fn link_at(old_dir: &File, old_name: &[u8], new_dir: &File, new_name: &[u8]) -> io::Result<()> {
    let old = cname(old_name)?;
    let new = cname(new_name)?;
    // SAFETY: valid descriptors and NUL-terminated names.
    check(unsafe { libc::linkat(old_dir.as_raw_fd(), old.as_ptr(), new_dir.as_raw_fd(), new.as_ptr(), 0) })
}

/// Makes the FIFO or device node `name` in `dir` (`file_type` is one of
/// the `S_IF*` bits).
pub fn mknod_at(dir: &File, name: &[u8], file_type: libc::mode_t, mode: u32, rdev: u64) -> io::Result<()> {
    let name = cname(name)?;
    let mode = file_type | (mode & 0o777) as libc::mode_t;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev as libc::dev_t) })
}

/// A path naming the entry `name` of `dir` through `/proc/self/fd`, for
/// the calls that take only paths (extended attributes of a symlink or a
/// special file): resolved from the handle, whatever the length of the
/// entry's path, and without following `name` when the call does not.
pub fn proc_path(dir: &File, name: &[u8]) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(OsStr::from_bytes(name));
    p
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `lstat` of `name` in `dir`: the metadata of the entry itself (a
/// symlink's own, not its target's), read through an `O_PATH` handle, which
/// opens nothing (no FIFO blocks, no device is touched).
pub fn metadata_at(dir: &File, name: &[u8]) -> io::Result<Metadata> {
    open_at(dir, name, libc::O_PATH)?.metadata()
}

/// The target of the symlink `name` in `dir`.
pub fn read_link_at(dir: &File, name: &[u8]) -> io::Result<Vec<u8>> {
    let name = cname(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: a valid descriptor, name and buffer of the given length.
        let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// The names in the directory `dir` (without `.` and `..`), in no order.
pub fn list_dir(dir: &File) -> io::Result<Vec<Vec<u8>>> {
    // A handle of its own, so the listing starts at the beginning and
    // `closedir` closes only it.
    let own = open_at(dir, b".", libc::O_RDONLY | libc::O_DIRECTORY)?;
    let fd: RawFd = std::os::fd::IntoRawFd::into_raw_fd(own);
    // SAFETY: `fd` is an open directory descriptor whose ownership passes
    // to the stream.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: the stream did not take the descriptor.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; `readdir` reports an error only
        // through it.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: a valid stream.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) { Ok(()) } else { Err(e) };
        }
        // SAFETY: `d_name` is NUL-terminated and valid until the next
        // `readdir` on this stream.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    };
    // SAFETY: a valid stream, closed once.
    unsafe { libc::closedir(stream) };
    result.map(|()| names)
}

/// A path that names the entry `name` of `dir` for calls that only take
/// paths (extended attributes): `full` when the system can resolve it,
/// otherwise the same entry through `/proc/self/fd`.
pub fn path_for_call(full: &Path, dir: &File, name: &[u8]) -> PathBuf {
    if full.as_os_str().len() < PATH_MAX {
        return full.to_path_buf();
    }
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(OsStr::from_bytes(name));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_relative_to_a_handle() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();
        std::fs::write(t.path().join("sub/f"), b"content").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("sub/link")).unwrap();
        let root = open_dir(t.path()).unwrap();
        let sub = open_dir_at(&root, b"sub").unwrap();
        let mut names = list_dir(&sub).unwrap();
        names.sort();
        assert_eq!(names, vec![b"f".to_vec(), b"link".to_vec()]);
        assert!(metadata_at(&sub, b"link").unwrap().file_type().is_symlink());
        assert_eq!(metadata_at(&sub, b"f").unwrap().len(), 7);
        assert_eq!(read_link_at(&sub, b"link").unwrap(), b"f");
        assert!(open_dir_at(&root, b"nothing").is_err());
        assert!(open_file_at(&sub, b"link").is_err(), "a symlink is not followed");
        let mut s = String::new();
        std::io::Read::read_to_string(&mut open_file_at(&sub, b"f").unwrap(), &mut s).unwrap();
        assert_eq!(s, "content");
        let long = Path::new("/").join("x".repeat(5000));
        let p = path_for_call(&long, &sub, b"f");
        assert_eq!(std::fs::read(p).unwrap(), b"content");
    }

    #[test]
    fn writes_entries_relative_to_a_handle() {
        use std::io::Write;
        let t = tempfile::tempdir().unwrap();
        let root = open_dir(t.path()).unwrap();
        make_dir_at(&root, b"d", 0o755).unwrap();
        let d = open_dir_at(&root, b"d").unwrap();
        create_file_at(&d, b"f", 0o600).unwrap().write_all(b"abc").unwrap();
        assert!(create_file_at(&d, b"f", 0o600).is_err(), "an existing file is not opened");
        symlink_at(b"/etc/passwd", &d, b"l").unwrap();
        assert!(open_write_at(&d, b"l").is_err(), "a symlink is not followed");
        link_at(&d, b"f", &root, b"hard").unwrap();
        assert_eq!(std::fs::read(t.path().join("hard")).unwrap(), b"abc");
        mknod_at(&d, b"fifo", libc::S_IFIFO, 0o600, 0).unwrap();
        assert_eq!(std::fs::read(proc_path(&d, b"f")).unwrap(), b"abc");
        // Nested deeper than any handle held at once, with a symlink out.
        let mut level = open_dir_at(&d, b".").unwrap();
        for _ in 0..50 {
            make_dir_at(&level, b"x", 0o755).unwrap();
            level = open_dir_at(&level, b"x").unwrap();
        }
        symlink_at(t.path().to_str().unwrap().as_bytes(), &level, b"out").unwrap();
        remove_all_at(&root, b"d").unwrap();
        assert!(metadata_at(&root, b"d").is_err());
        assert_eq!(std::fs::read(t.path().join("hard")).unwrap(), b"abc", "nothing removed through the symlink");
    }
}
