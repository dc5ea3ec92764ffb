//! Crash safety: a snapshot killed with SIGKILL at any moment leaves a
//! repository that checks clean, and the next snapshot completes and reuses
//! what was already stored.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

#[test]
fn snapshots_killed_at_several_points_leave_a_consistent_repository() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    for i in 0..48u64 {
        fs::write(src.join(format!("f{i:02}")), random_bytes(1_500_000, i)).unwrap();
    }
    let bin = assert_cmd::cargo::cargo_bin("tstor");
    for delay_ms in [5u64, 40, 120, 250, 500, 900] {
        let mut child = std::process::Command::new(&bin)
            .env("TSTOR_REPOSITORY", env.repo())
            .env("TSTOR_CACHE_DIR", env.cache())
            .env("TSTOR_PASSWORD", PASSWORD)
            .args(["snapshot", "--quiet", "--force"])
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = env.cmd().arg("check").output().unwrap();
        assert!(out.status.success(), "check after a kill at {delay_ms} ms: {}", String::from_utf8_lossy(&out.stderr));
    }
    let summary = env.snapshot_json(&[src.as_os_str()]);
    let total: u64 = 48 * 1_500_000;
    let stored = summary["bytes_added"].as_u64().unwrap();
    let reused = summary["recovered_packs"].as_u64().unwrap() > 0 || stored < total || env.snapshots_json().len() > 1;
    assert!(reused, "nothing of the killed runs was reused: {summary}");
    env.cmd().args(["check", "--verify"]).assert().success();
    let out = env.path("out");
    env.cmd().args(["restore", "latest", "--target"]).arg(&out).assert().success();
    for i in 0..48u64 {
        assert_eq!(fs::read(out.join(format!("data/f{i:02}"))).unwrap(), random_bytes(1_500_000, i));
    }
}
