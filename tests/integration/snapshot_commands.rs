//! `dump`, `rewrite` and `repair snapshots` end to end. A dumped directory
//! is extracted with the system `tar` (or read back as a zip) and compared
//! with its source: bytes, modes, times, symlinks, hard links. `rewrite`
//! leaves out what the patterns match and nothing else; `repair snapshots`
//! on a repository with deleted packs removes the unreadable files, empties
//! the unreadable directories and names them. Every run that writes leaves
//! a repository `check` accepts; dry runs write nothing.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tstor::backend::local::LocalBackend;
use tstor::backend::Backend;
use tstor::format::Id;
use tstor::repo::Repository;

use crate::common::*;

/// Creates the repository with a cheap key derivation, so that each of
/// the many commands below opens it quickly.
fn fast_init(env: &Env) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
        let kdf = tstor::crypto::kdf::KdfParams { m_kib: 64, t: 1, p: 1 };
        let opts = tstor::repo::InitOptions { kdf, ..Default::default() };
        Repository::init(backend, PASSWORD.as_bytes(), opts).await.unwrap();
    });
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn ok(out: std::process::Output, what: &str) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A tree holding what an archive must carry: a multi-blob file, a name and a
/// symlink target longer than ustar's 100 bytes, a name that is not UTF-8,
/// hard links, a FIFO, special modes, an empty file and directory, and whole-
/// second modification times (what a tar header holds).
fn make_archive_tree(root: &Path) {
    let w = root.join("work");
    let long_dir = w.join("a-directory-whose-name-is-long-enough-to-matter").join("and-another-level-below-it-too");
    fs::create_dir_all(&long_dir).unwrap();
    fs::create_dir_all(w.join("empty")).unwrap();
    fs::create_dir_all(w.join("sticky")).unwrap();
    fs::write(long_dir.join("a-file-name-that-with-its-directories-is-well-past-one-hundred-bytes.txt"), b"long\n")
        .unwrap();
    fs::write(w.join("multi.bin"), random_bytes(3 << 20, 7)).unwrap();
    fs::write(w.join("empty-file"), b"").unwrap();
    fs::write(w.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin1").unwrap();
    fs::write(w.join("linked-a"), b"shared\n").unwrap();
    fs::hard_link(w.join("linked-a"), w.join("sticky/linked-b")).unwrap();
    let long_target = format!("{}/target", "t".repeat(120));
    std::os::unix::fs::symlink(&long_target, w.join("long-link")).unwrap();
    std::os::unix::fs::symlink("multi.bin", w.join("short-link")).unwrap();
    let fifo = std::ffi::CString::new(w.join("pipe").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    fs::set_permissions(w.join("multi.bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(w.join("linked-a"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(w.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    let mut all = Vec::new();
    walk(root, &mut |p, _| all.push(p.to_path_buf()));
    all.sort();
    // Children first, so that setting a file's time does not move its directory's.
    for (i, p) in all.iter().rev().enumerate() {
        set_mtime(p, (1_600_000_000 + i as i64 * 1000) * 1_000_000_000);
    }
    set_mtime(&w, 1_500_000_000 * 1_000_000_000);
}

fn extract_tar(archive: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    let out = std::process::Command::new("tar")
        .args(["-x", "-p", "--numeric-owner", "-f"])
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -x: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_dumped_directory_extracts_with_tar_to_the_same_tree() {
    let env = Env::new();
    fast_init(&env);
    let src = env.path("src");
    make_archive_tree(&src);
    env.snapshot_json(&[src.join("work").as_os_str()]);

    // The whole snapshot: entries are named by their path inside it.
    let tar_path = env.path("all.tar");
    let out = ok(env.cmd().args(["dump", "latest"]).output().unwrap(), "dump latest");
    fs::write(&tar_path, &out.stdout).unwrap();
    let all = env.path("all");
    extract_tar(&tar_path, &all);
    assert_same_tree(&src, &all);

    // A directory inside it: its entries, under their snapshot paths.
    let out = ok(env.cmd().args(["dump", "latest:work/sticky", "--archive", "tar"]).output().unwrap(), "dump sub");
    fs::write(&tar_path, &out.stdout).unwrap();
    let sub = env.path("sub");
    extract_tar(&tar_path, &sub);
    let linked = sub.join("work/sticky/linked-b");
    assert_eq!(fs::read(&linked).unwrap(), b"shared\n");
    assert!(!sub.join("work/multi.bin").exists(), "only the dumped directory's entries");

    // An archive is not written to a terminal (`script` gives the command one).
    let tstor = env.std_cmd();
    let mut script = std::process::Command::new("script");
    script.env_clear();
    for (k, v) in tstor.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    let line = format!("{} dump latest", tstor.get_program().to_string_lossy());
    let out = script.args(["-q", "-e", "-c", &line, "/dev/null"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("standard output is a terminal"));

    // --target writes the archive to a file and prints the summary.
    let target = env.path("t.tar");
    let out =
        ok(env.cmd().args(["dump", "--json", "latest:work", "--target"]).arg(&target).output().unwrap(), "dump -t");
    let summary = json_of(&out);
    assert_eq!(summary["written_as"], "tar");
    assert_eq!(summary["hardlinks"], 1, "{summary}");
    assert_eq!(summary["symlinks"], 2, "{summary}");
    assert_eq!(summary["special"], 1, "{summary}");
    assert_eq!(summary["bytes"].as_u64(), Some((3 << 20) + 5 + 6 + 7), "a hard link's content counts once");
    let t = env.path("t");
    extract_tar(&target, &t);
    assert_same_tree(&src.join("work"), &t.join("work"));
}

/// With TSTOR_SCALE_TESTS=1 the dumped file is far larger than the bound.
fn dumped_file_len() -> usize {
    if std::env::var_os("TSTOR_SCALE_TESTS").is_some_and(|v| v == "1") {
        256 << 20
    } else {
        12 << 20
    }
}

#[test]
fn a_dumped_file_is_its_bytes_read_blob_by_blob_in_bounded_memory() {
    let env = Env::new();
    fast_init(&env);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let len = dumped_file_len();
    fs::write(src.join("big.bin"), random_bytes(len, 11)).unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    env.snapshot_json(&[src.as_os_str()]);

    let mut cmd = env.std_cmd();
    cmd.args(["dump", "latest:src/big.bin", "--target"]).arg(env.path("out.bin"));
    let m = run_measured_cmd(&env, cmd, true);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert!(fs::read(env.path("out.bin")).unwrap() == fs::read(src.join("big.bin")).unwrap(), "same bytes");
    fs::remove_file(env.path("out.bin")).unwrap();
    // The repository opens with a 64 KiB key derivation here, so the peak
    // is the dump's own: a few blobs in flight and the output buffer.
    eprintln!("peak memory dumping a {} MiB file: {} MiB", len >> 20, m.peak_rss_kib >> 10);
    assert!(m.peak_rss_kib < 64 << 10, "dump of a {} MiB file peaked at {} KiB", len >> 20, m.peak_rss_kib);

    let out = ok(env.cmd().args(["dump", "latest:src/big.bin"]).output().unwrap(), "dump to stdout");
    assert_eq!(out.stdout.len(), len);

    // A symlink is neither a file nor a directory; a missing path is named.
    let out = env.cmd().args(["dump", "latest:src/link"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a symlink"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.cmd().args(["dump", "latest:src/nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("src/nope"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_zip_dump_holds_the_files_permissions_and_symlinks() {
    let env = Env::new();
    fast_init(&env);
    let src = env.path("src");
    make_archive_tree(&src);
    env.snapshot_json(&[src.join("work").as_os_str()]);
    let zip_path = env.path("w.zip");
    let out = env.cmd().args(["dump", "--json", "latest:work", "--archive", "zip", "-t"]).arg(&zip_path).output();
    let summary = json_of(&ok(out.unwrap(), "dump zip"));
    assert_eq!(summary["written_as"], "zip");
    let skipped: Vec<&str> =
        summary["skipped"].as_array().unwrap().iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert_eq!(skipped, ["work/pipe"], "a FIFO cannot be zipped and is named");

    let mut archive = zip::ZipArchive::new(fs::File::open(&zip_path).unwrap()).unwrap();
    let mut seen = 0;
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let name = f.name().to_string();
        let rel = name.trim_end_matches('/').strip_prefix("work/").unwrap().to_string();
        let source = src.join("work").join(rel.replace('\u{FFFD}', "\u{e9}"));
        let mode = f.unix_mode().unwrap();
        match rel.as_str() {
            "multi.bin" | "linked-a" | "sticky/linked-b" => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).unwrap();
                assert_eq!(bytes, fs::read(&source).unwrap(), "{name}");
                // Zip holds the permission bits, not setuid, setgid or sticky.
                assert_eq!(mode & 0o7777, fs::metadata(&source).unwrap().permissions().mode() & 0o777, "{name}");
                seen += 1;
            }
            "short-link" => {
                assert_eq!(mode & 0o170000, 0o120000, "stored as a symlink");
                let mut target = String::new();
                f.read_to_string(&mut target).unwrap();
                assert_eq!(target, "multi.bin");
                seen += 1;
            }
            "sticky" => {
                assert!(f.is_dir());
                assert_eq!(mode & 0o7777, 0o777);
                seen += 1;
            }
            _ => {}
        }
    }
    assert_eq!(seen, 5, "every checked entry is in the zip");
}

#[test]
fn dump_latest_honours_host_path_and_tag_filters() {
    let env = Env::new();
    fast_init(&env);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (host, tag, content) in [("h1", "t1", "one"), ("h2", "t2", "two")] {
        fs::write(src.join("f"), content).unwrap();
        env.snapshot_json(&[
            src.as_os_str(),
            OsStr::new("--host"),
            OsStr::new(host),
            OsStr::new("--tag"),
            OsStr::new(tag),
        ]);
    }
    let dump = |args: &[&str]| {
        let out = ok(env.cmd().arg("dump").arg("latest:src/f").args(args).output().unwrap(), "dump");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(dump(&[]), "two");
    assert_eq!(dump(&["--host", "h1"]), "one");
    assert_eq!(dump(&["--tag", "t1"]), "one");
    assert_eq!(dump(&["--path", src.to_str().unwrap(), "--host", "h2"]), "two");
    let out = env.cmd().args(["dump", "latest:src/f", "--host", "h3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no snapshot matches"));
}

/// Restores snapshot `id` and lists its files and directories (relative paths).
fn restored(env: &Env, id: &str, label: &str) -> Vec<String> {
    let target = env.path(label);
    ok(env.cmd().args(["restore", id, "--target"]).arg(&target).output().unwrap(), "restore");
    let mut out = Vec::new();
    walk(&target, &mut |p, _| out.push(p.strip_prefix(&target).unwrap().to_string_lossy().into_owned()));
    out.sort();
    fs::remove_dir_all(&target).unwrap();
    out
}

fn snapshot_by_id(env: &Env, id: &str) -> serde_json::Value {
    env.snapshots_json().into_iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no snapshot {id}"))
}

#[test]
fn rewrite_leaves_out_what_the_patterns_match_and_keeps_the_rest() {
    let env = Env::new();
    fast_init(&env);
    let src = env.path("src");
    let w = src.join("work");
    for d in ["build", "notes", "keep"] {
        fs::create_dir_all(w.join(d)).unwrap();
    }
    fs::write(w.join("build/out.o"), "o").unwrap();
    fs::write(w.join("main.o"), "o").unwrap();
    fs::write(w.join("README.MD"), "readme").unwrap();
    fs::write(w.join("notes/secret.txt"), "s").unwrap();
    fs::write(w.join("keep/a.txt"), "a").unwrap();
    let other = src.join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("b.txt"), "b").unwrap();
    let a = env.snapshot_json(&[w.as_os_str()])["snapshot_id"].as_str().unwrap().to_string();
    let b = env.snapshot_json(&[other.as_os_str(), OsStr::new("--tag"), OsStr::new("t")])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let patterns = env.path("patterns");
    fs::write(&patterns, "# comment\nnotes/\n").unwrap();

    // A dry run names what would go and writes nothing.
    let before = env.repo_listing();
    let out = env.cmd().args(["rewrite", "--json", "--dry-run", "--exclude", "*.o"]).output().unwrap();
    let report = json_of(&ok(out, "rewrite --dry-run"));
    assert_eq!(report["rewritten"].as_array().unwrap().len(), 1);
    assert_eq!(report["unchanged"], 1, "the snapshot nothing matches in is left alone: {report}");
    let removed: Vec<&str> =
        report["rewritten"][0]["removed"].as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(removed, ["work/build/out.o", "work/main.o"]);
    assert!(report["rewritten"][0]["new"].is_null());
    assert_eq!(env.repo_listing(), before, "a dry run writes nothing");

    // --exclude, --iexclude and --exclude-file together; no --forget: the original stays.
    let out = env
        .cmd()
        .args(["rewrite", "--json", "--exclude", "*.o", "--iexclude", "*.md", "--exclude-file"])
        .arg(&patterns)
        .output()
        .unwrap();
    let report = json_of(&ok(out, "rewrite"));
    let new = report["rewritten"][0]["new"].as_str().unwrap().to_string();
    assert_eq!(report["rewritten"][0]["original"], a.as_str());
    assert_eq!(report["rewritten"][0]["forgotten"], false);
    assert_eq!(env.snapshots_json().len(), 3);
    let snap = snapshot_by_id(&env, &new);
    assert_eq!(snap["original"], a.as_str());
    assert_eq!(snap["tags"], serde_json::json!(["rewrite"]));
    assert_eq!(restored(&env, &new, "r1"), ["work", "work/build", "work/keep", "work/keep/a.txt"]);
    assert_eq!(restored(&env, &a, "r0").len(), 9, "the original is intact");

    // Rewriting what no longer matches changes nothing.
    let out = env.cmd().args(["rewrite", "--json", &new[..12], "--exclude", "*.o"]).output().unwrap();
    let report = json_of(&ok(out, "rewrite again"));
    assert_eq!((report["rewritten"].as_array().unwrap().len(), report["unchanged"].as_u64()), (0, Some(1)));

    // --forget, --iexclude-file, and a filter choosing the snapshots: the
    // chain keeps the first original.
    let ipatterns = env.path("ipatterns");
    fs::write(&ipatterns, "/**/WORK/BUILD\n").unwrap();
    let out = env
        .cmd()
        .args(["rewrite", "--json", "--forget", "--tag", "rewrite", "--iexclude-file"])
        .arg(&ipatterns)
        .output()
        .unwrap();
    let report = json_of(&ok(out, "rewrite --forget"));
    assert_eq!(report["snapshots"], 1, "only the snapshot tagged `rewrite`");
    let newer = report["rewritten"][0]["new"].as_str().unwrap().to_string();
    assert_eq!(report["rewritten"][0]["forgotten"], true);
    let ids: Vec<String> = env.snapshots_json().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert!(!ids.contains(&new) && ids.contains(&newer) && ids.contains(&a) && ids.contains(&b), "{ids:?}");
    assert_eq!(snapshot_by_id(&env, &newer)["original"], a.as_str());
    assert_eq!(restored(&env, &newer, "r2"), ["work", "work/keep", "work/keep/a.txt"]);
    ok(env.cmd().arg("check").output().unwrap(), "check after rewrite");

    // Nothing to exclude is an error, not a silent copy.
    let out = env.cmd().args(["rewrite"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

fn pack_path(env: &Env, id: &Id) -> PathBuf {
    let hex = id.to_hex();
    let mut found = None;
    walk(&env.repo().join("packs"), &mut |p, m| {
        if m.is_file() && p.file_name().and_then(|n| n.to_str()) == Some(hex.as_str()) {
            found = Some(p.to_path_buf());
        }
    });
    found.expect("pack file")
}

/// The pack holding the root tree of snapshot `nth` (oldest first), and the
/// pack holding the first data blob of `file` in it.
fn packs_of(env: &Env, nth: usize, file: &str) -> (Id, Id) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
        let repo = Repository::open(backend, PASSWORD.as_bytes(), None).await.unwrap();
        let index = repo.load_index().await.unwrap();
        let (snaps, _) = repo.snapshots().await.unwrap();
        let root = snaps[nth].1.tree;
        let mut tree = root;
        let parts: Vec<&str> = file.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let t = repo.load_tree_from_storage(&index, &tree).await.unwrap();
            let node = t.find(part.as_bytes()).unwrap().clone();
            if i + 1 == parts.len() {
                return (index.lookup(&root).unwrap().pack, index.lookup(&node.content[0]).unwrap().pack);
            }
            tree = node.subtree.unwrap();
        }
        unreachable!()
    })
}

#[test]
fn repair_snapshots_removes_unreadable_files_and_empties_unreadable_directories() {
    let env = Env::new();
    fast_init(&env);
    let w = env.path("src/work");
    fs::create_dir_all(w.join("a")).unwrap();
    fs::create_dir_all(w.join("b")).unwrap();
    fs::write(w.join("a/f1"), "f1").unwrap();
    fs::write(w.join("b/g1"), "g1").unwrap();
    let first = env.snapshot_json(&[w.as_os_str()])["snapshot_id"].as_str().unwrap().to_string();
    // The second run stores only b's new tree and big.bin: a's tree stays in the first run's pack.
    fs::write(w.join("b/big.bin"), random_bytes(2 << 20, 3)).unwrap();
    let second = env.snapshot_json(&[w.as_os_str()])["snapshot_id"].as_str().unwrap().to_string();
    let (first_trees, _) = packs_of(&env, 0, "work/a/f1");
    let (second_trees, big_data) = packs_of(&env, 1, "work/b/big.bin");
    assert_ne!(first_trees, second_trees);
    fs::remove_file(pack_path(&env, &first_trees)).unwrap();
    fs::remove_file(pack_path(&env, &big_data)).unwrap();
    // The index first (as restic asks): without the cache's copies the lost trees stay lost.
    let out = env.cmd().args(["--no-cache", "repair", "index"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "blobs were lost: {}", String::from_utf8_lossy(&out.stderr));

    // A dry run reports and writes nothing.
    let before = env.repo_listing();
    let out = env.cmd().args(["--no-cache", "repair", "snapshots", "--dry-run", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the first snapshot cannot be repaired");
    let dry = json_of(&out);
    assert_eq!(env.repo_listing(), before, "a dry run writes nothing");
    assert_eq!(dry["rewritten"].as_array().unwrap().len(), 1);

    let out = env.cmd().args(["--no-cache", "repair", "snapshots", "--forget", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["unrepairable"][0]["snapshot"], first.as_str(), "its root tree is gone: {report}");
    assert_eq!(report["unrepairable"][0]["forgotten"], true);
    let rewritten = &report["rewritten"][0];
    assert_eq!(rewritten["original"], second.as_str());
    let removed: Vec<(&str, &str)> = rewritten["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["path"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert_eq!(removed[0].0, "work/a");
    assert!(removed[0].1.contains("replaced by an empty directory"), "{}", removed[0].1);
    assert_eq!(removed[1].0, "work/b/big.bin");
    assert!(removed[1].1.contains("data blobs are missing"), "{}", removed[1].1);
    assert_eq!(dry["rewritten"][0]["removed"], rewritten["removed"], "the dry run said the same");

    let new = rewritten["new"].as_str().unwrap();
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 1, "both originals are gone");
    assert_eq!(snaps[0]["original"], second.as_str());
    assert_eq!(snaps[0]["tags"], serde_json::json!(["repaired"]));
    assert_eq!(restored(&env, new, "r"), ["work", "work/a", "work/b", "work/b/g1"]);
    ok(env.cmd().args(["--no-cache", "check"]).output().unwrap(), "check after repair snapshots");

    // Nothing left to repair.
    let out =
        env.cmd().args(["--no-cache", "repair", "snapshots", "--json", "--host"]).arg(tstor::host::hostname()).output();
    let again = json_of(&ok(out.unwrap(), "repair snapshots again"));
    assert_eq!((again["rewritten"].as_array().unwrap().len(), again["unchanged"].as_u64()), (0, Some(1)));
}

#[test]
fn dump_reads_from_a_telegram_repository() {
    let tg = crate::telegram::Tg::start("telegram:me");
    let out = tg.cmd().arg("init").output().unwrap();
    ok(out, "init on the loopback server");
    let src = tg.env.path("src");
    make_archive_tree(&src);
    tg.snapshot(&src.join("work"));

    let out = ok(tg.cmd().args(["dump", "latest"]).output().unwrap(), "dump from Telegram");
    let tar_path = tg.env.path("all.tar");
    fs::write(&tar_path, &out.stdout).unwrap();
    let all = tg.env.path("all");
    extract_tar(&tar_path, &all);
    assert_same_tree(&src, &all);

    let out = ok(tg.cmd().args(["dump", "latest:work/multi.bin", "--host"]).arg(hostname()).output().unwrap(), "file");
    assert!(out.stdout == fs::read(src.join("work/multi.bin")).unwrap(), "the file's bytes");
}

/// The host name snapshots record by default.
fn hostname() -> String {
    tstor::host::hostname()
}

/// A rewrite that storage stops part way through deletes no original and
/// leaves a repository `check` accepts: packs and index come before the new
/// snapshot objects, and originals go only after all of them are saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_that_fails_part_way_forgets_no_original() {
    use tstor::archiver::{ExcludeOptions, Exclusions, NoProgress, SnapshotOptions};
    use tstor::backend::faults::FaultyBackend;
    use tstor::backend::memory::MemoryBackend;
    use tstor::crypto::kdf::KdfParams;
    use tstor::ops::check::{NoCheckProgress, VerifyScope};
    use tstor::ops::rewrite::RewriteTarget;
    use tstor::repo::InitOptions;

    let tmp = tempfile::tempdir().unwrap();
    let mut sources = Vec::new();
    for name in ["one", "two"] {
        let dir = tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("keep.txt"), name).unwrap();
        fs::write(dir.join("drop.o"), name).unwrap();
        sources.push(dir);
    }
    let faulty = Arc::new(FaultyBackend::new(MemoryBackend::new()));
    let backend: Arc<dyn Backend> = faulty.clone();
    let init = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
    let repo = Repository::init(backend, b"pw", init).await.unwrap();
    let mut originals = Vec::new();
    for src in &sources {
        let outcome =
            tstor::ops::snapshot(&repo, SnapshotOptions::new(vec![src.clone()]), Arc::new(NoProgress)).await.unwrap();
        originals.push(outcome.id);
    }
    let rules = Exclusions::new(&ExcludeOptions { patterns: vec!["*.o".into()], ..Default::default() }).unwrap();
    let target = RewriteTarget { forget: true, ..Default::default() };
    // Storage fails after 1, 2, 3... more puts, until a run gets through.
    // After every failed run each original is still there or has its
    // rewritten copy saved, and the repository checks clean.
    let mut budget = 1;
    loop {
        faulty.set_put_budget(Some(budget));
        let result = tstor::ops::rewrite::rewrite(&repo, &target, &rules).await;
        faulty.set_put_budget(None);
        if result.is_ok() {
            break;
        }
        let err = result.unwrap_err();
        assert!(err.to_string().contains("injected write failure"), "{err}");
        let (snaps, bad) = repo.snapshots().await.unwrap();
        assert!(bad.is_empty());
        for o in &originals {
            let kept = snaps.iter().any(|(id, s)| id == o || s.original == Some(*o));
            assert!(kept, "after a failure with a budget of {budget} puts, snapshot {o} is lost");
        }
        let report = tstor::ops::check(&repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
        assert!(report.ok(), "budget {budget}: {:?}", report.problems);
        budget += 1;
        assert!(budget < 20, "a rewrite of two snapshots needs far fewer puts");
    }
    assert!(budget > 3, "the first runs failed part way");

    // The run that got through forgot every original.
    let (snaps, _) = repo.snapshots().await.unwrap();
    assert_eq!(snaps.len(), 2, "one rewritten copy of each");
    assert!(snaps.iter().all(|(_, s)| s.original.is_some()), "only rewritten snapshots remain");
    let check = tstor::ops::check(&repo, VerifyScope::All, Arc::new(NoCheckProgress)).await.unwrap();
    assert!(check.ok(), "{:?}", check.problems);
}
