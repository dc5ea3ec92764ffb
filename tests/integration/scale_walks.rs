//! Walks whose cost must follow what is stored, not the shape of a snapshot:
//! deep chains of directories (as deep and as long as §22 allows, and
//! deeper) and snapshots of very many entries made of a few shared trees.
//! The repositories are crafted through the library (trees written with the
//! repository API) and read with the `tstor` binary, whose peak resident
//! memory is sampled. Also: a real directory tree deeper than `PATH_MAX`
//! allows to name is backed up and restored whole.
//!
//! `TSTOR_SCALE_WALKS_BIG=1` runs larger variants (a 10⁹-entry snapshot, a
//! 100 000-level chain) that take minutes.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use tstor::backend::local::LocalBackend;
use tstor::backend::Backend;
use tstor::format::tree::{Node, NodeKind};
use tstor::format::{BlobType, Id};
use tstor::repo::Repository;

use crate::common::*;
use crate::crafted::{dir, file, Crafter};

/// The peak resident memory every measured command stays under.
const BOUND_KIB: i64 = 64 << 10;

fn big() -> bool {
    std::env::var_os("TSTOR_SCALE_WALKS_BIG").is_some_and(|v| v == "1")
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// Snapshots of a chain of `levels` directories named `name`, the deepest
/// holding a file `f`; one snapshot per entry of `payloads` (the file's
/// content), so the chains differ only at the bottom.
fn chain(env: &Env, levels: usize, name: &[u8], payloads: &[&[u8]]) {
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        for (i, payload) in payloads.iter().enumerate() {
            let data = c.blob(BlobType::Data, payload).await;
            let mut nodes = vec![file(b"f", vec![data], payload.len() as u64)];
            for _ in 0..levels {
                let sub = c.tree(nodes).await;
                nodes = vec![dir(name, sub)];
            }
            let root = c.tree(nodes).await;
            c.snapshot(root, i as i64 + 1).await;
        }
    });
}

/// A snapshot of `width^levels` files (and the directories above them)
/// described by `levels + 1` trees: each directory holds `width` copies of
/// the one below. Returns the number of entries.
fn shared(env: &Env, width: usize, levels: u32) -> u64 {
    block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let data = c.blob(BlobType::Data, b"shared payload").await;
        let files: Vec<Node> = (0..width).map(|i| file(format!("f{i:03}").as_bytes(), vec![data], 14)).collect();
        let mut tree = c.tree(files).await;
        for _ in 0..levels {
            let dirs: Vec<Node> = (0..width).map(|i| dir(format!("d{i:03}").as_bytes(), tree)).collect();
            tree = c.tree(dirs).await;
        }
        c.snapshot(tree, 1).await;
    });
    (1..=u64::from(levels) + 1).map(|l| (width as u64).pow(l as u32)).sum()
}

// ---- measuring a child ----

/// Runs `tstor args`, sampling its VmHWM until it exits (see
/// hardening.rs for why not `wait4`). Standard output is kept only when
/// `keep_stdout`; otherwise it goes to /dev/null.
fn run_measured(env: &Env, args: &[&str], keep_stdout: bool) -> Measured {
    run_measured_with(env, args, keep_stdout, None)
}

