//! `--json`: every line every command prints on stdout is JSON. `snapshot`
//! and `restore` print JSON lines (`status` at a steady rate, `verbose_status`
//! per file with `-v`, one `summary` last); the listings and reports print
//! one JSON document; a fatal error ends with an `exit_error` line on stderr
//! carrying the exit code.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// Every stdout line as a JSON object with a `message_type`; the types seen.
fn json_lines(args: &[&str], stdout: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(stdout).unwrap();
    assert!(!text.is_empty(), "{args:?} printed nothing");
    text.lines()
        .map(|line| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: not a JSON line ({e}): {line:?}"));
            assert!(v["message_type"].is_string(), "{args:?}: no message_type in {line}");
            v
        })
        .collect()
}

/// Runs a command that succeeds and returns its stdout.
fn ok(env: &Env, args: &[&str]) -> Vec<u8> {
    let out = env.cmd().env("TSTOR_PROGRESS_FPS", "200").args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A command whose output is one JSON document.
fn document(env: &Env, args: &[&str]) -> Value {
    let stdout = ok(env, args);
    serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {}", String::from_utf8_lossy(&stdout)))
}

/// A command that prints JSON lines: checks their order and returns them.
fn streamed(env: &Env, args: &[&str], status_fields: &[&str]) -> Vec<Value> {
    let lines = json_lines(args, &ok(env, args));
    let (last, before) = lines.split_last().unwrap();
    assert_eq!(last["message_type"], "summary", "{args:?}: the summary comes last");
    for l in before {
        match l["message_type"].as_str().unwrap() {
            "status" => {
                for f in status_fields {
                    assert!(!l[f].is_null(), "{args:?}: status without {f}: {l}");
                }
                let p = l["percent_done"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&p), "{l}");
            }
            "verbose_status" => assert!(l["item"].is_string() && l["action"].is_string(), "{l}"),
            other => panic!("{args:?}: unexpected {other} line before the summary: {l}"),
        }
    }
    lines
}

fn tree(src: &Path) {
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..40u64 {
        let data: Vec<u8> = (0..60_000u64).map(|j| ((i * 7919 + j * 31) % 251) as u8).collect();
        fs::write(src.join(format!("sub/f{i}.bin")), data).unwrap();
    }
    fs::write(src.join("a.txt"), "hello").unwrap();
}

