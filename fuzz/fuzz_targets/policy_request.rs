//! `cargo +nightly fuzz run policy_request`: see `src/checks/policy.rs` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailfleet_fuzz::checks::policy::check(data));
