//! Looking into and maintaining a repository through the CLI: `ls`, `find`,
//! `diff`, `stats`, `cat`, `tag` and `key`, checked against known trees.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn stdout_of(env: &Env, args: &[&str]) -> String {
    let out = env.cmd().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn json_of(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = stdout_of(env, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed invalid JSON ({e}): {text}"))
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn time(s: &str) -> i64 {
    tstor::time::parse_time(s, &tstor::time::zone(true)).unwrap()
}

fn write(path: &Path, content: impl AsRef<[u8]>, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.snapshots_json().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// `data/`: a.txt, a symlink to it, a name that is not UTF-8, and sub/b.txt.
fn small_tree(root: &Path) {
    let d = root.join("data");
    fs::create_dir_all(d.join("sub")).unwrap();
    write(&d.join("a.txt"), "alpha\n", 0o644);
    write(&d.join("sub/b.txt"), "bravo bravo\n", 0o640);
    write(&d.join(OsStr::from_bytes(b"caf\xe9.bin")), "x", 0o600);
    std::os::unix::fs::symlink("a.txt", d.join("link")).unwrap();
    fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    for p in ["data/a.txt", "data/sub/b.txt", "data/link", "data/sub", "data"] {
        set_mtime(&root.join(p), time("2021-03-04 05:06:07"));
    }
}

#[test]
fn ls_lists_text_long_and_json_with_symlinks_and_raw_names() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    small_tree(&src);
    env.snapshot_json(&[src.join("data").as_os_str()]);

    let all = stdout_of(&env, &["ls", "latest"]);
    assert_eq!(
        lines(&all),
        ["/data", "/data/a.txt", "/data/caf\\xe9.bin", "/data/link", "/data/sub", "/data/sub/b.txt"]
    );
    let flat = stdout_of(&env, &["ls", "-n", "latest:data"]);
    assert_eq!(lines(&flat), ["/data/a.txt", "/data/caf\\xe9.bin", "/data/link", "/data/sub"]);
    assert_eq!(lines(&stdout_of(&env, &["ls", "latest:data/sub"])), ["/data/sub/b.txt"]);
    assert_eq!(lines(&stdout_of(&env, &["ls", "latest:data/a.txt"])), ["/data/a.txt"]);

    let long = stdout_of(&env, &["ls", "-l", "latest:data"]);
    let meta = fs::symlink_metadata(src.join("data/a.txt")).unwrap();
    let a_line = long.lines().find(|l| l.ends_with("/data/a.txt")).expect("a.txt listed");
    let fields: Vec<&str> = a_line.split_whitespace().collect();
    assert_eq!(fields[0], "-rw-r--r--");
    assert_eq!(fields[1], meta.uid().to_string());
    assert_eq!(fields[2], meta.gid().to_string());
    assert_eq!(fields[3], "6");
    assert_eq!(format!("{} {}", fields[4], fields[5]), "2021-03-04 05:06:07");
    let link_line = long.lines().find(|l| l.contains("/data/link")).unwrap();
    assert!(link_line.starts_with('l') && link_line.ends_with("/data/link -> a.txt"), "{link_line}");
    assert!(long.lines().any(|l| l.starts_with("drwxr-xr-x") && l.ends_with("/data/sub")), "{long}");
    assert!(long.lines().any(|l| l.starts_with("-rw-------") && l.ends_with(".bin")), "{long}");

    let v = json_of(&env, &["ls", "latest"]);
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 6);
    let by_path = |p: &str| entries.iter().find(|e| e["path"] == p).unwrap_or_else(|| panic!("{p} missing: {v}"));
    let a = by_path("/data/a.txt");
    assert_eq!(a["type"], "file");
    assert_eq!(a["size"], 6);
    assert_eq!(a["mode"], 0o644);
    assert_eq!(a["permissions"], "-rw-r--r--");
    assert_eq!(a["uid"], meta.uid());
    assert_eq!(a["gid"], meta.gid());
    assert_eq!(a["mtime"], "2021-03-04T05:06:07+00:00");
    assert_eq!(a["mtime_ns"], time("2021-03-04 05:06:07"));
    assert_eq!(a["content_blobs"], 1);
    assert_eq!(a["link_target"], Value::Null);
    let link = by_path("/data/link");
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["link_target"], "a.txt");
    assert_eq!(link["content_blobs"], 0);
    let raw = by_path("/data/caf\u{FFFD}.bin");
    assert_eq!(raw["path_escaped"], "/data/caf\\xe9.bin");
    assert_eq!(raw["name_escaped"], "caf\\xe9.bin");
    assert_eq!(by_path("/data/sub")["type"], "dir");
    assert!(a.get("path_escaped").is_none(), "only names that are not UTF-8 are escaped");

    env.cmd().args(["ls", "latest:data/nope"]).assert().failure();
    env.cmd().args(["ls", "latest:data/a.txt/x"]).assert().failure();
    env.cmd().args(["ls", "ffffffffff"]).assert().failure();
}

