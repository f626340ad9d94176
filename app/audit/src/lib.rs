//! Answers from the events alone, for `mailfleet audit` and `mailfleet
//! replay`:
//!
//! - [`replay`]: run a consumer's decider over a range of its inputs into
//!   fresh state, with no outputs and no effects, and print each
//!   partition's state digest. Start at [`replay::run`].
//! - [`audit`]: recompute a consumer's decisions by a replay and compare
//!   them with what was recorded; an account's whole history; a mail's
//!   path. Start at [`audit::run`].

pub mod audit;
pub mod replay;
