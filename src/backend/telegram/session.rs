//! tstor's own storage for a Telegram session: home DC, DC addresses with
//! their auth keys, the API id, and the few peers tstor needs (the logged-in
//! user and channels), kept in memory and saved as JSON in a file only its
//! owner can read (mode 0600). A session file opened with
//! [`TelegramSession::open`] is held under an exclusive lock, so one process
//! at a time uses it. Implements grammers' `Session` trait, so grammers'
//! SQLite store (and libsql) is not needed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddrV4, SocketAddrV6};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use grammers_client::session::types::{DcOption, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState};
use grammers_client::session::{BoxFuture, Session, SessionData};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session lock poisoned")]
    Poisoned,
    #[error("cannot save session to {path}: {source}")]
    Save { path: String, source: std::io::Error },
    #[error("no Telegram session at {path}: run `tstor login` first")]
    Missing { path: String },
    #[error("the Telegram session {path} is in use by another tstor process")]
    InUse { path: String },
    #[error("the Telegram session {path} cannot be read ({reason}): run `tstor login` again")]
    Invalid { path: String, reason: String },
    #[error("Telegram session {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl SessionError {
    /// Whether the remedy is `tstor login`.
    pub fn needs_login(&self) -> bool {
        matches!(self, SessionError::Missing { .. } | SessionError::Invalid { .. })
    }
}

/// Where the session lives unless `TSTOR_TG_SESSION` says otherwise:
/// `telegram.session` in tstor's directory under the user's config directory.
pub fn default_session_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("tstor").join("telegram.session"))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Dc {
    id: i32,
    ipv4: SocketAddrV4,
    ipv6: SocketAddrV6,
    auth_key: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Peer {
    User {
        id: i64,
        hash: Option<i64>,
        is_self: bool,
        /// Whether the user is a bot, once known (grammers says so at login).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bot: Option<bool>,
    },
    Channel {
        id: i64,
        hash: Option<i64>,
    },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Data {
    /// The API id the session was made with (`TSTOR_TG_API_ID` at login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_id: Option<i32>,
    home_dc: i32,
    dcs: BTreeMap<i32, Dc>,
    peers: BTreeMap<i64, Peer>,
}

/// A Telegram session: what grammers needs to reconnect without logging in.
pub struct TelegramSession {
    data: Mutex<Data>,
    path: Option<PathBuf>,
    /// Held while this session is in use.
    _lock: Option<SessionLock>,
}

/// The exclusive lock that goes with a session file.
pub struct SessionLock {
    _file: File,
}

fn io_err(path: &Path, source: std::io::Error) -> SessionError {
    SessionError::Io { path: path.display().to_string(), source }
}

/// Takes the exclusive lock that goes with the session file at `path`: a
/// `flock` on `<path>.lock` (the session file itself is replaced on every
/// save, so it cannot carry the lock). Fails at once if another process
/// holds it. Creates missing parent directories with mode 0700.
pub fn lock_session(path: &Path) -> Result<SessionLock, SessionError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| io_err(&lock_path, e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            SessionError::InUse { path: path.display().to_string() }
        } else {
            io_err(&lock_path, e)
        });
    }
    Ok(SessionLock { _file: file })
}

fn key_hex(key: &[u8; 256]) -> String {
    hex::encode(key)
}

fn key_bytes(hex_key: &str) -> Option<[u8; 256]> {
    let mut out = [0u8; 256];
    hex::decode_to_slice(hex_key, &mut out).ok()?;
    Some(out)
}

impl TelegramSession {
    /// A session that only knows one DC: `home_dc` at these addresses, with an
    /// existing auth key. No other DC is known, so nothing can fall back to
    /// another address.
    pub fn with_dc(home_dc: i32, ipv4: SocketAddrV4, ipv6: SocketAddrV6, auth_key: [u8; 256]) -> TelegramSession {
        let mut dcs = BTreeMap::new();
        dcs.insert(home_dc, Dc { id: home_dc, ipv4, ipv6, auth_key: Some(key_hex(&auth_key)) });
        let data = Data { api_id: None, home_dc, dcs, peers: BTreeMap::new() };
        TelegramSession { data: Mutex::new(data), path: None, _lock: None }
    }

