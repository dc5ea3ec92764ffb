//! Small commands and options a restic user reaches for: the
//! `--host/--path/--tag` filters that choose which snapshot `latest`
//! stands for.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::repo::select::SnapshotFilter;
use crate::repo::Repository;

/// Which snapshot `latest` stands for (an id names one whatever these say).
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Choosing `latest`")]
pub(super) struct LatestFilter {
    /// `latest` is the newest snapshot of this host (repeatable: any of them)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// `latest` is the newest snapshot whose paths include this one (repeatable: all of them)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// `latest` is the newest snapshot with this tag (repeatable: all of them)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

impl LatestFilter {
    /// The library's filter; paths are made absolute as `snapshot` stores them.
    pub fn to_filter(&self) -> Result<SnapshotFilter> {
        use std::os::unix::ffi::OsStrExt;
        let mut paths = Vec::new();
        for p in &self.paths {
            let abs = crate::archiver::absolute_path(p).with_context(|| format!("bad path {}", p.display()))?;
            paths.push(abs.as_os_str().as_bytes().to_vec());
        }
        Ok(SnapshotFilter { hosts: self.hosts.clone(), paths, tags: self.tags.clone() })
    }
}

/// `spec` with `latest` resolved under `filter` to the full id of the
/// snapshot it stands for; any other spec (and `latest` without filters)
/// unchanged, for the operation to resolve under its lock.
pub(super) async fn resolve_latest(repo: &Repository, spec: &str, filter: &LatestFilter) -> Result<String> {
    let filter = filter.to_filter()?;
    if spec != "latest" || filter.is_empty() {
        return Ok(spec.to_string());
    }
    let (id, _) = repo.find_snapshot_filtered(spec, &filter).await?;
    Ok(id.to_hex())
}
