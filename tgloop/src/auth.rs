//! Logging in: whether the account's auth key is authorized, and the calls
//! that authorize it the way Telegram does: a login code sent to the phone
//! (`auth.sendCode`, `auth.signIn`), the two-step verification password
//! checked with SRP (`account.getPassword`, `auth.checkPassword`, the server
//! side of <https://core.telegram.org/api/srp>), a bot token
//! (`auth.importBotAuthorization`), and `auth.logOut`. While the key is not
//! authorized, every other call but `help.getConfig` is answered
//! `401 AUTH_KEY_UNREGISTERED`.

use grammers_tl_types as tl;
use num_bigint::BigUint;
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};

use crate::world::{RpcErr, RpcResult};

/// Telegram's 2048-bit safe prime, used with generator 3.
const P_HEX: &str = "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f\
48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c3720fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64\
2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef12847\
54fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce92\
9851f0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b";
const G: u32 = 3;

/// How the account logs in.
#[derive(Clone, Debug)]
pub struct Login {
    /// Whether the auth key is logged in. Servers start logged in, so that
    /// a seeded session works at once.
    pub authorized: bool,
    /// Whether the key is logged in as the account's bot (after
    /// `auth.importBotAuthorization`) rather than as the user: a bot is
    /// refused the methods Telegram refuses bots ([`refused_to_bots`]).
    pub as_bot: bool,
    /// The code `auth.sendCode` "sends".
    pub code: String,
    /// The two-step verification password, if the account has one.
    pub password: Option<String>,
    pub password_hint: Option<String>,
    /// The token `auth.importBotAuthorization` accepts.
    pub bot_token: String,
    code_hash: Option<String>,
    srp: Option<Srp>,
}

impl Default for Login {
    fn default() -> Login {
        Login {
            authorized: true,
            as_bot: false,
            code: "12345".into(),
            password: None,
            password_hint: None,
            bot_token: "123456:loopback-bot-token".into(),
            code_hash: None,
            srp: None,
        }
    }
}

/// One password check in progress: the server's secret and public values.
#[derive(Clone, Debug)]
struct Srp {
    id: i64,
    salt1: Vec<u8>,
    salt2: Vec<u8>,
    b: BigUint,
    g_b: [u8; 256],
    v: BigUint,
}

fn p() -> BigUint {
    BigUint::parse_bytes(P_HEX.as_bytes(), 16).expect("the prime is valid hex")
}

fn pad(n: &BigUint) -> [u8; 256] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; 256];
    out[256 - bytes.len().min(256)..].copy_from_slice(&bytes[bytes.len().saturating_sub(256)..]);
    out
}

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

