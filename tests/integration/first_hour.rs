//! The first hour of a restic user: quiet runs for cron, logs without colour
//! codes or debug forms, a password piped on stdin, an unreachable Telegram
//! said at once and given up on, a summary like restic's, messages that say
//! what to do, and the options a restic user types.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6, TcpListener};

use tstor::backend::telegram::TelegramSession;

use crate::common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An initialised repository with a small source tree at `src`.
fn env_with_source() -> Env {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("sub/b.txt"), random_bytes(10_000, 1)).unwrap();
    env
}

#[test]
fn logs_written_to_a_pipe_or_a_file_have_no_colour_codes_or_debug_forms() {
    let env = env_with_source();
    let log = env.path("tstor.log");
    for _ in 0..2 {
        let out =
            env.cmd().args(["-vv", "snapshot"]).arg(env.path("src")).arg("--log-file").arg(&log).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("snapshot started"), "-vv logs on stderr: {err}");
        assert!(!err.contains('\x1b'), "colour codes on a pipe: {err:?}");
    }
    let logged = fs::read_to_string(&log).unwrap();
    // The second run has a parent: it is logged as its short id, not `Some("…")`.
    assert!(logged.contains("\"parent\""), "{logged}");
    assert!(!logged.contains("Some("), "debug forms in the log file: {logged}");
    assert!(!logged.contains('\x1b'), "{logged:?}");
}

#[test]
fn quiet_snapshot_restore_and_check_print_nothing_on_success() {
    let env = env_with_source();
    for args in [
        vec!["-q".into(), "snapshot".into(), env.path("src").into_os_string()],
        vec!["-q".into(), "check".into()],
        vec!["-q".into(), "restore".into(), "latest".into(), "--target".into(), env.path("out").into_os_string()],
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "", "{args:?} printed on stdout");
        assert_eq!(text(&out.stderr), "", "{args:?} printed on stderr");
    }
}

#[test]
fn a_password_piped_on_stdin_opens_the_repository() {
    let env = env_with_source();
    let out =
        env.cmd().env_remove("TSTOR_PASSWORD").arg("snapshots").write_stdin(format!("{PASSWORD}\n")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.cmd().env_remove("TSTOR_PASSWORD").arg("snapshots").write_stdin("not it\n").output().unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", text(&out.stderr));
    // Nothing on stdin is still "no password", named as such.
    let out = env.cmd().env_remove("TSTOR_PASSWORD").arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no password given"), "{}", text(&out.stderr));
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn an_unreachable_telegram_is_said_at_once_and_given_up_on_with_its_own_exit_code() {
    let env = Env::new();
    let port = closed_port();
    let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let v6 = SocketAddrV6::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), port, 0, 0);
    let mut session = TelegramSession::with_dc(2, v4, v6, [7; 256]);
    session.set_api_id(1).unwrap();
    let session_path = env.path("telegram.session");
    session.save_to(&session_path).unwrap();
    let out = env
        .cmd()
        .env("TSTOR_REPOSITORY", "telegram:me")
        .env("TSTOR_TG_SESSION", &session_path)
        .env("TSTOR_TG_UNREACHABLE_TIMEOUT", "2")
        .arg("snapshots")
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(14), "{err}");
    assert!(err.contains("cannot connect to Telegram") && err.contains("retrying for up to 2s"), "{err}");
    assert!(err.contains("cannot reach Telegram"), "{err}");
    assert!(!err.contains("storage failure"), "{err}");
    assert_eq!(text(&out.stdout), "");
}

// ---- messages that say what to do ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_snapshot_prefix_lists_the_candidates() {
    use std::sync::Arc;
    use tstor::archiver::{NoProgress, SnapshotOptions};
    use tstor::backend::local::LocalBackend;
    use tstor::crypto::kdf::KdfParams;
    use tstor::repo::{InitOptions, Repository};

    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"x").unwrap();
    let opts = InitOptions { kdf: KdfParams { m_kib: 64, t: 1, p: 1 }, ..Default::default() };
    let repo = Repository::init(Arc::new(LocalBackend::new(env.repo())), PASSWORD.as_bytes(), opts).await.unwrap();
    // Among 17 snapshots two share their first hex digit.
    let mut ids: Vec<String> = Vec::new();
    let shared = loop {
        let mut o = SnapshotOptions::new(vec![dir.path().to_path_buf()]);
        o.tags = vec![format!("run{}", ids.len())];
        let id = tstor::ops::snapshot(&repo, o, Arc::new(NoProgress)).await.unwrap().id.to_hex();
        if let Some(other) = ids.iter().find(|o| o[..1] == id[..1]) {
            break (other.clone(), id);
        }
        ids.push(id);
    };
    let e = repo.find_snapshot(&shared.0[..1]).await.unwrap_err().to_string();
    assert!(e.contains("matches 2 snapshots") && e.contains("give more of the id"), "{e}");
    assert!(e.contains(&shared.0[..8]) && e.contains(&shared.1[..8]), "candidates listed: {e}");
    // The same on the command line, for any command taking a snapshot.
    for args in [["ls", &shared.0[..1]], ["dump", &shared.1[..1]]] {
        let out = env.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(&shared.0[..8]) && err.contains(&shared.1[..8]), "{args:?} lists the candidates: {err}");
    }
}

