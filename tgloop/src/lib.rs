//! A loopback Telegram server for tests: speaks MTProto 2.0 over the `Full`
//! TCP transport with pre-shared auth keys, runs two DCs (each on its own
//! address, documents served by the DC they were uploaded to, authorizations
//! exported and imported between them), and serves the part of the API
//! that tstor uses (uploads, documents in Saved Messages and channels,
//! history, search, pins, edits, deletes, dialogs, logging in with a code,
//! a two-step verification password or a bot token), enforcing Telegram's
//! rules, those for bots included (`BOT_METHOD_INVALID`).
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! let server = tstor_tgloop::Server::start().await?;
//! // Seed a grammers session: home DC, the server address, the auth key,
//! // and no other DC, so nothing falls back to real Telegram addresses.
//! let session = grammers_session::storages::MemorySession::from(server.session_data());
//! # Ok(()) }
//! ```

mod api;
pub mod auth;
mod conn;
pub mod crypto;
mod dcs;
pub mod faults;
pub mod mtproto;
pub mod transport;
pub mod world;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use dcs::DC_IDS;
pub use faults::{Fault, PremiumWait, Rates};
pub use world::{BotRights, Limits, RpcErr, Where, World};

/// The home DC of the account and of seeded sessions; the server also runs
/// DC 1 (see [`DC_IDS`] and [`Server::session_data_on`]).
pub const DC_ID: i32 = 2;

/// A fresh random 2048-bit authorization key.
pub fn random_auth_key() -> [u8; 256] {
    let mut k = [0u8; 256];
    rand::Rng::fill(&mut rand::thread_rng(), &mut k[..]);
    k
}

/// How the server is started.
#[derive(Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The pre-shared authorization key; random when `None`.
    pub auth_key: Option<[u8; 256]>,
    pub limits: Limits,
    /// Whether Saved Messages ids skip the ids other private chats would take.
    pub private_id_gaps: bool,
    /// Random failures, on top of those injected with [`Server::inject`].
    pub rates: Rates,
    /// Round trip of every call: its answer leaves this long after the
    /// request came in. Calls in flight overlap it; answers stay in order.
    pub latency: std::time::Duration,
    /// Upload bandwidth: file parts are accepted at most this fast, across
    /// all connections (`None`: as fast as they come).
    pub upload_bytes_per_sec: Option<u64>,
    /// Download bandwidth: `upload.getFile` answers leave at most this fast,
    /// across all connections (`None`: as fast as they are asked for).
    pub download_bytes_per_sec: Option<u64>,
    /// Bandwidth of each connection, each way, on top of the link's
    /// (`None`: none). Telegram serves one connection of an account only so
    /// fast, whatever the link: a client fills the link only with several.
    pub connection_bytes_per_sec: Option<u64>,
    /// The seed the random failures are rolled from (`None`: a random one,
    /// which [`Server::seed`] tells).
    pub seed: Option<u64>,
    /// A free account's transfer budget, answered with
    /// `FLOOD_PREMIUM_WAIT_X` once spent (`None`: unlimited).
    pub premium_wait: Option<PremiumWait>,
}

impl Config {
    /// Rolls the random failures from `seed`, so that a failing run can be replayed.
    pub fn with_seed(mut self, seed: u64) -> Config {
        self.seed = Some(seed);
        self
    }

    /// Sets the random failure rates.
    pub fn with_rates(mut self, rates: Rates) -> Config {
        self.rates = rates;
        self
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
            auth_key: None,
            limits: Limits::default(),
            private_id_gaps: true,
            rates: Rates::default(),
            latency: std::time::Duration::ZERO,
            upload_bytes_per_sec: None,
            seed: None,
            download_bytes_per_sec: None,
            connection_bytes_per_sec: None,
            premium_wait: None,
        }
    }
}

/// Server salts: one per hour, any of the current, previous or next hour accepted.
pub(crate) struct Salts {
    start: i64,
    values: Vec<i64>,
}

const SALT_PERIOD: i64 = 3600;

impl Salts {
    fn new() -> Salts {
        let start = mtproto::now_secs() - SALT_PERIOD / 2;
        Salts { start, values: (0..256).map(|_| rand::random::<i64>() | 1).collect() }
    }

