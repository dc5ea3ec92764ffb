//! The server's two datacenters: DC 1 and DC 2, each with its own listening
//! address and its own auth keys, as on Telegram. A key belongs to one DC
//! (a connection to another DC with it is answered -404, unknown key) and is
//! authorized either by the account's login (the keys of sessions homed on
//! a DC) or by `auth.importAuthorization` of what `auth.exportAuthorization`
//! gave on an authorized key of the other DC. Until then every call on it
//! but the login ones is answered `401 AUTH_KEY_UNREGISTERED`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use grammers_tl_types as tl;

use crate::crypto::AuthKey;
use crate::world::{RpcErr, RpcResult};

/// The datacenters the server runs.
pub const DC_IDS: [i32; 2] = [1, 2];

/// How a key is authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyAuth {
    /// By the account's login: authorized while the account is logged in
    /// (`World::login`), as a session's home key is.
    Login,
    /// By an imported authorization (false until one is imported).
    Imported(bool),
}

struct Key {
    key: AuthKey,
    dc: i32,
    auth: KeyAuth,
}

/// Keys, addresses and exported authorizations of both DCs.
#[derive(Default)]
pub(crate) struct Dcs {
    keys: HashMap<[u8; 8], Key>,
    /// Authorizations exported and not yet imported: bytes → the DC they are for.
    exported: HashMap<Vec<u8>, i32>,
    pub(crate) addrs: BTreeMap<i32, SocketAddr>,
}

impl Dcs {
    /// Registers a key on `dc`: authorized by the login (`logged_in`), or
    /// waiting for an imported authorization.
    pub(crate) fn add_key(&mut self, dc: i32, data: [u8; 256], logged_in: bool) -> AuthKey {
        let key = AuthKey::new(data);
        let auth = if logged_in { KeyAuth::Login } else { KeyAuth::Imported(false) };
        self.keys.insert(key.id(), Key { key: key.clone(), dc, auth });
        key
    }

    /// The key with this id, if it belongs to `dc`.
    pub(crate) fn key_on(&self, dc: i32, id: &[u8]) -> Option<AuthKey> {
        let id: [u8; 8] = id.get(..8)?.try_into().ok()?;
        self.keys.get(&id).filter(|k| k.dc == dc).map(|k| k.key.clone())
    }

    /// Whether calls on the key `id` are authorized, given whether the
    /// account is logged in.
    pub(crate) fn authorized(&self, id: [u8; 8], logged_in: bool) -> bool {
        match self.keys.get(&id).map(|k| k.auth) {
            Some(KeyAuth::Login) => logged_in,
            Some(KeyAuth::Imported(done)) => done && logged_in,
            None => false,
        }
    }

    /// `auth.exportAuthorization` on `from_dc` (whose key is authorized) for `dc_id`.
    pub(crate) fn export(
        &mut self,
        from_dc: i32,
        dc_id: i32,
        user_id: i64,
    ) -> RpcResult<tl::enums::auth::ExportedAuthorization> {
        if dc_id == from_dc || !DC_IDS.contains(&dc_id) {
            return Err(RpcErr::bad("DC_ID_INVALID"));
        }
        let mut bytes = vec![0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
        self.exported.insert(bytes.clone(), dc_id);
        Ok(tl::enums::auth::ExportedAuthorization::Authorization(tl::types::auth::ExportedAuthorization {
            id: user_id,
            bytes,
        }))
    }

    /// `auth.importAuthorization` with the key `key_id` on `dc`: the bytes
    /// must have been exported for this DC, by this user, and are used once.
    pub(crate) fn import(&mut self, key_id: [u8; 8], dc: i32, id: i64, user_id: i64, bytes: &[u8]) -> RpcResult<()> {
        if id != user_id || self.exported.get(bytes) != Some(&dc) {
            return Err(RpcErr::bad("AUTH_BYTES_INVALID"));
        }
        self.exported.remove(bytes);
        match self.keys.get_mut(&key_id) {
            Some(k) if k.auth != KeyAuth::Login => k.auth = KeyAuth::Imported(true),
            Some(_) => {}
            None => return Err(RpcErr { code: 401, message: "AUTH_KEY_UNREGISTERED".into() }),
        }
        Ok(())
    }
}
