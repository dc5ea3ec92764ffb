//! Files that change while they are read, names that would deceive a
//! terminal, and readers that go away: a file rewritten during a snapshot is
//! read again or reported (exit 3), never stored torn in silence; a growing
//! file is read up to its size when opened; every name printed for a human
//! is escaped; every printing command ends quietly on a closed pipe.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tstor::archiver::{NoProgress, ReadHook, SnapshotOptions};
use tstor::backend::memory::MemoryBackend;
use tstor::backend::Backend;
use tstor::crypto::kdf::KdfParams;
use tstor::ops;
use tstor::repo::{InitOptions, Repository};
use tstor::restorer::{NoRestoreProgress, RestoreOptions};

use crate::common::*;

const MIB: usize = 1 << 20;

async fn memory_repo() -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let init = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
    Repository::init(backend, b"pw", init).await.unwrap()
}

/// Snapshots `src` (holding one file `f`) with `hook` and returns the
/// outcome and the content restored for `f`.
async fn snapshot_with_hook(tmp: &Path, hook: ReadHook) -> (tstor::archiver::SnapshotOutcome, Vec<u8>) {
    let repo = memory_repo().await;
    let mut opts = SnapshotOptions::new(vec![tmp.join("src")]);
    opts.read_hook = Some(hook);
    let outcome = ops::snapshot(&repo, opts, Arc::new(NoProgress)).await.unwrap();
    let out = tmp.join("out");
    let (_, _, restored) =
        ops::restore(&repo, "latest", &RestoreOptions::new(out.clone()), Arc::new(NoRestoreProgress)).await.unwrap();
    assert!(restored.errors.is_empty(), "{:?}", restored.errors);
    let content = fs::read(out.join("src/f")).unwrap();
    (outcome, content)
}

/// Overwrites `path` with `content` and gives it an mtime of its own, so
/// that the change shows whatever the clock's resolution.
fn rewrite(path: &Path, content: &[u8], mtime_s: i64) {
    fs::write(path, content).unwrap();
    set_mtime(path, mtime_s * 1_000_000_000);
}

fn source_file(tmp: &Path, content: &[u8]) -> PathBuf {
    fs::create_dir_all(tmp.join("src")).unwrap();
    let f = tmp.join("src/f");
    fs::write(&f, content).unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_once_while_read_is_read_again_and_stored_whole() {
    let tmp = tempfile::tempdir().unwrap();
    source_file(tmp.path(), &random_bytes(4 * MIB, 1));
    let new_content = random_bytes(4 * MIB, 2);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let (seen, replacement) = (attempts.clone(), new_content.clone());
    let hook: ReadHook = Arc::new(move |path: &Path, attempt: u32| {
        seen.lock().unwrap().push(attempt);
        if attempt == 0 {
            rewrite(path, &replacement, 1_000_000);
        }
    });
    let (outcome, restored) = snapshot_with_hook(tmp.path(), hook).await;
    assert_eq!(*attempts.lock().unwrap(), vec![0, 1], "the changed file is read a second time");
    assert!(outcome.changed.is_empty(), "a file steady on the second read is not reported: {:?}", outcome.changed);
    assert!(restored == new_content, "the second read is what is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_keeps_changing_is_stored_as_last_read_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let f = source_file(tmp.path(), &random_bytes(4 * MIB, 1));
    // Each read finds the file rewritten (and truncated) since it was opened.
    let versions = [random_bytes(3 * MIB, 2), random_bytes(2 * MIB, 3)];
    let last = versions[1].clone();
    let hook: ReadHook = Arc::new(move |path: &Path, attempt: u32| {
        rewrite(path, &versions[attempt as usize], 1_000_000 + i64::from(attempt));
    });
    let (outcome, restored) = snapshot_with_hook(tmp.path(), hook).await;
    assert_eq!(outcome.changed, vec![f], "the file is reported as changed while read");
    assert_eq!(restored.len(), last.len(), "the tree's size matches the content stored");
    assert!(restored == last, "what the reported (second) read got is stored");
    assert_eq!(outcome.snapshot.summary.total_bytes, last.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_file_is_read_up_to_its_size_when_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let f = source_file(tmp.path(), &random_bytes(4 * MIB, 1));
    // A log being appended: every read finds another MiB after the size the
    // file had when opened.
    let hook: ReadHook = Arc::new(move |path: &Path, attempt: u32| {
        let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(&random_bytes(MIB, 10 + u64::from(attempt))).unwrap();
    });
    let (outcome, restored) = snapshot_with_hook(tmp.path(), hook).await;
    let on_disk = fs::read(&f).unwrap();
    assert_eq!(on_disk.len(), 6 * MIB);
    assert_eq!(restored.len(), 5 * MIB, "read up to the size when opened for the second read, no further");
    assert!(restored[..] == on_disk[..5 * MIB], "the stored content is a prefix of the file");
    assert_eq!(outcome.changed, vec![f]);
}

/// A thread that keeps changing a file until dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(path: &Path, step: impl Fn(&fs::File, u64) + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        let (s, o) = (stop.clone(), ops.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                step(&file, o.fetch_add(1, Ordering::Relaxed));
            }
        });
        while ops.load(Ordering::Relaxed) < 2 {
            std::thread::yield_now();
        }
        Writer { stop, thread: Some(thread) }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The size `ls -l --json` shows for `/src/<name>` in the latest snapshot.
