//! One client connection to one DC: reads `Full` transport packets, opens
//! them with the pre-shared auth key they name (one of that DC's), tracks the MTProto session (salts, message ids,
//! sequence numbers, `ping_delay_disconnect`), answers service messages and
//! runs API calls, sending each reply in its own packet.
//!
//! Calls run one after another in arrival order, but their answers leave
//! through a separate writer task, each at the time the simulated link says
//! it arrives (see `Shared::answer_due`). So the configured latency is a
//! round trip that calls in flight overlap, as on a real network, and not a
//! service time that serializes them. File bytes (upload parts, downloaded
//! chunks) cross both the shared link and the connection's own lane, each
//! limited to its rate, and are counted per connection.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use grammers_tl_types::{self as tl, Cursor, Deserializable, Identifiable, Serializable};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::api::{self, ConnInfo};
use crate::crypto::{AuthKey, OpenError};
use crate::faults::Fault;
use crate::mtproto::{self, Message, Outgoing};
use crate::transport::{Reader, Writer};
use crate::{Direction, Lane, Shared};

/// Replies above this size are sent `gzip_packed` when that makes them smaller.
const GZIP_THRESHOLD: usize = 8 * 1024;

struct Session {
    id: i64,
    out: Outgoing,
    seen: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Session {
    fn new(id: i64) -> Session {
        Session { id, out: Outgoing::default(), seen: HashSet::new(), order: VecDeque::new() }
    }

    /// Records a client msg_id; false if it was seen before.
    fn first_time(&mut self, msg_id: i64) -> bool {
        if !self.seen.insert(msg_id) {
            return false;
        }
        self.order.push_back(msg_id);
        if self.order.len() > 4096 {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// What to do after handling a message.
enum Next {
    Continue,
    Close,
}

/// What the writer task sends, in queue order.
enum Outbound {
    /// A sealed packet, written once `due` has come.
    Packet { due: Instant, sealed: Vec<u8> },
    /// A transport error code (such as 404 for an unknown auth key).
    Error(i32),
}

struct Conn {
    shared: Arc<Shared>,
    /// The key of the packets read so far.
    key: Option<AuthKey>,
    /// This connection's number among all the server opened.
    number: usize,
    /// This connection's own bandwidth, each way.
    up: Lane,
    down: Lane,
    outbound: mpsc::UnboundedSender<Outbound>,
    session: Option<Session>,
    info: ConnInfo,
    disconnect_at: Option<Instant>,
}

pub async fn serve(stream: TcpStream, dc: i32, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    run(r, w, dc, shared).await;
}

/// Writes queued packets in order, each no earlier than its due time, until
/// the queue is closed and drained; then shuts the stream down.
async fn write_out<W: AsyncWrite + Unpin>(w: W, mut queue: mpsc::UnboundedReceiver<Outbound>) {
    let mut writer = Writer::new(w);
    while let Some(out) = queue.recv().await {
        let written = match out {
            Outbound::Packet { due, sealed } => {
                sleep_until(due).await;
                writer.write_packet(&sealed).await
            }
            Outbound::Error(code) => writer.write_error(code).await,
        };
        if written.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn run<R: AsyncRead + Unpin, W: AsyncWrite + Send + Unpin + 'static>(r: R, w: W, dc: i32, shared: Arc<Shared>) {
    shared.stat(|s| s.connections += 1);
    let mut reader = Reader::new(r);
    let (outbound, queue) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_out(w, queue));
    let number = shared.new_connection();
    let (up, down) = (Lane::new(shared.connection_bytes_per_sec), Lane::new(shared.connection_bytes_per_sec));
    let info = ConnInfo { dc, ..ConnInfo::default() };
    let mut conn = Conn { shared, key: None, number, up, down, outbound, session: None, info, disconnect_at: None };
    loop {
        let packet = match conn.disconnect_at {
            Some(at) => tokio::select! {
                p = reader.read_packet() => p,
                _ = sleep_until(at) => break,
            },
            None => reader.read_packet().await,
        };
        let packet = match packet {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("closing connection: {e}");
                break;
            }
        };
        match conn.on_packet(&packet).await {
            Ok(Next::Continue) => {}
            Ok(Next::Close) | Err(_) => break,
        }
    }
    // Answers already queued still go out (a connection that closes after a
    // lost answer has sent the earlier ones), then the stream is shut down.
    drop(conn);
    let _ = writer.await;
}

impl Conn {
    async fn on_packet(&mut self, packet: &[u8]) -> std::io::Result<Next> {
        if packet.len() >= 8 && packet[..8] == [0; 8] {
            // A plain (unencrypted) message starts a key exchange, which this
            // server does not offer: it only knows its pre-shared key.
            self.queue(Outbound::Error(404))?;
            return Ok(Next::Close);
        }
        // A key is known only to the DC it was made with.
        if self.key.as_ref().is_none_or(|k| packet.get(..8) != Some(&k.id()[..])) {
            self.key = self.shared.dcs.lock().expect("dcs lock").key_on(self.info.dc, packet);
        }
        let Some(key) = &self.key else {
            self.queue(Outbound::Error(404))?;
            return Ok(Next::Close);
        };
        self.info.key_id = key.id();
        let plain = match key.open_from_client(packet) {
            Ok(p) => p,
            Err(OpenError::UnknownKey) => {
                self.queue(Outbound::Error(404))?;
                return Ok(Next::Close);
            }
            Err(e) => {
                tracing::debug!("undecryptable packet: {e:?}");
                return Ok(Next::Close);
            }
        };
        let env = match mtproto::parse_plaintext(&plain) {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!("malformed message: {}", e.0);
                return Ok(Next::Close);
            }
        };
        if self.session.as_ref().is_none_or(|s| s.id != env.session_id) {
            self.session = Some(Session::new(env.session_id));
            let unique_id = rand::random::<i64>();
            let salt = self.shared.salts.current();
            self.send(&mtproto::new_session_created(env.message.msg_id, unique_id, salt), false)?;
        }
        if !self.shared.salts.is_valid(env.salt) {
            self.shared.stat(|s| s.bad_server_salts += 1);
            let salt = self.shared.salts.current();
            self.send(&mtproto::bad_server_salt(&env.message, salt), false)?;
            return Ok(Next::Continue);
        }
        self.on_message(env.message, true).await
    }

    fn queue(&self, out: Outbound) -> std::io::Result<()> {
        self.outbound.send(out).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "writer is gone"))
    }

