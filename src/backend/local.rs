//! A repository in a local directory. Objects are files named by their hex id
//! under one directory per kind (packs fanned out by their first byte). Writes
//! go to `tmp/`, are synced, then renamed into place and the directory synced,
//! so an object is either complete or absent even across a crash. What a
//! killed writer left in `tmp/` is removed by the first write of a later run
//! once it is a day old: no write in progress keeps a file there that long.
//! Only the owner may read a repository: directories are made 0700, objects
//! 0600 and key slots 0400, since anyone who can copy the key slots can guess
//! passwords offline.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, BackendError, ObjectInfo, Result};
use crate::format::{Id, ObjectKind};

/// The directories of a local repository.
const LAYOUT: [&str; 6] = ["keys", "packs", "index", "snapshots", "locks", "tmp"];

/// Age after which a file in `tmp/` is a leftover of a killed write.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

pub struct LocalBackend {
    root: Arc<PathBuf>,
    /// Whether this process already looked for stale files in `tmp/`.
    swept: AtomicBool,
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { root: Arc::new(root.into()), swept: AtomicBool::new(false) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn object_path(root: &Path, kind: ObjectKind, id: &Id) -> PathBuf {
    match kind {
        ObjectKind::Config => root.join("config"),
        ObjectKind::Pack => {
            let hex = id.to_hex();
            root.join(kind.name()).join(&hex[..2]).join(hex)
        }
        _ => root.join(kind.name()).join(id.to_hex()),
    }
}

/// Mode of every directory a local repository has.
const DIR_MODE: u32 = 0o700;
/// Mode of an object file; key slots are read-only besides.
const FILE_MODE: u32 = 0o600;
const KEY_FILE_MODE: u32 = 0o400;

fn file_mode(kind: ObjectKind) -> u32 {
    if kind == ObjectKind::Key {
        KEY_FILE_MODE
    } else {
        FILE_MODE
    }
}

/// Creates `dir` (and missing parents) with mode 0700; an existing
/// directory is left as it is.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// The paths of a local repository that other local users may read or
/// enter, with their modes: the root, its directories, `config` and the key
/// slots. A path whose mode grants the group or others anything counts.
fn exposed_paths(root: &Path) -> Vec<(String, u32)> {
    let mut paths = vec![root.to_path_buf(), root.join("config")];
    paths.extend(LAYOUT.iter().map(|d| root.join(d)));
    if let Ok(entries) = fs::read_dir(root.join("keys")) {
        paths.extend(entries.flatten().map(|e| e.path()));
    }
    paths
        .into_iter()
        .filter_map(|p| {
            let mode = fs::symlink_metadata(&p).ok()?.permissions().mode() & 0o7777;
            (mode & 0o077 != 0).then(|| {
                let rel = p.strip_prefix(root).ok().filter(|r| !r.as_os_str().is_empty());
                (rel.map_or_else(|| p.display().to_string(), |r| r.display().to_string()), mode)
            })
        })
        .collect()
}

/// Whether `name` is a fan-out directory of `packs/`: two lowercase hex digits.
fn is_fan_out_dir(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Runs blocking file work off the async executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Permanent { message: format!("storage task failed: {e}") })?
}

fn io_err(kind: ObjectKind, id: &Id, path: &Path, e: std::io::Error) -> BackendError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BackendError::not_found(kind, id)
    } else {
        BackendError::from_io(e, path.display())
    }
}

