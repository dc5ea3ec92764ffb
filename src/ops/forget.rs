//! `forget`: which snapshots a retention policy keeps, and removing the rest.
//!
//! The policy is restic's. Snapshots are first grouped (by host and paths
//! unless told otherwise); within each group they are walked from the newest
//! backwards. Every `--keep-<period> N` rule keeps the newest snapshot of each
//! period (hour, day, ISO week, month, year) until it has kept `N` of them, and
//! also the oldest snapshot of the group if it still has a count left;
//! `--keep-last N` keeps the `N` newest; `--keep-within D` keeps everything
//! newer than `D` before the group's newest snapshot (that is not in the
//! future); `--keep-within-<period> D` keeps the newest snapshot of each period
//! within `D`; `--keep-tag` keeps every snapshot carrying a tag list. A snapshot
//! may be kept by several rules and every rule that kept it is named. Calendar
//! arithmetic is in UTC.
//!
//! [`apply_policy`] and [`plan`] are pure; [`forget`] loads the snapshots and
//! deletes the forgotten snapshot objects under a lock the caller holds.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::format::snapshot::Snapshot;
use crate::format::{Id, ObjectKind};
use crate::repo::lock::LockGuard;
use crate::repo::{RepoError, Repository};
use crate::{civil_from_days, days_from_civil};

const NS_PER_HOUR: i64 = 3_600 * 1_000_000_000;
const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

/// How many periods a `--keep-*` rule keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Count(u32),
    /// `unlimited`: every period.
    All,
}

impl Default for Keep {
    fn default() -> Self {
        Keep::Count(0)
    }
}

impl Keep {
    fn active(self) -> bool {
        self != Keep::Count(0)
    }
}

impl FromStr for Keep {
    type Err = String;
    fn from_str(s: &str) -> Result<Keep, String> {
        match s.trim() {
            "unlimited" | "all" | "-1" => Ok(Keep::All),
            n => n.parse().map(Keep::Count).map_err(|_| format!("`{s}` is neither a count nor `unlimited`")),
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Count(n) => write!(f, "{n}"),
            Keep::All => f.write_str("all"),
        }
    }
}

/// A calendar duration such as `1y5m7d2h`, `30d` or `2w` (years, months,
/// weeks, days, hours), counted back from the newest snapshot of a group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Duration {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
}

impl Duration {
    pub fn is_zero(&self) -> bool {
        *self == Duration::default()
    }

    /// The instant this long before `t_ns`. Months and years move the calendar
    /// date and then normalise it as restic (Go's `AddDate`) does: 31 March
    /// minus one month is 3 March in a leap year (31 February overflows).
    pub fn before(&self, t_ns: i64) -> i64 {
        let day = t_ns.div_euclid(NS_PER_DAY);
        let time_of_day = t_ns.rem_euclid(NS_PER_DAY);
        let (y, m, d) = civil_from_days(day);
        let months = i64::from(m) - 1 - i64::from(self.months) - 12 * i64::from(self.years);
        let first = days_from_civil(y + months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1);
        let days = first + i64::from(d) - 1 - 7 * i64::from(self.weeks) - i64::from(self.days);
        let ns = i128::from(days) * i128::from(NS_PER_DAY) + i128::from(time_of_day)
            - i128::from(self.hours) * i128::from(NS_PER_HOUR);
        ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Duration, String> {
        let bad = |why: &str| format!("`{s}` is not a duration like 1y5m7d2h or 2w: {why}");
        let mut d = Duration::default();
        let mut num = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            if num.is_empty() {
                return Err(bad("every unit needs a number before it"));
            }
            let n: u32 = num.parse().map_err(|_| bad("number too large"))?;
            if n > 100_000 {
                return Err(bad("number too large"));
            }
            num.clear();
            let field = match c {
                'y' => &mut d.years,
                'm' => &mut d.months,
                'w' => &mut d.weeks,
                'd' => &mut d.days,
                'h' => &mut d.hours,
                _ => return Err(bad(&format!("unknown unit `{c}`"))),
            };
            *field += n;
        }
        if !num.is_empty() {
            return Err(bad("a number has no unit"));
        }
        if s.trim().is_empty() {
            return Err(bad("it is empty"));
        }
        Ok(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [(self.years, 'y'), (self.months, 'm'), (self.weeks, 'w'), (self.days, 'd'), (self.hours, 'h')]
        {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        if self.is_zero() {
            f.write_str("0h")?;
        }
        Ok(())
    }
}

/// A retention policy; the default keeps nothing and is refused by [`plan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: Keep,
    pub hourly: Keep,
    pub daily: Keep,
    pub weekly: Keep,
    pub monthly: Keep,
    pub yearly: Keep,
    pub within: Duration,
    pub within_hourly: Duration,
    pub within_daily: Duration,
    pub within_weekly: Duration,
    pub within_monthly: Duration,
    pub within_yearly: Duration,
    /// Keep every snapshot that has all the tags of any one of these lists.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (k, what) in [
            (self.last, "latest"),
            (self.hourly, "hourly"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
            (self.yearly, "yearly"),
        ] {
            if k.active() {
                parts.push(format!("{k} {what}"));
            }
        }
        let mut s = if parts.is_empty() { String::new() } else { format!("{} snapshots", parts.join(", ")) };
        let add = |s: &mut String, sep: &str, text: String| {
            if !s.is_empty() {
                s.push_str(sep);
            }
            s.push_str(&text);
        };
        for (d, what) in [
            (self.within_hourly, "hourly"),
            (self.within_daily, "daily"),
            (self.within_weekly, "weekly"),
            (self.within_monthly, "monthly"),
            (self.within_yearly, "yearly"),
        ] {
            if !d.is_zero() {
                add(&mut s, ", ", format!("{what} snapshots within {d}"));
            }
        }
        if !self.tags.is_empty() {
            let lists: Vec<String> = self.tags.iter().map(|l| tag_list(l)).collect();
            add(&mut s, " and ", format!("all snapshots with tags {}", lists.join(" or ")));
        }
        if !self.within.is_zero() {
            add(&mut s, " and ", format!("all snapshots within {} of the newest", self.within));
        }
        write!(f, "keep {s}")
    }
}

fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

/// Whether `tags` has every tag of `list`; an empty tag in the list matches a
/// snapshot without tags (restic's rule).
fn has_tags(tags: &[String], list: &[String]) -> bool {
    list.iter().all(|t| if t.is_empty() { tags.is_empty() } else { tags.contains(t) })
}

/// What the policy decided for one snapshot, and every rule that kept it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: Id,
    pub keep: bool,
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy)]
enum Period {
    Last,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// The ISO 8601 week-numbering year and week of a day.
fn iso_week(day: i64) -> (i64, i64) {
    let weekday = (day + 3).rem_euclid(7); // Monday = 0; 1970-01-01 was a Thursday
    let thursday = day - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    (year, (thursday - days_from_civil(year, 1, 1)) / 7 + 1)
}

/// A number naming the period `t_ns` falls in; `nr` makes every snapshot its own "last" period.
fn period_of(period: Period, t_ns: i64, nr: usize) -> i64 {
    let day = t_ns.div_euclid(NS_PER_DAY);
    let hour = t_ns.rem_euclid(NS_PER_DAY) / NS_PER_HOUR;
    let (y, m, d) = civil_from_days(day);
    let (m, d) = (i64::from(m), i64::from(d));
    match period {
        Period::Last => nr as i64,
        Period::Hour => y * 1_000_000 + m * 10_000 + d * 100 + hour,
        Period::Day => y * 10_000 + m * 100 + d,
        Period::Week => {
            let (wy, w) = iso_week(day);
            wy * 100 + w
        }
        Period::Month => y * 100 + m,
        Period::Year => y,
    }
}

/// Applies `policy` to one group of snapshots. Returns a decision for each,
/// newest first (snapshots with equal times keep their given order). `now_ns`
/// only decides which snapshots are in the future: the newest snapshot not in
/// the future anchors every `within` rule.
pub fn apply_policy(snapshots: &[(Id, Snapshot)], policy: &Policy, now_ns: i64) -> Vec<Decision> {
    let mut order: Vec<&(Id, Snapshot)> = snapshots.iter().collect();
    order.sort_by_key(|s| Reverse(s.1.time_ns));
    if policy.is_empty() {
        let reasons = vec!["policy is empty".to_string()];
        return order.iter().map(|(id, _)| Decision { id: *id, keep: true, reasons: reasons.clone() }).collect();
    }
    let latest = order.iter().map(|(_, s)| s.time_ns).filter(|&t| t < now_ns).max();
    // Everything is within a duration of "no latest" (restic measures from the zero time).
    let cutoff = |d: &Duration| latest.map_or(i64::MIN, |l| d.before(l));
    struct Bucket {
        left: Keep,
        period: Period,
        last: Option<i64>,
        reason: &'static str,
    }
    let mut buckets = [
        Bucket { left: policy.last, period: Period::Last, last: None, reason: "last snapshot" },
        Bucket { left: policy.hourly, period: Period::Hour, last: None, reason: "hourly snapshot" },
        Bucket { left: policy.daily, period: Period::Day, last: None, reason: "daily snapshot" },
        Bucket { left: policy.weekly, period: Period::Week, last: None, reason: "weekly snapshot" },
        Bucket { left: policy.monthly, period: Period::Month, last: None, reason: "monthly snapshot" },
        Bucket { left: policy.yearly, period: Period::Year, last: None, reason: "yearly snapshot" },
    ];
    struct WithinBucket {
        within: Duration,
        period: Period,
        last: Option<i64>,
        reason: &'static str,
    }
    let mut within_buckets = [
        WithinBucket { within: policy.within_hourly, period: Period::Hour, last: None, reason: "hourly within" },
        WithinBucket { within: policy.within_daily, period: Period::Day, last: None, reason: "daily within" },
        WithinBucket { within: policy.within_weekly, period: Period::Week, last: None, reason: "weekly within" },
        WithinBucket { within: policy.within_monthly, period: Period::Month, last: None, reason: "monthly within" },
        WithinBucket { within: policy.within_yearly, period: Period::Year, last: None, reason: "yearly within" },
    ];
    let oldest = order.len().saturating_sub(1);
    let mut out = Vec::with_capacity(order.len());
    for (nr, (id, snap)) in order.iter().enumerate() {
        let t = snap.time_ns;
        let mut reasons = Vec::new();
        for list in &policy.tags {
            if has_tags(&snap.tags, list) {
                reasons.push(format!("has tags {}", tag_list(list)));
            }
        }
        if !policy.within.is_zero() && t > cutoff(&policy.within) {
            reasons.push(format!("within {}", policy.within));
        }
        for b in buckets.iter_mut().filter(|b| b.left.active()) {
            let val = period_of(b.period, t, nr);
            let same_period = b.last == Some(val);
            // The oldest snapshot is kept too while a rule has counts left,
            // which keeps the longest history the counts allow.
            if !same_period || nr == oldest {
                reasons.push(if same_period { format!("oldest {}", b.reason) } else { b.reason.to_string() });
                b.last = Some(val);
                if let Keep::Count(n) = &mut b.left {
                    *n -= 1;
                }
            }
        }
        for b in within_buckets.iter_mut().filter(|b| !b.within.is_zero()) {
            if t > cutoff(&b.within) {
                let val = period_of(b.period, t, nr);
                if b.last != Some(val) {
                    b.last = Some(val);
                    reasons.push(format!("{} {}", b.reason, b.within));
                }
            }
        }
        out.push(Decision { id: *id, keep: !reasons.is_empty(), reasons });
    }
    out
}

/// Which snapshot properties form a group (`host,paths` by default; none: one group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy { host: true, paths: true, tags: false }
    }
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy { host: false, paths: false, tags: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                other => return Err(format!("cannot group by `{other}`: use host, paths and tags")),
            }
        }
        Ok(g)
    }
}

