//! Flags and printing for `copy` and for `init --from-repo`: the source
//! repository and its password (`--from-repo`, `--from-password-file`,
//! `--from-password-command`, `TSTOR_FROM_PASSWORD`), and the copy's
//! summary as text or JSON. The copy itself is `ops::copy`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::ops;
use crate::repo::{InitOptions, Repository};

use super::output::{count, escape};
use super::views::InitView;
use super::{given_password, human, open_backend_at, open_repo_on, password, Global};

/// Where the source repository is and how to open it.
#[derive(Args, Clone, Default)]
pub(super) struct FromRepo {
    /// The source repository (a path, `local:PATH` or `telegram:...`)
    #[arg(long, env = "TSTOR_FROM_REPOSITORY", value_name = "REPO")]
    from_repo: Option<String>,
    /// Read the source's password from this file (first line)
    #[arg(long, env = "TSTOR_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this shell command and use its first output line as the source's password
    #[arg(long, env = "TSTOR_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    from_password_command: Option<String>,
}

impl FromRepo {
    /// The source's password: TSTOR_FROM_PASSWORD, a file, or a command.
    fn password(&self) -> Result<Vec<u8>> {
        let (file, command) = (self.from_password_file.as_deref(), self.from_password_command.as_deref());
        if let Some(p) = given_password("TSTOR_FROM_PASSWORD", file, command)? {
            return Ok(p);
        }
        bail!(
            "no password for the source repository: set TSTOR_FROM_PASSWORD, --from-password-file or \
             --from-password-command"
        )
    }

    /// Opens the source repository, without the local cache: under the same
    /// keys it would be the target's, which is in use.
    async fn open(&self, g: &Global) -> Result<Option<Repository>> {
        let Some(spec) = self.from_repo.clone().filter(|s| !s.is_empty()) else { return Ok(None) };
        let backend = open_backend_at(g, Some(spec.clone()))?;
        let pw = self.password()?;
        let repo = Repository::open(backend, &pw, None)
            .await
            .with_context(|| format!("cannot open the source repository {}", escape(&spec)))?;
        Ok(Some(repo))
    }
}

#[derive(Args)]
pub(super) struct InitArgs {
    #[command(flatten)]
    from: FromRepo,
    /// With --from-repo: use the source's keys and repository id, so that
    /// `copy` stores its packs as they are (Telegram to Telegram: re-sent,
    /// not uploaded). One password then opens both: see the README
    #[arg(long, requires = "from_repo")]
    same_keys: bool,
    /// With --from-repo: take the source's chunker parameters and
    /// compression level (implied by --same-keys). The chunker seed comes
    /// from the keys: only --same-keys cuts files where the source does
    /// and also keeps the source's blob ids
    #[arg(long, requires = "from_repo")]
    copy_chunker_params: bool,
}

#[derive(Args)]
pub(super) struct CopyArgs {
    #[command(flatten)]
    from: FromRepo,
    /// Snapshots to copy: ids, id prefixes or `latest` (default: all)
    snapshots: Vec<String>,
}

pub(super) async fn cmd_init(g: &Global, a: InitArgs) -> Result<u8> {
    let source = a.from.open(g).await?;
    let backend = open_backend_at(g, g.repo.clone())?;
    let pw = password(g, true)?;
    if pw.is_empty() {
        bail!("an empty password is not allowed");
    }
    let location = backend.location();
    let made = match &source {
        Some(src) if a.same_keys || a.copy_chunker_params => {
            Repository::init_from(backend, &pw, InitOptions::default(), src, a.same_keys).await
        }
        _ => Repository::init(backend, &pw, InitOptions::default()).await,
    };
    let repo = made.with_context(|| format!("cannot create a repository at {location}"))?;
    // A repository made in a new place (a new Telegram channel) has a new name.
    let location = repo.backend().location();
    if g.json {
        outln!(
            "{}",
            serde_json::to_string(&InitView {
                message_type: "initialized",
                id: repo.repo_id().to_hex(),
                repository: location,
                same_keys_as_source: a.same_keys,
            })?
        );
    } else {
        let shown = escape(&location);
        outln!("created repository {} at {shown}", repo.repo_id().short());
        if g.repo.as_deref().is_some_and(|r| r != location && !r.starts_with("local:") && r.contains(':')) {
            outln!("From now on use --repo {shown} (or TSTOR_REPOSITORY={shown}).");
        }
        if a.same_keys {
            outln!(
                "It has the source's keys: its password, with access to the source's storage, reads the source too."
            );
        }
        outln!("Keep the password safe: without it the data cannot be recovered.");
    }
    Ok(0)
}

pub(super) async fn cmd_copy(g: &Global, a: CopyArgs) -> Result<u8> {
    let Some(source) = a.from.open(g).await? else {
        bail!("copy needs the source repository: --from-repo (or TSTOR_FROM_REPOSITORY)");
    };
    let target = open_repo_on(g, open_backend_at(g, g.repo.clone())?).await?;
    let report = ops::copy::copy(&source, &target, &a.snapshots).await?;
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    if g.quiet {
        return Ok(0);
    }
    for s in &report.skipped {
        outln!("snapshot {} is in the target already (as {})", &s.source[..8], &s.target[..8]);
    }
    for s in &report.copied {
        outln!("snapshot {} copied as {}", &s.source[..8], &s.target[..8]);
    }
    outln!(
        "{} copied, {} skipped; {} ({}) stored, {} of them re-sent without uploading; \
         {} uploaded, {} read from the source, in {:.1}s",
        count(report.copied.len(), "snapshot"),
        report.skipped.len(),
        count(report.packs_copied, "pack"),
        human(report.bytes_copied),
        report.packs_resent,
        human(report.bytes_uploaded),
        human(report.bytes_read),
        report.duration_seconds
    );
    Ok(0)
}
