//! tstor: encrypted, deduplicating snapshot backups to a local directory or a
//! Telegram channel. The library never prints; the `cli` module owns the
//! terminal.

pub mod archiver;
pub mod backend;
pub mod cache;
pub mod chunker;
pub mod cli;
pub mod crypto;
pub mod format;
pub mod host;
pub mod mount;
pub mod repo;
pub mod restorer;

/// A time in nanoseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1_795_000_000 * 1_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::format_time(951_782_400 * 1_000_000_000), "2000-02-29 00:00:00");
    }
}
pub mod fsmeta;
pub mod ops;

/// A proleptic Gregorian date to days since 1970-01-01: the inverse of
/// [`civil_from_days`] for months 1–12 (days past the month's end carry over).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
