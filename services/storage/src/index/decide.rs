//! The indexer's pure decider: stored, purged and quarantined messages in,
//! the per-account index out.

use mailfleet_events::{
    accounts::{DeletionStep, DeletionStepCompleted},
    mail::{MailboxDeleted, MessageQuarantined, MessageStored, MessagesPurged},
    Envelope,
};
use mailfleet_runtime::{Decision, StateError, StateKey, StateView};

use super::state::{
    FolderKey, MessageEntry, MessageKey, QuarantineKey, QuarantinedKey, StatsKey, Tally, TotalKey,
};
use crate::maildir::parse_name;

mailfleet_runtime::inputs! {
    /// What the indexer reads.
    #[derive(Debug)]
    pub enum IndexInput {
        Stored(MessageStored),
        Purged(MessagesPurged),
        Quarantined(MessageQuarantined),
        /// The account's whole mailbox is gone (the deletion saga).
        MailboxDeleted(MailboxDeleted),
        _ => Other,
    }
}

/// Decide one input; `accounts_topic` takes the deletion saga's
/// `DeletionStepCompleted { INDEX }`.
pub fn decide(
    state: &StateView<'_>,
    input: &IndexInput,
    accounts_topic: &str,
) -> Result<Decision, StateError> {
    match input {
        IndexInput::Stored(s) if s.size < 0 => Ok(Decision::reject(format!(
            "MessageStored {}: size {} is negative",
            s.envelope.event_id, s.size
        ))),
        IndexInput::Stored(s) => stored(state, s),
        IndexInput::Purged(p) => purged(state, p),
        IndexInput::Quarantined(q) => quarantined(state, q),
        IndexInput::MailboxDeleted(m) => mailbox_deleted(state, m, accounts_topic),
        IndexInput::Other(_) => Ok(Decision::ignore()),
    }
}

fn stored(state: &StateView<'_>, s: &MessageStored) -> Result<Decision, StateError> {
    let key = MessageKey {
        account: s.account.clone(),
        base: parse_name(&s.file).base.to_string(),
    };
    if state.get(&key)?.is_some() {
        return Ok(Decision::ignore()); // the same file reported again
    }
    let mut d = Decision::apply();
    let entry = MessageEntry {
        folder: s.folder.clone(),
        size: s.size,
        received_at: s.received_at,
        file: s.file.clone(),
    };
    d.put(&key, &entry);
    let delta = Tally {
        count: 1,
        bytes: s.size,
    };
    adjust(
        state,
        &mut d,
        &s.account,
        &[(s.folder.clone(), delta)].into(),
    )?;
    Ok(d)
}

fn purged(state: &StateView<'_>, p: &MessagesPurged) -> Result<Decision, StateError> {
    let mut d = Decision::apply();
    let mut per_folder: std::collections::BTreeMap<String, Tally> = Default::default();
    for base in &p.files {
        let key = MessageKey {
            account: p.account.clone(),
            base: base.clone(),
        };
        let Some(entry) = state.get(&key)? else {
            continue; // never indexed (put there by hand): nothing to undo
        };
        d.delete(&key);
        let delta = per_folder.entry(entry.folder).or_default();
        delta.count -= 1;
        delta.bytes -= entry.size;
    }
    if per_folder.is_empty() {
        return Ok(Decision::ignore());
    }
    adjust(state, &mut d, &p.account, &per_folder)?;
    Ok(d)
}

fn quarantined(state: &StateView<'_>, q: &MessageQuarantined) -> Result<Decision, StateError> {
    let seen = QuarantinedKey(q.delivery_id.clone());
    if state.get(&seen)?.is_some() {
        return Ok(Decision::ignore());
    }
    let key = QuarantineKey(q.account.clone());
    let tally = state.get(&key)?.unwrap_or_default().plus_one(q.size);
    let mut d = Decision::apply();
    d.put(&seen, &()).put(&key, &tally);
    Ok(d)
}

/// Forget every row of the account (messages, folders, total,
/// quarantine tally), take its total off the partition's stats, and tell
/// the deletion saga. Done again on a repeated request, harmlessly.
fn mailbox_deleted(
    state: &StateView<'_>,
    m: &MailboxDeleted,
    accounts_topic: &str,
) -> Result<Decision, StateError> {
    let mut d = Decision::apply();
    let mut body = m.account.as_bytes().to_vec();
    body.push(0);
    let mut rows = 0;
    for (key, _) in state.scan_prefix::<MessageKey>(&body)? {
        d.changes.push((prefixed(MessageKey::PREFIX, &key), None));
        rows += 1;
    }
    for (key, _) in state.scan_prefix::<FolderKey>(&body)? {
        d.changes.push((prefixed(FolderKey::PREFIX, &key), None));
    }
    let total_key = TotalKey(m.account.clone());
    let total = state.get(&total_key)?.unwrap_or_default();
    if total != Tally::default() {
        let stats = state.get(&StatsKey)?.unwrap_or_default();
        d.put(
            &StatsKey,
            &stats.shift(Tally {
                count: -total.count,
                bytes: -total.bytes,
            }),
        );
    }
    d.delete(&total_key)
        .delete(&QuarantineKey(m.account.clone()));
    d.emit(
        accounts_topic,
        m.account.as_bytes(),
        DeletionStepCompleted {
            envelope: Envelope::caused_by(&m.envelope, super::NAME),
            account: m.account.clone(),
            step: DeletionStep::Index,
            detail: format!("forgot {rows} messages ({} bytes)", total.bytes),
        },
    );
    Ok(d)
}

fn prefixed(table: u8, body: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(body.len() + 1);
    key.push(table);
    key.extend_from_slice(body);
    key
}

/// Shift folder tallies, the account's total and the partition's stats
/// by the per-folder changes.
fn adjust(
    state: &StateView<'_>,
    d: &mut Decision,
    account: &str,
    per_folder: &std::collections::BTreeMap<String, Tally>,
) -> Result<(), StateError> {
    let mut sum = Tally::default();
    for (folder, delta) in per_folder {
        let key = FolderKey {
            account: account.to_string(),
            folder: folder.clone(),
        };
        let tally = state.get(&key)?.unwrap_or_default().shift(*delta);
        d.put(&key, &tally);
        sum = Tally {
            count: sum.count + delta.count,
            bytes: sum.bytes + delta.bytes,
        };
    }
    let total_key = TotalKey(account.to_string());
    let total = state.get(&total_key)?.unwrap_or_default().shift(sum);
    let stats = state.get(&StatsKey)?.unwrap_or_default().shift(sum);
    d.put(&total_key, &total).put(&StatsKey, &stats);
    Ok(())
}

/// The partition's index size, if this decision changed it.
pub fn stats_change(d: &Decision) -> Option<Tally> {
    use mailfleet_runtime::StateValue;
    let key = StatsKey.to_key_bytes();
    d.changes
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| Tally::from_bytes(v.as_deref()?).ok())
}

#[cfg(test)]
mod tests;
