//! The purge planner's pure part.
//!
//! - `MessageStored`, `MessagesPurged`, `MailboxDeleted` (the stored
//!   topic) keep which accounts have a mailbox, and how many messages the
//!   writer put in each folder;
//! - a purge `JobDue` (fanned out by the scheduler into every partition of
//!   the purge topic) plans this partition's accounts with
//!   [`stagger::plan_lane`] in the partition's own seconds, and keeps one
//!   pending slot per account;
//! - each `ClockTicked` on the purge topic releases the slots due by then
//!   as `PurgeRequested`, which the storage writer carries out.

use std::collections::BTreeMap;

use mailfleet_events::{
    admin::{AdminAlert, AlertSeverity},
    clock::ClockTicked,
    mail::{MailboxDeleted, MessageStored, MessagesPurged, PurgeRequested},
    scheduler::JobDue,
    Envelope,
};
use mailfleet_runtime::{Decision, StateError, StateView};

use super::{
    state::{FolderKey, MailboxKey, Pending, RunKey, SlotBody, SlotKey},
    PurgerConfig, NAME,
};
use crate::{
    stagger::{self, Lane, PurgePlan, RateLimit},
    SchedulerError,
};

mailfleet_runtime::inputs! {
    /// What the planner reads (both topics keyed by account, co-partitioned).
    #[derive(Debug)]
    pub enum PurgerInput {
        Stored(MessageStored),
        Purged(MessagesPurged),
        MailboxGone(MailboxDeleted),
        Job(JobDue),
        Tick(ClockTicked),
        _ => Other,
    }
}

/// A plan made, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub job: String,
    pub accounts: usize,
    pub peak_per_minute: u32,
    pub past_window: usize,
}

/// Slots released by a tick, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Purges per folder.
    pub per_folder: BTreeMap<String, u64>,
    /// The busiest minute of the release, by planned time.
    pub peak_per_minute: u64,
}

/// Decide one input of `partition` (of `partitions`).
pub fn decide(
    cfg: &PurgerConfig,
    state: &StateView<'_>,
    input: &PurgerInput,
    partition: i32,
    partitions: i32,
) -> Result<Decision, StateError> {
    match input {
        PurgerInput::Stored(s) => stored(state, s),
        PurgerInput::Purged(p) => purged(state, p),
        PurgerInput::MailboxGone(m) => mailbox_gone(state, m),
        PurgerInput::Job(j) if j.kind == "purge" => job(cfg, state, j, partition, partitions),
        PurgerInput::Tick(t) => tick(cfg, state, t),
        PurgerInput::Job(_) | PurgerInput::Other(_) => Ok(Decision::ignore()),
    }
}

fn account_of(address: &str) -> String {
    address.to_ascii_lowercase()
}

fn stored(state: &StateView<'_>, s: &MessageStored) -> Result<Decision, StateError> {
    let account = account_of(&s.account);
    let mut d = Decision::apply();
    d.put(&MailboxKey(&account), &());
    if !s.folder.eq_ignore_ascii_case("INBOX") {
        let key = FolderKey {
            account: &account,
            folder: &s.folder,
        };
        let count = state.get(&key)?.unwrap_or(0);
        d.put(&key, &(count + 1));
    }
    Ok(d)
}

fn purged(state: &StateView<'_>, p: &MessagesPurged) -> Result<Decision, StateError> {
    let account = account_of(&p.account);
    let key = FolderKey {
        account: &account,
        folder: &p.folder,
    };
    let Some(count) = state.get(&key)? else {
        return Ok(Decision::ignore());
    };
    let mut d = Decision::apply();
    match count - p.count.max(0) {
        left if left > 0 => d.put(&key, &left),
        _ => d.delete(&key),
    };
    Ok(d)
}

fn mailbox_gone(state: &StateView<'_>, m: &MailboxDeleted) -> Result<Decision, StateError> {
    let account = account_of(&m.account);
    let mut d = Decision::apply();
    d.delete(&MailboxKey(&account));
    let prefix = format!("{account}\0");
    for (body, _) in state.scan_prefix::<FolderKey>(prefix.as_bytes())? {
        let folder = String::from_utf8_lossy(&body[prefix.len()..]).into_owned();
        d.delete(&FolderKey {
            account: &account,
            folder: &folder,
        });
    }
    Ok(d)
}

/// A purge job's parameters, read from the `JobDue`.
struct Params {
    folder: String,
    window_ms: i64,
    max_per_s: f64,
    received_before: i64,
}

fn params(j: &JobDue) -> Result<Params, SchedulerError> {
    let run_id = || j.run_id.clone();
    let get = |name: &'static str| {
        j.params
            .get(name)
            .ok_or_else(|| SchedulerError::ParamMissing {
                run_id: run_id(),
                name,
            })
    };
    let folder = get("folder")?.clone();
    if folder.trim().is_empty() || folder.eq_ignore_ascii_case("INBOX") {
        return Err(SchedulerError::ParamFolder {
            run_id: run_id(),
            folder,
        });
    }
    let window = get("window_minutes")?;
    let window_ms = window
        .parse::<u32>()
        .ok()
        .filter(|m| *m >= 1)
        .map(|m| i64::from(m) * 60_000)
        .ok_or_else(|| SchedulerError::ParamWindow {
            run_id: run_id(),
            value: window.clone(),
        })?;
    let rate = get("max_purges_per_s")?;
    let max_per_s = rate
        .parse::<f64>()
        .map_err(|source| SchedulerError::ParamRate {
            run_id: run_id(),
            value: rate.clone(),
            source,
        })?;
    let received_before = match j.params.get("received_before") {
        None => j.due_at,
        Some(v) => v
            .parse::<i64>()
            .map_err(|source| SchedulerError::ParamReceivedBefore {
                run_id: run_id(),
                value: v.clone(),
                source,
            })?,
    };
    Ok(Params {
        folder,
        window_ms,
        max_per_s,
        received_before,
    })
}

