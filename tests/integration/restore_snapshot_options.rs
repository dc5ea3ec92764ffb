//! The daily-use options of `restore`, `snapshot` and `check`, end to end on
//! the local backend (restore modes also on the loopback Telegram server):
//! `--overwrite`, `--delete` and `--dry-run` of restore; `--stdin`,
//! `--stdin-from-command`, `--files-from*`, `--skip-if-unchanged`,
//! `--dry-run`, `--time` and missing sources of snapshot; snapshot filters
//! of check.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

const OLD_NS: i64 = 1_600_000_000_000_000_000;
const NEW_NS: i64 = 1_700_000_000_000_000_000;

fn run_restore(env: &Env, target: &Path, args: &[&str]) -> std::process::Output {
    env.cmd().args(["restore", "latest", "--target"]).arg(target).args(args).output().unwrap()
}

fn restore_ok(env: &Env, target: &Path, args: &[&str]) -> String {
    let out = run_restore(env, target, args);
    assert!(out.status.success(), "restore {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A snapshot of `src/work` with `a.txt` (old), `b.txt` (new) and `sub/c.txt`;
/// returns the work directory.
fn snapshot_three_files(env: &Env) -> std::path::PathBuf {
    env.init();
    let w = env.path("src/work");
    fs::create_dir_all(w.join("sub")).unwrap();
    fs::write(w.join("a.txt"), "snapshot a\n").unwrap();
    fs::write(w.join("b.txt"), "snapshot b\n").unwrap();
    fs::write(w.join("sub/c.txt"), "snapshot c\n").unwrap();
    set_mtime(&w.join("a.txt"), OLD_NS);
    set_mtime(&w.join("b.txt"), NEW_NS);
    set_mtime(&w.join("sub/c.txt"), OLD_NS);
    env.snapshot_json(&[w.as_os_str()]);
    w
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn overwrite_never_keeps_every_existing_file_and_restores_the_missing_ones() {
    let env = Env::new();
    snapshot_three_files(&env);
    let out = env.path("out");
    fs::create_dir_all(out.join("work")).unwrap();
    fs::write(out.join("work/a.txt"), "mine\n").unwrap();
    let printed = restore_ok(&env, &out, &["--overwrite", "never"]);
    assert_eq!(read(out.join("work/a.txt")), "mine\n");
    assert_eq!(read(out.join("work/b.txt")), "snapshot b\n");
    assert_eq!(read(out.join("work/sub/c.txt")), "snapshot c\n");
    assert!(printed.contains("1 kept"), "{printed}");
}

#[test]
fn overwrite_if_newer_replaces_only_files_older_than_the_snapshots() {
    let env = Env::new();
    snapshot_three_files(&env);
    let out = env.path("out");
    fs::create_dir_all(out.join("work")).unwrap();
    // Older than the snapshot's a.txt: replaced. Newer than its b.txt: kept.
    fs::write(out.join("work/a.txt"), "older\n").unwrap();
    set_mtime(&out.join("work/a.txt"), OLD_NS - 1_000_000_000);
    fs::write(out.join("work/b.txt"), "newer\n").unwrap();
    set_mtime(&out.join("work/b.txt"), NEW_NS + 1_000_000_000);
    restore_ok(&env, &out, &["--overwrite", "if-newer"]);
    assert_eq!(read(out.join("work/a.txt")), "snapshot a\n");
    assert_eq!(read(out.join("work/b.txt")), "newer\n");
}

#[test]
fn overwrite_if_changed_trusts_size_and_mtime_and_resets_metadata() {
    let env = Env::new();
    let w = snapshot_three_files(&env);
    let mode = fs::metadata(w.join("a.txt")).unwrap().mode() & 0o7777;
    assert_ne!(mode, 0o600);
    let out = env.path("out");
    restore_ok(&env, &out, &[]);
    let a = out.join("work/a.txt");
    let b = out.join("work/b.txt");
    // Same size and mtime: trusted as unchanged (its bytes are not read or
    // written), but its mode is set again.
    fs::write(&a, "SNAPSHOT A\n").unwrap();
    set_mtime(&a, OLD_NS);
    fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
    // Another size: written again.
    fs::write(&b, "changed size\n").unwrap();
    set_mtime(&b, NEW_NS);
    let printed = restore_ok(&env, &out, &["--overwrite", "if-changed"]);
    assert_eq!(read(&a), "SNAPSHOT A\n");
    assert_eq!(fs::metadata(&a).unwrap().mode() & 0o7777, mode);
    assert_eq!(read(&b), "snapshot b\n");
    assert!(printed.contains("2 kept"), "a.txt and sub/c.txt are kept: {printed}");
}

#[test]
fn overwrite_always_is_the_default_and_rewrites_files_that_look_unchanged() {
    let env = Env::new();
    snapshot_three_files(&env);
    let out = env.path("out");
    restore_ok(&env, &out, &[]);
    let a = out.join("work/a.txt");
    fs::write(&a, "SNAPSHOT A\n").unwrap();
    set_mtime(&a, OLD_NS);
    restore_ok(&env, &out, &[]);
    assert_eq!(read(&a), "snapshot a\n");
    fs::write(&a, "SNAPSHOT A\n").unwrap();
    set_mtime(&a, OLD_NS);
    restore_ok(&env, &out, &["--overwrite", "always"]);
    assert_eq!(read(&a), "snapshot a\n");
}

#[test]
fn a_bad_overwrite_mode_is_named() {
    let env = Env::new();
    snapshot_three_files(&env);
    let out = run_restore(&env, &env.path("out"), &["--overwrite", "sometimes"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sometimes") && err.contains("if-newer"), "{err}");
}

#[test]
fn delete_removes_what_the_snapshot_lacks_and_nothing_outside_the_target() {
    let env = Env::new();
    snapshot_three_files(&env);
    let out = env.path("out");
    restore_ok(&env, &out, &[]);
    // Outside the target: a directory that symlinks in the target point to.
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), "keep me\n").unwrap();
    fs::write(out.join("work/extra.txt"), "extra\n").unwrap();
    fs::create_dir_all(out.join("work/extra-dir/deeper")).unwrap();
    fs::write(out.join("work/extra-dir/deeper/f"), "f\n").unwrap();
    std::os::unix::fs::symlink(&outside, out.join("work/extra-dir/link-out")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("work/link-out")).unwrap();
    // Where the snapshot has the directory `sub`, a symlink to outside.
    fs::remove_dir_all(out.join("work/sub")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("work/sub")).unwrap();
    let printed = restore_ok(&env, &out, &["--delete"]);
    assert!(!out.join("work/extra.txt").exists());
    assert!(fs::symlink_metadata(out.join("work/extra-dir")).is_err());
    assert!(fs::symlink_metadata(out.join("work/link-out")).is_err());
    assert!(fs::symlink_metadata(out.join("work/sub")).unwrap().is_dir());
    assert_eq!(read(out.join("work/sub/c.txt")), "snapshot c\n");
    assert_eq!(read(outside.join("precious")), "keep me\n");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "nothing was added or removed outside");
    assert!(printed.contains("deleted"), "{printed}");
    let mut names: Vec<_> = fs::read_dir(out.join("work")).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["a.txt", "b.txt", "sub"]);
}

#[test]
fn delete_replaces_a_directory_in_the_way_of_a_file() {
    let env = Env::new();
    snapshot_three_files(&env);
    let out = env.path("out");
    fs::create_dir_all(out.join("work/a.txt/inside")).unwrap();
    // Without --delete the directory stays and the file is not restored.
    let plain = run_restore(&env, &out, &[]);
    assert!(!plain.status.success());
    assert!(out.join("work/a.txt/inside").is_dir());
    restore_ok(&env, &out, &["--delete"]);
    assert_eq!(read(out.join("work/a.txt")), "snapshot a\n");
}

#[test]
fn delete_never_removes_under_a_directory_whose_tree_could_not_be_read() {
    use crate::crafted::{dir, file, Crafter};
    let env = Env::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = Crafter::init(&env.repo()).await;
        let data = c.data(b"present\n").await;
        // `lost` points at a tree that is not in the repository.
        let root = c.tree(vec![file(b"present.txt", vec![data], 8), dir(b"lost", tstor::format::Id([7; 32]))]).await;
        c.finish(root).await;
    });
    let out = env.path("out");
    fs::create_dir_all(out.join("lost")).unwrap();
    fs::write(out.join("lost/mine.txt"), "mine\n").unwrap();
    fs::write(out.join("extra.txt"), "extra\n").unwrap();
    let result = run_restore(&env, &out, &["--delete"]);
    assert_eq!(result.status.code(), Some(1), "the lost directory is an error");
    assert!(String::from_utf8_lossy(&result.stderr).contains("lost"));
    assert_eq!(read(out.join("lost/mine.txt")), "mine\n");
    assert!(!out.join("extra.txt").exists(), "the readable root was cleaned");
    assert_eq!(read(out.join("present.txt")), "present\n");
}

