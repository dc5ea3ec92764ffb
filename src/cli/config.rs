//! The configuration file (TOML): repository, password source, cache,
//! excludes, retention policy, Telegram settings, the snapshot's pace and
//! budget (`limit-upload`, `max-upload`, `max-duration`) and the paths to back up,
//! at the top level and in named profiles (`[profiles.NAME]`, chosen with
//! `-P NAME`) that override it. Found at `--config` / `TSTOR_CONFIG`, else
//! at `<config dir>/tstor/config.toml` (which may be missing).
//!
//! Precedence, first wins: flag, environment, profile, top level, default.
//! The password source (`password`, `password-file`, `password-command`) and
//! the retention policy (`keep-*`) are each taken whole from the first place
//! that sets any part of them. Exclude lists add up (top level, profile,
//! command line); every other setting is a single value. Relative paths are
//! relative to the file's directory; `~/` is the home directory.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::Global;
use crate::archiver::ExcludeOptions;
use crate::ops::check::parse_size;
use crate::ops::forget::{Duration, Keep, Policy};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("config file {}{}: {message}", path.display(), line.map(|(l, c)| format!(", line {l}, column {c}")).unwrap_or_default())]
    Invalid { path: PathBuf, line: Option<(usize, usize)>, message: String },
    #[error("config file {} has no profile `{name}`{}", path.display(), known_profiles(known))]
    NoProfile { path: PathBuf, name: String, known: Vec<String> },
    #[error("profile `{name}` was asked for, but there is no config file at {}", path.display())]
    NoFile { path: PathBuf, name: String },
    #[error("cannot find your config directory for the profile `{0}`; give --config")]
    NoConfigDir(String),
}

fn known_profiles(known: &[String]) -> String {
    if known.is_empty() {
        " (it has none)".to_string()
    } else {
        format!(" (profiles: {})", known.join(", "))
    }
}

/// Where the password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// Written in the file itself (a warning is printed when it is used).
    Literal(String),
    File(PathBuf),
    Command(String),
}

/// What the configuration file says, after choosing the profile.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    pub profile: Option<String>,
    pub repository: Option<String>,
    pub password: Option<PasswordSource>,
    pub cache_dir: Option<PathBuf>,
    pub no_cache: bool,
    /// What `snapshot` backs up when the command line names nothing.
    pub paths: Vec<PathBuf>,
    pub excludes: ExcludeOptions,
    /// The `forget` policy when the command line gives no `--keep-*` rule.
    pub policy: Policy,
    /// `snapshot --limit-upload` (bytes per second), `--max-upload`
    /// (bytes) and `--max-duration` when the command line gives none.
    pub limit_upload: Option<u64>,
    pub max_upload: Option<u64>,
    pub max_duration: Option<std::time::Duration>,
    /// The `[telegram]` table as written (profile keys over top-level
    /// ones): `session` (a path), `api-id`, `api-hash` (strings).
    pub telegram: toml::Table,
}

/// An integer or a string in the file.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(i64),
    Str(String),
}

/// A size: bytes as an integer, or a string such as `10M` or `1GiB`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "NumOrStr")]
struct Size(u64);

impl TryFrom<NumOrStr> for Size {
    type Error = String;
    fn try_from(v: NumOrStr) -> Result<Size, String> {
        match v {
            NumOrStr::Num(n) => u64::try_from(n).map(Size).map_err(|_| format!("{n} is not a size")),
            NumOrStr::Str(s) => parse_size(&s).map(Size),
        }
    }
}

/// A `keep-*` count: an integer or `"unlimited"`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "NumOrStr")]
struct KeepValue(Keep);

impl TryFrom<NumOrStr> for KeepValue {
    type Error = String;
    fn try_from(v: NumOrStr) -> Result<KeepValue, String> {
        match v {
            NumOrStr::Num(n) => n.to_string().parse().map(KeepValue),
            NumOrStr::Str(s) => s.parse().map(KeepValue),
        }
    }
}

/// A `keep-within*` duration such as `"30d"`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "String")]
struct DurationValue(Duration);

impl TryFrom<String> for DurationValue {
    type Error = String;
    fn try_from(s: String) -> Result<DurationValue, String> {
        s.parse().map(DurationValue)
    }
}

/// A rate such as `"5MiB"` (bytes per second), or bytes per second as an integer.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "NumOrStr")]
struct Rate(u64);

