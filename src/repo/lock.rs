//! Repository locks. Commands that read or add data hold a shared lock;
//! commands that delete data hold an exclusive one. A lock is a stored object
//! refreshed while its holder runs; one whose holder stopped refreshing it, or
//! whose process is gone from this host, is stale and ignored. A holder must
//! prove, right before it commits anything, that its lock is still stored and
//! fresh ([`LockGuard::ensure_held`]): a prune elsewhere may have treated it as
//! stale, or someone may have removed it, and deleted what the holder relies on.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::format::lock::Lock;
use crate::format::{Id, ObjectKind};
use crate::host;

use super::{RepoError, Repository, Result};

/// How often a held lock is refreshed.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// After this long without a refresh a lock is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A lock refreshed further than this in the future (by this host's clock)
/// comes from a host with a wrong clock or was crafted: commands still
/// respect it, but name it as such, and `unlock` removes it.
pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The refresh interval and stale limit in force. `TSTOR_LOCK_STALE_SECS`
/// shortens the stale limit (the refresh interval follows at a sixth of it);
/// it exists for tests, and every process using a repository must see the
/// same value, or one may take another's live lock for stale.
#[derive(Clone, Copy, Debug)]
pub struct LockTiming {
    pub refresh: Duration,
    pub stale: Duration,
}

pub fn timing() -> LockTiming {
    static TIMING: OnceLock<LockTiming> = OnceLock::new();
    *TIMING.get_or_init(|| {
        match std::env::var("TSTOR_LOCK_STALE_SECS").ok().and_then(|s| s.parse::<u64>().ok()).filter(|s| *s > 0) {
            Some(secs) => {
                let stale = Duration::from_secs(secs);
                LockTiming { refresh: stale / 6, stale }
            }
            None => LockTiming { refresh: REFRESH_INTERVAL, stale: STALE_AFTER },
        }
    })
}

/// How long after its last refresh a holder still trusts its own lock: the
/// stale limit minus one refresh interval, a margin for clock skew and for
/// the time a commit takes.
fn trust_limit_ns() -> i64 {
    let t = timing();
    (t.stale - t.refresh).as_nanos() as i64
}

/// Whether `lock` no longer protects anything.
pub fn is_stale(lock: &Lock, now_ns: i64) -> bool {
    if now_ns.saturating_sub(lock.refreshed_ns) > timing().stale.as_nanos() as i64 {
        return true;
    }
    lock.hostname == host::hostname() && !host::process_alive(lock.pid)
}

/// Whether `lock` claims a refresh further in the future than clocks can
/// plausibly disagree ([`FUTURE_TOLERANCE`]).
pub fn is_from_the_future(lock: &Lock, now_ns: i64) -> bool {
    lock.refreshed_ns.saturating_sub(now_ns) > FUTURE_TOLERANCE.as_nanos() as i64
}

