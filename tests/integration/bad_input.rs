//! Bad input: wrong passwords, unreadable source files, tampered or foreign
//! objects and hostile trees get a clear error, never a panic, never a write
//! outside the restore target.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::sync::Arc;

use tstor::backend::local::LocalBackend;
use tstor::backend::Backend;
use tstor::crypto::kdf::KdfParams;
use tstor::format::snapshot::Snapshot;
use tstor::format::tree::{Node, NodeKind, Tree};
use tstor::format::{BlobType, Id, ObjectKind};
use tstor::repo::packer::Packer;
use tstor::repo::{InitOptions, Repository};

use crate::common::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wrong_password_is_one_clear_error_and_writes_nothing() {
    let env = Env::new();
    env.init();
    fs::write(env.path("f"), b"x").unwrap();
    env.snapshot_json(&[env.path("f").as_os_str()]);
    let before = env.repo_listing();
    for args in [vec!["snapshots"], vec!["check"], vec!["snapshot", "/etc/hostname"]] {
        let out = env.cmd().env("TSTOR_PASSWORD", "not it").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(12), "{args:?}");
        let err = stderr_of(&out);
        assert!(err.contains("wrong password"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_eq!(env.repo_listing(), before);
}

#[test]
fn missing_repository_and_missing_password_are_named() {
    let env = Env::new();
    let out = env.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(stderr_of(&out).contains("no repository at"), "{}", stderr_of(&out));
    let out = env.cmd().env_remove("TSTOR_PASSWORD").arg("init").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("no password given"), "{}", stderr_of(&out));
    // init refuses to overwrite.
    env.init();
    let out = env.cmd().arg("init").output().unwrap();
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("already exists"), "{}", stderr_of(&out));
}

#[test]
fn init_recovers_from_an_init_that_was_interrupted() {
    let env = Env::new();
    env.init();
    // What a crash between writing the key slot and the config leaves.
    fs::remove_file(env.repo().join("config")).unwrap();
    let out = env.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    env.init();
    env.cmd().arg("snapshots").assert().success();
    assert_eq!(fs::read_dir(env.repo().join("keys")).unwrap().count(), 1, "the orphaned key slot is gone");
}

#[test]
fn password_file_and_command_work() {
    let env = Env::new();
    fs::write(env.path("pw"), format!("{PASSWORD}\n")).unwrap();
    env.cmd().env_remove("TSTOR_PASSWORD").arg("--password-file").arg(env.path("pw")).arg("init").assert().success();
    env.cmd()
        .env_remove("TSTOR_PASSWORD")
        .args(["--password-command", &format!("echo '{PASSWORD}'"), "snapshots"])
        .assert()
        .success();
    let out =
        env.cmd().env_remove("TSTOR_PASSWORD").args(["--password-command", "false", "snapshots"]).output().unwrap();
    assert!(stderr_of(&out).contains("password command"), "{}", stderr_of(&out));
}

#[test]
fn default_repository_lives_under_the_data_directory() {
    let env = Env::new();
    let data = env.path("xdg-data");
    let out = env
        .cmd()
        .env_remove("TSTOR_REPOSITORY")
        .env_remove("TSTOR_CACHE_DIR")
        .env("XDG_DATA_HOME", &data)
        .env("XDG_CACHE_HOME", env.path("xdg-cache"))
        .arg("init")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let expected = data.join("tstor/repository");
    assert!(String::from_utf8_lossy(&out.stdout).contains(expected.to_str().unwrap()));
    assert!(expected.join("config").is_file());
    fs::write(env.path("f"), b"x").unwrap();
    env.cmd()
        .env_remove("TSTOR_REPOSITORY")
        .env_remove("TSTOR_CACHE_DIR")
        .env("XDG_DATA_HOME", &data)
        .env("XDG_CACHE_HOME", env.path("xdg-cache"))
        .args(["snapshot", "--quiet"])
        .arg(env.path("f"))
        .assert()
        .success();
    assert!(env.path("xdg-cache/tstor").is_dir(), "the cache goes under the cache directory");
}

