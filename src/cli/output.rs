//! Everything the command line prints goes through here: names made safe for
//! a terminal, and lines written so that a reader going away (`tstor ... |
//! head -1`) ends the output quietly instead of panicking.
//!
//! Escaping: a name, path, host, tag, user name, symlink target or message
//! that embeds them is shown with `\` doubled, `\n` `\t` `\r` as such, other
//! control characters as `\xNN` (or `\u{NN}` above ASCII), characters that
//! reorder text (bidirectional controls) as `\u{NNNN}` and bytes that are not
//! UTF-8 as `\xNN`. So no stored name can move the cursor, recolour the
//! terminal or print a line of its own.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Prints a line on stdout; a closed pipe ends the output quietly.
macro_rules! outln {
    () => {
        $crate::cli::output::out_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::out_line(format_args!($($arg)*))
    };
}

/// Prints a line on stderr; a closed stderr is ignored.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::err_line(format_args!($($arg)*))
    };
}

/// Raw bytes as terminal-safe text (see the module comment).
pub fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                '\r' => s.push_str("\\r"),
                c if c.is_control() && c.is_ascii() => {
                    let _ = write!(s, "\\x{:02x}", c as u32);
                }
                c if c.is_control() || reorders_text(c) => {
                    let _ = write!(s, "\\u{{{:x}}}", c as u32);
                }
                c => s.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(s, "\\x{byte:02x}");
        }
    }
    s
}

/// Text (a message, a host name, a tag) as terminal-safe text.
pub fn escape(s: &str) -> String {
    escape_bytes(s.as_bytes())
}

/// A local path as terminal-safe text, its bytes kept exactly.
pub fn escape_path(p: &Path) -> String {
    escape_bytes(p.as_os_str().as_bytes())
}

/// Bidirectional formatting characters: they make a terminal show text in
/// another order than it is stored.
fn reorders_text(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `n` and a noun, singular for one: `count(1, "snapshot")` is "1 snapshot",
/// `count(2, "directory")` is "2 directories".
pub fn count(n: impl TryInto<u64>, noun: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    if n == 1 {
        return format!("1 {noun}");
    }
    format!("{n} {}", plural(noun))
}

/// The plural of an English noun by the regular rules.
pub fn plural(noun: &str) -> String {
    let before_y = noun.strip_suffix('y').and_then(|stem| stem.chars().last().map(|c| (stem, c)));
    match before_y {
        Some((stem, c)) if !"aeiou".contains(c) => format!("{stem}ies"),
        _ if ["s", "x", "ch", "sh"].iter().any(|end| noun.ends_with(end)) => format!("{noun}es"),
        _ => format!("{noun}s"),
    }
}

static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

pub fn out_line(args: fmt::Arguments) {
    if STDOUT_FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        STDOUT_FAILED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            err_line(format_args!("tstor: cannot write to standard output: {e}"));
        }
    }
}

pub fn err_line(args: fmt::Arguments) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Whether an error is a closed stdout (the reader went away): not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(escape_bytes(b"caf\xe9.txt"), "caf\\xe9.txt");
        assert_eq!(escape_bytes("a\\b é".as_bytes()), "a\\\\b é");
        assert_eq!(escape("x\nrestored snapshot 0\t1\r"), "x\\nrestored snapshot 0\\t1\\r");
        assert_eq!(escape("\x1b[31mred\x07\x7f"), "\\x1b[31mred\\x07\\x7f");
        assert_eq!(escape("\u{9b}2J \u{202e}txt.exe"), "\\u{9b}2J \\u{202e}txt.exe");
        assert_eq!(escape("plain/name-1.txt ünïcødé 日本"), "plain/name-1.txt ünïcødé 日本");
    }

    #[test]
    fn counts_use_the_singular_for_one() {
        assert_eq!(count(1u64, "snapshot"), "1 snapshot");
        assert_eq!(count(0usize, "snapshot"), "0 snapshots");
        assert_eq!(count(2u64, "directory"), "2 directories");
        assert_eq!(count(3u64, "key"), "3 keys");
        assert_eq!(count(2u64, "match"), "2 matches");
        assert_eq!(count(1u64, "entry"), "1 entry");
    }

    #[test]
    fn escaped_text_has_no_control_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        let shown = escape_bytes(&all);
        assert!(shown.chars().all(|c| !c.is_control()), "{shown:?}");
    }
}
