//! `cargo +nightly fuzz run mime_policy`: see `src/checks/mime.rs` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailfleet_fuzz::checks::mime::check(data));
