//! Times in the local time zone: shown in it (RFC 3339 with the offset in
//! JSON; UTC with `--utc`), `--newer`/`--older` read in it, and
//! `forget --keep-daily` counting its calendar days, across the change to
//! daylight saving time in New York (2024-03-10, a day of 23 hours).

use serde_json::Value;

use crate::common::*;
use crate::crafted::{dir, file, Crafter};

const NEW_YORK: &str = "America/New_York";

/// A local time in New York as ns since the epoch.
fn ny(s: &str) -> i64 {
    let zone = jiff::tz::TimeZone::get(NEW_YORK).expect("the machine has the tz database (tzdata)");
    tstor::time::parse_time(s, &zone).unwrap()
}

/// Snapshots of one tree at four local times around the change to summer
/// time; the tree holds a file changed at noon in winter and one at noon in
/// summer (New York time).
async fn repository_around_the_clock_change(env: &Env) {
    let mut c = Crafter::init(&env.repo()).await;
    let data = c.data(b"hello").await;
    let mut winter = file(b"winter.txt", vec![data], 5);
    winter.mtime_ns = ny("2026-01-15 12:00");
    let mut summer = file(b"summer.txt", vec![data], 5);
    summer.mtime_ns = ny("2026-07-15 12:00");
    let sub = c.tree(vec![winter, summer]).await;
    let root = c.tree(vec![dir(b"d", sub)]).await;
    for t in ["2024-03-09 23:30", "2024-03-10 00:30", "2024-03-10 23:30", "2024-03-11 00:30"] {
        c.snapshot(root, ny(t)).await;
    }
}

