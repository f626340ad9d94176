//! The demo's clean-up. Before the season some users delete mail: they log
//! in to Dovecot's IMAP and `UID MOVE` a message to Trash ([`super::imap`];
//! what a mail client does, and no event records). All season long
//! `mailfleet scheduler` writes the configured purge runs (Trash daily,
//! Spam monthly) on their schedules in compressed time: each goes into
//! every partition of the purge topic, the purger plans each account's
//! slot over the job's window, the ticks release them and the storage
//! writer carries the `PurgeRequested` out and reports `MessagesPurged`.

use mailfleet_events::{mail::MessagesPurged, scheduler::JobDue};
use mailfleet_fleet::config::Config;

use super::{
    accounts::DemoAccounts,
    imap::{imap_addr, move_oldest_to_trash},
    mail::read_all,
    season::Span,
};

/// Every third account moves the oldest message of its INBOX to Trash over
/// IMAP; returns how many moved.
pub async fn move_to_trash(accounts: &DemoAccounts) -> anyhow::Result<usize> {
    let addr = imap_addr();
    let mut moved = 0;
    for (i, account) in accounts.list.iter().enumerate().step_by(3) {
        if move_oldest_to_trash(&addr, account, accounts.password(i)).await? {
            moved += 1;
        }
    }
    println!(
        "== {moved} users deleted a message each: logged in to Dovecot's IMAP ({addr}) and UID MOVEd it to Trash"
    );
    Ok(moved)
}

/// What the storage writer purged in the scheduler's purge runs of `span`,
/// per folder.
pub fn print_purged(cfg: &Config, span: &Span) -> anyhow::Result<()> {
    let runs: Vec<String> = read_all::<JobDue>(cfg, &cfg.scheduler.jobs_topic)?
        .into_iter()
        .filter(|j| j.kind == "purge" && (span.start..=span.end).contains(&j.due_at))
        .map(|j| j.run_id)
        .collect();
    let stored = &cfg.consumers.storage.stored_topic;
    let purged: Vec<MessagesPurged> = read_all::<MessagesPurged>(cfg, stored)?
        .into_iter()
        .filter(|p| runs.contains(&p.job))
        .collect();
    println!(
        "== purges: {} purge runs written by the scheduler over the season; the storage writer purged:",
        runs.len()
    );
    let mut by_folder: std::collections::BTreeMap<&str, (usize, i64, i64)> = Default::default();
    for p in &purged {
        let e = by_folder.entry(p.folder.as_str()).or_default();
        *e = (e.0 + 1, e.1 + p.count, e.2 + p.bytes);
    }
    for (folder, (accounts, count, bytes)) in by_folder {
        println!(
            "  {folder:<6} {accounts:>4} mailboxes purged, {count:>5} messages, {bytes:>9} bytes"
        );
    }
    Ok(())
}