    fn index(&self, at: i64) -> usize {
        (((at - self.start).max(0) / SALT_PERIOD) as usize).min(self.values.len() - 1)
    }

    pub(crate) fn current(&self) -> i64 {
        self.values[self.index(mtproto::now_secs())]
    }

    pub(crate) fn is_valid(&self, salt: i64) -> bool {
        let i = self.index(mtproto::now_secs());
        self.values[i.saturating_sub(1)..(i + 2).min(self.values.len())].contains(&salt)
    }

    /// A `future_salts` message answering `req_msg_id`.
    pub(crate) fn future(&self, req_msg_id: i64, num: i32) -> Vec<u8> {
        use grammers_tl_types::{self as tl, Serializable};
        let now = mtproto::now_secs();
        let first = self.index(now);
        let n = num.clamp(1, 64) as usize;
        let salts = (first..(first + n).min(self.values.len()))
            .map(|i| {
                let since = self.start + i as i64 * SALT_PERIOD;
                tl::types::FutureSalt {
                    valid_since: since as i32,
                    valid_until: (since + SALT_PERIOD) as i32,
                    salt: self.values[i],
                }
            })
            .collect();
        tl::enums::FutureSalts::Salts(tl::types::FutureSalts { req_msg_id, now: now as i32, salts: tl::RawVec(salts) })
            .to_bytes()
    }
}

/// Counts of protocol events, to check which paths a client exercised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolStats {
    pub connections: usize,
    pub containers: usize,
    pub gzipped_requests: usize,
    pub bad_server_salts: usize,
    pub future_salts: usize,
    pub bad_msg_notifications: usize,
}

/// What the clients asked of the server, for benchmarks: upload parts and
/// the bytes they carried, and the flood waits answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// `upload.saveFilePart` and `upload.saveBigFilePart` calls that ran
    /// (not those dropped or answered with an injected error).
    pub parts: usize,
    /// Bytes of those parts.
    pub part_bytes: u64,
    /// When the first and the latest of those parts were stored.
    pub first_part_at: Option<std::time::Instant>,
    pub last_part_at: Option<std::time::Instant>,
    /// `upload.getFile` answers sent, and their bytes.
    pub chunks: usize,
    pub chunk_bytes: u64,
    /// `FLOOD_WAIT_X` and `FLOOD_PREMIUM_WAIT_X` answers.
    pub flood_waits: usize,
    /// The seconds they asked for, summed.
    pub flood_wait_secs: u64,
    /// Seconds during which at least one asked wait was running (the union
    /// of the waits from the moment each was answered): the time a client
    /// that honours them, and holds every request back meanwhile, loses.
    pub flood_hold_secs: f64,
}

/// File bytes one connection carried, for checking that a client spreads
/// its transfers over several connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionTraffic {
    /// Upload parts stored through this connection, and their bytes.
    pub parts: usize,
    pub part_bytes: u64,
    /// `upload.getFile` answers sent on it, and their bytes.
    pub chunks: usize,
    pub chunk_bytes: u64,
}

/// When a simulated link (or one direction of a connection) is free again.
#[derive(Debug)]
pub(crate) struct Lane {
    bytes_per_sec: Option<u64>,
    free_at: tokio::time::Instant,
}

impl Lane {
    pub(crate) fn new(bytes_per_sec: Option<u64>) -> Lane {
        Lane { bytes_per_sec: bytes_per_sec.filter(|r| *r > 0), free_at: tokio::time::Instant::now() }
    }

    /// Carries `bytes` after what it carries already (one transfer after
    /// another at its rate), starting no earlier than `now`; returns when
    /// they are through, or `now` for an unlimited lane.
    pub(crate) fn carry(&mut self, now: tokio::time::Instant, bytes: usize) -> tokio::time::Instant {
        let Some(rate) = self.bytes_per_sec else { return now };
        let took = std::time::Duration::from_secs_f64(bytes as f64 / rate as f64);
        self.free_at = self.free_at.max(now) + took;
        self.free_at
    }
}

#[derive(Default)]
struct TrafficLog {
    t: Traffic,
    /// End of the flood windows counted so far.
    hold_until: Option<std::time::Instant>,
}

