//! The directory's I/O: carry out an [`Intent`] against slapd and say how
//! it went. Transient failures (slapd down, busy, a failed bind) are
//! `Temporary`: the partition waits at this event and retries. Other LDAP
//! failures are `Permanent` (dead letter), naming the DN, the operation
//! and the result code. A set-up error (slapd's certificate does not
//! verify, StartTLS refused) fails before the bind, so nothing is written:
//! the event stays uncommitted (`Temporary`, not dead-lettered: it is not
//! at fault) and the consumer stops, logging the URL and the reason, since
//! no retry can succeed.
//!
//! Idempotence, so that a retried effect converges: an add that finds the
//! entry (68) replaces its attributes with the event's; a delete of a
//! missing subtree removes nothing; a change that finds no entry is fine
//! for an account being deleted, and otherwise an admin alert (the account
//! exists in the log but not in the directory: no retry will fix that).

use mailfleet_events::{
    accounts::{DeletionStep, DeletionStepCompleted},
    admin::{AdminAlert, AlertSeverity},
    Envelope,
};
use mailfleet_runtime::{Decision, Decode, Emit, Input, Outcome};

use super::{
    decide::{DirectoryInput, Intent},
    dn::Dn,
    entry::{child_attrs, Change},
    error::{rc, DirectoryError},
    Directory, NAME,
};

/// What an intent did.
enum Done {
    Added,
    Modified,
    /// The entry to change is not there (the error says which).
    Missing(DirectoryError),
    Removed {
        dn: Dn,
        count: usize,
    },
}

impl Directory {
    /// What the decision asks the effect to do, taken out of the input
    /// and decision so that the effect's future owns it.
    pub(super) fn work(
        input: &Input<DirectoryInput>,
        decision: &Decision,
    ) -> Option<(Envelope, Intent)> {
        let intent = decision.intent_as::<Intent>()?.clone();
        Some((input.event.envelope().clone(), intent))
    }

    /// Run an intent; none, nothing to do.
    pub(super) async fn carry_out(&self, work: Option<(Envelope, Intent)>) -> Outcome {
        let Some((cause, intent)) = work else {
            return Outcome::Done;
        };
        match self.apply(&intent).await {
            Ok(done) => self.outcome(&cause, &intent, done),
            Err(e) if e.is_setup() => {
                tracing::error!(error = %e, "ldap: the link to slapd cannot work as configured; stopping (nothing written)");
                self.shutdown.trigger();
                Outcome::Temporary(e.to_string())
            }
            Err(e) if e.is_transient() => Outcome::Temporary(e.to_string()),
            Err(e) => Outcome::Permanent(e.to_string()),
        }
    }

    async fn apply(&self, intent: &Intent) -> Result<Done, DirectoryError> {
        let layout = self.client.layout();
        let mut conn = self.client.conn().await?;
        match intent {
            Intent::Add(new) => {
                let dn = layout.account_dn(&new.account);
                let put = conn.put(&dn, &new.attrs()).await?;
                for rdn in &layout.children {
                    conn.put(&dn.child(rdn.clone()), &child_attrs(rdn)).await?;
                }
                tracing::info!(account = %new.account, %dn, ?put, "ldap entry added");
                Ok(Done::Added)
            }
            Intent::Modify {
                account, change, ..
            } => {
                let dn = layout.account_dn(account);
                match conn.replace(&dn, &change.attrs()).await {
                    Ok(()) => {
                        tracing::info!(%account, %dn, change = %change.describe(), "ldap entry changed");
                        Ok(Done::Modified)
                    }
                    Err(e) if e.rc() == Some(rc::NO_SUCH_OBJECT) => Ok(Done::Missing(e)),
                    Err(e) => Err(e),
                }
            }
            Intent::DeleteSubtree { account } => {
                let dn = layout.account_dn(account);
                let count = conn.delete_subtree(&dn).await?;
                tracing::info!(%account, %dn, count, "ldap subtree removed");
                Ok(Done::Removed { dn, count })
            }
        }
    }

    fn outcome(&self, cause: &Envelope, intent: &Intent, done: Done) -> Outcome {
        let envelope = || Envelope::caused_by(cause, NAME);
        match (intent, done) {
            (Intent::DeleteSubtree { account }, Done::Removed { dn, count }) => {
                Outcome::Emitted(vec![Emit::new(
                    &self.cfg.events_topic,
                    account.as_bytes(),
                    DeletionStepCompleted {
                        envelope: envelope(),
                        account: account.clone(),
                        step: DeletionStep::Directory,
                        detail: format!("removed {count} entries under {dn}"),
                    },
                )])
            }
            (Intent::Modify { gone: true, .. }, Done::Missing(_)) => Outcome::Ignored,
            (
                Intent::Modify {
                    account, change, ..
                },
                Done::Missing(e),
            ) => {
                tracing::warn!(%account, error = %e, "no ldap entry to change");
                Outcome::Emitted(vec![Emit::new(
                    &self.cfg.alerts_topic,
                    account.as_bytes(),
                    missing_alert(envelope(), account, change, &e),
                )])
            }
            _ => Outcome::Done,
        }
    }
}

/// The alert for a change that found no entry.
fn missing_alert(
    envelope: Envelope,
    account: &str,
    change: &Change,
    e: &DirectoryError,
) -> AdminAlert {
    AdminAlert {
        envelope,
        severity: AlertSeverity::Warning,
        kind: "directory-entry-missing".into(),
        account: Some(account.to_string()),
        summary: format!(
            "{account} has no LDAP entry: {} was not applied",
            change.describe()
        ),
        detail: Some(format!(
            "{e}; the account is in accounts.events but not in the directory (created before the directory consumer ran, or removed by hand)"
        )),
    }
}
