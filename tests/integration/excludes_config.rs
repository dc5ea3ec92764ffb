//! Excludes of `snapshot` (patterns, pattern files, `.tstorignore`, marker
//! files, sizes), the configuration file with profiles and its precedence,
//! and shell completions, all through the binary.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

use crate::common::*;

const CACHEDIR_TAG: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55\n# This directory is a cache.\n";

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Every path below `root`, relative, directories with a trailing `/`.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(root, &mut |p, m| {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        out.insert(if m.is_dir() { format!("{rel}/") } else { rel });
    });
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Snapshots `src` with `args` and returns what a restore of it holds.
fn snapshot_and_restore(env: &Env, src: &Path, args: &[&OsStr], out: &str) -> BTreeSet<String> {
    let mut all: Vec<&OsStr> = args.to_vec();
    all.push(src.as_os_str());
    env.snapshot_json(&all);
    let target = env.path(out);
    env.cmd().args(["restore", "latest", "--target"]).arg(&target).assert().success();
    tree(&target.join(src.file_name().unwrap()))
}

/// `tstor ls latest` as a set of paths.
fn listing(cmd: &mut Command) -> BTreeSet<String> {
    let out = cmd.args(["ls", "latest"]).output().unwrap();
    assert!(out.status.success(), "ls failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

#[test]
fn exclude_patterns_negation_anchoring_and_case() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for f in ["a.log", "keep.log", "main.rs", "Photo.JPG", "photo.jpg", "notes.TXT", "build/out.o", "sub/build/x"] {
        write(&src.join(f), b"x");
    }
    write(&src.join("sub/cache/c"), b"x");
    write(&src.join("cache"), b"a file named cache");
    write(&src.join("deep/er/skip.me"), b"x");
    write(&src.join("skip.me"), b"x");
    let ex = env.path("ex.txt");
    fs::write(&ex, "# comments and blank lines are skipped\n\n*.JPG\n").unwrap();
    let iex = env.path("iex.txt");
    fs::write(&iex, "*.txt\n").unwrap();
    let anchored = format!("{}/deep/er", src.display());
    let flags = [
        "--exclude",
        "*.log",
        "--exclude",
        "!keep.log",
        "--exclude",
        "cache/",
        "--exclude",
        "sub/build",
        "--exclude",
        &anchored,
        "--exclude-file",
        ex.to_str().unwrap(),
        "--iexclude-file",
        iex.to_str().unwrap(),
    ];
    let args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
    let got = snapshot_and_restore(&env, &src, &args, "out");
    assert_eq!(
        got,
        set(&["build/", "build/out.o", "cache", "deep/", "keep.log", "main.rs", "photo.jpg", "skip.me", "sub/"]),
        "*.log but keep.log; directory-only cache/; sub/build at any depth; an absolute path; \
         *.JPG from a file (case-sensitive); *.txt from an --iexclude-file"
    );

    // --iexclude on the command line: every case of the extension goes.
    let got = snapshot_and_restore(&env, &src, &[OsStr::new("--iexclude"), OsStr::new("*.jpg")], "out2");
    assert!(!got.contains("Photo.JPG") && !got.contains("photo.jpg"), "{got:?}");
    assert!(got.contains("notes.TXT") && got.contains("a.log"), "{got:?}");
    // --exclude is case-sensitive.
    let got = snapshot_and_restore(&env, &src, &[OsStr::new("--exclude"), OsStr::new("*.jpg")], "out3");
    assert!(got.contains("Photo.JPG") && !got.contains("photo.jpg"), "{got:?}");
}

#[test]
fn tstorignore_files_apply_to_their_directory_and_below() {
    let env = Env::new();
    env.init();
    let src = env.path("proj");
    write(&src.join(".tstorignore"), b"# top level\n*.log\n!important.log\n/tmp/\nsecret.txt\n");
    for f in ["a.log", "important.log", "tmp/t", "keep.txt", "secret.txt"] {
        write(&src.join(f), b"x");
    }
    // Anchored `/tmp/` is only the top-level one.
    write(&src.join("lib/tmp/kept"), b"x");
    // A nested file re-includes one name and adds a rule of its own.
    write(&src.join("lib/.tstorignore"), b"!debug.log\n*.bin\n");
    for f in ["lib/debug.log", "lib/other.log", "lib/x.bin", "lib/deeper/y.bin", "lib/deeper/secret.txt", "lib/ok.rs"] {
        write(&src.join(f), b"x");
    }
    // The nested rules stay below their directory.
    write(&src.join("top.bin"), b"x");
    let got = snapshot_and_restore(&env, &src, &[], "out");
    assert_eq!(
        got,
        set(&[
            ".tstorignore",
            "important.log",
            "keep.txt",
            "lib/",
            "lib/.tstorignore",
            "lib/debug.log",
            "lib/deeper/",
            "lib/ok.rs",
            "lib/tmp/",
            "lib/tmp/kept",
            "top.bin",
        ])
    );
}

#[test]
fn cachedir_tags_and_marker_files_leave_directories_out() {
    let env = Env::new();
    env.init();
    let src = env.path("home");
    write(&src.join("cache/CACHEDIR.TAG"), CACHEDIR_TAG);
    write(&src.join("cache/blob"), b"x");
    write(&src.join("notcache/CACHEDIR.TAG"), b"Signature: not the right one\n");
    write(&src.join("notcache/blob"), b"x");
    write(&src.join("scratch/.nobackup"), b"");
    write(&src.join("scratch/big"), b"x");
    write(&src.join("work/file"), b"x");
    let cmd_line = [OsStr::new("--exclude-caches"), OsStr::new("--exclude-if-present"), OsStr::new(".nobackup")];
    let got = snapshot_and_restore(&env, &src, &cmd_line, "out");
    assert_eq!(got, set(&["notcache/", "notcache/CACHEDIR.TAG", "notcache/blob", "work/", "work/file"]));

    // Without the flags everything is there; `ls` shows the same.
    let got = snapshot_and_restore(&env, &src, &[], "out2");
    assert!(got.contains("cache/blob") && got.contains("scratch/big"), "{got:?}");
    let listed = listing(&mut env.cmd());
    assert!(listed.contains("/home/cache/CACHEDIR.TAG"), "{listed:?}");

    // The excluded directories are logged at debug with the reason.
    let out = env
        .cmd()
        .env("TSTOR_LOG", "debug")
        .args(["snapshot", "--quiet", "--exclude-caches", "--exclude-if-present", ".nobackup"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("excluded") && log.contains("CACHEDIR.TAG"), "{log}");
    assert!(log.contains("holds .nobackup"), "{log}");
}

#[test]
fn exclude_larger_than_applies_to_files_only() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("small"), &vec![1u8; 1000]);
    write(&src.join("exact"), &vec![2u8; 1024]);
    write(&src.join("big"), &vec![3u8; 1025]);
    write(&src.join("dir/huge"), &random_bytes(3 << 20, 4));
    write(&src.join("dir/tiny"), b"t");
    let got = snapshot_and_restore(&env, &src, &[OsStr::new("--exclude-larger-than"), OsStr::new("1K")], "out");
    assert_eq!(got, set(&["dir/", "dir/tiny", "exact", "small"]));
    let listed = listing(&mut env.cmd());
    assert_eq!(listed, set(&["/data", "/data/dir", "/data/dir/tiny", "/data/exact", "/data/small"]));
    // A size that is not one is refused by the command line.
    env.cmd().args(["snapshot", "--exclude-larger-than", "lots"]).arg(&src).assert().code(2);
}

