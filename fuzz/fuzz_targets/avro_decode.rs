//! `cargo +nightly fuzz run avro_decode`: see `src/checks/avro.rs` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mailfleet_fuzz::checks::avro::check(data));