fn stored_size(env: &Env, name: &str) -> u64 {
    let out = env.cmd().args(["ls", "--json", "latest"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let entry = list.iter().find(|e| e["path"] == format!("/src/{name}")).expect("file listed");
    entry["size"].as_u64().unwrap()
}

fn restored(env: &Env, name: &str) -> Vec<u8> {
    let target = env.path("restored");
    let _ = fs::remove_dir_all(&target);
    env.cmd().args(["restore", "latest", "--target"]).arg(&target).assert().success();
    fs::read(target.join("src").join(name)).unwrap()
}

#[test]
fn a_file_rewritten_throughout_the_snapshot_is_reported_and_exits_3() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("busy.db");
    let size = 32 * MIB as u64;
    fs::write(&f, random_bytes(size as usize, 1)).unwrap();
    fs::write(src.join("calm"), "steady").unwrap();
    // Rewrites blocks in place and moves the end back and forth, without pause.
    let blocks = [vec![0xAAu8; 64 << 10], vec![0x55u8; 64 << 10]];
    let writer = Writer::start(&f, move |file, i| {
        let offset = (i * 7919 % (size / (64 << 10))) * (64 << 10);
        file.write_all_at(&blocks[(i % 2) as usize], offset).unwrap();
        file.set_len(size - (i % 2) * 4096).unwrap();
    });
    let out = env.cmd().args(["snapshot", "--json"]).arg(&src).output().unwrap();
    drop(writer);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a file changed while read means exit 3; stderr: {stderr}");
    assert!(
        stderr.contains(&format!("{}: file changed while it was read", f.display())),
        "the warning names the file: {stderr}"
    );
    let summary = summary_line(&out.stdout);
    assert_eq!(summary["changed_files"], serde_json::json!([f.display().to_string()]), "{summary}");
    assert!(summary["errors"].as_array().unwrap().is_empty());
    let content = restored(&env, "busy.db");
    assert_eq!(stored_size(&env, "busy.db"), content.len() as u64, "the tree's size matches the content stored");

    // Human output says the same, and counts it in the summary.
    let writer = Writer::start(&f, move |file, i| {
        file.set_len(size - (i % 2) * 4096).unwrap();
        file.write_all_at(&[i as u8; 4096], 0).unwrap();
    });
    let out = env.cmd().args(["snapshot", "--force"]).arg(&src).output().unwrap();
    drop(writer);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stdout.contains("1 changed while read"), "{stdout}");
    assert!(stderr.contains("busy.db: file changed while it was read"), "{stderr}");
}

#[test]
fn a_file_appended_throughout_the_snapshot_is_stored_as_a_prefix_and_reported() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let log = src.join("app.log");
    fs::write(&log, random_bytes(16 * MIB, 1)).unwrap();
    let line = random_bytes(64 << 10, 2);
    // Appends until the snapshot ends, with a cap so that a reader chasing
    // the end of the file cannot fill the disk.
    let cap = 512 * MIB as u64;
    let writer = Writer::start(&log, move |mut file: &fs::File, _| {
        if file.seek(SeekFrom::End(0)).unwrap() < cap {
            file.write_all(&line).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    });
    let out = env.cmd().args(["snapshot", "--json"]).arg(&src).output().unwrap();
    drop(writer);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("app.log: file changed while it was read"), "{stderr}");
    let on_disk = fs::read(&log).unwrap();
    let content = restored(&env, "app.log");
    assert_eq!(stored_size(&env, "app.log"), content.len() as u64);
    assert!(content.len() < on_disk.len(), "stored {} of {}", content.len(), on_disk.len());
    assert!(content[..] == on_disk[..content.len()], "the stored content is a prefix of the log");
}

// ---- names printed for a human are escaped ----