/// The properties a group of snapshots shares; `None` for those not grouped by.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub hostname: Option<String>,
    /// Sorted.
    pub paths: Option<Vec<Vec<u8>>>,
    /// Sorted.
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(s: &Snapshot, by: GroupBy) -> GroupKey {
        fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
            v.sort();
            v.dedup();
            v
        }
        GroupKey {
            hostname: by.host.then(|| s.hostname.clone()),
            paths: by.paths.then(|| sorted(s.paths.clone())),
            tags: by.tags.then(|| sorted(s.tags.clone())),
        }
    }
}

/// Which snapshots a policy looks at at all; the others are left alone.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Any of these hosts (empty: every host).
    pub hosts: Vec<String>,
    /// Snapshots having every tag of any one list (empty: no condition).
    pub tags: Vec<Vec<String>>,
    /// Snapshots of every one of these absolute paths.
    pub paths: Vec<Vec<u8>>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && (self.tags.is_empty() || self.tags.iter().any(|l| has_tags(&s.tags, l)))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// What to forget: either the snapshots a policy does not keep, or exactly
/// the snapshots named by `ids`.
#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    pub group_by: GroupBy,
    pub filter: SnapshotFilter,
    /// Snapshot ids or unique prefixes (or `latest`) to forget instead of a policy.
    pub ids: Vec<String>,
    pub dry_run: bool,
}