fn describe(l: &Lock) -> String {
    let mut s = format!(
        "{} lock held by {}@{} (pid {}) since {}",
        if l.exclusive { "an exclusive" } else { "a shared" },
        l.username,
        l.hostname,
        l.pid,
        crate::time::format_time(l.created_ns, &crate::time::local())
    );
    let now = host::now_ns();
    if is_from_the_future(l, now) {
        let ahead_s = l.refreshed_ns.saturating_sub(now) / 1_000_000_000;
        s.push_str(&format!(
            ", refreshed at {}, {ahead_s}s in the future (is the clock of {} wrong?); `tstor unlock` removes it",
            crate::time::format_time(l.refreshed_ns, &crate::time::local()),
            l.hostname
        ));
    }
    s
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

/// What the holder knows of its lock, shared with the background refresher.
struct Held {
    /// The lock object stored now, and its content.
    id: Id,
    lock: Lock,
    /// Why the lock can no longer be trusted, once that is known; nothing is
    /// refreshed or committed after that.
    lost: Option<String>,
}

/// A held lock; refreshed in the background until released.
pub struct LockGuard {
    repo: Repository,
    /// Held across a whole refresh, so that the refresher and a proof before a
    /// commit never replace the lock object at the same time.
    held: Arc<tokio::sync::Mutex<Held>>,
    /// The id of the stored lock object, readable without waiting.
    current_id: Arc<Mutex<Id>>,
    exclusive: bool,
    /// When the stored lock was last refreshed; `i64::MIN` once it is lost.
    last_refresh_ns: Arc<AtomicI64>,
    refresher: tokio::task::JoinHandle<()>,
    /// Its entry in [`HELD_LOCKS`].
    registered: u64,
}

/// A lock this process holds, for [`release_abandoned`].
struct Registered {
    key: u64,
    repo: Repository,
    held: Arc<tokio::sync::Mutex<Held>>,
    refresher: tokio::task::AbortHandle,
}

/// Every lock this process holds and has not released: a command stopped
/// by a signal (its work dropped where it was) still removes them.
static HELD_LOCKS: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Removes the locks of commands whose work was dropped before they could
/// release them (a command stopped by Ctrl-C): stops their refreshers and
/// deletes their lock objects. Locks released as usual are not touched.
pub async fn release_abandoned() {
    let abandoned = std::mem::take(&mut *HELD_LOCKS.lock().unwrap_or_else(|e| e.into_inner()));
    for r in abandoned {
        r.refresher.abort();
        // A refresh cut short may hold the mutex no longer: wait a little only.
        let Ok(h) = tokio::time::timeout(Duration::from_secs(5), r.held.lock()).await else {
            tracing::warn!("could not remove our lock; it will expire");
            continue;
        };
        let (id, nonce) = (h.id, h.lock.nonce);
        drop(h);
        if let Err(e) = r.repo.backend().delete(ObjectKind::Lock, &id).await {
            tracing::warn!(lock = %id.short(), error = %e, "could not remove our lock; it will expire");
        }
        if let Ok(locks) = list_locks(&r.repo).await {
            for (other, _) in locks.iter().filter(|(other, l)| *other != id && l.nonce == nonce) {
                let _ = r.repo.backend().delete(ObjectKind::Lock, other).await;
            }
        }
        tracing::info!(lock = %id.short(), "removed the lock of a stopped command");
    }
}

/// How long a command waits for conflicting locks to go (`--retry-lock`);
/// zero (the default) fails at once.
static RETRY_LOCK: OnceLock<Duration> = OnceLock::new();

/// Sets, once per process, how long [`acquire`] keeps trying while another
/// process holds a conflicting lock.
pub fn set_retry_lock(wait: Duration) {
    let _ = RETRY_LOCK.set(wait);
}

/// Longest pause between two tries for a lock held by another process.
const MAX_LOCK_PAUSE: Duration = Duration::from_secs(30);

/// Takes a lock; while another process holds a conflicting one, tries again
/// (pausing 1 s, doubling up to 30 s) for the time set by [`set_retry_lock`].
pub async fn acquire(repo: &Repository, exclusive: bool) -> Result<LockGuard> {
    let wait = RETRY_LOCK.get().copied().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_secs(1);
    loop {
        match try_acquire(repo, exclusive).await {
            Err(RepoError::Locked(conflict)) if tokio::time::Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tracing::info!(%conflict, left_s = left.as_secs(), "repository locked; trying again");
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(MAX_LOCK_PAUSE);
            }
            other => return other,
        }
    }
}

/// Takes a shared or exclusive lock, refusing if a live conflicting lock exists.
async fn try_acquire(repo: &Repository, exclusive: bool) -> Result<LockGuard> {
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
        return Err(conflict_error(c));
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
        return Err(conflict_error(c));
    }
    tracing::debug!(lock = %id.short(), exclusive, "lock taken");
    let held = Arc::new(tokio::sync::Mutex::new(Held { id, lock, lost: None }));
    let current_id = Arc::new(Mutex::new(id));
    let last_refresh_ns = Arc::new(AtomicI64::new(now));
    let refresher = tokio::spawn(refresh_loop(repo.clone(), held.clone(), current_id.clone(), last_refresh_ns.clone()));
    let registered = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    HELD_LOCKS.lock().unwrap_or_else(|e| e.into_inner()).push(Registered {
        key: registered,
        repo: repo.clone(),
        held: held.clone(),
        refresher: refresher.abort_handle(),
    });
    Ok(LockGuard { repo: repo.clone(), held, current_id, exclusive, last_refresh_ns, refresher, registered })
}

/// The error for a lock held by another process, with what to do about it.
fn conflict_error(description: String) -> RepoError {
    let hint = if description.contains("tstor unlock") {
        String::new()
    } else {
        "; if that process is no longer running, `tstor unlock --remove-all` removes its lock \
         (`tstor unlock` removes locks left unrefreshed long enough to be stale)"
            .to_string()
    };
    RepoError::Locked(format!("{description}{hint}"))
}

