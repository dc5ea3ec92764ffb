//! Snapshot → restore round trips through the CLI: every kind of file system
//! entry and metadata comes back identical; listings and summaries say what
//! happened; unchanged files are not read again.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

/// Builds a tree with every kind of entry the restore must reproduce.
pub fn make_full_tree(root: &Path) {
    let w = root.join("work");
    fs::create_dir_all(w.join("src/deep/deeper")).unwrap();
    fs::create_dir_all(w.join("empty")).unwrap();
    fs::create_dir_all(w.join("readonly")).unwrap();
    fs::create_dir_all(w.join("sticky")).unwrap();
    fs::write(w.join("src/main.rs"), "fn main() { println!(\"hello\"); }\n".repeat(200)).unwrap();
    fs::write(w.join("src/deep/deeper/data.csv"), (0..20000).map(|i| format!("{i},{}\n", i * 7)).collect::<String>())
        .unwrap();
    fs::write(w.join("big.bin"), random_bytes(9 << 20, 1)).unwrap();
    fs::write(w.join("empty-file"), b"").unwrap();
    fs::write(w.join("readonly/file"), b"read only").unwrap();
    // A name that is not UTF-8.
    fs::write(w.join(OsStr::from_bytes(b"caf\xe9-latin1.txt")), b"bytes").unwrap();
    // Hard links.
    fs::write(w.join("linked-a"), b"shared content\n").unwrap();
    fs::hard_link(w.join("linked-a"), w.join("src/linked-b")).unwrap();
    // Symlinks: relative, absolute, dangling.
    std::os::unix::fs::symlink("../big.bin", w.join("src/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", w.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", w.join("dangling")).unwrap();
    // A sparse file: 32 MiB with a few bytes in the middle.
    let sparse = fs::File::create(w.join("sparse.img")).unwrap();
    sparse.set_len(32 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"island", 17 << 20).unwrap();
    drop(sparse);
    // A FIFO.
    let fifo = std::ffi::CString::new(w.join("pipe").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    // An extended attribute, where the file system has them.
    let _ = xattr_set(&w.join("src/main.rs"), b"user.origin", b"tests");
    // Modes, including setuid/setgid and sticky.
    fs::set_permissions(w.join("src/main.rs"), fs::Permissions::from_mode(0o6755)).unwrap();
    fs::set_permissions(w.join("readonly/file"), fs::Permissions::from_mode(0o400)).unwrap();
    fs::set_permissions(w.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    if is_root() {
        let p = std::ffi::CString::new(w.join("src/deep/deeper/data.csv").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::lchown(p.as_ptr(), 1234, 5678) }, 0);
        let p = std::ffi::CString::new(w.join("abs-link").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::lchown(p.as_ptr(), 4321, 8765) }, 0);
    }
    // Times with nanoseconds on files, symlinks and directories (directories last).
    let mut n = 0i64;
    let mut paths = Vec::new();
    walk(&w, &mut |p, _| paths.push(p.to_path_buf()));
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in paths.iter().chain(std::iter::once(&w)) {
        n += 1;
        set_mtime(p, 1_600_000_000_123_456_789 + n * 1_000_000_007);
    }
    fs::set_permissions(w.join("readonly"), fs::Permissions::from_mode(0o555)).unwrap();
}

fn xattr_set(path: &Path, name: &[u8], value: &[u8]) -> std::io::Result<()> {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn every_kind_of_entry_round_trips() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_full_tree(&src);
    let summary = env.snapshot_json(&[src.join("work").as_os_str()]);
    assert_eq!(summary["errors"].as_array().unwrap().len(), 0);
    assert!(summary["files_new"].as_u64().unwrap() >= 9);

    let out = env.path("out");
    env.cmd().args(["restore", "latest", "--target"]).arg(&out).assert().success();
    // The path rule: a snapshot of .../work restores as OUT/work.
    assert!(out.join("work/big.bin").is_file());
    assert_same_tree(&src, &out);
    // Sparse files stay sparse.
    let m = fs::metadata(out.join("work/sparse.img")).unwrap();
    assert_eq!(m.len(), 32 << 20);
    assert!(m.blocks() * 512 < 1 << 20, "sparse file restored with {} blocks", m.blocks());
}

#[test]
fn several_paths_become_top_level_entries_and_subpaths_restore() {
    let env = Env::new();
    env.init();
    fs::create_dir_all(env.path("a/docs")).unwrap();
    fs::create_dir_all(env.path("b")).unwrap();
    fs::write(env.path("a/docs/note.txt"), b"note").unwrap();
    fs::write(env.path("b/other.txt"), b"other").unwrap();
    fs::write(env.path("single.txt"), b"single").unwrap();
    env.snapshot_json(&[env.path("a").as_os_str(), env.path("b").as_os_str(), env.path("single.txt").as_os_str()]);
    let out = env.path("out");
    env.cmd().args(["restore", "latest", "--target"]).arg(&out).assert().success();
    assert_eq!(fs::read(out.join("a/docs/note.txt")).unwrap(), b"note");
    assert_eq!(fs::read(out.join("b/other.txt")).unwrap(), b"other");
    assert_eq!(fs::read(out.join("single.txt")).unwrap(), b"single");

    let sub = env.path("sub");
    env.cmd().args(["restore", "latest:a/docs", "--target"]).arg(&sub).assert().success();
    assert_eq!(fs::read(sub.join("note.txt")).unwrap(), b"note");
    assert!(!sub.join("a").exists());

    let inc = env.path("inc");
    env.cmd().args(["restore", "latest", "--include", "b/*", "--target"]).arg(&inc).assert().success();
    assert!(inc.join("b/other.txt").is_file());
    assert!(!inc.join("a").exists());
    assert!(!inc.join("single.txt").exists());

    env.cmd().args(["restore", "latest:nope", "--target"]).arg(env.path("x")).assert().failure();
}

#[test]
fn unchanged_files_are_not_read_again_and_changes_are_counted() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("f{i}")), random_bytes(50_000 + i * 1000, i as u64)).unwrap();
    }
    let first = env.snapshot_json(&[src.as_os_str()]);
    assert_eq!(first["files_new"], 20);
    assert_eq!(first["parent"], serde_json::Value::Null);

    let second = env.snapshot_json(&[src.as_os_str()]);
    assert_eq!(second["files_unchanged"], 20);
    assert_eq!(second["bytes_read"], 0);
    assert_eq!(second["data_blobs_added"], 0);
    assert_eq!(second["tree_blobs_added"], 0, "an unchanged tree dedups");
    assert_eq!(second["parent"], first["snapshot_id"]);

    fs::write(src.join("f3"), b"changed").unwrap();
    fs::write(src.join("new"), b"new file").unwrap();
    let third = env.snapshot_json(&[src.as_os_str()]);
    assert_eq!(third["files_changed"], 1);
    assert_eq!(third["files_new"], 1);
    assert_eq!(third["files_unchanged"], 19);
    assert_eq!(third["bytes_read"], 15);

    let forced = env.snapshot_json(&[OsStr::new("--force"), src.as_os_str()]);
    assert_eq!(forced["files_unchanged"], 0);
    assert_eq!(forced["data_blobs_added"], 0, "content already stored is deduplicated");
}

