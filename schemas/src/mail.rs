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
    /// What the MX's Postfix said of its SMTP client (`XFORWARD`, v2); all
    /// `None` without it.
    pub client_address: Option<String>,
    pub client_name: Option<String>,
    pub client_helo: Option<String>,
    /// The MX's Postfix queue id.
    pub queue_id: Option<String>,
}
impl_event!(MessageReceived, "mailfleet.mail.MessageReceived");

/// Clean, a virus, banned by the attachment policy, or spam to quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScanVerdict {
    Clean,
    Infected,
    Banned,
    /// rspamd's action is one the scanner's mapping quarantines (v2).
    Spam,
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
    /// rspamd's answer (v2); `None` when it was not asked or did not answer.
    pub spam: Option<SpamResult>,
    /// Why the message is unscored when rspamd was asked and did not
    /// answer (v2).
    pub spam_error: Option<String>,
}
impl_event!(MessageScanned, "mailfleet.mail.MessageScanned");

/// The action rspamd chose for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpamAction {
    NoAction,
    Greylist,
    AddHeader,
    RewriteSubject,
    SoftReject,
    Reject,
    /// A symbol this reader does not know.
    Unknown,
}

impl SpamAction {
    /// rspamd's own name for it (`add header`).
    pub fn as_rspamd(self) -> &'static str {
        match self {
            Self::NoAction => "no action",
            Self::Greylist => "greylist",
            Self::AddHeader => "add header",
            Self::RewriteSubject => "rewrite subject",
            Self::SoftReject => "soft reject",
            Self::Reject => "reject",
            Self::Unknown => "unknown",
        }
    }

    /// From rspamd's name; `None` for a name it does not use.
    pub fn from_rspamd(name: &str) -> Option<Self> {
        Some(match name {
            "no action" => Self::NoAction,
            "greylist" => Self::Greylist,
            "add header" => Self::AddHeader,
            "rewrite subject" => Self::RewriteSubject,
            "soft reject" => Self::SoftReject,
            "reject" => Self::Reject,
            _ => return None,
        })
    }
}

/// One rspamd rule that fired on a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpamSymbol {
    pub name: String,
    pub score: f64,
}

/// rspamd's answer on one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpamResult {
    pub action: SpamAction,
    pub score: f64,
    /// The score at which rspamd rejects.
    pub required: f64,
    /// Highest absolute score first, bounded in count.
    pub symbols: Vec<SpamSymbol>,
    /// The scanner's mapping calls it spam: the Spam folder, flagged.
    pub flagged: bool,
}

// Scores are finite numbers from rspamd's JSON, never NaN.
impl Eq for SpamResult {}
impl Eq for SpamSymbol {}

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
    /// rspamd rejected it (v2).
    Spam,
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

/// What a message was taught to rspamd as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpamClass {
    Spam,
    Ham,
    /// A symbol this reader does not know.
    Unknown,
}

/// rspamd's answer to one learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LearnOutcome {
    Learned,
    /// Already learned as this class (rspamd's 208).
    AlreadyLearned,
    /// Not learned: the detail says why (too few tokens, ...).
    Refused,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.mail.SpamLearned`: one message of a user's folder taught to
/// rspamd; the bytes are in the blob store, so the log can teach again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpamLearned {
    pub envelope: Envelope,
    pub account: String,
    pub folder: String,
    /// The Maildir file's base name.
    pub file: String,
    pub blob_id: String,
    pub size: i64,
    pub message_id: Option<String>,
    pub class: SpamClass,
    pub outcome: LearnOutcome,
    pub detail: Option<String>,
    /// `cli:<user>`, `api` or `imapsieve`.
    pub requested_by: String,
}
impl_event!(SpamLearned, "mailfleet.mail.SpamLearned");
