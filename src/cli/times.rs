//! The time zone the command line shows and reads times in: the local one
//! (`TZ` or the system's setting), or UTC with `--utc`; chosen once at
//! start. Human output shows `YYYY-MM-DD HH:MM:SS` in that zone, JSON shows
//! RFC 3339 with the offset, and `--newer`/`--older` style flags are read in
//! it (see [`crate::time`]).

use std::sync::OnceLock;

use jiff::tz::TimeZone;

static ZONE: OnceLock<TimeZone> = OnceLock::new();

/// Chooses the zone; the first call wins.
pub fn choose(utc: bool) {
    let _ = ZONE.set(crate::time::zone(utc));
}

/// The chosen zone (the local one until [`choose`] is called).
pub fn zone() -> &'static TimeZone {
    ZONE.get_or_init(crate::time::local)
}

/// A stored time for people: `YYYY-MM-DD HH:MM:SS` in the chosen zone.
pub fn show(ns: i64) -> String {
    crate::time::format_time(ns, zone())
}

/// A stored time for JSON: RFC 3339 with the chosen zone's offset.
pub fn json(ns: i64) -> String {
    crate::time::format_rfc3339(ns, zone())
}

/// `s` if it is a time [`parse`] takes, for a flag's value parser. Checked
/// in the local zone without choosing it: the parser runs before `--utc`
/// is seen, and asking for [`zone`] then would fix it to the local one.
pub fn check(s: &str) -> Result<String, String> {
    crate::time::parse_time(s, &crate::time::local()).map(|_| s.to_string())
}

/// A time given on the command line, read in the chosen zone unless it
/// carries its own offset.
pub fn parse(s: &str) -> anyhow::Result<i64> {
    crate::time::parse_time(s, zone()).map_err(anyhow::Error::msg)
}
