//! Mail events: a message accepted over LMTP, and the scanner's verdict.

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// The MAIL FROM `BODY=` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BodyType {
    SevenBit,
    EightBitMime,
    BinaryMime,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.mail.MessageReceived`: one recipient of one accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReceived {
    pub envelope: Envelope,
    /// Lower-cased recipient address: the record key.
    pub account: String,
    /// As given in RCPT TO.
    pub recipient: String,
    /// MAIL FROM; empty for the null sender.
    pub sender: String,
    /// sha256 hex of the raw message: its blob-store key.
    pub blob_id: String,
    pub size: i64,
    /// Accepted at, ms since the epoch.
    pub received_at: i64,
    pub body_type: BodyType,
    pub lhlo: String,
    /// The LMTP transaction.
    pub session_id: String,
    pub recipient_count: i32,
    /// Place in the transaction, from 0.
    pub recipient_index: i32,
    pub message_id: Option<String>,
    pub header_from: Option<String>,
    pub subject: Option<String>,
    pub header_date: Option<String>,
}
impl_event!(MessageReceived, "mailfleet.mail.MessageReceived");

/// Clean, a virus, or banned by the attachment policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScanVerdict {
    Clean,
    Infected,
    Banned,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.mail.MessageScanned`: the verdict on one MessageReceived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageScanned {
    pub envelope: Envelope,
    pub account: String,
    pub recipient: String,
    pub sender: String,
    pub blob_id: String,
    pub size: i64,
    pub received_at: i64,
    pub message_id: Option<String>,
    pub verdict: ScanVerdict,
    /// Infected: the signature.
    pub signature: Option<String>,
    /// Banned: the decoded file name.
    pub file: Option<String>,
    /// Banned: the policy rule.
    pub rule: Option<String>,
    /// The clamd version string, or `policy-only`.
    pub scanner: String,
}
impl_event!(MessageScanned, "mailfleet.mail.MessageScanned");

/// `mailfleet.mail.MessageStored`: a clean message is in the Maildir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageStored {
    pub envelope: Envelope,
    pub account: String,
    /// The MessageReceived id: the idempotence key.
    pub delivery_id: String,
    /// IMAP folder: INBOX, Spam, ...
    pub folder: String,
    /// The Maildir file name in `new/`.
    pub file: String,
    pub size: i64,
    pub stored_bytes: i64,
    pub blob_id: String,
    pub received_at: i64,
    pub message_id: Option<String>,
}
impl_event!(MessageStored, "mailfleet.mail.MessageStored");

/// Why a message is in quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QuarantineReason {
    Infected,
    Banned,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.mail.MessageQuarantined`: kept for admins only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageQuarantined {
    pub envelope: Envelope,
    pub account: String,
    pub delivery_id: String,
    pub reason: QuarantineReason,
    pub detail: String,
    /// Relative to the quarantine folder.
    pub path: String,
    pub size: i64,
    pub blob_id: String,
    pub sender: String,
    pub message_id: Option<String>,
}
impl_event!(MessageQuarantined, "mailfleet.mail.MessageQuarantined");

/// Why a message was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    OverQuota,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.mail.MessageRejected`: not written (over quota).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRejected {
    pub envelope: Envelope,
    pub account: String,
    pub delivery_id: String,
    pub reason: RejectReason,
    pub size: i64,
    pub used_bytes: i64,
    pub quota_bytes: i64,
    pub sender: String,
    pub blob_id: String,
    pub message_id: Option<String>,
    /// The hash of the storage writer's settings in force it was decided
    /// with; `None` before any was recorded.
    pub settings_hash: Option<String>,
}
impl_event!(MessageRejected, "mailfleet.mail.MessageRejected");

/// `mailfleet.mail.PurgeRequested`: clean a folder out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRequested {
    pub envelope: Envelope,
    pub account: String,
    pub folder: String,
    /// Only messages received before this (ms); `None`: all.
    pub received_before: Option<i64>,
    pub job: String,
}
impl_event!(PurgeRequested, "mailfleet.mail.PurgeRequested");

/// `mailfleet.mail.MessagesPurged`: what a purge removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesPurged {
    pub envelope: Envelope,
    pub account: String,
    pub folder: String,
    pub count: i64,
    pub bytes: i64,
    /// Base names of the removed files.
    pub files: Vec<String>,
    pub job: String,
}
impl_event!(MessagesPurged, "mailfleet.mail.MessagesPurged");

/// `mailfleet.mail.MailboxDeleted`: an account's whole mailbox is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxDeleted {
    pub envelope: Envelope,
    pub account: String,
    pub files: i64,
    pub bytes: i64,
    pub reason: String,
}
impl_event!(MailboxDeleted, "mailfleet.mail.MailboxDeleted");
