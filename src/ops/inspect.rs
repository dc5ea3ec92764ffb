//! Looking inside snapshots without restoring them: `ls` (the entries of a
//! snapshot or of a path inside one) and `find` (entries matching name or
//! path globs and mtime bounds, across snapshots). Also the helpers the other
//! read-only commands share: choosing snapshots, resolving a path inside a
//! snapshot, walking trees in name order, and parsing times.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::format::Id;
use crate::repo::index::MasterIndex;
use crate::repo::lock;
use crate::repo::{RepoError, Repository};

/// Snapshots chosen by the user, and the ones that could not be read.
pub struct Selection {
    /// Oldest first, without duplicates.
    pub snapshots: Vec<(Id, Snapshot)>,
    /// Snapshots that could not be read (only when all were asked for).
    pub unreadable: Vec<(Id, RepoError)>,
}

/// Chooses snapshots: all of them when `specs` is empty, otherwise each
/// `latest`, full id or unique id prefix in `specs`.
pub async fn select_snapshots(repo: &Repository, specs: &[String]) -> Result<Selection, RepoError> {
    let (all, unreadable) = repo.snapshots().await?;
    if specs.is_empty() {
        return Ok(Selection { snapshots: all, unreadable });
    }
    let mut chosen: Vec<usize> = Vec::new();
    for spec in specs {
        let i = if spec == "latest" {
            all.len().checked_sub(1).ok_or_else(|| RepoError::Invalid("the repository has no snapshots".into()))?
        } else {
            let lc = spec.to_ascii_lowercase();
            if lc.is_empty() || !lc.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RepoError::Invalid(format!("`{spec}` is neither `latest` nor a snapshot id")));
            }
            let hits: Vec<usize> = (0..all.len()).filter(|&i| all[i].0.to_hex().starts_with(&lc)).collect();
            match hits.len() {
                0 => return Err(RepoError::Invalid(format!("no snapshot matches `{spec}`"))),
                1 => hits[0],
                _ => {
                    let candidates: Vec<(Id, String)> = hits
                        .iter()
                        .map(|&i| {
                            (
                                all[i].0,
                                format!(
                                    "{} on {}",
                                    crate::time::format_time(all[i].1.time_ns, &crate::time::local()),
                                    all[i].1.hostname
                                ),
                            )
                        })
                        .collect();
                    return Err(crate::repo::select::ambiguous(spec, "snapshots", &candidates));
                }
            }
        };
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen.sort_unstable();
    let snapshots = chosen.into_iter().map(|i| all[i].clone()).collect();
    Ok(Selection { snapshots, unreadable: Vec::new() })
}

/// What a path inside a snapshot names.
pub enum Target {
    /// A directory (or the snapshot's root): its tree.
    Dir(Id),
    /// Anything else: the entry itself.
    Entry(Node),
}

/// Follows `subpath` (components as split by `restorer::split_subpath`)
/// from the tree `root`.
pub async fn resolve_path(
    repo: &Repository,
    index: &MasterIndex,
    root: &Id,
    subpath: &[Vec<u8>],
) -> Result<Target, RepoError> {
    let mut tree_id = *root;
    for (i, comp) in subpath.iter().enumerate() {
        let shown = || String::from_utf8_lossy(&subpath[..=i].join(&b'/')).into_owned();
        let tree = repo.load_tree(index, &tree_id).await?;
        let node =
            tree.find(comp).ok_or_else(|| RepoError::Invalid(format!("`{}` is not in the snapshot", shown())))?;
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => tree_id = sub,
            _ if i + 1 == subpath.len() => return Ok(Target::Entry(node.clone())),
            _ => return Err(RepoError::Invalid(format!("`{}` is not a directory", shown()))),
        }
    }
    Ok(Target::Dir(tree_id))
}

/// `parent/name` (or `name` when `parent` is empty), as raw bytes.
pub fn join_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Appends `/name` (or `name` when `path` is empty) to `path`.
pub fn push_name(path: &mut Vec<u8>, name: &[u8]) {
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
}

/// How many names `path` (names joined by `/`) holds.
fn depth_of(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        path.iter().filter(|&&b| b == b'/').count() + 1
    }
}

/// The error for an entry at `path` beyond the limits of §22.
pub fn limit_error(path: &[u8], e: crate::format::LimitError) -> RepoError {
    let shown = String::from_utf8_lossy(&path[..path.len().min(200)]).into_owned();
    RepoError::Invalid(format!("{shown}: {e}"))
}