/// A repository whose key slot opens fast (the default key derivation
/// would dominate the two dozen commands below).
async fn fast_repository(env: &Env) {
    use std::sync::Arc;
    use tstor::backend::local::LocalBackend;
    use tstor::crypto::kdf::KdfParams;
    use tstor::repo::{InitOptions, Repository};
    let opts = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
    Repository::init(Arc::new(LocalBackend::new(env.repo())), PASSWORD.as_bytes(), opts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_only_json_with_json() {
    let fresh = Env::new();
    let init = document(&fresh, &["init", "--json"]);
    assert!(init["id"].is_string(), "{init}");
    // restic's `initialized` message, with the place the repository is at.
    assert_eq!(init["message_type"], "initialized", "{init}");
    assert!(init["repository"].as_str().is_some_and(|r| r.contains(fresh.repo().to_str().unwrap())), "{init}");
    assert_eq!(init["same_keys_as_source"], false, "{init}");
    let env = Env::new();
    fast_repository(&env).await;
    let src = env.path("src");
    tree(&src);
    let src_s = src.to_str().unwrap();

    let first = streamed(
        &env,
        &["snapshot", "--json", "-v", src_s],
        &["seconds_elapsed", "total_files", "files_done", "total_bytes", "bytes_done", "error_count"],
    );
    // -v: one verbose_status per file, each new the first time.
    let files: Vec<&Value> = first.iter().filter(|l| l["message_type"] == "verbose_status").collect();
    assert_eq!(files.len(), 41, "{first:?}");
    assert!(files.iter().all(|l| l["action"] == "new"));
    let summary = first.last().unwrap();
    assert_eq!(summary["files_new"], 41);
    assert_eq!(summary["files_unmodified"], 0);
    assert_eq!(summary["total_files_processed"], 41);
    assert!(summary["backup_start"].as_str().unwrap().ends_with("+00:00"), "{summary}");
    fs::write(src.join("a.txt"), "hello again").unwrap();
    let second = streamed(&env, &["snapshot", "--json", "-v", src_s], &["bytes_done"]);
    let actions: Vec<&str> = second
        .iter()
        .filter(|l| l["message_type"] == "verbose_status")
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "modified").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "unchanged").count(), 40, "{actions:?}");
    // Without -v no verbose_status.
    let third = streamed(&env, &["snapshot", "--json", src_s], &["bytes_done"]);
    assert!(third.iter().all(|l| l["message_type"] != "verbose_status"));

    let target = env.path("out");
    let restored = streamed(
        &env,
        &["restore", "--json", "-v", "latest", "--target", target.to_str().unwrap()],
        &["total_bytes", "bytes_restored"],
    );
    assert_eq!(restored.last().unwrap()["files_restored"], 41);
    // -v: one verbose_status per entry restored, files and directories.
    let items: Vec<&Value> = restored.iter().filter(|l| l["message_type"] == "verbose_status").collect();
    assert!(items.iter().all(|l| l["action"] == "restored"), "{items:?}");
    let files = items.iter().filter(|l| l["item"].as_str().is_some_and(|p| p.ends_with(".bin") || p.ends_with(".txt")));
    assert_eq!(files.count(), 41, "{items:?}");

    let snaps = document(&env, &["snapshots", "--json"]);
    assert_eq!(snaps.as_array().unwrap().len(), 3);
    let a = snaps[0]["id"].as_str().unwrap().to_string();
    let b = snaps[1]["id"].as_str().unwrap().to_string();
    for args in [
        vec!["ls", "--json", "latest"],
        vec!["find", "--json", "*.txt"],
        vec!["diff", "--json", &a, &b],
        vec!["stats", "--json"],
        vec!["check", "--json", "--verify"],
        vec!["cat", "--json", "config"],
        vec!["cat", "--json", "snapshot", &a],
        vec!["key", "--json", "list"],
        vec!["tag", "--json", "--add", "t", "latest"],
        vec!["forget", "--json", "--keep-last", "2", "--dry-run"],
        vec!["forget", "--json", "--keep-last", "2"],
        vec!["prune", "--json"],
        vec!["unlock", "--json"],
        vec!["repair", "--json", "index"],
        vec!["version", "--json"],
        vec!["cache", "--json"],
        vec!["snapshots", "--json", "--group-by", "host,tags"],
    ] {
        document(&env, &args);
    }
    let version = document(&env, &["version", "--json"]);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(version["repository_format"].is_u64(), "{version}");
    let caches = document(&env, &["cache", "--json"]);
    let cache = &caches.as_array().unwrap()[0];
    assert_eq!(cache["repository_id"].as_str().map(str::len), Some(64), "{caches}");
    assert!(cache["path"].is_string() && cache["bytes"].is_u64() && cache["days_unused"] == 0, "{caches}");
    // Grouped: restic's `group_key` with the fields grouped by, and the
    // group's snapshots (here one group: one host, the tag added above
    // only on the newest, so two groups by tags).
    let grouped = document(&env, &["snapshots", "--json", "--group-by", "host,tags"]);
    let groups = grouped.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{grouped}");
    for g in groups {
        assert!(g["group_key"]["hostname"].is_string(), "{g}");
        assert!(g["group_key"]["tags"].is_array(), "{g}");
        assert!(g["group_key"].get("paths").is_none(), "not grouped by paths: {g}");
        assert!(g["snapshots"].as_array().unwrap().iter().all(|s| s["id"].is_string()), "{g}");
    }
    assert_eq!(groups[1]["group_key"]["tags"], serde_json::json!(["t"]), "{grouped}");
    env.cmd().args(["--json", "key", "add"]).env("TSTOR_NEW_PASSWORD", "other").assert().success();
    assert_eq!(document(&env, &["key", "list", "--json"]).as_array().unwrap().len(), 2);
}

