//! Sealed objects kept on disk instead of in memory while they wait to be
//! stored: one unnamed temporary file per object, in a directory the caller
//! names (the repository's cache directory). The file has no name
//! (`O_TMPFILE`, or a name removed at once where the filesystem cannot make
//! unnamed files), so it is gone when it is closed or the process ends,
//! however it ends: nothing is left for a later run to clean up. Only sealed
//! bytes (whole packs) are ever written to it, never plaintext.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// One sealed object in an unnamed temporary file.
#[derive(Debug)]
pub struct SpilledObject {
    file: File,
    len: u64,
}

/// Opens an unnamed file for reading and writing in `dir`, mode 0600.
fn unnamed_file(dir: &Path) -> io::Result<File> {
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match unnamed {
        Ok(f) => Ok(f),
        // Filesystems without O_TMPFILE: a fresh name, removed at once.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {
            let path = dir.join(format!(".spill-{}-{:016x}", std::process::id(), rand::random::<u64>()));
            let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

impl SpilledObject {
    /// Writes `data` to a new unnamed file in `dir`.
    pub fn write(dir: &Path, data: &[u8]) -> io::Result<SpilledObject> {
        let mut file = unnamed_file(dir)?;
        file.write_all(data)?;
        Ok(SpilledObject { file, len: data.len() as u64 })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` bytes from `offset`, which must lie within the object.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{offset}+{len} lies beyond a {}-byte spilled object", self.len),
            ));
        }
        let mut out = vec![0; len];
        self.file.read_exact_at(&mut out, offset)?;
        Ok(out)
    }

    /// The whole object, back in memory.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len).map_err(|_| io::Error::other("spilled object too large"))?;
        self.read_at(0, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spilled_object_reads_back_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let spilled = SpilledObject::write(dir.path(), &data).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spill file has no name");
        assert_eq!(spilled.len(), data.len() as u64);
        assert_eq!(spilled.read_at(99_000, 1000).unwrap(), &data[99_000..]);
        assert_eq!(spilled.read_all().unwrap(), data);
        assert!(spilled.read_at(99_001, 1000).is_err(), "a read past the end fails");
    }
}