/// x = PH2(password, salt1, salt2) as Telegram defines it.
fn ph2(password: &[u8], salt1: &[u8], salt2: &[u8]) -> [u8; 32] {
    let sh = |data: &[u8], salt: &[u8]| h(&[salt, data, salt]);
    let ph1 = sh(&sh(password, salt1), salt2);
    let mut dk = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(&ph1, salt1, 100_000, &mut dk);
    sh(&dk, salt2)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Calls that work without a logged-in key.
pub fn allowed_unauthorized(name: &str) -> bool {
    matches!(
        name,
        "help.getConfig"
            | "auth.sendCode"
            | "auth.signIn"
            | "auth.checkPassword"
            | "auth.importBotAuthorization"
            | "auth.importAuthorization"
            | "auth.logOut"
            | "account.getPassword"
    )
}

/// Methods Telegram answers `400 BOT_METHOD_INVALID` when a bot calls
/// them: reading a chat's history or searching it, listing dialogs,
/// creating channels (and, in [`crate::world::World`], anything about the
/// bot's own chat, which does not exist).
pub fn refused_to_bots(name: &str) -> bool {
    matches!(
        name,
        "messages.getHistory"
            | "messages.search"
            | "messages.getDialogs"
            | "channels.createChannel"
            | "messages.getSearchCounters"
            | "messages.searchGlobal"
            | "channels.getAdminedPublicChannels"
            | "contacts.getContacts"
    )
}

/// The answer to a method Telegram refuses bots.
pub fn bot_method_invalid() -> RpcErr {
    RpcErr::bad("BOT_METHOD_INVALID")
}

pub fn unauthorized() -> RpcErr {
    RpcErr { code: 401, message: "AUTH_KEY_UNREGISTERED".into() }
}

impl Login {
    /// auth.sendCode for the account's phone number.
    pub fn send_code(&mut self, phone: &str, my_phone: &str, api_hash: &str) -> RpcResult<tl::enums::auth::SentCode> {
        if api_hash.is_empty() {
            return Err(RpcErr::bad("API_ID_INVALID"));
        }
        if digits(phone) != digits(my_phone) {
            return Err(RpcErr::bad("PHONE_NUMBER_INVALID"));
        }
        let hash = hex(&random_bytes(9));
        self.code_hash = Some(hash.clone());
        Ok(tl::enums::auth::SentCode::Code(tl::types::auth::SentCode {
            r#type: tl::types::auth::SentCodeTypeApp { length: self.code.len() as i32 }.into(),
            phone_code_hash: hash,
            next_type: None,
            timeout: None,
        }))
    }

    /// auth.signIn with the code; `SESSION_PASSWORD_NEEDED` when a password is set.
    pub fn sign_in(&mut self, hash: &str, code: Option<&str>) -> RpcResult<()> {
        if self.code_hash.as_deref() != Some(hash) {
            return Err(RpcErr::bad("PHONE_CODE_EXPIRED"));
        }
        match code {
            None | Some("") => return Err(RpcErr::bad("PHONE_CODE_EMPTY")),
            Some(c) if c != self.code => return Err(RpcErr::bad("PHONE_CODE_INVALID")),
            Some(_) => {}
        }
        if self.password.is_some() {
            return Err(RpcErr { code: 401, message: "SESSION_PASSWORD_NEEDED".into() });
        }
        self.code_hash = None;
        self.authorized = true;
        self.as_bot = false;
        Ok(())
    }

    /// account.getPassword: the SRP parameters and a fresh server value.
    pub fn get_password(&mut self) -> tl::enums::account::Password {
        let algo = |salt1: Vec<u8>, salt2: Vec<u8>| {
            tl::enums::PasswordKdfAlgo::Sha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow(
                tl::types::PasswordKdfAlgoSha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow {
                    salt1,
                    salt2,
                    g: G as i32,
                    p: pad(&p()).to_vec(),
                },
            )
        };
        let (current_algo, srp_b, srp_id) = match &self.password {
            Some(password) => {
                let (salt1, salt2) = (random_bytes(8), random_bytes(16));
                let (p, g) = (p(), BigUint::from(G));
                let x = BigUint::from_bytes_be(&ph2(password.as_bytes(), &salt1, &salt2));
                let v = g.modpow(&x, &p);
                let k = BigUint::from_bytes_be(&h(&[&pad(&p), &pad(&g)]));
                let b = BigUint::from_bytes_be(&random_bytes(256)) % &p;
                let g_b = pad(&((k * &v + g.modpow(&b, &p)) % &p));
                let id = rand::random::<i64>();
                self.srp = Some(Srp { id, salt1: salt1.clone(), salt2: salt2.clone(), b, g_b, v });
                (Some(algo(salt1, salt2)), Some(g_b.to_vec()), Some(id))
            }
            None => (None, None, None),
        };
        tl::enums::account::Password::Password(tl::types::account::Password {
            has_recovery: false,
            has_secure_values: false,
            has_password: self.password.is_some(),
            current_algo,
            srp_b,
            srp_id,
            hint: self.password_hint.clone(),
            email_unconfirmed_pattern: None,
            new_algo: algo(random_bytes(8), Vec::new()),
            new_secure_algo: tl::enums::SecurePasswordKdfAlgo::Unknown,
            secure_random: random_bytes(256),
            pending_reset_date: None,
            login_email_pattern: None,
        })
    }

    /// auth.checkPassword: verifies the client's SRP proof `m1` for `g_a`.
    pub fn check_password(&mut self, srp_id: i64, g_a: &[u8], m1: &[u8]) -> RpcResult<()> {
        let srp = self.srp.take().filter(|s| s.id == srp_id).ok_or_else(|| RpcErr::bad("SRP_ID_INVALID"))?;
        let p = p();
        let a = BigUint::from_bytes_be(g_a);
        if g_a.len() > 256 || a <= BigUint::from(1u32) || a >= &p - 1u32 {
            return Err(RpcErr::bad("SRP_A_INVALID"));
        }
        let g_a = pad(&a);
        let u = BigUint::from_bytes_be(&h(&[&g_a, &srp.g_b]));
        let s = (&a * srp.v.modpow(&u, &p)).modpow(&srp.b, &p);
        let k_a = h(&[&pad(&s)]);
        let (h_p, h_g) = (h(&[&pad(&p)]), h(&[&pad(&BigUint::from(G))]));
        let p_xor_g: Vec<u8> = h_p.iter().zip(h_g.iter()).map(|(x, y)| x ^ y).collect();
        let expected = h(&[&p_xor_g, &h(&[&srp.salt1]), &h(&[&srp.salt2]), &g_a, &srp.g_b, &k_a]);
        if expected[..] != *m1 {
            return Err(RpcErr::bad("PASSWORD_HASH_INVALID"));
        }
        self.code_hash = None;
        self.authorized = true;
        self.as_bot = false;
        Ok(())
    }

    /// auth.importBotAuthorization: the key is the bot's from now on.
    pub fn import_bot(&mut self, token: &str) -> RpcResult<()> {
        if token != self.bot_token {
            return Err(RpcErr::bad("ACCESS_TOKEN_INVALID"));
        }
        self.authorized = true;
        self.as_bot = true;
        Ok(())
    }

    pub fn log_out(&mut self) {
        self.authorized = false;
        self.as_bot = false;
        self.code_hash = None;
        self.srp = None;
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// auth.authorization for the account's user.
pub fn authorization(user: tl::enums::User) -> tl::enums::auth::Authorization {
    tl::enums::auth::Authorization::Authorization(tl::types::auth::Authorization {
        setup_password_required: false,
        otherwise_relogin_days: None,
        tmp_sessions: None,
        future_auth_token: None,
        user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prime_is_a_valid_srp_group() {
        assert!(grammers_crypto::two_factor_auth::check_p_and_g(&pad(&p()), &(G as i32)));
    }

    #[test]
    fn a_client_proof_is_accepted_only_for_the_right_password() {
        let mut login = Login { password: Some("hunter2".into()), ..Login::default() };
        for (password, ok) in [("hunter2", true), ("wrong", false)] {
            let tl::enums::account::Password::Password(pw) = login.get_password();
            let Some(tl::enums::PasswordKdfAlgo::Sha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow(algo)) =
                pw.current_algo
            else {
                panic!("no SRP parameters")
            };
            let (m1, g_a) = grammers_crypto::two_factor_auth::calculate_2fa(
                &algo.salt1,
                &algo.salt2,
                &algo.p,
                &algo.g,
                pw.srp_b.unwrap(),
                pw.secure_random,
                password,
            );
            assert_eq!(login.check_password(pw.srp_id.unwrap(), &g_a, &m1).is_ok(), ok, "{password}");
        }
    }
}