#[test]
fn bad_exclude_patterns_and_files_are_errors() {
    let env = Env::new();
    env.init();
    let src = env.path("s");
    write(&src.join("f"), b"x");
    let out = env.cmd().args(["snapshot", "--exclude", "a{"]).arg(&src).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a{"));
    let out = env.cmd().args(["snapshot", "--exclude-file"]).arg(env.path("nope")).arg(&src).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    assert!(env.snapshots_json().is_empty());
}

// ---- configuration file ----

/// `tstor` with no repository, password or cache in the environment: only
/// what the configuration file (under `<dir>/xdg/tstor/`) says.
fn bare(env: &Env) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("tstor"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.path("home"))
        .env("XDG_CONFIG_HOME", env.path("xdg"))
        .env("XDG_CACHE_HOME", env.path("xdg-cache"))
        .env("XDG_DATA_HOME", env.path("xdg-data"));
    c
}

fn default_config(env: &Env) -> PathBuf {
    env.path("xdg/tstor/config.toml")
}

/// A configuration whose `work` profile holds everything a cron line needs.
fn work_config(env: &Env) {
    write(&env.path("secrets/pass"), format!("{PASSWORD}\n").as_bytes());
    write(&env.path("secrets/wrong"), b"not it\n");
    let text = format!(
        r#"
# The top level: defaults for every profile.
exclude = ["*.tmp"]
exclude-caches = true
keep-last = 1

[profiles.work]
repository = "{repo}"
password-file = "{dir}/secrets/pass"
cache-dir = "{dir}/cache"
paths = ["{dir}/work", "{dir}/notes"]
exclude = ["node_modules/"]
iexclude = ["*.iso"]
exclude-if-present = [".nobackup"]
exclude-larger-than = "1M"
keep-last = 2

[profiles.work.telegram]
session = "~/tg.session"

[profiles.other]
repository = "{dir}/other-repo"
"#,
        repo = env.repo().display(),
        dir = env.dir.path().display(),
    );
    write(&default_config(env), text.as_bytes());
    write(&env.path("work/main.rs"), b"fn main() {}");
    write(&env.path("work/scratch.tmp"), b"x");
    write(&env.path("work/node_modules/dep.js"), b"x");
    write(&env.path("work/disk.ISO"), b"x");
    write(&env.path("work/big.bin"), &random_bytes(2 << 20, 7));
    write(&env.path("work/cache/CACHEDIR.TAG"), CACHEDIR_TAG);
    write(&env.path("work/private/.nobackup"), b"");
    write(&env.path("notes/todo.md"), b"- back up");
}