    /// A session that has not logged in yet, knowing Telegram's static DC
    /// addresses (grammers' defaults) and no auth key.
    pub fn fresh(api_id: i32) -> TelegramSession {
        let defaults = SessionData::default();
        let dcs = defaults
            .dc_options
            .values()
            .map(|o| (o.id, Dc { id: o.id, ipv4: o.ipv4, ipv6: o.ipv6, auth_key: None }))
            .collect();
        let data = Data { api_id: Some(api_id), home_dc: defaults.home_dc, dcs, peers: BTreeMap::new() };
        TelegramSession { data: Mutex::new(data), path: None, _lock: None }
    }

    /// A copy of this session's home DC and DC addresses (with their keys)
    /// for a new login with `api_id`, without peers and without a file.
    pub fn for_new_login(&self, api_id: i32) -> TelegramSession {
        let (home_dc, dcs) = match self.lock() {
            Ok(d) => (d.home_dc, d.dcs.clone()),
            Err(_) => return TelegramSession::fresh(api_id),
        };
        let data = Data { api_id: Some(api_id), home_dc, dcs, peers: BTreeMap::new() };
        TelegramSession { data: Mutex::new(data), path: None, _lock: None }
    }

    /// Loads a session saved by [`TelegramSession::save_to`]; later changes are saved there too.
    /// Takes no lock: for tools and tests; tstor itself uses [`TelegramSession::open`].
    pub fn load(path: &Path) -> std::io::Result<TelegramSession> {
        let text = std::fs::read_to_string(path)?;
        let data: Data =
            serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(TelegramSession { data: Mutex::new(data), path: Some(path.to_path_buf()), _lock: None })
    }