    /// Encrypts one message and queues it, in its own packet, to leave now.
    fn send(&mut self, body: &[u8], response: bool) -> std::io::Result<()> {
        self.send_at(body, response, Instant::now())
    }

    /// Encrypts one message and queues it, in its own packet, to leave at `due`.
    fn send_at(&mut self, body: &[u8], response: bool, due: Instant) -> std::io::Result<()> {
        let salt = self.shared.salts.current();
        let session = self.session.as_mut().expect("a session exists once a packet was read");
        let plain = session.out.plaintext(salt, session.id, body, response);
        let sealed = self.key.as_ref().expect("a key is known once a packet was read").seal_for_client(plain);
        self.queue(Outbound::Packet { due, sealed })
    }

    async fn on_message(&mut self, msg: Message, outer: bool) -> std::io::Result<Next> {
        let constructor = mtproto::constructor(&msg.body).unwrap_or(0);
        let content_related = mtproto::is_content_related(&msg.body);
        if let Some(code) = mtproto::check_client_message(&msg, content_related, mtproto::now_secs()) {
            self.shared.stat(|s| s.bad_msg_notifications += 1);
            self.send(&mtproto::bad_msg_notification(&msg, code), false)?;
            return Ok(Next::Continue);
        }
        if !self.session.as_mut().expect("session").first_time(msg.msg_id) {
            return Ok(Next::Continue);
        }
        match constructor {
            mtproto::MSG_CONTAINER => {
                self.shared.stat(|s| s.containers += 1);
                let inner = match (outer, mtproto::parse_container(&msg.body)) {
                    (true, Ok(inner)) if inner.iter().all(|m| m.msg_id < msg.msg_id) => inner,
                    _ => {
                        self.send(&mtproto::bad_msg_notification(&msg, 64), false)?;
                        return Ok(Next::Continue);
                    }
                };
                for m in inner {
                    if let Next::Close = Box::pin(self.on_message(m, false)).await? {
                        return Ok(Next::Close);
                    }
                }
                Ok(Next::Continue)
            }
            mtproto::GZIP_PACKED => {
                self.shared.stat(|s| s.gzipped_requests += 1);
                match mtproto::gunzip(&msg.body) {
                    Ok(body) => self.on_content(Message { body, ..msg }).await,
                    Err(_) => {
                        self.send(&mtproto::bad_msg_notification(&msg, 64), false)?;
                        Ok(Next::Continue)
                    }
                }
            }
            _ => self.on_content(msg).await,
        }
    }

