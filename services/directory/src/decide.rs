//! The directory's pure part: what an account event asks of the LDAP
//! directory ([`Intent`]), handed to the effect by `Decision::intend`.
//!
//! | event                                   | intent                               |
//! |-----------------------------------------|--------------------------------------|
//! | AccountRegistered                       | add the entry (pending) + children   |
//! | AccountStatusChanged { to }             | set mailfleetStatus = lower(to); `DELETED`: nothing to set |
//! | QuotaChanged / PlanChanged              | set mailfleetQuota / mailfleetPlan   |
//! | AccountPasswordChanged                  | set userPassword (the hash)          |
//! | DeletionStepRequested { DIRECTORY }     | delete the subtree, report it        |
//! | anything else                           | ignored                              |
//!
//! State: one marker per account that is being deleted (`DELETING`, a
//! deletion step, the tombstone), cleared by a new registration, so that a
//! change reaching an already removed entry is no error.

use mailfleet_events::accounts::{
    AccountDeleted, AccountPasswordChanged, AccountRegistered, AccountStatus, AccountStatusChanged,
    DeletionStep, DeletionStepRequested, PlanChanged, QuotaChanged,
};
use mailfleet_runtime::{Decision, StateError, StateKey, StateView};

use super::{
    entry::{Change, NewAccount},
    DirectoryError,
};

mailfleet_runtime::inputs! {
    /// Everything the directory reads from `accounts.events`. Any other
    /// event on the topic (logins, ticks, our own outputs) is `Other`:
    /// ignored.
    #[derive(Debug)]
    pub enum DirectoryInput {
        Registered(AccountRegistered),
        StatusChanged(AccountStatusChanged),
        Quota(QuotaChanged),
        Plan(PlanChanged),
        Password(AccountPasswordChanged),
        DeletionStep(DeletionStepRequested),
        /// The tombstone.
        Deleted(AccountDeleted),
        _ => Other,
    }
}

/// What the effect is to do for one account (the lower-cased address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Add the entry and its children, or bring existing ones in line.
    Add(NewAccount),
    /// Change the entry. `gone`: the account is being deleted, so a
    /// missing entry is expected, not a fault.
    Modify {
        account: String,
        change: Change,
        gone: bool,
    },
    /// Delete the entry and everything below it, and report it.
    DeleteSubtree { account: String },
}

/// `g` + account: the account is being deleted (or was).
pub struct GoneKey<'a>(pub &'a str);

impl StateKey for GoneKey<'_> {
    type Value = ();
    const PREFIX: u8 = b'g';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

/// Decide one input.
pub fn decide(state: &StateView<'_>, input: &DirectoryInput) -> Result<Decision, StateError> {
    let (account, envelope) = match input {
        DirectoryInput::Other(_) => return Ok(Decision::ignore()),
        DirectoryInput::Registered(e) => (&e.account, &e.envelope),
        DirectoryInput::StatusChanged(e) => (&e.account, &e.envelope),
        DirectoryInput::Quota(e) => (&e.account, &e.envelope),
        DirectoryInput::Plan(e) => (&e.account, &e.envelope),
        DirectoryInput::Password(e) => (&e.account, &e.envelope),
        DirectoryInput::DeletionStep(e) => (&e.account, &e.envelope),
        DirectoryInput::Deleted(e) => (&e.account, &e.envelope),
    };
    let account = account.trim().to_lowercase();
    if account.is_empty() {
        return Ok(Decision::reject(format!(
            "event {}: the account is empty",
            envelope.event_id
        )));
    }
    let gone = state.get(&GoneKey(&account))?.is_some();
    let modify = |change| {
        let mut d = Decision::apply();
        d.intend(Intent::Modify {
            account: account.clone(),
            change,
            gone,
        });
        d
    };
    Ok(match input {
        DirectoryInput::Registered(e) => registered(e, &account, gone),
        DirectoryInput::StatusChanged(e) => status_changed(e, &account, gone),
        DirectoryInput::Quota(e) => match e.quota_bytes {
            Some(q) if q < 0 => Decision::reject(format!(
                "QuotaChanged {} for {account}: quota_bytes = {q} is negative",
                e.envelope.event_id
            )),
            q => modify(Change::Quota(q)),
        },
        DirectoryInput::Plan(e) => modify(Change::Plan(e.plan.clone())),
        DirectoryInput::Password(e) => match check_hash(&e.password_hash) {
            Ok(()) => modify(Change::Password(e.password_hash.clone())),
            Err(why) => Decision::reject(format!(
                "AccountPasswordChanged {} for {account}: {why}",
                e.envelope.event_id
            )),
        },
        DirectoryInput::DeletionStep(e) => {
            let mut d = mark_gone(&account, gone);
            if e.step == DeletionStep::Directory {
                d.intend(Intent::DeleteSubtree {
                    account: account.clone(),
                });
            }
            d
        }
        DirectoryInput::Deleted(_) => mark_gone(&account, gone),
        DirectoryInput::Other(_) => Decision::ignore(),
    })
}

fn registered(e: &AccountRegistered, account: &str, gone: bool) -> Decision {
    if let Err(why) = check_hash(&e.password_hash) {
        return Decision::reject(format!(
            "AccountRegistered {} for {account}: {why}",
            e.envelope.event_id
        ));
    }
    let mut d = Decision::apply();
    if gone {
        // Registered again after a deletion: a new account.
        d.delete(&GoneKey(account));
    }
    d.intend(Intent::Add(NewAccount {
        account: account.to_string(),
        password_hash: e.password_hash.clone(),
        plan: e.plan.clone(),
        display_name: e.display_name.clone(),
        status: "pending".into(),
    }));
    d
}

fn status_changed(e: &AccountStatusChanged, account: &str, gone: bool) -> Decision {
    let status = match e.to {
        AccountStatus::Pending => "pending",
        AccountStatus::Active => "active",
        AccountStatus::Inactive => "inactive",
        AccountStatus::Blocked => "blocked",
        AccountStatus::Deleting => "deleting",
        // The subtree is gone by then (the saga's DIRECTORY step).
        AccountStatus::Deleted => return mark_gone(account, gone),
        AccountStatus::Unknown => {
            return Decision::reject(format!(
                "AccountStatusChanged {} for {account}: status {:?} is unknown to this reader",
                e.envelope.event_id, e.to
            ))
        }
    };
    let mut d = if e.to == AccountStatus::Deleting {
        mark_gone(account, gone)
    } else {
        Decision::apply()
    };
    d.intend(Intent::Modify {
        account: account.to_string(),
        change: Change::Status(status.into()),
        gone: gone || e.to == AccountStatus::Deleting,
    });
    d
}

/// Apply, recording that the account is being deleted (once).
fn mark_gone(account: &str, gone: bool) -> Decision {
    let mut d = Decision::apply();
    if !gone {
        d.put(&GoneKey(account), &());
    }
    d
}

/// A stored password must be a `{SCHEME}value` hash: slapd would take
/// anything else as a clear-text password. The value is never shown.
fn check_hash(hash: &str) -> Result<(), DirectoryError> {
    let scheme_end = hash.strip_prefix('{').and_then(|rest| rest.find('}'));
    match scheme_end {
        Some(end) if end > 0 && hash.len() > end + 2 => Ok(()),
        _ => Err(DirectoryError::PasswordHash),
    }
}

#[cfg(test)]
mod tests;
