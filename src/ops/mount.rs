//! `mount`: the repository's snapshots as a read-only file system until
//! told to stop. Holds a shared lock while mounted (so no prune removes
//! data under a reader), loads the snapshot list and the index, mounts the
//! view of `crate::mount` through FUSE (which reads the snapshot list again
//! as it is browsed, to show snapshots taken meanwhile), serves it on its
//! own thread, and unmounts when the caller's stop signal comes or someone
//! unmounts it.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::mount::{Owner, SnapshotChoice, SnapshotFs, REFRESH_INTERVAL};
use crate::ops::forget::SnapshotFilter;
use crate::repo::lock::{self, LockGuard};
use crate::repo::{RepoError, Repository};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot mount at {path}: {reason}")]
    Mount { path: PathBuf, reason: String },
    #[error("cannot unmount {path}: {reason}")]
    Unmount { path: PathBuf, reason: String },
    #[error("the file system at {path} ended with an error: {source}")]
    Session { path: PathBuf, source: io::Error },
}

/// How a mount ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The stop signal came; the view was unmounted.
    Stopped,
    /// Someone else unmounted it (`fusermount3 -u`).
    Unmounted,
    /// The stop signal came while files in the view were open: the view was
    /// detached from its mount point (a lazy unmount), and reads of the
    /// files still open fail once the process has ended.
    Detached,
}

/// How long a view detached while busy goes on serving the files still
/// open in it before the process ends anyway.
const DETACHED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A mounted view, served until [`serve_until`](Mounted::serve_until) returns.
pub struct Mounted {
    path: PathBuf,
    guard: Option<LockGuard>,
    unmounter: fuser::SessionUnmounter,
    ended: tokio::sync::oneshot::Receiver<io::Result<()>>,
    /// How many snapshots the view shows.
    pub snapshots: usize,
}

/// Mounts the snapshots `filter` lets through at `mountpoint` (an existing
/// directory), read-only and visible to the mounting user alone.
pub async fn mount(repo: &Repository, mountpoint: &Path, filter: &SnapshotFilter) -> Result<Mounted, MountError> {
    let not_mountable = |reason: String| MountError::Mount { path: mountpoint.to_path_buf(), reason };
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(not_mountable("it is not a directory".into())),
        Err(e) => return Err(not_mountable(e.to_string())),
    }
    let guard = lock::acquire(repo, false).await?;
    match start(repo, mountpoint, filter).await {
        Ok((snapshots, unmounter, ended)) => {
            Ok(Mounted { path: mountpoint.to_path_buf(), guard: Some(guard), unmounter, ended, snapshots })
        }
        Err(e) => {
            guard.release().await;
            Err(e)
        }
    }
}

type Started = (usize, fuser::SessionUnmounter, tokio::sync::oneshot::Receiver<io::Result<()>>);

async fn start(repo: &Repository, mountpoint: &Path, filter: &SnapshotFilter) -> Result<Started, MountError> {
    let (snaps, bad) = repo.snapshots().await?;
    for (id, e) in bad {
        tracing::warn!(snapshot = %id.short(), error = %e, "unreadable snapshot left out of the mounted view");
    }
    let snaps: Vec<_> = snaps.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    let count = snaps.len();
    let index = Arc::new(repo.load_index_lenient().await?);
    let owner = Owner { uid: crate::host::uid(), gid: crate::host::gid() };
    let filter = filter.clone();
    let choose: SnapshotChoice = Arc::new(move |s| filter.matches(s));
    let refresh = Some((choose, REFRESH_INTERVAL));
    let fs = SnapshotFs::new(repo.clone(), index, snaps, owner, refresh, tokio::runtime::Handle::current());
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::FSName("tstor".into()),
        fuser::MountOption::Subtype("tstor".into()),
    ];
    let path = mountpoint.to_path_buf();
    // Mounting runs fusermount3 and waits for the kernel's first message.
    let session = tokio::task::spawn_blocking(move || fuser::Session::new(fs, &path, &config))
        .await
        .map_err(|e| MountError::Mount { path: mountpoint.to_path_buf(), reason: e.to_string() })?
        .map_err(|e| MountError::Mount { path: mountpoint.to_path_buf(), reason: mount_failure(&e) })?;
    let mut session = session;
    let unmounter = session.unmount_callable();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tstor-fuse".into())
        .spawn(move || {
            let _ = tx.send(session.run());
        })
        .map_err(|e| MountError::Mount { path: mountpoint.to_path_buf(), reason: e.to_string() })?;
    Ok((count, unmounter, rx))
}

/// Detaches the view at `path` from the mount point even though it is busy
/// (`umount2` with `MNT_DETACH`; without the privilege for it, through
/// `fusermount3 -u -z` as FUSE mounts of other users are undone).
fn detach(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the call's duration.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let direct = io::Error::last_os_error();
    if direct.raw_os_error() != Some(libc::EPERM) {
        return Err(direct);
    }
    let out = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("fusermount3 -u -z: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Why mounting failed, with the fix when it is a missing tool or device.
fn mount_failure(e: &io::Error) -> String {
    let fuse_device = Path::new("/dev/fuse").exists();
    match e.kind() {
        io::ErrorKind::NotFound if !fuse_device => "/dev/fuse is missing (load the fuse kernel module)".into(),
        io::ErrorKind::NotFound => format!("{e}: is fusermount3 installed (Debian/Ubuntu: apt-get install fuse3)?"),
        _ => e.to_string(),
    }
}

impl Mounted {
    /// Serves the view until `stop` completes (then unmounts it) or it is
    /// unmounted from outside; releases the lock either way.
    pub async fn serve_until(mut self, stop: impl Future<Output = ()>) -> Result<Ended, MountError> {
        let mut ended = self.ended;
        let (how, result) = tokio::select! {
            result = &mut ended => (Ended::Unmounted, result),
            () = stop => match self.unmounter.unmount() {
                Ok(()) => (Ended::Stopped, ended.await),
                // Busy: a file or directory of the view is open. Waiting for
                // it to close could take forever; detach the view instead,
                // so that the mount point is free at once.
                Err(busy) => match detach(&self.path) {
                    Ok(()) => match tokio::time::timeout(DETACHED_GRACE, &mut ended).await {
                        Ok(result) => (Ended::Stopped, result),
                        Err(_) => (Ended::Detached, Ok(Ok(()))),
                    },
                    Err(e) => {
                        if let Some(guard) = self.guard.take() {
                            guard.release().await;
                        }
                        return Err(MountError::Unmount {
                            path: self.path,
                            reason: format!("{busy}; a lazy unmount failed too: {e}"),
                        });
                    }
                },
            },
        };
        if let Some(guard) = self.guard.take() {
            guard.release().await;
        }
        match result {
            Ok(Ok(())) => Ok(how),
            Ok(Err(source)) => Err(MountError::Session { path: self.path, source }),
            Err(_) => {
                Err(MountError::Session { path: self.path, source: io::Error::other("the file system thread ended") })
            }
        }
    }
}