    async fn on_content(&mut self, msg: Message) -> std::io::Result<Next> {
        use tl::functions as f;
        let constructor = mtproto::constructor(&msg.body).unwrap_or(0);
        let mut c = Cursor::from_slice(msg.body.get(4..).unwrap_or(&[]));
        match constructor {
            tl::types::MsgsAck::CONSTRUCTOR_ID => Ok(Next::Continue),
            f::Ping::CONSTRUCTOR_ID => {
                let ping = f::Ping::deserialize(&mut c).map_err(|_| bad_data())?;
                self.send(&pong(msg.msg_id, ping.ping_id), true)?;
                Ok(Next::Continue)
            }
            f::PingDelayDisconnect::CONSTRUCTOR_ID => {
                let ping = f::PingDelayDisconnect::deserialize(&mut c).map_err(|_| bad_data())?;
                self.disconnect_at = Some(Instant::now() + Duration::from_secs(ping.disconnect_delay.max(1) as u64));
                self.send(&pong(msg.msg_id, ping.ping_id), true)?;
                Ok(Next::Continue)
            }
            f::GetFutureSalts::CONSTRUCTOR_ID => {
                self.shared.stat(|s| s.future_salts += 1);
                let req = f::GetFutureSalts::deserialize(&mut c).map_err(|_| bad_data())?;
                let salts = self.shared.salts.future(msg.msg_id, req.num);
                self.send(&salts, true)?;
                Ok(Next::Continue)
            }
            f::DestroySession::CONSTRUCTOR_ID => {
                let req = f::DestroySession::deserialize(&mut c).map_err(|_| bad_data())?;
                let none = tl::enums::DestroySessionRes::DestroySessionNone(tl::types::DestroySessionNone {
                    session_id: req.session_id,
                });
                self.send(&none.to_bytes(), true)?;
                Ok(Next::Continue)
            }
            _ => self.on_call(msg).await,
        }
    }

