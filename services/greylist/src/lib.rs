//! The greylist consumer: postgrey 1.37's rules over `smtp.attempts`.
//!
//! A `DeliveryAttempted` (from `mailfleet policy`) is judged against the
//! whitelists, the client auto-whitelist and the triplet's history, and the
//! answer goes out as `GreylistDecided`. `ClockTicked` events in the same
//! topic drive expiry. Start at [`Greylist::judge`].

mod config;
mod date;
mod decide;
mod error;
pub mod state;
pub mod whitelist;
mod wiring;

pub use config::{GreylistConfig, GreylistRules, RecordedLists};
pub use decide::{settings_of, Answer, Greylist, GreylistInForce, GreylistInput};
pub use error::GreylistError;
pub use wiring::build;
