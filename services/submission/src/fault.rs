//! A test-only fault point. With `MAILFLEET_FAULT_SUBMISSION_HOLD_MS=<ms>`
//! in the environment, every message waits that long at its end, before the
//! scan, so that a test can `kill -9` the milter while Postfix waits for the
//! verdict. Only debug builds read the variable; release builds ignore it.

use std::time::Duration;

/// The variable's name.
pub const HOLD_ENV: &str = "MAILFLEET_FAULT_SUBMISSION_HOLD_MS";

/// How long to hold each message at its end, if at all.
#[cfg(debug_assertions)]
pub fn hold() -> Option<Duration> {
    let ms: u64 = std::env::var(HOLD_ENV).ok()?.trim().parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Release builds: never.
#[cfg(not(debug_assertions))]
pub fn hold() -> Option<Duration> {
    None
}