fn job(
    cfg: &PurgerConfig,
    state: &StateView<'_>,
    j: &JobDue,
    partition: i32,
    partitions: i32,
) -> Result<Decision, StateError> {
    if state.get(&RunKey(&j.run_id))?.is_some() {
        return Ok(Decision::ignore()); // the same run, again
    }
    let p = match params(j) {
        Ok(p) => p,
        Err(e) => return Ok(Decision::reject(e.to_string())),
    };
    let accounts = accounts_with_mail(cfg, state, &p.folder)?;
    let plan = Lane::partition(partition, partitions).and_then(|lane| {
        let limit = RateLimit::shared(p.max_per_s, lane.of)?;
        stagger::plan_lane(j.due_at, p.window_ms, limit, lane, &accounts)
    });
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return Ok(Decision::reject(format!("JobDue {}: {e}", j.run_id))),
    };
    let mut d = Decision::apply();
    d.put(&RunKey(&j.run_id), &());
    let pending = Pending {
        folder: p.folder.clone(),
        received_before: p.received_before,
    };
    for slot in &plan.slots {
        let key = SlotKey {
            at: slot.at,
            run_id: &j.run_id,
            account: &slot.account,
        };
        d.put(&key, &pending);
    }
    if plan.past_window > 0 {
        d.emit(
            &cfg.alerts_topic,
            j.job.as_str(),
            window_alert(j, &p, &plan, partition),
        );
    }
    d.intend(Planned {
        job: j.job.clone(),
        accounts: plan.slots.len(),
        peak_per_minute: plan.peak_per_minute,
        past_window: plan.past_window,
    });
    Ok(d)
}

/// This partition's accounts that may have mail in `folder`: those the
/// writer delivered into it, or every mailbox for a folder that IMAP
/// clients fill (moves are not in the log).
fn accounts_with_mail(
    cfg: &PurgerConfig,
    state: &StateView<'_>,
    folder: &str,
) -> Result<Vec<String>, StateError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if cfg.is_client_folder(folder) {
        return Ok(state
            .scan_prefix::<MailboxKey>(&[])?
            .into_iter()
            .map(|(body, ())| text(&body))
            .collect());
    }
    let mut out = Vec::new();
    for (body, count) in state.scan_prefix::<FolderKey>(&[])? {
        let Some(nul) = body.iter().position(|b| *b == 0) else {
            continue;
        };
        if count > 0 && body[nul + 1..] == *folder.as_bytes() {
            out.push(text(&body[..nul]));
        }
    }
    Ok(out)
}

fn window_alert(j: &JobDue, p: &Params, plan: &PurgePlan, partition: i32) -> AdminAlert {
    AdminAlert {
        envelope: Envelope::caused_by(&j.envelope, NAME),
        severity: AlertSeverity::Warning,
        kind: "purge-window-too-small".into(),
        account: None,
        summary: format!(
            "{}: {} of {} {} purges in partition {partition} fall past the {}-minute window at {} purges/s",
            j.run_id,
            plan.past_window,
            plan.slots.len(),
            p.folder,
            p.window_ms / 60_000,
            p.max_per_s
        ),
        detail: Some(
            "Raise window_minutes or max_purges_per_s of the job in [scheduler.jobs]; \
             the purges past the window still run, later."
                .into(),
        ),
    }
}

fn tick(
    cfg: &PurgerConfig,
    state: &StateView<'_>,
    t: &ClockTicked,
) -> Result<Decision, StateError> {
    let now = t.envelope.event_time;
    let mut d = Decision::apply();
    let mut released = Released {
        per_folder: BTreeMap::new(),
        peak_per_minute: 0,
    };
    let mut minutes: BTreeMap<i64, u64> = BTreeMap::new();
    for (body, pending) in state.scan_prefix::<SlotKey>(&[])? {
        let slot = SlotBody::parse(&body).map_err(|source| StateError::Corrupt {
            key: String::from_utf8_lossy(&body).into_owned(),
            source,
        })?;
        if slot.at > now {
            break; // sorted by time: the rest is later
        }
        d.delete(&slot.key());
        if state.get(&MailboxKey(&slot.account))?.is_none() {
            continue; // deleted since it was planned
        }
        let mut envelope = Envelope::caused_by(&t.envelope, NAME);
        envelope.event_time = slot.at;
        d.emit(
            &cfg.purge_topic,
            slot.account.as_str(),
            PurgeRequested {
                envelope,
                account: slot.account.clone(),
                folder: pending.folder.clone(),
                received_before: Some(pending.received_before),
                job: slot.run_id.clone(),
            },
        );
        *released.per_folder.entry(pending.folder).or_default() += 1;
        *minutes.entry(slot.at.div_euclid(60_000)).or_default() += 1;
    }
    if d.changes.is_empty() {
        return Ok(Decision::ignore());
    }
    released.peak_per_minute = minutes.values().copied().max().unwrap_or(0);
    d.intend(released);
    Ok(d)
}

#[cfg(test)]
mod scheduler_tests;
