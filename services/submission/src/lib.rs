//! The submission milter: every message the service's own users submit
//! through Postfix's SASL submission listener is scanned here, before
//! Postfix queues it, with the same clamd and attachment policy as inbound
//! mail (crate `mailfleet-scan`).
//!
//! Start with [`session`]: the pure state machine over the milter commands
//! ([`milter`]) that collects the envelope, the `{auth_authen}` login and
//! the message. At the end of a message, [`server`] scans it, produces one
//! `MessageSubmitted` to `mail.submitted` (keyed by account) and only once
//! Kafka acknowledged it answers Postfix: go on, `554 5.7.1` (virus or
//! banned attachment) or `451 4.7.1` (clamd or Kafka down). [`decide`]
//! holds the replies and the event, and why its id survives a retry.
//!
//! Nothing is queued until the milter answers, and Postfix answers the
//! client 4xx when the milter is gone (`milter_default_action = tempfail`),
//! so a `kill -9` at any point loses no mail and relays none twice.

pub mod config;
pub mod decide;
mod fault;
pub mod message;
pub mod metrics;
pub mod milter;
mod server;
pub mod session;
mod submit;

pub use config::SubmissionConfig;
pub use fault::HOLD_ENV;
pub use server::serve;

/// Why the milter could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    #[error(transparent)]
    Runtime(#[from] mailfleet_runtime::RuntimeError),
}
