//! `mailfleet bench store` (issue F4): messages/s end to end, from SMTP
//! into Postfix to the file in the Maildir, and the latency from
//! mailfleet's LMTP `250` to that file, for 20 KB messages.
//!
//! Both sides get the same load: unique messages of `--bytes` (a line of
//! text and a base64 "photo"), one recipient each, round robin over
//! `--users` fresh accounts of `--domain`, injected by this process over
//! `--sessions` SMTP connections into the local Postfix (`ops/postfix`)
//! from an address in its `mynetworks`, which skips the greylisting policy.
//! Postfix's queue manager and LMTP client deliver them to:
//! - the anchor: Dovecot's LMTP (`ops/dovecot`), which writes the Maildir
//!   file (fsync) and indexes it before its `250`;
//! - mailfleet: `lmtp::serve` in this process (blob fsync, `MessageReceived`
//!   acknowledged by Kafka before the `250`), the scanner (clamd) and the
//!   storage writer under `mailfleet_runtime::run` on scratch topics, into
//!   a scratch mail root owned like Dovecot's.
//!
//! Per round and side: a warm-up batch (connections, Postfix's reload, the
//! group join), `--messages` flat out for the rate, then `--rate` msgs/s
//! for `--rate-seconds` for the latencies (flat out they are only the
//! backlog). The bench switches Postfix's `virtual_transport` per side
//! (`ops/postfix start` with `MAILFLEET_POSTFIX_TRANSPORT`: a reload) and
//! puts it back at the end. smtp-source is not used: it can neither bind a
//! source address nor send XCLIENT, and spreads recipients only within one
//! transaction (`-r`).
//!
//! A batch's time runs from the first connection to the newest file's ctime
//! (its rename into `new/`); a message's latency from Postfix's `250` after
//! DATA to its file. For mailfleet also from `MessageReceived.received_at`
//! (taken just before the acks: the LMTP `250`) to the file, with the
//! stages between from the Kafka record timestamps. Dovecot answers `250`
//! after its file is written, so its `250 → file` is ≤ 0 by construction;
//! Postfix's maillog `delay=` (arrival to the LMTP `250`) is shown for both.
//!
//! Checked: exactly N files per batch, each Message-ID once; for mailfleet
//! one clean `MessageScanned` and one `MessageStored` per message, each
//! naming a file that is there, and no dead letters. Scratch Maildirs,
//! blobs, state and topics, the Dovecot users and their Maildirs, and any
//! bench mail left in Postfix's queue are removed afterwards.

mod deliver;
mod fleet;
mod ops;
mod plan;
mod report;
#[cfg(test)]
mod tests;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use mailfleet_fleet::config::Config;

use super::scratch_dir;
use deliver::deliver_all;
use fleet::{delete_topics, Fleet};
use ops::Ops;
pub(super) use ops::{shell, MainCf};
use plan::Plan;
use report::{mailfleet_stages, report};

/// A batch whose file count has not grown for this long has failed.
const STALL: Duration = Duration::from_secs(60);
/// How often the Maildirs are counted while waiting (the times themselves
/// come from the files' ctimes, not from this).
const POLL: Duration = Duration::from_millis(100);
/// The scratch topics, `<run id>.<name>`.
const TOPICS: [&str; 9] = [
    "received", "scanned", "accounts", "alerts", "purge", "stored", "usage", "notify", "dead",
];

/// The load's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreLoad {
    /// Messages per side and round, flat out.
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Then this many messages per second, for the latencies.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// For this long, per side and round.
    #[arg(long, default_value_t = 10.0)]
    pub rate_seconds: f64,
    /// Size of each message as sent, headers included, bytes.
    #[arg(long, default_value_t = 20 * 1024)]
    pub bytes: usize,
    /// Fresh recipients per batch, one per message, round robin.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// SMTP sessions injecting into Postfix at once.
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Rounds of (Dovecot, mailfleet); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Partitions of the scratch topics (production: 12).
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Postfix's smtpd (`ops/postfix`).
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub smtp: SocketAddr,
    /// Source address of the injection: in Postfix's `mynetworks`, so the policy check is skipped.
    #[arg(long, default_value = "127.0.0.2")]
    pub source: IpAddr,
    /// Dovecot's LMTP listener (`ops/dovecot`).
    #[arg(long, default_value = "127.0.0.1:2425")]
    pub dovecot_lmtp: SocketAddr,
    /// Recipient domain: one of Postfix's `virtual_mailbox_domains`.
    #[arg(long, default_value = "example.test")]
    pub domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Dovecot,
    Mailfleet,
}

/// What a batch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    WarmUp,
    FlatOut,
    /// At `StoreLoad::rate`.
    Paced,
}

impl Phase {
    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::WarmUp => "warm-up",
            Phase::FlatOut => "flat out",
            Phase::Paced => "paced",
        }
    }
}

impl Side {
    pub(super) fn name(self) -> &'static str {
        match self {
            Side::Dovecot => "Dovecot",
            Side::Mailfleet => "mailfleet",
        }
    }
}

pub async fn run(cfg: &Config, load: StoreLoad) -> anyhow::Result<()> {
    anyhow::ensure!(
        load.rate > 0.0 && load.rate_seconds > 0.0,
        "--rate and --rate-seconds must be positive"
    );
    let tag = format!("{:08x}", rand::random::<u32>());
    let id = format!("bench-store-{tag}");
    let dir = scratch_dir(cfg, &id);
    let ops = Ops::read(&load, &format!("bs{tag}"))?;
    let result = measure(cfg, &load, &ops, &id, &dir).await;
    // Put everything back whatever happened, Postfix's transport first.
    let restored = ops.restore().await;
    let _ = std::fs::remove_dir_all(&dir);
    delete_topics(cfg, &id).await;
    result.and(restored)
}

async fn measure(
    cfg: &Config,
    load: &StoreLoad,
    ops: &Ops,
    id: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    ops.preflight(cfg).await?;
    let plan = Plan::new(load, &ops.prefix);
    ops.add_dovecot_users(&plan).await?;
    let fleet = Fleet::start(cfg, load, id, dir, ops.owner()).await?;
    println!(
        "{} messages of {} bytes flat out, then {} msgs/s for {} s, per side and round; {} users; \
         {} SMTP sessions from {} into Postfix {}; mailfleet: {}-partition topics, clamd, Maildir fsync",
        load.messages,
        load.bytes,
        load.rate,
        load.rate_seconds,
        load.users,
        load.sessions,
        load.source,
        load.smtp,
        load.partitions
    );
    let runs = deliver_all(load, ops, &fleet, plan).await;
    // Stopped before reading the topics: the last batch's outputs are sent.
    let dead_letters = fleet.stop().await;
    let runs = runs?;
    anyhow::ensure!(
        dead_letters? == 0,
        "mailfleet's consumers dead-lettered inputs"
    );
    let stages = mailfleet_stages(cfg, id, &runs)?;
    report(load, &runs, &stages);
    Ok(())
}
