//! End-to-end tests: the `tstor` binary driven as a user would, plus
//! library-level tests with fault-injecting backends. One test binary, one
//! module per concern.

mod common;

mod bad_input;
mod copy;
mod crafted;
mod crash;
mod damage;
mod excludes_config;
mod file_changes_and_output;
mod first_hour;
mod hardening;
mod inspect;
mod interrupts;
mod json_output;
mod library;
mod lock_safety;
mod locks_and_cache;
mod maintenance;
mod model;
mod mount;
mod pacing;
mod prune_consolidation;
mod repair;
mod restore_reads;
mod restore_snapshot_options;
mod roundtrip;
mod scale;
mod scale_restore;
mod scale_walks;
mod snapshot_commands;
mod spec_rules;
mod telegram;
mod telegram_bot;
mod telegram_dc;
mod telegram_faults;
mod telegram_transfers;
mod time_zones;