/// Which way a file transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// An upload part, client to server.
    Up,
    /// A downloaded chunk, server to client.
    Down,
}

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) stats: Mutex<ProtocolStats>,
    /// The key of [`Server::session_data`], on [`DC_ID`], logged in.
    auth_key: crypto::AuthKey,
    /// Both DCs' keys and exported authorizations.
    pub(crate) dcs: Mutex<dcs::Dcs>,
    pub(crate) salts: Salts,
    pub(crate) world: Mutex<World>,
    pub(crate) faults: Mutex<faults::Faults>,
    calls: Mutex<HashMap<&'static str, usize>>,
    /// Calls by DC and method.
    dc_calls: Mutex<HashMap<(i32, &'static str), usize>>,
    /// RPC errors answered, by name as sent (`FILE_MIGRATE_1`).
    errors: Mutex<HashMap<String, usize>>,
    traffic: Mutex<TrafficLog>,
    latency: std::time::Duration,
    /// The simulated link, each way, shared by every connection.
    upload_link: Mutex<Lane>,
    download_link: Mutex<Lane>,
    /// The rate of each connection, each way (see `conn::Conn`'s lanes).
    pub(crate) connection_bytes_per_sec: Option<u64>,
    /// File bytes carried by each connection, by connection number.
    per_connection: Mutex<Vec<ConnectionTraffic>>,
    /// The flood wait running for each method: Telegram's limits are
    /// account-wide, so every call of the method waits it out.
    flood_windows: Mutex<HashMap<&'static str, FloodWindow>>,
    /// Calls that came in while their method's flood wait was running,
    /// after the client had been told of it.
    early_calls: Mutex<Vec<&'static str>>,
    /// Calls answered `BOT_METHOD_INVALID`.
    bot_refusals: Mutex<Vec<&'static str>>,
    /// The transfer budget of a free account, if the server models one.
    premium: Mutex<Option<faults::PremiumBudget>>,
    started: tokio::time::Instant,
}

/// A flood wait running for one method.
#[derive(Clone, Copy, Debug)]
struct FloodWindow {
    /// When the client has the answer that started it.
    told_at: tokio::time::Instant,
    /// When it ends.
    until: tokio::time::Instant,
    /// Whether it is a premium wait (answered `FLOOD_PREMIUM_WAIT_X`).
    premium: bool,
    /// `told_at` on the wall clock, to compare with the send time a
    /// request's msg_id carries.
    told_at_wall: std::time::SystemTime,
}

/// When the client made a message, from its msg_id: seconds since the
/// epoch in the upper 32 bits and nanoseconds shifted left by 2 in the
/// lower (grammers' layout; the server shares the client's clock here).
pub(crate) fn msg_id_time(msg_id: i64) -> std::time::SystemTime {
    let secs = (msg_id as u64) >> 32;
    let nanos = ((msg_id as u64) & 0xffff_ffff) >> 2;
    std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(secs)
        + std::time::Duration::from_nanos(nanos.min(999_999_999))
}

/// How long after a flood answer reached the client a call of that method
/// is still forgiven: it may have been queued before the answer was read.
pub const FLOOD_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

impl Shared {
    pub(crate) fn count_call(&self, dc: i32, name: &'static str) {
        *self.calls.lock().expect("calls lock").entry(name).or_default() += 1;
        *self.dc_calls.lock().expect("calls lock").entry((dc, name)).or_default() += 1;
    }

    pub(crate) fn count_error(&self, message: &str) {
        *self.errors.lock().expect("errors lock").entry(message.to_string()).or_default() += 1;
    }

    /// A part of `bytes` bytes was stored.
    pub(crate) fn count_part(&self, bytes: usize) {
        let mut t = self.traffic.lock().expect("traffic lock");
        let now = std::time::Instant::now();
        t.t.parts += 1;
        t.t.part_bytes += bytes as u64;
        t.t.first_part_at.get_or_insert(now);
        t.t.last_part_at = Some(now);
    }

    /// A flood wait of `secs` seconds was answered now.
    pub(crate) fn count_flood_wait(&self, secs: u32) {
        let now = std::time::Instant::now();
        let end = now + std::time::Duration::from_secs(secs.into());
        let mut t = self.traffic.lock().expect("traffic lock");
        t.t.flood_waits += 1;
        t.t.flood_wait_secs += u64::from(secs);
        let from = t.hold_until.map_or(now, |h| h.max(now));
        if end > from {
            t.t.flood_hold_secs += (end - from).as_secs_f64();
            t.hold_until = Some(end);
        }
    }

