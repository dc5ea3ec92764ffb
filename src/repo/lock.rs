//! Repository locks. Commands that read or add data hold a shared lock;
//! commands that delete data hold an exclusive one. A lock is a stored object
//! refreshed while its holder runs; one whose holder stopped refreshing it, or
//! whose process is gone from this host, is stale and ignored. A holder that
//! could not refresh its lock in time must not commit anything: a prune
//! elsewhere may already have treated the lock as stale.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::format::lock::Lock;
use crate::format::{Id, ObjectKind};
use crate::host;

use super::{RepoError, Repository, Result};

/// How often a held lock is refreshed.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// After this long without a refresh a lock is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// Whether `lock` no longer protects anything.
pub fn is_stale(lock: &Lock, now_ns: i64) -> bool {
    if now_ns.saturating_sub(lock.refreshed_ns) > STALE_AFTER.as_nanos() as i64 {
        return true;
    }
    lock.hostname == host::hostname() && !host::process_alive(lock.pid)
}

fn describe(l: &Lock) -> String {
    format!(
        "{} lock held by {}@{} (pid {}) since {}",
        if l.exclusive { "an exclusive" } else { "a shared" },
        l.username,
        l.hostname,
        l.pid,
        crate::format_time(l.created_ns)
    )
}

/// Every lock object that can be read, with its id.
pub async fn list_locks(repo: &Repository) -> Result<Vec<(Id, Lock)>> {
    let mut out = Vec::new();
    for info in repo.backend().list(ObjectKind::Lock).await? {
        match repo.load_object(ObjectKind::Lock, &info.id).await {
            Ok(plain) => match Lock::decode(&plain) {
                Ok(l) => out.push((info.id, l)),
                Err(e) => tracing::warn!(lock = %info.id.short(), error = %e, "ignoring an undecodable lock"),
            },
            Err(RepoError::Backend(b)) if b.is_not_found() => {}
            Err(e) => tracing::warn!(lock = %info.id.short(), error = %e, "ignoring an unreadable lock"),
        }
    }
    Ok(out)
}

/// A held lock; refreshed in the background until released.
pub struct LockGuard {
    repo: Repository,
    current: Arc<Mutex<(Id, Lock)>>,
    last_refresh_ns: Arc<AtomicI64>,
    refresher: tokio::task::JoinHandle<()>,
}

/// Takes a shared or exclusive lock, refusing if a live conflicting lock exists.
pub async fn acquire(repo: &Repository, exclusive: bool) -> Result<LockGuard> {
    let conflict = |locks: &[(Id, Lock)], own: Option<&Id>| -> Option<String> {
        let now = host::now_ns();
        locks
            .iter()
            .filter(|(id, _)| Some(id) != own)
            .filter(|(_, l)| (exclusive || l.exclusive) && !is_stale(l, now))
            .map(|(_, l)| describe(l))
            .next()
    };
    if let Some(c) = conflict(&list_locks(repo).await?, None) {
        tracing::warn!(conflict = %c, "lock conflict");
        return Err(RepoError::Locked(c));
    }
    let now = host::now_ns();
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&Id::random().0[..16]);
    let lock = Lock {
        exclusive,
        hostname: host::hostname(),
        username: host::username(),
        pid: host::pid(),
        created_ns: now,
        refreshed_ns: now,
        nonce,
    };
    let id = repo.save_object(ObjectKind::Lock, &lock.encode()).await?;
    // Two processes may have looked at the same time: look again now that
    // ours is visible, and back off if a conflicting lock appeared.
    if let Some(c) = conflict(&list_locks(repo).await?, Some(&id)) {
        let _ = repo.backend().delete(ObjectKind::Lock, &id).await;
        tracing::warn!(conflict = %c, "lock conflict");
        return Err(RepoError::Locked(c));
    }
    tracing::debug!(lock = %id.short(), exclusive, "lock taken");
    let current = Arc::new(Mutex::new((id, lock)));
    let last_refresh_ns = Arc::new(AtomicI64::new(now));
    let refresher = tokio::spawn(refresh_loop(repo.clone(), current.clone(), last_refresh_ns.clone()));
    Ok(LockGuard { repo: repo.clone(), current, last_refresh_ns, refresher })
}