impl TryFrom<NumOrStr> for Rate {
    type Error = String;
    fn try_from(v: NumOrStr) -> Result<Rate, String> {
        match v {
            NumOrStr::Num(n) => u64::try_from(n).ok().filter(|&n| n > 0).map(Rate).ok_or(format!("{n} is not a rate")),
            NumOrStr::Str(s) => super::pacing::parse_rate(&s).map(Rate),
        }
    }
}

/// A time limit such as `"8h"` or `"1h30m"`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "String")]
struct TimeLimit(std::time::Duration);

impl TryFrom<String> for TimeLimit {
    type Error = String;
    fn try_from(s: String) -> Result<TimeLimit, String> {
        super::pacing::parse_duration(&s).map(TimeLimit)
    }
}

/// The top level of the file, or one profile: every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Section {
    repository: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    password_command: Option<String>,
    cache_dir: Option<String>,
    no_cache: Option<bool>,
    paths: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    iexclude: Option<Vec<String>>,
    exclude_file: Option<Vec<String>>,
    iexclude_file: Option<Vec<String>>,
    exclude_if_present: Option<Vec<String>>,
    exclude_caches: Option<bool>,
    exclude_larger_than: Option<Size>,
    one_file_system: Option<bool>,
    keep_last: Option<KeepValue>,
    keep_hourly: Option<KeepValue>,
    keep_daily: Option<KeepValue>,
    keep_weekly: Option<KeepValue>,
    keep_monthly: Option<KeepValue>,
    keep_yearly: Option<KeepValue>,
    keep_within: Option<DurationValue>,
    keep_within_hourly: Option<DurationValue>,
    keep_within_daily: Option<DurationValue>,
    keep_within_weekly: Option<DurationValue>,
    keep_within_monthly: Option<DurationValue>,
    keep_within_yearly: Option<DurationValue>,
    keep_tag: Option<Vec<String>>,
    limit_upload: Option<Rate>,
    max_upload: Option<Size>,
    max_duration: Option<TimeLimit>,
    telegram: Option<toml::Table>,
    profiles: Option<Spanned<BTreeMap<String, Section>>>,
}

/// Line and column (from 1) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// Resolves paths written in the file.
struct Paths<'a> {
    base: &'a Path,
    home: Option<PathBuf>,
}

impl Paths<'_> {
    fn expand(&self, s: &str) -> PathBuf {
        let p = match (s.strip_prefix("~/"), &self.home) {
            (Some(rest), Some(h)) => h.join(rest),
            _ if s == "~" => self.home.clone().unwrap_or_else(|| PathBuf::from(s)),
            _ => PathBuf::from(s),
        };
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn expand_all(&self, v: &[String]) -> Vec<PathBuf> {
        v.iter().map(|s| self.expand(s)).collect()
    }

    /// A repository spec: plain and `local:` paths are resolved, other kinds kept.
    fn repository(&self, s: &str) -> String {
        if let Some(rest) = s.strip_prefix("local:") {
            format!("local:{}", self.expand(rest).display())
        } else if s.contains(':') {
            s.to_string()
        } else {
            self.expand(s).display().to_string()
        }
    }

    /// `~/` at the start of a pattern (after an optional `!`) is the home directory.
    fn pattern(&self, s: &str) -> String {
        let (neg, body) = s.strip_prefix('!').map_or(("", s), |b| ("!", b));
        match (body.strip_prefix("~/"), &self.home) {
            (Some(rest), Some(h)) => format!("{neg}{}", h.join(rest).display()),
            _ => s.to_string(),
        }
    }
}

impl Section {
    /// At most one password source per section.
    fn check_password(&self, at: &str) -> Result<(), String> {
        let set = [self.password.is_some(), self.password_file.is_some(), self.password_command.is_some()];
        if set.iter().filter(|&&b| b).count() > 1 {
            return Err(format!("{at} sets more than one of password, password-file and password-command"));
        }
        Ok(())
    }

    fn password_source(&self, paths: &Paths<'_>) -> Option<PasswordSource> {
        if let Some(p) = &self.password {
            return Some(PasswordSource::Literal(p.clone()));
        }
        if let Some(f) = &self.password_file {
            return Some(PasswordSource::File(paths.expand(f)));
        }
        self.password_command.clone().map(PasswordSource::Command)
    }

    fn has_policy(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
            || self.keep_within_hourly.is_some()
            || self.keep_within_daily.is_some()
            || self.keep_within_weekly.is_some()
            || self.keep_within_monthly.is_some()
            || self.keep_within_yearly.is_some()
            || self.keep_tag.is_some()
    }

