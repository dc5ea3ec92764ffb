//! The repository's head (docs/format.md §23): sealing and opening it,
//! choosing the newest one a backend offers, refusing one older than the
//! cache saw before, and writing a new one after a command changed the
//! index objects or snapshots. Only for backends that keep a head; for the
//! others every method here does nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use super::{RepoError, Repository, Result};
use crate::format::envelope::{open_payload, seal_payload};
use crate::format::head::{Head, HEAD_DOMAIN};
use crate::format::{associated_data, expansion_cap, Id, ObjectKind};
use crate::host;

/// What this process knows about the head.
#[derive(Default)]
pub(super) struct HeadState {
    /// The highest generation seen: in storage, in the cache, or written.
    generation: AtomicU64,
    /// An index object or snapshot was stored since the head was written.
    dirty: AtomicBool,
    /// The newest head opened or written.
    current: Mutex<Option<Head>>,
}

impl HeadState {
    pub(super) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }
}

impl Repository {
    /// Where the cache keeps this copy's head generation.
    fn head_scope(&self) -> String {
        crate::cache::head_scope(self.config().created_ns)
    }

    /// The highest head generation this process has seen.
    pub(super) fn head_generation(&self) -> u64 {
        self.inner.head.generation.load(Ordering::SeqCst)
    }

    /// Makes the next head written be above `generation`.
    pub(super) fn raise_head_generation(&self, generation: u64) {
        self.inner.head.generation.fetch_max(generation, Ordering::SeqCst);
    }

    fn seal_head(&self, head: &Head) -> Result<Vec<u8>> {
        let env = seal_payload(&head.encode(), self.config().compression_level)
            .map_err(|e| RepoError::Invalid(format!("the head cannot be sealed: {e}")))?;
        Ok(self.keys().seal.seal(&associated_data(self.repo_id(), HEAD_DOMAIN, &Id::ZERO), &env))
    }

    /// Authenticates and decodes one candidate head.
    pub fn open_head(&self, sealed: &[u8]) -> Result<Head> {
        let damaged = |e: &dyn std::fmt::Display| RepoError::Damaged { what: "head".into(), reason: e.to_string() };
        let env = self
            .keys()
            .seal
            .open(&associated_data(self.repo_id(), HEAD_DOMAIN, &Id::ZERO), sealed)
            .map_err(|e| damaged(&e))?;
        let plain = open_payload(&env, expansion_cap(env.len())).map_err(|e| damaged(&e))?;
        Head::decode(&plain).map_err(|e| damaged(&e))
    }

    /// The newest head among `candidates` that opens.
    fn newest_head(&self, candidates: &[Bytes]) -> Option<Head> {
        candidates
            .iter()
            .filter_map(|c| match self.open_head(c) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a head that does not open");
                    None
                }
            })
            .max_by_key(|h| h.generation)
    }

    /// Takes the head from the candidates the backend found cheaply (or,
    /// when none of them will do, from a scan), refuses one older than the
    /// cache saw before, and remembers its generation.
    pub(super) async fn adopt_head(&self, candidates: Vec<Bytes>) -> Result<()> {
        if !self.backend().keeps_head() {
            return Ok(());
        }
        let seen = self.cache().and_then(|c| c.head_generation(&self.head_scope()).ok().flatten()).unwrap_or(0);
        let mut best = self.newest_head(&candidates);
        if best.as_ref().is_none_or(|h| h.generation < seen) {
            // The pinned head is gone, unpinned, foreign or old: look at every head.
            best = self
                .newest_head(&self.backend().heads(true).await?)
                .into_iter()
                .chain(best)
                .max_by_key(|h| h.generation);
        }
        match &best {
            Some(h) if h.generation < seen => {
                return Err(RepoError::Damaged {
                    what: format!("repository head at {}", self.backend().location()),
                    reason: format!(
                        "its generation {} is older than generation {seen}, which this machine saw before: \
                         the repository was rolled back or its newest head removed",
                        h.generation
                    ),
                })
            }
            Some(h) => tracing::debug!(generation = h.generation, "repository head"),
            None => tracing::warn!("the repository has no head; the next command that changes it writes one"),
        }
        let generation = best.as_ref().map_or(0, |h| h.generation).max(seen);
        self.inner.head.generation.fetch_max(generation, Ordering::SeqCst);
        if let Some(cache) = self.cache() {
            if let Err(e) = cache.raise_head_generation(&self.head_scope(), generation) {
                tracing::debug!(error = %e, "could not remember the head generation");
            }
        }
        *self.inner.head.current.lock().unwrap_or_else(|e| e.into_inner()) = best;
        Ok(())
    }

    /// The newest head this process opened or wrote.
    pub fn head(&self) -> Option<Head> {
        self.inner.head.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether an index object or snapshot was stored since the head was written.
    pub fn head_is_stale(&self) -> bool {
        self.inner.head.dirty.load(Ordering::SeqCst)
    }

    /// Writes a new head naming every index object and snapshot now stored,
    /// one generation above any seen. Written last, after the objects it
    /// names. Returns the generation, or `None` if the backend keeps no head.
    pub async fn write_head(&self) -> Result<Option<u64>> {
        if !self.backend().keeps_head() {
            return Ok(None);
        }
        self.inner.head.dirty.store(false, Ordering::SeqCst);
        let indexes = self.backend().list(ObjectKind::Index).await?.into_iter().map(|o| o.id).collect();
        let snapshots = self.backend().list(ObjectKind::Snapshot).await?.into_iter().map(|o| o.id).collect();
        let generation = self.inner.head.generation.load(Ordering::SeqCst) + 1;
        let head = Head { generation, time_ns: host::now_ns(), indexes, snapshots };
        let result = match self.seal_head(&head) {
            Ok(sealed) => self.backend().put_head(Bytes::from(sealed)).await.map_err(RepoError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.inner.head.dirty.store(true, Ordering::SeqCst);
            return Err(e);
        }
        self.inner.head.generation.fetch_max(generation, Ordering::SeqCst);
        if let Some(cache) = self.cache() {
            if let Err(e) = cache.raise_head_generation(&self.head_scope(), generation) {
                tracing::debug!(error = %e, "could not remember the head generation");
            }
        }
        tracing::debug!(generation, "head written");
        *self.inner.head.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(head);
        Ok(Some(generation))
    }
}