/// Walks the tree `root` depth first, each directory's entries in name order
/// and each directory before its contents, calling `f` with the entry's path
/// (`prefix` joined with the names below it) and node. Without `recursive`
/// only the entries of `root` itself are visited. The walk keeps one path
/// and, per directory on it, only the entries still to visit: its memory
/// follows the depth and the widest directory, never their product.
pub async fn walk<E, F>(
    repo: &Repository,
    index: &MasterIndex,
    root: &Id,
    prefix: &[u8],
    recursive: bool,
    mut f: F,
) -> Result<(), E>
where
    E: From<RepoError>,
    F: FnMut(&[u8], &Node) -> Result<(), E>,
{
    let mut first = repo.load_tree(index, root).await?;
    first.sort();
    let base_depth = depth_of(prefix);
    let mut path = prefix.to_vec();
    let mut stack: Vec<(usize, std::vec::IntoIter<Node>)> = vec![(path.len(), first.nodes.into_iter())];
    while let Some((dir_len, entries)) = stack.last_mut() {
        let Some(node) = entries.next() else {
            stack.pop();
            continue;
        };
        path.truncate(*dir_len);
        push_name(&mut path, &node.name);
        if let Err(e) = crate::format::check_entry_limits(base_depth + stack.len(), path.len()) {
            return Err(limit_error(&path, e).into());
        }
        f(&path, &node)?;
        if recursive && node.kind == NodeKind::Dir {
            if let Some(sub) = node.subtree {
                let mut tree = repo.load_tree(index, &sub).await?;
                tree.sort();
                stack.push((path.len(), tree.nodes.into_iter()));
            }
        }
    }
    Ok(())
}

pub struct LsOptions {
    /// Path inside the snapshot whose contents are listed (empty: the root).
    pub subpath: Vec<Vec<u8>>,
    pub recursive: bool,
}

/// Lists the snapshot `spec` (`latest`, an id or a prefix) under a shared
/// lock: every entry below `opts.subpath` (or the entry itself if it is not
/// a directory) is passed to `f` with its path from the snapshot's root.
/// Returns the snapshot.
pub async fn ls<E, F>(repo: &Repository, spec: &str, opts: &LsOptions, mut f: F) -> Result<(Id, Snapshot), E>
where
    E: From<RepoError>,
    F: FnMut(&[u8], &Node) -> Result<(), E>,
{
    let guard = lock::acquire(repo, false).await?;
    let result: Result<_, E> = async {
        let (id, snap) = repo.find_snapshot(spec).await?;
        let index = repo.load_index().await?;
        let prefix = opts.subpath.join(&b'/');
        match resolve_path(repo, &index, &snap.tree, &opts.subpath).await? {
            Target::Dir(tree) => walk(repo, &index, &tree, &prefix, opts.recursive, &mut f).await?,
            Target::Entry(node) => f(&prefix, &node)?,
        }
        Ok((id, snap))
    }
    .await;
    guard.release().await;
    result
}

/// What `find` looks for.
#[derive(Default)]
pub struct FindOptions {
    /// Globs; an entry matches if any matches.
    pub patterns: Vec<String>,
    /// Match the globs against the path from the snapshot's root (where `*`
    /// stays within one directory and `**` crosses them) instead of the name.
    pub match_path: bool,
    /// Only entries modified after this time (ns since the epoch).
    pub newer_ns: Option<i64>,
    /// Only entries modified before this time.
    pub older_ns: Option<i64>,
    /// Snapshots to search (`latest`, ids, prefixes); empty: all.
    pub snapshots: Vec<String>,
}

/// A compiled `find` query.
pub struct Matcher {
    globs: GlobSet,
    match_path: bool,
    newer_ns: Option<i64>,
    older_ns: Option<i64>,
}

impl Matcher {
    pub fn new(opts: &FindOptions) -> Result<Matcher, RepoError> {
        if opts.patterns.is_empty() {
            return Err(RepoError::Invalid("give at least one pattern".into()));
        }
        let mut b = GlobSetBuilder::new();
        for p in &opts.patterns {
            let pattern = if opts.match_path { p.trim_start_matches('/') } else { p.as_str() };
            let glob = GlobBuilder::new(pattern)
                .literal_separator(opts.match_path)
                .build()
                .map_err(|e| RepoError::Invalid(format!("bad pattern `{p}`: {e}")))?;
            b.add(glob);
        }
        let globs = b.build().map_err(|e| RepoError::Invalid(e.to_string()))?;
        Ok(Matcher { globs, match_path: opts.match_path, newer_ns: opts.newer_ns, older_ns: opts.older_ns })
    }

