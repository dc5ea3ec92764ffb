//! Hostile and unlucky surroundings: a damaged or full cache, costly key
//! slots, repository files other users could read, objects that expand
//! beyond reason.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::common::*;

// ---- the cache is only a cache ----

/// A repository with two snapshots (so that `diff` has something to
/// compare) and a filled cache; returns the cache file.
fn repo_with_cache(env: &Env) -> PathBuf {
    env.init();
    let src = env.path("src");
    for d in 0..40 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..4 {
            fs::write(dir.join(format!("f{f}")), random_bytes(3000, d * 10 + f)).unwrap();
        }
    }
    env.snapshot_json(&[src.as_os_str()]);
    fs::write(src.join("d0/new"), b"new").unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    cache_file(env).expect("a snapshot leaves a cache")
}

fn cache_file(env: &Env) -> Option<PathBuf> {
    let mut found = None;
    walk(&env.cache(), &mut |p, _| {
        if p.file_name().is_some_and(|n| n == "cache.redb") {
            found = Some(p.to_path_buf());
        }
    });
    found
}

/// Every command that opens the repository, each one as a user types it.
fn commands(env: &Env, restore_target: &Path) -> Vec<Vec<std::ffi::OsString>> {
    let snaps = env.snapshots_json();
    let first = snaps[0]["id"].as_str().unwrap().to_string();
    vec![
        vec![os("snapshots")],
        vec![os("ls"), os("latest")],
        vec![os("diff"), os(&first), os("latest")],
        vec![os("stats")],
        vec![os("check")],
        vec![os("restore"), os("latest"), os("--target"), os(restore_target)],
        vec![os("snapshot"), os(env.path("src"))],
    ]
}

fn cache_warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("warning") && l.contains("cache")).collect()
}

