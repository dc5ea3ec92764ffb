//! The command line's Telegram side: opening `telegram:` repositories
//! (session file, API id and hash from the environment, else the
//! configuration file's `[telegram]` table, else defaults; tuning from the
//! environment), and the `login` and `logout` commands.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use grammers_client::{Client, SenderPool, SignInError};

use super::output::{escape, escape_path};
use super::views::LoginView;
use crate::backend::telegram::session::{default_session_path, lock_session, SessionError};
use crate::backend::telegram::{Options, Target, TelegramBackend, TelegramSession, DEFAULT_PACK_SIZE, MAX_PACK_SIZE};
use crate::backend::Backend;
use crate::crypto::names::ObjectNameCodec;

use super::Global;

/// A string (or, for `api-id`, a number) of the configuration file's `[telegram]` table.
fn setting(g: &Global, key: &str) -> Option<String> {
    match g.settings.telegram.get(key)? {
        toml::Value::String(s) if !s.is_empty() => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Where the session file is: `TSTOR_TG_SESSION`, the configuration file's
/// `session` (`~/` is the home directory, a relative path is relative to
/// the file), or the default under the user's config directory.
pub fn session_path(g: &Global) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TSTOR_TG_SESSION").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(s) = setting(g, "session") {
        let p = match (s.strip_prefix("~/"), dirs::home_dir()) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(&s),
        };
        let base = g.settings.file.as_deref().and_then(|f| f.parent()).unwrap_or(std::path::Path::new("."));
        return Ok(if p.is_absolute() { p } else { base.join(p) });
    }
    default_session_path()
        .ok_or_else(|| anyhow!("cannot find your config directory; set TSTOR_TG_SESSION to a session file"))
}

/// The API id: `TSTOR_TG_API_ID`, else the configuration file's `api-id`.
fn configured_api_id(g: &Global) -> Result<Option<i32>> {
    if let Some(id) = env_number::<i32>("TSTOR_TG_API_ID")? {
        return Ok(Some(id));
    }
    match setting(g, "api-id") {
        Some(s) => {
            s.trim().parse().map(Some).map_err(|_| anyhow!("api-id = {s:?} in the configuration file is not a number"))
        }
        None => Ok(None),
    }
}

/// The API hash: `TSTOR_TG_API_HASH`, else the configuration file's `api-hash`.
fn configured_api_hash(g: &Global) -> Option<String> {
    std::env::var("TSTOR_TG_API_HASH").ok().filter(|h| !h.is_empty()).or_else(|| setting(g, "api-hash"))
}

fn env_number<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map(Some).map_err(|_| anyhow!("{name}={v} is not a valid number"))
        }
        _ => Ok(None),
    }
}

/// The backend's options: the API id configured or stored in the session,
/// tuning from `TSTOR_TG_*` variables.
fn options(g: &Global, session: &TelegramSession) -> Result<Options> {
    let api_id = match configured_api_id(g)?.or(session.api_id()) {
        Some(id) if id != 0 => id,
        _ => bail!("no Telegram API id: set TSTOR_TG_API_ID (from https://my.telegram.org) and run `tstor login`"),
    };
    let mut o = Options { api_id, ..Options::default() };
    if let Some(n) = env_number::<usize>("TSTOR_TG_PARTS_IN_FLIGHT")? {
        o.parts_in_flight = n.clamp(1, 64);
    }
    if let Some(n) = env_number::<u32>("TSTOR_TG_CALLS_PER_MINUTE")? {
        o.calls_per_minute = n;
    }
    if let Some(n) = env_number::<usize>("TSTOR_TG_TRANSFER_CONNECTIONS")? {
        o.transfer_connections = n.min(16);
    }
    if let Some(s) = env_number::<u64>("TSTOR_TG_UNREACHABLE_TIMEOUT")? {
        o.unreachable_after = Duration::from_secs(s);
    }
    if let Some(s) = env_number::<u64>("TSTOR_TG_MAX_FLOOD_WAIT")? {
        o.max_flood_wait = Duration::from_secs(s);
    }
    if let Some(mib) = env_number::<usize>("TSTOR_TG_PACK_MIB")? {
        let bytes = mib.saturating_mul(1 << 20);
        if !(1 << 20..=MAX_PACK_SIZE).contains(&bytes) {
            bail!("TSTOR_TG_PACK_MIB={mib}: packs are 1 to {} MiB", MAX_PACK_SIZE >> 20);
        }
        o.pack_size = bytes;
    } else {
        o.pack_size = DEFAULT_PACK_SIZE;
    }
    Ok(o)
}

/// Opens the repository at `telegram:<rest>` with the user's session.
pub fn open_backend(g: &Global, rest: &str) -> Result<Arc<dyn Backend>> {
    let target = Target::parse(rest).map_err(|e| anyhow!(e))?;
    let path = session_path(g)?;
    let session = shared_session(&path)?;
    let options = options(g, &session)?;
    let public_names = Arc::new(ObjectNameCodec::public());
    Ok(Arc::new(TelegramBackend::connect(session, target, options, public_names)))
}

/// The session at `path`, opened once per process: a command on two
/// repositories (`copy`, `init --from-repo`) uses one session for both,
/// whose file lock it holds once.
fn shared_session(path: &std::path::Path) -> Result<Arc<TelegramSession>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, Weak};
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<TelegramSession>>>> = OnceLock::new();
    let mut open = OPEN.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(session) = open.get(path).and_then(Weak::upgrade) {
        return Ok(session);
    }
    let session = Arc::new(TelegramSession::open(path)?);
    open.insert(path.to_path_buf(), Arc::downgrade(&session));
    Ok(session)
}

