//! `mailfleet policy`: the Postfix SMTP access policy server.
//!
//! For each `protocol_state=RCPT` request it produces a `DeliveryAttempted`
//! to `smtp.attempts` (keyed by client network, like the greylist's state),
//! waits for the matching `GreylistDecided` and answers its action. Other
//! states get `DUNNO`. With no answer in `timeout_ms` it answers the fail
//! mode. Start at [`serve`]; the wire format is in [`protocol`].

pub mod attempt;
pub mod client;
mod config;
pub mod protocol;
mod server;
mod waiter;

pub use config::{FailMode, PolicyConfig};
pub use server::serve;