/// Runs every command against a cache damaged afresh by `damage` before each
/// one: each exits normally, with one warning line and no panic.
fn every_command_survives(damage: fn(&Path)) {
    let env = Env::new();
    let cache = repo_with_cache(&env);
    let healthy = fs::read(&cache).unwrap();
    for (i, args) in commands(&env, &env.path("restored")).into_iter().enumerate() {
        // Each command meets a damaged file of its own, without leftovers.
        for e in fs::read_dir(cache.parent().unwrap()).unwrap().flatten() {
            fs::remove_file(e.path()).unwrap();
        }
        fs::write(&cache, &healthy).unwrap();
        damage(&cache);
        let _ = fs::remove_dir_all(env.path("restored"));
        let out = env.cmd().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("`tstor {}` (command {i})", args[0].to_string_lossy());
        assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
        assert_eq!(out.status.code(), Some(0), "{what} failed:\n{stderr}");
        assert_eq!(cache_warnings(&stderr).len(), 1, "{what}: one warning line about the cache:\n{stderr}");
        let aside: Vec<_> = fs::read_dir(cache.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("cache.redb.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{what}: the damaged cache is set aside");
    }
}

#[test]
fn a_cache_cut_to_half_its_size_costs_one_warning() {
    every_command_survives(|cache| {
        let len = fs::metadata(cache).unwrap().len();
        fs::OpenOptions::new().write(true).open(cache).unwrap().set_len(len / 2).unwrap();
    });
}

#[test]
fn a_cache_cut_to_4_kib_costs_one_warning() {
    every_command_survives(|cache| {
        fs::OpenOptions::new().write(true).open(cache).unwrap().set_len(4096).unwrap();
    });
}

#[test]
fn a_cache_torn_in_the_middle_costs_one_warning() {
    every_command_survives(|cache| {
        let len = fs::metadata(cache).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(cache).unwrap();
        f.write_all_at(&vec![0u8; (len / 4) as usize], len / 4).unwrap();
    });
}

/// A tmpfs mounted for the length of a test (root only), unmounted on drop.
struct TinyFs(PathBuf);

impl TinyFs {
    fn mount(at: &Path, size: &str) -> Result<TinyFs, String> {
        if !is_root() {
            return Err("mounting a tmpfs needs root".into());
        }
        fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(TinyFs(at.to_path_buf()))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_cache_costs_one_warning() {
    let env = Env::new();
    // The repository is made with a cache elsewhere; then the cache moves to
    // a file system with no room left.
    repo_with_cache(&env);
    let tiny = match TinyFs::mount(&env.path("tiny"), "64k") {
        Ok(t) => t,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let tiny_cache = tiny.0.join("cache");
    for (i, args) in commands(&env, &env.path("restored")).into_iter().enumerate() {
        let _ = fs::remove_dir_all(&tiny_cache);
        let _ = fs::remove_dir_all(env.path("restored"));
        // Fill the file system, leaving a few KiB: enough to create the cache, not to fill it.
        let filler = tiny.0.join("filler");
        let _ = fs::remove_file(&filler);
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![1u8; 4096];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        drop(f);
        let len = fs::metadata(&filler).unwrap().len();
        fs::OpenOptions::new().write(true).open(&filler).unwrap().set_len(len.saturating_sub(16 << 10)).unwrap();
        let out = env.cmd().env("TSTOR_CACHE_DIR", &tiny_cache).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("`tstor {}` (command {i})", args[0].to_string_lossy());
        assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
        assert_eq!(out.status.code(), Some(0), "{what} failed:\n{stderr}");
        assert_eq!(cache_warnings(&stderr).len(), 1, "{what}: one warning line about the cache:\n{stderr}");
    }
}

// ---- who may read a local repository ----

#[test]
fn a_new_repository_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init();
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/f"), b"secret").unwrap();
    env.snapshot_json(&[env.path("src").as_os_str()]);
    let mut seen = 0;
    let mut check_mode = |p: &Path, m: &fs::Metadata| {
        let mode = m.permissions().mode() & 0o777;
        seen += 1;
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", p.display());
        } else if p.parent().is_some_and(|d| d.ends_with("keys")) {
            assert_eq!(mode, 0o400, "key slot {} is {mode:o}", p.display());
        } else {
            assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
        }
    };
    let root = fs::metadata(env.repo()).unwrap();
    check_mode(&env.repo(), &root);
    walk(&env.repo(), &mut check_mode);
    assert!(seen > 260, "walked the whole repository");
    let out = env.cmd().arg("check").output().unwrap();
    assert!(out.status.success());
    let all = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains("readable by other"), "no warning for a private repository:\n{all}");
    // Key removal and password change still work on read-only key files.
    let out = env.cmd().args(["key", "passwd"]).env("TSTOR_NEW_PASSWORD", "another").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_warns_when_others_can_read_the_repository() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init();
    // What an older tstor made: everything readable by everyone.
    let mut open_up = |p: &Path, m: &fs::Metadata| {
        let mode = if m.is_dir() { 0o755 } else { 0o644 };
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    };
    open_up(&env.repo(), &fs::metadata(env.repo()).unwrap());
    walk(&env.repo(), &mut open_up);
    let out = env.cmd().arg("check").output().unwrap();
    let all = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{all}");
    let warnings: Vec<&str> = all.lines().filter(|l| l.contains("readable by other")).collect();
    assert_eq!(warnings.len(), 1, "one warning line:\n{all}");
    assert!(warnings[0].contains("keys"), "it names the key slots: {}", warnings[0]);
}

// ---- measuring a child ----

/// Runs `tstor args`, sampling its peak memory (see `run_measured_cmd`).
fn run_measured(env: &Env, args: &[&str]) -> Measured {
    let mut cmd = env.std_cmd();
    cmd.args(args);
    run_measured_cmd(env, cmd, true)
}

fn open_repo(env: &Env) -> (tokio::runtime::Runtime, tstor::repo::Repository) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = open_repo_in(&rt, env);
    (rt, repo)
}

fn open_repo_in(rt: &tokio::runtime::Runtime, env: &Env) -> tstor::repo::Repository {
    use std::sync::Arc;
    use tstor::backend::local::LocalBackend;
    use tstor::backend::Backend;
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
    rt.block_on(tstor::repo::Repository::open(backend, PASSWORD.as_bytes(), None)).unwrap()
}

// ---- costly key slots ----

