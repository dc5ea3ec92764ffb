//! `tstor copy` end to end: between local repositories and between
//! Telegram channels on the loopback server, under other keys (blobs
//! re-sealed) and under the same keys (`init --same-keys`: packs stored as
//! they are; Telegram re-sends the documents, uploading none of them).
//! Snapshots copied once are skipped the next time, and what is restored
//! from the copy is what was backed up.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use tstor::backend::telegram::TelegramSession;
use tstor_tgloop::{Fault, Server, Where};

use crate::common::*;

const TARGET_PASSWORD: &str = "another password for the copy";

/// Files to back up: some random data (so packs are large next to the
/// other objects), a file twice (dedup), small files in nested directories.
fn make_data(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    let big = random_bytes(1536 << 10, seed);
    fs::write(root.join("big.bin"), &big).unwrap();
    fs::write(root.join("a/b/c/again.bin"), &big).unwrap();
    for i in 0..20u64 {
        fs::write(root.join(format!("a/small-{i}.txt")), format!("file {i} of run {seed}\n").repeat(i as usize + 1))
            .unwrap();
    }
    std::os::unix::fs::symlink("big.bin", root.join("link")).unwrap();
}

fn json_of(out: &std::process::Output, what: &str) -> Value {
    assert!(out.status.success(), "{what} failed ({:?}):\n{}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} printed no JSON ({e})"))
}

fn ids(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| (c["source"].as_str().unwrap().to_string(), c["target"].as_str().unwrap().to_string()))
        .collect()
}

// ---- local repositories ----

/// A source repository with two snapshots of `data` (changed in between).
fn local_source(env: &Env) -> PathBuf {
    env.init();
    let data = env.path("data");
    make_data(&data, 1);
    env.snapshot_json(&[data.as_os_str()]);
    fs::write(data.join("a/small-0.txt"), "changed\n").unwrap();
    fs::write(data.join("new.bin"), random_bytes(300 << 10, 2)).unwrap();
    env.snapshot_json(&[data.as_os_str()]);
    data
}

fn target_cmd(src: &Env, target: &Path) -> Command {
    let mut c = src.cmd();
    c.env("TSTOR_REPOSITORY", target).env("TSTOR_PASSWORD", TARGET_PASSWORD).env("TSTOR_FROM_PASSWORD", PASSWORD);
    c
}

fn local_copy(src: &Env, target: &Path) -> Value {
    let out = target_cmd(src, target).args(["copy", "--json", "--from-repo"]).arg(src.repo()).output().unwrap();
    json_of(&out, "copy")
}

fn restore_latest_and_compare(cmd: impl Fn() -> Command, data: &Path, out: &Path) {
    let res = cmd().args(["restore", "latest", "--target"]).arg(out).output().unwrap();
    assert!(res.status.success(), "restore failed: {}", String::from_utf8_lossy(&res.stderr));
    assert_same_tree(data, &out.join(data.file_name().unwrap()));
}

