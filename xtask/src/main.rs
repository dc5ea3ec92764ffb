//! Project automation, run as `cargo xtask <task>`. Tasks: `bench`, the
//! end-to-end benchmark of tstor (against restic when it is installed);
//! `dist`, the man pages and shell completions; `fuzz`, every fuzz target
//! and the model-based fault test for a while; `telegram-server`, a
//! loopback Telegram server to try tstor against without an account;
//! `telegram-sweep`, round trips under every Telegram fault for many seeds.

mod bench;
mod dist;
mod fuzz;
mod telegram;
mod telegram_sweep;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task>\n\ntasks:\n  bench    benchmark tstor (and restic) on a generated tree; `cargo xtask bench --help`;\n           `cargo xtask bench telegram --help` through the loopback Telegram server\n  dist     man pages and shell completions into target/dist\n  fuzz     every fuzz target and the model-based fault test for N seconds each; `cargo xtask fuzz --help`\n  telegram-server  a loopback Telegram server to try tstor against; `cargo xtask telegram-server --help`\n  telegram-sweep   snapshot, restore and check under every Telegram fault, once per seed; `cargo xtask telegram-sweep --help`";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::main(&args[1..]),
        Some("dist") => dist::main(&args[1..]),
        Some("fuzz") => fuzz::main(&args[1..]),
        Some("telegram-server") => telegram::main(&args[1..]),
        Some("telegram-sweep") => telegram_sweep::main(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown task `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