/// The same, with the child's limit on open files lowered to `max_files`.
fn run_measured_with(env: &Env, args: &[&str], keep_stdout: bool, max_files: Option<u64>) -> Measured {
    use std::os::unix::process::CommandExt;
    let mut cmd = env.std_cmd();
    cmd.args(args);
    if let Some(max) = max_files {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: max, rlim_max: max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    run_measured_cmd(env, cmd, keep_stdout)
}

/// The start of a long message.
fn cut(s: &str) -> String {
    s.chars().take(2000).collect()
}

/// Runs and asserts the exit code and the memory bound; returns the run.
fn measured(env: &Env, args: &[&str], keep_stdout: bool, code: i32) -> Measured {
    let done = run_measured(env, args, keep_stdout);
    eprintln!("tstor {}: exit {:?}, peak RSS {} KiB", args.join(" "), done.code, done.peak_rss_kib);
    assert_eq!(done.code, Some(code), "tstor {}: {}", args.join(" "), cut(&done.stderr));
    assert!(
        done.peak_rss_kib < BOUND_KIB,
        "tstor {} peaked at {} KiB, over {BOUND_KIB} KiB",
        args.join(" "),
        done.peak_rss_kib
    );
    done
}

// ---- deep chains ----

/// 4095 levels of 15-byte names and a file: the deepest path is 65 521
/// bytes, just within §22. A walk that keeps each level's path on its stack
/// holds 4095 · 32 KiB on average.
#[test]
fn walks_of_a_chain_at_the_depth_and_path_limits_hold_one_path_at_a_time() {
    let env = Env::new();
    let levels = tstor::format::MAX_TREE_DEPTH - 1;
    chain(&env, levels, &[b'd'; 15], &[b"first payload", b"second payload"]);
    let deepest = format!("{}f", format!("{}/", "d".repeat(15)).repeat(levels));
    assert!(deepest.len() <= tstor::format::MAX_PATH_LEN);
    measured(&env, &["check"], false, 0);
    measured(&env, &["check", "--verify"], false, 0);
    let found = measured(&env, &["find", "--snapshot", "latest", "f"], true, 0);
    assert!(found.stdout.contains(&deepest), "the deepest file is found");
    measured(&env, &["stats"], false, 0);
    let snaps = env.snapshots_json();
    let ids: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let diff = measured(&env, &["diff", ids[0], ids[1]], true, 0);
    assert!(
        diff.stdout.contains(&format!("M  /{deepest}")) || diff.stdout.contains(&deepest),
        "{}",
        &diff.stdout[..diff.stdout.len().min(300)]
    );
}

/// 20 000 levels: every reader stops at the depth limit, naming the path,
/// and what it holds until then stays small.
#[test]
fn readers_of_a_20000_level_chain_stop_at_the_depth_limit_in_bounded_memory() {
    let env = Env::new();
    let levels = if big() { 100_000 } else { 20_000 };
    chain(&env, levels, b"d", &[b"payload"]);
    let message = "more than 4096 directory levels deep";
    let done = measured(&env, &["check"], false, 1);
    assert!(done.stderr.contains(message), "{}", done.stderr);
    let done = measured(&env, &["ls", "latest"], false, 1);
    assert!(done.stderr.contains(message), "{}", done.stderr);
    let done = measured(&env, &["stats"], false, 1);
    assert!(done.stderr.contains(message), "{}", done.stderr);
    let done = measured(&env, &["find", "f"], false, 1);
    assert!(done.stderr.contains(message), "{}", done.stderr);
}

// ---- many entries from few trees ----

/// About 10⁶ entries from three trees (10⁹ from five with the env knob):
/// check and stats visit each tree once; find skips a subtree it already
/// found barren; ls prints every entry, one at a time.
#[test]
fn a_million_entries_from_shared_trees_are_walked_in_bounded_memory() {
    let env = Env::new();
    let (width, levels) = if big() { (63, 4) } else { (100, 2) };
    let entries = shared(&env, width, levels);
    measured(&env, &["check"], false, 0);
    measured(&env, &["check", "--verify"], false, 0);
    let stats = measured(&env, &["stats", "--json"], true, 0);
    let v: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    let files = (width as u64).pow(levels + 1);
    assert_eq!(v["files"].as_u64(), Some(files), "{}", stats.stdout);
    assert_eq!(v["dirs"].as_u64(), Some(entries - files), "{}", stats.stdout);
    assert_eq!(v["tree_blobs"].as_u64(), Some(u64::from(levels) + 1), "{}", stats.stdout);
    if !big() {
        // Matched against whole paths, every subtree is at a path of its
        // own: find reads all 10⁶ entries.
        let found = measured(&env, &["find", "--path", "d007/d042/f099"], true, 0);
        assert_eq!(found.stdout.lines().filter(|l| l.contains("d007/d042/f099")).count(), 1, "{}", found.stdout);
        let listed = measured(&env, &["ls", "latest"], true, 0);
        assert_eq!(listed.stdout.lines().filter(|l| !l.is_empty()).count() as u64, entries);
    }
}

// ---- a real tree deeper than PATH_MAX ----

fn cstr(name: &[u8]) -> CString {
    CString::new(name).unwrap()
}

fn open_dir_at(dir: &OwnedFd, name: &[u8]) -> OwnedFd {
    let name = cstr(name);
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let fd =
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "openat: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor just opened and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn open_path(path: &Path) -> OwnedFd {
    fs::File::open(path).unwrap().into()
}

/// Makes `levels` nested directories named `d` under `root` (relative to
/// directory handles, so no path is ever longer than a name), the deepest
/// holding `f` with `content`; a file beside each 500th directory.
fn make_deep_tree(root: &Path, levels: usize, content: &[u8]) {
    fs::create_dir_all(root).unwrap();
    let mut dir = open_path(root);
    for level in 0..levels {
        if level % 500 == 0 {
            write_at(&dir, format!("side{level}").as_bytes(), format!("level {level}").as_bytes());
        }
        let name = cstr(b"d");
        // SAFETY: as in `open_dir_at`.
        let r = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
        assert_eq!(r, 0, "mkdirat: {}", std::io::Error::last_os_error());
        dir = open_dir_at(&dir, b"d");
    }
    write_at(&dir, b"f", content);
}

fn write_at(dir: &OwnedFd, name: &[u8], content: &[u8]) {
    use std::io::Write;
    let name = cstr(name);
    // SAFETY: as in `open_dir_at`.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert!(fd >= 0, "openat: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    f.write_all(content).unwrap();
}

/// One entry of a tree: (path, kind as `S_IFMT` bits, permission bits,
/// size of a file, mtime, content of a file).
type Described = (Vec<u8>, u32, u32, u64, i64, Vec<u8>);

/// Every entry under `root`, read relative to directory handles, in path
/// order.
fn describe_deep(root: &Path) -> Vec<Described> {
    let mut out = Vec::new();
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(open_path(root), Vec::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut names: Vec<Vec<u8>> = fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        for name in names {
            let c = cstr(&name);
            // SAFETY: a zeroed stat is a valid out-parameter.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid descriptor, name and out-parameter.
            let r = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
            assert_eq!(r, 0);
            let path = if prefix.is_empty() { name.clone() } else { [&prefix[..], b"/", &name[..]].concat() };
            let kind = st.st_mode & libc::S_IFMT;
            let mut content = Vec::new();
            if kind == libc::S_IFREG {
                // SAFETY: as above.
                let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                assert!(fd >= 0);
                use std::io::Read;
                // SAFETY: a descriptor just opened.
                unsafe { fs::File::from_raw_fd(fd) }.read_to_end(&mut content).unwrap();
            }
            let mtime = st.st_mtime * 1_000_000_000 + st.st_mtime_nsec;
            out.push((path.clone(), kind, st.st_mode & 0o7777, content.len() as u64, mtime, content));
            if kind == libc::S_IFDIR {
                stack.push((open_dir_at(&dir, &name), path));
            }
        }
    }
    out.sort();
    out
}

/// The same description of what the latest snapshot stores under its
/// top-level entry `top`, read through the library.
fn describe_stored(env: &Env, top: &[u8]) -> Vec<Described> {
    block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
        let repo = Repository::open(backend, PASSWORD.as_bytes(), None).await.unwrap();
        let index = repo.load_index().await.unwrap();
        let (_, snap) = repo.find_snapshot("latest").await.unwrap();
        let root = repo.load_tree(&index, &snap.tree).await.unwrap();
        let top = root.find(top).unwrap().subtree.unwrap();
        let mut out = Vec::new();
        let mut stack: Vec<(Id, Vec<u8>)> = vec![(top, Vec::new())];
        while let Some((tree, prefix)) = stack.pop() {
            for node in repo.load_tree(&index, &tree).await.unwrap().nodes {
                let path =
                    if prefix.is_empty() { node.name.clone() } else { [&prefix[..], b"/", &node.name[..]].concat() };
                let mut content = Vec::new();
                for blob in &node.content {
                    content.extend(repo.read_blob(&index, blob).await.unwrap());
                }
                let kind = match node.kind {
                    NodeKind::Dir => libc::S_IFDIR,
                    NodeKind::File => libc::S_IFREG,
                    other => panic!("unexpected {other:?}"),
                };
                out.push((path.clone(), kind, node.mode, node.size, node.mtime_ns, content));
                if let Some(sub) = node.subtree {
                    stack.push((sub, path));
                }
            }
        }
        out.sort();
        out
    })
}

