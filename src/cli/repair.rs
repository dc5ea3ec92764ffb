//! Flags and printing for `repair`: `repair index` rebuilds the index from
//! the pack headers (see `ops::repair`).

use anyhow::Result;
use clap::Subcommand;

use super::{open_repo, Global};
use crate::ops;

#[derive(Subcommand)]
pub(super) enum RepairCommand {
    /// Rebuild the index from the headers of every pack in storage (for
    /// Telegram, found by reading the whole chat) and write a new head
    Index,
}

pub(super) async fn cmd_repair(g: &Global, c: RepairCommand) -> Result<u8> {
    match c {
        RepairCommand::Index => {
            let repo = open_repo(g).await?;
            let report = ops::repair::repair_index(&repo).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "indexed {} packs ({} blobs); replaced {} index objects",
                    report.packs, report.blobs, report.replaced
                );
                for (pack, why) in &report.unreadable {
                    eprintln!("warning: pack {pack} left out: {why}");
                }
            }
            Ok(if report.unreadable.is_empty() { 0 } else { 1 })
        }
    }
}
