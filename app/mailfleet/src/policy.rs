//! `mailfleet policy`: the policy server, with the account statuses that
//! refuse a submission from an account that may not send.

use std::sync::Arc;

use mailfleet_events::accounts::AccountStatus;
use mailfleet_lifecycle::status::{Mailbox, StatusProjection};
use mailfleet_policy::submission::{MaySubmit, Submitters};
use mailfleet_policy::PolicyConfig;
use mailfleet_runtime::{metrics, time::Clock, Shutdown};

use crate::config::Config;

/// The statuses the LMTP server checks recipients against, asked of a
/// submitting account: only an open one (pending or active) may send.
struct Statuses(StatusProjection);

impl Submitters for Statuses {
    fn may_submit(&self, account: &str) -> MaySubmit {
        match self.0.mailbox(account) {
            Mailbox::Open => MaySubmit::Yes,
            Mailbox::NotReady => MaySubmit::NotReady,
            Mailbox::Unknown => MaySubmit::No("unknown"),
            Mailbox::Closed(status) => MaySubmit::No(status_word(status)),
        }
    }
}

/// A closed status in the words of a refusal.
fn status_word(status: AccountStatus) -> &'static str {
    match status {
        AccountStatus::Blocked => "blocked",
        AccountStatus::Inactive => "inactive",
        AccountStatus::Deleting => "being deleted",
        AccountStatus::Deleted => "deleted",
        AccountStatus::Pending | AccountStatus::Active | AccountStatus::Unknown => "not open",
    }
}

/// Serve until SIGTERM.
pub async fn run(cfg: &Config, clock: Clock, shutdown: Shutdown) -> anyhow::Result<()> {
    metrics::install_exporter(&cfg.metrics)?;
    let grouping = cfg.consumers.greylist.grouping();
    let submitters: Option<Arc<dyn Submitters>> = match cfg.policy.check_submitters {
        true => Some(Arc::new(Statuses(StatusProjection::follow(
            &cfg.kafka,
            &cfg.policy.status_topic,
            shutdown.clone(),
        )?))),
        false => None,
    };
    let policy = PolicyConfig {
        clock,
        ..cfg.policy.clone()
    };
    Ok(mailfleet_policy::serve(policy, grouping, &cfg.kafka, submitters, shutdown).await?)
}

#[cfg(test)]
mod tests {
    use mailfleet_events::{accounts::AccountStatusChanged, Envelope};

    use super::*;

    fn status(projection: &StatusProjection, account: &str, to: AccountStatus) {
        projection.apply(&AccountStatusChanged {
            envelope: Envelope::new("s", 1, "lifecycle"),
            account: account.into(),
            from: AccountStatus::Pending,
            to,
            reason: "test".into(),
            settings_hash: None,
        });
    }

    #[test]
    fn only_open_accounts_may_submit() {
        let projection = StatusProjection::ready();
        for (account, to) in [
            ("a@x.test", AccountStatus::Active),
            ("p@x.test", AccountStatus::Pending),
            ("b@x.test", AccountStatus::Blocked),
            ("i@x.test", AccountStatus::Inactive),
            ("d@x.test", AccountStatus::Deleting),
            ("g@x.test", AccountStatus::Deleted),
        ] {
            status(&projection, account, to);
        }
        let s = Statuses(projection);
        assert_eq!(s.may_submit("a@x.test"), MaySubmit::Yes);
        assert_eq!(s.may_submit("p@x.test"), MaySubmit::Yes);
        assert_eq!(s.may_submit("b@x.test"), MaySubmit::No("blocked"));
        assert_eq!(s.may_submit("i@x.test"), MaySubmit::No("inactive"));
        assert_eq!(s.may_submit("d@x.test"), MaySubmit::No("being deleted"));
        assert_eq!(s.may_submit("g@x.test"), MaySubmit::No("deleted"));
        assert_eq!(s.may_submit("nobody@x.test"), MaySubmit::No("unknown"));
    }
}
