//! tstor's retry policy for grammers, and the flood gate shared by every
//! request of one backend: a flood wait on any request holds back all of
//! them for the time Telegram asked (never less), and dropped connections
//! are retried with back-off instead of failing a whole upload.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grammers_client::sender::{RetryContext, RetryPolicy};
use grammers_client::InvocationError;
use tokio::time::Instant;

/// The earliest time the next request may go out.
#[derive(Default)]
pub struct FloodGate {
    not_before: Mutex<Option<Instant>>,
}

impl FloodGate {
    /// Holds every request back for `wait` from now (extending, never shortening).
    pub fn hold(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut nb = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
        }
    }

    /// Waits until requests may go out again.
    pub async fn wait(&self) {
        let until = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
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
                self.gate.hold(wait);
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
