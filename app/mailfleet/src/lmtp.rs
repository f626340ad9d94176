//! `mailfleet lmtp`: the LMTP server with its RCPT check, which asks the
//! account status projection first (unknown, inactive, deleting or
//! deleted: `550 5.1.1`; blocked: `550 5.2.1`) and the usage projection
//! second (over quota: `552 5.2.2`). The status rule is
//! `AccountStatus::takes_mail`, the one the scheduler's Postfix map uses.
//!
//! One exception: an inactive account (in its grace period) still takes
//! mail from the null sender `<>`, so the deactivation notice the
//! notifier sends reaches the mailbox the user will see on logging in to
//! reactivate (`lmtp.inactive_accepts_null_sender`).

use std::sync::Arc;

use anyhow::Context;
use mailfleet_blob::BlobStore;
use mailfleet_events::accounts::AccountStatus;
use mailfleet_ingest::lmtp::{self, RcptStatus, RecipientCheck};
use mailfleet_lifecycle::status::{Mailbox, StatusProjection};
use mailfleet_runtime::{metrics, Shutdown};
use mailfleet_storage::usage::UsageProjection;

use crate::config::Config;

/// The two projections a recipient is checked against.
struct AccountCheck {
    /// `None` when `lmtp.check_accounts = false`.
    statuses: Option<StatusProjection>,
    usage: UsageProjection,
    inactive_accepts_null_sender: bool,
}

impl RecipientCheck for AccountCheck {
    fn check(&self, sender: &str, account: &str) -> RcptStatus {
        if let Some(statuses) = &self.statuses {
            match statuses.mailbox(account) {
                Mailbox::Open => {}
                Mailbox::Closed(AccountStatus::Inactive)
                    if sender.is_empty() && self.inactive_accepts_null_sender => {}
                Mailbox::Unknown => return RcptStatus::Unknown,
                Mailbox::Closed(AccountStatus::Blocked) => return RcptStatus::Disabled,
                Mailbox::Closed(_) => return RcptStatus::Inactive,
                Mailbox::NotReady => return RcptStatus::TryLater,
            }
        }
        if self.usage.over_quota(account) {
            RcptStatus::OverQuota
        } else {
            RcptStatus::Accept
        }
    }
}

/// Serve LMTP until SIGTERM.
pub async fn run(cfg: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    metrics::install_exporter(&cfg.metrics)?;
    let blobs = BlobStore::connect(&cfg.blobs).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.lmtp.listen)
        .await
        .with_context(|| format!("lmtp.listen = {:?}", cfg.lmtp.listen))?;
    let statuses = match cfg.lmtp.check_accounts {
        true => Some(StatusProjection::follow(
            &cfg.kafka,
            &cfg.lmtp.status_topic,
            shutdown.clone(),
        )?),
        false => None,
    };
    let usage = UsageProjection::follow(
        &cfg.kafka,
        &cfg.consumers.storage.usage_topic,
        shutdown.clone(),
    )?;
    let check = Arc::new(AccountCheck {
        statuses,
        usage,
        inactive_accepts_null_sender: cfg.lmtp.inactive_accepts_null_sender,
    });
    Ok(lmtp::serve(
        cfg.lmtp.clone(),
        listener,
        Arc::new(blobs),
        &cfg.kafka,
        check,
        shutdown,
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use mailfleet_events::{
        accounts::{AccountStatusChanged, UsageChanged},
        Envelope,
    };

    use super::*;

    #[test]
    fn the_status_comes_first_then_the_quota() {
        let statuses = StatusProjection::ready();
        let usage = UsageProjection::default();
        let status = |account: &str, to| AccountStatusChanged {
            envelope: Envelope::new("s", 1, "lifecycle"),
            account: account.into(),
            from: AccountStatus::Pending,
            to,
            reason: "t".into(),
            settings_hash: None,
        };
        statuses.apply(&status("full@x", AccountStatus::Active));
        statuses.apply(&status("gone@x", AccountStatus::Deleted));
        statuses.apply(&status("ok@x", AccountStatus::Active));
        statuses.apply(&status("idle@x", AccountStatus::Inactive));
        statuses.apply(&status("evil@x", AccountStatus::Blocked));
        usage.apply(&UsageChanged {
            envelope: Envelope::new("u", 1, "storage"),
            account: "full@x".into(),
            used_bytes: 9,
            messages: 1,
            quota_bytes: 9,
            over_quota: true,
            settings_hash: None,
        });
        let check_with = |statuses: StatusProjection, null_sender: bool| AccountCheck {
            statuses: Some(statuses),
            usage: usage.clone(),
            inactive_accepts_null_sender: null_sender,
        };
        let check = check_with(statuses.clone(), true);
        let from = "a@y";
        assert_eq!(check.check(from, "ok@x"), RcptStatus::Accept);
        assert_eq!(check.check(from, "full@x"), RcptStatus::OverQuota);
        assert_eq!(check.check(from, "gone@x"), RcptStatus::Inactive);
        assert_eq!(
            check.check("", "gone@x"),
            RcptStatus::Inactive,
            "deleted: never"
        );
        assert_eq!(check.check(from, "nobody@x"), RcptStatus::Unknown);
        assert_eq!(check.check(from, "evil@x"), RcptStatus::Disabled);
        assert_eq!(check.check("", "evil@x"), RcptStatus::Disabled);
        assert_eq!(check.check(from, "idle@x"), RcptStatus::Inactive);
        assert_eq!(
            check.check("", "idle@x"),
            RcptStatus::Accept,
            "the notice gets in"
        );
        let strict = check_with(statuses, false);
        assert_eq!(strict.check("", "idle@x"), RcptStatus::Inactive);
        let unchecked = AccountCheck {
            statuses: None,
            usage: usage.clone(),
            inactive_accepts_null_sender: true,
        };
        assert_eq!(unchecked.check(from, "nobody@x"), RcptStatus::Accept);
        let starting = check_with(StatusProjection::default(), true);
        assert_eq!(starting.check(from, "ok@x"), RcptStatus::TryLater);
    }
}