    /// Opens the session file at `path` for this process alone: takes its
    /// exclusive lock (refusing if another process holds it), then loads it.
    pub fn open(path: &Path) -> Result<TelegramSession, SessionError> {
        let display = || path.display().to_string();
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SessionError::Missing { path: display() })
            }
            Err(e) => return Err(io_err(path, e)),
        }
        let lock = lock_session(path)?;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SessionError::Missing { path: display() })
            }
            Err(e) => return Err(io_err(path, e)),
        };
        let data: Data = serde_json::from_str(&text)
            .map_err(|e| SessionError::Invalid { path: display(), reason: e.to_string() })?;
        if !data.dcs.contains_key(&data.home_dc) {
            return Err(SessionError::Invalid { path: display(), reason: "its home DC has no address".into() });
        }
        Ok(TelegramSession { data: Mutex::new(data), path: Some(path.to_path_buf()), _lock: Some(lock) })
    }

    /// Makes `path`, whose lock the caller holds, this session's file and
    /// saves it there; for `tstor login`.
    pub fn create_at(&mut self, path: &Path, lock: SessionLock) -> Result<(), SessionError> {
        self._lock = Some(lock);
        self.save_to(path)
    }

    /// The API id stored with the session.
    pub fn api_id(&self) -> Option<i32> {
        self.lock().ok()?.api_id
    }

    /// Sets the API id (saved with the next change).
    pub fn set_api_id(&self, api_id: i32) -> Result<(), SessionError> {
        self.lock()?.api_id = Some(api_id);
        self.save()
    }

    /// Where this session is saved, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the session holds an auth key for its home DC.
    pub fn has_auth_key(&self) -> bool {
        self.lock().ok().is_some_and(|d| d.dcs.get(&d.home_dc).is_some_and(|dc| dc.auth_key.is_some()))
    }

    /// Remembers a channel's access hash (saved at once).
    pub fn remember_channel(&self, id: i64, access_hash: i64) -> Result<(), SessionError> {
        let changed = {
            let mut data = self.lock()?;
            let new = Peer::Channel { id, hash: Some(access_hash) };
            let changed = data.peers.get(&id) != Some(&new);
            data.peers.insert(id, new);
            changed
        };
        if changed {
            self.save()?;
        }
        Ok(())
    }

    /// The access hash of a channel this session has seen.
    pub fn channel_hash(&self, id: i64) -> Option<i64> {
        match self.lock().ok()?.peers.get(&id) {
            Some(Peer::Channel { hash, .. }) => *hash,
            _ => None,
        }
    }

    /// Saves to `path` (atomically: write then rename) and keeps saving there.
    pub fn save_to(&mut self, path: &Path) -> Result<(), SessionError> {
        self.path = Some(path.to_path_buf());
        self.save()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Data>, SessionError> {
        self.data.lock().map_err(|_| SessionError::Poisoned)
    }

    /// Writes the session to its file: a temporary file made with mode 0600,
    /// synced, then renamed over the old one.
    fn save(&self) -> Result<(), SessionError> {
        let Some(path) = &self.path else { return Ok(()) };
        let text = serde_json::to_string_pretty(&*self.lock()?)
            .map_err(|e| SessionError::Save { path: path.display().to_string(), source: e.into() })?;
        let mut tmp_name = path.as_os_str().to_os_string();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let err = |source| SessionError::Save { path: path.display().to_string(), source };
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// The logged-in user's id and access hash, once grammers has seen it.
    pub fn self_user(&self) -> Option<(i64, i64)> {
        self.lock().ok()?.peers.values().find_map(|p| match p {
            Peer::User { id, hash: Some(h), is_self: true, .. } => Some((*id, *h)),
            _ => None,
        })
    }

    /// Whether the logged-in account is a bot, if the session knows.
    pub fn self_is_bot(&self) -> Option<bool> {
        self.lock().ok()?.peers.values().find_map(|p| match p {
            Peer::User { is_self: true, bot, .. } => *bot,
            _ => None,
        })
    }

    /// Remembers the logged-in account (saved at once): its id, access
    /// hash, and whether it is a bot.
    pub fn remember_self(&self, id: i64, access_hash: Option<i64>, bot: bool) -> Result<(), SessionError> {
        let changed = {
            let mut data = self.lock()?;
            let hash = access_hash.or(match data.peers.get(&id) {
                Some(Peer::User { hash, .. }) => *hash,
                _ => None,
            });
            let new = Peer::User { id, hash, is_self: true, bot: Some(bot) };
            let changed = data.peers.get(&id) != Some(&new);
            data.peers.insert(id, new);
            changed
        };
        if changed {
            self.save()?;
        }
        Ok(())
    }
}

fn to_info(p: &Peer) -> PeerInfo {
    match *p {
        Peer::User { id, hash, is_self, bot } => {
            PeerInfo::User { id, auth: hash.map(PeerAuth::from_hash), bot, is_self: Some(is_self) }
        }
        Peer::Channel { id, hash } => PeerInfo::Channel { id, auth: hash.map(PeerAuth::from_hash), kind: None },
    }
}

impl Session for TelegramSession {
    type Error = SessionError;

    fn home_dc_id(&self) -> Result<i32, SessionError> {
        Ok(self.lock()?.home_dc)
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            self.lock()?.home_dc = dc_id;
            self.save()
        })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, SessionError> {
        Ok(self.lock()?.dcs.get(&dc_id).map(|d| DcOption {
            id: d.id,
            ipv4: d.ipv4,
            ipv6: d.ipv6,
            auth_key: d.auth_key.as_deref().and_then(key_bytes),
        }))
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), SessionError>> {
        let dc = Dc {
            id: dc_option.id,
            ipv4: dc_option.ipv4,
            ipv6: dc_option.ipv6,
            auth_key: dc_option.auth_key.as_ref().map(key_hex),
        };
        Box::pin(async move {
            let changed = {
                let mut data = self.lock()?;
                let changed = data.dcs.get(&dc.id) != Some(&dc);
                data.dcs.insert(dc.id, dc);
                changed
            };
            if changed {
                self.save()?;
            }
            Ok(())
        })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<PeerInfo>, SessionError>> {
        Box::pin(async move {
            let data = self.lock()?;
            if peer == PeerId::self_user() {
                return Ok(data.peers.values().find(|p| matches!(p, Peer::User { is_self: true, .. })).map(to_info));
            }
            let Some(bare) = peer.bare_id() else { return Ok(None) };
            Ok(data.peers.get(&bare).filter(|p| to_info(p).id() == peer).map(to_info))
        })
    }

    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            let new = match peer {
                PeerInfo::User { id, auth, is_self, bot } => {
                    Peer::User { id, hash: auth.map(|a| a.hash()), is_self: is_self.unwrap_or(false), bot }
                }
                PeerInfo::Channel { id, auth, .. } => Peer::Channel { id, hash: auth.map(|a| a.hash()) },
                PeerInfo::Chat { .. } => return Ok(()),
            };
            let changed = {
                let mut data = self.lock()?;
                let merged = match (data.peers.get(&peer_key(&new)), &new) {
                    (
                        Some(Peer::User { hash: old_hash, is_self: old_self, bot: old_bot, .. }),
                        Peer::User { id, hash, is_self, bot },
                    ) => Peer::User {
                        id: *id,
                        hash: hash.or(*old_hash),
                        is_self: *is_self || *old_self,
                        bot: bot.or(*old_bot),
                    },
                    (Some(Peer::Channel { hash: old_hash, .. }), Peer::Channel { id, hash }) => {
                        Peer::Channel { id: *id, hash: hash.or(*old_hash) }
                    }
                    _ => new.clone(),
                };
                let changed = data.peers.get(&peer_key(&merged)) != Some(&merged);
                data.peers.insert(peer_key(&merged), merged);
                changed
            };
            if changed {
                self.save()?;
            }
            Ok(())
        })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, SessionError>> {
        // tstor does not follow updates.
        Box::pin(async { Ok(UpdatesState::default()) })
    }

    fn set_update_state(&self, _update: UpdateState) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async { Ok(()) })
    }
}