    /// The seconds left (rounded up) of the flood wait running for
    /// `method`, if one is, and whether it is a premium wait; a call that
    /// came in, and was made by the client (its msg_id's time, `sent`),
    /// more than [`FLOOD_GRACE`] after the client was told of the wait is
    /// recorded as early. (Calls the client made before it was told, but
    /// which the server reads late behind others on a busy machine, are not.)
    pub(crate) fn flood_running(&self, method: &'static str, sent: std::time::SystemTime) -> Option<(u32, bool)> {
        let now = tokio::time::Instant::now();
        let window = *self.flood_windows.lock().expect("flood lock").get(method)?;
        if now >= window.until {
            return None;
        }
        if now > window.told_at + FLOOD_GRACE && sent > window.told_at_wall + FLOOD_GRACE {
            self.early_calls.lock().expect("early lock").push(method);
        }
        Some(((window.until - now).as_secs_f64().ceil().max(1.0) as u32, window.premium))
    }

    /// A premium wait to answer a call of `method` moving `bytes`, if the
    /// account's transfer budget is spent; otherwise the bytes are counted.
    pub(crate) fn premium_wait(&self, method: &str, bytes: Option<u64>) -> Option<u32> {
        if !faults::PremiumWait::applies_to(method) {
            return None;
        }
        let mut premium = self.premium.lock().expect("premium lock");
        premium.as_mut()?.admit(self.started.elapsed(), bytes.unwrap_or(0))
    }

    /// A flood wait of `secs` for `method` starts now; the client reads it at `told_at`.
    pub(crate) fn start_flood(&self, method: &'static str, secs: u32, told_at: tokio::time::Instant, premium: bool) {
        let now = tokio::time::Instant::now();
        let until = now + std::time::Duration::from_secs(secs.into());
        let told_at_wall = std::time::SystemTime::now() + told_at.saturating_duration_since(now);
        let mut windows = self.flood_windows.lock().expect("flood lock");
        match windows.get_mut(method) {
            // A longer wait while one runs: the client knew of the first.
            Some(w) if w.until > tokio::time::Instant::now() => w.until = w.until.max(until),
            _ => {
                windows.insert(method, FloodWindow { told_at, until, premium, told_at_wall });
            }
        }
    }

    pub(crate) fn stat(&self, f: impl FnOnce(&mut ProtocolStats)) {
        f(&mut self.stats.lock().expect("stats lock"));
    }

    /// A new connection: its number, for [`Shared::count_connection_bytes`].
    pub(crate) fn new_connection(&self) -> usize {
        let mut all = self.per_connection.lock().expect("connections lock");
        all.push(ConnectionTraffic::default());
        all.len() - 1
    }

    /// Connection `conn` carried an upload part (`up`) or a downloaded chunk of `bytes`.
    pub(crate) fn count_connection_bytes(&self, conn: usize, up: bool, bytes: usize) {
        let mut all = self.per_connection.lock().expect("connections lock");
        if let Some(c) = all.get_mut(conn) {
            if up {
                c.parts += 1;
                c.part_bytes += bytes as u64;
            } else {
                c.chunks += 1;
                c.chunk_bytes += bytes as u64;
            }
        }
        drop(all);
        if !up {
            let mut t = self.traffic.lock().expect("traffic lock");
            t.t.chunks += 1;
            t.t.chunk_bytes += bytes as u64;
        }
    }

