//! Choosing snapshots by name: `latest` (narrowed by host, path and tag
//! filters, as restic's `--host/--path/--tag`), a full id or a unique
//! prefix, and the message for a prefix that matches several objects,
//! which lists the candidates so the user can pick one.

use crate::format::snapshot::Snapshot;
use crate::format::Id;

use super::RepoError;

/// Which snapshots `latest` may stand for. Empty lists do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// The snapshot's host is one of these.
    pub hosts: Vec<String>,
    /// The snapshot's paths include every one of these (absolute, raw bytes).
    pub paths: Vec<Vec<u8>>,
    /// The snapshot has every one of these tags.
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.paths.is_empty() && self.tags.is_empty()
    }

    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && self.paths.iter().all(|p| s.paths.contains(p))
            && self.tags.iter().all(|t| s.tags.contains(t))
    }

    /// The filter in words, for "no snapshot matches".
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.hosts.is_empty() {
            parts.push(format!("host {}", self.hosts.join(" or ")));
        }
        for p in &self.paths {
            parts.push(format!("path {}", String::from_utf8_lossy(p)));
        }
        for t in &self.tags {
            parts.push(format!("tag {t}"));
        }
        parts.join(", ")
    }
}

/// Resolves `spec` among `snaps` (sorted oldest first): `latest` is the
/// newest snapshot `filter` accepts; an id or a unique prefix names one
/// snapshot whatever the filter.
pub fn select_snapshot(
    snaps: Vec<(Id, Snapshot)>,
    spec: &str,
    filter: &SnapshotFilter,
) -> Result<(Id, Snapshot), RepoError> {
    if spec == "latest" {
        if snaps.is_empty() {
            return Err(RepoError::Invalid("the repository has no snapshots".into()));
        }
        return snaps.into_iter().rev().find(|(_, s)| filter.matches(s)).ok_or_else(|| {
            RepoError::Invalid(format!("no snapshot matches {}; `tstor snapshots` lists them", filter.describe()))
        });
    }
    let lc = spec.to_ascii_lowercase();
    if lc.is_empty() || !lc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RepoError::Invalid(format!("`{spec}` is neither `latest` nor a snapshot id")));
    }
    let mut matches: Vec<_> = snaps.into_iter().filter(|(id, _)| id.to_hex().starts_with(&lc)).collect();
    match matches.len() {
        0 => Err(RepoError::Invalid(format!("no snapshot matches `{spec}`; `tstor snapshots` lists them"))),
        1 => Ok(matches.remove(0)),
        _ => {
            let candidates: Vec<(Id, String)> = matches
                .iter()
                .map(|(id, s)| {
                    (*id, format!("{} on {}", crate::time::format_time(s.time_ns, &crate::time::local()), s.hostname))
                })
                .collect();
            Err(ambiguous(spec, "snapshots", &candidates))
        }
    }
}

/// Candidates listed at most in an "ambiguous id" message.
const MAX_CANDIDATES: usize = 10;

/// The error for a prefix `spec` that matches several objects (`what`, a
/// plural such as "snapshots" or "packs"): names each candidate by the
/// shortest prefix (at least 8 digits) that tells them apart, with its
/// description when there is one, on one line.
pub fn ambiguous(spec: &str, what: &str, candidates: &[(Id, String)]) -> RepoError {
    let hex: Vec<String> = candidates.iter().map(|(id, _)| id.to_hex()).collect();
    let mut len = 8;
    while len < 64 {
        let mut prefixes: Vec<&str> = hex.iter().map(|h| &h[..len]).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        if prefixes.len() == hex.len() {
            break;
        }
        len += 1;
    }
    let mut listed: Vec<String> = candidates
        .iter()
        .zip(&hex)
        .take(MAX_CANDIDATES)
        .map(|((_, about), h)| if about.is_empty() { h[..len].to_string() } else { format!("{} ({about})", &h[..len]) })
        .collect();
    if candidates.len() > MAX_CANDIDATES {
        listed.push(format!("and {} more", candidates.len() - MAX_CANDIDATES));
    }
    RepoError::Invalid(format!(
        "`{spec}` matches {} {what}: {}; give more of the id",
        candidates.len(),
        listed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_from_hex(h: &str) -> Id {
        let mut b = [0u8; 32];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
        }
        Id(b)
    }

    #[test]
    fn an_ambiguous_prefix_lists_candidates_by_prefixes_that_tell_them_apart() {
        let a = id_from_hex(&format!("abcdef0123{}", "0".repeat(54)));
        let b = id_from_hex(&format!("abcdef0124{}", "0".repeat(54)));
        let e = ambiguous("abc", "packs", &[(a, String::new()), (b, "note".into())]).to_string();
        assert_eq!(e, "`abc` matches 2 packs: abcdef0123, abcdef0124 (note); give more of the id");
    }

    #[test]
    fn latest_is_the_newest_snapshot_the_filter_accepts() {
        let snap = |host: &str, path: &[u8], tag: &str, t: i64| Snapshot {
            time_ns: t,
            tree: Id([0; 32]),
            paths: vec![path.to_vec()],
            hostname: host.into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            tags: vec![tag.into()],
            parent: None,
            program_version: String::new(),
            summary: Default::default(),
            original: None,
        };
        let snaps = vec![
            (Id([1; 32]), snap("h1", b"/a", "x", 1)),
            (Id([2; 32]), snap("h2", b"/a", "y", 2)),
            (Id([3; 32]), snap("h1", b"/b", "y", 3)),
        ];
        let pick = |f: SnapshotFilter| select_snapshot(snaps.clone(), "latest", &f).map(|(id, _)| id.0[0]);
        assert_eq!(pick(SnapshotFilter::default()).unwrap(), 3);
        assert_eq!(pick(SnapshotFilter { hosts: vec!["h1".into()], ..Default::default() }).unwrap(), 3);
        assert_eq!(pick(SnapshotFilter { paths: vec![b"/a".to_vec()], ..Default::default() }).unwrap(), 2);
        assert_eq!(
            pick(SnapshotFilter { hosts: vec!["h1".into()], tags: vec!["x".into()], ..Default::default() }).unwrap(),
            1
        );
        let none = pick(SnapshotFilter { hosts: vec!["h3".into()], ..Default::default() }).unwrap_err().to_string();
        assert!(none.contains("no snapshot matches host h3"), "{none}");
    }
}
