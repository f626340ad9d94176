//! The JSON bodies of the account API, shared by the server and the
//! [`super::client`], so both sides always agree. Requests refuse unknown
//! fields (a typo such as `quota` for `quota_bytes` is a 400, not a silent
//! default).

use std::fmt;

use mailfleet_events::accounts::{AccountStatus, BlockReason, LoginChannel};
use serde::{Deserialize, Serialize};

/// A password in a request body. Its `Debug` is redacted, so a request
/// logged by mistake shows no password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The password itself, for hashing or verifying only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `POST /accounts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub account: String,
    pub password: Secret,
    /// Default: the storage writer's default plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// Where a login happened, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Webmail,
    Activesync,
    Syncml,
    Imap,
}

impl From<Channel> for LoginChannel {
    fn from(c: Channel) -> Self {
        match c {
            Channel::Webmail => LoginChannel::Webmail,
            Channel::Activesync => LoginChannel::Activesync,
            Channel::Syncml => LoginChannel::Syncml,
            Channel::Imap => LoginChannel::Imap,
        }
    }
}

/// `POST /accounts/{account}/logins`. With a password the API verifies it;
/// without one it records a login a front end already authenticated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// `PUT /accounts/{account}/quota`: bytes, or `null` for the plan's quota.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRequest {
    pub quota_bytes: Option<i64>,
}

/// `PUT /accounts/{account}/plan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub plan: String,
}

/// Why an admin blocks an account (a virus block comes from the scanner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminBlockReason {
    Admin,
    Abuse,
}

impl From<AdminBlockReason> for BlockReason {
    fn from(r: AdminBlockReason) -> Self {
        match r {
            AdminBlockReason::Admin => BlockReason::Admin,
            AdminBlockReason::Abuse => BlockReason::Abuse,
        }
    }
}

/// `POST /accounts/{account}/block`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub reason: AdminBlockReason,
    /// The admin's note, kept in the event.
    #[serde(default)]
    pub detail: String,
}

/// `POST /accounts/{account}/unblock`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnblockRequest {
    /// Who lifts the block (default `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default)]
    pub note: String,
}

/// `POST /accounts/{account}/reactivate` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactivateRequest {
    /// Who reactivates (default `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What the API shows of an account: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub account: String,
    /// `pending`, `active`, `inactive`, `blocked`, `deleting`, `deleted`.
    pub status: String,
    pub plan: String,
    /// An explicit quota; `None`: the plan's.
    pub quota_bytes: Option<i64>,
    pub display_name: Option<String>,
    /// Event time of the registration, ms since the epoch.
    pub registered_at: i64,
    /// Event time of the latest recorded login, ms since the epoch.
    pub last_login_at: Option<i64>,
    /// Its channel (`webmail`, `activesync`, `syncml`, `imap`).
    pub last_login_channel: Option<String>,
    /// The deletion saga finished (`AccountDeleted`).
    pub deleted: bool,
}

/// Every error answer: `error` names the value at fault; `rules` lists the
/// failed password rules of a 422.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

/// The answer of `POST /accounts/{account}/spam`: what rspamd said of
/// the message, as its `SpamLearned` event records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnAnswer {
    pub account: String,
    /// `spam` or `ham`.
    pub class: String,
    pub folder: String,
    /// `learned`, `already-learned` (rspamd's 208) or `refused` (too few
    /// tokens, or another reason in `detail`).
    pub outcome: String,
    /// sha256 of the message: its key in the blob store.
    pub blob_id: String,
    /// The `SpamLearned` event's id.
    pub event_id: String,
    /// rspamd's reason when it did not learn.
    pub detail: Option<String>,
}

/// `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub accounts: usize,
}

/// The API's (and the CLI's) word for a status.
pub fn status_name(status: AccountStatus) -> &'static str {
    match status {
        AccountStatus::Pending => "pending",
        AccountStatus::Active => "active",
        AccountStatus::Inactive => "inactive",
        AccountStatus::Deleting => "deleting",
        AccountStatus::Deleted => "deleted",
        AccountStatus::Blocked => "blocked",
        AccountStatus::Unknown => "unknown",
    }
}

/// The API's word for a login channel.
pub fn channel_name(channel: LoginChannel) -> &'static str {
    match channel {
        LoginChannel::Webmail => "webmail",
        LoginChannel::Activesync => "activesync",
        LoginChannel::Syncml => "syncml",
        LoginChannel::Imap => "imap",
        LoginChannel::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_secrets_are_redacted_in_debug() {
        let req = RegisterRequest {
            account: "a@b.test".into(),
            password: Secret::new("Hunter2isweak"),
            plan: None,
            display_name: None,
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("Hunter2"), "{shown}");
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"account":"a@b.test","password":"Hunter2isweak"}"#);
    }

    #[test]
    fn api_requests_refuse_unknown_fields_and_name_bad_symbols() {
        let err = serde_json::from_str::<QuotaRequest>(r#"{"quota":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `quota`"), "{err}");
        let err = serde_json::from_str::<LoginRequest>(r#"{"channel":"pop3"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `pop3`"), "{err}");
        let q: QuotaRequest = serde_json::from_str(r#"{"quota_bytes":null}"#).unwrap();
        assert_eq!(q.quota_bytes, None);
    }
}
