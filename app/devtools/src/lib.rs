//! The developer's tools of the `mailfleet` binary, which parses their
//! arguments and calls in here; neither is part of the service:
//!
//! - [`bench`]: `mailfleet bench ...`, side-by-side measurements whose
//!   results go to `docs/benchmarks.md`. Start at [`bench::Bench`].
//! - [`demo`]: `mailfleet demo`, demo traffic through a fleet started as an
//!   operator starts it, and what happened. Start at [`demo::run`].

pub mod bench;
pub mod demo;
mod process;
