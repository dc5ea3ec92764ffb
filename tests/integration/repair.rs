//! Repairs heal and never lose: `repair packs` rewrites damaged or missing
//! packs so that the next snapshot stores the lost blobs again and every
//! snapshot checks clean; `repair index` keeps every blob that could be read
//! before it (a deleted tree pack, a damaged pack header, a truncated pack),
//! counted as files restorable across the snapshots taken before it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tstor::backend::faults::FaultyBackend;
use tstor::backend::local::LocalBackend;
use tstor::backend::Backend;
use tstor::format::{Id, ObjectKind};
use tstor::repo::Repository;

use crate::common::*;

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn pack_files(env: &Env) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&env.repo().join("packs"), &mut |p, m| {
        if m.is_file() {
            out.push(p.to_path_buf())
        }
    });
    out.sort();
    out
}

fn pack_file(env: &Env, id: &Id) -> PathBuf {
    let hex = id.to_hex();
    pack_files(env).into_iter().find(|p| p.file_name().unwrap().to_str() == Some(&hex)).expect("pack file")
}

fn check_verify_ok(env: &Env, when: &str) {
    let out = env.cmd().args(["check", "--verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "check --verify {when}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens the repository in-process (no cache) for lookups.
fn with_repo<T>(env: &Env, f: impl AsyncFnOnce(&Repository) -> T) -> T {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(env.repo()));
        let repo = Repository::open(backend, PASSWORD.as_bytes(), None).await.unwrap();
        f(&repo).await
    })
}

/// The pack that holds the first blob of `path` in snapshot number `nth`
/// (oldest first), or, for `path` "", the pack of that snapshot's root tree.
fn pack_of(env: &Env, nth: usize, path: &str) -> Id {
    with_repo(env, async |repo| {
        let index = repo.load_index().await.unwrap();
        let (snaps, _) = repo.snapshots().await.unwrap();
        let mut tree = snaps[nth].1.tree;
        if path.is_empty() {
            return index.lookup(&tree).unwrap().pack;
        }
        let parts: Vec<&str> = path.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let t = repo.load_tree_from_storage(&index, &tree).await.unwrap();
            let node = t.find(part.as_bytes()).unwrap_or_else(|| panic!("{path}: no {part}"));
            if i + 1 == parts.len() {
                return index.lookup(&node.content[0]).unwrap().pack;
            }
            tree = node.subtree.unwrap();
        }
        unreachable!()
    })
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.snapshots_json().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// Files restored from the snapshots `ids`, counted (each snapshot restored on its own).
fn restorable_files(env: &Env, label: &str, ids: &[String]) -> usize {
    let mut total = 0;
    for (i, id) in ids.iter().enumerate() {
        let target = env.path(&format!("count-{label}-{i}"));
        let _ = env.cmd().args(["restore", id, "--target"]).arg(&target).output().unwrap();
        walk(&target, &mut |_, m| total += usize::from(m.is_file()));
        fs::remove_dir_all(&target).ok();
    }
    total
}

/// A source changed between three snapshots: old snapshots hold trees and
/// file contents that the newest one no longer has.
fn three_snapshots() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("work");
    for d in ["a", "b", "c"] {
        fs::create_dir_all(src.join(d)).unwrap();
        for i in 0..8u64 {
            let seed = d.as_bytes()[0] as u64 * 100 + i;
            fs::write(src.join(format!("{d}/f{i}")), random_bytes(20_000 + i as usize * 3000, seed)).unwrap();
        }
    }
    fs::write(src.join("a/big"), random_bytes(3 << 20, 5)).unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    for i in 0..8u64 {
        fs::write(src.join(format!("a/f{i}")), random_bytes(25_000, 1000 + i)).unwrap();
    }
    fs::write(src.join("a/big"), random_bytes(3 << 20, 6)).unwrap();
    fs::write(src.join("b/new"), random_bytes(10_000, 2000)).unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    for i in 0..4u64 {
        fs::write(src.join(format!("b/f{i}")), random_bytes(30_000, 3000 + i)).unwrap();
    }
    fs::remove_file(src.join("c/f0")).unwrap();
    env.snapshot_json(&[src.as_os_str()]);
    (env, src)
}

/// Runs `repair index` and a snapshot of `src`; returns the repair's report.
fn repair_index_then_snapshot(env: &Env, src: &Path) -> serde_json::Value {
    let out = env.cmd().args(["repair", "index", "--json"]).output().unwrap();
    let report = json_of(&out);
    env.snapshot_json(&[src.as_os_str()]);
    report
}