/// A file's modification time in ns since the epoch: when the object was
/// renamed into place, since objects are never modified.
fn modified_ns(meta: &fs::Metadata) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    meta.mtime().checked_mul(1_000_000_000)?.checked_add(meta.mtime_nsec())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes the files in `tmp` last modified before `now - STALE_TMP`;
/// returns how many. Best effort: what cannot be read or removed stays.
fn sweep_stale_tmp(tmp: &Path, now: SystemTime) -> usize {
    let Ok(entries) = fs::read_dir(tmp) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_TMP));
        if stale && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn create(&self) -> Result<()> {
        let root = self.root.clone();
        blocking(move || {
            if root.join("config").exists() {
                return Err(BackendError::Occupied { message: "a repository already exists there".into() });
            }
            // An empty directory, or what an interrupted init left (only our
            // own layout, without a config), may become a repository.
            if root.exists() {
                for entry in fs::read_dir(&*root).map_err(|e| BackendError::from_io(e, root.display()))? {
                    let entry = entry.map_err(|e| BackendError::from_io(e, root.display()))?;
                    if !LAYOUT.contains(&entry.file_name().to_string_lossy().as_ref()) {
                        return Err(BackendError::Occupied {
                            message: "the directory exists and holds other files; give an empty or new directory"
                                .into(),
                        });
                    }
                }
            }
            // The root's parents are the user's business; the root is ours.
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(|e| BackendError::from_io(e, parent.display()))?;
            }
            create_private_dir(&root).map_err(|e| BackendError::from_io(e, root.display()))?;
            for dir in LAYOUT {
                let p = root.join(dir);
                create_private_dir(&p).map_err(|e| BackendError::from_io(e, p.display()))?;
            }
            for b in 0..=255u8 {
                let p = root.join("packs").join(format!("{b:02x}"));
                create_private_dir(&p).map_err(|e| BackendError::from_io(e, p.display()))?;
            }
            Ok(())
        })
        .await
    }

    async fn put(&self, kind: ObjectKind, id: &Id, data: Bytes) -> Result<()> {
        let root = self.root.clone();
        let id = *id;
        let sweep = !self.swept.swap(true, Ordering::Relaxed);
        blocking(move || {
            if sweep {
                let removed = sweep_stale_tmp(&root.join("tmp"), SystemTime::now());
                if removed > 0 {
                    tracing::info!(removed, "removed what interrupted writes left in tmp/");
                }
            }
            let dest = object_path(&root, kind, &id);
            let tmp = root.join("tmp").join(format!("{}-{}", id.to_hex(), Id::random().short()));
            let write = || -> std::io::Result<()> {
                let mut f = OpenOptions::new().write(true).create_new(true).mode(file_mode(kind)).open(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()?;
                drop(f);
                let parent = dest.parent().expect("object paths have a parent");
                if !parent.exists() {
                    create_private_dir(parent)?;
                }
                fs::rename(&tmp, &dest)?;
                sync_dir(parent)
            };
            write().map_err(|e| {
                let _ = fs::remove_file(&tmp);
                BackendError::from_io(e, format!("writing {}", dest.display()))
            })
        })
        .await
    }

    async fn get(&self, kind: ObjectKind, id: &Id) -> Result<Bytes> {
        let path = object_path(&self.root, kind, id);
        let id = *id;
        blocking(move || fs::read(&path).map(Bytes::from).map_err(|e| io_err(kind, &id, &path, e))).await
    }

    async fn get_range(&self, kind: ObjectKind, id: &Id, offset: u64, len: u32) -> Result<Bytes> {
        let path = object_path(&self.root, kind, id);
        let id = *id;
        blocking(move || {
            let f = File::open(&path).map_err(|e| io_err(kind, &id, &path, e))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, offset).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    BackendError::Permanent {
                        message: format!("{} is shorter than the requested range {}+{}", path.display(), offset, len),
                    }
                } else {
                    io_err(kind, &id, &path, e)
                }
            })?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    /// The object files: every kind listed, the config included.
    async fn stored_items(&self) -> Result<Option<super::StoredItems>> {
        let mut count = 0;
        for kind in ObjectKind::ALL {
            count += self.list(kind).await?.len() as u64;
        }
        Ok(Some(super::StoredItems { count, unit: "files" }))
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        blocking(move || {
            if kind == ObjectKind::Config {
                let p = root.join("config");
                return match fs::metadata(&p) {
                    Ok(m) => Ok(vec![ObjectInfo::new(Id::ZERO, m.len(), modified_ns(&m))]),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
                    Err(e) => Err(BackendError::from_io(e, p.display())),
                };
            }
            let base = root.join(kind.name());
            // (directory, the two hex digits its packs' names must start with)
            let dirs = if kind == ObjectKind::Pack {
                let mut dirs = Vec::new();
                for entry in fs::read_dir(&base).map_err(|e| BackendError::from_io(e, base.display()))? {
                    let entry = entry.map_err(|e| BackendError::from_io(e, base.display()))?;
                    let Some(fan_out) = entry.file_name().to_str().filter(|n| is_fan_out_dir(n)).map(String::from)
                    else {
                        continue;
                    };
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        dirs.push((entry.path(), Some(fan_out)));
                    }
                }
                dirs
            } else {
                vec![(base, None)]
            };
            let mut out = Vec::new();
            for (dir, fan_out) in dirs {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(BackendError::from_io(e, dir.display())),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| BackendError::from_io(e, dir.display()))?;
                    // Names that are not ids in lowercase hex (editor droppings,
                    // partial copies), and packs outside their fan-out directory
                    // (where a read would not look), are not objects.
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let Some(id) = Id::from_stored_name(name) else { continue };
                    if fan_out.as_deref().is_some_and(|f| !name.starts_with(f)) {
                        continue;
                    }
                    let meta = entry.metadata().map_err(|e| BackendError::from_io(e, entry.path().display()))?;
                    out.push(ObjectInfo::new(id, meta.len(), modified_ns(&meta)));
                }
            }
            Ok(out)
        })
        .await
    }

    fn readable_by_others(&self) -> Option<String> {
        let exposed = exposed_paths(&self.root);
        if exposed.is_empty() {
            return None;
        }
        const SHOWN: usize = 4;
        let mut list: Vec<String> = exposed.iter().take(SHOWN).map(|(p, m)| format!("{p} {m:04o}")).collect();
        if exposed.len() > SHOWN {
            list.push(format!("{} more", exposed.len() - SHOWN));
        }
        Some(format!(
            "repository {} is readable by other local users ({}): they can copy its key slots (keys/) and guess \
             passwords offline; run `chmod -R go-rwx {}`",
            self.root.display(),
            list.join(", "),
            self.root.display()
        ))
    }

    async fn delete(&self, kind: ObjectKind, id: &Id) -> Result<()> {
        let path = object_path(&self.root, kind, id);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::from_io(e, path.display())),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listing_ignores_names_that_are_not_lowercase_hex_ids() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().await.unwrap();
        let id = Id([0xab; 32]);
        backend.put(ObjectKind::Snapshot, &id, Bytes::from_static(b"x")).await.unwrap();
        let snapshots = dir.path().join("repo/snapshots");
        fs::write(snapshots.join(Id([0xcd; 32]).to_hex().to_uppercase()), b"y").unwrap();
        fs::write(snapshots.join(format!("{}.tmp", Id([0xef; 32]).to_hex())), b"z").unwrap();
        let listed: Vec<Id> = backend.list(ObjectKind::Snapshot).await.unwrap().into_iter().map(|o| o.id).collect();
        assert_eq!(listed, vec![id]);
    }

    #[tokio::test]
    async fn listing_ignores_a_pack_outside_its_fan_out_directory() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().await.unwrap();
        let placed = Id([0x12; 32]);
        backend.put(ObjectKind::Pack, &placed, Bytes::from_static(b"pack")).await.unwrap();
        let packs = dir.path().join("repo/packs");
        let misplaced = Id([0x34; 32]);
        fs::write(packs.join("12").join(misplaced.to_hex()), b"elsewhere").unwrap();
        fs::write(packs.join(Id([0x56; 32]).to_hex()), b"not fanned out").unwrap();
        fs::create_dir(packs.join("AB")).unwrap();
        fs::write(packs.join("AB").join(Id([0xab; 32]).to_hex()), b"uppercase directory").unwrap();
        let listed: Vec<Id> = backend.list(ObjectKind::Pack).await.unwrap().into_iter().map(|o| o.id).collect();
        assert_eq!(listed, vec![placed]);
        assert!(backend.get(ObjectKind::Pack, &misplaced).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn leftovers_of_killed_writes_are_removed_once_a_day_old() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().await.unwrap();
        let tmp = dir.path().join("repo/tmp");
        let old = tmp.join("aaaa-leftover");
        let recent = tmp.join("bbbb-in-progress");
        for path in [&old, &recent] {
            fs::write(path, b"partial pack").unwrap();
        }
        let two_days_ago = SystemTime::now() - 2 * STALE_TMP;
        File::options().write(true).open(&old).unwrap().set_modified(two_days_ago).unwrap();

        backend.put(ObjectKind::Snapshot, &Id([1; 32]), Bytes::from_static(b"x")).await.unwrap();
        assert!(!old.exists(), "a day-old leftover is removed");
        assert!(recent.exists(), "a file another writer may still be writing stays");
        assert_eq!(backend.get(ObjectKind::Snapshot, &Id([1; 32])).await.unwrap(), Bytes::from_static(b"x"));
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1, "the put left nothing of its own");
    }

    #[tokio::test]
    async fn objects_and_directories_are_private_and_exposure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new/repo");
        let backend = LocalBackend::new(&root);
        backend.create().await.unwrap();
        backend.put(ObjectKind::Key, &Id([1; 32]), Bytes::from_static(b"k")).await.unwrap();
        backend.put(ObjectKind::Pack, &Id([2; 32]), Bytes::from_static(b"p")).await.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("packs/02")), 0o700);
        assert_eq!(mode(&object_path(&root, ObjectKind::Key, &Id([1; 32]))), 0o400);
        assert_eq!(mode(&object_path(&root, ObjectKind::Pack, &Id([2; 32]))), 0o600);
        assert_eq!(backend.readable_by_others(), None);
        fs::set_permissions(root.join("keys"), fs::Permissions::from_mode(0o755)).unwrap();
        let warning = backend.readable_by_others().unwrap();
        assert!(warning.contains("keys 0755"), "{warning}");
    }
}