#[test]
fn delete_of_one_restored_file_leaves_the_rest_of_the_target() {
    let env = Env::new();
    snapshot_three_files(&env);
    let out = env.path("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("other.txt"), "other\n").unwrap();
    let out_str = out.to_str().unwrap().to_string();
    let result = env.cmd().args(["restore", "latest:work/a.txt", "--target", &out_str, "--delete"]).output().unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(read(out.join("a.txt")), "snapshot a\n");
    assert_eq!(read(out.join("other.txt")), "other\n");
}

#[test]
fn dry_run_writes_nothing_and_lists_what_would_change() {
    let env = Env::new();
    snapshot_three_files(&env);
    let out = env.path("out");
    fs::create_dir_all(out.join("work")).unwrap();
    fs::write(out.join("work/a.txt"), "mine\n").unwrap();
    fs::write(out.join("work/extra.txt"), "extra\n").unwrap();
    let before = describe(&out);
    let printed = restore_ok(&env, &out, &["--dry-run", "-v", "--delete"]);
    assert_eq!(describe(&out), before, "a dry run changes nothing");
    assert!(printed.contains("update    work/a.txt"), "{printed}");
    assert!(printed.contains("restore   work/b.txt"), "{printed}");
    assert!(printed.contains("restore   work/sub/c.txt"), "{printed}");
    assert!(printed.contains("delete    work/extra.txt"), "{printed}");
    assert!(printed.contains("would restore"), "{printed}");
    // With never, the existing file is a skip.
    let printed = restore_ok(&env, &out, &["--dry-run", "-v", "--overwrite", "never"]);
    assert!(printed.contains("skip      work/a.txt"), "{printed}");
    assert!(!printed.contains("delete"), "{printed}");
    assert_eq!(describe(&out), before);
    // Into a target that does not exist: nothing is created.
    let fresh = env.path("fresh");
    let json = env.cmd().args(["restore", "latest", "--dry-run", "--json", "--target"]).arg(&fresh).output().unwrap();
    assert!(json.status.success());
    assert!(!fresh.exists());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["result"]["files"], 3);
}