#[test]
fn find_matches_names_paths_and_modification_times() {
    let env = Env::new();
    env.init();
    let d = env.path("src/data");
    fs::create_dir_all(d.join("sub")).unwrap();
    for (name, t) in [
        ("old.txt", "2020-01-01 12:00:00"),
        ("mid.txt", "2021-06-15"),
        ("new.log", "2022-03-01 00:00:01"),
        ("sub/deep.txt", "2021-01-10 08:00:00"),
    ] {
        write(&d.join(name), name.repeat(3), 0o644);
        set_mtime(&d.join(name), time(t));
    }
    set_mtime(&d.join("sub"), time("2019-01-01"));
    set_mtime(&d, time("2019-01-01"));
    env.snapshot_json(&[d.as_os_str()]);
    write(&d.join("extra.txt"), "extra", 0o644);
    set_mtime(&d.join("extra.txt"), time("2023-01-01"));
    set_mtime(&d, time("2019-01-01"));
    env.snapshot_json(&[d.as_os_str()]);
    let ids = snapshot_ids(&env);

    let found = json_of(&env, &["find", "*.txt"]);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 3 + 4, "{found:?}");
    let first: Vec<&str> =
        found.iter().filter(|m| m["snapshot"] == ids[0].as_str()).map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!(first, ["/data/mid.txt", "/data/old.txt", "/data/sub/deep.txt"]);
    let mid = &found[0];
    assert_eq!(mid["size"], 21);
    assert_eq!(mid["mtime"], "2021-06-15T00:00:00+00:00");
    assert_eq!(mid["type"], "file");

    let text = stdout_of(&env, &["find", "*.log", "deep*"]);
    assert_eq!(text.lines().filter(|l| l.ends_with("/data/new.log")).count(), 2);
    assert_eq!(text.lines().filter(|l| l.ends_with("/data/sub/deep.txt")).count(), 2);
    assert!(text.lines().any(|l| l.starts_with(&ids[0][..8])), "{text}");
    assert!(text.lines().any(|l| l.contains("2022-03-01 00:00:01")), "{text}");

    let by_path = json_of(&env, &["find", "--path", "data/*.txt", "--snapshot", &ids[1][..10]]);
    let paths: Vec<&str> = by_path.as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/data/extra.txt", "/data/mid.txt", "/data/old.txt"]);
    // A subtree without matches in the first snapshot is skipped in the second; matches beside it are found.
    let extra = json_of(&env, &["find", "extra*"]);
    let extra: Vec<&str> = extra.as_array().unwrap().iter().map(|m| m["snapshot"].as_str().unwrap()).collect();
    assert_eq!(extra, [ids[1].as_str()]);
    let deep = json_of(&env, &["find", "--path", "/data/**/deep.txt", "--snapshot", "latest"]);
    assert_eq!(deep.as_array().unwrap().len(), 1);

    let window =
        json_of(&env, &["find", "*", "--newer", "2021-01-01", "--older", "2021-12-31 23:59:59", "--snapshot", &ids[0]]);
    let paths: Vec<&str> = window.as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/data/mid.txt", "/data/sub/deep.txt"]);
    let newer = json_of(&env, &["find", "*", "--newer", "2022-03-01 00:00:00"]);
    let paths: Vec<&str> = newer.as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/data/new.log", "/data/extra.txt", "/data/new.log"]);

    env.cmd().args(["find", "*", "--newer", "2021-02-30"]).assert().failure();
    env.cmd().args(["find", "*", "--older", "yesterday"]).assert().failure();
    env.cmd().args(["find", "[", "--snapshot", "latest"]).assert().failure();
}