#[test]
fn a_profile_makes_snapshot_a_whole_cron_line() {
    let env = Env::new();
    work_config(&env);
    bare(&env).args(["-P", "work", "init"]).assert().success();
    assert!(env.repo().is_dir(), "the profile's repository was created");
    let out = bare(&env).args(["-P", "work", "snapshot", "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The profile's cache directory was used.
    assert!(env.path("cache").exists());
    let listed = listing(bare(&env).args(["--profile", "work"]));
    assert_eq!(listed, set(&["/notes", "/notes/todo.md", "/work", "/work/main.rs"]));
    // TSTOR_PROFILE selects it too; the retention policy comes from the profile (keep-last = 2).
    bare(&env).env("TSTOR_PROFILE", "work").args(["snapshot", "--quiet"]).assert().success();
    bare(&env).env("TSTOR_PROFILE", "work").args(["snapshot", "--quiet"]).assert().success();
    let out = bare(&env).args(["-P", "work", "forget", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["policy"].as_str().unwrap().contains('2'), "{v}");
    // Flags still win over the configured policy.
    let out = bare(&env).args(["-P", "work", "forget", "--keep-last", "1", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn flags_and_environment_override_the_profile() {
    let env = Env::new();
    work_config(&env);
    bare(&env).args(["-P", "work", "init"]).assert().success();
    // Paths on the command line replace the profile's; its excludes still apply,
    // and command-line excludes add to them.
    let only = env.path("work");
    bare(&env).args(["-P", "work", "snapshot", "--quiet", "--exclude", "main.rs"]).arg(&only).assert().success();
    assert_eq!(listing(bare(&env).args(["-P", "work"])), set(&["/work"]));
    // A flag's size limit replaces the profile's.
    bare(&env)
        .args(["-P", "work", "snapshot", "--quiet", "--exclude-larger-than", "10M"])
        .arg(&only)
        .assert()
        .success();
    assert_eq!(listing(bare(&env).args(["-P", "work"])), set(&["/work", "/work/big.bin", "/work/main.rs"]));
    // --repo beats the profile's repository: there is none at that path.
    bare(&env).args(["-P", "work", "--repo"]).arg(env.path("elsewhere")).arg("snapshots").assert().code(10);
    // So does TSTOR_REPOSITORY.
    bare(&env).env("TSTOR_REPOSITORY", env.path("elsewhere")).args(["-P", "work", "snapshots"]).assert().code(10);
    // The password: a flag, then the environment, beat the profile's file.
    bare(&env)
        .args(["-P", "work", "--password-file"])
        .arg(env.path("secrets/wrong"))
        .arg("snapshots")
        .assert()
        .code(12);
    bare(&env).env("TSTOR_PASSWORD", "wrong").args(["-P", "work", "snapshots"]).assert().code(12);
    bare(&env).env("TSTOR_PASSWORD_COMMAND", "echo wrong").args(["-P", "work", "snapshots"]).assert().code(12);
    // Another profile: the top level's settings, its own repository.
    bare(&env).args(["-P", "other", "snapshots"]).assert().failure();
    // Without a profile the top level alone has no repository: the built-in one (absent here).
    bare(&env).env("TSTOR_PASSWORD", PASSWORD).arg("snapshots").assert().code(10);
}

#[test]
fn config_errors_name_the_file_and_line() {
    let env = Env::new();
    // A malformed default file.
    write(&default_config(&env), b"repository = \"/x\"\n\n[profiles.work]\nexlcude = [\"*.o\"]\n");
    let out = bare(&env).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&default_config(&env).display().to_string()), "{err}");
    assert!(err.contains("line 4") && err.contains("exlcude"), "{err}");
    // Broken TOML, through --config.
    let f = env.path("broken.toml");
    fs::write(&f, "keep-daily = 7\nrepository = [\"unclosed\"\n").unwrap();
    let out = bare(&env).arg("--config").arg(&f).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml") && err.contains("line 2"), "{err}");
    // A value of the wrong kind.
    fs::write(&f, "exclude-larger-than = \"huge\"\n").unwrap();
    let err = bare(&env).env("TSTOR_CONFIG", &f).arg("snapshots").output().unwrap().stderr;
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("broken.toml, line 1") && err.contains("huge"), "{err}");
    // A missing --config file.
    let out = bare(&env).arg("--config").arg(env.path("missing.toml")).arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    // An unknown profile names the known ones.
    fs::write(&f, "[profiles.home]\n[profiles.work]\n").unwrap();
    let out = bare(&env).arg("--config").arg(&f).args(["-P", "office", "snapshots"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("office") && err.contains("home, work"), "{err}");
    // A profile without any config file.
    fs::remove_file(default_config(&env)).unwrap();
    let out = bare(&env).args(["-P", "work", "snapshots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no config file"));
}

#[test]
fn a_missing_default_config_is_fine_and_a_literal_password_warns() {
    let env = Env::new();
    env.init();
    // No file at the default location: the environment alone works.
    bare(&env).env("TSTOR_REPOSITORY", env.repo()).env("TSTOR_PASSWORD", PASSWORD).arg("snapshots").assert().success();
    write(
        &default_config(&env),
        format!("repository = \"{}\"\npassword = \"{PASSWORD}\"\n", env.repo().display()).as_bytes(),
    );
    let out = bare(&env).arg("snapshots").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    // No warning when the environment gives the password instead.
    let out = bare(&env).env("TSTOR_PASSWORD", PASSWORD).arg("snapshots").output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn snapshot_without_paths_anywhere_is_an_error() {
    let env = Env::new();
    env.init();
    let out = env.cmd().arg("snapshot").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to back up"));
}

#[test]
fn completions_for_each_shell() {
    let env = Env::new();
    // A broken configuration does not get in the way of completions.
    write(&default_config(&env), b"this is not toml");
    for (shell, marker) in [("bash", "complete"), ("zsh", "#compdef tstor"), ("fish", "complete -c tstor")] {
        let out = bare(&env).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker) && text.contains("exclude-if-present"), "{shell}: {text}");
    }
    bare(&env).args(["completions", "tcsh"]).assert().code(2);
}

#[test]
fn the_cache_directory_is_tagged_and_left_out_by_exclude_caches() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("kept"), b"kept");
    env.cmd().args(["snapshot", "--quiet"]).arg(&src).assert().success();
    let tag = fs::read(env.cache().join("CACHEDIR.TAG")).expect("the cache directory carries a CACHEDIR.TAG");
    assert!(tag.starts_with(b"Signature: 8a477f597d28d172789f06886806bc55"), "{}", String::from_utf8_lossy(&tag));
    // A backup of a directory that holds a copy of the cache leaves it out,
    // and with it the repository's cache file.
    let home = env.path("home");
    write(&home.join("notes"), b"notes");
    let copied = std::process::Command::new("cp").arg("-a").arg(env.cache()).arg(home.join("cache")).status().unwrap();
    assert!(copied.success());
    let restored = snapshot_and_restore(&env, &home, &[OsStr::new("--exclude-caches")], "out");
    assert!(restored.contains("notes"), "{restored:?}");
    assert!(!restored.iter().any(|p| p.starts_with("cache/") && p != "cache/"), "{restored:?}");
}