#[test]
fn unreadable_files_are_named_and_the_snapshot_completes_with_exit_3() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("locked-dir")).unwrap();
    fs::write(src.join("ok.txt"), b"fine").unwrap();
    fs::write(src.join("secret.txt"), b"no").unwrap();
    fs::write(src.join("locked-dir/inner"), b"no").unwrap();
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads everything: run as an unprivileged user where we can.
    let run = |args: &[&std::ffi::OsStr]| {
        let mut c = env.std_cmd();
        c.args(args);
        if is_root() {
            c.uid(65534).gid(65534);
        }
        c.output().unwrap()
    };
    if is_root() {
        fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    }
    assert!(run(&["init".as_ref()]).status.success());
    let log = env.path("log.json");
    let out = run(&["snapshot".as_ref(), "--json".as_ref(), "--log-file".as_ref(), log.as_os_str(), src.as_os_str()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("secret.txt"), "{err}");
    assert!(err.contains("locked-dir"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["errors"].as_array().unwrap().len(), 2);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("secret.txt") && logged.contains("skipped"), "{logged}");
    let out = run(&["snapshots".as_ref(), "--json".as_ref()]);
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.len(), 1, "the snapshot was saved");
}
#[test]
fn tampered_and_foreign_objects_give_clear_errors() {
    let env = Env::new();
    env.init();
    fs::write(env.path("f"), b"content").unwrap();
    env.snapshot_json(&[env.path("f").as_os_str()]);
    let snap_dir = env.repo().join("snapshots");
    let snap_file = fs::read_dir(&snap_dir).unwrap().next().unwrap().unwrap().path();

    // A truncated snapshot is named, not a crash.
    let original = fs::read(&snap_file).unwrap();
    fs::write(&snap_file, &original[..original.len() / 2]).unwrap();
    let out = env.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("damaged"), "{}", stderr_of(&out));
    fs::write(&snap_file, &original).unwrap();

    // A snapshot object from another repository does not open here.
    let other = Env::new();
    other.init();
    fs::write(other.path("g"), b"other").unwrap();
    other.snapshot_json(&[other.path("g").as_os_str()]);
    let foreign = fs::read_dir(other.repo().join("snapshots")).unwrap().next().unwrap().unwrap().path();
    fs::copy(&foreign, snap_dir.join(foreign.file_name().unwrap())).unwrap();
    let out = env.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("authentication failed"), "{}", stderr_of(&out));
    fs::remove_file(snap_dir.join(foreign.file_name().unwrap())).unwrap();

    // A damaged config.
    let config = env.repo().join("config");
    let good = fs::read(&config).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 1;
    fs::write(&config, &bad).unwrap();
    let out = env.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("config is damaged"), "{}", stderr_of(&out));
    fs::write(&config, &good).unwrap();

    // A garbage key slot.
    let key = fs::read_dir(env.repo().join("keys")).unwrap().next().unwrap().unwrap().path();
    fs::write(&key, b"\x01\x01garbage").unwrap();
    let out = env.cmd().arg("snapshots").output().unwrap();
    assert!(stderr_of(&out).contains("key slots can be read"), "{}", stderr_of(&out));
}