    fn policy(&self) -> Policy {
        let k = |v: Option<KeepValue>| v.map(|k| k.0).unwrap_or_default();
        let d = |v: Option<DurationValue>| v.map(|d| d.0).unwrap_or_default();
        Policy {
            last: k(self.keep_last),
            hourly: k(self.keep_hourly),
            daily: k(self.keep_daily),
            weekly: k(self.keep_weekly),
            monthly: k(self.keep_monthly),
            yearly: k(self.keep_yearly),
            within: d(self.keep_within),
            within_hourly: d(self.keep_within_hourly),
            within_daily: d(self.keep_within_daily),
            within_weekly: d(self.keep_within_weekly),
            within_monthly: d(self.keep_within_monthly),
            within_yearly: d(self.keep_within_yearly),
            tags: self
                .keep_tag
                .iter()
                .flatten()
                .map(|t| t.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect())
                .collect(),
        }
    }

    /// Adds this section's excludes to `ex` (lists add up, single values override).
    fn add_excludes(&self, ex: &mut ExcludeOptions, paths: &Paths<'_>) {
        let patterns = |v: &Option<Vec<String>>| v.iter().flatten().map(|p| paths.pattern(p)).collect::<Vec<_>>();
        ex.patterns.extend(patterns(&self.exclude));
        ex.ipatterns.extend(patterns(&self.iexclude));
        ex.pattern_files.extend(paths.expand_all(self.exclude_file.as_deref().unwrap_or_default()));
        ex.ipattern_files.extend(paths.expand_all(self.iexclude_file.as_deref().unwrap_or_default()));
        ex.if_present.extend(self.exclude_if_present.iter().flatten().cloned());
        if let Some(b) = self.exclude_caches {
            ex.caches = b;
        }
        if let Some(s) = self.exclude_larger_than {
            ex.larger_than = Some(s.0);
        }
        if let Some(b) = self.one_file_system {
            ex.one_file_system = b;
        }
    }
}

/// The default location: `<config dir>/tstor/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("tstor").join("config.toml"))
}

/// Reads the file at `explicit` (which must exist) or at the default location
/// (which may be missing) and applies `profile`.
pub fn load(explicit: Option<&Path>, profile: Option<&str>) -> Result<Settings, ConfigError> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => {
                return match profile {
                    Some(name) => Err(ConfigError::NoConfigDir(name.to_string())),
                    None => Ok(Settings::default()),
                }
            }
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {
            return match profile {
                Some(name) => Err(ConfigError::NoFile { path, name: name.to_string() }),
                None => Ok(Settings::default()),
            };
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    parse(&path, &text, profile)
}

/// serde's "unknown field `exclud`, expected one of `a`, `b`, ..." as
/// "unknown key `exclud`; did you mean `exclude`?" when a known key is
/// near it (a typo), else the message as it is.
fn suggest_key(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_string() };
    let Some((typed, expected)) = rest.split_once('`') else { return message.to_string() };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let nearest = known.iter().map(|k| (edit_distance(typed, k), *k)).min();
    match nearest {
        Some((d, key)) if d <= (typed.chars().count() / 3).max(2) => {
            format!("unknown key `{typed}`; did you mean `{key}`?")
        }
        _ => format!("unknown key `{typed}`; the keys are {}", known.join(", ")),
    }
}

