//! The fleet's wiring, shared by the `mailfleet` binary and its tool
//! crates (`mailfleet-audit`, `mailfleet-devtools`):
//!
//! - [`config`]: the whole config file, one TOML document with `MAILFLEET_`
//!   environment overrides, one section per service, checked as a whole
//!   before anything starts. Start at [`config::Config::load`].
//! - [`consumers`]: every consumer `mailfleet run` knows
//!   ([`consumers::NAMES`]) and how each is built from the config and run
//!   ([`consumers::run_consumer`]).

pub mod config;
pub mod consumers;

/// This crate's folder, for tests that read the repo's files: cargo sets
/// CARGO_MANIFEST_DIR when it runs a test; the compile-time value can name
/// another clone that shared the target folder.
#[cfg(test)]
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}
