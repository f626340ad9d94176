//! The crate's one error type. The API's refusals and failures, each with
//! its HTTP status and a JSON body ([`ErrorBody`]) whose `error` names the
//! value at fault; why the server could not start or stopped; and what
//! went wrong for the [`super::client`] talking to it.

use std::path::PathBuf;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use mailfleet_password::PasswordError;
use mailfleet_runtime::RuntimeError;

use super::wire::ErrorBody;

/// Everything a request can end in other than success, everything that
/// stops the server, and everything a client call can end in.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a body, address, channel, IP or number that does not parse.
    #[error("{0}")]
    BadRequest(String),
    /// 401: a missing or wrong bearer token.
    #[error("missing or wrong bearer token (Authorization: Bearer <token>)")]
    Unauthorized,
    /// 401: a login whose password does not match.
    #[error("wrong password for account {account}")]
    BadPassword { account: String },
    /// 403: a login to an account that may not log in.
    #[error("account {account} is {status}: login refused")]
    LoginRefused {
        account: String,
        status: &'static str,
    },
    /// 404: no such account.
    #[error("no account {account}")]
    NotFound { account: String },
    /// 404: no such route.
    #[error("no route {method} {path}")]
    NoRoute { method: String, path: String },
    /// 409: the request does not fit the account's state.
    #[error("{0}")]
    Conflict(String),
    /// 422: a password that fails the policy ([`PasswordError::Weak`]).
    #[error("{0}")]
    WeakPassword(PasswordError),
    /// 422: a plan the storage writer does not know.
    #[error("unknown plan {plan:?} (known: {known})")]
    UnknownPlan { plan: String, known: String },
    /// 503: the projection is still reading the topic.
    #[error("the account projection is still reading {topic} up to the end offsets it saw at start; try again shortly")]
    NotReady { topic: String },
    /// 503: Kafka did not acknowledge in time.
    #[error("Kafka did not acknowledge the {event} for account {account} on {topic}: {reason}; nothing was changed, try again")]
    Kafka {
        event: &'static str,
        account: String,
        topic: String,
        reason: String,
    },
    /// 404: the learn route on an API without `[api.spam]`.
    #[error("spam learning is off on this API: [api.spam] is not set")]
    LearningOff,
    /// 503: rspamd's controller did not answer a learn.
    #[error("rspamd's controller at {controller} did not answer: {reason}; nothing was recorded, try again")]
    Rspamd { controller: String, reason: String },
    /// 500: something this service cannot fix (a stored hash it cannot
    /// read, a hashing thread that died).
    #[error("{0}")]
    Internal(String),
    /// 400: an address the API does not accept ([`super::address`]).
    #[error("account {address:?} is not a valid address: {problem}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Serving: the bearer token file cannot be used.
    #[error("api.token_file = {path:?}: {reason}")]
    Token { path: PathBuf, reason: String },
    /// Serving: `[api.spam]` without `blobs_dir` and no host store.
    #[error("api.spam.blobs_dir is unset: the learn route needs the host's [blobs] store")]
    BlobsUnset,
    /// Serving: the learn route's blob store (`api.spam.blobs_dir`) cannot
    /// be opened.
    #[error("api.spam.blobs_dir = {dir:?}: {source}")]
    Blobs {
        dir: String,
        #[source]
        source: mailfleet_blob::BlobError,
    },
    /// Serving: a non-loopback `api.listen` without a bearer token.
    #[error("api.listen = {listen:?} is not loopback: set api.token_file")]
    Unprotected { listen: String },
    /// Serving: `[api.tls]` cannot be used (the error names the file;
    /// not a `#[source]`, which `{:#}` would print twice).
    #[error("api.tls: {0}")]
    ServerTls(mailfleet_tls::TlsError),
    /// Serving: the listen address cannot be bound.
    #[error("api.listen = {listen:?}: cannot listen: {source}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    /// Serving: the projection or the producer cannot start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Serving: the HTTP server failed.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    /// Client: the base URL is not `http(s)://host:port`.
    #[error("api url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Client: its TLS settings cannot be used (`[api.client]`,
    /// `--ca-file`; the error names the file, as [`Self::ServerTls`]).
    #[error("api.client (or --ca-file): {0}")]
    ClientTls(mailfleet_tls::TlsError),
    /// Client: the TLS handshake with the API failed; `reason` is
    /// rustls's ("invalid peer certificate: UnknownIssuer").
    #[error("TLS with the account API at {url} failed: {reason}")]
    Tls { url: String, reason: String },
    /// Client: no answer: nothing listening, a timeout, a broken connection.
    #[error("cannot reach the account API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Client: a 4xx: the API refused the request; `message` is its own
    /// words.
    #[error("{message}")]
    Refused {
        status: u16,
        message: String,
        /// The failed password rules of a 422.
        rules: Vec<String>,
    },
    /// Client: a 5xx: the API could not do it (Kafka down, not ready yet).
    #[error("the account API failed ({status}): {message}")]
    Failed { status: u16, message: String },
    /// Client: a success whose body is not what the API sends.
    #[error("the account API at {url} answered {status} with an unexpected body: {reason}")]
    Decode {
        url: String,
        status: u16,
        reason: String,
    },
}

impl ApiError {
    /// The HTTP status the server answers this error with (500 for the
    /// server's and the client's own failures, which are no answer).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadAddress { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::BadPassword { .. } => StatusCode::UNAUTHORIZED,
            Self::LoginRefused { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } | Self::NoRoute { .. } | Self::LearningOff => {
                StatusCode::NOT_FOUND
            }
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::WeakPassword(_) | Self::UnknownPlan { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotReady { .. } | Self::Kafka { .. } | Self::Rspamd { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_)
            | Self::Token { .. }
            | Self::Unprotected { .. }
            | Self::ServerTls(_)
            | Self::ClientTls(_)
            | Self::Tls { .. }
            | Self::BlobsUnset
            | Self::Blobs { .. }
            | Self::Bind { .. }
            | Self::Runtime(_)
            | Self::Serve(_)
            | Self::BadUrl { .. }
            | Self::Unreachable { .. }
            | Self::Refused { .. }
            | Self::Failed { .. }
            | Self::Decode { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// For a client call: the HTTP status the API answered with, if it
    /// answered.
    pub fn answer_status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } | Self::Failed { status, .. } => Some(*status),
            Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The body: the message, and for a weak password the failed rules.
    pub fn body(&self) -> ErrorBody {
        let rules = match self {
            Self::WeakPassword(v) => v.rules().iter().map(|r| r.name().to_string()).collect(),
            _ => Vec::new(),
        };
        ErrorBody {
            error: self.to_string(),
            rules,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut response = (status, Json(self.body())).into_response();
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use mailfleet_password as password;

    use super::*;

    #[test]
    fn api_errors_map_to_statuses_and_weak_passwords_list_rules() {
        let weak = password::check("abc").unwrap_err();
        let err = ApiError::WeakPassword(weak);
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = err.body();
        assert_eq!(body.rules, ["min-length", "upper-case", "digit"]);
        assert!(
            body.error.contains("at least 8 characters"),
            "{}",
            body.error
        );
        let nf = ApiError::NotFound {
            account: "bob@x.test".into(),
        };
        assert_eq!(nf.status(), StatusCode::NOT_FOUND);
        assert_eq!(nf.body().error, "no account bob@x.test");
        assert!(nf.body().rules.is_empty());
        let plan = ApiError::UnknownPlan {
            plan: "gold".into(),
            known: "free, pro".into(),
        };
        assert_eq!(plan.to_string(), "unknown plan \"gold\" (known: free, pro)");
    }
}
