//! Flags and messages of `mount`, and the signals that end it: Ctrl-C
//! (SIGINT), SIGTERM and SIGHUP unmount the view (detach it, when a file
//! in it is open) and exit 0.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::maintenance::tag_lists;
use super::output::escape_path;
use super::{open_repo, Global};
use crate::archiver::absolute_path;
use crate::ops::forget::SnapshotFilter;
use crate::ops::mount::{self, Ended};

#[derive(Args)]
pub(super) struct MountArgs {
    /// An empty directory to show the repository in
    mountpoint: PathBuf,
    /// Only snapshots of this host (repeatable)
    #[arg(long)]
    host: Vec<String>,
    /// Only snapshots with all of these comma-separated tags (repeatable: any list)
    #[arg(long)]
    tag: Vec<String>,
    /// Only snapshots that include this path (repeatable)
    #[arg(long)]
    path: Vec<PathBuf>,
}

/// Handlers for SIGINT, SIGTERM and SIGHUP, in place from now on (the
/// signals no longer end the process by themselves).
fn stop_signals() -> Result<Vec<Signal>> {
    [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()]
        .into_iter()
        .map(|k| signal(k).map_err(|e| anyhow!("cannot listen for signals: {e}")))
        .collect()
}

/// Completes when any of `signals` arrives.
async fn first_signal(mut signals: Vec<Signal>) {
    std::future::poll_fn(|cx| {
        for s in signals.iter_mut() {
            if s.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

pub(super) async fn cmd_mount(g: &Global, a: MountArgs) -> Result<u8> {
    let mut paths = Vec::new();
    for p in &a.path {
        let abs = absolute_path(p).map_err(|e| anyhow!("{}: {e}", p.display()))?;
        paths.push(abs.as_os_str().as_bytes().to_vec());
    }
    let filter = SnapshotFilter { hosts: a.host, tags: tag_lists(&a.tag), paths };
    // Listen before mounting, so that a signal that comes at once is not lost.
    let signals = stop_signals()?;
    let repo = open_repo(g).await?;
    let mounted = mount::mount(&repo, &a.mountpoint, &filter).await?;
    if !g.quiet {
        errln!(
            "mounted {} snapshots at {} (read-only); Ctrl-C or SIGTERM unmounts",
            mounted.snapshots,
            escape_path(&a.mountpoint)
        );
    }
    let ended = mounted.serve_until(first_signal(signals)).await?;
    match ended {
        Ended::Stopped if !g.quiet => errln!("unmounted {}", escape_path(&a.mountpoint)),
        Ended::Unmounted if !g.quiet => errln!("{} was unmounted", escape_path(&a.mountpoint)),
        // A warning, printed under -q too: programs reading the view lose it.
        Ended::Detached => errln!(
            "{} was busy (a file or directory in it is open): detached it; reads of files still open in it fail from now on",
            escape_path(&a.mountpoint)
        ),
        _ => {}
    }
    Ok(0)
}