#[test]
fn a_copy_under_other_keys_reseals_skips_what_it_copied_and_restores_identically() {
    let src = Env::new();
    let data = local_source(&src);
    let target = src.path("target");
    target_cmd(&src, &target).arg("init").assert().success();

    let first = local_copy(&src, &target);
    assert_eq!(first["mode"], "reseal");
    assert_eq!(first["copied"].as_array().unwrap().len(), 2);
    assert!(first["skipped"].as_array().unwrap().is_empty());
    assert!(first["blobs_copied"].as_u64().unwrap() > 0);
    assert!(first["bytes_uploaded"].as_u64().unwrap() > 0);
    assert_eq!(first["packs_resent"], 0);
    // Other keys, other ids: every snapshot gets a new one.
    for (s, t) in ids(&first["copied"]) {
        assert_ne!(s, t);
    }

    // A second run finds both there, by their originals, and stores nothing.
    let second = local_copy(&src, &target);
    assert!(second["copied"].as_array().unwrap().is_empty());
    assert_eq!(ids(&second["skipped"]), ids(&first["copied"]));
    assert_eq!(second["bytes_uploaded"], 0);

    // The copies keep what the snapshots said, name their originals and
    // their copied parent, and restore to the very files backed up.
    let snaps: Vec<Value> =
        json_of(&target_cmd(&src, &target).args(["snapshots", "--json"]).output().unwrap(), "snapshots")
            .as_array()
            .unwrap()
            .clone();
    let originals: Vec<Value> = src.snapshots_json();
    assert_eq!(snaps.len(), 2);
    for (copy, orig) in snaps.iter().zip(&originals) {
        assert_eq!(copy["time_ns"], orig["time_ns"]);
        assert_eq!(copy["paths"], orig["paths"]);
        assert_ne!(copy["tree"], orig["tree"]);
    }
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);
    target_cmd(&src, &target).args(["check", "--verify"]).assert().success();
    restore_latest_and_compare(|| target_cmd(&src, &target), &data, &src.path("out"));

    // A snapshot taken in the target later deduplicates against the copy.
    let out = target_cmd(&src, &target).args(["snapshot", "--json"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&out.stderr));
    let again = summary_line(&out.stdout);
    assert_eq!(again["bytes_added"], 0, "same keys or not, the copied blobs are the target's own");

    // A snapshot rewritten in the source after its original was copied
    // shares that original but is another snapshot: it is copied too.
    src.cmd().args(["rewrite", "latest", "--exclude", "new.bin"]).assert().success();
    let third = local_copy(&src, &target);
    assert_eq!(third["copied"].as_array().unwrap().len(), 1, "{third}");
    assert_eq!(third["skipped"].as_array().unwrap().len(), 2, "{third}");
}