    async fn on_call(&mut self, msg: Message) -> std::io::Result<Next> {
        let mut info = self.info.clone();
        let call = match api::unwrap(&msg.body, &mut info) {
            Ok(call) => call,
            Err(e) => {
                let reply = mtproto::rpc_result(msg.msg_id, &mtproto::rpc_error(e.code, &e.message));
                self.send(&reply, true)?;
                return Ok(Next::Continue);
            }
        };
        self.info = info;
        let name = call.name();
        self.shared.count_call(self.info.dc, name);
        // An injected fault first; then flood waits, which are account-wide:
        // while one runs for this method, every call of it is told to wait
        // what is left; then the random rates.
        let flood_left = self.shared.flood_running(name, crate::msg_id_time(msg.msg_id));
        let rule = self.shared.faults.lock().expect("faults lock").take_rule(name);
        // A free account's transfer budget, if spent, comes before the dice.
        let fault = match (rule, flood_left) {
            (Some(f), _) => Some(f),
            (None, Some((left, false))) => Some(Fault::FloodWait(left)),
            (None, Some((left, true))) => Some(Fault::FloodPremiumWait(left)),
            (None, None) => match self.shared.premium_wait(name, api::moved_bytes(&call)) {
                Some(secs) => Some(Fault::FloodPremiumWait(secs)),
                None => self.shared.faults.lock().expect("faults lock").roll(name),
            },
        };
        let premium = matches!(fault, Some(Fault::FloodPremiumWait(_)));
        let flood_secs = match &fault {
            Some(Fault::FloodWait(s) | Fault::FloodPremiumWait(s)) => Some(*s),
            _ => None,
        };
        let mut lose_answer = false;
        let result = match fault {
            Some(Fault::Drop) => return Ok(Next::Close),
            Some(Fault::FloodWait(s)) => {
                self.shared.count_flood_wait(s);
                Err(crate::RpcErr { code: 420, message: format!("FLOOD_WAIT_{s}") })
            }
            Some(Fault::FloodPremiumWait(s)) => {
                self.shared.count_flood_wait(s);
                Err(crate::RpcErr { code: 420, message: format!("FLOOD_PREMIUM_WAIT_{s}") })
            }
            Some(Fault::Error { code, message }) => Err(crate::RpcErr { code, message }),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.shared.run_call(&call, &self.info)
            }
            Some(Fault::LoseAnswer) => {
                lose_answer = true;
                self.shared.run_call(&call, &self.info)
            }
            Some(Fault::PartMissing) => {
                // A part really goes missing: the answer names it, and only
                // sending that part again lets the document through.
                self.shared.world.lock().expect("world lock").expire_pending_parts();
                self.shared.run_call(&call, &self.info)
            }
            Some(Fault::ExpireReferences) => {
                self.shared.world.lock().expect("world lock").expire_file_references();
                self.shared.run_call(&call, &self.info)
            }
            None => self.shared.run_call(&call, &self.info),
        };
        // A part crosses the link whatever the answer; a chunk only when
        // it is sent.
        let is_part = name == "upload.saveFilePart" || name == "upload.saveBigFilePart";
        let due = match &result {
            _ if is_part => {
                if let (Ok(_), Some(n)) = (&result, api::part_bytes(&call)) {
                    self.shared.count_connection_bytes(self.number, true, n);
                }
                self.shared.answer_due(Some((Direction::Up, call.body.len())), &mut self.up)
            }
            Ok(bytes) if mtproto::constructor(bytes) == Some(tl::types::upload::File::CONSTRUCTOR_ID) => {
                self.shared.count_connection_bytes(self.number, false, bytes.len());
                self.shared.answer_due(Some((Direction::Down, bytes.len())), &mut self.down)
            }
            _ => self.shared.answer_due(None, &mut self.down),
        };
        if let Some(secs) = flood_secs {
            self.shared.start_flood(name, secs, due, premium);
        }
        if lose_answer {
            return Ok(Next::Close);
        }
        let body = match result {
            Ok(bytes) => {
                let is_file = mtproto::constructor(&bytes) == Some(tl::types::upload::File::CONSTRUCTOR_ID);
                if bytes.len() > GZIP_THRESHOLD && !is_file {
                    let packed = mtproto::gzip(&bytes);
                    if packed.len() < bytes.len() {
                        packed
                    } else {
                        bytes
                    }
                } else {
                    bytes
                }
            }
            Err(e) => {
                tracing::debug!("{name} failed: {} {}", e.code, e.message);
                self.shared.count_error(&e.message);
                mtproto::rpc_error(e.code, &e.message)
            }
        };
        self.send_at(&mtproto::rpc_result(msg.msg_id, &body), true, due)?;
        Ok(Next::Continue)
    }
}

fn pong(msg_id: i64, ping_id: i64) -> Vec<u8> {
    tl::enums::Pong::Pong(tl::types::Pong { msg_id, ping_id }).to_bytes()
}

fn bad_data() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed service message")
}
