//! `mailfleet policy`: the Postfix SMTP access policy server.
//!
//! For each `protocol_state=RCPT` request it produces a `DeliveryAttempted`
//! to `smtp.attempts` (keyed by client network, like the greylist's state),
//! waits for the matching `GreylistDecided` and answers its action. Other
//! states get `DUNNO`. With no answer in `timeout_ms` it answers the fail
//! mode. A repeat of a triplet the greylist let through is answered as
//! soon as its attempt is acknowledged ([`repeats`]). Start at [`serve`];
//! the wire format is in [`protocol`].
//!
//! A request with `sasl_username` is an authenticated submission from the
//! service's own users ([`submission`]): refused unless the account is
//! active, else a `SubmissionAttempted` whose `SubmissionDecided` from the
//! outbound limits consumer is the answer.

pub mod attempt;
pub mod client;
mod config;
pub mod protocol;
pub mod repeats;
mod server;
pub mod submission;
mod waiter;

pub use config::{FailMode, PolicyConfig, SubmissionFailMode};
pub use server::serve;