/// Marks the lock lost for `reason`; returns the error every later commit gets.
fn mark_lost(held: &mut Held, last: &AtomicI64, reason: String) -> RepoError {
    tracing::warn!(lock = %held.id.short(), %reason, "lock lost; nothing more will be committed");
    last.store(i64::MIN, Ordering::SeqCst);
    let reason = held.lost.get_or_insert(reason).clone();
    lost_error(&reason)
}

fn lost_error(reason: &str) -> RepoError {
    RepoError::Locked(format!(
        "{reason}; a prune may have deleted data this command relies on, so nothing was committed"
    ))
}

/// Proves that the lock is still stored and was never left unrefreshed long
/// enough to be taken for stale, then refreshes it. With `prove` false (the
/// background refresher) the stored object is only looked for in a listing.
async fn refresh(
    repo: &Repository,
    held: &mut Held,
    current_id: &Mutex<Id>,
    last: &AtomicI64,
    prove: bool,
) -> Result<()> {
    if let Some(reason) = &held.lost {
        return Err(lost_error(reason));
    }
    // A lock that went unrefreshed too long (a suspended or stopped process)
    // may already have been taken for stale: refreshing it would let its
    // holder commit after a prune deleted what it deduplicated against.
    let age = host::now_ns().saturating_sub(last.load(Ordering::SeqCst));
    if age > trust_limit_ns() {
        let reason =
            format!("our lock was last refreshed {}s ago and may have been taken for stale", age / 1_000_000_000);
        return Err(mark_lost(held, last, reason));
    }
    // A lock someone removed (`tstor unlock --remove-all`) protects nothing.
    let gone = || format!("our lock {} was removed by someone else (`tstor unlock`?)", held.id.short());
    if prove {
        match repo.load_object(ObjectKind::Lock, &held.id).await {
            Ok(plain) => match Lock::decode(&plain) {
                Ok(stored) if stored.nonce == held.lock.nonce => {}
                _ => return Err(mark_lost(held, last, gone())),
            },
            Err(RepoError::Backend(b)) if b.is_not_found() => return Err(mark_lost(held, last, gone())),
            Err(e) => return Err(e),
        }
    } else if !repo.backend().list(ObjectKind::Lock).await?.iter().any(|o| o.id == held.id) {
        return Err(mark_lost(held, last, gone()));
    }
    let mut lock = held.lock.clone();
    lock.refreshed_ns = host::now_ns();
    let new_id = repo.save_object(ObjectKind::Lock, &lock.encode()).await?;
    let old_id = std::mem::replace(&mut held.id, new_id);
    held.lock = lock;
    *current_id.lock().unwrap_or_else(|p| p.into_inner()) = new_id;
    last.store(held.lock.refreshed_ns, Ordering::SeqCst);
    if old_id != new_id {
        if let Err(e) = repo.backend().delete(ObjectKind::Lock, &old_id).await {
            tracing::warn!(lock = %old_id.short(), error = %e, "could not remove the previous lock object");
        }
    }
    tracing::debug!(lock = %new_id.short(), "lock refreshed");
    Ok(())
}

async fn refresh_loop(
    repo: Repository,
    held: Arc<tokio::sync::Mutex<Held>>,
    current_id: Arc<Mutex<Id>>,
    last: Arc<AtomicI64>,
) {
    loop {
        tokio::time::sleep(timing().refresh).await;
        let mut h = held.lock().await;
        match refresh(&repo, &mut h, &current_id, &last, false).await {
            Ok(()) => {}
            Err(_) if h.lost.is_some() => return,
            // Logged and retried at the next interval.
            Err(e) => tracing::warn!(error = %e, "could not refresh the lock"),
        }
    }
}

impl LockGuard {
    /// Proves the lock is still held, right before something is committed:
    /// re-reads the stored lock object (it may have been removed) and checks
    /// that it never went unrefreshed long enough to be taken for stale, then
    /// refreshes it so that it stays fresh while the commit is written. Once
    /// this fails it keeps failing: the holder must stop without committing.
    pub async fn ensure_held(&self) -> Result<()> {
        let mut h = self.held.lock().await;
        refresh(&self.repo, &mut h, &self.current_id, &self.last_refresh_ns, true).await
    }