async fn refresh_loop(repo: Repository, current: Arc<Mutex<(Id, Lock)>>, last: Arc<AtomicI64>) {
    loop {
        tokio::time::sleep(REFRESH_INTERVAL).await;
        let (old_id, mut lock) = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // A lock that went unrefreshed too long (a suspended or stopped
        // process) may already have been taken for stale, and one that was
        // removed (`unlock`) has been: refreshing either would let its holder
        // commit after a prune deleted what it deduplicated against. Leave it
        // expired so that `ensure_fresh` keeps failing.
        let age = host::now_ns().saturating_sub(last.load(Ordering::SeqCst));
        if age > (STALE_AFTER - REFRESH_INTERVAL).as_nanos() as i64 {
            tracing::warn!(lock = %old_id.short(), "our lock expired before it could be refreshed; nothing more will be committed");
            return;
        }
        match repo.backend().list(ObjectKind::Lock).await {
            Ok(listed) if !listed.iter().any(|o| o.id == old_id) => {
                tracing::warn!(lock = %old_id.short(), "our lock was removed by someone else; nothing more will be committed");
                last.store(i64::MIN, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
        lock.refreshed_ns = host::now_ns();
        match repo.save_object(ObjectKind::Lock, &lock.encode()).await {
            Ok(new_id) => {
                *current.lock().unwrap_or_else(|p| p.into_inner()) = (new_id, lock.clone());
                last.store(lock.refreshed_ns, Ordering::SeqCst);
                if let Err(e) = repo.backend().delete(ObjectKind::Lock, &old_id).await {
                    tracing::warn!(lock = %old_id.short(), error = %e, "could not remove the previous lock object");
                }
                tracing::debug!(lock = %new_id.short(), "lock refreshed");
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh the lock"),
        }
    }
}

impl LockGuard {
    /// Fails if the lock may have been considered stale by someone else:
    /// called right before anything is committed.
    pub fn ensure_fresh(&self) -> Result<()> {
        let age = host::now_ns().saturating_sub(self.last_refresh_ns.load(Ordering::SeqCst));
        let limit = (STALE_AFTER - REFRESH_INTERVAL).as_nanos() as i64;
        if age > limit {
            return Err(RepoError::Locked(format!(
                "our lock was last refreshed {}s ago and may have expired; nothing was committed",
                age / 1_000_000_000
            )));
        }
        Ok(())
    }

    pub fn id(&self) -> Id {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    pub fn is_exclusive(&self) -> bool {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).1.exclusive
    }

    /// Stops refreshing and removes the lock, including any copy a refresh
    /// cut short may have written.
    pub async fn release(self) {
        let LockGuard { repo, current, refresher, .. } = self;
        refresher.abort();
        let _ = refresher.await;
        let (id, lock) = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Write order: packs, index, snapshot, then the head (for backends
        // that keep one), after a command that stored an index object or a
        // snapshot, or held the lock to delete.
        if repo.backend().keeps_head() && (lock.exclusive || repo.head_is_stale()) {
            if let Err(e) = repo.write_head().await {
                tracing::warn!(error = %e, "could not write the repository head; the next command will");
            }
        }
        if let Err(e) = repo.backend().delete(ObjectKind::Lock, &id).await {
            tracing::warn!(lock = %id.short(), error = %e, "could not remove our lock; it will expire");
        }
        if let Ok(locks) = list_locks(&repo).await {
            for (other, _) in locks.iter().filter(|(other, l)| *other != id && l.nonce == lock.nonce) {
                let _ = repo.backend().delete(ObjectKind::Lock, other).await;
            }
        }
    }
}

/// Removes stale locks, or with `all` every lock object (also unreadable ones
/// and those of running processes, which notice at their next refresh and
/// then commit nothing more). Returns the ids removed, with the lock when it
/// could be read. Takes no lock itself.
pub async fn remove_locks(repo: &Repository, all: bool) -> Result<Vec<(Id, Option<Lock>)>> {
    let now = host::now_ns();
    let readable = list_locks(repo).await?;
    let mut doomed: Vec<(Id, Option<Lock>)> =
        readable.iter().filter(|(_, l)| all || is_stale(l, now)).map(|(id, l)| (*id, Some(l.clone()))).collect();
    if all {
        for info in repo.backend().list(ObjectKind::Lock).await? {
            if !readable.iter().any(|(id, _)| *id == info.id) {
                doomed.push((info.id, None));
            }
        }
    }
    for (id, _) in &doomed {
        repo.backend().delete(ObjectKind::Lock, id).await?;
        tracing::info!(lock = %id.short(), "lock removed");
    }
    Ok(doomed)
}

/// How a lock is shown to users: kind, holder, pid and when it was taken.
pub fn describe_lock(l: &Lock) -> String {
    describe(l)
}
