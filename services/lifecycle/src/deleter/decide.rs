//! The saga's pure part: which step to ask for next, given what is done.

use mailfleet_events::{
    accounts::{
        AccountDeleted, AccountStatus, AccountStatusChanged, DeletionStep, DeletionStepCompleted,
        DeletionStepRequested,
    },
    admin::{AdminAlert, AlertSeverity},
    clock::ClockTicked,
    Envelope,
};
use mailfleet_runtime::{Decision, StateError, StateView};

use super::{
    state::{AlertedKey, Saga, SagaKey, Steps},
    DeleterConfig, NAME,
};

mailfleet_runtime::inputs! {
    /// What the deleter reads from `accounts.events`; anything else on
    /// the topic is `Other`.
    #[derive(Debug)]
    pub enum DeleterInput {
        Status(AccountStatusChanged),
        Completed(DeletionStepCompleted),
        /// Time: sagas running too long are reported.
        Tick(ClockTicked),
        _ => Other,
    }
}

/// The effect's plan: release the account's blob references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseBlobs {
    pub account: String,
}

/// Decide one input.
pub fn decide(
    cfg: &DeleterConfig,
    state: &StateView<'_>,
    input: &DeleterInput,
) -> Result<Decision, StateError> {
    match input {
        DeleterInput::Status(s) if s.to == AccountStatus::Deleting => start(cfg, state, s),
        DeleterInput::Completed(c) => completed(cfg, state, c),
        DeleterInput::Tick(t) => stuck(cfg, state, &t.envelope),
        DeleterInput::Status(_) | DeleterInput::Other(_) => Ok(Decision::ignore()),
    }
}

fn start(
    cfg: &DeleterConfig,
    state: &StateView<'_>,
    s: &AccountStatusChanged,
) -> Result<Decision, StateError> {
    let name = s.account.to_ascii_lowercase();
    if state.get(&SagaKey(&name))?.is_some() {
        return Ok(Decision::ignore()); // already under way
    }
    let saga = Saga {
        started: s.envelope.event_time,
        requested: Steps::default(),
        done: Steps::default(),
        reason: s.reason.clone(),
    };
    let mut d = Decision::apply();
    advance(cfg, &mut d, &s.envelope, &name, saga);
    Ok(d)
}

fn completed(
    cfg: &DeleterConfig,
    state: &StateView<'_>,
    c: &DeletionStepCompleted,
) -> Result<Decision, StateError> {
    let name = c.account.to_ascii_lowercase();
    let Some(saga) = state.get(&SagaKey(&name))? else {
        return Ok(Decision::ignore()); // no deletion of it under way
    };
    if c.step == DeletionStep::Unknown {
        return Ok(Decision::reject(format!(
            "DeletionStepCompleted {} for {name}: a step this deleter does not know",
            c.envelope.event_id
        )));
    }
    if saga.done.has(c.step) {
        return Ok(Decision::ignore()); // reported twice
    }
    let saga = Saga {
        done: saga.done.with(c.step),
        ..saga
    };
    let mut d = Decision::apply();
    advance(cfg, &mut d, &c.envelope, &name, saga);
    Ok(d)
}

/// Ask for every step whose prerequisites are done and that was not asked
/// for yet; end the saga once all are done. Saves the saga.
fn advance(cfg: &DeleterConfig, d: &mut Decision, cause: &Envelope, name: &str, mut saga: Saga) {
    use DeletionStep::*;
    if saga.done.all() {
        d.delete(&SagaKey(name)).delete(&AlertedKey(name));
        d.emit(
            &cfg.events_topic,
            name,
            AccountDeleted {
                envelope: Envelope::caused_by(cause, NAME),
                account: name.to_string(),
                reason: saga.reason,
            },
        );
        return;
    }
    let ready = |step| match step {
        Maildir => true,
        // The indexer acts on the storage writer's MailboxDeleted, so the
        // index step is asked for with the mailbox and only recorded here.
        Index => true,
        Directory => saga.done.has(Maildir) && saga.done.has(Index),
        Blobs => saga.done.has(Maildir) && saga.done.has(Index) && saga.done.has(Directory),
        Unknown => false,
    };
    for step in [Maildir, Index, Directory, Blobs] {
        if saga.requested.has(step) || saga.done.has(step) || !ready(step) {
            continue;
        }
        saga.requested = saga.requested.with(step);
        d.emit(
            &cfg.events_topic,
            name,
            DeletionStepRequested {
                envelope: Envelope::caused_by(cause, NAME),
                account: name.to_string(),
                step,
                attempt: 1,
            },
        );
        if step == Blobs {
            d.intend(ReleaseBlobs {
                account: name.to_string(),
            });
        }
    }
    d.put(&SagaKey(name), &saga);
}

/// On a tick, report each saga of the partition that has run longer than
/// `stuck_after_hours` (event time), once.
fn stuck(
    cfg: &DeleterConfig,
    state: &StateView<'_>,
    tick: &Envelope,
) -> Result<Decision, StateError> {
    let limit = i64::from(cfg.stuck_after_hours) * 3_600_000;
    let mut d = Decision::apply();
    for (key, saga) in state.scan::<SagaKey>()? {
        let name = String::from_utf8_lossy(&key).into_owned();
        let running = tick.event_time - saga.started;
        if running < limit || state.get(&AlertedKey(&name))?.is_some() {
            continue;
        }
        d.put(&AlertedKey(&name), &());
        d.emit(
            &cfg.alerts_topic,
            name.as_str(),
            AdminAlert {
                envelope: Envelope::caused_by(tick, NAME),
                severity: AlertSeverity::Warning,
                kind: "deletion-stuck".into(),
                account: Some(name.clone()),
                summary: format!(
                    "the deletion of {name} has not finished after {} h",
                    running / 3_600_000
                ),
                detail: Some(format!(
                    "steps requested: {:?}; done: {:?}; a step that failed for good is in the \
                     dead-letter topic: fix the cause and replay it",
                    saga.requested.names(),
                    saga.done.names()
                )),
            },
        );
    }
    if d.changes.is_empty() {
        return Ok(Decision::ignore());
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