/// Writes a snapshot whose tree holds entries a restore must refuse.
async fn write_hostile_snapshot(repo_path: &std::path::Path) {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(repo_path));
    let opts = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
    let repo = Repository::init(backend, PASSWORD.as_bytes(), opts).await.unwrap();
    let mut packer = Packer::new(1 << 20);
    let data = repo.seal_blob(BlobType::Data, b"payload").unwrap();
    packer.add(BlobType::Data, data.id, &data.sealed, data.raw_len);
    let file = |name: &[u8]| {
        let mut n = Node::new(name.to_vec(), NodeKind::File);
        n.mode = 0o644;
        n.size = 7;
        n.content = vec![data.id];
        n
    };
    let mut inner = Tree { nodes: vec![file(b"inner-ok")] };
    inner.sort();
    let inner_raw = inner.encode();
    let inner_blob = repo.seal_blob(BlobType::Tree, &inner_raw).unwrap();
    packer.add(BlobType::Tree, inner_blob.id, &inner_blob.sealed, inner_blob.raw_len);
    let mut dir = Node::new(b"..".to_vec(), NodeKind::Dir);
    dir.mode = 0o755;
    dir.subtree = Some(inner_blob.id);
    let mut root = Tree { nodes: vec![file(b"../x"), file(b"good"), file(b"a\0b"), dir, file(b"")] };
    root.sort();
    let raw = root.encode();
    let root_blob = repo.seal_blob(BlobType::Tree, &raw).unwrap();
    packer.add(BlobType::Tree, root_blob.id, &root_blob.sealed, root_blob.raw_len);
    let pack = packer.finish(repo.keys(), repo.repo_id());
    repo.backend().put(ObjectKind::Pack, &pack.id, pack.data.clone()).await.unwrap();
    let indexed =
        tstor::format::index::IndexedPack { id: pack.id, size: pack.data.len() as u64, blobs: pack.blobs.clone() };
    repo.write_index(vec![indexed], vec![]).await.unwrap();
    let snap = Snapshot {
        time_ns: 1,
        tree: root_blob.id,
        paths: vec![b"/evil".to_vec()],
        hostname: "attacker".into(),
        username: "x".into(),
        uid: 0,
        gid: 0,
        tags: vec![],
        parent: None::<Id>,
        program_version: "0".into(),
        summary: Default::default(),
        original: None,
    };
    repo.save_object(ObjectKind::Snapshot, &snap.encode()).await.unwrap();
}

#[test]
fn crafted_tree_entries_cannot_escape_the_target() {
    let env = Env::new();
    tokio::runtime::Runtime::new().unwrap().block_on(write_hostile_snapshot(&env.repo()));
    let target = env.path("jail/out");
    fs::create_dir_all(&target).unwrap();
    let out = env.cmd().args(["restore", "latest", "--target"]).arg(&target).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("../x: refused"), "{err}");
    assert!(err.contains("refused: name is \".\" or \"..\""), "{err}");
    assert!(err.contains("refused: empty name"), "{err}");
    assert!(err.contains("NUL"), "{err}");
    assert_eq!(fs::read(target.join("good")).unwrap(), b"payload");
    assert!(!env.path("jail/x").exists(), "a file was written outside the target");
    assert!(!env.path("jail/inner-ok").exists());
    let entries: Vec<_> = fs::read_dir(env.path("jail")).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the target exists in its parent");
    // check reports the unsafe names as problems too.
    let out = env.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("unsafe name"), "{}", stderr_of(&out));
}

#[test]
fn restore_never_writes_through_a_symlink_in_the_target() {
    let env = Env::new();
    env.init();
    let src = env.path("work");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/file"), b"restored").unwrap();
    fs::write(src.join("top"), b"top").unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    // The target already holds symlinks where the restore will write.
    let target = env.path("out");
    let outside = env.path("outside");
    fs::create_dir_all(target.join("work")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("top"), b"precious").unwrap();
    std::os::unix::fs::symlink(&outside, target.join("work/dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("top"), target.join("work/top")).unwrap();
    env.cmd().args(["restore", "latest", "--target"]).arg(&target).assert().success();
    assert_eq!(fs::read(outside.join("top")).unwrap(), b"precious");
    assert!(!outside.join("file").exists());
    assert!(fs::symlink_metadata(target.join("work/dir")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("work/dir/file")).unwrap(), b"restored");
    assert_eq!(fs::read(target.join("work/top")).unwrap(), b"top");
}

#[test]
fn verbose_logs_go_to_stderr_and_log_file() {
    let env = Env::new();
    env.init();
    fs::write(env.path("f"), b"x").unwrap();
    let out = env.cmd().args(["-vv", "snapshot", "--quiet"]).arg(env.path("f")).output().unwrap();
    assert!(out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("snapshot saved") && err.contains("DEBUG"), "{err}");
    let out = env.cmd().env("TSTOR_LOG", "info").args(["snapshot", "--quiet"]).arg(env.path("f")).output().unwrap();
    assert!(stderr_of(&out).contains("snapshot saved"));
    let quiet = env.cmd().args(["snapshot", "--quiet"]).arg(env.path("f")).output().unwrap();
    assert!(stderr_of(&quiet).is_empty(), "no logs unless asked: {}", stderr_of(&quiet));
}
