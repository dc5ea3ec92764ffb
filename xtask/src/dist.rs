//! `cargo xtask dist`: the files a package of tstor ships beside the binary,
//! generated from the command line definition (`tstor::cli::command`): man
//! pages (`tstor.1` and one per command, clap_mangen) and shell completions
//! for bash, zsh and fish (clap_complete), all in `target/dist/` (under
//! `$CARGO_TARGET_DIR` when it is set). `tstor.1` also has the ENVIRONMENT,
//! EXIT STATUS and EXAMPLES sections of `tstor::cli::manual`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap_complete::Shell;

const USAGE: &str = "usage: cargo xtask dist\n\nwrites target/dist/tstor.1, a man page per command (tstor-snapshot.1, ...)\nand completions (tstor.bash, _tstor, tstor.fish)";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Text for roff: backslashes and hyphens escaped, no line read as a request.
fn roff(text: &str) -> String {
    text.lines()
        .map(|line| {
            let escaped = line.replace('\\', "\\e").replace('-', "\\-");
            if escaped.starts_with('.') || escaped.starts_with('\'') {
                format!("\\&{escaped}")
            } else {
                escaped
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `tstor.1`: clap_mangen's sections, then ENVIRONMENT, EXIT STATUS and
/// EXAMPLES, then the version.
fn main_page() -> Result<Vec<u8>> {
    use tstor::cli::manual::{ENVIRONMENT, EXAMPLES, EXIT_STATUS};
    let man = clap_mangen::Man::new(tstor::cli::command());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    let mut extra = String::from(".SH ENVIRONMENT\n");
    for (name, what) in ENVIRONMENT {
        extra += &format!(".TP\n\\fB{}\\fR\n{}\n", roff(name), roff(what));
    }
    extra += ".SH \"EXIT STATUS\"\n";
    for (code, what) in EXIT_STATUS {
        extra += &format!(".TP\n\\fB{code}\\fR\n{}\n", roff(what));
    }
    extra += ".SH EXAMPLES\n";
    for (what, command) in EXAMPLES {
        extra += &format!(".PP\n{}\n.PP\n.RS 4\n.nf\n{}\n.fi\n.RE\n", roff(what), roff(command));
    }
    out.extend_from_slice(extra.as_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Where dist writes: `dist/` under `target` (CARGO_TARGET_DIR) when set,
/// under the workspace's `target/` otherwise.
fn dist_dir(target: Option<std::ffi::OsString>) -> PathBuf {
    target.map_or_else(|| workspace_root().join("target"), PathBuf::from).join("dist")
}

/// Writes the man pages and completions into `dist`; returns the main page.
fn write_dist(dist: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dist).with_context(|| format!("cannot create {}", dist.display()))?;
    clap_mangen::generate_to(tstor::cli::command(), dist)
        .with_context(|| format!("cannot write man pages to {}", dist.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut tstor::cli::command(), "tstor", dist)
            .with_context(|| format!("cannot write {shell} completions to {}", dist.display()))?;
    }
    let page = dist.join("tstor.1");
    std::fs::write(&page, main_page()?).with_context(|| format!("cannot write {}", page.display()))?;
    Ok(page)
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
    let page = write_dist(&dist_dir(std::env::var_os("CARGO_TARGET_DIR")))?;
    println!("wrote {} (and a page per command) and bash, zsh and fish completions", page.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_page_has_environment_exit_status_and_examples() {
        let page = String::from_utf8(main_page().unwrap()).unwrap();
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH ENVIRONMENT", ".SH \"EXIT STATUS\"", ".SH EXAMPLES"] {
            assert!(page.contains(section), "{section} missing");
        }
        assert!(page.contains("TSTOR_TG_UNREACHABLE_TIMEOUT"));
        assert!(page.contains(".TP\n\\fB14\\fR"), "exit status 14 listed");
        assert!(page.contains("tstor \\-q \\-\\-password\\-file"), "examples escaped for roff");
    }

    #[test]
    fn dist_writes_the_pages_and_completions_where_the_readme_says() {
        assert_eq!(dist_dir(None), workspace_root().join("target/dist"));
        assert_eq!(dist_dir(Some("/elsewhere".into())), Path::new("/elsewhere/dist"));
        let dist = std::env::temp_dir().join(format!("tstor-dist-test-{}", std::process::id()));
        let page = write_dist(&dist).unwrap();
        assert_eq!(page, dist.join("tstor.1"));
        for name in ["tstor.1", "tstor-snapshot.1", "tstor-mount.1", "tstor.bash", "_tstor", "tstor.fish"] {
            let len = std::fs::metadata(dist.join(name)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "{name} written");
        }
        assert!(std::fs::read_to_string(&page).unwrap().contains(".SH \"EXIT STATUS\""));
        std::fs::remove_dir_all(&dist).unwrap();
    }

    #[test]
    fn the_readme_says_where_dist_writes() {
        let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
        let said = readme.split("`cargo xtask dist` writes").nth(1).expect("the README describes cargo xtask dist");
        let sentence = &said[..said.find("\n\n").unwrap_or(said.len())];
        assert!(sentence.contains("`target/dist/`") && sentence.contains("CARGO_TARGET_DIR"), "{sentence}");
    }
}
