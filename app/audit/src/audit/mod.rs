//! `mailfleet audit ...`: answers from the events alone.
//!
//! - `audit decisions <consumer>` replays the consumer (no outputs, no
//!   effects) and compares every output and dead letter it decides, by
//!   event id, with what its output topics recorded. Ids are deterministic
//!   (`<consumer>:<topic>:<partition>:<offset>:<index>`), so each recorded
//!   output names the input it came from. The last line is exactly
//!   `audited=<n> diffs=<n>`, and a diff exits non-zero.
//! - `audit account <address>`: the account's whole history across the
//!   topics, in order, with each transition's recorded reason; it works
//!   after deletion too, from the tombstone and the log.
//! - `audit mail <message-id | queue id>`: the mail's path, from the
//!   greylist decisions for its triplets to where it was stored.

mod account;
mod decisions;
mod mail;
mod read;

use mailfleet_fleet::config::Config;
use serde_json::Value;

use crate::replay::RangeArgs;
pub use read::{read_all, Read};

/// `mailfleet audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute a consumer's decisions and compare them with the recorded outputs.
    Decisions {
        /// Any consumer; of one whose effects emit events (scanner, storage,
        /// deleter, directory), the decided outputs.
        consumer: String,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// An account's whole history across the topics.
    Account {
        /// The address.
        account: String,
    },
    /// A mail's path: greylisting, reception, scan, storage.
    Mail {
        /// Its Message-ID (with or without <>), or the Postfix queue id.
        id: String,
    },
}

/// Run an audit; `Ok(false)` when it found a difference.
pub async fn run(cmd: AuditCommand, cfg: &Config) -> anyhow::Result<bool> {
    match cmd {
        AuditCommand::Decisions { consumer, range } => {
            decisions::decisions(cfg, &consumer, &range).await
        }
        AuditCommand::Account { account } => account::account_history(cfg, &account).map(|()| true),
        AuditCommand::Mail { id } => mail::mail_path(cfg, &id).map(|()| true),
    }
}

/// Fields worth a line: everything but the envelope and secrets.
fn summary(json: &Value) -> String {
    let Value::Object(fields) = json else {
        return json.to_string();
    };
    fields
        .iter()
        .filter(|(k, v)| {
            k.as_str() != "envelope"
                && k.as_str() != "account"
                && !k.contains("password")
                && !v.is_null()
        })
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_summaries_leave_out_the_envelope_and_secrets() {
        let json = serde_json::json!({
            "envelope": {"event_id": "x"},
            "account": "bob@x",
            "password_hash": "{ARGON2}...",
            "plan": "free",
            "display_name": null,
            "quota_bytes": 5,
        });
        assert_eq!(summary(&json), "plan=free quota_bytes=5");
    }
}
