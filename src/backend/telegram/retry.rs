//! tstor's retry policy for grammers, and the gate shared by every request
//! of one backend: a calls-per-minute budget paces every API call; a flood
//! wait on any request holds back all of them for the time Telegram asked
//! (never less) and lowers the number of upload parts in flight, which
//! climbs back slowly while parts succeed; dropped connections are retried
//! with back-off instead of failing a whole upload.
//!
//! Two budgets, never one: flood waits are sat out as asked (up to
//! `max_flood_wait` each) and do not count against the attempts meant for
//! real errors; dropped connections and server failures get a generous
//! number of attempts with exponential back-off. Every resend goes through
//! tstor's loop and waits for the shared gate just before it is sent (grammers
//! never resends on its own), so that nothing goes out while a flood wait
//! tstor was told about runs.
//!
//! A request handed to grammers is written only once its connection is up:
//! one that was dropped (or never opened) opens again first, which takes
//! round trips (TCP, `initConnection`, salts) while the request waits inside
//! grammers, past the gate. So each client is a [`Line`] that remembers
//! whether its connection must be opened, and a request on such a line
//! first opens it with a ping (the ping is no API call, but opening the
//! connection makes one, `initConnection`, so the ping passes the gate
//! too), then passes the gate again itself.
//!
//! grammers also makes a request's msg_id (the time Telegram takes as its
//! send time) only when the write before it on the connection is done, and
//! a request dropped by its caller stays in that queue and is sent anyway.
//! A 512 KiB upload part takes a while to write (and longer on a slow
//! link); a request queued behind it passed the gate before the write
//! began and goes out after, whatever flood wait was learnt meanwhile. So
//! requests take turns on a line: any number of small requests share it,
//! but an upload part has it alone ([`Exclusive`]): it is handed over only
//! when everything handed over before on that connection has been
//! answered or failed, and nothing is handed over while it is in flight.
//! A turn ends when grammers gives the request back, not when its caller
//! stops waiting (each attempt runs in a task of its own that holds the
//! turn), so a part is always first in its connection's queue: it is
//! written as soon as it is handed over, right after it passed the gate.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use grammers_client::sender::{RetryContext, RetryPolicy};
use grammers_client::tl::RemoteCall;
use grammers_client::{Client, InvocationError};

