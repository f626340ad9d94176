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
}
impl_event!(UsageChanged, "mailfleet.accounts.UsageChanged");
