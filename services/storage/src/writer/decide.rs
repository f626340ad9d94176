//! The storage writer's pure part: what each input means for the account
//! (deliver, quarantine, reject over quota, purge), the usage and quota
//! state, and the events that say so. The effect only carries out the
//! [`Plan`].

use mailfleet_events::{
    accounts::{DeletionStep, DeletionStepRequested, PlanChanged, QuotaChanged, UsageChanged},
    config::ConfigChanged,
    mail::{
        MessageQuarantined, MessageRejected, MessageScanned, MessagesPurged, PurgeRequested,
        QuarantineReason, RejectReason, ScanVerdict,
    },
    notify::NotificationRequested,
    Envelope,
};
use mailfleet_runtime::{Decision, StateError, StateKey, StateValue, StateView};

use super::{
    config::StorageConfig,
    state::{AccountQuota, Delivered, DeliveredKey, PlanBytesKey, QuotaKey, Usage, UsageKey},
    NAME,
};

mailfleet_runtime::inputs! {
    /// Everything the writer reads (all keyed by account, co-partitioned).
    #[derive(Debug)]
    pub enum StorageInput {
        Scanned(MessageScanned),
        Quota(QuotaChanged),
        Plan(PlanChanged),
        Purge(PurgeRequested),
        /// Its own purge results, read back to lower the usage.
        Purged(MessagesPurged),
        /// The deletion saga's request to remove a whole mailbox.
        DeleteMailbox(DeletionStepRequested),
        /// The settings in force from here on (handled by the consumer).
        Config(ConfigChanged),
        _ => Other,
    }
}

/// What the effect must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Write the blob into the account's Maildir (the folder rules pick the
    /// folder) and report `MessageStored`.
    Deliver,
    /// Copy the blob into the quarantine at this relative path.
    Quarantine { path: String },
    /// Remove matching files from a folder and report `MessagesPurged`.
    Purge,
    /// Remove the account's whole mailbox (its Maildir and Dovecot's files
    /// beside it) and report `MailboxDeleted` and the saga step.
    DeleteMailbox,
}

/// The id that makes a delivery idempotent: the `MessageReceived` id, which
/// a replay and an LMTP retry of the same message share.
pub fn delivery_id(scanned: &MessageScanned) -> &str {
    scanned
        .envelope
        .causation_id
        .as_deref()
        .unwrap_or(&scanned.envelope.event_id)
}

/// Decide one input.
pub fn decide(
    cfg: &StorageConfig,
    state: &StateView<'_>,
    input: &StorageInput,
) -> Result<Decision, StateError> {
    match input {
        StorageInput::Scanned(s) if s.size < 0 => Ok(Decision::reject(format!(
            "MessageScanned {}: size {} is negative",
            s.envelope.event_id, s.size
        ))),
        StorageInput::Scanned(s) => scanned(cfg, state, s),
        StorageInput::Quota(q) if q.quota_bytes.is_some_and(|b| b < 0) => {
            Ok(Decision::reject(format!(
                "QuotaChanged {}: quota_bytes {} is negative",
                q.envelope.event_id,
                q.quota_bytes.unwrap_or_default()
            )))
        }
        StorageInput::Quota(q) => {
            let mut quota = state.get(&QuotaKey(q.account.clone()))?.unwrap_or_default();
            quota.explicit = q.quota_bytes;
            account_changed(cfg, state, &q.account, quota, &q.envelope)
        }
        StorageInput::Plan(p) if !cfg.plans.contains_key(&p.plan) => Ok(Decision::reject(format!(
            "PlanChanged {}: plan {:?} is not in consumers.storage.plans",
            p.envelope.event_id, p.plan
        ))),
        StorageInput::Plan(p) => {
            let mut quota = state.get(&QuotaKey(p.account.clone()))?.unwrap_or_default();
            let old_plan = quota.plan.replace(p.plan.clone());
            let used = state
                .get(&UsageKey(p.account.clone()))?
                .unwrap_or_default()
                .bytes;
            let mut d = account_changed(cfg, state, &p.account, quota, &p.envelope)?;
            if used > 0 && old_plan.as_deref() != Some(p.plan.as_str()) {
                let from = old_plan.as_deref().unwrap_or("");
                plan_bytes(cfg, state, &mut d, &p.account, Some(from), -used)?;
                plan_bytes(cfg, state, &mut d, &p.account, Some(&p.plan), used)?;
            }
            Ok(d)
        }
        StorageInput::Purge(p) if p.folder.eq_ignore_ascii_case("INBOX") => {
            Ok(Decision::reject(format!(
                "PurgeRequested {}: folder INBOX is never purged",
                p.envelope.event_id
            )))
        }
        StorageInput::Purge(_) => {
            let mut d = Decision::apply();
            d.intend(Plan::Purge);
            Ok(d)
        }
        StorageInput::Purged(p) => purged(cfg, state, p),
        StorageInput::DeleteMailbox(r) if r.step == DeletionStep::Maildir => {
            delete_mailbox(cfg, state, r)
        }
        StorageInput::DeleteMailbox(_) | StorageInput::Config(_) | StorageInput::Other(_) => {
            Ok(Decision::ignore())
        }
    }
}