/// A name that prints a fake success line and clears the screen if shown raw.
const EVIL: &str = "evil\nrestored snapshot 00000000 to T: 0 errors\x1b[2J";

/// Fails if `out` holds anything a terminal would act on: a control byte
/// other than the line ends of the output itself, bytes that are not UTF-8,
/// or a line that a name printed on its own.
fn assert_terminal_safe(what: &str, out: &[u8]) {
    let text = std::str::from_utf8(out).unwrap_or_else(|e| panic!("{what}: raw non-UTF-8 output ({e}): {out:?}"));
    let bad: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(bad.is_empty(), "{what}: raw control characters {bad:?} in {text:?}");
    assert!(
        !text.lines().any(|l| l.starts_with("restored snapshot 00000000")),
        "{what}: a name printed a line of its own: {text}"
    );
}

fn run_checked(env: &Env, what: &str, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = env.std_cmd();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_ne!(out.status.code(), Some(101), "{what} panicked: {}", String::from_utf8_lossy(&out.stderr));
    assert_terminal_safe(&format!("{what} stdout"), &out.stdout);
    assert_terminal_safe(&format!("{what} stderr"), &out.stderr);
    out
}

#[test]
fn names_with_control_characters_and_invalid_utf8_are_escaped_in_every_human_output() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join(EVIL), "a").unwrap();
    let invalid = src.join(OsStr::from_bytes(b"bad\xff\xfename"));
    fs::write(&invalid, "b").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"\x1b]0;pwned\x07target"), src.join("link")).unwrap();
    let src_s = src.to_str().unwrap();

    let host = "host\x1b[31m\nrestored snapshot 00000000 to T: 0 errors";
    let tag = "tag\x07\x1b[0m";
    run_checked(&env, "snapshot", &["snapshot", "--host", host, "--tag", tag, src_s], &[]);
    fs::write(src.join(EVIL), "changed").unwrap();
    fs::remove_file(&invalid).unwrap();
    fs::write(src.join(OsStr::from_bytes(b"new\x9b\x1b")), "c").unwrap();
    run_checked(&env, "second snapshot", &["snapshot", "--host", host, src_s], &[]);
    let ids: Vec<String> = env.snapshots_json().iter().map(|s| s["short_id"].as_str().unwrap().to_string()).collect();

    let ls = run_checked(&env, "ls", &["ls", &ids[0]], &[]);
    let ls = String::from_utf8(ls.stdout).unwrap();
    assert!(ls.contains("/src/evil\\nrestored snapshot 00000000 to T: 0 errors\\x1b[2J\n"), "{ls}");
    assert!(ls.contains("/src/bad\\xff\\xfename\n"), "{ls}");
    let long = run_checked(&env, "ls -l", &["ls", "-l", &ids[0]], &[]);
    assert!(String::from_utf8(long.stdout).unwrap().contains("-> \\x1b]0;pwned\\x07target"));
    let find = run_checked(&env, "find", &["find", "*"], &[]);
    assert!(String::from_utf8(find.stdout).unwrap().contains("/src/new\\x9b\\x1b"));
    let diff = run_checked(&env, "diff", &["diff", &ids[0], &ids[1]], &[]);
    let diff = String::from_utf8(diff.stdout).unwrap();
    assert!(diff.contains("M /src/evil\\nrestored") && diff.contains("- /src/bad\\xff\\xfename"), "{diff}");
    let snaps = run_checked(&env, "snapshots", &["snapshots"], &[]);
    let snaps = String::from_utf8(snaps.stdout).unwrap();
    assert!(snaps.contains("host\\x1b[31m\\nrestored") && snaps.contains("tag\\x07\\x1b[0m"), "{snaps}");
    run_checked(&env, "forget --dry-run", &["forget", "--keep-last", "1", "--dry-run"], &[]);

    // JSON keeps the name: lossily as text, exactly in `<field>_escaped`.
    let json = run_checked(&env, "ls --json", &["ls", "--json", &ids[0]], &[]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert!(list.iter().any(|e| e["name"] == EVIL), "JSON strings carry control characters in JSON's own escapes");
    let bad = list.iter().find(|e| e["name"] == "bad\u{fffd}\u{fffd}name").expect("lossy name");
    assert_eq!(bad["name_escaped"], "bad\\xff\\xfename");

    // Restore errors name the entry escaped: a directory with content stands
    // where the file must go.
    let target = env.path("target");
    fs::create_dir_all(target.join("src").join(EVIL).join("in-the-way")).unwrap();
    let restore = run_checked(&env, "restore", &["restore", &ids[1], "--target", target.to_str().unwrap()], &[]);
    let stderr = String::from_utf8(restore.stderr).unwrap();
    assert!(stderr.contains("evil\\nrestored snapshot"), "the failed entry is named, escaped: {stderr}");

    // A key slot records the user name: a crafted one is shown escaped.
    let new_pw = env.path("new-pw");
    fs::write(&new_pw, "another password").unwrap();
    let user = "mallory\x1b[1A\rroot";
    run_checked(&env, "key add", &["key", "add", "--new-password-file", new_pw.to_str().unwrap()], &[("USER", user)]);
    let keys = run_checked(&env, "key list", &["key", "list"], &[]);
    assert!(String::from_utf8(keys.stdout).unwrap().contains("mallory\\x1b[1A\\rroot"));

    // Error messages that embed a name are escaped too.
    run_checked(&env, "ls of a missing path", &["ls", &format!("{}:src/{EVIL}/x", ids[1])], &[]);
    run_checked(&env, "snapshot of a missing path", &["snapshot", &format!("{src_s}/{EVIL}-missing")], &[]);
}

