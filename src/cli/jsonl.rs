//! `--json` for commands that run a while (`snapshot`, `restore`), as
//! restic does it: stdout carries one JSON object per line, each with a
//! `message_type` — `"status"` at a steady rate while the command runs,
//! `"verbose_status"` per item with `-v`, `"summary"` once at the end — and
//! a fatal error ends with `{"message_type":"exit_error","code":N,
//! "message":…}` on stderr. A file the command could not handle is an
//! `"error"` line on stderr. Listings (`snapshots`, `ls`, `find`, `stats`,
//! `check` reports) are one JSON document instead and do not use this.
//!
//! Every message body is a `#[derive(Serialize)]` struct; [`JsonLines`]
//! adds the `message_type` in front of its fields. A command adopts it so:
//!
//! ```ignore
//! let lines = JsonLines::new();
//! let ticker = lines.every_status_interval(move || MyStatus { .. });
//! // ... the work ...
//! ticker.stop();
//! lines.summary(&MySummary { .. });
//! ```
//!
//! `TSTOR_PROGRESS_FPS` sets how many status lines a second are written
//! (default 1; at most 60), like restic's `RESTIC_PROGRESS_FPS`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A message with its `message_type` first.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    message_type: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// Writes the JSON lines of one command run.
#[derive(Clone)]
pub struct JsonLines {
    started: Instant,
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonLines {
    pub fn new() -> JsonLines {
        JsonLines { started: Instant::now() }
    }

    /// Seconds since the run started, for `seconds_elapsed`.
    pub fn seconds_elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// One message of `message_type` on stdout, as one line.
    pub fn emit<T: Serialize>(&self, message_type: &str, body: &T) {
        match serde_json::to_string(&Line { message_type, body }) {
            Ok(line) => outln!("{line}"),
            Err(e) => errln!("tstor: cannot encode a {message_type} message: {e}"),
        }
    }

    pub fn status<T: Serialize>(&self, body: &T) {
        self.emit("status", body);
    }

    pub fn verbose_status<T: Serialize>(&self, body: &T) {
        self.emit("verbose_status", body);
    }

    pub fn summary<T: Serialize>(&self, body: &T) {
        self.emit("summary", body);
    }

    /// Calls `status` and writes what it returns as a status line every
    /// status interval, on a thread of its own, until the ticker is stopped.
    pub fn every_status_interval<T, F>(&self, status: F) -> Ticker
    where
        T: Serialize,
        F: Fn() -> T + Send + 'static,
    {
        let lines = self.clone();
        Ticker::start(status_interval(), move || lines.status(&status()))
    }
}

/// An item the command could not handle, as an `error` line on stderr
/// (restic's shape: `{"message_type":"error","error":{"message":…},"during":…,"item":…}`).
pub fn error_line(during: &str, item: &str, message: &str) {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        message: &'a str,
    }
    #[derive(Serialize)]
    struct ErrorLine<'a> {
        message_type: &'a str,
        error: ErrorBody<'a>,
        during: &'a str,
        item: &'a str,
    }
    let line = ErrorLine { message_type: "error", error: ErrorBody { message }, during, item };
    if let Ok(text) = serde_json::to_string(&line) {
        errln!("{text}");
    }
}

/// The last line of a failed run with `--json`, on stderr.
pub fn exit_error(code: u8, message: &str) {
    #[derive(Serialize)]
    struct ExitError<'a> {
        message_type: &'a str,
        code: u8,
        message: &'a str,
    }
    if let Ok(text) = serde_json::to_string(&ExitError { message_type: "exit_error", code, message }) {
        errln!("{text}");
    }
}

/// The time between status lines: `1 / TSTOR_PROGRESS_FPS` seconds, one
/// second by default.
pub fn status_interval() -> Duration {
    let fps = std::env::var("TSTOR_PROGRESS_FPS").ok().and_then(|v| v.trim().parse::<f64>().ok());
    match fps {
        Some(f) if f.is_finite() && f > 0.0 => Duration::from_secs_f64(1.0 / f.min(60.0)),
        _ => Duration::from_secs(1),
    }
}

/// A thread that runs a closure at a steady interval until stopped (or
/// dropped). The first run is one interval after the start.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(interval: Duration, tick: impl Fn() + Send + 'static) -> Ticker {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tstor-status".into())
            .spawn(move || {
                let (flag, wake) = &*stop2;
                let mut next = Instant::now() + interval;
                let mut stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let now = Instant::now();
                    if *stopped {
                        return;
                    }
                    if now >= next {
                        drop(stopped);
                        tick();
                        next += interval;
                        stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                    stopped = wake.wait_timeout(stopped, next - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            })
            .ok();
        Ticker { stop, thread }
    }

    /// Stops the ticks; no tick runs after this returns.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_line_puts_the_message_type_before_the_fields() {
        #[derive(Serialize)]
        struct Body {
            files_done: u64,
            item: &'static str,
        }
        let text = serde_json::to_string(&Line { message_type: "status", body: &Body { files_done: 3, item: "a\nb" } })
            .unwrap();
        assert_eq!(text, r#"{"message_type":"status","files_done":3,"item":"a\nb"}"#);
    }

    #[test]
    fn a_stopped_ticker_ticks_no_more() {
        let ticks = Arc::new(AtomicU32::new(0));
        let t = ticks.clone();
        let ticker = Ticker::start(Duration::from_millis(5), move || {
            t.fetch_add(1, Ordering::SeqCst);
        });
        while ticks.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        ticker.stop();
        let after = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ticks.load(Ordering::SeqCst), after);
    }
}