fn scanned(
    cfg: &StorageConfig,
    state: &StateView<'_>,
    s: &MessageScanned,
) -> Result<Decision, StateError> {
    let key = DeliveredKey(delivery_id(s).to_string());
    if state.get(&key)?.is_some() {
        return Ok(Decision::ignore()); // a replay or an LMTP retry: done already
    }
    let mut d = Decision::apply();
    if s.verdict != ScanVerdict::Clean {
        d.put(&key, &Delivered::Quarantined);
        let path = quarantine_path(&s.blob_id);
        d.emit(
            &cfg.stored_topic,
            s.account.as_bytes(),
            quarantined(s, &path),
        );
        d.intend(Plan::Quarantine { path });
        return Ok(d);
    }
    let usage_key = UsageKey(s.account.clone());
    let usage = state.get(&usage_key)?.unwrap_or_default();
    let quota = account_quota(cfg, state, &s.account)?;
    // What lands in the Maildir: the message and the spam headers.
    let size = s.size.saturating_add(super::spam::added_bytes(s));
    if usage.bytes.saturating_add(size) > quota {
        d.put(&key, &Delivered::Rejected);
        over_quota(cfg, &mut d, s, usage, quota);
        return Ok(d);
    }
    let usage = Usage {
        bytes: usage.bytes + size,
        messages: usage.messages + 1,
    };
    d.put(&key, &Delivered::Stored).put(&usage_key, &usage);
    plan_bytes(cfg, state, &mut d, &s.account, None, size)?;
    d.emit(
        &cfg.usage_topic,
        s.account.as_bytes(),
        usage_event(cfg, &s.envelope, &s.account, usage, quota),
    );
    d.intend(Plan::Deliver);
    Ok(d)
}

fn over_quota(cfg: &StorageConfig, d: &mut Decision, s: &MessageScanned, usage: Usage, quota: i64) {
    let envelope = || Envelope::caused_by(&s.envelope, NAME);
    d.emit(
        &cfg.stored_topic,
        s.account.as_bytes(),
        MessageRejected {
            envelope: envelope(),
            account: s.account.clone(),
            delivery_id: delivery_id(s).to_string(),
            reason: RejectReason::OverQuota,
            size: s.size,
            used_bytes: usage.bytes,
            quota_bytes: quota,
            sender: s.sender.clone(),
            blob_id: s.blob_id.clone(),
            message_id: s.message_id.clone(),
            settings_hash: cfg.settings_hash.clone(),
        },
    );
    let params = [
        ("account".to_string(), s.account.clone()),
        ("size".to_string(), s.size.to_string()),
        ("used_bytes".to_string(), usage.bytes.to_string()),
        ("quota_bytes".to_string(), quota.to_string()),
        (
            "message_id".to_string(),
            s.message_id.clone().unwrap_or_default(),
        ),
    ];
    let mut tell = |to: &str, template: &str| {
        d.emit(
            &cfg.notify_topic,
            s.account.as_bytes(),
            NotificationRequested {
                envelope: envelope(),
                to: to.to_string(),
                template: template.into(),
                account: Some(s.account.clone()),
                params: params.clone().into(),
            },
        );
    };
    // Mail from the null sender is a notice or a bounce itself: telling
    // the full mailbox about it would be refused in turn, and loop.
    if !s.sender.is_empty() {
        tell(&s.account, "over-quota-recipient");
        tell(&s.sender, "over-quota-sender");
    }
}

