//! MTProto 2.0 message plumbing for the server: the plaintext layout
//! (salt, session id, msg_id, seqno, length, body), server message ids and
//! sequence numbers, containers, `gzip_packed`, `rpc_result` and the service
//! messages a client expects (bad_msg_notification, bad_server_salt,
//! new_session_created, future_salts, pong).

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use grammers_tl_types::{self as tl, Cursor, Deserializable, Identifiable, Serializable};

pub const MSG_CONTAINER: u32 = 0x73f1f8dc;
pub const GZIP_PACKED: u32 = 0x3072cfa1;
pub const RPC_RESULT: u32 = 0xf35c6d01;
/// The largest container and message body Telegram accepts from a client.
pub const MAX_CONTAINER_SIZE: usize = 1_044_456;
pub const MAX_CONTAINER_LEN: usize = 1024;

/// One message as carried inside an encrypted packet or a container.
#[derive(Debug, Clone)]
pub struct Message {
    pub msg_id: i64,
    pub seqno: i32,
    pub body: Vec<u8>,
}

/// What was inside a decrypted client packet.
#[derive(Debug)]
pub struct Envelope {
    pub salt: i64,
    pub session_id: i64,
    pub message: Message,
}

/// Why a plaintext could not be understood at all.
#[derive(Debug)]
pub struct Malformed(pub &'static str);

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn read_message(buf: &mut Cursor, limit: usize) -> Result<Message, Malformed> {
    let msg_id = i64::deserialize(buf).map_err(|_| Malformed("truncated msg_id"))?;
    let seqno = i32::deserialize(buf).map_err(|_| Malformed("truncated seqno"))?;
    let len = i32::deserialize(buf).map_err(|_| Malformed("truncated length"))?;
    if len < 0 || len as usize > limit || len % 4 != 0 {
        return Err(Malformed("bad message length"));
    }
    let mut body = vec![0; len as usize];
    buf.read_exact(&mut body).map_err(|_| Malformed("message longer than packet"))?;
    Ok(Message { msg_id, seqno, body })
}

/// Splits a decrypted client plaintext; trailing bytes are padding.
pub fn parse_plaintext(plain: &[u8]) -> Result<Envelope, Malformed> {
    let mut buf = Cursor::from_slice(plain);
    let salt = i64::deserialize(&mut buf).map_err(|_| Malformed("truncated salt"))?;
    let session_id = i64::deserialize(&mut buf).map_err(|_| Malformed("truncated session"))?;
    let message = read_message(&mut buf, MAX_CONTAINER_SIZE)?;
    let padding = plain.len() - 32 - message.body.len();
    if !(12..=1024).contains(&padding) {
        return Err(Malformed("padding must be 12 to 1024 bytes"));
    }
    Ok(Envelope { salt, session_id, message })
}

pub fn constructor(body: &[u8]) -> Option<u32> {
    body.get(..4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
}

/// The messages of a `msg_container` body.
pub fn parse_container(body: &[u8]) -> Result<Vec<Message>, Malformed> {
    let mut buf = Cursor::from_slice(body);
    let _ = u32::deserialize(&mut buf);
    let n = i32::deserialize(&mut buf).map_err(|_| Malformed("truncated container"))?;
    if n < 0 || n as usize > MAX_CONTAINER_LEN {
        return Err(Malformed("bad container length"));
    }
    (0..n).map(|_| read_message(&mut buf, MAX_CONTAINER_SIZE)).collect()
}

/// The body inside a `gzip_packed` object.
pub fn gunzip(body: &[u8]) -> Result<Vec<u8>, Malformed> {
    let mut buf = Cursor::from_slice(body);
    let _ = u32::deserialize(&mut buf);
    let packed = Vec::<u8>::deserialize(&mut buf).map_err(|_| Malformed("truncated gzip_packed"))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .take(16 * 1024 * 1024)
        .read_to_end(&mut out)
        .map_err(|_| Malformed("bad gzip data"))?;
    Ok(out)
}

pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).expect("writing to memory");
    let packed = enc.finish().expect("writing to memory");
    let mut out = Vec::with_capacity(packed.len() + 8);
    GZIP_PACKED.serialize(&mut out);
    packed.serialize(&mut out);
    out
}

pub fn rpc_result(req_msg_id: i64, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(result.len() + 12);
    RPC_RESULT.serialize(&mut out);
    req_msg_id.serialize(&mut out);
    out.extend_from_slice(result);
    out
}

pub fn rpc_error(code: i32, message: &str) -> Vec<u8> {
    tl::enums::RpcError::Error(tl::types::RpcError { error_code: code, error_message: message.to_string() }).to_bytes()
}

