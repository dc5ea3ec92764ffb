//! Times as people read and write them: shown in a time zone (the local one,
//! or UTC with `--utc`) as `YYYY-MM-DD HH:MM:SS`, written as RFC 3339 with
//! the offset in JSON, and parsed from RFC 3339 or `YYYY-MM-DD[ HH:MM[:SS]]`
//! read in a time zone. The calendar (jiff, with the system's time zone
//! database) lives here too: the civil date and time of an instant in a zone,
//! which `forget` buckets snapshots by. Pure: nothing here prints.
//!
//! Instants are nanoseconds since the Unix epoch (`i64`), as stored.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// The zone times are shown and read in: UTC when asked, otherwise the
/// local one (from `TZ`, or the system's setting; UTC when neither is
/// known).
pub fn zone(utc: bool) -> TimeZone {
    if utc {
        TimeZone::UTC
    } else {
        TimeZone::system()
    }
}

/// The local time zone: see [`zone`].
pub fn local() -> TimeZone {
    zone(false)
}

/// An instant as a jiff timestamp; out-of-range values are clamped to
/// jiff's range (about ±9999 years), which stored times never reach.
pub fn timestamp(ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(if ns < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

/// An instant in `tz`.
pub fn zoned(ns: i64, tz: &TimeZone) -> Zoned {
    timestamp(ns).to_zoned(tz.clone())
}

/// An instant as `YYYY-MM-DD HH:MM:SS` in `tz`.
pub fn format_time(ns: i64, tz: &TimeZone) -> String {
    zoned(ns, tz).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// An instant as RFC 3339 with the offset it has in `tz`
/// (`2026-03-08T01:30:00-05:00`), nanoseconds shown when there are any.
pub fn format_rfc3339(ns: i64, tz: &TimeZone) -> String {
    let t = timestamp(ns);
    t.display_with_offset(tz.to_offset(t)).to_string()
}

/// Parses a time: RFC 3339 with an offset or `Z` (`2026-03-08T01:30:00-05:00`),
/// or `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (a `T` may
/// stand for the space) read in `tz`. A wall-clock time that a change of
/// offset skips or repeats is taken as the earlier reading's instant, as
/// most tools do (jiff's "compatible" rule). Returns nanoseconds since the
/// epoch.
pub fn parse_time(s: &str, tz: &TimeZone) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{s}` is not a time: use YYYY-MM-DD, \"YYYY-MM-DD HH:MM[:SS]\" (in {}) or RFC 3339 such as 2026-03-08T01:30:00+01:00",
            zone_name(tz)
        )
    };
    let t = s.trim();
    if !t.is_ascii() {
        return Err(bad());
    }
    let has_offset =
        t.len() > 10 && (t.ends_with(['Z', 'z']) || t[10..].contains(['+']) || t[10..].rfind('-').is_some());
    if has_offset {
        let ts: Timestamp = t.parse().map_err(|_| bad())?;
        return i64::try_from(ts.as_nanosecond()).map_err(|_| bad());
    }
    let (date, time) = match t.split_once([' ', 'T']) {
        Some((d, tm)) => (d, Some(tm.trim())),
        None => (t, None),
    };
    let strict = |part: &str, digits: usize| part.len() == digits && part.bytes().all(|b| b.is_ascii_digit());
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || !strict(d[0], 4) || !strict(d[1], 2) || !strict(d[2], 2) {
        return Err(bad());
    }
    let mut text = format!("{date}T00:00:00");
    if let Some(time) = time {
        let p: Vec<&str> = time.split(':').collect();
        if !(2..=3).contains(&p.len()) || !p.iter().all(|x| strict(x, 2)) {
            return Err(bad());
        }
        text = format!("{date}T{}:{}:{}", p[0], p[1], p.get(2).copied().unwrap_or("00"));
    }
    let civil: DateTime = text.parse().map_err(|_| bad())?;
    let ts = tz.to_ambiguous_timestamp(civil).compatible().map_err(|_| bad())?;
    i64::try_from(ts.as_nanosecond()).map_err(|_| bad())
}

/// A zone's name for messages: `America/New_York`, `UTC`, or `local time`.
pub fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().map_or_else(|| "local time".to_string(), str::to_string)
}

/// A short label for a table heading: the zone's abbreviation now
/// (`EST`, `CET`, `UTC`), or `local` when it has none.
pub fn zone_label(tz: &TimeZone) -> String {
    let now = Timestamp::now();
    let info = tz.to_offset_info(now);
    let abbr = info.abbreviation();
    if abbr.is_empty() {
        "local".to_string()
    } else {
        abbr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").expect("the system time zone database has America/New_York")
    }

    #[test]
    fn shows_times_in_the_zone_given() {
        let utc = TimeZone::UTC;
        assert_eq!(format_time(0, &utc), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_795_000_000 * 1_000_000_000, &utc), "2026-11-18 11:06:40");
        assert_eq!(format_time(951_782_400 * 1_000_000_000, &utc), "2000-02-29 00:00:00");
        // 2026-03-08 06:30 UTC is 01:30 EST, before the clocks go forward.
        let t = parse_time("2026-03-08T06:30:00Z", &utc).unwrap();
        assert_eq!(format_time(t, &ny()), "2026-03-08 01:30:00");
        assert_eq!(format_rfc3339(t, &ny()), "2026-03-08T01:30:00-05:00");
        // An hour later it is 03:30 EDT.
        assert_eq!(format_rfc3339(t + 3_600_000_000_000, &ny()), "2026-03-08T03:30:00-04:00");
        assert_eq!(format_rfc3339(t, &utc), "2026-03-08T06:30:00+00:00");
    }

    #[test]
    fn reads_local_forms_in_the_zone_and_rfc3339_as_written() {
        let utc = TimeZone::UTC;
        assert_eq!(parse_time("1970-01-01", &utc).unwrap(), 0);
        assert_eq!(parse_time("2000-02-29", &utc).unwrap(), 951_782_400 * 1_000_000_000);
        assert_eq!(format_time(parse_time("2026-11-18T11:06", &utc).unwrap(), &utc), "2026-11-18 11:06:00");
        assert_eq!(format_time(parse_time("1969-12-31 23:59:59", &utc).unwrap(), &utc), "1969-12-31 23:59:59");
        // Winter in New York is UTC-5, summer UTC-4.
        let jan = parse_time("2026-01-15 12:00", &ny()).unwrap();
        assert_eq!(jan, parse_time("2026-01-15T17:00:00Z", &utc).unwrap());
        let jul = parse_time("2026-07-15 12:00:00", &ny()).unwrap();
        assert_eq!(jul, parse_time("2026-07-15T16:00:00+00:00", &utc).unwrap());
        // RFC 3339 carries its own offset whatever the zone.
        assert_eq!(parse_time("2026-07-15T12:00:00-04:00", &utc).unwrap(), jul);
        // 02:30 on 2026-03-08 does not exist in New York: the earlier offset's reading (03:30 EDT).
        let gap = parse_time("2026-03-08 02:30", &ny()).unwrap();
        assert_eq!(format_time(gap, &ny()), "2026-03-08 03:30:00");
        for bad in [
            "",
            "2021",
            "2021-13-01",
            "2021-02-29",
            "2021-1-01",
            "2021-01-01 24:00:00",
            "x-y-z",
            "2021-01-01 1:2",
            "2021-01-01T10:00:00+99:00",
            "2021-01-01 10:00:00:00",
            "2021-01-01 10:00 extra",
            "２０２１-01-01",
        ] {
            assert!(parse_time(bad, &utc).is_err(), "{bad}");
        }
    }
}
