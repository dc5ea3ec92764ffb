//! The local cache: a redb database per repository holding sealed index
//! objects and sealed tree blobs, so that opening a repository and walking a
//! parent snapshot need not download them again, and the highest head
//! generation seen, so that a rolled-back head is noticed. It is only ever a
//! cache: the repository is the source of truth, every entry is checked
//! against it, and a missing, locked or damaged cache only costs speed.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use crate::format::Id;

/// Index object id → the object as sealed in storage.
const INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_v2");
/// Tree blob id → the blob as sealed in its pack.
const TREES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("trees_v1");
/// `generation` → the highest head generation seen.
const HEAD: TableDefinition<&str, u64> = TableDefinition::new("head_v1");

#[derive(Debug, thiserror::Error)]
#[error("cache {path}: {message}")]
pub struct CacheError {
    path: String,
    message: String,
}

pub struct Cache {
    db: Database,
    path: PathBuf,
}

fn err(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError { path: path.display().to_string(), message: e.to_string() }
}

impl Cache {
    /// Opens (or creates) the cache of repository `repo_id` under `dir`. A
    /// damaged cache file is thrown away and made anew.
    pub fn open(dir: &Path, repo_id: &Id) -> Result<Cache, CacheError> {
        let repo_dir = dir.join(repo_id.to_hex());
        create_private_dir(dir).map_err(|e| err(dir, e))?;
        create_private_dir(&repo_dir).map_err(|e| err(&repo_dir, e))?;
        let path = repo_dir.join("cache.redb");
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(err(&path, "in use by another tstor process"));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cache is damaged; rebuilding it");
                std::fs::remove_file(&path).map_err(|e| err(&path, e))?;
                Database::create(&path).map_err(|e| err(&path, e))?
            }
        };
        Ok(Cache { db, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn get(&self, table: TableDefinition<&[u8], &[u8]>, id: &Id) -> Result<Option<Vec<u8>>, CacheError> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = match tx.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(&self.path, e)),
        };
        let v = t.get(&id.0[..]).map_err(|e| err(&self.path, e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn put_many<'a>(
        &self,
        table: TableDefinition<&[u8], &[u8]>,
        items: impl IntoIterator<Item = (&'a Id, &'a [u8])>,
    ) -> Result<(), CacheError> {
        let tx = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        {
            let mut t = tx.open_table(table).map_err(|e| err(&self.path, e))?;
            for (id, v) in items {
                t.insert(&id.0[..], v).map_err(|e| err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| err(&self.path, e))
    }

    /// Ids of the index objects held.
    pub fn index_ids(&self) -> Result<Vec<Id>, CacheError> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = match tx.open_table(INDEX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(&self.path, e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(&self.path, e))? {
            let (k, _) = row.map_err(|e| err(&self.path, e))?;
            if let Ok(b) = <[u8; 32]>::try_from(k.value()) {
                out.push(Id(b));
            }
        }
        Ok(out)
    }

    pub fn index(&self, id: &Id) -> Result<Option<Vec<u8>>, CacheError> {
        self.get(INDEX, id)
    }

    pub fn put_indexes<'a>(&self, items: impl IntoIterator<Item = (&'a Id, &'a [u8])>) -> Result<(), CacheError> {
        self.put_many(INDEX, items)
    }

    /// Drops index objects the repository no longer has.
    pub fn remove_indexes(&self, ids: &[Id]) -> Result<(), CacheError> {
        let tx = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        {
            let mut t = tx.open_table(INDEX).map_err(|e| err(&self.path, e))?;
            for id in ids {
                t.remove(&id.0[..]).map_err(|e| err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| err(&self.path, e))
    }

    pub fn tree(&self, id: &Id) -> Result<Option<Vec<u8>>, CacheError> {
        self.get(TREES, id)
    }

    pub fn put_trees<'a>(&self, items: impl IntoIterator<Item = (&'a Id, &'a [u8])>) -> Result<(), CacheError> {
        self.put_many(TREES, items)
    }

    /// The highest head generation this cache has seen, if any.
    pub fn head_generation(&self) -> Result<Option<u64>, CacheError> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = match tx.open_table(HEAD) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(&self.path, e)),
        };
        let v = t.get("generation").map_err(|e| err(&self.path, e))?;
        Ok(v.map(|v| v.value()))
    }

    /// Raises the highest head generation seen to `generation` (never lowers it).
    pub fn raise_head_generation(&self, generation: u64) -> Result<(), CacheError> {
        let tx = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        {
            let mut t = tx.open_table(HEAD).map_err(|e| err(&self.path, e))?;
            let seen = t.get("generation").map_err(|e| err(&self.path, e))?.map(|v| v.value());
            if seen.is_none_or(|s| s < generation) {
                t.insert("generation", generation).map_err(|e| err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| err(&self.path, e))
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_survives_damage() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Id([1; 32]);
        {
            let c = Cache::open(dir.path(), &repo).unwrap();
            c.put_indexes([(&Id([2; 32]), &b"abc"[..])]).unwrap();
            assert_eq!(c.index(&Id([2; 32])).unwrap().unwrap(), b"abc");
            assert_eq!(c.index_ids().unwrap(), vec![Id([2; 32])]);
            assert!(c.tree(&Id([3; 32])).unwrap().is_none());
            c.remove_indexes(&[Id([2; 32])]).unwrap();
            assert!(c.index_ids().unwrap().is_empty());
            assert_eq!(c.head_generation().unwrap(), None);
            c.raise_head_generation(5).unwrap();
            c.raise_head_generation(3).unwrap();
            assert_eq!(c.head_generation().unwrap(), Some(5));
        }
        let path = dir.path().join(repo.to_hex()).join("cache.redb");
        std::fs::write(&path, b"garbage that is not a redb file at all").unwrap();
        let c = Cache::open(dir.path(), &repo).unwrap();
        assert!(c.index_ids().unwrap().is_empty());
    }
}