    /// When the answer to a call received now reaches the client: after the
    /// configured latency (a round trip), and for a file transfer of `bytes`
    /// (an upload part in the request, or a downloaded chunk in the answer)
    /// not before it has crossed both the simulated link, which carries one
    /// transfer after another at its rate, and the connection's own lane
    /// (`connection`), which does the same at the connection's rate.
    pub(crate) fn answer_due(
        &self,
        transfer: Option<(Direction, usize)>,
        connection: &mut Lane,
    ) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut due = now + self.latency;
        if let Some((direction, bytes)) = transfer {
            let link = match direction {
                Direction::Up => &self.upload_link,
                Direction::Down => &self.download_link,
            };
            due = due.max(link.lock().expect("link lock").carry(now, bytes));
            due = due.max(connection.carry(now, bytes));
        }
        due
    }

    pub(crate) fn run_call(&self, call: &api::Call, info: &api::ConnInfo) -> Result<Vec<u8>, RpcErr> {
        let answer = api::answer(
            &mut self.world.lock().expect("world lock"),
            &mut self.dcs.lock().expect("dcs lock"),
            call,
            info,
        );
        match &answer {
            Ok(_) => {
                if let Some(n) = api::part_bytes(call) {
                    self.count_part(n);
                }
            }
            Err(e) if e == &auth::bot_method_invalid() => {
                self.bot_refusals.lock().expect("refusals lock").push(call.name());
            }
            Err(_) => {}
        }
        answer
    }
}

/// A running loopback server. Dropping it stops the server and its connections.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// Accepts connections to DC `dc` until the server is dropped.
fn accept_loop(listener: TcpListener, dc: i32, shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(conn::serve(stream, dc, Arc::clone(&shared)));
                    }
                    Err(e) => tracing::warn!("accept failed: {e}"),
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}

/// The IPv4 and IPv6 forms of a loopback address, as a session holds them.
fn session_addrs(addr: SocketAddr) -> (SocketAddrV4, SocketAddrV6) {
    let ipv4 = match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, addr.port()),
    };
    let ipv6 = match addr {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(a) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
    };
    (ipv4, ipv6)
}

