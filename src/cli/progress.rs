//! Progress bars on a terminal (indicatif); nothing when output is not a
//! terminal, when `--quiet` or `--json` is given. The ETA is the observed
//! pace's ([`Pace`]): bytes settled over the time they took, waits
//! included. A snapshot's bar counts bytes settled: read, and when new,
//! stored in an uploaded pack. With `-v` the snapshot also logs its
//! progress and ETA every few seconds (`snapshot progress`).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::output::{escape, escape_path};
use super::pacing::Pace;
use crate::archiver::Progress;
use crate::ops::check::CheckProgress;
use crate::restorer::{RestoreAction, RestoreProgress};

/// How often `-v` logs the snapshot's progress.
const LOG_EVERY: Duration = Duration::from_secs(2);

pub struct Bar {
    bar: ProgressBar,
    pace: Arc<Mutex<Pace>>,
    started: Instant,
    /// File bytes read, and those of them not stored yet (snapshot).
    read: AtomicU64,
    unstored: AtomicU64,
    total: AtomicU64,
    /// Whether progress lines are logged (`-v`), and when the last was.
    log: bool,
    last_log: Mutex<Option<Instant>>,
    /// Whether each archived file's status is listed on stdout (`-vv`).
    list_files: bool,
}

/// `eta` of the template: from the observed pace, `-` until there is one.
fn pace_eta(pace: &Mutex<Pace>, state: &ProgressState) -> String {
    let mut pace = pace.lock().unwrap_or_else(|e| e.into_inner());
    match state.len().and_then(|len| pace.eta(state.elapsed().as_secs_f64(), state.pos(), len)) {
        Some(secs) => {
            let s = secs.round() as u64;
            if s >= 3600 {
                format!("{}h{:02}m", s / 3600, s % 3600 / 60)
            } else {
                format!("{}m{:02}s", s / 60, s % 60)
            }
        }
        None => "-".into(),
    }
}

impl Bar {
    pub fn new(enabled: bool, message: &str) -> Bar {
        let pace = Arc::new(Mutex::new(Pace::default()));
        let bar = if enabled && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let for_eta = pace.clone();
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {pace_eta}",
                )
                .expect("valid template")
                .with_key("pace_eta", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&pace_eta(&for_eta, state));
                }),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(message.to_string());
        Bar {
            bar,
            pace,
            started: Instant::now(),
            read: AtomicU64::new(0),
            unstored: AtomicU64::new(0),
            total: AtomicU64::new(0),
            log: false,
            last_log: Mutex::new(None),
            list_files: false,
        }
    }

    /// Lists each archived file with its status (new, modified,
    /// unmodified) on stdout, as restic's `backup -vv` does.
    pub fn listing_files(mut self, on: bool) -> Bar {
        self.list_files = on;
        self
    }

    /// Also logs the progress and ETA at `-v` (info), for a snapshot.
    pub fn logging_progress(mut self) -> Bar {
        self.log = tracing::enabled!(tracing::Level::INFO);
        self
    }

    /// Whether progress lines are logged: the total is worth counting then.
    pub fn logs_progress(&self) -> bool {
        self.log
    }

    pub fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
        self.bar.set_length(bytes);
    }

    pub fn finish(&self) {
        self.log_progress(true);
        self.bar.finish_and_clear();
    }

    /// A snapshot's position: bytes read and settled.
    fn settle(&self) {
        let read = self.read.load(Ordering::Relaxed);
        self.bar.set_position(read.saturating_sub(self.unstored.load(Ordering::Relaxed)));
        self.log_progress(false);
    }

    /// Logs a progress line, at most every [`LOG_EVERY`] (and at the end).
    fn log_progress(&self, last: bool) {
        if !self.log {
            return;
        }
        let now = Instant::now();
        {
            let mut at = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
            if !last && at.is_some_and(|t| now - t < LOG_EVERY) {
                return;
            }
            *at = Some(now);
        }
        let elapsed = (now - self.started).as_secs_f64();
        let settled = self.read.load(Ordering::Relaxed).saturating_sub(self.unstored.load(Ordering::Relaxed));
        let total = self.total.load(Ordering::Relaxed);
        let eta = if last {
            Some(0.0)
        } else {
            self.pace.lock().unwrap_or_else(|e| e.into_inner()).eta(elapsed, settled, total)
        };
        let elapsed_s = (elapsed * 10.0).round() / 10.0;
        match eta {
            Some(e) => {
                let eta_s = (e * 10.0).round() / 10.0;
                tracing::info!(settled, total, elapsed_s, eta_s, done = last, "snapshot progress");
            }
            None => tracing::info!(settled, total, elapsed_s, done = last, "snapshot progress"),
        }
    }

    /// A line on standard output, around the bar.
    pub fn println_stdout(&self, line: String) {
        self.bar.suspend(|| outln!("{line}"));
    }

    fn println(&self, line: String) {
        if self.bar.is_hidden() {
            return;
        }
        self.bar.println(line);
    }
}

impl Progress for Bar {
    fn bytes(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
        self.settle();
    }
    fn unstored(&self, bytes: u64) {
        self.unstored.store(bytes, Ordering::Relaxed);
        self.settle();
    }
    fn error(&self, path: &Path, message: &str) {
        self.println(format!("error: {}: {}", escape_path(path), escape(message)));
    }
    fn changed(&self, path: &Path) {
        self.println(format!("warning: {}: file changed while it was read", escape_path(path)));
    }
    fn file_status(&self, path: &Path, status: crate::archiver::FileStatus) {
        if self.list_files {
            self.bar.suspend(|| outln!("{:<10} {}", status.name(), escape_path(path)));
        }
    }
}

impl RestoreProgress for Bar {
    fn total(&self, bytes: u64) {
        self.set_total(bytes);
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn error(&self, path: &str, message: &str) {
        self.println(format!("error: {}: {}", escape(path), escape(message)));
    }
}

/// A restore's progress on the bar, and with `list` each action on
/// standard output (`update path`, `delete path`, ...).
pub struct RestoreListing {
    bar: Arc<Bar>,
    list: bool,
}

impl RestoreListing {
    pub fn new(bar: Arc<Bar>, list: bool) -> RestoreListing {
        RestoreListing { bar, list }
    }
}

impl RestoreProgress for RestoreListing {
    fn total(&self, bytes: u64) {
        self.bar.set_total(bytes);
    }
    fn bytes(&self, n: u64) {
        RestoreProgress::bytes(&*self.bar, n);
    }
    fn error(&self, path: &str, message: &str) {
        RestoreProgress::error(&*self.bar, path, message);
    }
    fn action(&self, action: RestoreAction, path: &str) {
        if self.list {
            self.bar.println_stdout(format!("{:<9} {}", action.name(), escape(path)));
        }
    }
}

impl CheckProgress for Bar {
    fn verify_total(&self, _packs: usize, bytes: u64) {
        self.set_total(bytes);
    }
    fn pack_verified(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}