#[test]
fn diff_shows_each_kind_of_change_and_skips_identical_subtrees() {
    let env = Env::new();
    env.init();
    let d = env.path("src/d");
    fs::create_dir_all(d.join("untouched/inner")).unwrap();
    write(&d.join("keep.txt"), "keep", 0o644);
    write(&d.join("mod.txt"), "before", 0o644);
    write(&d.join("chmod.txt"), "same", 0o644);
    write(&d.join("gone.txt"), "going away", 0o644);
    write(&d.join("becomes_dir"), "a file for now", 0o644);
    write(&d.join("untouched/inner/file"), "still here", 0o644);
    std::os::unix::fs::symlink("keep.txt", d.join("link")).unwrap();
    env.snapshot_json(&[d.as_os_str()]);

    write(&d.join("mod.txt"), "after, and longer", 0o644);
    fs::set_permissions(d.join("chmod.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(d.join("gone.txt")).unwrap();
    fs::remove_file(d.join("becomes_dir")).unwrap();
    fs::create_dir(d.join("becomes_dir")).unwrap();
    write(&d.join("becomes_dir/child"), "child!", 0o644);
    fs::remove_file(d.join("link")).unwrap();
    std::os::unix::fs::symlink("mod.txt", d.join("link")).unwrap();
    write(&d.join("new.txt"), "brand new", 0o644);
    env.snapshot_json(&[d.as_os_str()]);
    let ids = snapshot_ids(&env);

    let text = stdout_of(&env, &["diff", &ids[0], &ids[1]]);
    let changes: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(
        changes,
        [
            "T /d/becomes_dir/",
            "+ /d/becomes_dir/child",
            "U /d/chmod.txt",
            "- /d/gone.txt",
            "U /d/link",
            "M /d/mod.txt",
            "+ /d/new.txt",
        ],
        "{text}"
    );
    let summary = text.lines().last().unwrap();
    assert!(
        summary.contains("2 added")
            && summary.contains("1 removed")
            && summary.contains("1 modified")
            && summary.contains("1 type changed")
            && summary.contains("2 metadata only"),
        "{summary}"
    );

    let v = json_of(&env, &["diff", &ids[0][..8], "latest"]);
    assert_eq!(v["a"], ids[0].as_str());
    assert_eq!(v["b"], ids[1].as_str());
    let t = &v["totals"];
    assert_eq!((t["added"].as_u64(), t["removed"].as_u64()), (Some(2), Some(1)));
    assert_eq!((t["modified"].as_u64(), t["type_changed"].as_u64()), (Some(1), Some(1)));
    assert_eq!(t["metadata_changed"], 2);
    assert_eq!(t["bytes_added"], ("child!".len() + "brand new".len()) as u64);
    assert_eq!(t["bytes_removed"], "going away".len() as u64);
    assert!(t["identical_subtrees_skipped"].as_u64().unwrap() >= 1, "untouched/ is skipped by tree id");
    let changes = v["changes"].as_array().unwrap();
    let chmod = changes.iter().find(|c| c["path"] == "/d/chmod.txt").unwrap();
    assert_eq!(chmod["change"], "U");
    assert_eq!(chmod["fields"], serde_json::json!(["mode"]));
    let link = changes.iter().find(|c| c["path"] == "/d/link").unwrap();
    assert!(link["fields"].as_array().unwrap().contains(&"symlink_target".into()), "{link}");
    let typed = changes.iter().find(|c| c["change"] == "T").unwrap();
    assert_eq!((typed["old_type"].as_str(), typed["type"].as_str()), (Some("file"), Some("dir")));

    // The other way round, and a snapshot against itself.
    let back = json_of(&env, &["diff", &ids[1], &ids[0]]);
    assert_eq!((back["totals"]["added"].as_u64(), back["totals"]["removed"].as_u64()), (Some(1), Some(2)));
    let same = json_of(&env, &["diff", &ids[0], &ids[0]]);
    assert!(same["changes"].as_array().unwrap().is_empty());
    assert_eq!(same["totals"]["identical_subtrees_skipped"], 1);
    // Paths inside the snapshots.
    let sub = json_of(&env, &["diff", &format!("{}:d/untouched", ids[0]), &format!("{}:d/untouched", ids[1])]);
    assert!(sub["changes"].as_array().unwrap().is_empty());
    env.cmd().args(["diff", &format!("{}:d/keep.txt", ids[0]), &ids[1]]).assert().failure();
}

#[test]
fn stats_counts_restore_dedup_and_stored_sizes() {
    let env = Env::new();
    env.init();
    let d = env.path("src/data");
    fs::create_dir_all(&d).unwrap();
    let text_a: String = (0..30_000).map(|i| format!("line {i:06} of a text file\n")).collect();
    let text_b: String = (0..2_000).map(|i| format!("another line {i}\n")).collect();
    write(&d.join("a.txt"), &text_a, 0o644);
    write(&d.join("copy-of-a.txt"), &text_a, 0o644);
    write(&d.join("b.txt"), &text_b, 0o644);
    std::os::unix::fs::symlink("a.txt", d.join("link")).unwrap();
    let (a, b) = (text_a.len() as u64, text_b.len() as u64);
    env.snapshot_json(&[d.as_os_str()]);
    env.snapshot_json(&[d.as_os_str()]);
    let ids = snapshot_ids(&env);
    assert_eq!(ids.len(), 2);

    let s = json_of(&env, &["stats"]);
    assert_eq!(s["mode"], "restore-size");
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["files"], 6);
    assert_eq!(s["others"], 2);
    assert_eq!(s["restore_size"], 2 * (2 * a + b));
    assert_eq!(s["total_size"], s["restore_size"]);
    assert_eq!(s["total_count"], 6);
    assert_eq!(s["dedup_size"], a + b, "identical files and snapshots are stored once");
    let ratio = s["compression_ratio"].as_f64().unwrap();
    assert!(ratio > 1.5, "text compresses: {ratio}");
    assert!(s["referenced_stored_size"].as_u64().unwrap() < a + b);
    let mut packs = (0u64, 0u64);
    walk(&env.repo().join("packs"), &mut |_, m| {
        if m.is_file() {
            packs.0 += 1;
            packs.1 += m.len();
        }
    });
    assert_eq!((s["packs"].as_u64().unwrap(), s["stored_size"].as_u64().unwrap()), packs);
    assert_eq!(s["missing_blobs"], 0);

    let raw = json_of(&env, &["stats", "--mode", "raw-data"]);
    assert_eq!(raw["mode"], "raw-data");
    assert_eq!(raw["total_size"], raw["referenced_stored_size"]);
    assert_eq!(raw["total_count"], raw["data_blobs"].as_u64().unwrap() + raw["tree_blobs"].as_u64().unwrap());
    assert_eq!(raw["dedup_size"], a + b);

    let one = json_of(&env, &["stats", &ids[0][..8]]);
    assert_eq!(one["snapshots"], 1);
    assert_eq!(one["restore_size"], 2 * a + b);
    assert_eq!(one["dedup_size"], a + b);

    let text = stdout_of(&env, &["stats"]);
    assert!(text.contains("restore size") && text.contains("compression ratio"), "{text}");
    env.cmd().args(["stats", "--mode", "blobs"]).assert().failure();
    env.cmd().args(["stats", "0000000000"]).assert().failure();
}

#[test]
fn cat_prints_every_kind_of_object_as_json() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    small_tree(&src);
    let summary = env.snapshot_json(&[src.join("data").as_os_str()]);
    let snap_id = summary["snapshot_id"].as_str().unwrap();

    let config = json_of(&env, &["cat", "config"]);
    assert_eq!(config["repo_id"].as_str().unwrap().len(), 64);
    assert!(config["chunker"]["avg"].as_u64().unwrap() > 0);

    let snap = json_of(&env, &["cat", "snapshot", "latest"]);
    assert_eq!(snap["id"], snap_id);
    assert_eq!(snap["paths"][0], src.join("data").display().to_string());
    let tree = json_of(&env, &["cat", "tree", &snap["tree"].as_str().unwrap()[..12]]);
    assert_eq!(tree["nodes"][0]["name"], "data");
    assert_eq!(tree["nodes"][0]["type"], "dir");

    let index_id = fs::read_dir(env.repo().join("index")).unwrap().next().unwrap().unwrap().file_name();
    let index_id = index_id.to_str().unwrap();
    let index = json_of(&env, &["cat", "index", &index_id[..10]]);
    assert_eq!(index["id"], index_id);
    let pack = &index["packs"][0];
    let header = json_of(&env, &["cat", "pack-header", pack["id"].as_str().unwrap()]);
    assert_eq!(header["blobs"], pack["blobs"], "the pack header agrees with the index");
    assert_eq!(header["size"], pack["size"]);

    let keys = json_of(&env, &["key", "list"]);
    let key_id = keys[0]["id"].as_str().unwrap();
    let key = json_of(&env, &["cat", "key", &key_id[..8]]);
    assert_eq!(key["id"], key_id);
    assert_eq!(key["kdf"], "argon2id");
    assert_eq!(key["current"], true);
    assert!(key["hostname"].is_string() && key["username"].is_string() && key["created_ns"].is_i64());
    let fields: Vec<&String> = key.as_object().unwrap().keys().collect();
    assert!(fields.iter().all(|f| !f.contains("master") && !f.contains("secret")), "{fields:?}");

    env.cmd().args(["cat", "blob", "00"]).assert().failure();
    env.cmd().args(["cat", "config", "00"]).assert().failure();
    env.cmd().args(["cat", "index"]).assert().failure();
    env.cmd().args(["cat", "index", "not-hex"]).assert().failure();
}