    /// Whether the entry at `path` (from the snapshot's root, no leading `/`) matches.
    pub fn matches(&self, path: &[u8], node: &Node) -> bool {
        if self.newer_ns.is_some_and(|t| node.mtime_ns <= t) || self.older_ns.is_some_and(|t| node.mtime_ns >= t) {
            return false;
        }
        let subject = if self.match_path { path } else { &node.name[..] };
        self.globs.is_match(Path::new(OsStr::from_bytes(subject)))
    }
}

/// Searches the chosen snapshots under a shared lock, passing each match to
/// `f` with its snapshot and path. Returns the snapshots that could not be
/// read. A subtree found to hold no match is not read again in later
/// snapshots (in `--path` mode only where it sits at the same path).
pub async fn find<E, F>(repo: &Repository, opts: &FindOptions, mut f: F) -> Result<Vec<(Id, RepoError)>, E>
where
    E: From<RepoError>,
    F: FnMut(&Id, &Snapshot, &[u8], &Node) -> Result<(), E>,
{
    let matcher = Matcher::new(opts)?;
    let guard = lock::acquire(repo, false).await?;
    let result: Result<_, E> = async {
        let selection = select_snapshots(repo, &opts.snapshots).await?;
        let index = repo.load_index().await?;
        // Subtrees without matches, keyed by tree id (and path, when the path is matched).
        let mut barren: HashSet<(Id, Vec<u8>)> = HashSet::new();
        let key = |tree: Id, path: &[u8]| (tree, if matcher.match_path { path.to_vec() } else { Vec::new() });
        for (id, snap) in &selection.snapshots {
            if barren.contains(&key(snap.tree, b"")) {
                continue;
            }
            // One path; per directory on it: (tree, its path's length, its
            // entries left, whether anything below matched).
            let root = repo.load_tree(&index, &snap.tree).await?;
            let mut path: Vec<u8> = Vec::new();
            let mut stack = vec![(snap.tree, 0, root.nodes.into_iter(), false)];
            while let Some((_, dir_len, entries, _)) = stack.last_mut() {
                let dir_len = *dir_len;
                let Some(node) = entries.next() else {
                    let (tree, dir_len, _, matched) = stack.pop().expect("non-empty");
                    path.truncate(dir_len);
                    match stack.last_mut() {
                        Some(parent) if matched => parent.3 = true,
                        _ if !matched => {
                            barren.insert(key(tree, &path));
                        }
                        _ => {}
                    }
                    continue;
                };
                path.truncate(dir_len);
                push_name(&mut path, &node.name);
                if let Err(e) = crate::format::check_entry_limits(stack.len(), path.len()) {
                    return Err(limit_error(&path, e).into());
                }
                if matcher.matches(&path, &node) {
                    f(id, snap, &path, &node)?;
                    stack.last_mut().expect("non-empty").3 = true;
                }
                if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                    if !barren.contains(&key(sub, &path)) {
                        let tree = repo.load_tree(&index, &sub).await?;
                        stack.push((sub, path.len(), tree.nodes.into_iter(), false));
                    }
                }
            }
        }
        Ok(selection.unreadable)
    }
    .await;
    guard.release().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_names_paths_and_times() {
        let mut node = Node::new(b"main.rs".to_vec(), NodeKind::File);
        node.mtime_ns = 100;
        let by_name = Matcher::new(&FindOptions { patterns: vec!["*.rs".into()], ..Default::default() }).unwrap();
        assert!(by_name.matches(b"work/src/main.rs", &node));
        let by_path = Matcher::new(&FindOptions {
            patterns: vec!["/work/*.rs".into()],
            match_path: true,
            newer_ns: Some(50),
            older_ns: Some(150),
            ..Default::default()
        })
        .unwrap();
        assert!(!by_path.matches(b"work/src/main.rs", &node));
        assert!(by_path.matches(b"work/main.rs", &node));
        node.mtime_ns = 150;
        assert!(!by_path.matches(b"work/main.rs", &node));
        assert!(Matcher::new(&FindOptions::default()).is_err());
        assert!(Matcher::new(&FindOptions { patterns: vec!["[".into()], ..Default::default() }).is_err());
    }
}