fn quarantined(s: &MessageScanned, path: &str) -> MessageQuarantined {
    let (reason, detail) = match s.verdict {
        ScanVerdict::Infected => (
            QuarantineReason::Infected,
            s.signature.clone().unwrap_or_default(),
        ),
        ScanVerdict::Banned => (
            QuarantineReason::Banned,
            format!(
                "{} {}",
                s.file.as_deref().unwrap_or("?"),
                s.rule.as_deref().unwrap_or("?")
            ),
        ),
        ScanVerdict::Spam => (QuarantineReason::Spam, spam_detail(s)),
        _ => (
            QuarantineReason::Unknown,
            "verdict unknown to this writer".into(),
        ),
    };
    MessageQuarantined {
        envelope: Envelope::caused_by(&s.envelope, NAME),
        account: s.account.clone(),
        delivery_id: delivery_id(s).to_string(),
        reason,
        detail,
        path: path.to_string(),
        size: s.size,
        blob_id: s.blob_id.clone(),
        sender: s.sender.clone(),
        message_id: s.message_id.clone(),
    }
}

/// `score 1001.0/15.0 reject: GTUBE, MIME_GOOD`: what an admin needs to
/// judge a spam quarantine.
fn spam_detail(s: &MessageScanned) -> String {
    match &s.spam {
        Some(spam) => {
            let names: Vec<&str> = spam.symbols.iter().map(|t| t.name.as_str()).collect();
            format!(
                "score {:.1}/{:.1} {}: {}",
                spam.score,
                spam.required,
                spam.action.as_rspamd(),
                names.join(", ")
            )
        }
        None => "spam (no score recorded)".into(),
    }
}

/// `<h0h1>/<blob>.eml`: one copy per message, however many recipients.
pub fn quarantine_path(blob_id: &str) -> String {
    format!("{}/{blob_id}.eml", blob_id.get(..2).unwrap_or("00"))
}

fn account_quota(
    cfg: &StorageConfig,
    state: &StateView<'_>,
    account: &str,
) -> Result<i64, StateError> {
    let q = state
        .get(&QuotaKey(account.to_string()))?
        .unwrap_or_default();
    Ok(cfg.quota(q.plan.as_deref(), q.explicit))
}

fn account_changed(
    cfg: &StorageConfig,
    state: &StateView<'_>,
    account: &str,
    quota: AccountQuota,
    cause: &Envelope,
) -> Result<Decision, StateError> {
    let usage = state
        .get(&UsageKey(account.to_string()))?
        .unwrap_or_default();
    let bytes = cfg.quota(quota.plan.as_deref(), quota.explicit);
    let mut d = Decision::apply();
    d.put(&QuotaKey(account.to_string()), &quota);
    d.emit(
        &cfg.usage_topic,
        account.as_bytes(),
        usage_event(cfg, cause, account, usage, bytes),
    );
    Ok(d)
}