/// Levenshtein distance between two strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Parses the text of the file at `path` and applies `profile`.
pub fn parse(path: &Path, text: &str, profile: Option<&str>) -> Result<Settings, ConfigError> {
    let invalid = |line: Option<(usize, usize)>, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut top: Section = toml::from_str(text)
        .map_err(|e| invalid(e.span().map(|s| line_col(text, s.start)), suggest_key(e.message().trim_end())))?;
    let mut profiles = BTreeMap::new();
    if let Some(p) = top.profiles.take() {
        profiles = p.into_inner();
        if let Some(nested) = profiles.values().find_map(|s| s.profiles.as_ref()) {
            return Err(invalid(Some(line_col(text, nested.span().start)), "profiles cannot hold profiles".into()));
        }
    }
    top.check_password("the top level").map_err(|m| invalid(None, m))?;
    for (name, s) in &profiles {
        s.check_password(&format!("profile `{name}`")).map_err(|m| invalid(None, m))?;
    }
    let chosen = match profile {
        Some(name) => Some(profiles.get(name).ok_or_else(|| ConfigError::NoProfile {
            path: path.to_path_buf(),
            name: name.to_string(),
            known: profiles.keys().cloned().collect(),
        })?),
        None => None,
    };
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let paths = Paths { base, home: dirs::home_dir() };
    let over = |f: fn(&Section) -> bool| chosen.filter(|s| f(s)).unwrap_or(&top);
    let mut excludes = ExcludeOptions::default();
    top.add_excludes(&mut excludes, &paths);
    if let Some(p) = chosen {
        p.add_excludes(&mut excludes, &paths);
    }
    let mut telegram = top.telegram.clone().unwrap_or_default();
    if let Some(t) = chosen.and_then(|p| p.telegram.as_ref()) {
        telegram.extend(t.clone());
    }
    let pick = |f: fn(&Section) -> Option<&String>| chosen.and_then(f).or_else(|| f(&top));
    Ok(Settings {
        file: Some(path.to_path_buf()),
        profile: profile.map(String::from),
        repository: pick(|s| s.repository.as_ref()).map(|r| paths.repository(r)),
        password: over(|s| s.password.is_some() || s.password_file.is_some() || s.password_command.is_some())
            .password_source(&paths),
        cache_dir: pick(|s| s.cache_dir.as_ref()).map(|c| paths.expand(c)),
        no_cache: chosen.and_then(|s| s.no_cache).or(top.no_cache).unwrap_or(false),
        paths: paths.expand_all(over(|s| s.paths.is_some()).paths.as_deref().unwrap_or_default()),
        excludes,
        policy: over(Section::has_policy).policy(),
        limit_upload: chosen.and_then(|s| s.limit_upload).or(top.limit_upload).map(|r| r.0),
        max_upload: chosen.and_then(|s| s.max_upload).or(top.max_upload).map(|s| s.0),
        max_duration: chosen.and_then(|s| s.max_duration).or(top.max_duration).map(|d| d.0),
        telegram,
    })
}

/// Loads the configuration named by `g` and fills in what the command line
/// and the environment left unset.
pub(super) fn apply(g: &mut Global) -> Result<(), ConfigError> {
    let explicit = g.config.clone().filter(|p| !p.as_os_str().is_empty());
    let profile = g.profile.clone().filter(|p| !p.is_empty());
    let settings = load(explicit.as_deref(), profile.as_deref())?;
    if g.repo.as_deref().is_none_or(str::is_empty) {
        g.repo = settings.repository.clone();
    }
    if g.cache_dir.is_none() {
        g.cache_dir = settings.cache_dir.clone();
    }
    g.no_cache |= settings.no_cache;
    let password_given =
        std::env::var_os("TSTOR_PASSWORD").is_some() || g.password_file.is_some() || g.password_command.is_some();
    if !password_given {
        match &settings.password {
            Some(PasswordSource::File(f)) => g.password_file = Some(f.clone()),
            Some(PasswordSource::Command(c)) => g.password_command = Some(c.clone()),
            Some(PasswordSource::Literal(_)) => {
                let file = super::output::escape_path(settings.file.as_deref().unwrap_or(Path::new("?")));
                errln!(
                    "tstor: warning: using the password written in {file}; prefer password-file or password-command"
                );
            }
            None => {}
        }
    }
    g.settings = settings;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str, profile: Option<&str>) -> Settings {
        parse(Path::new("/etc/tstor/config.toml"), text, profile).unwrap()
    }

    fn parse_err(text: &str, profile: Option<&str>) -> String {
        parse(Path::new("/etc/tstor/config.toml"), text, profile).unwrap_err().to_string()
    }

    const FILE: &str = r#"
repository = "/srv/backup"
password-file = "pass"
exclude = ["*.tmp"]
exclude-caches = true
keep-daily = 7
keep-weekly = "unlimited"

[telegram]
session = "/var/lib/tstor/tg.session"
api-id = "12345"

[profiles.work]
repository = "local:repos/work"
password-command = "pass show tstor"
paths = ["src", "/abs"]
exclude = ["target/"]
iexclude = ["*.ISO"]
exclude-if-present = [".nobackup"]
exclude-larger-than = "10M"
keep-last = 3
keep-within = "30d"
keep-tag = ["keep,important"]