/// One group's outcome. Snapshots are newest first.
#[derive(Clone, Debug)]
pub struct ForgetGroup {
    pub key: GroupKey,
    /// Kept snapshots with the rules that kept them.
    pub keep: Vec<(Id, Snapshot, Vec<String>)>,
    pub remove: Vec<(Id, Snapshot)>,
}

/// What a policy or an id list decided, before anything is deleted.
#[derive(Clone, Debug, Default)]
pub struct ForgetPlan {
    pub groups: Vec<ForgetGroup>,
    /// Unreadable snapshot objects named by their full id, to delete as well.
    pub unreadable: Vec<Id>,
}

impl ForgetPlan {
    /// Every snapshot object to delete.
    pub fn to_remove(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = self
            .groups
            .iter()
            .flat_map(|g| g.remove.iter().map(|(id, _)| *id))
            .chain(self.unreadable.iter().copied())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// The result of `forget`.
#[derive(Clone, Debug, Default)]
pub struct ForgetReport {
    pub plan: ForgetPlan,
    pub dry_run: bool,
    /// Snapshot objects deleted (none in a dry run).
    pub removed: Vec<Id>,
    /// Snapshot objects that could not be read; a policy leaves them alone.
    pub unreadable: Vec<(Id, String)>,
}

fn resolve<'a>(spec: &str, snapshots: &'a [(Id, Snapshot)]) -> Result<&'a (Id, Snapshot), RepoError> {
    if spec == "latest" {
        return snapshots
            .iter()
            .max_by_key(|(id, s)| (s.time_ns, *id))
            .ok_or_else(|| RepoError::Invalid("the repository has no snapshots".into()));
    }
    let lc = spec.to_ascii_lowercase();
    if lc.is_empty() || !lc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RepoError::Invalid(format!("`{spec}` is neither `latest` nor a snapshot id")));
    }
    let mut found = snapshots.iter().filter(|(id, _)| id.to_hex().starts_with(&lc));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(RepoError::Invalid(format!("no snapshot matches `{spec}`"))),
        (Some(_), Some(_)) => {
            Err(RepoError::Invalid(format!("`{spec}` matches several snapshots; give more of the id")))
        }
    }
}

/// Decides what to forget (pure). `snapshots` are the readable snapshots,
/// `unreadable` the ids of those that could not be read (only ever removed
/// when named by their full id).
pub fn plan(
    snapshots: Vec<(Id, Snapshot)>,
    unreadable: &[Id],
    opts: &ForgetOptions,
    now_ns: i64,
) -> Result<ForgetPlan, RepoError> {
    if !opts.ids.is_empty() {
        if !opts.policy.is_empty() {
            return Err(RepoError::Invalid("give either snapshot ids or a policy, not both".into()));
        }
        let mut chosen: Vec<(Id, Snapshot)> = Vec::new();
        let mut bad = Vec::new();
        for spec in &opts.ids {
            match spec.parse::<Id>() {
                Ok(full) if unreadable.contains(&full) => bad.push(full),
                _ => {
                    let (id, s) = resolve(spec, &snapshots)?;
                    if !chosen.iter().any(|(c, _)| c == id) {
                        chosen.push((*id, s.clone()));
                    }
                }
            }
        }
        chosen.sort_by_key(|s| Reverse(s.1.time_ns));
        bad.sort();
        bad.dedup();
        let groups = if chosen.is_empty() {
            Vec::new()
        } else {
            vec![ForgetGroup { key: GroupKey::default(), keep: Vec::new(), remove: chosen }]
        };
        return Ok(ForgetPlan { groups, unreadable: bad });
    }
    if opts.policy.is_empty() {
        return Err(RepoError::Invalid(
            "no policy given (--keep-last, --keep-daily, --keep-within, ...) and no snapshot ids: nothing would be removed"
                .into(),
        ));
    }
    let mut groups: BTreeMap<GroupKey, Vec<(Id, Snapshot)>> = BTreeMap::new();
    for (id, s) in snapshots.into_iter().filter(|(_, s)| opts.filter.matches(s)) {
        groups.entry(GroupKey::of(&s, opts.group_by)).or_default().push((id, s));
    }
    let mut out = Vec::with_capacity(groups.len());
    for (key, members) in groups {
        let decisions = apply_policy(&members, &opts.policy, now_ns);
        let mut by_id: BTreeMap<Id, Snapshot> = members.into_iter().collect();
        let mut group = ForgetGroup { key, keep: Vec::new(), remove: Vec::new() };
        for d in decisions {
            let Some(s) = by_id.remove(&d.id) else { continue };
            if d.keep {
                group.keep.push((d.id, s, d.reasons));
            } else {
                group.remove.push((d.id, s));
            }
        }
        out.push(group);
    }
    Ok(ForgetPlan { groups: out, unreadable: Vec::new() })
}

