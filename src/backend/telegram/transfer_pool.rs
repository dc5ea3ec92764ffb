//! Connections for file transfers. grammers 0.11 keeps one connection per
//! DC in a `SenderPool`, and Telegram serves one connection only so fast,
//! so upload parts (`upload.saveBigFilePart`) and downloaded chunks
//! (`upload.getFile`) of the home DC go through a few more connections,
//! each its own `SenderPool` and `Client`, as Telegram's own apps do for
//! media. They share the account's auth key (each connection is a new
//! MTProto session of that key) and the backend's flood gate, so flood
//! waits and pacing hold them together with every other call.
//!
//! Each transfer pool runs on an in-memory copy of the home DC's address
//! and auth key, taken when the first transfer starts: it never writes the
//! session file, and never makes a key of its own over the one the account
//! logged in with.
//!
//! A connection carries either one upload part alone or any number of
//! downloaded chunks (see `retry`'s turns): a part waits for a connection
//! with nothing in flight, so that grammers writes it, and makes its
//! msg_id, as soon as it is handed over, never after another part's write
//! while a flood wait was learnt. Chunks go to the least busy connection
//! no part holds, or to the main connection when parts hold all of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use grammers_client::sender::ConnectionParams;
use grammers_client::session::Session;
use grammers_client::{Client, SenderPool};

use super::retry::{Exclusive, Line, TstorRetry};
use super::session::TelegramSession;
use super::Options;

/// Connections used for file transfers, besides the one for every other
/// call: as many as the upload parts in flight by default, since each
/// carries one part at a time.
pub const TRANSFER_CONNECTIONS: usize = 8;

struct Connection {
    line: Line,
    /// Transfers running on it now.
    busy: AtomicUsize,
}

/// The transfer connections of one backend, opened on first use.
pub(super) struct TransferPool {
    session: Arc<TelegramSession>,
    options: Options,
    /// The main client, used when there are no transfer connections.
    main: Line,
    connections: OnceLock<Vec<Arc<Connection>>>,
    runners: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Where the search for the least busy connection starts, so that ties
    /// go round.
    next: AtomicUsize,
}

/// The client one transfer runs on; the connection counts it as busy until
/// this is dropped.
pub(super) struct Lease {
    line: Line,
    connection: Option<Arc<Connection>>,
}

impl std::ops::Deref for Lease {
    type Target = Line;

    fn deref(&self) -> &Line {
        &self.line
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(c) = &self.connection {
            c.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for TransferPool {
    fn drop(&mut self) {
        for runner in self.runners.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            runner.abort();
        }
    }
}

impl TransferPool {
    /// A pool of `options.transfer_connections` connections (none: every
    /// transfer goes through `main`).
    pub(super) fn new(session: Arc<TelegramSession>, options: Options, main: Line) -> Self {
        TransferPool {
            session,
            options,
            main,
            connections: OnceLock::new(),
            runners: std::sync::Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// The least busy transfer connection's client that no upload part
    /// holds (the main client if there are none, or parts hold them all).
    /// Must be called within the runtime.
    pub(super) fn lease(&self) -> Lease {
        let connections = self.connections.get_or_init(|| self.open());
        let n = connections.len();
        if n == 0 {
            return Lease { line: self.main.clone(), connection: None };
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = (0..n)
            .map(|i| &connections[(start + i) % n])
            .filter(|c| !c.line.is_exclusive())
            .min_by_key(|c| c.busy.load(Ordering::Relaxed))
            .map(Arc::clone);
        match chosen {
            Some(c) => {
                c.busy.fetch_add(1, Ordering::Relaxed);
                Lease { line: c.line.clone(), connection: Some(c) }
            }
            None => Lease { line: self.main.clone(), connection: None },
        }
    }

    /// A transfer connection for one upload part alone, once one has
    /// nothing in flight (the main connection if there are none, once
    /// everything in flight on it is over). Must be called within the runtime.
    pub(super) async fn lease_part(&self) -> Exclusive {
        let connections = self.connections.get_or_init(|| self.open());
        let n = connections.len();
        if n == 0 {
            return self.main.exclusive().await;
        }
        self.main
            .wait_for_a_turn(|| {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).find_map(|i| connections[(start + i) % n].line.try_exclusive())
            })
            .await
    }

    /// The client for a transfer from DC `foreign` (`None`: the home DC,
    /// through the least busy transfer connection). Documents of other DCs
    /// are read through the main client, which reaches every DC.
    pub(super) fn lease_for(&self, foreign: Option<i32>) -> Lease {
        match foreign {
            Some(_) => Lease { line: self.main.clone(), connection: None },
            None => self.lease(),
        }
    }

    /// Starts the transfer pools on a copy of the home DC's address and key.
    /// Without a key there is nothing to share: transfers use the main client.
    fn open(&self) -> Vec<Arc<Connection>> {
        let home = match self.session.home_dc_id() {
            Ok(id) => id,
            Err(_) => return Vec::new(),
        };
        let Ok(Some(dc)) = self.session.dc_option(home) else { return Vec::new() };
        let Some(key) = dc.auth_key else { return Vec::new() };
        let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        (0..self.options.transfer_connections)
            .map(|_| {
                let copy = Arc::new(TelegramSession::with_dc(home, dc.ipv4, dc.ipv6, key));
                // No resends inside grammers (as on the main connection): a
                // dropped transfer connection comes back to tstor's own loop,
                // which resends only once the gate is open.
                let params = ConnectionParams { retry_policy: Box::new(TstorRetry), ..Default::default() };
                let pool = SenderPool::with_configuration(copy, self.options.api_id, params);
                let client = Client::new(pool.handle);
                runners.push(tokio::spawn(pool.runner.run()));
                Arc::new(Connection { line: Line::beside(client, &self.main), busy: AtomicUsize::new(0) })
            })
            .collect()
    }
}
