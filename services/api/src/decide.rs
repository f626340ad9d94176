//! The API's rules, without I/O: which request an account's state allows.
//! The lifecycle consumer owns the status; these checks only refuse
//! requests that cannot mean anything in the status the projection shows
//! (so an admin gets a clear 409 instead of an event the lifecycle
//! ignores).

use mailfleet_events::accounts::AccountStatus;

use super::{errors::ApiError, projection::Account, wire::status_name};

/// A registration is refused while a live account has the address; after
/// the `AccountDeleted` tombstone the address is free again (the lifecycle
/// forgets the account too).
pub fn may_register(account: &str, found: Option<&Account>) -> Result<(), ApiError> {
    match found {
        Some(a) if a.status != AccountStatus::Deleted => Err(ApiError::Conflict(format!(
            "account {account} already exists (status {})",
            status_name(a.status)
        ))),
        _ => Ok(()),
    }
}

/// The account, or 404 naming it.
pub fn existing(account: &str, found: Option<Account>) -> Result<Account, ApiError> {
    found.ok_or_else(|| ApiError::NotFound {
        account: account.to_string(),
    })
}

/// Plan and quota changes need an account that is not being deleted.
pub fn may_change(a: &Account) -> Result<(), ApiError> {
    match a.status {
        AccountStatus::Deleting | AccountStatus::Deleted => Err(conflict(a, "change it")),
        _ => Ok(()),
    }
}

/// Whether the account may log in; `Err` is the refusal's reason, which is
/// the status (the `LoginFailed.reason` and the 403's text).
pub fn may_log_in(a: &Account) -> Result<(), &'static str> {
    match a.status {
        AccountStatus::Blocked | AccountStatus::Deleting | AccountStatus::Deleted => {
            Err(status_name(a.status))
        }
        _ => Ok(()),
    }
}

/// An admin block applies to the statuses the lifecycle blocks from.
pub fn may_block(a: &Account) -> Result<(), ApiError> {
    match a.status {
        AccountStatus::Pending | AccountStatus::Active | AccountStatus::Inactive => Ok(()),
        _ => Err(conflict(a, "block it")),
    }
}

/// Only a blocked account can be unblocked.
pub fn may_unblock(a: &Account) -> Result<(), ApiError> {
    match a.status {
        AccountStatus::Blocked => Ok(()),
        _ => Err(conflict(a, "unblock it (only a blocked account can be)")),
    }
}

/// Only an inactive account (in its grace period) can be reactivated.
pub fn may_reactivate(a: &Account) -> Result<(), ApiError> {
    match a.status {
        AccountStatus::Inactive => Ok(()),
        _ => Err(conflict(
            a,
            "reactivate it (only an inactive account can be)",
        )),
    }
}

fn conflict(a: &Account, what: &str) -> ApiError {
    ApiError::Conflict(format!(
        "account {} is {}: cannot {what}",
        a.account,
        status_name(a.status)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(status: AccountStatus) -> Account {
        Account {
            account: "bob@x.test".into(),
            status,
            plan: "free".into(),
            quota_bytes: None,
            password_hash: String::new(),
            display_name: None,
            registered_at: 0,
            last_login: None,
        }
    }

    #[test]
    fn api_rules_allow_each_request_only_in_its_statuses() {
        use AccountStatus::*;
        let all = [Pending, Active, Inactive, Blocked, Deleting, Deleted];
        let allowed = |f: &dyn Fn(&Account) -> bool| -> Vec<AccountStatus> {
            all.into_iter().filter(|s| f(&account(*s))).collect()
        };
        assert_eq!(
            allowed(&|a| may_log_in(a).is_ok()),
            [Pending, Active, Inactive]
        );
        assert_eq!(
            allowed(&|a| may_block(a).is_ok()),
            [Pending, Active, Inactive]
        );
        assert_eq!(allowed(&|a| may_unblock(a).is_ok()), [Blocked]);
        assert_eq!(allowed(&|a| may_reactivate(a).is_ok()), [Inactive]);
        assert_eq!(
            allowed(&|a| may_change(a).is_ok()),
            [Pending, Active, Inactive, Blocked]
        );
        assert_eq!(
            allowed(&|a| may_register("bob@x.test", Some(a)).is_ok()),
            [Deleted]
        );
        assert!(may_register("bob@x.test", None).is_ok());
    }

    #[test]
    fn api_refusals_name_the_account_and_its_status() {
        let err = may_reactivate(&account(AccountStatus::Active)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "account bob@x.test is active: cannot reactivate it (only an inactive account can be)"
        );
        let err = may_register("bob@x.test", Some(&account(AccountStatus::Blocked))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "account bob@x.test already exists (status blocked)"
        );
        assert_eq!(
            may_log_in(&account(AccountStatus::Deleting)),
            Err("deleting")
        );
        let err = existing("nobody@x.test", None).unwrap_err();
        assert_eq!(err.to_string(), "no account nobody@x.test");
    }
}