/// Forgets snapshots: decides with [`plan`], then (unless a dry run) deletes
/// the snapshot objects. The caller holds an exclusive lock for a real run.
pub async fn forget(repo: &Repository, lock: &LockGuard, opts: &ForgetOptions) -> Result<ForgetReport, RepoError> {
    let (snapshots, bad) = repo.snapshots().await?;
    let bad_ids: Vec<Id> = bad.iter().map(|(id, _)| *id).collect();
    let plan = plan(snapshots, &bad_ids, opts, crate::host::now_ns())?;
    let mut report = ForgetReport {
        dry_run: opts.dry_run,
        unreadable: bad
            .into_iter()
            .filter(|(id, _)| !plan.unreadable.contains(id))
            .map(|(id, e)| (id, e.to_string()))
            .collect(),
        ..Default::default()
    };
    if !opts.dry_run {
        let ids = plan.to_remove();
        let unique: HashSet<Id> = ids.iter().copied().collect();
        debug_assert_eq!(unique.len(), ids.len());
        if !ids.is_empty() {
            lock.ensure_held().await?;
        }
        for id in ids {
            lock.ensure_fresh()?;
            repo.backend().delete(ObjectKind::Snapshot, &id).await?;
            tracing::info!(snapshot = %id.short(), "snapshot forgotten");
            report.removed.push(id);
        }
    }
    report.plan = plan;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = NS_PER_HOUR;
    const D: i64 = NS_PER_DAY;

    /// `YYYY-MM-DD HH:MM` (UTC) in ns.
    fn at(s: &str) -> i64 {
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let day = days_from_civil(n(0..4), n(5..7) as u32, n(8..10) as u32);
        day * D + n(11..13) * H + n(14..16) * 60 * 1_000_000_000
    }

    fn snap(time: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time_ns: at(time),
            tree: Id::ZERO,
            paths: vec![b"/data".to_vec()],
            hostname: "h".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
            program_version: "test".into(),
            summary: Default::default(),
            original: None,
        }
    }

    fn id(n: usize) -> Id {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(n as u64).to_be_bytes());
        Id(b)
    }

    /// The snapshot times every policy below is applied to (oldest first, as
    /// the repository lists them); the tables give the decision for each,
    /// newest first. Weekdays: 2024-01-01 was a Monday.
    const TIMES: &[(&str, &[&str])] = &[
        ("2022-06-15 12:00", &[]),
        ("2023-03-31 23:59", &[]),
        ("2023-12-25 10:00", &["xmas"]),
        ("2024-01-01 09:00", &[]),
        ("2024-01-07 18:00", &[]),
        ("2024-01-08 08:00", &["manual"]),
        ("2024-01-08 08:30", &[]),
        ("2024-01-08 17:00", &["manual", "big"]),
        ("2024-01-09 07:00", &[]),
        ("2024-01-09 07:45", &[]),
    ];

    fn run(policy: Policy) -> Vec<(String, Vec<String>)> {
        let snaps: Vec<(Id, Snapshot)> =
            TIMES.iter().enumerate().map(|(i, (t, tags))| (id(i), snap(t, tags))).collect();
        let now = at("2024-01-10 00:00");
        apply_policy(&snaps, &policy, now)
            .into_iter()
            .map(|d| {
                assert_eq!(d.keep, !d.reasons.is_empty());
                let (_, s) = snaps.iter().find(|(i, _)| *i == d.id).unwrap();
                (crate::format_time(s.time_ns)[..16].to_string(), d.reasons)
            })
            .collect()
    }

    fn check_table(policy: Policy, expected: &[(&str, &[&str])]) {
        let got = run(policy.clone());
        let want: Vec<(String, Vec<String>)> =
            expected.iter().map(|(t, r)| (t.to_string(), r.iter().map(|s| s.to_string()).collect())).collect();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "policy `{policy}`");
        }
        assert_eq!(got.len(), want.len());
    }

    const FORGET: &[&str] = &[];

    #[test]
    fn retention_table() {
        // keep-last: the N newest.
        check_table(
            Policy { last: Keep::Count(3), ..Default::default() },
            &[
                ("2024-01-09 07:45", &["last snapshot"]),
                ("2024-01-09 07:00", &["last snapshot"]),
                ("2024-01-08 17:00", &["last snapshot"]),
                ("2024-01-08 08:30", FORGET),
                ("2024-01-08 08:00", FORGET),
                ("2024-01-07 18:00", FORGET),
                ("2024-01-01 09:00", FORGET),
                ("2023-12-25 10:00", FORGET),
                ("2023-03-31 23:59", FORGET),
                ("2022-06-15 12:00", FORGET),
            ],
        );
        // keep-daily: the newest of each day, counting days that have snapshots.
        check_table(
            Policy { daily: Keep::Count(3), ..Default::default() },
            &[
                ("2024-01-09 07:45", &["daily snapshot"]),
                ("2024-01-09 07:00", FORGET),
                ("2024-01-08 17:00", &["daily snapshot"]),
                ("2024-01-08 08:30", FORGET),
                ("2024-01-08 08:00", FORGET),
                ("2024-01-07 18:00", &["daily snapshot"]),
                ("2024-01-01 09:00", FORGET),
                ("2023-12-25 10:00", FORGET),
                ("2023-03-31 23:59", FORGET),
                ("2022-06-15 12:00", FORGET),
            ],
        );
        // Several rules: a snapshot names every rule that kept it; ISO weeks
        // run Monday to Sunday (2024-01-07 is the Sunday of week 1, 2023-12-25
        // and 2024-01-01 are Mondays of weeks 52 and 1); the yearly rule still
        // has a count left at the oldest snapshot, which it keeps as well.
        check_table(
            Policy {
                last: Keep::Count(1),
                daily: Keep::Count(2),
                weekly: Keep::Count(3),
                yearly: Keep::Count(5),
                ..Default::default()
            },
            &[
                ("2024-01-09 07:45", &["last snapshot", "daily snapshot", "weekly snapshot", "yearly snapshot"]),
                ("2024-01-09 07:00", FORGET),
                ("2024-01-08 17:00", &["daily snapshot"]),
                ("2024-01-08 08:30", FORGET),
                ("2024-01-08 08:00", FORGET),
                ("2024-01-07 18:00", &["weekly snapshot"]),
                ("2024-01-01 09:00", FORGET),
                ("2023-12-25 10:00", &["weekly snapshot", "yearly snapshot"]),
                ("2023-03-31 23:59", FORGET),
                ("2022-06-15 12:00", &["yearly snapshot"]),
            ],
        );
        // The oldest snapshot is kept while a rule has counts left, named
        // "oldest" when its period already has a newer snapshot.
        check_table(
            Policy { monthly: Keep::Count(10), ..Default::default() },
            &[
                ("2024-01-09 07:45", &["monthly snapshot"]),
                ("2024-01-09 07:00", FORGET),
                ("2024-01-08 17:00", FORGET),
                ("2024-01-08 08:30", FORGET),
                ("2024-01-08 08:00", FORGET),
                ("2024-01-07 18:00", FORGET),
                ("2024-01-01 09:00", FORGET),
                ("2023-12-25 10:00", &["monthly snapshot"]),
                ("2023-03-31 23:59", &["monthly snapshot"]),
                ("2022-06-15 12:00", &["monthly snapshot"]),
            ],
        );
        check_table(
            Policy { hourly: Keep::All, ..Default::default() },
            &[
                ("2024-01-09 07:45", &["hourly snapshot"]),
                ("2024-01-09 07:00", FORGET),
                ("2024-01-08 17:00", &["hourly snapshot"]),
                ("2024-01-08 08:30", &["hourly snapshot"]),
                ("2024-01-08 08:00", FORGET),
                ("2024-01-07 18:00", &["hourly snapshot"]),
                ("2024-01-01 09:00", &["hourly snapshot"]),
                ("2023-12-25 10:00", &["hourly snapshot"]),
                ("2023-03-31 23:59", &["hourly snapshot"]),
                ("2022-06-15 12:00", &["hourly snapshot"]),
            ],
        );
        let mut oldest_same_period: Vec<(Id, Snapshot)> =
            ["2024-01-09 07:00", "2024-01-09 07:45"].iter().enumerate().map(|(i, t)| (id(i), snap(t, &[]))).collect();
        oldest_same_period.reverse();
        let d = apply_policy(
            &oldest_same_period,
            &Policy { daily: Keep::Count(2), ..Default::default() },
            at("2030-01-01 00:00"),
        );
        assert_eq!(d[0].reasons, ["daily snapshot"]);
        assert_eq!(d[1].reasons, ["oldest daily snapshot"]);
    }

    #[test]
    fn within_rules_and_tags() {
        // keep-within counts back from the newest snapshot (2024-01-09 07:45),
        // not from now, and keeps what is strictly newer than the cut-off.
        check_table(
            Policy { within: "1d".parse().unwrap(), ..Default::default() },
            &[
                ("2024-01-09 07:45", &["within 1d"]),
                ("2024-01-09 07:00", &["within 1d"]),
                ("2024-01-08 17:00", &["within 1d"]),
                ("2024-01-08 08:30", &["within 1d"]),
                ("2024-01-08 08:00", &["within 1d"]),
                ("2024-01-07 18:00", FORGET),
                ("2024-01-01 09:00", FORGET),
                ("2023-12-25 10:00", FORGET),
                ("2023-03-31 23:59", FORGET),
                ("2022-06-15 12:00", FORGET),
            ],
        );
        check_table(
            Policy {
                within: "2w".parse().unwrap(),
                tags: vec![vec!["xmas".into()], vec!["manual".into(), "big".into()]],
                ..Default::default()
            },
            &[
                ("2024-01-09 07:45", &["within 2w"]),
                ("2024-01-09 07:00", &["within 2w"]),
                ("2024-01-08 17:00", &["has tags [manual, big]", "within 2w"]),
                ("2024-01-08 08:30", &["within 2w"]),
                ("2024-01-08 08:00", &["within 2w"]),
                ("2024-01-07 18:00", &["within 2w"]),
                ("2024-01-01 09:00", &["within 2w"]),
                ("2023-12-25 10:00", &["has tags [xmas]"]),
                ("2023-03-31 23:59", FORGET),
                ("2022-06-15 12:00", FORGET),
            ],
        );
        check_table(
            Policy { within_daily: "3d".parse().unwrap(), within_monthly: "1y".parse().unwrap(), ..Default::default() },
            &[
                ("2024-01-09 07:45", &["daily within 3d", "monthly within 1y"]),
                ("2024-01-09 07:00", FORGET),
                ("2024-01-08 17:00", &["daily within 3d"]),
                ("2024-01-08 08:30", FORGET),
                ("2024-01-08 08:00", FORGET),
                ("2024-01-07 18:00", &["daily within 3d"]),
                ("2024-01-01 09:00", FORGET),
                ("2023-12-25 10:00", &["monthly within 1y"]),
                ("2023-03-31 23:59", &["monthly within 1y"]),
                ("2022-06-15 12:00", FORGET),
            ],
        );
        // Snapshots in the future do not anchor `within`.
        let snaps = vec![(id(1), snap("2024-01-01 00:00", &[])), (id(2), snap("2099-01-01 00:00", &[]))];
        let d = apply_policy(
            &snaps,
            &Policy { within: "1h".parse().unwrap(), ..Default::default() },
            at("2024-01-02 00:00"),
        );
        assert!(d.iter().all(|d| d.keep), "{d:?}");
    }

    #[test]
    fn within_boundary_is_exclusive() {
        let snaps = vec![(id(1), snap("2024-01-08 07:45", &[])), (id(2), snap("2024-01-09 07:45", &[]))];
        let d = apply_policy(
            &snaps,
            &Policy { within: "1d".parse().unwrap(), ..Default::default() },
            at("2025-01-01 00:00"),
        );
        assert_eq!((d[0].keep, d[1].keep), (true, false));
    }

    #[test]
    fn calendar_arithmetic() {
        for day in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        // Go's AddDate normalisation: 2024-03-31 minus one month is "2024-02-31", i.e. 2024-03-02.
        let one_month: Duration = "1m".parse().unwrap();
        assert_eq!(one_month.before(at("2024-03-31 10:00")), at("2024-03-02 10:00"));
        let d: Duration = "1y5m7d2h".parse().unwrap();
        assert_eq!(d.before(at("2024-06-10 12:00")), at("2023-01-03 10:00"));
        assert_eq!("2w".parse::<Duration>().unwrap().before(at("2024-01-15 00:00")), at("2024-01-01 00:00"));
        assert_eq!(iso_week(days_from_civil(2021, 1, 3)), (2020, 53));
        assert_eq!(iso_week(days_from_civil(2024, 12, 30)), (2025, 1));
        assert_eq!(iso_week(days_from_civil(2024, 1, 7)), (2024, 1));
        assert_eq!(iso_week(days_from_civil(2023, 12, 25)), (2023, 52));
    }

    #[test]
    fn parses_durations_counts_and_groups() {
        assert_eq!("1y5m7d2h".parse::<Duration>().unwrap().to_string(), "1y5m7d2h");
        assert_eq!("30d".parse::<Duration>().unwrap(), Duration { days: 30, ..Default::default() });
        assert_eq!("2w".parse::<Duration>().unwrap().to_string(), "2w");
        for bad in ["", "d", "12", "3x", "1y-2m", "99999999999d"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
        assert_eq!("unlimited".parse::<Keep>().unwrap(), Keep::All);
        assert_eq!("7".parse::<Keep>().unwrap(), Keep::Count(7));
        assert!("seven".parse::<Keep>().is_err());
        assert_eq!("host,tags".parse::<GroupBy>().unwrap(), GroupBy { host: true, paths: false, tags: true });
        assert_eq!("".parse::<GroupBy>().unwrap(), GroupBy { host: false, paths: false, tags: false });
        assert!("colour".parse::<GroupBy>().is_err());
        let p = Policy {
            last: Keep::Count(2),
            daily: Keep::Count(7),
            within: "30d".parse().unwrap(),
            ..Default::default()
        };
        assert_eq!(p.to_string(), "keep 2 latest, 7 daily snapshots and all snapshots within 30d of the newest");
    }

    #[test]
    fn plans_groups_filters_and_ids() {
        let mut a = snap("2024-01-01 00:00", &[]);
        a.hostname = "a".into();
        let mut b = snap("2024-01-02 00:00", &[]);
        b.hostname = "b".into();
        let mut b2 = snap("2024-01-03 00:00", &["t"]);
        b2.hostname = "b".into();
        let snaps = vec![(id(1), a), (id(2), b), (id(3), b2)];
        let now = at("2024-02-01 00:00");
        let last1 =
            ForgetOptions { policy: Policy { last: Keep::Count(1), ..Default::default() }, ..Default::default() };
        let p = plan(snaps.clone(), &[], &last1, now).unwrap();
        assert_eq!(p.groups.len(), 2, "grouped by host and paths");
        assert_eq!(p.to_remove(), vec![id(2)]);
        let one_group = ForgetOptions { group_by: "".parse().unwrap(), ..last1.clone() };
        assert_eq!(plan(snaps.clone(), &[], &one_group, now).unwrap().to_remove(), vec![id(1), id(2)]);
        let only_a =
            ForgetOptions { filter: SnapshotFilter { hosts: vec!["a".into()], ..Default::default() }, ..one_group };
        assert!(plan(snaps.clone(), &[], &only_a, now).unwrap().to_remove().is_empty());
        let by_id = ForgetOptions { ids: vec![id(2).to_hex()[..16].to_string()], ..Default::default() };
        assert_eq!(plan(snaps.clone(), &[], &by_id, now).unwrap().to_remove(), vec![id(2)]);
        let unreadable = ForgetOptions { ids: vec![id(9).to_hex()], ..Default::default() };
        assert_eq!(plan(snaps.clone(), &[id(9)], &unreadable, now).unwrap().to_remove(), vec![id(9)]);
        assert!(plan(snaps.clone(), &[], &ForgetOptions::default(), now).is_err(), "an empty policy is refused");
        let both = ForgetOptions { ids: vec!["latest".into()], ..last1 };
        assert!(plan(snaps.clone(), &[], &both, now).is_err());
        let ambiguous = ForgetOptions { ids: vec!["00".into()], ..Default::default() };
        assert!(plan(snaps, &[], &ambiguous, now).is_err());
    }
}
