//! The snapshot's pace on the command line: the syntax of
//! `--limit-upload RATE`, `--max-upload SIZE` and `--max-duration DURATION`
//! (and their configuration keys), and the ETA estimate drawn from the
//! observed pace (bytes settled over time, waits included).

use std::collections::VecDeque;
use std::time::Duration;

use crate::ops::check::parse_size;

/// A rate in bytes per second: a size (`5MiB`, `500K`, `1000000`; units
/// are powers of 1024, case does not matter) with an optional `/s`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let size = t.strip_suffix("/s").unwrap_or(t);
    match parse_size(size) {
        Ok(0) => Err(format!("`{s}`: an upload limit must be above zero")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a rate: give bytes per second with a unit, e.g. `5MiB` or `500KiB/s`")),
    }
}

/// A duration: whole numbers with units `s`, `m`, `h`, `d`, in any
/// combination (`90m`, `8h`, `1h30m`, `45s`); above zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: use e.g. `45s`, `90m`, `8h`, `1h30m` or `2d`");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = 0u64;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = rest[digits..].chars().next().ok_or_else(bad)?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = n.checked_mul(secs).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        rest = &rest[digits + 1..];
    }
    if total == 0 {
        return Err(format!("`{s}`: a time limit must be above zero"));
    }
    Ok(Duration::from_secs(total))
}

/// The ETA from the observed pace: bytes settled (read and, when new,
/// stored) over the time they took, flood and premium waits included,
/// measured over the last [`Pace::WINDOW`] of the run (or all of it, when
/// shorter), so a slowdown that lasts shows within that window while short
/// waits are averaged in rather than swinging the estimate.
#[derive(Debug, Default)]
pub struct Pace {
    /// (seconds since the start, bytes settled), one sample per second at most.
    samples: VecDeque<(f64, u64)>,
}

impl Pace {
    /// How far back the pace is measured.
    pub const WINDOW: f64 = 600.0;

    /// Records that `settled` bytes were settled `elapsed` seconds into the run.
    pub fn record(&mut self, elapsed: f64, settled: u64) {
        let several = self.samples.len() > 1;
        match self.samples.back_mut() {
            Some(last) if several && elapsed - last.0 < 1.0 => *last = (elapsed, settled),
            _ => self.samples.push_back((elapsed, settled)),
        }
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|s| elapsed - s.0 >= Self::WINDOW) {
            self.samples.pop_front();
        }
    }

    /// Seconds left to settle `total` bytes at `elapsed` seconds with
    /// `settled` done, at the pace observed; `None` until there is one.
    pub fn eta(&mut self, elapsed: f64, settled: u64, total: u64) -> Option<f64> {
        self.record(elapsed, settled);
        if total == 0 || settled == 0 {
            return None;
        }
        if settled >= total {
            return Some(0.0);
        }
        // From the start of the run while it is shorter than the window.
        let (t0, b0) = if elapsed < Self::WINDOW { (0.0, 0) } else { *self.samples.front()? };
        let (dt, db) = (elapsed - t0, settled.saturating_sub(b0));
        if dt <= 0.0 || db == 0 {
            return None;
        }
        Some((total - settled) as f64 * dt / db as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_a_size_per_second() {
        assert_eq!(parse_rate("5MiB"), Ok(5 << 20));
        assert_eq!(parse_rate("500KiB/s"), Ok(500 << 10));
        assert_eq!(parse_rate("1000000"), Ok(1_000_000));
        assert_eq!(parse_rate("2m/s"), Ok(2 << 20));
        for bad in ["", "fast", "0", "0MiB", "5 parsecs", "-1M"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_add_their_parts() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "10", "h", "1x", "0s", "1h30", "m5", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_eta_counts_the_waits_of_the_whole_pace() {
        // 100 bytes a second, but every other ten seconds nothing moves
        // (a premium wait): the pace is 50 bytes a second, waits included.
        let mut pace = Pace::default();
        let mut settled = 0;
        let mut last = None;
        for t in 1..=100u64 {
            if (t / 10) % 2 == 0 {
                settled += 100;
            }
            last = pace.eta(t as f64, settled, 10_000);
        }
        assert_eq!(settled, 5_000);
        // 5000 left at 50 bytes a second.
        assert_eq!(last.map(|e| e.round()), Some(100.0));
        // Nothing to go on yet, then done.
        assert_eq!(Pace::default().eta(3.0, 0, 10), None);
        assert_eq!(Pace::default().eta(3.0, 10, 10), Some(0.0));
    }

    #[test]
    fn past_the_window_only_the_recent_pace_counts() {
        let mut pace = Pace::default();
        // 1000 bytes a second for the first 600 s, then 100 bytes a second.
        let mut settled = 0u64;
        let mut eta = None;
        for t in 1..=1800u64 {
            settled += if t <= 600 { 1000 } else { 100 };
            eta = pace.eta(t as f64, settled, settled + 100_000);
        }
        // The last 600 s ran at 100 bytes a second: 100,000 bytes take 1000 s.
        assert_eq!(eta.map(|e| e.round()), Some(1000.0));
    }
}
