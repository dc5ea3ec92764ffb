//! Looking after the cache directory as a whole (`tstor cache`): which
//! repositories have a cache there, how large each is and when it was last
//! used, and removing those not used for a while (a repository deleted or
//! moved leaves its cache behind), as restic's `cache --cleanup` does.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::CacheError;
#[cfg(test)]
use super::CACHE_FILE;

/// One repository's cache directory.
#[derive(Clone, Debug)]
pub struct CacheEntry {
    /// The repository id (the directory's name, 64 hex digits).
    pub repo_id: String,
    pub path: PathBuf,
    /// Bytes of the files inside.
    pub bytes: u64,
    /// When the cache was last written (its newest file's modification time).
    pub last_used: SystemTime,
}

impl CacheEntry {
    /// How long ago it was last used (zero for a time in the future).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.last_used).unwrap_or_default()
    }
}

fn io_err(path: &Path, e: std::io::Error) -> CacheError {
    super::err(path, e)
}

/// The repository caches under `dir`, oldest first. Anything else in the
/// directory (its CACHEDIR.TAG, files of other programs) is left out.
pub fn list(dir: &Path) -> Result<Vec<CacheEntry>, CacheError> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_repo_dir = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_repo_dir || !entry.file_type().map_err(|e| io_err(&path, e))?.is_dir() {
            continue;
        }
        let (mut bytes, mut last_used) = (0, SystemTime::UNIX_EPOCH);
        for file in std::fs::read_dir(&path).map_err(|e| io_err(&path, e))? {
            let meta = file.and_then(|f| f.metadata()).map_err(|e| io_err(&path, e))?;
            bytes += meta.len();
            if let Ok(m) = meta.modified() {
                last_used = last_used.max(m);
            }
        }
        out.push(CacheEntry { repo_id: name, path, bytes, last_used });
    }
    out.sort_by_key(|e| e.last_used);
    Ok(out)
}

/// Removes the caches under `dir` not used for `max_age` and returns them.
/// A cache in use is recreated by its next command, so nothing is lost but
/// the time to download the index and trees again.
pub fn remove_older_than(dir: &Path, max_age: Duration) -> Result<Vec<CacheEntry>, CacheError> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in list(dir)? {
        if entry.age(now) < max_age {
            continue;
        }
        std::fs::remove_dir_all(&entry.path).map_err(|e| io_err(&entry.path, e))?;
        removed.push(entry);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_removes_only_repository_caches_older_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("a".repeat(64));
        let young = dir.path().join("b".repeat(64));
        for d in [&old, &young] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(CACHE_FILE), b"x").unwrap();
        }
        std::fs::write(dir.path().join("CACHEDIR.TAG"), b"tag").unwrap();
        std::fs::create_dir(dir.path().join("not-a-repo")).unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
        std::fs::File::options().write(true).open(old.join(CACHE_FILE)).unwrap().set_modified(long_ago).unwrap();
        let listed: Vec<String> = list(dir.path()).unwrap().into_iter().map(|e| e.repo_id).collect();
        assert_eq!(listed, vec!["a".repeat(64), "b".repeat(64)]);
        let removed = remove_older_than(dir.path(), Duration::from_secs(30 * 86_400)).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(!old.exists() && young.exists());
        assert!(dir.path().join("CACHEDIR.TAG").exists() && dir.path().join("not-a-repo").exists());
    }
}