fn purged(
    cfg: &StorageConfig,
    state: &StateView<'_>,
    p: &MessagesPurged,
) -> Result<Decision, StateError> {
    if p.count == 0 {
        return Ok(Decision::ignore());
    }
    let key = UsageKey(p.account.clone());
    let before = state.get(&key)?.unwrap_or_default();
    let usage = Usage {
        bytes: (before.bytes - p.bytes).max(0),
        messages: (before.messages - p.count).max(0),
    };
    let quota = account_quota(cfg, state, &p.account)?;
    let mut d = Decision::apply();
    d.put(&key, &usage);
    d.emit(
        &cfg.usage_topic,
        p.account.as_bytes(),
        usage_event(cfg, &p.envelope, &p.account, usage, quota),
    );
    plan_bytes(
        cfg,
        state,
        &mut d,
        &p.account,
        None,
        usage.bytes - before.bytes,
    )?;
    Ok(d)
}

/// The deletion saga's Maildir step: forget the account's usage and quota
/// (its plan's byte total drops by what it used), tell the LMTP server's
/// projection it holds nothing, and have the effect remove the mailbox.
/// `Delivered` marks stay, so a replayed old delivery never recreates it.
/// A second request (a saga resumed after a crash) does the same again
/// harmlessly.
fn delete_mailbox(
    cfg: &StorageConfig,
    state: &StateView<'_>,
    r: &DeletionStepRequested,
) -> Result<Decision, StateError> {
    let usage = state.get(&UsageKey(r.account.clone()))?.unwrap_or_default();
    let mut d = Decision::apply();
    if usage.bytes > 0 {
        plan_bytes(cfg, state, &mut d, &r.account, None, -usage.bytes)?;
    }
    d.delete(&UsageKey(r.account.clone()))
        .delete(&QuotaKey(r.account.clone()));
    let quota = cfg.quota(None, None);
    d.emit(
        &cfg.usage_topic,
        r.account.as_bytes(),
        usage_event(cfg, &r.envelope, &r.account, Usage::default(), quota),
    );
    d.intend(Plan::DeleteMailbox);
    Ok(d)
}

/// Add `delta` to the bytes of a plan: `plan` if given (`""`: the default
/// plan), else the account's current one.
fn plan_bytes(
    cfg: &StorageConfig,
    state: &StateView<'_>,
    d: &mut Decision,
    account: &str,
    plan: Option<&str>,
    delta: i64,
) -> Result<(), StateError> {
    let plan = match plan {
        Some("") => cfg.default_plan.clone(),
        Some(plan) => plan.to_string(),
        None => state
            .get(&QuotaKey(account.to_string()))?
            .and_then(|q| q.plan)
            .unwrap_or_else(|| cfg.default_plan.clone()),
    };
    let key = PlanBytesKey(plan);
    let raw = key.to_key_bytes();
    // An earlier change in this decision (a plan move) comes first.
    let pending = d.changes.iter().rev().find(|(k, _)| *k == raw);
    let current = match pending {
        Some((_, Some(v))) => i64::from_bytes(v).unwrap_or(0),
        _ => state.get(&key)?.unwrap_or(0),
    };
    d.put(&key, &(current + delta).max(0));
    Ok(())
}

/// The plans whose byte totals this decision changed, with the new totals.
pub fn plan_bytes_changes(d: &Decision) -> Vec<(String, i64)> {
    d.changes
        .iter()
        .filter_map(|(k, v)| {
            let plan = k.strip_prefix(&[PlanBytesKey::PREFIX])?;
            let bytes = i64::from_bytes(v.as_deref()?).ok()?;
            Some((String::from_utf8_lossy(plan).into_owned(), bytes))
        })
        .collect()
}

fn usage_event(
    cfg: &StorageConfig,
    cause: &Envelope,
    account: &str,
    usage: Usage,
    quota: i64,
) -> UsageChanged {
    UsageChanged {
        envelope: Envelope::caused_by(cause, NAME),
        account: account.to_string(),
        used_bytes: usage.bytes,
        messages: usage.messages,
        quota_bytes: quota,
        over_quota: usage.bytes >= quota,
        settings_hash: cfg.settings_hash.clone(),
    }
}

#[cfg(test)]
mod tests;