fn peer_key(p: &Peer) -> i64 {
    match p {
        Peer::User { id, .. } | Peer::Channel { id, .. } => *id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn persists_dcs_and_peers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4242);
        let v6 = SocketAddrV6::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 4242, 0, 0);
        let mut s = TelegramSession::with_dc(2, v4, v6, [7; 256]);
        s.save_to(&path).unwrap();
        s.cache_peer(PeerInfo::User { id: 5, auth: Some(PeerAuth::from_hash(9)), bot: None, is_self: Some(true) })
            .await
            .unwrap();
        s.cache_peer(PeerInfo::User { id: 5, auth: None, bot: None, is_self: None }).await.unwrap();

        let loaded = TelegramSession::load(&path).unwrap();
        assert_eq!(loaded.home_dc_id().unwrap(), 2);
        assert_eq!(loaded.dc_option(2).unwrap().unwrap().auth_key, Some([7; 256]));
        assert!(loaded.dc_option(1).unwrap().is_none());
        assert_eq!(loaded.self_user(), Some((5, 9)));
        assert_eq!(loaded.self_is_bot(), None, "not known until someone says");
        let me = loaded.peer(PeerId::self_user()).await.unwrap().unwrap();
        assert_eq!(me.auth(), Some(PeerAuth::from_hash(9)));
    }

    #[tokio::test]
    async fn remembers_whether_the_account_is_a_bot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4242);
        let v6 = SocketAddrV6::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 4242, 0, 0);
        let mut s = TelegramSession::with_dc(2, v4, v6, [7; 256]);
        s.save_to(&path).unwrap();
        // As grammers caches the account at a bot login.
        s.cache_peer(PeerInfo::User {
            id: 8,
            auth: Some(PeerAuth::from_hash(3)),
            bot: Some(true),
            is_self: Some(true),
        })
        .await
        .unwrap();
        // A later sighting that does not say keeps what is known.
        s.cache_peer(PeerInfo::User { id: 8, auth: None, bot: None, is_self: None }).await.unwrap();
        assert_eq!(TelegramSession::load(&path).unwrap().self_is_bot(), Some(true));

        let other = dir.path().join("other.json");
        let mut s = TelegramSession::with_dc(2, v4, v6, [7; 256]);
        s.save_to(&other).unwrap();
        s.remember_self(5, Some(9), false).unwrap();
        let loaded = TelegramSession::load(&other).unwrap();
        assert_eq!((loaded.self_is_bot(), loaded.self_user()), (Some(false), Some((5, 9))));
        // Session files written before the flag existed still load.
        let old = dir.path().join("old.json");
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&other).unwrap()).unwrap();
        let user = json["peers"]["5"].as_object_mut().unwrap();
        assert_eq!(user.remove("bot"), Some(serde_json::Value::Bool(false)));
        std::fs::write(&old, json.to_string()).unwrap();
        assert_eq!(TelegramSession::load(&old).unwrap().self_is_bot(), None);
    }
}