#[test]
fn tag_adds_removes_and_sets_by_rewriting_snapshots() {
    let env = Env::new();
    env.init();
    let d = env.path("src/data");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("f"), "f").unwrap();
    env.snapshot_json(&[OsStr::new("--tag"), OsStr::new("a"), d.as_os_str()]);
    env.snapshot_json(&[d.as_os_str()]);
    let before = env.snapshots_json();
    let (first, second) = (before[0]["id"].as_str().unwrap(), before[1]["id"].as_str().unwrap());
    let tags = |snaps: &[Value]| -> Vec<Value> { snaps.iter().map(|s| s["tags"].clone()).collect() };
    let snapshot_files = || fs::read_dir(env.repo().join("snapshots")).unwrap().count();

    let out = json_of(&env, &["tag", "--add", "b", &first[..8]]);
    let changed = out["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["old_id"], first);
    let after = env.snapshots_json();
    assert_eq!(tags(&after), [serde_json::json!(["a", "b"]), serde_json::json!([])]);
    assert_eq!(after[0]["id"], changed[0]["new_id"]);
    assert_ne!(after[0]["id"], first, "a retagged snapshot is a new object");
    assert_eq!(after[1]["id"], second, "an untouched snapshot keeps its id");
    assert_eq!(snapshot_files(), 2, "the old object is deleted");
    assert_eq!(after[0]["tree"], before[0]["tree"]);
    assert_eq!(after[0]["time"], before[0]["time"]);

    // Nothing changes, nothing is rewritten.
    let text = stdout_of(&env, &["tag", "--add", "b", after[0]["id"].as_str().unwrap()]);
    assert!(text.contains("no snapshot changed"), "{text}");
    assert_eq!(snapshot_ids(&env), [after[0]["id"].as_str().unwrap(), second]);

    let out = json_of(&env, &["tag", "--remove", "a"]);
    assert_eq!(out["changed"].as_array().unwrap().len(), 1, "only the snapshot tagged `a` changes");
    assert_eq!(tags(&env.snapshots_json()), [serde_json::json!(["b"]), serde_json::json!([])]);

    let text = stdout_of(&env, &["tag", "--set", "x", "--set", "y"]);
    assert!(text.contains("2 snapshots changed"), "{text}");
    assert_eq!(tags(&env.snapshots_json()), [serde_json::json!(["x", "y"]), serde_json::json!(["x", "y"])]);
    let filtered = env.cmd().args(["snapshots", "--json", "--tag", "y"]).output().unwrap();
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&filtered.stdout).unwrap().len(), 2);

    stdout_of(&env, &["tag", "--set", "", "latest"]);
    assert_eq!(tags(&env.snapshots_json()), [serde_json::json!(["x", "y"]), serde_json::json!([])]);
    assert_eq!(snapshot_files(), 2);

    env.cmd().args(["tag", "latest"]).assert().failure();
    env.cmd().args(["tag", "--set", "x", "--add", "y"]).assert().failure();
    env.cmd().args(["tag", "--add", "z", "0000000000"]).assert().failure();
    env.cmd().args(["check"]).assert().success();
}

