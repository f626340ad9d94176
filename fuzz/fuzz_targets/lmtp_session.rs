//! `cargo +nightly fuzz run lmtp_session`: see `src/checks/lmtp.rs` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailfleet_fuzz::checks::lmtp::check(data));