/// Whether a message body needs an acknowledgement, i.e. takes an odd seqno.
pub fn is_content_related(body: &[u8]) -> bool {
    !matches!(constructor(body), Some(MSG_CONTAINER) | Some(tl::types::MsgsAck::CONSTRUCTOR_ID))
}

/// Server-side message ids and sequence numbers for one session.
#[derive(Default)]
pub struct Outgoing {
    last_msg_id: i64,
    content_count: i32,
}

impl Outgoing {
    /// A new server message id: time based, increasing, ending in binary 01
    /// for responses and 11 for anything else.
    pub fn msg_id(&mut self, response: bool) -> i64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let tail = if response { 1 } else { 3 };
        let mut id = ((now.as_secs() as i64) << 32) | ((now.subsec_nanos() as i64) << 2 & 0xffff_fffc);
        if id <= self.last_msg_id {
            id = (self.last_msg_id & !3) + 4;
        }
        id = (id & !3) | tail;
        self.last_msg_id = id;
        id
    }

    pub fn seqno(&mut self, content_related: bool) -> i32 {
        if content_related {
            self.content_count += 1;
            self.content_count * 2 - 1
        } else {
            self.content_count * 2
        }
    }

    /// The plaintext of one outgoing message (before padding and encryption).
    pub fn plaintext(&mut self, salt: i64, session_id: i64, body: &[u8], response: bool) -> Vec<u8> {
        let content = is_content_related(body);
        let msg_id = self.msg_id(response);
        let seqno = self.seqno(content);
        let mut out = Vec::with_capacity(body.len() + 32);
        salt.serialize(&mut out);
        session_id.serialize(&mut out);
        msg_id.serialize(&mut out);
        seqno.serialize(&mut out);
        (body.len() as i32).serialize(&mut out);
        out.extend_from_slice(body);
        out
    }
}

/// Checks a client msg_id and seqno; returns the bad_msg_notification code.
pub fn check_client_message(msg: &Message, content_related: bool, now: i64) -> Option<i32> {
    if msg.msg_id % 4 != 0 {
        return Some(18);
    }
    let secs = msg.msg_id >> 32;
    if secs < now - 300 {
        return Some(16);
    }
    if secs > now + 30 {
        return Some(17);
    }
    match (content_related, msg.seqno % 2 == 1) {
        (true, false) => Some(35),
        (false, true) => Some(34),
        _ => None,
    }
}

pub fn bad_msg_notification(msg: &Message, code: i32) -> Vec<u8> {
    tl::enums::BadMsgNotification::Notification(tl::types::BadMsgNotification {
        bad_msg_id: msg.msg_id,
        bad_msg_seqno: msg.seqno,
        error_code: code,
    })
    .to_bytes()
}

pub fn bad_server_salt(msg: &Message, new_salt: i64) -> Vec<u8> {
    tl::enums::BadMsgNotification::BadServerSalt(tl::types::BadServerSalt {
        bad_msg_id: msg.msg_id,
        bad_msg_seqno: msg.seqno,
        error_code: 48,
        new_server_salt: new_salt,
    })
    .to_bytes()
}

pub fn new_session_created(first_msg_id: i64, unique_id: i64, salt: i64) -> Vec<u8> {
    tl::enums::NewSession::Created(tl::types::NewSessionCreated { first_msg_id, unique_id, server_salt: salt })
        .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_increase_with_the_right_tail() {
        let mut o = Outgoing::default();
        let a = o.msg_id(true);
        let b = o.msg_id(false);
        let c = o.msg_id(true);
        assert!(a < b && b < c);
        assert_eq!((a & 3, b & 3, c & 3), (1, 3, 1));
        assert_eq!([o.seqno(true), o.seqno(false), o.seqno(true)], [1, 2, 3]);
    }

    #[test]
    fn gzip_round_trips() {
        let body: Vec<u8> = (0..4000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let packed = gzip(&body);
        assert_eq!(constructor(&packed), Some(GZIP_PACKED));
        assert_eq!(gunzip(&packed).unwrap(), body);
    }

    #[test]
    fn client_message_rules() {
        let now = now_secs();
        let ok = Message { msg_id: now << 32, seqno: 1, body: vec![] };
        assert_eq!(check_client_message(&ok, true, now), None);
        assert_eq!(check_client_message(&Message { msg_id: (now << 32) | 1, ..ok.clone() }, true, now), Some(18));
        assert_eq!(check_client_message(&Message { msg_id: (now - 400) << 32, ..ok.clone() }, true, now), Some(16));
        assert_eq!(check_client_message(&Message { msg_id: (now + 60) << 32, ..ok.clone() }, true, now), Some(17));
        assert_eq!(check_client_message(&Message { seqno: 2, ..ok.clone() }, true, now), Some(35));
        assert_eq!(check_client_message(&Message { seqno: 3, ..ok }, false, now), Some(34));
    }
}