#[test]
fn keys_open_with_either_password_until_removed_and_passwd_replaces_the_current_one() {
    let env = Env::new();
    env.init();
    let with_pw = |pw: &str| {
        let mut c = env.cmd();
        c.env("TSTOR_PASSWORD", pw);
        c
    };
    let pw2 = env.path("pw2");
    fs::write(&pw2, "second password\n").unwrap();
    let added = env.cmd().args(["--json", "key", "add", "--new-password-file"]).arg(&pw2).output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let added: Value = serde_json::from_slice(&added.stdout).unwrap();
    let second = added["id"].as_str().unwrap().to_string();

    // Both passwords open the repository.
    with_pw(PASSWORD).arg("snapshots").assert().success();
    with_pw("second password").arg("snapshots").assert().success();
    let listed = with_pw("second password").args(["--json", "key", "list"]).output().unwrap();
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.len(), 2);
    let current: Vec<&Value> = listed.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], second.as_str());
    // Every slot's owner is readable by anyone who can open the repository.
    for k in &listed {
        assert_eq!(k["hostname"], tstor::host::hostname().as_str(), "{k}");
        assert!(k["created"].is_string(), "{k}");
    }
    let first = listed.iter().find(|k| k["current"] == false).unwrap()["id"].as_str().unwrap().to_string();
    let text = stdout_of(&env, &["key", "list"]);
    assert!(text.lines().any(|l| l.starts_with('*') && l.contains(&first[..8])), "{text}");

    // The key in use cannot be removed.
    let refused = with_pw("second password").args(["key", "remove", &second[..8]]).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"));
    // Another one can; its password then no longer opens the repository.
    with_pw("second password").args(["key", "remove", &first[..8]]).assert().success();
    with_pw(PASSWORD).arg("snapshots").assert().code(12);
    with_pw("second password").args(["key", "remove", &second]).assert().failure();

    // passwd: a key for the new password, then the old one removed.
    with_pw("second password").env("TSTOR_NEW_PASSWORD", "third password").args(["key", "passwd"]).assert().success();
    with_pw("second password").arg("snapshots").assert().code(12);
    let listed = with_pw("third password").args(["--json", "key", "list"]).output().unwrap();
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["current"], true);
    assert_ne!(listed[0]["id"], second.as_str());

    let empty = env.path("empty");
    fs::write(&empty, "\n").unwrap();
    with_pw("third password").args(["key", "add", "--new-password-file"]).arg(&empty).assert().failure();
    with_pw("third password").args(["key", "remove", &"0".repeat(64)]).assert().failure();
}