#[test]
fn repair_index_keeps_trees_of_a_deleted_tree_pack_that_the_cache_holds() {
    let (env, src) = three_snapshots();
    // Counted over these snapshots; the one taken after the repair only adds.
    let old = snapshot_ids(&env);
    // The trees of every snapshot have been read once (and so cached).
    let all = restorable_files(&env, "fresh", &old);
    let victim = pack_of(&env, 0, "");
    fs::remove_file(pack_file(&env, &victim)).unwrap();
    let before = restorable_files(&env, "before", &old);
    assert_eq!(before, all, "the cache still serves the deleted trees");

    let report = repair_index_then_snapshot(&env, &src);
    let after = restorable_files(&env, "after", &old);
    eprintln!("deleted tree pack: {before} restorable files before `repair index` + snapshot, {after} after");
    assert!(after >= before, "repair index lost files: {before} before, {after} after; {report}");
    assert!(report["trees_from_cache"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["lost"].as_array().unwrap().len(), 0, "{report}");
    check_verify_ok(&env, "after the repair");
}

#[test]
fn repair_index_keeps_the_blobs_of_a_pack_whose_header_is_damaged() {
    let (env, src) = three_snapshots();
    // Counted over these snapshots; the one taken after the repair only adds.
    let old = snapshot_ids(&env);
    // The data pack of the first snapshot: its `a/` files changed since.
    let victim = pack_of(&env, 0, "work/a/f0");
    let file = pack_file(&env, &victim);
    let mut bytes = fs::read(&file).unwrap();
    let header_len = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
    let at = bytes.len() - 4 - header_len / 2;
    bytes[at] ^= 0x08;
    fs::write(&file, &bytes).unwrap();
    let before = restorable_files(&env, "before", &old);

    let report = repair_index_then_snapshot(&env, &src);
    let after = restorable_files(&env, "after", &old);
    eprintln!(
        "flipped bit in a pack header: {before} restorable files before `repair index` + snapshot, {after} after"
    );
    assert!(after >= before, "repair index lost files: {before} before, {after} after; {report}");
    assert!(report["blobs_kept_from_old_index"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["lost"].as_array().unwrap().len(), 0, "{report}");
    let unreadable = report["unreadable"].to_string();
    assert!(unreadable.contains(&victim.to_hex()), "{report}");

    // `repair packs` then rewrites the pack: everything checks clean.
    let out = env.cmd().args(["repair", "packs", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let healed = json_of(&out);
    assert_eq!(healed["damaged"][0]["pack"], victim.to_hex(), "{healed}");
    assert!(!file.exists());
    check_verify_ok(&env, "after repair packs");
    assert!(restorable_files(&env, "healed", &old) >= before);
}

#[test]
fn repair_index_keeps_the_intact_blobs_of_a_truncated_pack_and_names_the_lost_ones() {
    let (env, src) = three_snapshots();
    // Counted over these snapshots; the one taken after the repair only adds.
    let old = snapshot_ids(&env);
    let victim = pack_of(&env, 0, "work/a/f0");
    let file = pack_file(&env, &victim);
    let bytes = fs::read(&file).unwrap();
    let header_len = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
    // The header, its length and the end of the last blob are cut off.
    fs::write(&file, &bytes[..bytes.len() - 4 - header_len - 1000]).unwrap();
    let before = restorable_files(&env, "before", &old);

    let out = env.cmd().args(["repair", "index", "--json"]).output().unwrap();
    let report = json_of(&out);
    env.snapshot_json(&[src.as_os_str()]);
    let after = restorable_files(&env, "after", &old);
    eprintln!("truncated pack: {before} restorable files before `repair index` + snapshot, {after} after");
    assert!(after >= before, "repair index lost files: {before} before, {after} after; {report}");
    // The blob cut short is reported, with the paths that need it.
    assert_eq!(out.status.code(), Some(1), "a blob was lost: {report}");
    let lost = report["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{report}");
    assert_eq!(lost[0]["pack"], victim.to_hex());
    assert!(!report["damaged_paths"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["blobs_kept_from_old_index"].as_u64().unwrap() > 0, "{report}");
}

fn largest_pack(env: &Env) -> PathBuf {
    pack_files(env).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap()
}

fn assert_every_snapshot_restores(env: &Env, src: &Path) {
    for (i, s) in env.snapshots_json().iter().enumerate() {
        let id = s["id"].as_str().unwrap().to_string();
        let target = env.path(&format!("restored-{i}"));
        let out = env.cmd().args(["restore", &id, "--verify", "--target"]).arg(&target).output().unwrap();
        assert!(out.status.success(), "restore {id}: {}", String::from_utf8_lossy(&out.stderr));
        assert_same_tree(src, &target.join("work"));
    }
}

#[test]
fn a_flipped_bit_in_a_data_pack_is_healed_by_repair_packs_and_the_next_snapshot() {
    let (env, src) = crate::damage::setup();
    let file = largest_pack(&env);
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&file, &bytes).unwrap();
    let out = env.cmd().args(["check", "--verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("`tstor repair packs {name}`")), "check names the repair: {err}");

    // Naming a healthy pack changes nothing.
    let healthy = pack_files(&env).into_iter().find(|p| *p != file).unwrap();
    let healthy_name = healthy.file_name().unwrap().to_str().unwrap().to_string();
    let listing = env.repo_listing();
    let out = env.cmd().args(["repair", "packs", "--json", &healthy_name[..16]]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!((report["packs_checked"].as_u64(), report["damaged"].as_array().unwrap().len()), (Some(1), 0));
    assert_eq!(env.repo_listing(), listing, "repairing a healthy pack changed the repository");

    let out = env.cmd().args(["repair", "packs", "--json"]).output().unwrap();
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "a blob was lost: {report}");
    assert_eq!(report["damaged"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["damaged"][0]["pack"], name.as_str());
    assert_eq!(report["lost"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["blobs_salvaged"].as_u64().unwrap() > 0, "the intact blobs are kept: {report}");
    let paths: Vec<&str> = report["damaged_paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(paths.len(), 2, "one file in each snapshot: {report}");
    assert!(!file.exists(), "the damaged pack is deleted");

    // The next snapshot stores the lost blob again; every snapshot is whole.
    let snap = env.snapshot_json(&[src.as_os_str()]);
    assert!(snap["data_blobs_added"].as_u64().unwrap() > 0, "{snap}");
    check_verify_ok(&env, "after repair packs and a snapshot");
    assert_every_snapshot_restores(&env, &src);
    // Nothing left to repair.
    let again = json_of(&env.cmd().args(["repair", "packs", "--json"]).output().unwrap());
    assert_eq!(again["damaged"].as_array().unwrap().len(), 0, "{again}");
}

#[test]
fn a_pack_missing_from_storage_is_healed_by_repair_packs_and_the_next_snapshot() {
    let (env, src) = crate::damage::setup();
    fs::remove_file(largest_pack(&env)).unwrap();
    assert_eq!(env.cmd().arg("check").output().unwrap().status.code(), Some(1));
    let out = env.cmd().args(["repair", "packs"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("missing from storage"), "{err}");
    assert!(err.contains("damaged: "), "{err}");
    env.snapshot_json(&[src.as_os_str()]);
    check_verify_ok(&env, "after repair packs and a snapshot");
    assert_every_snapshot_restores(&env, &src);
}

#[test]
fn repair_packs_refuses_ids_that_name_no_pack() {
    let (env, _src) = crate::damage::setup();
    let listing = env.repo_listing();
    for bad in ["zz", "0000000000000000000000000000000000000000000000000000000000000000ff"] {
        let out = env.cmd().args(["repair", "packs", bad]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(env.repo_listing(), listing);
}

#[test]
fn repair_packs_interrupted_before_deleting_leaves_a_valid_repository_and_a_second_run_converges() {
    let (env, src) = crate::damage::setup();
    let file = largest_pack(&env);
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&file, &bytes).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let faulty = Arc::new(FaultyBackend::new(LocalBackend::new(env.repo())));
        let backend: Arc<dyn Backend> = faulty.clone();
        let repo = Repository::open(backend, PASSWORD.as_bytes(), None).await.unwrap();
        // The new index is written, the old ones deleted; deleting the pack fails.
        let indexes = repo.backend().list(ObjectKind::Index).await.unwrap().len() as u64;
        faulty.set_delete_budget(Some(indexes));
        assert!(tstor::ops::repair::repair_packs(&repo, &[]).await.is_err());
        faulty.set_delete_budget(None);
    });
    assert!(file.exists(), "the damaged pack is still there");
    // The lock of the interrupted run could not be deleted either.
    env.cmd().args(["unlock", "--remove-all"]).assert().success();
    // The index no longer lists the pack: structure checks clean.
    let out = env.cmd().args(["check", "--json"]).output().unwrap();
    let report = json_of(&out);
    let problems = report["problems"].as_array().unwrap();
    assert!(problems.iter().all(|p| p["message"].as_str().unwrap().contains("not in the index")), "{report}");

    let out = env.cmd().args(["repair", "packs", "--json"]).output().unwrap();
    let second = json_of(&out);
    assert_eq!(second["packs_deleted"], 1, "{second}");
    assert!(!file.exists());
    env.snapshot_json(&[src.as_os_str()]);
    check_verify_ok(&env, "after the second repair and a snapshot");
    assert_every_snapshot_restores(&env, &src);
}