#[test]
fn listings_carry_ids_times_hosts_paths_and_tags() {
    let env = Env::new();
    env.init();
    let src = env.path("proj");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), b"x").unwrap();
    env.snapshot_json(&[
        OsStr::new("--tag"),
        OsStr::new("daily"),
        OsStr::new("--host"),
        OsStr::new("box1"),
        src.as_os_str(),
    ]);
    env.snapshot_json(&[src.as_os_str()]);
    let list = env.snapshots_json();
    assert_eq!(list.len(), 2);
    for s in &list {
        for key in ["id", "time", "hostname", "paths", "tags"] {
            assert!(s.get(key).is_some(), "missing {key} in {s}");
        }
        assert_eq!(s["paths"][0], src.to_str().unwrap());
    }
    assert_eq!(list[0]["hostname"], "box1");
    assert_eq!(list[0]["tags"][0], "daily");
    let out = env.cmd().args(["snapshots", "--tag", "daily"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("box1") && text.contains("1 snapshot\n"), "{text}");
    // A prefix of the id names a snapshot.
    let prefix = &list[1]["id"].as_str().unwrap()[..6];
    env.cmd().args(["restore", prefix, "--target"]).arg(env.path("o")).assert().success();
}

#[test]
fn excluded_paths_are_left_out() {
    let env = Env::new();
    env.init();
    let src = env.path("p");
    fs::create_dir_all(src.join("target")).unwrap();
    fs::write(src.join("keep.rs"), b"k").unwrap();
    fs::write(src.join("drop.log"), b"d").unwrap();
    fs::write(src.join("target/out"), b"o").unwrap();
    fs::write(env.path("excludes"), "# build output\ntarget\n").unwrap();
    env.snapshot_json(&[
        OsStr::new("--exclude"),
        OsStr::new("*.log"),
        OsStr::new("--exclude-file"),
        env.path("excludes").as_os_str(),
        src.as_os_str(),
    ]);
    let out = env.path("out");
    env.cmd().args(["restore", "latest", "--target"]).arg(&out).assert().success();
    assert!(out.join("p/keep.rs").exists());
    assert!(!out.join("p/drop.log").exists());
    assert!(!out.join("p/target").exists());
}

#[test]
fn restore_verify_rereads_what_it_wrote() {
    let env = Env::new();
    env.init();
    let src = env.path("v");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(3 << 20, 9)).unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    let out =
        env.cmd().args(["restore", "latest", "--verify", "--json", "--target"]).arg(env.path("o")).output().unwrap();
    assert!(out.status.success());
    let v = summary_line(&out.stdout);
    assert_eq!(v["result"]["verified_files"], 1);
}