#[test]
fn costly_key_slots_are_tried_after_the_cheap_one() {
    use tstor::crypto::kdf::KdfParams;
    use tstor::format::key::KeySlot;
    use tstor::format::{Id, ObjectKind};
    let env = Env::new();
    env.init();
    let (rt, repo) = open_repo(&env);
    let real = rt.block_on(repo.backend().get(ObjectKind::Key, repo.key_id())).unwrap();
    let real = KeySlot::decode(&real).unwrap();
    // Slots another writer added, each costlier than the real one (64 MiB,
    // 3 passes) in memory and in work (128 MiB, 2 passes): one of them tried
    // before the real slot shows in the peak memory of `snapshots`.
    for i in 0..3u8 {
        let costly = KeySlot { m_kib: 128 << 10, t: 2, p: 1, salt: [i; 32], ..real.clone() };
        rt.block_on(repo.backend().put(ObjectKind::Key, &Id([i ^ 0x5a; 32]), costly.encode().into())).unwrap();
    }
    // Listing order is the file system's. As in the report, a costly slot
    // comes first: the real one is made anew (same password, new id) until
    // one does.
    let mut repo = repo;
    let listing = |repo: &tstor::repo::Repository| {
        rt.block_on(repo.backend().list(ObjectKind::Key)).unwrap().into_iter().map(|o| o.id).collect::<Vec<_>>()
    };
    for _ in 0..20 {
        if listing(&repo).first() != Some(repo.key_id()) {
            break;
        }
        rt.block_on(repo.replace_key(PASSWORD.as_bytes(), KdfParams::DEFAULT)).unwrap();
        repo = open_repo_in(&rt, &env);
    }
    assert_eq!(listing(&repo).len(), 4);
    assert_ne!(listing(&repo).first(), Some(repo.key_id()), "a costly slot is listed before the real one");
    drop(repo);
    let done = run_measured(&env, &["snapshots", "--no-cache"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    eprintln!("peak memory opening past costly slots: {} MiB", done.peak_rss_kib >> 10);
    assert!(
        done.peak_rss_kib < 112 << 10,
        "opening took {} MiB: a 128 MiB key slot was tried before the real one",
        done.peak_rss_kib >> 10
    );
}

// ---- objects that expand beyond reason ----

/// Seals, as repository `repo` would, an object whose envelope declares
/// `declared` bytes and holds a zstd frame of `expands_to` zero bytes (a
/// few KiB on disk); stores it under a made-up id and returns that id.
fn store_bomb(
    rt: &tokio::runtime::Runtime,
    repo: &tstor::repo::Repository,
    kind: tstor::format::ObjectKind,
    declared: u32,
    expands_to: u64,
) -> tstor::format::Id {
    use std::io::Write;
    let mut env = vec![1u8];
    env.extend_from_slice(&declared.to_le_bytes());
    let mut z = zstd::stream::Encoder::new(env, 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..expands_to >> 20 {
        z.write_all(&zeros).unwrap();
    }
    let env = z.finish().unwrap();
    assert!(env.len() < 64 << 10, "the object is small: {} bytes", env.len());
    let id = tstor::format::Id::random();
    let ad = tstor::format::associated_data(repo.repo_id(), kind.tag(), &id);
    let sealed = repo.keys().seal.seal(&ad, &env);
    rt.block_on(repo.backend().put(kind, &id, sealed.into())).unwrap();
    id
}

#[test]
fn a_small_snapshot_or_index_object_that_expands_to_a_gib_is_refused_cheaply() {
    use tstor::format::ObjectKind;
    let env = Env::new();
    env.init();
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/f"), b"data").unwrap();
    env.snapshot_json(&[env.path("src").as_os_str()]);
    let (rt, repo) = open_repo(&env);
    // Declares its full size, and declares little but expands far beyond.
    let snap_declared = store_bomb(&rt, &repo, ObjectKind::Snapshot, 1 << 30, 1 << 30);
    let snap_hidden = store_bomb(&rt, &repo, ObjectKind::Snapshot, 16 << 20, 1 << 30);
    drop(repo);
    let done = run_measured(&env, &["snapshots", "--no-cache"]);
    assert_ne!(done.code, Some(101), "{}", done.stderr);
    let all = done.stdout.clone() + &done.stderr;
    for id in [&snap_declared, &snap_hidden] {
        assert!(all.contains(&id.short()), "the refused snapshot {} is named:\n{all}", id.short());
    }
    assert!(all.contains("limit"), "the error says a limit was hit:\n{all}");
    eprintln!("peak memory refusing expanding objects: {} MiB", done.peak_rss_kib >> 10);
    assert!(done.peak_rss_kib < 200 << 10, "refusing took {} MiB", done.peak_rss_kib >> 10);

    let (rt, repo) = open_repo(&env);
    let index_bomb = store_bomb(&rt, &repo, ObjectKind::Index, 1 << 30, 1 << 30);
    drop(repo);
    let done = run_measured(&env, &["check", "--no-cache"]);
    let all = done.stdout.clone() + &done.stderr;
    assert_eq!(done.code, Some(1), "check reports the index object:\n{all}");
    assert!(all.contains(&index_bomb.short()) && all.contains("limit"), "{all}");
    eprintln!("peak memory refusing expanding objects: {} MiB", done.peak_rss_kib >> 10);
    assert!(done.peak_rss_kib < 200 << 10, "refusing took {} MiB", done.peak_rss_kib >> 10);
}
