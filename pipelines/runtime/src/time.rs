//! The wall clock, read one way: milliseconds since the Unix epoch, as
//! every event's `event_time` and every stamp in a file name carries it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in ms since the Unix epoch. A clock set before 1970 reads as 0
/// rather than failing: what uses it (event times, stamps, deadlines)
/// would be wrong either way, and the service keeps running.
pub fn now_ms() -> i64 {
    ms_since_epoch(SystemTime::now())
}

/// `at` in ms since the Unix epoch (0 before it).
pub fn ms_since_epoch(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_from_the_epoch_and_never_goes_negative() {
        assert_eq!(
            ms_since_epoch(UNIX_EPOCH + Duration::from_millis(1_234)),
            1_234
        );
        assert_eq!(ms_since_epoch(UNIX_EPOCH - Duration::from_secs(1)), 0);
        // 2020-09-13, well after any test machine's epoch troubles.
        assert!(now_ms() > 1_600_000_000_000);
    }
}
