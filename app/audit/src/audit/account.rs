//! `audit account <address>`: the account's whole history across the
//! topics, in order, with each transition's recorded reason.

use std::collections::BTreeSet;

use mailfleet_fleet::config::Config;

use super::{read_all, rfc3339, summary};

pub(super) fn account_history(cfg: &Config, account: &str) -> anyhow::Result<()> {
    let wanted = account.trim().to_ascii_lowercase();
    let topics: BTreeSet<&str> = [
        // Not the status topic: the lifecycle's status changes are on the
        // events topic too, and the compacted copy keeps only the latest.
        cfg.api.events_topic.as_str(),
        cfg.consumers.storage.stored_topic.as_str(),
        cfg.consumers.storage.notify_topic.as_str(),
        cfg.consumers.directory.alerts_topic.as_str(),
        // What it sent and the limits' answers: why it was throttled.
        cfg.consumers.outbound.decisions_topic.as_str(),
        cfg.submission.topic.as_str(),
    ]
    .into_iter()
    .collect();
    let mut found = Vec::new();
    for topic in topics {
        for r in read_all(&cfg.kafka, topic)? {
            let by_key = r
                .key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(wanted.as_bytes()));
            let by_field = r.json["account"]
                .as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case(&wanted));
            // Of the stored topic only what ends a mailbox: not every mail.
            let relevant =
                r.topic != cfg.consumers.storage.stored_topic || r.short() == "MailboxDeleted";
            if (by_key || by_field) && relevant {
                found.push(r);
            }
        }
    }
    anyhow::ensure!(
        !found.is_empty(),
        "no events for {wanted:?} on any account topic"
    );
    found.sort_by(|a, b| (a.time(), &a.topic, a.offset).cmp(&(b.time(), &b.topic, b.offset)));
    let mut seen = BTreeSet::new();
    println!("history of {wanted}");
    for r in found {
        if !seen.insert(r.id().to_string()) {
            continue; // the same event re-sent after a crash
        }
        let line = match r.short() {
            "AccountStatusChanged" => format!(
                "{} -> {} (reason: {})",
                r.json["from"].as_str().unwrap_or("?").to_lowercase(),
                r.json["to"].as_str().unwrap_or("?").to_lowercase(),
                r.json["reason"].as_str().unwrap_or("")
            ),
            _ => summary(&r.json),
        };
        println!("  {}  {:<24} {line}", rfc3339(r.time()), r.short());
    }
    Ok(())
}