/// 3000 levels of `d/` with a few files: 6000 bytes below the source,
/// more than `PATH_MAX` (4096) lets any absolute path name, but well within
/// §22, and more levels than a process may usually hold files open. Returns the environment, the source and its description.
fn deep_source(levels: usize) -> (Env, std::path::PathBuf, Vec<Described>) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_deep_tree(&src, levels, b"at the bottom");
    let expected = describe_deep(&src);
    assert_eq!(expected.len(), levels + 1 + levels.div_ceil(500));
    (env, src, expected)
}

#[test]
fn a_tree_deeper_than_path_max_allows_is_stored_whole() {
    let levels = 3000;
    let (env, src, expected) = deep_source(levels);
    // Fewer open files than levels, as on many systems (1024 by default).
    let done = run_measured_with(&env, &["snapshot", src.to_str().unwrap()], false, Some(512));
    assert_eq!(done.code, Some(0), "{}", cut(&done.stderr));
    // The repository's key takes 64 MiB to open (Argon2id), and the
    // pipeline buffers packs: a wider bound than the readers'.
    eprintln!("tstor snapshot: peak RSS {} KiB", done.peak_rss_kib);
    assert!(done.peak_rss_kib < 4 * BOUND_KIB, "snapshot peaked at {} KiB", done.peak_rss_kib);
    assert_eq!(describe_stored(&env, b"src"), expected, "stored byte for byte, with its metadata");
    let out = env.cmd().arg("check").output().unwrap();
    assert!(out.status.success(), "{}", cut(&String::from_utf8_lossy(&out.stderr)));
    let deepest = format!("src/{}f", "d/".repeat(levels));
    let out = env.cmd().args(["find", "--path", &deepest]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&deepest), "{}", cut(&String::from_utf8_lossy(&out.stderr)));
}

#[test]
fn a_tree_deeper_than_path_max_allows_is_restored_byte_identical() {
    let levels = 3000;
    let (env, src, expected) = deep_source(levels);
    let out = env.cmd().args(["snapshot"]).arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", cut(&String::from_utf8_lossy(&out.stderr)));
    let target = env.path("out");
    // Fewer open files than levels, as for the snapshot.
    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let done = run_measured_with(&env, &args, false, Some(512));
    assert_eq!(done.code, Some(0), "{}", cut(&done.stderr));
    eprintln!("tstor restore: peak RSS {} KiB", done.peak_rss_kib);
    assert!(done.peak_rss_kib < 4 * BOUND_KIB, "restore peaked at {} KiB", done.peak_rss_kib);
    assert_eq!(describe_deep(&target.join("src")), expected, "restored byte for byte, with its metadata");
    // Again over what is there: every entry is found in place, and kept.
    let out = env
        .cmd()
        .args(["restore", "latest", "--overwrite", "if-changed", "--delete", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", cut(&String::from_utf8_lossy(&out.stderr)));
    assert_eq!(describe_deep(&target.join("src")), expected, "restored again in place");
}
