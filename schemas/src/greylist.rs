//! Greylisting events: the policy server's question and the greylist
//! consumer's answer, and the [`triplet`] key both sides compute from it.

pub mod triplet;

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// `mailfleet.greylist.DeliveryAttempted`: Postfix asked about one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempted {
    pub envelope: Envelope,
    pub client_address: Option<String>,
    pub client_name: Option<String>,
    pub reverse_client_name: Option<String>,
    pub helo_name: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub instance: Option<String>,
    pub size: Option<i64>,
    pub queue_id: Option<String>,
    /// The policy server that asked, to route the reply.
    pub policy_host: String,
    /// The action the policy server answered without waiting for the
    /// greylist (a repeat of a triplet it had let through); `None`: it
    /// waited for the decision.
    pub answered: Option<String>,
}
impl_event!(DeliveryAttempted, "mailfleet.greylist.DeliveryAttempted");

/// Deferred or let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GreylistVerdict {
    Defer,
    Pass,
    /// A symbol this reader does not know.
    Unknown,
}

/// Why the greylist decided as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GreylistReason {
    New,
    TooEarly,
    Passed,
    WhitelistedClient,
    WhitelistedRecipient,
    AutoWhitelisted,
    MissingAttributes,
    RetryWindowExpired,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.greylist.GreylistDecided`: the answer to one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreylistDecided {
    pub envelope: Envelope,
    pub triplet: Option<String>,
    pub verdict: GreylistVerdict,
    pub reason: GreylistReason,
    /// The Postfix policy action text.
    pub action: String,
    /// Seconds still to wait (defer) or waited (first pass); else 0.
    pub delay_seconds: i64,
    pub policy_host: String,
    /// The hash of the settings in force (`ConfigChanged`) the decision
    /// was made with; `None` before any was recorded.
    pub settings_hash: Option<String>,
}
impl_event!(GreylistDecided, "mailfleet.greylist.GreylistDecided");
