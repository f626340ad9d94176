//! The events a block becomes: `AccountBlocked` on the accounts topic
//! (the lifecycle, the directory and the LDAP status follow it) and an
//! `AdminAlert` with the figures and how to clear it.

use mailfleet_events::{
    accounts::{AccountBlocked, BlockReason},
    admin::{AdminAlert, AlertSeverity},
    submission::MessageSubmitted,
    Envelope,
};
use mailfleet_runtime::Emit;

use crate::{config::OutboundConfig, windows::Figures, NAME};

/// What showed sustained abuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// This many deferrals (the threshold) within an hour.
    Deferrals(u32),
    /// Messages in a day at this factor of the plan's daily limit.
    Messages(u32, u32),
}

/// The alert's `kind` for a virus submitted by an account.
pub const VIRUS_KIND: &str = "virus-from-account";
/// The alert's `kind` for an account blocked for abuse.
pub const ABUSE_KIND: &str = "abuse-from-account";

fn unblock_hint(account: &str) -> String {
    format!("clear a false positive with `mailfleet account unblock {account}`")
}

fn block_and_alert(
    cfg: &OutboundConfig,
    account: &str,
    blocked: AccountBlocked,
    alert: AdminAlert,
) -> Vec<Emit> {
    vec![
        Emit::new(&cfg.accounts_topic, account.as_bytes(), blocked),
        Emit::new(&cfg.alerts_topic, account.as_bytes(), alert),
    ]
}

/// A virus from `account` (its SASL login): block it and tell the admin
/// which message, and how to clear a false positive.
pub fn virus(cfg: &OutboundConfig, account: &str, m: &MessageSubmitted) -> Vec<Emit> {
    let envelope = || Envelope::caused_by(&m.envelope, NAME);
    let signature = m.signature.as_deref().unwrap_or("unnamed signature");
    let mut to = m
        .recipients
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if m.recipients.len() > 5 {
        to.push_str(&format!(" and {} more", m.recipients.len() - 5));
    }
    let blocked = AccountBlocked {
        envelope: envelope(),
        account: account.to_string(),
        reason: BlockReason::Virus,
        message_id: m.message_id.clone(),
        blob_id: None,
        detail: signature.to_string(),
    };
    let alert =
        AdminAlert {
            envelope: envelope(),
            severity: AlertSeverity::Critical,
            kind: VIRUS_KIND.into(),
            account: Some(account.to_string()),
            summary: format!("{account} submitted a virus ({signature}); the account is blocked"),
            detail: Some(format!(
            "queue id {} message-id {} from <{}> to {to} via {}, {:?} by the submission filter; {}",
            if m.queue_id.is_empty() { "-" } else { &m.queue_id },
            m.message_id.as_deref().unwrap_or("-"),
            m.sender,
            m.client_address,
            m.action,
            unblock_hint(account)
        )),
        };
    block_and_alert(cfg, account, blocked, alert)
}

/// Sustained abuse by `account`: block it once, with the figures.
pub fn abuse(
    cfg: &OutboundConfig,
    account: &str,
    trigger: Abuse,
    f: &Figures,
    cause: &Envelope,
) -> Vec<Emit> {
    let envelope = || Envelope::caused_by(cause, NAME);
    let why = match trigger {
        Abuse::Deferrals(n) => format!(
            "{} deferrals for outbound limits in the last hour (threshold {n})",
            f.deferrals_last_hour
        ),
        Abuse::Messages(factor, limit) => format!(
            "{} messages relayed in the last day, {factor} times the plan's {limit}",
            f.messages_last_day
        ),
    };
    let figures = format!(
        "{} recipients in the last hour; {} distinct recipients, {} messages, {} bytes in the last day",
        f.recipients_last_hour, f.distinct_recipients_last_day, f.messages_last_day, f.bytes_last_day
    );
    let blocked = AccountBlocked {
        envelope: envelope(),
        account: account.to_string(),
        reason: BlockReason::Abuse,
        message_id: None,
        blob_id: None,
        detail: format!("{why}; {figures}"),
    };
    let alert = AdminAlert {
        envelope: envelope(),
        severity: AlertSeverity::Critical,
        kind: ABUSE_KIND.into(),
        account: Some(account.to_string()),
        summary: format!("{account} looks hijacked: {why}; the account is blocked"),
        detail: Some(format!("{figures}; {}", unblock_hint(account))),
    };
    block_and_alert(cfg, account, blocked, alert)
}
