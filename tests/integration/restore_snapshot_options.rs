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

/// A new repository whose key slot derives fast (these tests run many commands).
fn fast_init(env: &Env) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(crate::crafted::Crafter::init(&env.repo()));
}

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
    fast_init(env);
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
    // Where the snapshot has the directory `sub`, a symlink out of the target:
    // a dry run does not list (or count) what is behind it.
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), "keep me\n").unwrap();
    std::os::unix::fs::symlink(&outside, out.join("work/sub")).unwrap();
    let before = describe(&out);
    let printed = restore_ok(&env, &out, &["--dry-run", "-v", "--delete"]);
    assert!(!printed.contains("precious"), "{printed}");
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
    let v = summary_line(&json.stdout);
    assert_eq!(v["result"]["files"], 3);
    assert_eq!(v["dry_run"], true);
}

fn snapshot_count(env: &Env) -> usize {
    env.snapshots_json().len()
}

/// A command's exit code, stdout and stderr.
fn outcome(out: std::process::Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_source_path_is_skipped_with_a_warning_and_exit_3() {
    let env = Env::new();
    fast_init(&env);
    let here = env.path("here");
    fs::create_dir_all(&here).unwrap();
    fs::write(here.join("f.txt"), "kept\n").unwrap();
    let gone = env.path("gone");
    let (code, _, err) = outcome(env.cmd().arg("snapshot").arg(&here).arg(&gone).output().unwrap());
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&gone.display().to_string()), "the missing path is named: {err}");
    assert_eq!(snapshot_count(&env), 1);
    let out = env.path("out");
    restore_ok(&env, &out, &[]);
    assert_eq!(read(out.join("here/f.txt")), "kept\n");

    // Every path missing: an error, and no snapshot.
    let (code, _, err) = outcome(env.cmd().arg("snapshot").arg(&gone).arg(env.path("also-gone")).output().unwrap());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nothing to back up") && err.contains("also-gone"), "{err}");
    assert_eq!(snapshot_count(&env), 1);
}

