//! Progress bars on a terminal (indicatif); nothing when output is not a
//! terminal, when `--quiet` or `--json` is given.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::{escape, escape_path};
use crate::archiver::Progress;
use crate::ops::check::CheckProgress;
use crate::restorer::RestoreProgress;

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new(enabled: bool, message: &str) -> Bar {
        let bar = if enabled && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(message.to_string());
        Bar { bar }
    }

    pub fn set_total(&self, bytes: u64) {
        self.bar.set_length(bytes);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
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
        self.bar.inc(n);
    }
    fn error(&self, path: &Path, message: &str) {
        self.println(format!("error: {}: {}", escape_path(path), escape(message)));
    }
    fn changed(&self, path: &Path) {
        self.println(format!("warning: {}: file changed while it was read", escape_path(path)));
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

impl CheckProgress for Bar {
    fn verify_total(&self, _packs: usize, bytes: u64) {
        self.set_total(bytes);
    }
    fn pack_verified(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}