impl Server {
    /// Starts on 127.0.0.1 with a free port and a random auth key.
    pub async fn start() -> std::io::Result<Server> {
        Server::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        // The other DC listens on the same interface, on a free port.
        let mut other_addr = addr;
        other_addr.set_port(0);
        let other = TcpListener::bind(other_addr).await?;
        let mut dcs = dcs::Dcs::default();
        dcs.addrs.insert(DC_ID, addr);
        dcs.addrs.insert(1, other.local_addr()?);
        let key = config.auth_key.unwrap_or_else(random_auth_key);
        let auth_key = dcs.add_key(DC_ID, key, true);
        let mut world = World::new(config.limits);
        if !config.private_id_gaps {
            world.contiguous_private_ids();
        }
        let shared = Arc::new(Shared {
            auth_key,
            dcs: Mutex::new(dcs),
            salts: Salts::new(),
            world: Mutex::new(world),
            faults: Mutex::new({
                let mut f = config.seed.map_or_else(faults::Faults::default, faults::Faults::seeded);
                f.set_rates(config.rates);
                f
            }),
            calls: Mutex::new(HashMap::new()),
            dc_calls: Mutex::new(HashMap::new()),
            errors: Mutex::new(HashMap::new()),
            traffic: Mutex::new(TrafficLog::default()),
            latency: config.latency,
            upload_link: Mutex::new(Lane::new(config.upload_bytes_per_sec)),
            download_link: Mutex::new(Lane::new(config.download_bytes_per_sec)),
            connection_bytes_per_sec: config.connection_bytes_per_sec,
            per_connection: Mutex::new(Vec::new()),
            flood_windows: Mutex::new(HashMap::new()),
            early_calls: Mutex::new(Vec::new()),
            bot_refusals: Mutex::new(Vec::new()),
            premium: Mutex::new(config.premium_wait.map(faults::PremiumBudget::new)),
            started: tokio::time::Instant::now(),
            stats: Mutex::new(ProtocolStats::default()),
        });
        let tasks = vec![accept_loop(listener, DC_ID, Arc::clone(&shared)), accept_loop(other, 1, Arc::clone(&shared))];
        Ok(Server { addr, shared, tasks })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn auth_key(&self) -> [u8; 256] {
        self.shared.auth_key.bytes()
    }

    pub fn dc_id(&self) -> i32 {
        DC_ID
    }

    /// Where DC `dc` listens ([`Server::addr`] for [`DC_ID`]).
    pub fn addr_of(&self, dc: i32) -> Option<SocketAddr> {
        self.shared.dcs.lock().expect("dcs lock").addrs.get(&dc).copied()
    }

    /// Session contents for a grammers client of the account homed on DC
    /// `home_dc` (a second login, e.g. another host or a bot whose data
    /// lives there): a new key on `home_dc`, authorized while the account
    /// is logged in, and a new key on every other DC, as a client's key
    /// exchange leaves it: unauthorized until `auth.importAuthorization`.
    /// Documents this client uploads are stored on `home_dc`.
    pub fn session_data_on(&self, home_dc: i32) -> grammers_session::SessionData {
        let mut dcs = self.shared.dcs.lock().expect("dcs lock");
        let addrs = dcs.addrs.clone();
        let dc_options = addrs
            .iter()
            .map(|(&id, &addr)| {
                let key = dcs.add_key(id, random_auth_key(), id == home_dc);
                let (ipv4, ipv6) = session_addrs(addr);
                (id, grammers_session::types::DcOption { id, ipv4, ipv6, auth_key: Some(key.bytes()) })
            })
            .collect();
        grammers_session::SessionData { home_dc, dc_options, ..Default::default() }
    }

    /// A new key on DC `dc` for the session of [`Server::session_data`], as
    /// its key exchange with that DC would make: unauthorized until an
    /// authorization is imported with it.
    pub fn new_key_on(&self, dc: i32) -> [u8; 256] {
        self.shared.dcs.lock().expect("dcs lock").add_key(dc, random_auth_key(), false).bytes()
    }

    /// The account's user id and access hash (what `users.getUsers` returns).
    pub fn me(&self) -> (i64, i64) {
        let w = self.shared.world.lock().expect("world lock");
        (w.me.id, w.me.access_hash)
    }

    /// Session contents for a grammers client: home DC [`DC_ID`] at this
    /// server's address with the auth key, and no other DC options.
    pub fn session_data(&self) -> grammers_session::SessionData {
        let (ipv4, ipv6) = session_addrs(self.addr);
        let option = grammers_session::types::DcOption { id: DC_ID, ipv4, ipv6, auth_key: Some(self.auth_key()) };
        grammers_session::SessionData {
            home_dc: DC_ID,
            dc_options: [(DC_ID, option)].into_iter().collect(),
            ..Default::default()
        }
    }

    /// The connection facts as one line of JSON: `addr`, `dc_id`, `auth_key_hex`,
    /// `user_id`, `user_access_hash`.
    pub fn info_json(&self) -> String {
        let key: String = self.auth_key().iter().map(|b| format!("{b:02x}")).collect();
        let (user_id, access_hash) = self.me();
        format!(
            "{{\"addr\":\"{}\",\"dc_id\":{},\"auth_key_hex\":\"{}\",\"user_id\":{},\"user_access_hash\":{}}}",
            self.addr, DC_ID, key, user_id, access_hash
        )
    }

    /// Makes the next `times` calls of `method` (e.g. "upload.saveBigFilePart") fail with `fault`.
    pub fn inject(&self, method: &str, fault: Fault, times: usize) {
        self.inject_after(method, 0, fault, times);
    }

    /// Like [`Server::inject`], after letting `skip` calls through.
    pub fn inject_after(&self, method: &str, skip: usize, fault: Fault, times: usize) {
        self.shared.faults.lock().expect("faults lock").add(method, skip, times, fault);
    }

    /// Changes the random failure rates of the running server.
    pub fn set_rates(&self, rates: Rates) {
        self.shared.faults.lock().expect("faults lock").set_rates(rates);
    }

    /// The seed the random failures are rolled from: a failing run is
    /// replayed with `Config::with_seed` (or `--seed`) and this value.
    pub fn seed(&self) -> u64 {
        self.shared.faults.lock().expect("faults lock").seed()
    }

    /// Faults injected but not fired yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().expect("faults lock").pending()
    }

    /// How many times `method` was called (wrappers removed), faults included.
    pub fn calls(&self, method: &str) -> usize {
        self.shared.calls.lock().expect("calls lock").get(method).copied().unwrap_or(0)
    }

    /// How many times `method` was called on DC `dc`.
    pub fn calls_on(&self, dc: i32, method: &str) -> usize {
        let calls = self.shared.dc_calls.lock().expect("calls lock");
        calls.iter().filter(|((d, m), _)| *d == dc && *m == method).map(|(_, n)| n).sum()
    }