/// Stores a live exclusive lock as a process on another host would.
fn plant_lock(env: &Env) {
    use std::sync::Arc;
    use tstor::backend::local::LocalBackend;
    use tstor::format::lock::Lock;
    use tstor::format::{Id, ObjectKind};
    use tstor::repo::Repository;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = Repository::open(Arc::new(LocalBackend::new(env.repo())), PASSWORD.as_bytes(), None).await.unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
        let lock = Lock {
            exclusive: true,
            hostname: "elsewhere".into(),
            username: "someone".into(),
            pid: 4242,
            created_ns: now,
            refreshed_ns: now,
            nonce: Id::random().0[..16].try_into().unwrap(),
        };
        repo.save_object(ObjectKind::Lock, &lock.encode()).await.unwrap();
    });
}

#[test]
fn a_locked_repository_names_tstor_unlock_and_retry_lock_waits_for_the_lock_to_go() {
    use std::io::BufRead;
    let env = env_with_source();
    plant_lock(&env);
    let out = env.cmd().arg("check").output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(err.contains("repository is locked") && err.contains("`tstor unlock"), "{err}");

    // With --retry-lock the command waits; once the lock goes, it runs.
    let mut child = env
        .std_cmd()
        .args(["-v", "--retry-lock", "10m", "check"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let waiting = lines.by_ref().map_while(Result::ok).any(|l| l.contains("repository locked; trying again"));
    assert!(waiting, "the command says it waits for the lock");
    let unlock = env.cmd().args(["unlock", "--remove-all"]).output().unwrap();
    assert!(unlock.status.success(), "{}", text(&unlock.stderr));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "check ran once the lock was gone: {rest:?}");
}

#[test]
fn a_mistyped_configuration_key_suggests_the_nearest() {
    let env = Env::new();
    let config = env.path("config.toml");
    fs::write(&config, "repository = \"/srv/backup\"\nexclud = [\"*.o\"]\n").unwrap();
    let out = env.cmd().arg("--config").arg(&config).arg("snapshots").output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown key `exclud`; did you mean `exclude`?"), "{err}");
}

#[test]
fn check_suggests_repair_index_for_packs_no_index_lists() {
    let env = env_with_source();
    env.snapshot_json(&[env.path("src").as_os_str()]);
    for entry in fs::read_dir(env.repo().join("index")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let out = env.cmd().arg("--no-cache").arg("check").output().unwrap();
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("is not in any index") && all.contains("`tstor repair index`"), "{all}");
}

#[test]
fn init_over_a_repository_is_a_user_error_not_a_storage_failure() {
    let env = env_with_source();
    let out = env.cmd().arg("init").output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a repository already exists there"), "{err}");
    assert!(!err.contains("storage failure"), "{err}");
}

#[test]
fn one_of_a_thing_is_counted_in_the_singular() {
    let env = env_with_source();
    env.snapshot_json(&[env.path("src").as_os_str()]);
    let listing = text(&env.cmd().arg("snapshots").output().unwrap().stdout);
    assert!(listing.ends_with("\n1 snapshot\n"), "{listing}");
    let out = env.cmd().args(["restore", "latest", "--target"]).arg(env.path("out")).output().unwrap();
    let said = text(&out.stdout);
    assert!(said.contains(": 2 files (") && said.contains("), 2 directories, 0 symlinks"), "{said}");
}

// ---- options restic users type ----

/// Three snapshots: host `a` of `src` (tag `x`), host `b` of `src`, host `a` of `src/sub`.
fn three_snapshots(env: &Env) -> Vec<String> {
    let src = env.path("src");
    let runs: [(&str, std::path::PathBuf, &str); 3] =
        [("a", src.clone(), "x"), ("b", src.clone(), "y"), ("a", src.join("sub"), "y")];
    runs.iter()
        .map(|(host, path, tag)| {
            let args = [os("--host"), os(host), os("--tag"), os(tag), os(path)];
            let s = env.snapshot_json(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
            s["snapshot_id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn snapshots_filters_groups_and_cuts_to_the_latest() {
    let env = env_with_source();
    let ids = three_snapshots(&env);
    let src = env.path("src");
    let out = env.cmd().args(["snapshots", "--latest", "1", "--group-by", "host", "--compact"]).output().unwrap();
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(listing.contains("snapshots for host a:") && listing.contains("snapshots for host b:"), "{listing}");
    assert!(!listing.contains(&ids[0][..8]), "only the latest of host a: {listing}");
    assert!(listing.contains(&ids[1][..8]) && listing.contains(&ids[2][..8]), "{listing}");
    assert!(!listing.contains("Paths"), "compact leaves out paths: {listing}");
    let out = env.cmd().args(["snapshots", "--json", "--path"]).arg(&src).output().unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[0].as_str(), ids[1].as_str()]);
}

#[test]
fn latest_with_host_path_and_tag_filters_in_restore_and_ls() {
    let env = env_with_source();
    let ids = three_snapshots(&env);
    // The newest of host b is the second snapshot: the whole of `src`.
    let out = env.cmd().args(["restore", "latest", "--host", "b", "--target"]).arg(env.path("out-b")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&ids[1][..8]), "{}", text(&out.stdout));
    assert_same_tree(&env.path("src"), &env.path("out-b/src"));
    // Tag x: the first one.
    let out = env.cmd().args(["ls", "latest", "--tag", "x"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("/src/a.txt"), "{}", text(&out.stdout));
    // Host a and the path of the whole tree: the first one again, not the third.
    let out = env.cmd().args(["ls", "latest", "--host", "a", "--path"]).arg(env.path("src")).output().unwrap();
    assert!(text(&out.stdout).contains("/src/a.txt"), "{}", text(&out.stdout));
    // restore takes --tag and --path too: tag y and the whole tree is the second.
    let out = env
        .cmd()
        .args(["restore", "latest", "--tag", "y", "--path"])
        .arg(env.path("src"))
        .arg("--target")
        .arg(env.path("out-y"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&ids[1][..8]), "{}", text(&out.stdout));
    // Tag y alone: the newest with it, the third, of `src/sub` only.
    let out =
        env.cmd().args(["restore", "latest", "--tag", "y", "--target"]).arg(env.path("out-sub")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&ids[2][..8]), "{}", text(&out.stdout));
    assert!(env.path("out-sub/sub").is_dir() && !env.path("out-sub/src").exists());
    let out = env.cmd().args(["ls", "latest", "--host", "c"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no snapshot matches host c"), "{}", text(&out.stderr));
}

#[test]
fn version_list_and_cache_cleanup() {
    let env = env_with_source();
    let out = env.cmd().arg("version").output().unwrap();
    assert!(text(&out.stdout).starts_with(&format!("tstor {} (repository format ", env!("CARGO_PKG_VERSION"))));

    let id = env.snapshot_json(&[env.path("src").as_os_str()])["snapshot_id"].as_str().unwrap().to_string();
    let out = env.cmd().args(["list", "snapshots"]).output().unwrap();
    assert_eq!(text(&out.stdout), format!("{id}\n"));
    let out = env.cmd().args(["list", "packs"]).output().unwrap();
    let packs: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    let mut stored: Vec<String> = fs::read_dir(env.repo().join("packs"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    stored.sort();
    assert!(!packs.is_empty() && packs.iter().all(|p| p.len() == 64), "{packs:?}");
    assert_eq!(packs.len(), stored.len());
    // index, keys and locks: the ids of the files in their directories.
    let files_in = |dir: &str| {
        let mut names: Vec<String> = fs::read_dir(env.repo().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let listed = |kind: &str| {
        let out = env.cmd().args(["list", kind]).output().unwrap();
        assert!(out.status.success(), "list {kind}: {}", text(&out.stderr));
        text(&out.stdout).lines().map(String::from).collect::<Vec<_>>()
    };
    for kind in ["index", "keys"] {
        let ids = listed(kind);
        assert!(!ids.is_empty(), "list {kind}");
        assert_eq!(ids, files_in(kind), "list {kind}");
    }
    let keys = env.cmd().args(["key", "list", "--json"]).output().unwrap();
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&keys.stdout).unwrap();
    assert_eq!(listed("keys"), [keys[0]["id"].as_str().unwrap()]);
    assert!(listed("locks").is_empty(), "no command leaves a lock behind");
    plant_lock(&env);
    let locks = listed("locks");
    assert_eq!(locks.len(), 1);
    assert_eq!(locks, files_in("locks"));
    let unlocked = env.cmd().args(["unlock", "--remove-all"]).output().unwrap();
    assert!(unlocked.status.success(), "{}", text(&unlocked.stderr));
    assert!(listed("locks").is_empty());
    let bad = env.cmd().args(["list", "blobs"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "a usage error");

    // A cache not used for 40 days goes; the repository's own stays.
    let stale = env.cache().join("e".repeat(64));
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("cache.redb"), b"old").unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400);
    fs::File::options().write(true).open(stale.join("cache.redb")).unwrap().set_modified(long_ago).unwrap();
    let out = env.cmd().arg("cache").output().unwrap();
    assert!(text(&out.stdout).contains("2 caches in"), "{}", text(&out.stdout));
    let out = env.cmd().args(["cache", "--cleanup"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("removed cache eeeeeeee"), "{}", text(&out.stdout));
    assert!(!stale.exists());
    assert_eq!(fs::read_dir(env.cache()).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count(), 1);
}

// ---- a summary like restic's ----

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_summary_counts_files_and_dirs_by_status_and_restore_counts_agree() {
    let env = env_with_source();
    let src = env.path("src");
    fs::create_dir(src.join("keep")).unwrap();
    fs::write(src.join("keep/k.txt"), b"kept").unwrap();
    fs::hard_link(src.join("a.txt"), src.join("sub/hl")).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("ln")).unwrap();
    let out = env.cmd().arg("snapshot").arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = words(&text(&out.stdout));
    assert!(first.contains("no parent snapshot"), "{first}");
    assert!(first.contains("Files: 4 new, 0 changed, 0 unmodified"), "hard links are files: {first}");
    assert!(first.contains("Dirs: 3 new, 0 changed, 0 unmodified"), "{first}");
    assert!(first.contains("processed 4 files,") && first.contains("Added to the repository:"), "{first}");

    fs::write(src.join("sub/b.txt"), b"short").unwrap();
    fs::write(src.join("new.txt"), b"new").unwrap();
    let out = env.cmd().args(["-vv", "snapshot"]).arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = text(&out.stdout);
    let parent = env.snapshots_json()[0]["short_id"].as_str().unwrap().to_string();
    let w = words(&second);
    assert!(w.contains(&format!("using parent snapshot {parent}")), "{second}");
    assert!(w.contains("Files: 1 new, 1 changed, 3 unmodified"), "{second}");
    assert!(w.contains("Dirs: 0 new, 2 changed, 1 unmodified"), "{second}");
    for (status, file) in [("new", "src/new.txt"), ("modified", "src/sub/b.txt"), ("unchanged", "src/keep/k.txt")] {
        let listed = second.lines().any(|l| l.starts_with(status) && l.ends_with(file));
        assert!(listed, "-vv lists {file} as {status}: {second}");
    }

    let out = env.cmd().args(["restore", "latest", "--json", "--target"]).arg(env.path("out")).output().unwrap();
    let restored = summary_line(&out.stdout);
    let snap = env.snapshots_json().pop().unwrap();
    let s = &snap["summary"];
    let files = s["files_new"].as_u64().unwrap()
        + s["files_changed"].as_u64().unwrap()
        + s["files_unchanged"].as_u64().unwrap();
    assert_eq!(restored["result"]["files"].as_u64(), Some(files), "{restored}");
    assert_eq!(restored["result"]["dirs"], s["dirs"], "{restored}");
    assert_eq!(restored["result"]["links"], 1, "one symlink: {restored}");
}

// ---- help and README agree ----

#[test]
fn the_readme_and_help_agree_on_where_completions_go() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme.split("`tstor completions bash > ").nth(1).expect("the README shows where completions go");
    let path = &after[..after.find('`').unwrap()];
    let env = Env::new();
    let help = text(&env.cmd().args(["completions", "--help"]).output().unwrap().stdout);
    assert!(help.contains(&format!("tstor completions bash > {path}")), "--help names {path}: {help}");
}
