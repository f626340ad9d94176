//! The deletion saga: once the lifecycle moves an account to `DELETING`,
//! remove every trace of it, one step at a time, each step an event, and
//! end with the `AccountDeleted` tombstone.
//!
//! ```text
//! AccountStatusChanged{to: DELETING}  -> DeletionStepRequested{MAILDIR}
//!   storage writer: removes the home   -> MailboxDeleted (mail.stored)
//!                                        + DeletionStepCompleted{MAILDIR}
//!   indexer, on MailboxDeleted         -> DeletionStepCompleted{INDEX}
//! MAILDIR and INDEX done              -> DeletionStepRequested{DIRECTORY}
//!   directory effector: LDAP subtree  -> DeletionStepCompleted{DIRECTORY}
//! DIRECTORY done                      -> DeletionStepRequested{BLOBS}
//!   this consumer's effect: releases the account's blob references and
//!   removes blobs nobody else holds   -> DeletionStepCompleted{BLOBS}
//! all four done                       -> AccountDeleted (the tombstone)
//! ```
//!
//! Every request and completion is on `accounts.events`, keyed by the
//! account, so the saga's state is rebuilt by replay and a crash anywhere
//! resumes it: a request the deleter sent before a crash is sent again
//! with the same id, an effector that crashed re-reads the request, and
//! every step is idempotent (a mailbox, subtree or reference already gone
//! is a success). Completions may arrive in any order and twice; the saga
//! records which steps are done and asks for the next one once.
//!
//! The LDAP subtree goes after the mail, so a crash half-way never leaves
//! mail on disk for an account the directory no longer knows. A step that
//! is dead-lettered (a permanent failure) stops the saga at that step; the
//! account stays `DELETING`, which `mailfleet account show` reports, and
//! on the first clock tick `stuck_after_hours` after the deletion started
//! the deleter raises one `AdminAlert` (`deletion-stuck`) naming the steps
//! requested and done.

mod decide;
mod state;

use std::{future::Future, sync::Arc};

use mailfleet_blob::BlobStore;
use mailfleet_events::accounts::{DeletionStep, DeletionStepCompleted};
use mailfleet_runtime::{Consumer, Decision, Emit, Input, Outcome, StateError, StateView};
use serde::Deserialize;

pub use decide::{DeleterInput, ReleaseBlobs};
pub use state::{Saga, Steps};

/// The consumer's name.
pub const NAME: &str = "deleter";

/// `[consumers.deleter]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeleterConfig {
    /// Where the saga's requests, completions and the tombstone go (the
    /// topic it reads).
    pub events_topic: String,
    /// Where a stuck deletion is reported (`AdminAlert`, kind
    /// `deletion-stuck`).
    pub alerts_topic: String,
    /// A deletion not finished this many hours after it started (event
    /// time, checked on every clock tick) is reported once.
    pub stuck_after_hours: u32,
}

impl Default for DeleterConfig {
    fn default() -> Self {
        Self {
            events_topic: "accounts.events".into(),
            alerts_topic: "admin.alerts".into(),
            stuck_after_hours: 6,
        }
    }
}

impl DeleterConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, topic) in [
            ("events_topic", &self.events_topic),
            ("alerts_topic", &self.alerts_topic),
        ] {
            if topic.trim().is_empty() {
                out.push(format!("consumers.deleter.{key} = {topic:?}: is empty"));
            }
        }
        if self.stuck_after_hours == 0 {
            out.push("consumers.deleter.stuck_after_hours = 0: must be >= 1".into());
        }
        out
    }
}

/// The deleter: the saga's decider, and the blob step as its effect.
pub struct Deleter {
    cfg: DeleterConfig,
    blobs: Arc<BlobStore>,
}

impl Deleter {
    pub fn new(cfg: DeleterConfig, blobs: Arc<BlobStore>) -> Self {
        Self { cfg, blobs }
    }
}

impl Consumer for Deleter {
    type Event = DeleterInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<DeleterInput>,
    ) -> Result<Decision, StateError> {
        decide::decide(&self.cfg, state, &input.event)
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn effect(
        &self,
        input: &Input<DeleterInput>,
        decision: &Decision,
    ) -> impl Future<Output = Outcome> + Send {
        let outcome = match decision.intent_as::<ReleaseBlobs>() {
            None => Outcome::Done,
            Some(release) => self.release(input, release),
        };
        async { outcome }
    }
}

impl Deleter {
    /// The blob step: drop the account's references, then report.
    fn release(&self, input: &Input<DeleterInput>, release: &ReleaseBlobs) -> Outcome {
        let released = match self.blobs.release_account(&release.account) {
            Ok(r) => r,
            // Disk trouble passes or gets fixed: retry, never skip a step.
            Err(e) => {
                return Outcome::Temporary(format!("releasing blobs of {}: {e}", release.account))
            }
        };
        tracing::info!(account = %release.account, ?released, "blob references released");
        Outcome::Emitted(vec![Emit::new(
            &self.cfg.events_topic,
            release.account.as_bytes(),
            DeletionStepCompleted {
                envelope: mailfleet_events::Envelope::caused_by(
                    mailfleet_runtime::Decode::envelope(&input.event),
                    NAME,
                ),
                account: release.account.clone(),
                step: DeletionStep::Blobs,
                detail: format!(
                    "released {} references, removed {} blobs ({} bytes)",
                    released.references, released.blobs_removed, released.bytes_removed
                ),
            },
        )])
    }
}

/// The deleter as `mailfleet run deleter` runs it, over the blob store.
pub async fn build(
    cfg: &DeleterConfig,
    blobs: Arc<BlobStore>,
    _wiring: &mailfleet_runtime::Wiring,
) -> Result<Deleter, mailfleet_runtime::RuntimeError> {
    Ok(Deleter::new(cfg.clone(), blobs))
}