[profiles.work.telegram]
api-hash = "abc"
"#;

    #[test]
    fn top_level_without_a_profile() {
        let s = parse_ok(FILE, None);
        assert_eq!(s.repository.as_deref(), Some("/srv/backup"));
        assert_eq!(s.password, Some(PasswordSource::File("/etc/tstor/pass".into())));
        assert_eq!(s.excludes.patterns, ["*.tmp"]);
        assert!(s.excludes.caches);
        assert_eq!(s.policy.daily, Keep::Count(7));
        assert_eq!(s.policy.weekly, Keep::All);
        assert!(s.paths.is_empty());
        assert_eq!(s.telegram.get("api-id").and_then(|v| v.as_str()), Some("12345"));
    }

    #[test]
    fn a_profile_overrides_the_top_level_and_adds_excludes() {
        let s = parse_ok(FILE, Some("work"));
        assert_eq!(s.repository.as_deref(), Some("local:/etc/tstor/repos/work"));
        assert_eq!(s.password, Some(PasswordSource::Command("pass show tstor".into())));
        assert_eq!(s.paths, [PathBuf::from("/etc/tstor/src"), PathBuf::from("/abs")]);
        assert_eq!(s.excludes.patterns, ["*.tmp", "target/"]);
        assert_eq!(s.excludes.ipatterns, ["*.ISO"]);
        assert_eq!(s.excludes.if_present, [".nobackup"]);
        assert_eq!(s.excludes.larger_than, Some(10 << 20));
        assert!(s.excludes.caches, "kept from the top level");
        // The policy is taken whole from the profile.
        assert_eq!(s.policy.last, Keep::Count(3));
        assert_eq!(s.policy.daily, Keep::Count(0));
        assert_eq!(s.policy.within.days, 30);
        assert_eq!(s.policy.tags, vec![vec!["keep".to_string(), "important".to_string()]]);
        assert_eq!(s.telegram.get("api-hash").and_then(|v| v.as_str()), Some("abc"));
        assert_eq!(s.telegram.get("session").and_then(|v| v.as_str()), Some("/var/lib/tstor/tg.session"));
    }

    #[test]
    fn pace_and_budget_keys_are_read_and_checked() {
        let text = "limit-upload = \"5MiB\"\nmax-upload = \"2GiB\"\n\n[profiles.slow]\nlimit-upload = 1000\nmax-duration = \"1h30m\"\n";
        let s = parse_ok(text, None);
        assert_eq!((s.limit_upload, s.max_upload, s.max_duration), (Some(5 << 20), Some(2 << 30), None));
        let s = parse_ok(text, Some("slow"));
        assert_eq!(s.limit_upload, Some(1000));
        assert_eq!(s.max_upload, Some(2 << 30), "kept from the top level");
        assert_eq!(s.max_duration, Some(std::time::Duration::from_secs(5400)));
        let e = parse_err("\nmax-duration = \"soon\"\n", None);
        assert!(e.contains("line 2") && e.contains("soon"), "{e}");
        let e = parse_err("limit-upload = 0\n", None);
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_err("repository = \"x\"\nexlude = [\"a\"]\n", None);
        assert!(e.contains("/etc/tstor/config.toml, line 2"), "{e}");
        assert!(e.contains("exlude"), "{e}");
        let e = parse_err("exclude-larger-than = \"ten\"\n", None);
        assert!(e.contains("line 1") && e.contains("ten"), "{e}");
        let e = parse_err("\n\nkeep-daily = \"many\"\n", None);
        assert!(e.contains("line 3"), "{e}");
        let e = parse_err("repository = [\n", None);
        assert!(e.contains("line 1") || e.contains("line 2"), "{e}");
        let e = parse_err("[profiles.a.profiles.b]\nrepository = \"x\"\n", None);
        assert!(e.contains("profiles"), "{e}");
        let e = parse_err("password = \"x\"\npassword-file = \"y\"\n", None);
        assert!(e.contains("more than one"), "{e}");
    }

    #[test]
    fn a_mistyped_key_suggests_the_nearest_one() {
        let e = parse_err("exclud = [\"*.o\"]\n", None);
        assert!(e.contains("unknown key `exclud`; did you mean `exclude`?"), "{e}");
        let e = parse_err("[profiles.home]\nkeep-dialy = 7\n", None);
        assert!(e.contains("did you mean `keep-daily`?"), "{e}");
        let e = parse_err("zzzzzzzzzzzz = 1\n", None);
        assert!(e.contains("unknown key `zzzzzzzzzzzz`; the keys are ") && e.contains("repository"), "{e}");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn an_unknown_profile_lists_the_known_ones() {
        let e = parse_err(FILE, Some("home"));
        assert!(e.contains("no profile `home`") && e.contains("work"), "{e}");
    }

    #[test]
    fn a_missing_default_file_is_fine_and_a_missing_explicit_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("none.toml");
        assert!(matches!(load(Some(&missing), None), Err(ConfigError::Read { .. })));
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches clashes of the global -P/--config with any command's flags.
        super::super::command().debug_assert();
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