#[test]
fn a_copy_under_the_same_keys_stores_the_packs_and_snapshots_as_they_are() {
    let src = Env::new();
    let data = local_source(&src);
    let target = src.path("target");
    let out = target_cmd(&src, &target)
        .args(["init", "--json", "--same-keys", "--from-repo"])
        .arg(src.repo())
        .output()
        .unwrap();
    json_of(&out, "init --same-keys");

    let first = local_copy(&src, &target);
    assert_eq!(first["mode"], "same-keys");
    for (s, t) in ids(&first["copied"]) {
        assert_eq!(s, t, "the same keys give the same snapshot ids");
    }
    // Every pack of the source is in the target, byte for byte.
    let packs = |root: &Path| {
        let mut v = Vec::new();
        walk(&root.join("packs"), &mut |p, m| {
            if m.is_file() {
                v.push((p.file_name().unwrap().to_owned(), fs::read(p).unwrap()));
            }
        });
        v.sort();
        v
    };
    assert_eq!(packs(&src.repo()), packs(&target));
    assert_eq!(first["packs_copied"].as_u64().unwrap() as usize, packs(&target).len());
    assert_eq!(first["bytes_uploaded"], first["bytes_copied"], "a directory cannot re-send: bytes are copied");

    let second = local_copy(&src, &target);
    assert!(second["copied"].as_array().unwrap().is_empty());
    assert_eq!(second["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(second["packs_copied"], 0);

    // The key slots are each repository's own: the source's password does
    // not open the copy (though the keys behind the slots are one, as the
    // identical packs above show).
    let by_source_password = src.cmd().env("TSTOR_REPOSITORY", &target).arg("snapshots").output().unwrap();
    assert_eq!(by_source_password.status.code(), Some(12), "wrong password");
    target_cmd(&src, &target).args(["check", "--verify"]).assert().success();
    restore_latest_and_compare(|| target_cmd(&src, &target), &data, &src.path("out"));
}

#[test]
fn copy_without_a_source_password_or_into_itself_is_refused_clearly() {
    let src = Env::new();
    src.init();
    let target = src.path("target");
    target_cmd(&src, &target).arg("init").assert().success();
    let out = target_cmd(&src, &target)
        .env_remove("TSTOR_FROM_PASSWORD")
        .args(["copy", "--from-repo"])
        .arg(src.repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TSTOR_FROM_PASSWORD"));

    let out =
        src.cmd().env("TSTOR_FROM_PASSWORD", PASSWORD).args(["copy", "--from-repo"]).arg(src.repo()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("same repository"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The source's password from a file (`--from-password-file`) or from a
/// command's first output line (`--from-password-command`), like restic's
/// `--from-*` options; a wrong one is the source's wrong password.
#[test]
fn the_source_password_comes_from_a_file_or_a_command() {
    let src = Env::new();
    let data = local_source(&src);
    let target = src.path("target");
    target_cmd(&src, &target).arg("init").assert().success();
    let pw_file = src.path("source-password");
    fs::write(&pw_file, format!("{PASSWORD}\nignored second line\n")).unwrap();
    let copy = |args: &[&std::ffi::OsStr]| {
        target_cmd(&src, &target)
            .env_remove("TSTOR_FROM_PASSWORD")
            .args(["copy", "--json", "--from-repo"])
            .arg(src.repo())
            .args(args)
            .output()
            .unwrap()
    };
    // One snapshot with the file, the other with the command.
    let first_id = src.snapshots_json()[0]["id"].as_str().unwrap().to_string();
    let by_file = json_of(
        &copy(&[os("--from-password-file").as_os_str(), pw_file.as_os_str(), os(&first_id).as_os_str()]),
        "copy --from-password-file",
    );
    assert_eq!(by_file["copied"].as_array().unwrap().len(), 1, "{by_file}");
    let command = format!("printf '%s\\n' '{PASSWORD}'");
    let by_command = json_of(
        &copy(&[os("--from-password-command").as_os_str(), os(&command).as_os_str()]),
        "copy --from-password-command",
    );
    assert_eq!(by_command["copied"].as_array().unwrap().len(), 1, "{by_command}");
    assert_eq!(by_command["skipped"].as_array().unwrap().len(), 1, "{by_command}");
    restore_latest_and_compare(|| target_cmd(&src, &target), &data, &src.path("out"));

    // A wrong password in the file: the source's wrong password, exit 12.
    fs::write(&pw_file, "not the password\n").unwrap();
    let out = copy(&[os("--from-password-file").as_os_str(), pw_file.as_os_str()]);
    assert_eq!(out.status.code(), Some(12), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("source repository"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A failing command is named.
    let out = copy(&[os("--from-password-command").as_os_str(), os("exit 7").as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit 7"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `init --from-repo SRC --copy-chunker-params`: the new repository takes
/// the source's chunker parameters and compression level, but keys and an
/// id of its own; a plain `init` takes the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_copy_chunker_params_takes_the_sources_parameters_and_keys_of_its_own() {
    use std::sync::Arc;
    use tstor::backend::local::LocalBackend;
    use tstor::chunker::ChunkerParams;
    use tstor::repo::{InitOptions, Repository};
    let src = Env::new();
    let chunker = ChunkerParams { min: 64 << 10, avg: 256 << 10, max: 1 << 20 };
    let opts = InitOptions { chunker, compression_level: 7, ..Default::default() };
    Repository::init(Arc::new(LocalBackend::new(src.repo())), PASSWORD.as_bytes(), opts).await.unwrap();
    let config = |repo: &Path, pw: &str| {
        let out = src
            .cmd()
            .env("TSTOR_REPOSITORY", repo)
            .env("TSTOR_PASSWORD", pw)
            .args(["cat", "--json", "config"])
            .output()
            .unwrap();
        json_of(&out, "cat config")
    };
    let source = config(&src.repo(), PASSWORD);

    let target = src.path("target");
    let out = target_cmd(&src, &target)
        .args(["init", "--json", "--copy-chunker-params", "--from-repo"])
        .arg(src.repo())
        .output()
        .unwrap();
    let made = json_of(&out, "init --copy-chunker-params");
    assert_eq!(made["same_keys_as_source"], false);
    let copied = config(&target, TARGET_PASSWORD);
    assert_eq!(copied["chunker"], serde_json::json!({ "min": 64 << 10, "avg": 256 << 10, "max": 1 << 20 }));
    assert_eq!(copied["chunker"], source["chunker"]);
    assert_eq!(copied["compression_level"], 7);
    assert_ne!(copied["repo_id"], source["repo_id"], "keys and id of its own");
    // The source's password does not open it.
    let out = src.cmd().env("TSTOR_REPOSITORY", &target).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(12));

    // Without the flag: the defaults.
    let plain = src.path("plain");
    target_cmd(&src, &plain).args(["init", "--from-repo"]).arg(src.repo()).assert().success();
    let defaults = ChunkerParams::default();
    assert_eq!(config(&plain, TARGET_PASSWORD)["chunker"]["avg"], defaults.avg);
    // The flag needs a source.
    let out = target_cmd(&src, &src.path("lone")).args(["init", "--copy-chunker-params"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

// ---- Telegram channels on the loopback server ----

/// A loopback server and a session for it; repositories are channels.
struct Tg {
    server: Server,
    env: Env,
    session: PathBuf,
    // Last: the server's tasks run on it until the end.
    _rt: tokio::runtime::Runtime,
}

impl Tg {
    fn start() -> Tg {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(Server::start()).unwrap();
        let env = Env::new();
        let session = env.path("telegram.session");
        let SocketAddr::V4(v4) = server.addr() else { panic!("loopback server listens on IPv4") };
        let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, v4.port());
        let v6 = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
        let mut s = TelegramSession::with_dc(server.dc_id(), v4, v6, server.auth_key());
        s.set_api_id(1).unwrap();
        s.save_to(&session).unwrap();
        Tg { server, env, session, _rt: rt }
    }

    fn cmd(&self, repo: &str) -> Command {
        let mut c = self.env.cmd();
        c.env("TSTOR_REPOSITORY", repo)
            .env("TSTOR_TG_SESSION", &self.session)
            .env("TSTOR_TG_CALLS_PER_MINUTE", "0")
            .env("TSTOR_FROM_PASSWORD", PASSWORD)
            .timeout(std::time::Duration::from_secs(300));
        c
    }

    /// Makes a repository in a new channel; returns its spec.
    fn init(&self, title: &str, args: &[&str]) -> String {
        let out = self.cmd(&format!("telegram:new:{title}")).args(["init", "--json"]).args(args).output().unwrap();
        json_of(&out, "init")["repository"].as_str().unwrap().to_string()
    }

    fn copy(&self, from: &str, to: &str) -> Value {
        json_of(&self.cmd(to).args(["copy", "--json", "--from-repo", from]).output().unwrap(), "copy")
    }

    fn chat(spec: &str) -> Where {
        Where::Channel(spec.strip_prefix("telegram:-100").unwrap().parse().unwrap())
    }

    /// The document messages of a channel: id, name, size.
    fn documents(&self, spec: &str) -> Vec<(i32, String, usize)> {
        self.server.with_world(|w| w.documents(Tg::chat(spec)))
    }
}

/// A source channel holding two snapshots of `data`.
fn telegram_source(tg: &Tg) -> (String, PathBuf) {
    let src = tg.init("source", &[]);
    let data = tg.env.path("data");
    make_data(&data, 3);
    tg.cmd(&src).args(["snapshot", "-q"]).arg(&data).assert().success();
    fs::write(data.join("new.bin"), random_bytes(700 << 10, 4)).unwrap();
    tg.cmd(&src).args(["snapshot", "-q"]).arg(&data).assert().success();
    (src, data)
}

#[test]
fn a_telegram_copy_under_the_same_keys_resends_every_pack_and_uploads_none() {
    let tg = Tg::start();
    let (src, data) = telegram_source(&tg);
    let dst = tg.init("mirror", &["--same-keys", "--from-repo", &src]);
    let src_docs: Vec<(String, usize)> = tg.documents(&src).into_iter().map(|(_, n, s)| (n, s)).collect();
    // The first re-send (after the two locks' documents) finds its file
    // reference expired: the copy fetches the source message again and
    // goes on.
    let expired = Fault::Error { code: 400, message: "FILE_REFERENCE_EXPIRED".into() };
    tg.server.inject_after("messages.sendMedia", 2, expired, 1);
    let fetches_before = tg.server.calls("channels.getMessages");
    tg.server.take_traffic();
    let first = tg.copy(&src, &dst);
    let traffic = tg.server.take_traffic();

    assert_eq!(tg.server.pending_faults(), 0);
    assert!(tg.server.calls("channels.getMessages") > fetches_before, "the source message was fetched again");
    assert_eq!(first["mode"], "same-keys");
    assert_eq!(first["copied"].as_array().unwrap().len(), 2);
    let packs = first["packs_copied"].as_u64().unwrap();
    assert!(packs >= 2, "data and tree packs: {first}");
    assert_eq!(first["packs_resent"].as_u64(), Some(packs), "every pack re-sent: {first}");
    assert_eq!(first["bytes_uploaded"], 0);
    let pack_bytes = first["bytes_copied"].as_u64().unwrap();
    assert!(pack_bytes > 1 << 20);
    // What was uploaded is the index, the snapshots, the lock and the head:
    // a few KiB, none of the packs' megabytes.
    assert!(
        traffic.part_bytes < pack_bytes / 20,
        "{} bytes of upload parts for {pack_bytes} bytes of packs",
        traffic.part_bytes
    );
    // The packs in the mirror are the source's documents, by name and size.
    let dst_docs: Vec<(String, usize)> = tg.documents(&dst).into_iter().map(|(_, n, s)| (n, s)).collect();
    let src_packs: Vec<&(String, usize)> = src_docs.iter().filter(|d| d.1 > 512 << 10).collect();
    assert!(!src_packs.is_empty());
    for p in src_packs {
        assert!(dst_docs.contains(p), "pack document {} missing from the mirror", p.0);
    }

    // Once copied, skipped: nothing re-sent, nothing uploaded.
    let second = tg.copy(&src, &dst);
    assert!(second["copied"].as_array().unwrap().is_empty());
    assert_eq!(second["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(second["packs_copied"], 0);

    // The mirror restores the very files, from an empty cache too; the
    // source still opens (the two share a cache directory, not heads).
    tg.cmd(&dst).args(["check", "--verify"]).assert().success();
    let out = tg.env.path("out");
    restore_latest_and_compare(
        || {
            let mut c = tg.cmd(&dst);
            c.arg("--no-cache");
            c
        },
        &data,
        &out,
    );
    tg.cmd(&src).args(["snapshots"]).assert().success();
    tg.cmd(&dst).args(["snapshots"]).assert().success();
}

#[test]
fn a_telegram_copy_under_other_keys_reseals_and_a_stopped_one_is_finished_by_the_next() {
    let tg = Tg::start();
    let (src, data) = telegram_source(&tg);
    let dst = tg.init("other-keys", &[]);
    // The first run fails on its second pack (after the two locks and one
    // pack): it stops before any snapshot, and the target stays valid.
    tg.server.inject_after("messages.sendMedia", 3, Fault::Error { code: 400, message: "MEDIA_INVALID".into() }, 1);
    let failed = tg.cmd(&dst).args(["copy", "--from-repo", &src]).output().unwrap();
    assert!(!failed.status.success(), "the injected failure stops the copy");
    assert_eq!(tg.server.pending_faults(), 0);
    let listed = json_of(&tg.cmd(&dst).args(["snapshots", "--json"]).output().unwrap(), "snapshots");
    assert!(listed.as_array().unwrap().is_empty());
    tg.cmd(&dst).args(["check"]).assert().success();

    let first = tg.copy(&src, &dst);
    assert_eq!(first["mode"], "reseal");
    assert_eq!(first["copied"].as_array().unwrap().len(), 2);
    assert_eq!(first["packs_resent"], 0);
    let second = tg.copy(&src, &dst);
    assert_eq!(second["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(second["bytes_uploaded"], 0);
    tg.cmd(&dst).args(["check", "--verify"]).assert().success();
    restore_latest_and_compare(|| tg.cmd(&dst), &data, &tg.env.path("out"));
}
