//! How a grammers error is classified for the layers above: not found,
//! transient (with the wait Telegram asked for), permanent, or a session
//! that needs `tstor login`.

use std::time::Duration;

use grammers_client::InvocationError;

use super::retry;
use crate::backend::BackendError;

pub(super) fn transient(message: String, retry_after: Option<Duration>) -> BackendError {
    BackendError::Transient { message, retry_after }
}

pub(super) fn permanent(message: impl Into<String>) -> BackendError {
    BackendError::Permanent { message: message.into() }
}

/// Classifies a grammers error for the layers above.
pub(super) fn classify(e: InvocationError, what: &str) -> BackendError {
    let message = format!("Telegram {what}: {e}");
    if retry::is_unreachable(&e) {
        let reason = match &e {
            InvocationError::Io(io) => io.get_ref().map(ToString::to_string).unwrap_or_default(),
            _ => e.to_string(),
        };
        return BackendError::Unreachable { message: format!("{what}: {reason}") };
    }
    match &e {
        InvocationError::Rpc(r) if r.code == 420 => transient(message, retry::flood_wait(&e)),
        InvocationError::Rpc(r) if r.code >= 500 => transient(message, None),
        InvocationError::Rpc(r) if r.code == 401 || r.name == "AUTH_KEY_DUPLICATED" => BackendError::NeedsLogin {
            message: format!("{message}: the Telegram session is no longer valid; run `tstor login`"),
        },
        InvocationError::Io(_) | InvocationError::Dropped(_) | InvocationError::Transport(_) => {
            transient(message, None)
        }
        _ => BackendError::Permanent { message },
    }
}

/// The number inside an RPC error name such as `FILE_PART_3_MISSING`.
pub(super) fn rpc_value(e: &InvocationError) -> Option<u32> {
    match e {
        InvocationError::Rpc(r) => r.value,
        _ => None,
    }
}

pub(super) fn is_rpc(e: &InvocationError, name: &str) -> bool {
    matches!(e, InvocationError::Rpc(r) if r.name == name)
}
