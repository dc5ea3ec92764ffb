//! The names of the mounted view's own directories, as pure functions: a
//! snapshot's directory name from its time, names made unique within a
//! directory, and host names and tags turned into safe file names.

use std::collections::HashMap;

use crate::format::tree::validate_name;

/// A snapshot's directory name: its time in UTC, `2026-12-03T20:53:45Z`.
pub fn time_name(ns: i64) -> String {
    let mut name = crate::time::format_time(ns, &crate::time::local()).replacen(' ', "T", 1);
    name.push('Z');
    name
}

/// Gives every name of `names` that was already used a `-1`, `-2`, …
/// suffix (restic's way with snapshots taken in the same second), in order.
pub fn unique_names(names: Vec<String>) -> Vec<String> {
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut candidate = name.clone();
        let mut n = used.get(&name).copied().unwrap_or(0);
        while used.contains_key(&candidate) {
            n += 1;
            candidate = format!("{name}-{n}");
        }
        used.insert(name.clone(), n);
        used.entry(candidate.clone()).or_insert(0);
        out.push(candidate);
    }
    out
}

/// A host name or tag as a directory name: `/` and NUL become `_`, and an
/// empty name, `.` or `..` gets a leading `_`.
pub fn safe_name(s: &str) -> String {
    let name: String = s.chars().map(|c| if c == '/' || c == '\0' { '_' } else { c }).collect();
    if validate_name(name.as_bytes()).is_ok() {
        name
    } else {
        format!("_{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_directories_are_named_by_utc_time() {
        assert_eq!(time_name(1_795_000_000 * 1_000_000_000 + 5), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn names_met_again_get_a_counter() {
        let names = ["a", "b", "a", "a", "a-1"].map(String::from).to_vec();
        assert_eq!(unique_names(names), ["a", "b", "a-1", "a-2", "a-1-1"]);
    }

    #[test]
    fn hosts_and_tags_become_safe_names() {
        assert_eq!(safe_name("laptop"), "laptop");
        assert_eq!(safe_name("a/b"), "a_b");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name("."), "_.");
    }
}
