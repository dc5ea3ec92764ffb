//! tstor: encrypted, deduplicating snapshot backups to a local directory or a
//! Telegram channel. The library never prints; the `cli` module owns the
//! terminal.

pub mod archiver;
pub mod backend;
pub mod cache;
pub mod chunker;
pub mod cli;
pub mod crypto;
pub mod format;
pub mod host;
pub mod mount;
pub mod repo;
pub mod restorer;

pub mod dirfd;
pub mod fsmeta;
pub mod ops;
pub mod time;