/// The last stderr line of a failed `--json` run.
fn exit_error(out: &std::process::Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_else(|| panic!("nothing on stderr"));
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    assert_eq!(v["message_type"], "exit_error", "{v}");
    assert_eq!(v["code"].as_i64(), out.status.code().map(i64::from), "{v}");
    assert!(v["message"].is_string(), "{v}");
    v
}

#[test]
fn a_fatal_error_ends_with_exit_error_on_stderr_and_nothing_on_stdout() {
    let env = Env::new();
    // No repository: code 10.
    let out = env.cmd().args(["snapshots", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(exit_error(&out)["message"].as_str().unwrap().contains("repository"));
    assert!(out.stdout.is_empty());
    env.init();
    // Wrong password: code 12.
    let out = env.cmd().env("TSTOR_PASSWORD", "wrong").args(["snapshot", "--json", "/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(12));
    exit_error(&out);
    // A source that does not exist: code 1.
    let out = env.cmd().args(["snapshot", "--json"]).arg(env.path("missing")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(exit_error(&out)["message"].as_str().unwrap().contains("missing"));
    // Text mode keeps its plain line.
    let out = env.cmd().arg("snapshot").arg(env.path("missing")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("tstor: "));
}

/// A check's progress counts what is done, in the order it is done: the
/// packs verified, then the snapshots whose trees were walked, so that a
/// bar reaches its end when the check does (it used to end with the last
/// pack, before the tree walk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_progress_ends_with_the_tree_walk_not_with_the_last_pack() {
    use std::sync::{Arc, Mutex};
    use tstor::archiver::{NoProgress, SnapshotOptions};
    use tstor::backend::memory::MemoryBackend;
    use tstor::backend::Backend;
    use tstor::crypto::kdf::KdfParams;
    use tstor::ops::check::{CheckProgress, VerifyScope};
    use tstor::repo::{InitOptions, Repository};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(&'static str, u64)>>);
    impl CheckProgress for Recorder {
        fn verify_total(&self, _packs: usize, bytes: u64) {
            self.0.lock().unwrap().push(("verify_total", bytes));
        }
        fn pack_verified(&self, bytes: u64) {
            self.0.lock().unwrap().push(("pack", bytes));
        }
        fn trees_total(&self, snapshots: usize) {
            self.0.lock().unwrap().push(("trees_total", snapshots as u64));
        }
        fn snapshot_checked(&self) {
            self.0.lock().unwrap().push(("snapshot", 1));
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let init = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
    let repo = Repository::init(backend, b"pw", init).await.unwrap();
    for i in 0..3 {
        fs::write(src.join("a.txt"), format!("version {i}")).unwrap();
        tstor::ops::snapshot(&repo, SnapshotOptions::new(vec![src.clone()]), Arc::new(NoProgress)).await.unwrap();
    }
    let recorder = Arc::new(Recorder::default());
    let report = tstor::ops::check(&repo, VerifyScope::All, recorder.clone()).await.unwrap();
    assert!(report.ok());
    let events = recorder.0.lock().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e.0).collect();
    let packs = kinds.iter().filter(|k| **k == "pack").count();
    assert_eq!(packs, report.packs_verified);
    let mut want = vec!["verify_total"];
    want.extend(std::iter::repeat_n("pack", packs));
    want.push("trees_total");
    want.extend(std::iter::repeat_n("snapshot", 3));
    assert_eq!(kinds, want, "packs, then every snapshot's trees, each counted when done");
    let verified: u64 = events.iter().filter(|e| e.0 == "pack").map(|e| e.1).sum();
    assert_eq!(Some(verified), events.first().map(|e| e.1), "the bytes verified add up to the total");
    assert_eq!(events.iter().find(|e| e.0 == "trees_total").map(|e| e.1), Some(3));
}
