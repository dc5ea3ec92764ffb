//! Ctrl-C (SIGINT) and SIGTERM: the first one asks the running command to
//! stop cleanly, the second ends the process at once. A snapshot stops as at
//! `--max-duration` (the packs uploaded are indexed, the uploads running are
//! finished, no snapshot is committed); other commands are stopped where
//! they are and the locks they hold are removed. Either way the exit code is
//! 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM.

use std::future::Future;
use std::sync::OnceLock;

use tokio::signal::unix::{signal, SignalKind};

use crate::archiver::{signal_name, StopRequest};

static STOP: OnceLock<StopRequest> = OnceLock::new();

/// The stop request the signals raise; a snapshot's run budget carries it.
pub fn stop_request() -> StopRequest {
    STOP.get_or_init(StopRequest::new).clone()
}

/// The exit code for a run stopped by `signal`.
pub fn exit_code(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

/// Starts listening for SIGINT and SIGTERM (inside the runtime). Returns
/// a future that completes with the signal's number when the first one
/// arrives.
pub fn listen() -> impl Future<Output = i32> {
    let stop = stop_request();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let streams = [SignalKind::interrupt(), SignalKind::terminate()]
        .into_iter()
        .filter_map(|kind| signal(kind).ok().map(|s| (kind.as_raw_value(), s)))
        .collect::<Vec<_>>();
    tokio::spawn(async move {
        let mut streams = streams;
        let mut tx = Some(tx);
        loop {
            let next = futures_first(&mut streams).await;
            let Some(signo) = next else { return };
            if stop.requested().is_some() {
                // A second signal: stop now.
                errln!("tstor: {} again: stopping at once", signal_name(signo));
                std::process::exit(i32::from(exit_code(signo)));
            }
            stop.request(signo);
            errln!(
                "tstor: {}: stopping cleanly (the uploads running are finished); send it again to stop at once",
                signal_name(signo)
            );
            if let Some(tx) = tx.take() {
                let _ = tx.send(signo);
            }
        }
    });
    async move {
        match rx.await {
            Ok(signo) => signo,
            Err(_) => std::future::pending().await,
        }
    }
}

/// The number of the first of `streams` to deliver a signal.
async fn futures_first(streams: &mut [(i32, tokio::signal::unix::Signal)]) -> Option<i32> {
    let [(a, sa), (b, sb)] = streams else {
        return match streams.first_mut() {
            Some((n, s)) => s.recv().await.map(|_| *n),
            None => std::future::pending().await,
        };
    };
    tokio::select! {
        r = sa.recv() => r.map(|_| *a),
        r = sb.recv() => r.map(|_| *b),
    }
}