use tokio::sync::{Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, OwnedSemaphorePermit, RwLock, Semaphore};
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
    /// Flood waits answered to requests sent before the first was seen (the
    /// gate already held) are the same slowdown: the parts are halved once.
    pub fn flooded(&self, wait: Duration) {
        let already_held = !self.held_for().is_zero();
        self.hold(wait);
        self.floods.fetch_add(1, Ordering::Relaxed);
        if already_held {
            return;
        }
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

    /// How long requests are still held back (zero if they may go now).
    pub fn held_for(&self) -> Duration {
        let until = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        until.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
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

/// A client, whether its connection to the home DC is to be opened
/// before a request may pass the gate (at first, and after a request on it
/// failed with a dropped connection), and the turns requests take on it.
#[derive(Clone)]
pub struct Line {
    client: Client,
    closed: Arc<AtomicBool>,
    /// Read: a request that shares the connection; write: an upload part
    /// that has it alone.
    turns: Arc<RwLock<()>>,
    /// Told whenever a turn ends, on this line or another of the same
    /// backend (they share it), for parts waiting for a free line.
    freed: Arc<Notify>,
}

enum Held {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// A request's turn on a line; it ends when the last clone is dropped,
/// which is when grammers has given the request back.
pub struct Turn {
    held: Option<Held>,
    freed: Arc<Notify>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // The lock is released first, so that a waiter woken now finds it free.
        self.held.take();
        self.freed.notify_waiters();
    }
}

/// A line held for one upload part alone, until this and every attempt
/// made with it are over.
pub struct Exclusive {
    line: Line,
    turn: Arc<Turn>,
}

impl std::ops::Deref for Exclusive {
    type Target = Line;

    fn deref(&self) -> &Line {
        &self.line
    }
}

impl Line {
    /// A line on `client`, whose connection is opened by its first request.
    pub fn new(client: Client) -> Line {
        Line { client, closed: Arc::new(AtomicBool::new(true)), turns: Arc::default(), freed: Arc::default() }
    }

    /// A line on `client` whose ended turns are told to the same waiters
    /// as `other`'s.
    pub fn beside(client: Client, other: &Line) -> Line {
        Line { freed: Arc::clone(&other.freed), ..Line::new(client) }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the connection is to be opened before the next request.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn set_closed(&self, closed: bool) {
        self.closed.store(closed, Ordering::Release);
    }

    /// Whether an upload part has the line now.
    pub fn is_exclusive(&self) -> bool {
        self.turns.try_read().is_err()
    }

    /// The line for one upload part alone, if nothing is in flight on it.
    pub fn try_exclusive(&self) -> Option<Exclusive> {
        let guard = Arc::clone(&self.turns).try_write_owned().ok()?;
        let turn = Turn { held: Some(Held::Exclusive(guard)), freed: Arc::clone(&self.freed) };
        Some(Exclusive { line: self.clone(), turn: Arc::new(turn) })
    }

    /// The line for one upload part alone, once everything in flight on it is over.
    pub async fn exclusive(&self) -> Exclusive {
        let guard = Arc::clone(&self.turns).write_owned().await;
        let turn = Turn { held: Some(Held::Exclusive(guard)), freed: Arc::clone(&self.freed) };
        Exclusive { line: self.clone(), turn: Arc::new(turn) }
    }

    /// A turn shared with other requests, once no part has the line.
    async fn shared(&self) -> Arc<Turn> {
        let guard = Arc::clone(&self.turns).read_owned().await;
        Arc::new(Turn { held: Some(Held::Shared(guard)), freed: Arc::clone(&self.freed) })
    }

    /// Waits until some turn on this line, or a line beside it, ends.
    /// `enable` runs once the wait is registered: a turn that ends while
    /// it runs is not missed.
    pub async fn wait_for_a_turn<T>(&self, mut enable: impl FnMut() -> Option<T>) -> T {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(found) = enable() {
                return found;
            }
            freed.await;
        }
    }

    /// Hands `request` to grammers in DC `dc` (`None`: home) with `turn`,
    /// which lasts until grammers gives the request back, even if the
    /// caller stops waiting first: grammers sends a request it was handed
    /// whether anyone waits for it or not.
    async fn attempt<R>(&self, turn: Arc<Turn>, dc: Option<i32>, request: R) -> Result<R::Return, InvocationError>
    where
        R: RemoteCall + Send + Sync + 'static,
        R::Return: Send + 'static,
    {
        let line = self.clone();
        let mut call = Box::pin(async move {
            let answer = match dc {
                Some(dc) => line.client.invoke_in_dc(dc, &request).await,
                None => line.client.invoke(&request).await,
            };
            // Said before the turn ends, so that the next turn opens the connection first.
            if dc.is_none() && answer.as_ref().is_err_and(is_dropped) {
                line.set_closed(true);
            }
            drop(turn);
            answer
        });
        // The first poll hands the request to grammers: here, in the poll
        // that checked the gate, not whenever a spawned task first runs
        // (on a busy machine, after a flood wait may have been learnt).
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(answer) = first {
            return answer;
        }
        match tokio::spawn(call).await {
            Ok(answer) => answer,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(InvocationError::Dropped("a Telegram request was cancelled")),
        }
    }

    /// Opens the connection to DC `dc` (`None`: home), if it is not open,
    /// with a ping: grammers opens it for the ping and answers it once the
    /// connection is up.
    async fn open(&self, turn: Arc<Turn>, dc: Option<i32>) -> Result<(), InvocationError> {
        let ping = grammers_client::tl::functions::Ping { ping_id: rand::random() };
        self.attempt(turn, dc, ping).await.map(drop)
    }
}

impl std::ops::Deref for Line {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Whether an error means the request's connection is gone, so that
/// grammers opens a new one for the next request handed to it.
fn is_dropped(e: &InvocationError) -> bool {
    matches!(e, InvocationError::Io(_) | InvocationError::Dropped(_) | InvocationError::Transport(_))
}

/// Seconds Telegram asks to wait, for FLOOD_WAIT_X and FLOOD_PREMIUM_WAIT_X.
pub fn flood_wait(e: &InvocationError) -> Option<Duration> {
    match e {
        InvocationError::Rpc(r) if r.code == 420 => Some(Duration::from_secs(r.value.unwrap_or(1) as u64)),
        _ => None,
    }
}

/// Whether an error is worth sending the request again for, after a
/// back-off: a dropped connection, an I/O or transport error, a server
/// failure. `RANDOM_ID_DUPLICATE` comes with code 500 but is an answer: the
/// message was sent before (its first answer was lost).
pub fn is_transient(e: &InvocationError) -> bool {
    match e {
        InvocationError::Io(_) | InvocationError::Dropped(_) | InvocationError::Transport(_) => true,
        InvocationError::Rpc(r) => r.code >= 500 && r.name != "RANDOM_ID_DUPLICATE",
        _ => false,
    }
}

/// The back-off before attempt `n + 1` after `n` transient failures:
/// `first` doubled each time, at most 32 times `first`.
pub fn back_off(first: Duration, n: u32) -> Duration {
    first * (1u32 << n.saturating_sub(1).min(5))
}

/// grammers' retry policy: never resend. A dropped connection fails every
/// request in flight on it, and each comes back to tstor's own loop
/// ([`invoke_retrying`]), which resends it after a back-off and only once
/// the shared gate is open at the moment of sending. A resend made by
/// grammers after its own sleep would go out even if a flood wait had
/// arrived during that sleep, which Telegram punishes. Flood waits come
/// back to the same loop and are sat out without spending the attempts
/// meant for real errors.
pub struct TstorRetry;

impl RetryPolicy for TstorRetry {
    fn should_retry(&self, _: &RetryContext) -> ControlFlow<(), Duration> {
        ControlFlow::Break(())
    }
}

/// How tstor's own loop retries one request.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// How long transient failures in a row (a server that cannot be
    /// reached, connections dropped again and again) are retried before
    /// the request gives up with [`Unreachable`], whatever attempts remain.
    pub give_up_after: Duration,
    /// Attempts for transient failures (dropped connections, 5xx), on top
    /// of grammers' resends.
    pub attempts: u32,
    /// First back-off after a transient failure.
    pub delay: Duration,
    /// Longest flood wait sat out; a longer one ends the request.
    pub max_flood_wait: Duration,
}

/// The error a request ends with when Telegram could not be reached for
/// [`Budget::give_up_after`]: carried inside an I/O error so that it
/// travels through grammers' error type, and recognised by
/// [`is_unreachable`].
#[derive(Debug, thiserror::Error)]
#[error("cannot reach Telegram after trying for {}s: {last}", waited.as_secs())]
pub struct Unreachable {
    pub waited: Duration,
    pub last: String,
}

/// Whether `e` is a request that gave up because Telegram stayed unreachable.
pub fn is_unreachable(e: &InvocationError) -> bool {
    matches!(e, InvocationError::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<Unreachable>()))
}

/// Where the one line saying that Telegram cannot be reached goes (the
/// command line prints it on stderr); the library itself only logs.
static RETRY_NOTICE: OnceLock<fn(&str)> = OnceLock::new();
static NOTICED: AtomicBool = AtomicBool::new(false);

/// Sets where the notice about an unreachable Telegram goes.
pub fn set_retry_notice(sink: fn(&str)) {
    let _ = RETRY_NOTICE.set(sink);
}

/// Tells the user, once per process, that Telegram cannot be reached and
/// the requests are being retried for up to `bound`.
fn notice_unreachable(error: &InvocationError, bound: Duration) {
    let message = format!("cannot connect to Telegram ({error}); retrying for up to {}s", bound.as_secs());
    tracing::warn!("{message}");
    if !NOTICED.swap(true, Ordering::SeqCst) {
        if let Some(sink) = RETRY_NOTICE.get() {
            sink(&message);
        }
    }
}

/// Whether an error means no connection could be made or kept (rather than
/// a server error answered over a working one).
fn is_connection_failure(e: &InvocationError) -> bool {
    matches!(e, InvocationError::Io(_) | InvocationError::Dropped(_) | InvocationError::Transport(_))
}

/// Flood waits one request sits out in a row before it gives up: they are
/// waited as asked, but a request that is never let through must end.
pub(crate) const MAX_FLOODS_PER_REQUEST: u32 = 64;

/// Premium waits (`FLOOD_PREMIUM_WAIT_X`) one request sits out before it
/// gives up. They are a free account's pace, not a refusal: a part of a
/// long upload may be told to wait many times while the account's
/// transfer budget refills, so they are counted apart from flood waits,
/// with a bound only a server that never lets the request through reaches.
const MAX_PREMIUM_WAITS_PER_REQUEST: u32 = 4096;

/// Whether a 420 answer is a premium wait: the pace of a free account.
pub fn is_premium_wait(e: &InvocationError) -> bool {
    matches!(e, InvocationError::Rpc(r) if r.code == 420 && r.name == "FLOOD_PREMIUM_WAIT")
}

/// Sends the request `make` builds (built again for every attempt, so that
/// it can take the newest state, such as a file reference) through the
/// gate until it is answered: flood waits are waited out and hold every
/// request of the backend; transient failures are retried with back-off
/// within `budget.attempts`; any other error, and a flood wait longer than
/// `budget.max_flood_wait`, is returned at once.
pub async fn invoke_retrying<R, F>(
    client: &Line,
    gate: &FloodGate,
    budget: Budget,
    make: F,
) -> Result<R::Return, InvocationError>
where
    R: RemoteCall + Send + Sync + 'static,
    R::Return: Send + 'static,
    F: FnMut() -> R,
{
    invoke_retrying_in(client, gate, budget, None, make).await
}

/// [`invoke_retrying`] on a line held alone (an upload part): every
/// attempt is the only request in flight on its connection.
pub async fn invoke_exclusive<R, F>(
    line: &Exclusive,
    gate: &FloodGate,
    budget: Budget,
    make: F,
) -> Result<R::Return, InvocationError>
where
    R: RemoteCall + Send + Sync + 'static,
    R::Return: Send + 'static,
    F: FnMut() -> R,
{
    invoke_turns(&line.line, Some(&line.turn), gate, budget, None, make).await
}

/// [`invoke_retrying`] in DC `dc` (`None`: the home DC), through the same gate.
pub async fn invoke_retrying_in<R, F>(
    client: &Line,
    gate: &FloodGate,
    budget: Budget,
    dc: Option<i32>,
    make: F,
) -> Result<R::Return, InvocationError>
where
    R: RemoteCall + Send + Sync + 'static,
    R::Return: Send + 'static,
    F: FnMut() -> R,
{
    invoke_turns(client, None, gate, budget, dc, make).await
}

/// The loop of [`invoke_retrying_in`]: each attempt with the turn `held`
/// (a line held alone), or a turn shared with other requests.
async fn invoke_turns<R, F>(
    client: &Line,
    held: Option<&Arc<Turn>>,
    gate: &FloodGate,
    budget: Budget,
    dc: Option<i32>,
    mut make: F,
) -> Result<R::Return, InvocationError>
where
    R: RemoteCall + Send + Sync + 'static,
    R::Return: Send + 'static,
    F: FnMut() -> R,
{
    let mut failures = 0;
    let mut floods = 0;
    let mut premium_waits = 0;
    // When the current run of transient failures began.
    let mut failing_since: Option<Instant> = None;
    // Whether this request's own connection was dropped (for another DC,
    // which the line's flag does not cover).
    let mut dropped = false;
    loop {
        gate.wait().await;
        let turn = match held {
            Some(turn) => Arc::clone(turn),
            None => client.shared().await,
        };
        // A part may have had the line: a flood wait learnt meanwhile holds
        // this request back too.
        if !gate.held_for().is_zero() {
            continue;
        }
        // A connection to open is opened first, right after the gate (its
        // opening makes an API call, `initConnection`), and the request
        // passes the gate again after: handed over while grammers connects,
        // it would go out whenever the connection is up, even during a
        // flood wait learnt meanwhile.
        let error = if dropped || (dc.is_none() && client.is_closed()) {
            match client.open(turn, dc).await {
                Ok(()) => {
                    dropped = false;
                    if dc.is_none() {
                        client.set_closed(false);
                    }
                    continue;
                }
                Err(e) => e,
            }
        } else {
            match client.attempt(turn, dc, make()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            }
        };
        // Any answer (a flood wait, a server error) came over a working
        // connection: the run of connection failures ends.
        if !is_connection_failure(&error) {
            failing_since = None;
        }
        if let Some(wait) = flood_wait(&error) {
            let too_many = if is_premium_wait(&error) {
                premium_waits += 1;
                premium_waits > MAX_PREMIUM_WAITS_PER_REQUEST
            } else {
                floods += 1;
                floods > MAX_FLOODS_PER_REQUEST
            };
            if wait > budget.max_flood_wait || too_many {
                return Err(error);
            }
            gate.flooded(wait);
        } else if is_transient(&error) {
            if is_dropped(&error) {
                dropped = true;
                if dc.is_none() {
                    client.set_closed(true);
                }
            }
            failures += 1;
            let mut delay = back_off(budget.delay, failures);
            if is_connection_failure(&error) {
                let waited = failing_since.get_or_insert_with(Instant::now).elapsed();
                if waited >= budget.give_up_after {
                    let gave_up = Unreachable { waited, last: error.to_string() };
                    return Err(InvocationError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, gave_up)));
                }
                if failures >= budget.attempts {
                    return Err(error);
                }
                // One dropped connection is routine; a resend that cannot
                // connect either is worth telling the user about.
                if failures >= 2 {
                    notice_unreachable(&error, budget.give_up_after);
                }
                // The last attempt comes when the bound runs out, not after it.
                delay = delay.min(budget.give_up_after - waited);
            } else if failures >= budget.attempts {
                return Err(error);
            }
            tracing::debug!(error = %error, attempt = failures, "retrying a Telegram request");
            gate.hold(delay);
        } else {
            return Err(error);
        }
    }
}