    /// The cheap check between the steps of one commit that
    /// [`ensure_held`](Self::ensure_held) started: fails once the lock is
    /// known lost or its last refresh is too old to be trusted.
    pub fn ensure_fresh(&self) -> Result<()> {
        let last = self.last_refresh_ns.load(Ordering::SeqCst);
        if last == i64::MIN {
            return Err(lost_error("our lock was lost"));
        }
        let age = host::now_ns().saturating_sub(last);
        if age > trust_limit_ns() {
            return Err(lost_error(&format!(
                "our lock was last refreshed {}s ago and may have been taken for stale",
                age / 1_000_000_000
            )));
        }
        Ok(())
    }

    pub fn id(&self) -> Id {
        *self.current_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Stops refreshing and removes the lock, including any copy a refresh
    /// cut short may have written.
    pub async fn release(self) {
        let LockGuard { repo, held, refresher, registered, .. } = self;
        HELD_LOCKS.lock().unwrap_or_else(|e| e.into_inner()).retain(|r| r.key != registered);
        refresher.abort();
        let _ = refresher.await;
        let h = held.lock().await;
        let (id, lock) = (h.id, h.lock.clone());
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

/// Removes stale locks and locks dated beyond [`FUTURE_TOLERANCE`] in the
/// future, or with `all` every lock object (also unreadable ones and those of
/// running processes, which notice before their next commit and then commit
/// nothing more). Returns the ids removed, with the lock when it could be
/// read. Takes no lock itself.
pub async fn remove_locks(repo: &Repository, all: bool) -> Result<Vec<(Id, Option<Lock>)>> {
    let now = host::now_ns();
    let readable = list_locks(repo).await?;
    let mut doomed: Vec<(Id, Option<Lock>)> = readable
        .iter()
        .filter(|(_, l)| all || is_stale(l, now) || is_from_the_future(l, now))
        .map(|(id, l)| (*id, Some(l.clone())))
        .collect();
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

/// How a lock is shown to users: kind, holder, pid and when it was taken,
/// and when it claims to have been refreshed if that is in the future.
pub fn describe_lock(l: &Lock) -> String {
    describe(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Backend;
    use crate::crypto::kdf::KdfParams;
    use crate::repo::InitOptions;

    async fn memory_repo() -> Repository {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let opts = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
        Repository::init(backend, b"pw", opts).await.unwrap()
    }

    #[tokio::test]
    async fn proving_a_lock_refreshes_it_and_a_removed_lock_stays_lost() {
        let repo = memory_repo().await;
        let guard = acquire(&repo, false).await.unwrap();
        let first = guard.id();
        guard.ensure_held().await.unwrap();
        let second = guard.id();
        assert_ne!(first, second, "a proof writes a refreshed lock object");
        let stored: Vec<Id> = repo.backend().list(ObjectKind::Lock).await.unwrap().iter().map(|o| o.id).collect();
        assert_eq!(stored, vec![second], "the previous lock object is gone");

        remove_locks(&repo, true).await.unwrap();
        let err = guard.ensure_held().await.expect_err("a removed lock is not held");
        assert!(matches!(&err, RepoError::Locked(m) if m.contains("removed")), "{err}");
        assert!(guard.ensure_fresh().is_err(), "the cheap check knows the lock is lost");
        assert!(guard.ensure_held().await.is_err(), "a lost lock stays lost");
        assert!(repo.backend().list(ObjectKind::Lock).await.unwrap().is_empty(), "a lost lock is never rewritten");
        guard.release().await;
    }

    #[test]
    fn a_lock_from_the_future_beyond_the_tolerance_is_out_of_bounds() {
        let now = host::now_ns();
        let lock = |ahead: Duration| Lock {
            exclusive: true,
            hostname: "elsewhere".into(),
            username: "u".into(),
            pid: 1,
            created_ns: now,
            refreshed_ns: now + ahead.as_nanos() as i64,
            nonce: [1; 16],
        };
        let near = lock(Duration::from_secs(60));
        let far = lock(Duration::from_secs(86_400));
        assert!(!is_from_the_future(&near, now) && !is_stale(&near, now));
        assert!(is_from_the_future(&far, now) && !is_stale(&far, now));
        let text = describe(&far);
        assert!(
            text.contains("elsewhere")
                && text.contains(&crate::time::format_time(far.refreshed_ns, &crate::time::local())),
            "{text}"
        );
        assert!(text.contains("in the future"), "{text}");
    }
}
