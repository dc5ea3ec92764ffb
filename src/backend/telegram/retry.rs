//! tstor's retry policy for grammers, and the gate shared by every request
//! of one backend: a calls-per-minute budget paces every API call; a flood
//! wait on any request holds back all of them for the time Telegram asked
//! (never less) and lowers the number of upload parts in flight, which
//! climbs back slowly while parts succeed; dropped connections are retried
//! with back-off instead of failing a whole upload.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grammers_client::sender::{RetryContext, RetryPolicy};
use grammers_client::InvocationError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Successful parts after which one more part may be in flight again.
const RAISE_AFTER: u64 = 16;

struct Parallelism {
    /// Parts allowed in flight now.
    limit: usize,
    /// Permits to swallow as parts finish, after the limit was lowered.
    debt: usize,
    successes: u64,
}

/// The pacing and flood state shared by every request of one backend.
pub struct FloodGate {
    not_before: Mutex<Option<Instant>>,
    /// Time between two calls; zero for no pacing.
    interval: Duration,
    next_slot: Mutex<Instant>,
    parts: Arc<Semaphore>,
    max_parts: usize,
    parallelism: Mutex<Parallelism>,
    floods: AtomicU64,
}

impl Default for FloodGate {
    fn default() -> FloodGate {
        FloodGate::new(0, 4)
    }
}

/// One upload part's place in flight; given back when dropped (or
/// swallowed, while the limit is being lowered).
pub struct PartPermit {
    permit: Option<OwnedSemaphorePermit>,
    gate: Arc<FloodGate>,
}

impl Drop for PartPermit {
    fn drop(&mut self) {
        let mut p = self.gate.parallelism.lock().unwrap_or_else(|e| e.into_inner());
        if p.debt > 0 {
            p.debt -= 1;
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
        }
    }
}

impl FloodGate {
    /// A gate pacing calls to `calls_per_minute` (0: unpaced) with at most
    /// `parts_in_flight` upload parts at once.
    pub fn new(calls_per_minute: u32, parts_in_flight: usize) -> FloodGate {
        let max_parts = parts_in_flight.max(1);
        let interval = if calls_per_minute == 0 { Duration::ZERO } else { Duration::from_secs(60) / calls_per_minute };
        FloodGate {
            not_before: Mutex::new(None),
            interval,
            next_slot: Mutex::new(Instant::now()),
            parts: Arc::new(Semaphore::new(max_parts)),
            max_parts,
            parallelism: Mutex::new(Parallelism { limit: max_parts, debt: 0, successes: 0 }),
            floods: AtomicU64::new(0),
        }
    }

    /// Holds every request back for `wait` from now (extending, never shortening).
    pub fn hold(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut nb = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
        }
    }

    /// A flood wait: holds everything back for `wait` and halves the parts in flight.
    pub fn flooded(&self, wait: Duration) {
        self.hold(wait);
        self.floods.fetch_add(1, Ordering::Relaxed);
        let mut p = self.parallelism.lock().unwrap_or_else(|e| e.into_inner());
        p.successes = 0;
        let target = (p.limit / 2).max(1);
        while p.limit > target {
            p.limit -= 1;
            match Arc::clone(&self.parts).try_acquire_owned() {
                Ok(permit) => permit.forget(),
                Err(_) => p.debt += 1,
            }
        }
        tracing::info!(wait_s = wait.as_secs(), parts_in_flight = p.limit, "Telegram asked to slow down");
    }

    /// How many flood waits were seen.
    pub fn floods(&self) -> u64 {
        self.floods.load(Ordering::Relaxed)
    }

    /// Parts allowed in flight now.
    pub fn parts_limit(&self) -> usize {
        self.parallelism.lock().unwrap_or_else(|e| e.into_inner()).limit
    }

    /// Waits for a place for one upload part.
    pub async fn part(self: &Arc<Self>) -> PartPermit {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = Arc::clone(&self.parts).acquire_owned().await.ok();
        PartPermit { permit, gate: Arc::clone(self) }
    }

    /// A part was stored: after enough in a row, one more may be in flight.
    pub fn part_done(&self) {
        let mut p = self.parallelism.lock().unwrap_or_else(|e| e.into_inner());
        p.successes += 1;
        if p.successes >= RAISE_AFTER && p.limit < self.max_parts {
            p.successes = 0;
            p.limit += 1;
            if p.debt > 0 {
                p.debt -= 1;
            } else {
                self.parts.add_permits(1);
            }
        }
    }

    /// Waits until requests may go out again, then for this call's place
    /// in the calls-per-minute budget.
    pub async fn wait(&self) {
        loop {
            let until = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = until {
                tokio::time::sleep_until(t).await;
            }
            if !self.interval.is_zero() {
                let slot = {
                    let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
                    let slot = (*next).max(Instant::now());
                    *next = slot + self.interval;
                    slot
                };
                tokio::time::sleep_until(slot).await;
            }
            // A flood wait that arrived meanwhile holds this call back too.
            let until = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
            if until.is_none_or(|t| t <= Instant::now()) {
                return;
            }
        }
    }
}

/// Seconds Telegram asks to wait, for FLOOD_WAIT_X and FLOOD_PREMIUM_WAIT_X.
pub fn flood_wait(e: &InvocationError) -> Option<Duration> {
    match e {
        InvocationError::Rpc(r) if r.code == 420 => Some(Duration::from_secs(r.value.unwrap_or(1) as u64)),
        _ => None,
    }
}

/// Waits out flood waits up to `max_flood_wait` (a bounded number of times)
/// and retries dropped connections and server-side failures with back-off.
pub struct TstorRetry {
    pub gate: Arc<FloodGate>,
    pub max_flood_wait: Duration,
    pub flood_tries: u32,
    pub io_tries: u32,
    pub io_delay: Duration,
}

impl RetryPolicy for TstorRetry {
    fn should_retry(&self, ctx: &RetryContext) -> ControlFlow<(), Duration> {
        let n = ctx.fail_count.get();
        if let Some(wait) = flood_wait(&ctx.error) {
            if n <= self.flood_tries && wait <= self.max_flood_wait {
                self.gate.flooded(wait);
                return ControlFlow::Continue(wait);
            }
            return ControlFlow::Break(());
        }
        let transient = match &ctx.error {
            InvocationError::Io(_) | InvocationError::Dropped(_) | InvocationError::Transport(_) => true,
            InvocationError::Rpc(r) => r.code >= 500,
            _ => false,
        };
        if transient && n <= self.io_tries {
            let factor = 1u32 << (n - 1).min(5);
            ControlFlow::Continue(self.io_delay * factor)
        } else {
            ControlFlow::Break(())
        }
    }
}