#[test]
fn stdin_is_stored_as_one_file_under_its_name() {
    let env = Env::new();
    fast_init(&env);
    let data = random_bytes(3 << 20, 5);
    let out = env
        .cmd()
        .args(["snapshot", "--stdin", "--stdin-filename", "dump.sql", "--json"])
        .write_stdin(data.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = summary_line(&out.stdout);
    assert_eq!(summary["files_new"], 1);
    assert_eq!(env.snapshots_json()[0]["paths"], serde_json::json!(["/dump.sql"]));
    let target = env.path("out");
    restore_ok(&env, &target, &[]);
    assert_eq!(fs::read(target.join("dump.sql")).unwrap(), data);
    // Standard input and a list of paths do not mix.
    let clash = env.cmd().args(["snapshot", "--stdin", "--files-from", "list"]).write_stdin("x").output().unwrap();
    assert_eq!(clash.status.code(), Some(2));
    // A name that is not a file name is refused.
    let bad = env.cmd().args(["snapshot", "--stdin", "--stdin-filename", "a/b"]).write_stdin("x").output().unwrap();
    assert!(!bad.status.success());
    assert_eq!(snapshot_count(&env), 1);
}

#[test]
fn stdin_from_command_stores_its_output_and_a_failed_command_saves_nothing() {
    let env = Env::new();
    fast_init(&env);
    let ok = env
        .cmd()
        .args([
            "snapshot",
            "--stdin-from-command",
            "--stdin-filename",
            "out.txt",
            "--",
            "sh",
            "-c",
            "printf 'made by a command'",
        ])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let target = env.path("out");
    restore_ok(&env, &target, &[]);
    assert_eq!(read(target.join("out.txt")), "made by a command");

    let (code, _, err) = outcome(
        env.cmd()
            .args(["snapshot", "--stdin-from-command", "--", "sh", "-c", "echo partial; exit 7"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("failed") && err.contains("sh"), "{err}");
    assert_eq!(snapshot_count(&env), 1, "a failed command saves no snapshot");
    // No command at all is named as such.
    let (code, _, err) = outcome(env.cmd().args(["snapshot", "--stdin-from-command"]).output().unwrap());
    assert_eq!(code, Some(1));
    assert!(err.contains("needs a command"), "{err}");
}

#[test]
fn files_from_reads_lines_verbatim_lines_and_nul_separated_lists() {
    let env = Env::new();
    fast_init(&env);
    for name in ["a", "b", "c", "#d"] {
        fs::create_dir_all(env.path(name)).unwrap();
        fs::write(env.path(name).join("f"), name).unwrap();
    }
    let p = |n: &str| env.path(n).display().to_string();
    let list = env.path("list.txt");
    fs::write(&list, format!("# a comment\n\n{}\n  {}  \r\n", p("a"), p("b"))).unwrap();
    let verbatim = env.path("verbatim.txt");
    fs::write(&verbatim, format!("{}\n", p("#d"))).unwrap();
    let raw = env.path("raw.bin");
    fs::write(&raw, format!("{}\0", p("c"))).unwrap();
    let out = env
        .cmd()
        .arg("snapshot")
        .arg("--files-from")
        .arg(&list)
        .arg("--files-from-verbatim")
        .arg(&verbatim)
        .arg("--files-from-raw")
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut paths: Vec<String> =
        env.snapshots_json()[0]["paths"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    paths.sort();
    let mut expected = vec![p("#d"), p("a"), p("b"), p("c")];
    expected.sort();
    assert_eq!(paths, expected);
}

#[test]
fn skip_if_unchanged_saves_no_snapshot_when_nothing_changed() {
    let env = Env::new();
    let w = snapshot_three_files(&env);
    let out = env.cmd().arg("snapshot").arg("--skip-if-unchanged").arg(&w).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no snapshot saved"));
    assert_eq!(snapshot_count(&env), 1);
    fs::write(w.join("new.txt"), "new\n").unwrap();
    env.cmd().arg("snapshot").arg("--skip-if-unchanged").arg(&w).assert().success();
    assert_eq!(snapshot_count(&env), 2);
}

#[test]
fn snapshot_dry_run_writes_nothing_and_says_what_would_be_added() {
    let env = Env::new();
    fast_init(&env);
    let w = env.path("work");
    fs::create_dir_all(&w).unwrap();
    fs::write(w.join("big.bin"), random_bytes(2 << 20, 3)).unwrap();
    let before = env.repo_listing();
    let v = env.snapshot_json(&[std::ffi::OsStr::new("--dry-run"), w.as_os_str()]);
    assert_eq!(env.repo_listing(), before, "a dry run writes nothing, not even a lock");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["snapshot_id"], serde_json::Value::Null);
    assert_eq!(v["files_new"], 1);
    assert!(v["bytes_added"].as_u64().unwrap() >= 2 << 20, "{v}");
    assert_eq!(snapshot_count(&env), 0);
    let real = env.snapshot_json(&[w.as_os_str()]);
    assert_eq!(real["bytes_added"], v["bytes_added"]);
}

#[test]
fn time_sets_the_snapshot_time_from_rfc_3339_or_a_plain_utc_time() {
    let env = Env::new();
    let w = snapshot_three_files(&env);
    env.cmd().args(["snapshot", "--force", "--time", "2024-05-06 07:08:09"]).arg(&w).assert().success();
    env.cmd().args(["snapshot", "--force", "--time", "2023-01-02T12:30:00.5+02:00"]).arg(&w).assert().success();
    let times: Vec<String> = env.snapshots_json().iter().map(|s| s["time"].as_str().unwrap().to_string()).collect();
    assert!(times.contains(&"2024-05-06T07:08:09+00:00".to_string()), "{times:?}");
    assert!(times.contains(&"2023-01-02T10:30:00.5+00:00".to_string()), "{times:?}");
    let (code, _, err) = outcome(env.cmd().args(["snapshot", "--time", "yesterday"]).arg(&w).output().unwrap());
    assert_eq!(code, Some(2));
    assert!(err.contains("yesterday") && err.contains("RFC 3339"), "{err}");
}

#[test]
fn check_with_snapshot_filters_reads_only_the_chosen_snapshots() {
    let env = Env::new();
    fast_init(&env);
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("a.bin"), random_bytes(300_000, 1)).unwrap();
    fs::write(b.join("b.bin"), random_bytes(300_000, 2)).unwrap();
    env.cmd().args(["snapshot", "--host", "ha", "--tag", "ta"]).arg(&a).assert().success();
    let packs = |env: &Env| -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        walk(&env.repo().join("packs"), &mut |p, m| {
            if m.is_file() {
                out.push(p.to_path_buf())
            }
        });
        out
    };
    let packs_a = packs(&env);
    env.cmd().args(["snapshot", "--host", "hb"]).arg(&b).assert().success();
    // Damage every pack the second snapshot wrote.
    let mut damaged = 0;
    for p in packs(&env).into_iter().filter(|p| !packs_a.contains(p)) {
        let mut bytes = fs::read(&p).unwrap();
        bytes[10] ^= 0xff;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, bytes).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    let id_a =
        env.snapshots_json().iter().find(|s| s["hostname"] == "ha").unwrap()["short_id"].as_str().unwrap().to_string();
    for args in [vec!["--host", "ha"], vec!["--tag", "ta"], vec![id_a.as_str()]] {
        let out = env.cmd().args(["check", "--verify", "--json"]).args(&args).output().unwrap();
        assert!(out.status.success(), "check {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["snapshots"], 1);
        assert_eq!(report["packs_verified"].as_u64(), Some(packs_a.len() as u64), "only the chosen snapshot's packs");
    }
    env.cmd().args(["check", "--verify", "--host", "hb"]).assert().code(1);
    env.cmd().args(["check", "--verify"]).assert().code(1);
    let (code, _, err) = outcome(env.cmd().args(["check", "ffffffff"]).output().unwrap());
    assert_eq!(code, Some(1));
    assert!(err.contains("ffffffff"), "{err}");
}

/// The restore modes against a repository in Telegram's Saved Messages,
/// on the loopback MTProto server.
#[test]
fn restore_modes_work_the_same_on_a_telegram_repository() {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use tstor::backend::telegram::TelegramSession;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(tstor_tgloop::Server::start()).unwrap();
    let env = Env::new();
    let session = env.path("telegram.session");
    let SocketAddr::V4(v4) = server.addr() else { panic!("loopback server listens on IPv4") };
    let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
    let v6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
    let mut s = TelegramSession::with_dc(server.dc_id(), v4, v6, server.auth_key());
    s.set_api_id(1).unwrap();
    s.save_to(&session).unwrap();
    let tg = |args: &[&str]| -> std::process::Output {
        let mut c = env.cmd();
        c.env("TSTOR_REPOSITORY", "telegram:me")
            .env("TSTOR_TG_SESSION", &session)
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0")
            .timeout(std::time::Duration::from_secs(300))
            .args(args);
        c.output().unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let out = tg(args);
        assert!(out.status.success(), "tstor {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["init"]);
    let w = env.path("src/work");
    fs::create_dir_all(w.join("sub")).unwrap();
    fs::write(w.join("a.txt"), "snapshot a\n").unwrap();
    fs::write(w.join("b.txt"), "snapshot b\n").unwrap();
    set_mtime(&w.join("a.txt"), OLD_NS);
    set_mtime(&w.join("b.txt"), NEW_NS);
    ok(&["snapshot", w.to_str().unwrap()]);
    let out = env.path("out");
    let target = out.to_str().unwrap();
    ok(&["restore", "latest", "--target", target]);
    assert_eq!(read(out.join("work/a.txt")), "snapshot a\n");

    let a = out.join("work/a.txt");
    let b = out.join("work/b.txt");
    fs::write(&a, "mine\n").unwrap();
    fs::write(out.join("work/extra.txt"), "extra\n").unwrap();
    let before = describe(&out);
    let listed = ok(&["restore", "latest", "--target", target, "--dry-run", "-v", "--delete"]);
    assert!(listed.contains("update    work/a.txt") && listed.contains("delete    work/extra.txt"), "{listed}");
    assert_eq!(describe(&out), before);

    ok(&["restore", "latest", "--target", target, "--overwrite", "never"]);
    assert_eq!(read(&a), "mine\n");
    // Newer than the snapshot's: if-newer keeps it; older: replaced.
    set_mtime(&a, NEW_NS);
    ok(&["restore", "latest", "--target", target, "--overwrite", "if-newer"]);
    assert_eq!(read(&a), "mine\n");
    set_mtime(&a, OLD_NS - 1);
    ok(&["restore", "latest", "--target", target, "--overwrite", "if-newer"]);
    assert_eq!(read(&a), "snapshot a\n");
    // Same size and mtime: if-changed trusts it.
    fs::write(&b, "SNAPSHOT B\n").unwrap();
    set_mtime(&b, NEW_NS);
    ok(&["restore", "latest", "--target", target, "--overwrite", "if-changed", "--delete"]);
    assert_eq!(read(&b), "SNAPSHOT B\n");
    assert!(!out.join("work/extra.txt").exists());
    ok(&["restore", "latest", "--target", target]);
    assert_eq!(read(&b), "snapshot b\n");
    drop(server);
}

#[test]
fn a_missing_path_keeps_its_place_among_the_snapshots_paths() {
    let env = Env::new();
    fast_init(&env);
    // By last component: `a-gone` before `b-here`, although `/…/z/b-here`
    // sorts after `/…/y/a-gone` only by name.
    let here = env.path("a/b-here");
    fs::create_dir_all(&here).unwrap();
    let gone = env.path("z/a-gone");
    env.cmd().arg("snapshot").arg(&here).arg(&gone).assert().code(3);
    let paths = env.snapshots_json()[0]["paths"].clone();
    assert_eq!(paths, serde_json::json!([gone.display().to_string(), here.display().to_string()]));
    // The same command again finds it as its parent.
    let again = env.cmd().args(["snapshot", "--json"]).arg(&here).arg(&gone).output().unwrap();
    assert_eq!(again.status.code(), Some(3));
    let v = summary_line(&again.stdout);
    assert_eq!(v["parent"], env.snapshots_json()[0]["id"]);
}
