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