/// Whether the error means the user must run `tstor login`.
pub fn needs_login(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<SessionError>().is_some_and(SessionError::needs_login)
}

#[derive(Args)]
pub struct LoginArgs {
    /// Log in as a bot with this token (from @BotFather) instead of a user
    #[arg(long, env = "TSTOR_TG_BOT_TOKEN", hide_env_values = true)]
    bot_token: Option<String>,
    /// The phone number of the account (asked for when not given)
    #[arg(long)]
    phone: Option<String>,
    /// Replace a session that is still logged in
    #[arg(long)]
    force: bool,
}

fn prompt(question: &str) -> Result<String> {
    eprint!("{question}: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read from the terminal")?;
    let line = line.trim().to_string();
    if line.is_empty() {
        bail!("no {question} given");
    }
    Ok(line)
}

fn secret(question: &str) -> Result<String> {
    if std::io::stdin().is_terminal() {
        Ok(rpassword::prompt_password(format!("{question}: ")).context("cannot read from the terminal")?)
    } else {
        prompt(question)
    }
}

struct Connected {
    client: Client,
    runner: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.client.disconnect();
        self.runner.abort();
    }
}

fn connect(session: Arc<TelegramSession>, api_id: i32) -> Connected {
    let pool = SenderPool::new(session, api_id);
    let client = Client::new(pool.handle);
    let runner = tokio::spawn(pool.runner.run());
    Connected { client, runner }
}

/// `tstor login`: a user (phone, code, 2FA password when set) or a bot token.
pub async fn cmd_login(g: &Global, a: LoginArgs) -> Result<u8> {
    let json = g.json;
    let api_id = configured_api_id(g)?
        .filter(|&id| id != 0)
        .ok_or_else(|| anyhow!("set TSTOR_TG_API_ID and TSTOR_TG_API_HASH (from https://my.telegram.org)"))?;
    let api_hash =
        configured_api_hash(g).ok_or_else(|| anyhow!("set TSTOR_TG_API_HASH (from https://my.telegram.org)"))?;
    let path = session_path(g)?;
    // Held until the new session is saved: no other process uses the file meanwhile.
    let lock = lock_session(&path)?;

    // A session that still works is kept unless --force.
    if let Some(existing) = TelegramSession::load(&path).ok().filter(|s| !a.force && s.has_auth_key()) {
        let existing = Arc::new(existing);
        let c = connect(Arc::clone(&existing), existing.api_id().unwrap_or(api_id));
        if c.client.is_authorized().await.unwrap_or(false) {
            let me = c.client.get_me().await.ok();
            let who = me.map(|u| describe_user(&u)).unwrap_or_else(|| "someone".into());
            outln!(
                "already logged in as {} (session {}); use --force to log in again",
                escape(&who),
                escape_path(&path)
            );
            return Ok(0);
        }
    }

    let mut session = TelegramSession::fresh(api_id);
    // A session file that is there but no longer logged in keeps its DC
    // addresses and keys (Telegram lets an unauthorized key log in);
    // everything else starts afresh.
    if let Ok(old) = TelegramSession::load(&path) {
        session = old.for_new_login(api_id);
    }
    session.create_at(&path, lock)?;
    let session = Arc::new(session);
    let c = connect(Arc::clone(&session), api_id);

    let user = match &a.bot_token {
        Some(token) => c.client.bot_sign_in(token, &api_hash).await.context("bot login failed")?,
        None => {
            let phone = match &a.phone {
                Some(p) => p.clone(),
                None => prompt("phone number (international format)")?,
            };
            let token = c.client.request_login_code(&phone, &api_hash).await.context("cannot send the login code")?;
            let code = prompt("login code (sent by Telegram)")?;
            match c.client.sign_in(&token, &code).await {
                Ok(user) => user,
                Err(SignInError::PasswordRequired(pt)) => {
                    let hint = pt.hint().map(|h| format!(" (hint: {h})")).unwrap_or_default();
                    let password = secret(&format!("two-step verification password{hint}"))?;
                    c.client.check_password(pt, password.as_bytes()).await.map_err(|e| anyhow!("login failed: {e}"))?
                }
                Err(SignInError::SignUpRequired) => {
                    bail!("this phone number has no Telegram account: sign up with an official app first")
                }
                Err(e) => bail!("login failed: {e}"),
            }
        }
    };
    let who = describe_user(&user);
    if json {
        outln!("{}", serde_json::to_string(&LoginView { user: who, session: path.display().to_string() })?);
    } else {
        outln!("logged in as {}; session saved to {} (readable only by you)", escape(&who), escape_path(&path));
    }
    Ok(0)
}

fn describe_user(u: &grammers_client::peer::User) -> String {
    let name = u.full_name();
    match u.username() {
        Some(user) => format!("{name} (@{user})"),
        None => name,
    }
}

/// `tstor logout`: ends the session on Telegram's side and deletes its file.
pub async fn cmd_logout(g: &Global) -> Result<u8> {
    let path = session_path(g)?;
    let session = match TelegramSession::open(&path) {
        Ok(s) => Arc::new(s),
        Err(SessionError::Missing { .. }) => {
            outln!("not logged in (no session at {})", escape_path(&path));
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(api_id) = session.api_id().filter(|_| session.has_auth_key()) {
        let c = connect(Arc::clone(&session), api_id);
        if let Err(e) = c.client.sign_out().await {
            tracing::warn!(error = %e, "Telegram did not confirm the logout");
        }
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    let mut lock = path.as_os_str().to_os_string();
    lock.push(".lock");
    let _ = std::fs::remove_file(PathBuf::from(lock));
    outln!("logged out; removed {}", escape_path(&path));
    Ok(0)
}