/// The same commands as library calls on in-memory storage: nothing in them
/// depends on the local backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_works_on_any_backend() {
    use std::sync::Arc;
    use tstor::archiver::{NoProgress, SnapshotOptions};
    use tstor::backend::memory::MemoryBackend;
    use tstor::backend::Backend;
    use tstor::crypto::kdf::KdfParams;
    use tstor::ops;
    use tstor::repo::{InitOptions, Repository};

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("one"), "1".repeat(5000)).unwrap();
    let fast = KdfParams { m_kib: 64, t: 1, p: 1 };
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"pw", InitOptions { kdf: fast, ..Default::default() }).await.unwrap();
    let first = ops::snapshot(&repo, SnapshotOptions::new(vec![src.clone()]), Arc::new(NoProgress)).await.unwrap();
    fs::write(src.join("two"), "2".repeat(7000)).unwrap();
    let second = ops::snapshot(&repo, SnapshotOptions::new(vec![src.clone()]), Arc::new(NoProgress)).await.unwrap();

    let mut listed = Vec::new();
    let opts = ops::inspect::LsOptions { subpath: vec![b"src".to_vec()], recursive: true };
    ops::inspect::ls(&repo, "latest", &opts, |p: &[u8], _: &tstor::format::tree::Node| {
        listed.push(String::from_utf8_lossy(p).into_owned());
        Ok::<(), tstor::repo::RepoError>(())
    })
    .await
    .unwrap();
    assert_eq!(listed, ["src/one", "src/two"]);

    let side = |id: &tstor::format::Id| ops::diff::DiffSide { spec: id.to_hex(), subpath: Vec::new() };
    let mut changes = Vec::new();
    let outcome = ops::diff::diff(&repo, &side(&first.id), &side(&second.id), |c: &ops::diff::Change| {
        changes.push(format!("{} {}", c.kind.symbol(), String::from_utf8_lossy(&c.path)));
        Ok::<(), tstor::repo::RepoError>(())
    })
    .await
    .unwrap();
    assert_eq!(changes, ["+ src/two"]);
    assert_eq!(outcome.totals.bytes_added, 7000);

    let (stats, bad) = ops::stats::stats(&repo, &[], ops::stats::StatsMode::RestoreSize).await.unwrap();
    assert!(bad.is_empty());
    assert_eq!((stats.restore_size, stats.dedup_size), (5000 + 5000 + 7000, 12000));

    let opts = ops::tag::TagOptions { add: vec!["kept".into()], ..Default::default() };
    let changed = ops::tag::tag(&repo, &[first.id.to_hex()], &opts).await.unwrap();
    assert_eq!(changed.len(), 1);
    let (snaps, _) = repo.snapshots().await.unwrap();
    assert_eq!(snaps.iter().filter(|(_, s)| s.tags == ["kept"]).count(), 1);

    let key = ops::key::add(&repo, b"other", fast).await.unwrap();
    assert_eq!(ops::key::list(&repo).await.unwrap().len(), 2);
    let reopened = Repository::open(backend, b"other", None).await.unwrap();
    assert_eq!(*reopened.key_id(), key);
    let cat = ops::cat::cat(&reopened, &ops::cat::CatTarget::Key(key.short())).await.unwrap();
    assert!(matches!(cat, ops::cat::CatObject::Key(k) if k.current && k.owner.is_some()));
}
