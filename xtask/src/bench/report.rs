//! The benchmark's output: the results table, tstor/restic ratios per step
//! and the JSON results file.

use super::json::Json;
use super::{mib, Run, Step, StepResult};

fn find<'a>(run: &'a Run, tool: &str, step: Step) -> Option<&'a StepResult> {
    run.results.iter().find(|r| r.tool == tool && r.step == step)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".to_string()
    }
}

pub fn print(run: &Run) {
    println!(
        "\ndata: {} files, {:.1} MiB (target {:.0} MiB, seed {}); measured with {}; warm page cache; {} CPUs, load {}",
        run.data_files,
        mib(run.data_bytes),
        mib(run.size_target),
        run.seed,
        run.method.name(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        run.loadavg
    );
    println!(
        "\n{:<26} {:<7} {:>9} {:>9} {:>13} {:>10} {:>9}  files new/changed/unchanged",
        "step", "tool", "wall s", "cpu s", "peak RSS MiB", "repo MiB", "MiB/s"
    );
    for step in Step::ALL {
        for t in &run.tools {
            let Some(r) = find(run, t.name, step) else { continue };
            let rate = match step {
                Step::Initial | Step::Restore if r.m.wall_s > 0.0 => format!("{:.1}", mib(run.data_bytes) / r.m.wall_s),
                _ => String::new(),
            };
            let files = r.files.map_or(String::new(), |[n, c, u]| format!("{n}/{c}/{u}"));
            println!(
                "{:<26} {:<7} {:>9.2} {:>9.2} {:>13.1} {:>10.1} {:>9}  {}",
                step.name(),
                r.tool,
                r.m.wall_s,
                r.m.cpu_s(),
                r.m.rss_mib(),
                mib(r.repo_bytes),
                rate,
                files
            );
        }
    }
    for t in &run.tools {
        let at = |s| find(run, t.name, s).map(|r| mib(r.repo_bytes));
        if let (Some(first), Some(last)) = (at(Step::Initial), at(Step::Check)) {
            println!("{}: repository {first:.1} MiB after the initial snapshot, {last:.1} MiB at the end", t.name);
        }
    }
    for (tool, v) in &run.verifications {
        println!(
            "{tool}: restore verification {} ({} files, {:.1} MiB byte-compared, {} mismatches)",
            if v.mismatches() == 0 { "OK" } else { "FAILED" },
            v.files,
            mib(v.bytes),
            v.mismatches()
        );
    }

    if find(run, "tstor", Step::Init).is_none() || find(run, "restic", Step::Init).is_none() {
        return;
    }
    println!("\n{:<26} {:>10} {:>10} {:>10} {:>10}", "tstor / restic", "wall", "cpu", "peak RSS", "repo size");
    for step in Step::ALL {
        if let (Some(a), Some(b)) = (find(run, "tstor", step), find(run, "restic", step)) {
            println!(
                "{:<26} {:>10} {:>10} {:>10} {:>10}",
                step.name(),
                ratio(a.m.wall_s, b.m.wall_s),
                ratio(a.m.cpu_s(), b.m.cpu_s()),
                ratio(a.m.max_rss_kib as f64, b.m.max_rss_kib as f64),
                ratio(a.repo_bytes as f64, b.repo_bytes as f64)
            );
        }
    }
}

fn result_json(run: &Run, r: &StepResult) -> Json {
    let mut fields = vec![
        ("tool", Json::str(r.tool)),
        ("step", Json::str(r.step.key())),
        ("wall_s", Json::Num(r.m.wall_s)),
        ("user_s", Json::Num(r.m.user_s)),
        ("sys_s", Json::Num(r.m.sys_s)),
        ("cpu_s", Json::Num(r.m.cpu_s())),
        ("max_rss_kib", Json::Int(r.m.max_rss_kib)),
        ("repo_bytes", Json::Int(r.repo_bytes)),
    ];
    if matches!(r.step, Step::Initial | Step::Restore) && r.m.wall_s > 0.0 {
        fields.push(("mib_per_s", Json::Num(mib(run.data_bytes) / r.m.wall_s)));
    }
    if let Some([n, c, u]) = r.files {
        fields.push(("files_new", Json::Int(n)));
        fields.push(("files_changed", Json::Int(c)));
        fields.push(("files_unchanged", Json::Int(u)));
    }
    Json::Obj(fields)
}

pub fn to_json(run: &Run, error: Option<&anyhow::Error>) -> Json {
    let m = &run.mutation;
    let mut ratios = Vec::new();
    for step in Step::ALL {
        if let (Some(a), Some(b)) = (find(run, "tstor", step), find(run, "restic", step)) {
            let r = |x: f64, y: f64| if y > 0.0 { Json::Num(x / y) } else { Json::Null };
            ratios.push(Json::Obj(vec![
                ("step", Json::str(step.key())),
                ("wall", r(a.m.wall_s, b.m.wall_s)),
                ("cpu", r(a.m.cpu_s(), b.m.cpu_s())),
                ("max_rss", r(a.m.max_rss_kib as f64, b.m.max_rss_kib as f64)),
                ("repo_bytes", r(a.repo_bytes as f64, b.repo_bytes as f64)),
            ]));
        }
    }
    Json::Obj(vec![
        ("size_target", Json::Int(run.size_target)),
        ("seed", Json::Int(run.seed)),
        (
            "data",
            Json::Obj(vec![
                ("path", Json::str(run.data_dir.display().to_string())),
                ("files", Json::Int(run.data_files)),
                ("bytes", Json::Int(run.data_bytes)),
                ("generated_s", run.generated_s.map_or(Json::Null, Json::Num)),
            ]),
        ),
        (
            "change",
            Json::Obj(vec![
                ("files_changed", Json::Int(m.files_changed)),
                ("changed_file_bytes", Json::Int(m.changed_file_bytes)),
                ("files_added", Json::Int(m.files_added)),
                ("added_bytes", Json::Int(m.added_bytes)),
                ("bytes_written", Json::Int(m.bytes_written)),
            ]),
        ),
        ("started_unix", Json::Int(run.started_unix)),
        ("loadavg_before", Json::str(&run.loadavg)),
        ("page_cache", Json::str("warm")),
        ("measurement", Json::str(run.method.name())),
        ("cpus", Json::Int(std::thread::available_parallelism().map_or(0, |n| n.get() as u64))),
        (
            "tools",
            Json::Arr(
                run.tools
                    .iter()
                    .map(|t| {
                        Json::Obj(vec![
                            ("name", Json::str(t.name)),
                            ("version", Json::str(&t.version)),
                            ("binary", Json::str(t.bin.display().to_string())),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("skipped", Json::Arr(run.skipped.iter().map(Json::str).collect())),
        ("results", Json::Arr(run.results.iter().map(|r| result_json(run, r)).collect())),
        (
            "verification",
            Json::Arr(
                run.verifications
                    .iter()
                    .map(|(tool, v)| {
                        Json::Obj(vec![
                            ("tool", Json::str(*tool)),
                            ("ok", Json::Bool(v.mismatches() == 0)),
                            ("files", Json::Int(v.files)),
                            ("bytes", Json::Int(v.bytes)),
                            ("mismatches", Json::Int(v.mismatches())),
                            ("missing", Json::Int(v.missing)),
                            ("differing", Json::Int(v.differing)),
                            ("extra", Json::Int(v.extra)),
                            ("permission_differences", Json::Int(v.mode_differences)),
                            ("examples", Json::Arr(v.examples.iter().map(Json::str).collect())),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("ratios_tstor_over_restic", Json::Arr(ratios)),
        ("error", error.map_or(Json::Null, |e| Json::str(format!("{e:#}")))),
    ])
}
