//! Damage in the repository: `check --verify` names the pack, the blob and
//! every snapshot:path it reaches; a restore brings back everything else and
//! leaves no damaged file behind.

use std::fs;

use crate::common::*;

fn packs(env: &Env) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    walk(&env.repo().join("packs"), &mut |p, m| {
        if m.is_file() {
            out.push(p.to_path_buf())
        }
    });
    out
}

/// Two snapshots of the same source sharing every blob.
pub(crate) fn setup() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("work");
    fs::create_dir_all(src.join("docs")).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("docs/file{i}.bin")), random_bytes(400_000, i)).unwrap();
    }
    fs::write(src.join("big.bin"), random_bytes(6 << 20, 77)).unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    env.snapshot_json(&[std::ffi::OsStr::new("--force"), src.as_os_str()]);
    (env, src)
}

#[test]
fn a_flipped_byte_is_found_and_the_affected_files_named() {
    let (env, src) = setup();
    env.cmd().args(["check", "--verify"]).assert().success();
    // The largest pack holds file data; flip one byte in its middle.
    let pack = packs(&env).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();

    // Structure alone does not read pack contents.
    env.cmd().arg("check").assert().success();

    let out = env.cmd().args(["check", "--verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(&format!("pack {pack_name}")), "{err}");
    assert!(err.contains("blob "), "{err}");
    let json = env.cmd().args(["check", "--verify", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let damaged: Vec<String> =
        report["damaged_paths"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert!(!damaged.is_empty());
    // Both snapshots share the blob, so each names the file.
    let snaps = env.snapshots_json();
    for s in &snaps {
        let short = s["short_id"].as_str().unwrap();
        assert!(damaged.iter().any(|d| d.starts_with(&format!("{short}:work/"))), "{damaged:?}");
    }
    for d in &damaged {
        assert!(err.contains(&format!("damaged: {d}")), "{err}");
    }
    let damaged_files: Vec<String> = damaged
        .iter()
        .map(|d| d.split_once(':').unwrap().1.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();

    // Restore brings back every undamaged file and names the damaged ones.
    let out_dir = env.path("out");
    let out = env.cmd().args(["restore", "latest", "--target"]).arg(&out_dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let mut restored = 0;
    for rel in [
        "big.bin",
        "docs/file0.bin",
        "docs/file1.bin",
        "docs/file2.bin",
        "docs/file3.bin",
        "docs/file4.bin",
        "docs/file5.bin",
    ] {
        let path = format!("work/{rel}");
        if damaged_files.contains(&path) {
            assert!(err.contains(&path), "{err}");
            assert!(!out_dir.join(&path).exists(), "a damaged file was left behind: {path}");
        } else {
            assert_eq!(fs::read(out_dir.join(&path)).unwrap(), fs::read(src.join(rel)).unwrap(), "{path}");
            restored += 1;
        }
    }
    assert!(restored >= 5);
}

#[test]
fn missing_and_truncated_packs_are_reported() {
    let (env, _src) = setup();
    let all = packs(&env);
    let victim = all.iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let bytes = fs::read(victim).unwrap();
    fs::write(victim, &bytes[..bytes.len() - 100]).unwrap();
    let out = env.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the index says"));
    let out = env.cmd().args(["check", "--verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    fs::remove_file(victim).unwrap();
    let out = env.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pack is missing from storage"), "{err}");
    assert!(err.contains("damaged: "), "{err}");
}

#[test]
fn verify_subset_checks_part_of_the_packs() {
    let (env, _src) = setup();
    let total = packs(&env).len();
    let out = env.cmd().args(["check", "--verify-subset", "1%", "--json"]).output().unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_verified"], 1);
    let out = env.cmd().args(["check", "--verify-subset", "100%", "--json"]).output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_verified"].as_u64().unwrap() as usize, total);
    let out = env.cmd().args(["check", "--verify-subset", "1KiB", "--json"]).output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_verified"], 1);
    env.cmd().args(["check", "--verify-subset", "lots"]).assert().failure();
}