    /// How many RPC errors whose name starts with `prefix` (e.g.
    /// `FILE_MIGRATE_`) were answered, injected ones included.
    pub fn errors_answered(&self, prefix: &str) -> usize {
        let errors = self.shared.errors.lock().expect("errors lock");
        errors.iter().filter(|(name, _)| name.starts_with(prefix)).map(|(_, n)| n).sum()
    }

    /// Calls that came in while a flood wait of their method was running,
    /// more than [`FLOOD_GRACE`] after the client had been told of it: a
    /// client that honours flood waits makes none.
    pub fn early_calls(&self) -> Vec<&'static str> {
        self.shared.early_calls.lock().expect("early lock").clone()
    }

    /// The calls answered `BOT_METHOD_INVALID` (a method Telegram refuses
    /// bots), in order: a client that knows it is a bot makes none.
    pub fn bot_refusals(&self) -> Vec<&'static str> {
        self.shared.bot_refusals.lock().expect("refusals lock").clone()
    }

    /// Sets (or with `None` lifts) a free account's transfer budget, from
    /// now on: bytes already moved do not count against it.
    pub fn set_premium_wait(&self, profile: Option<PremiumWait>) {
        *self.shared.premium.lock().expect("premium lock") = profile.map(faults::PremiumBudget::new);
    }

    /// Calls answered `FLOOD_PREMIUM_WAIT_X` because the transfer budget
    /// was spent (not counting those told of a wait already running).
    pub fn premium_waits(&self) -> usize {
        self.shared.premium.lock().expect("premium lock").as_ref().map_or(0, |b| b.waits)
    }

    /// Ends every flood wait running now, as if its time had passed: a test
    /// stands in for the hour a client would wait.
    pub fn end_flood_waits(&self) {
        self.shared.flood_windows.lock().expect("flood lock").clear();
    }

    /// Every method called so far with its number of calls (wrappers
    /// removed, faults included), most called first.
    pub fn call_counts(&self) -> Vec<(&'static str, usize)> {
        let mut v: Vec<_> = self.shared.calls.lock().expect("calls lock").iter().map(|(k, n)| (*k, *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    /// Upload parts and flood waits so far.
    pub fn traffic(&self) -> Traffic {
        self.shared.traffic.lock().expect("traffic lock").t.clone()
    }

    /// Upload parts and flood waits since the last call (or the start), and
    /// starts counting afresh.
    pub fn take_traffic(&self) -> Traffic {
        std::mem::take(&mut self.shared.traffic.lock().expect("traffic lock").t)
    }

    /// File bytes carried by each connection opened so far, in the order
    /// they were opened (connections that carried none included).
    pub fn connection_traffic(&self) -> Vec<ConnectionTraffic> {
        self.shared.per_connection.lock().expect("connections lock").clone()
    }

    /// What the protocol layer has seen so far.
    pub fn protocol_stats(&self) -> ProtocolStats {
        *self.shared.stats.lock().expect("stats lock")
    }

    /// Direct access to the simulated account, e.g. to create a public
    /// channel or delete a message as someone else would.
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.shared.world.lock().expect("world lock"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn traffic_counts_parts_and_overlapping_flood_waits_once() {
        let server = Server::start().await.unwrap();
        server.shared.count_part(1000);
        server.shared.count_part(24);
        server.shared.count_flood_wait(2);
        server.shared.count_flood_wait(2);
        let t = server.take_traffic();
        assert_eq!((t.parts, t.part_bytes, t.flood_waits, t.flood_wait_secs), (2, 1024, 2, 4));
        assert!(t.flood_hold_secs >= 2.0 && t.flood_hold_secs < 2.5, "{}", t.flood_hold_secs);
        assert!(t.first_part_at <= t.last_part_at);
        assert_eq!(server.take_traffic(), Traffic::default());
    }

    #[tokio::test]
    async fn call_counts_list_the_most_called_first() {
        let server = Server::start().await.unwrap();
        for name in ["b", "a", "b"] {
            server.shared.count_call(DC_ID, name);
        }
        assert_eq!(server.call_counts(), vec![("b", 2), ("a", 1)]);
    }

    #[test]
    fn msg_ids_carry_the_time_they_were_made() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 250_000_000);
        let msg_id = ((1_700_000_000u64 << 32) | (250_000_000u64 << 2)) as i64;
        assert_eq!(msg_id_time(msg_id), at);
    }
}
