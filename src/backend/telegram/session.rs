//! tstor's own storage for a Telegram session: home DC, DC addresses with
//! their auth keys, and the few peers tstor needs (the logged-in user and
//! channels), kept in memory and saved as JSON. Implements grammers'
//! `Session` trait, so grammers' SQLite store (and libsql) is not needed.

use std::collections::BTreeMap;
use std::net::{SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use grammers_client::session::types::{DcOption, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState};
use grammers_client::session::{BoxFuture, Session};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session lock poisoned")]
    Poisoned,
    #[error("cannot save session to {path}: {source}")]
    Save { path: String, source: std::io::Error },
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
    User { id: i64, hash: Option<i64>, is_self: bool },
    Channel { id: i64, hash: Option<i64> },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Data {
    home_dc: i32,
    dcs: BTreeMap<i32, Dc>,
    peers: BTreeMap<i64, Peer>,
}

/// A Telegram session: what grammers needs to reconnect without logging in.
pub struct TelegramSession {
    data: Mutex<Data>,
    path: Option<PathBuf>,
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
        TelegramSession { data: Mutex::new(Data { home_dc, dcs, peers: BTreeMap::new() }), path: None }
    }

    /// Loads a session saved by [`TelegramSession::save`]; later changes are saved there too.
    pub fn load(path: &Path) -> std::io::Result<TelegramSession> {
        let text = std::fs::read_to_string(path)?;
        let data: Data =
            serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(TelegramSession { data: Mutex::new(data), path: Some(path.to_path_buf()) })
    }

    /// Saves to `path` (atomically: write then rename) and keeps saving there.
    pub fn save_to(&mut self, path: &Path) -> Result<(), SessionError> {
        self.path = Some(path.to_path_buf());
        self.save()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Data>, SessionError> {
        self.data.lock().map_err(|_| SessionError::Poisoned)
    }

    fn save(&self) -> Result<(), SessionError> {
        let Some(path) = &self.path else { return Ok(()) };
        let text = serde_json::to_string_pretty(&*self.lock()?).expect("session data serializes");
        let tmp = path.with_extension("tmp");
        let err = |source| SessionError::Save { path: path.display().to_string(), source };
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// The logged-in user's id and access hash, once grammers has seen it.
    pub fn self_user(&self) -> Option<(i64, i64)> {
        self.lock().ok()?.peers.values().find_map(|p| match p {
            Peer::User { id, hash: Some(h), is_self: true } => Some((*id, *h)),
            _ => None,
        })
    }
}

fn to_info(p: &Peer) -> PeerInfo {
    match *p {
        Peer::User { id, hash, is_self } => {
            PeerInfo::User { id, auth: hash.map(PeerAuth::from_hash), bot: None, is_self: Some(is_self) }
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
                PeerInfo::User { id, auth, is_self, .. } => {
                    Peer::User { id, hash: auth.map(|a| a.hash()), is_self: is_self.unwrap_or(false) }
                }
                PeerInfo::Channel { id, auth, .. } => Peer::Channel { id, hash: auth.map(|a| a.hash()) },
                PeerInfo::Chat { .. } => return Ok(()),
            };
            let changed = {
                let mut data = self.lock()?;
                let merged = match (data.peers.get(&peer_key(&new)), &new) {
                    (Some(Peer::User { hash: old_hash, is_self: old_self, .. }), Peer::User { id, hash, is_self }) => {
                        Peer::User { id: *id, hash: hash.or(*old_hash), is_self: *is_self || *old_self }
                    }
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
        let me = loaded.peer(PeerId::self_user()).await.unwrap().unwrap();
        assert_eq!(me.auth(), Some(PeerAuth::from_hash(9)));
    }
}
