//! Account events. (The accounts issue adds registration, logins and the
//! lifecycle; the scanner already blocks senders of viruses.)

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// Why an account was blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BlockReason {
    Virus,
    Admin,
    Abuse,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.accounts.AccountBlocked`: no sending or login until unblocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBlocked {
    pub envelope: Envelope,
    /// Lower-cased address: the record key.
    pub account: String,
    pub reason: BlockReason,
    pub message_id: Option<String>,
    pub blob_id: Option<String>,
    /// For people: the signature or the admin's note.
    pub detail: String,
}
impl_event!(AccountBlocked, "mailfleet.accounts.AccountBlocked");

/// `mailfleet.accounts.QuotaChanged`: an explicit quota, or back to the plan's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaChanged {
    pub envelope: Envelope,
    pub account: String,
    pub quota_bytes: Option<i64>,
}
impl_event!(QuotaChanged, "mailfleet.accounts.QuotaChanged");

/// `mailfleet.accounts.PlanChanged`: the account's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChanged {
    pub envelope: Envelope,
    pub account: String,
    pub plan: String,
}
impl_event!(PlanChanged, "mailfleet.accounts.PlanChanged");

/// `mailfleet.accounts.UsageChanged`: storage use, the latest per account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageChanged {
    pub envelope: Envelope,
    pub account: String,
    pub used_bytes: i64,
    pub messages: i64,
    pub quota_bytes: i64,
    pub over_quota: bool,
    /// The hash of the storage writer's settings in force it was decided
    /// with; `None` before any was recorded.
    pub settings_hash: Option<String>,
}
impl_event!(UsageChanged, "mailfleet.accounts.UsageChanged");

/// Where a login happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoginChannel {
    Webmail,
    Activesync,
    Syncml,
    Imap,
    /// A symbol this reader does not know.
    Unknown,
}

/// An account's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountStatus {
    Pending,
    Active,
    Inactive,
    Deleting,
    Deleted,
    Blocked,
    /// A symbol this reader does not know.
    Unknown,
}

impl AccountStatus {
    /// Whether an account in this status takes mail: pending and active
    /// ones. The one rule behind both the LMTP RCPT check and the Postfix
    /// recipient map, so the two never disagree. A blocked account takes
    /// none (the block is for abuse or a compromise: its mailbox is
    /// disabled, not only its sending); an inactive one takes none either,
    /// save the null-sender exception the LMTP server makes for its
    /// deactivation notice.
    pub fn takes_mail(self) -> bool {
        matches!(self, Self::Pending | Self::Active)
    }
}

/// `mailfleet.accounts.AccountRegistered`: a new account (hash only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRegistered {
    pub envelope: Envelope,
    pub account: String,
    /// e.g. `{SSHA512}...`; never the password.
    pub password_hash: String,
    pub plan: String,
    pub display_name: Option<String>,
}
impl_event!(AccountRegistered, "mailfleet.accounts.AccountRegistered");

/// `mailfleet.accounts.LoginRecorded`: a successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRecorded {
    pub envelope: Envelope,
    pub account: String,
    pub channel: LoginChannel,
    pub ip: Option<String>,
}
impl_event!(LoginRecorded, "mailfleet.accounts.LoginRecorded");

/// `mailfleet.accounts.LoginFailed`: a failed login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFailed {
    pub envelope: Envelope,
    pub account: String,
    pub channel: LoginChannel,
    pub ip: Option<String>,
    pub reason: String,
}
impl_event!(LoginFailed, "mailfleet.accounts.LoginFailed");

/// `mailfleet.accounts.AccountStatusChanged`: one lifecycle transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatusChanged {
    pub envelope: Envelope,
    pub account: String,
    pub from: AccountStatus,
    pub to: AccountStatus,
    pub reason: String,
    /// The hash of the lifecycle settings in force (`ConfigChanged`) it
    /// was decided with; `None` before any was recorded.
    pub settings_hash: Option<String>,
}
impl_event!(
    AccountStatusChanged,
    "mailfleet.accounts.AccountStatusChanged"
);

/// `mailfleet.accounts.AccountUnblocked`: an admin lifted a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUnblocked {
    pub envelope: Envelope,
    pub account: String,
    pub by: String,
    pub note: String,
}
impl_event!(AccountUnblocked, "mailfleet.accounts.AccountUnblocked");

/// `mailfleet.accounts.AccountReactivated`: answered within the grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountReactivated {
    pub envelope: Envelope,
    pub account: String,
    pub by: String,
}
impl_event!(AccountReactivated, "mailfleet.accounts.AccountReactivated");

/// `mailfleet.accounts.AccountDeleted`: the tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDeleted {
    pub envelope: Envelope,
    pub account: String,
    pub reason: String,
}
impl_event!(AccountDeleted, "mailfleet.accounts.AccountDeleted");

/// `mailfleet.accounts.AccountPasswordChanged`: a new password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPasswordChanged {
    pub envelope: Envelope,
    pub account: String,
    /// `{SCHEME}...` as slapd stores it; never the password.
    pub password_hash: String,
    pub reason: String,
}
impl_event!(
    AccountPasswordChanged,
    "mailfleet.accounts.AccountPasswordChanged"
);

/// A step of the deletion saga, in the order the deleter runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeletionStep {
    /// The Maildir, by the storage writer.
    Maildir,
    /// The index entries, by the indexer.
    Index,
    /// The LDAP subtree, by the directory effector.
    Directory,
    /// The blob references, by the deleter.
    Blobs,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.accounts.DeletionStepRequested`: the saga asks for one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionStepRequested {
    pub envelope: Envelope,
    pub account: String,
    pub step: DeletionStep,
    pub attempt: i32,
}
impl_event!(
    DeletionStepRequested,
    "mailfleet.accounts.DeletionStepRequested"
);

/// `mailfleet.accounts.DeletionStepCompleted`: one step is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionStepCompleted {
    pub envelope: Envelope,
    pub account: String,
    pub step: DeletionStep,
    /// What was removed: counts, bytes, the DN.
    pub detail: String,
}
impl_event!(
    DeletionStepCompleted,
    "mailfleet.accounts.DeletionStepCompleted"
);

/// `mailfleet.accounts.MigrationStarted`: a copy to a paid cluster began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStarted {
    pub envelope: Envelope,
    pub account: String,
    pub target_mail_root: String,
    pub target_ldap_base: String,
    pub by: String,
}
impl_event!(MigrationStarted, "mailfleet.accounts.MigrationStarted");

/// `mailfleet.accounts.MigrationCompleted`: the copy is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCompleted {
    pub envelope: Envelope,
    pub account: String,
    pub target_mail_root: String,
    pub target_ldap_base: String,
    pub messages: i64,
    pub bytes: i64,
    pub entries: i64,
    /// `printed` or `mailed`: never the token.
    pub token_delivery: String,
}
impl_event!(MigrationCompleted, "mailfleet.accounts.MigrationCompleted");
