//! `cargo xtask dist`: the files a package of tstor ships beside the binary,
//! generated from the command line definition (`tstor::cli::command`): man
//! pages (`tstor.1` and one per command, clap_mangen) and shell completions
//! for bash, zsh and fish (clap_complete), all in `target/dist/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap_complete::Shell;

const USAGE: &str = "usage: cargo xtask dist\n\nwrites target/dist/tstor.1, a man page per command (tstor-snapshot.1, ...)\nand completions (tstor.bash, _tstor, tstor.fish)";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub fn main(args: &[String]) -> Result<()> {
    match args {
        [] => {}
        [a] if a == "-h" || a == "--help" => {
            println!("{USAGE}");
            return Ok(());
        }
        other => bail!("unexpected arguments {other:?}\n{USAGE}"),
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let dist = target.join("dist");
    std::fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;
    clap_mangen::generate_to(tstor::cli::command(), &dist)
        .with_context(|| format!("cannot write man pages to {}", dist.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut tstor::cli::command(), "tstor", &dist)
            .with_context(|| format!("cannot write {shell} completions to {}", dist.display()))?;
    }
    let page = dist.join("tstor.1");
    if !page.is_file() {
        bail!("{} was not written", page.display());
    }
    println!("wrote {} (and a page per command) and bash, zsh and fish completions", page.display());
    Ok(())
}
