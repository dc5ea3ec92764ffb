//! tstor: encrypted, deduplicating snapshot backups to a local directory or a
//! Telegram channel. The library never prints; the `cli` module owns the
//! terminal.

pub mod backend;
pub mod chunker;
pub mod crypto;
pub mod format;