fn run(env: &Env, tz: &str, args: &[&str]) -> String {
    let out = env.cmd().env("TZ", tz).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn times_are_shown_in_the_local_zone_or_utc_and_json_carries_the_offset() {
    let env = Env::new();
    repository_around_the_clock_change(&env).await;
    let table = run(&env, NEW_YORK, &["snapshots"]);
    // 23:30 EDT on 2024-03-10 is 03:30 UTC the next day.
    assert!(table.contains("2024-03-10 23:30:00") && table.contains("2024-03-09 23:30:00"), "{table}");
    let utc = run(&env, NEW_YORK, &["snapshots", "--utc"]);
    assert!(utc.contains("2024-03-11 03:30:00") && utc.contains("2024-03-10 04:30:00"), "{utc}");
    assert!(!utc.contains("2024-03-10 23:30:00"), "{utc}");
    let list: Vec<Value> = serde_json::from_str(&run(&env, NEW_YORK, &["snapshots", "--json"])).unwrap();
    let shown: Vec<&str> = list.iter().map(|s| s["time"].as_str().unwrap()).collect();
    // Before the change the offset is -05:00, after it -04:00.
    assert!(shown.contains(&"2024-03-09T23:30:00-05:00"), "{shown:?}");
    assert!(shown.contains(&"2024-03-10T23:30:00-04:00"), "{shown:?}");
    let ls = run(&env, NEW_YORK, &["ls", "-l", "latest"]);
    assert!(ls.contains("2026-01-15 12:00:00") && ls.contains("2026-07-15 12:00:00"), "{ls}");
    let ls_utc = run(&env, NEW_YORK, &["ls", "-l", "--utc", "latest"]);
    assert!(ls_utc.contains("2026-01-15 17:00:00") && ls_utc.contains("2026-07-15 16:00:00"), "{ls_utc}");
}

#[tokio::test]
async fn newer_and_older_are_read_in_the_local_zone() {
    let env = Env::new();
    repository_around_the_clock_change(&env).await;
    let found = |tz: &str, args: &[&str]| -> Vec<String> {
        let mut all = vec!["find", "--json", "-s", "latest", "*.txt"];
        all.extend_from_slice(args);
        let v: Vec<Value> = serde_json::from_str(&run(&env, tz, &all)).unwrap();
        v.iter().map(|e| e["path"].as_str().unwrap().to_string()).collect()
    };
    // Noon in New York in July is 16:00 UTC.
    assert_eq!(found(NEW_YORK, &["--newer", "2026-07-15 11:59"]), ["/d/summer.txt"]);
    assert!(found(NEW_YORK, &["--newer", "2026-07-15 12:00"]).is_empty());
    assert_eq!(found(NEW_YORK, &["--newer", "2026-07-15 15:59", "--utc"]), ["/d/summer.txt"]);
    assert!(found(NEW_YORK, &["--newer", "2026-07-15 16:00", "--utc"]).is_empty());
    assert_eq!(found("UTC", &["--newer", "2026-07-15 15:59"]), ["/d/summer.txt"]);
    // In winter New York is five hours behind UTC; RFC 3339 carries its own offset.
    assert_eq!(found(NEW_YORK, &["--older", "2026-01-15 12:01"]), ["/d/winter.txt"]);
    assert!(found(NEW_YORK, &["--older", "2026-01-15 12:00"]).is_empty());
    assert_eq!(found(NEW_YORK, &["--older", "2026-01-15T17:01:00Z"]), ["/d/winter.txt"]);
    assert_eq!(found("UTC", &["--older", "2026-01-15T12:01:00-05:00"]), ["/d/winter.txt"]);
    // A time that is not one is refused with the forms it takes.
    let bad = env.cmd().env("TZ", NEW_YORK).args(["find", "--newer", "2026-02-30", "x"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a time"), "{bad:?}");
}

#[tokio::test]
async fn keep_daily_counts_local_days_across_the_daylight_saving_change() {
    let env = Env::new();
    repository_around_the_clock_change(&env).await;
    let kept = |tz: &str, utc: bool| -> Vec<String> {
        let mut args = vec!["forget", "--keep-daily", "3", "--dry-run", "--json"];
        if utc {
            args.push("--utc");
        }
        let v: Value = serde_json::from_str(&run(&env, tz, &args)).unwrap();
        let keep = v["groups"][0]["keep"].as_array().unwrap();
        keep.iter().map(|s| s["time"].as_str().unwrap().to_string()).collect()
    };
    // Local days 03-11, 03-10 (23 hours long) and 03-09: the newest of each.
    assert_eq!(
        kept(NEW_YORK, false),
        ["2024-03-11T00:30:00-04:00", "2024-03-10T23:30:00-04:00", "2024-03-09T23:30:00-05:00"]
    );
    // In UTC the four snapshots fall on 03-10 (two) and 03-11 (two): the
    // newest of the two days, then the oldest snapshot with the count left.
    assert_eq!(
        kept(NEW_YORK, true),
        ["2024-03-11T04:30:00+00:00", "2024-03-10T05:30:00+00:00", "2024-03-10T04:30:00+00:00"]
    );
    assert_eq!(kept("UTC", false), kept(NEW_YORK, true));
}

/// `snapshot --time` is read in the local zone (UTC with `--utc`), an RFC
/// 3339 time with its own offset, as `--newer`/`--older` are.
#[test]
fn snapshot_time_is_read_in_the_local_zone() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "a").unwrap();
    let taken = |args: &[&str]| -> i64 {
        let mut all = vec!["snapshot", "--json", "--force"];
        all.extend_from_slice(args);
        all.push(src.to_str().unwrap());
        let out = run(&env, NEW_YORK, &all);
        let id = summary_line(out.as_bytes())["snapshot_id"].as_str().unwrap().to_string();
        let list: Vec<Value> = serde_json::from_str(&run(&env, NEW_YORK, &["snapshots", "--json"])).unwrap();
        list.iter().find(|s| s["id"] == id.as_str()).unwrap()["time_ns"].as_i64().unwrap()
    };
    let utc = |s: &str| tstor::time::parse_time(s, &jiff::tz::TimeZone::UTC).unwrap();
    // Noon in New York in July is 16:00 UTC; in January 17:00.
    assert_eq!(taken(&["--time", "2026-07-15 12:00"]), ny("2026-07-15 12:00"));
    assert_eq!(taken(&["--time", "2026-07-15 12:00"]), utc("2026-07-15 16:00"));
    assert_eq!(taken(&["--time", "2026-01-15 12:00:30"]), utc("2026-01-15 17:00:30"));
    assert_eq!(taken(&["--time", "2026-07-15 12:00", "--utc"]), utc("2026-07-15 12:00"));
    assert_eq!(taken(&["--time", "2026-07-15T12:00:00+02:00"]), utc("2026-07-15 10:00"));
}
