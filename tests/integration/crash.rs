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
    let count_packs = || {
        let mut n = 0;
        walk(&env.repo().join("packs"), &mut |_, m| n += usize::from(m.is_file()));
        n
    };
    // Kill points: right after start, and once 1, 2 and 3 more packs are stored.
    for more_packs in [0usize, 1, 2, 3] {
        let before = count_packs();
        let mut child = env.std_cmd();
        let mut child = child
            .args(["snapshot", "--quiet", "--force"])
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(120) {
                break;
            }
            if (more_packs == 0 && started.elapsed() > Duration::from_millis(20))
                || (more_packs > 0 && count_packs() >= before + more_packs)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
        let out = env.cmd().arg("check").output().unwrap();
        assert!(
            out.status.success(),
            "check after a kill with {more_packs} new packs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(count_packs() > 0, "some packs were stored before the kills");
    let summary = env.snapshot_json(&[src.as_os_str()]);
    let total: u64 = 48 * 1_500_000;
    let stored = summary["bytes_added"].as_u64().unwrap();
    // Each killed run found and reused what the runs before it stored: the
    // repository holds about one copy of the data, not one per attempt.
    let mut on_disk = 0;
    walk(&env.repo().join("packs"), &mut |_, m| on_disk += m.len());
    assert!(on_disk < total + total / 4, "{on_disk} bytes stored for {total} bytes of data");
    assert!(stored <= total, "{summary}");
    env.cmd().args(["check", "--verify"]).assert().success();
    let out = env.path("out");
    env.cmd().args(["restore", "latest", "--target"]).arg(&out).assert().success();
    for i in 0..48u64 {
        assert_eq!(fs::read(out.join(format!("data/f{i:02}"))).unwrap(), random_bytes(1_500_000, i));
    }
}