// ---- a reader that goes away ----

/// Runs `tstor args` with a stdout whose reader has already gone, as in
/// `tstor ... | head -0`, and checks it ends without a panic.
fn run_with_closed_stdout(env: &Env, args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = env.std_cmd().args(args).stdout(writer).stderr(std::process::Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{args:?} reports the closed pipe as an error: {stderr}");
    out
}

#[test]
fn every_printing_command_ends_quietly_when_its_reader_goes_away() {
    let env = Env::new();
    let empty = Env::new();
    run_with_closed_stdout(&empty, &["init"]);
    assert!(empty.repo().join("config").exists(), "init did its work though nobody read its output");
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("sub/f{i}")), random_bytes(1000, i)).unwrap();
    }
    let src_s = src.to_str().unwrap();
    let out = run_with_closed_stdout(&env, &["snapshot", src_s]);
    assert_eq!(out.status.code(), Some(0), "the snapshot is saved and says so by its exit code");
    fs::write(src.join("sub/f0"), "changed").unwrap();
    run_with_closed_stdout(&env, &["snapshot", "--json", src_s]);
    assert_eq!(env.snapshots_json().len(), 2);

    let index_id = fs::read_dir(env.repo().join("index")).unwrap().next().unwrap().unwrap().file_name();
    let index_id = index_id.to_str().unwrap().to_string();
    let out = env.cmd().args(["cat", "index", &index_id]).output().unwrap();
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pack_id = index["packs"][0]["id"].as_str().unwrap().to_string();
    let first = env.snapshots_json()[0].clone();
    let tree_id = first["tree"].as_str().unwrap().to_string();
    let first_id = first["id"].as_str().unwrap().to_string();
    let key_id = {
        let out = env.cmd().args(["key", "list", "--json"]).output().unwrap();
        let keys: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        keys[0]["id"].as_str().unwrap().to_string()
    };
    let target = env.path("restored");
    let target = target.to_str().unwrap();
    let new_pw = env.path("new-pw");
    fs::write(&new_pw, "another password").unwrap();
    let new_pw = new_pw.to_str().unwrap();

    let commands: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["--version"],
        vec!["snapshot", "--help"],
        vec!["completions", "bash"],
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["ls", "latest"],
        vec!["ls", "-l", "latest"],
        vec!["ls", "--json", "latest"],
        vec!["find", "f*"],
        vec!["find", "--json", "f*"],
        vec!["diff", &first_id, "latest"],
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["cat", "config"],
        vec!["cat", "snapshot", "latest"],
        vec!["cat", "index", &index_id],
        vec!["cat", "pack-header", &pack_id],
        vec!["cat", "tree", &tree_id],
        vec!["cat", "key", &key_id],
        vec!["check"],
        vec!["check", "--json"],
        vec!["restore", "latest", "--target", target],
        vec!["key", "list"],
        vec!["key", "add", "--new-password-file", new_pw],
        vec!["tag", "--add", "t1"],
        vec!["tag", "--json", "--add", "t2"],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["forget", "--json", "--keep-last", "1", "--dry-run"],
        vec!["prune", "--dry-run"],
        vec!["unlock"],
    ];
    for args in &commands {
        run_with_closed_stdout(&env, args);
    }
    // Commands that change the repository still did.
    assert!(fs::metadata(env.path("restored/src/sub/f1")).is_ok(), "restore wrote the files");
    let out = env.cmd().args(["key", "list", "--json"]).output().unwrap();
    assert_eq!(serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap().len(), 2);
}
