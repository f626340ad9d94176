//! The submission path: what the service's own users send, authenticated
//! with SMTP AUTH. The policy server asks about each recipient
//! ([`SubmissionAttempted`]), the outbound limits consumer answers
//! ([`SubmissionDecided`]), and the submission filter reports each scanned
//! message ([`MessageSubmitted`]). All three are keyed by account.

use serde::{Deserialize, Serialize};

use crate::{impl_event, mail::ScanVerdict, Envelope};

/// `mailfleet.submission.SubmissionAttempted`: Postfix asked about one
/// recipient of an authenticated submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionAttempted {
    pub envelope: Envelope,
    /// The lower-cased SASL login: the record key.
    pub account: String,
    /// The SASL login as Postfix gave it.
    pub sasl_username: String,
    /// MAIL FROM; empty for the null sender.
    pub sender: String,
    pub recipient: String,
    pub client_address: String,
    pub client_name: String,
    /// Declared SIZE in bytes, or 0.
    pub size: i64,
    /// Postfix queue id; may be empty.
    pub queue_id: String,
    /// Postfix's policy `instance`: one per message.
    pub instance: String,
    /// The policy server that asked, to route the reply.
    pub policy_host: String,
}
impl_event!(
    SubmissionAttempted,
    "mailfleet.submission.SubmissionAttempted"
);

/// Let through or deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LimitAction {
    Pass,
    Defer,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.submission.SubmissionDecided`: the outbound limits'
/// answer to one attempt (`causation_id` is the attempt's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionDecided {
    pub envelope: Envelope,
    pub account: String,
    pub recipient: String,
    pub action: LimitAction,
    /// DEFER: the limit reached (`recipients_per_hour`, ...).
    pub limit: Option<String>,
    /// The policy action text: `DUNNO`, or `DEFER 4.7.1 ...`.
    pub reply: String,
    pub recipients_last_hour: i64,
    pub distinct_recipients_last_day: i64,
    pub messages_last_day: i64,
    pub bytes_last_day: i64,
    /// The plan whose limits applied.
    pub plan: String,
    pub policy_host: String,
    /// The hash of the settings in force (`ConfigChanged`); `None`
    /// before any was recorded.
    pub settings_hash: Option<String>,
}
impl_event!(SubmissionDecided, "mailfleet.submission.SubmissionDecided");

/// What became of a submitted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubmitAction {
    /// Queued for relay.
    Accepted,
    /// Refused to the sender.
    Rejected,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.submission.MessageSubmitted`: the submission filter's scan
/// of one message from an authenticated account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSubmitted {
    pub envelope: Envelope,
    /// The lower-cased SASL login ({auth_authen}): the record key.
    pub account: String,
    pub sasl_username: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub size: i64,
    /// Postfix queue id; may be empty.
    pub queue_id: String,
    pub message_id: Option<String>,
    pub client_address: String,
    pub verdict: ScanVerdict,
    /// Infected: the signature.
    pub signature: Option<String>,
    /// Banned: the decoded file name.
    pub file: Option<String>,
    /// Banned: the policy rule.
    pub rule: Option<String>,
    /// The clamd version string, or `policy-only`.
    pub scanner: String,
    pub action: SubmitAction,
}
impl_event!(MessageSubmitted, "mailfleet.submission.MessageSubmitted");
