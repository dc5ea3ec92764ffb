//! End-to-end tests: the `tstor` binary driven as a user would, plus
//! library-level tests with fault-injecting backends. One test binary, one
//! module per concern.

mod common;

mod bad_input;
mod crafted;
mod crash;
mod damage;
mod excludes_config;
mod file_changes_and_output;
mod hardening;
mod inspect;
mod library;
mod lock_safety;
mod locks_and_cache;
mod maintenance;
mod model;
mod pacing;
mod prune_consolidation;
mod repair;
mod restore_reads;
mod roundtrip;
mod scale;
mod scale_restore;
mod scale_walks;
mod spec_rules;
mod telegram;
mod telegram_bot;
mod telegram_dc;
mod telegram_faults;
mod telegram_transfers;
