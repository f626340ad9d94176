//! The wall clock, read one way: milliseconds since the Unix epoch, as
//! every event's `event_time` and every stamp in a file name carries it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in ms since the Unix epoch. A clock set before 1970 reads as 0
/// rather than failing: what uses it (event times, stamps, deadlines)
/// would be wrong either way, and the service keeps running.
pub fn now_ms() -> i64 {
    ms_since_epoch(SystemTime::now())
}

/// A process's clock: the wall clock, or (a demo and test facility,
/// never for production) compressed time, `scale` times faster than the
/// wall clock from `origin`: at wall time `w` it reads
/// `origin + (w - origin) * scale`. Processes given the same origin and
/// scale read the same time, so the events they stamp share one timeline
/// (`mailfleet demo` runs `mailfleet api` and `mailfleet scheduler` so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// [`now_ms`].
    #[default]
    Wall,
    /// Compressed time: `scale` (at least 1) from `origin_ms`.
    Compressed { origin_ms: i64, scale: u32 },
}

impl Clock {
    /// Now, on this clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> i64 {
        self.at(now_ms())
    }

    /// What this clock reads at wall time `wall_ms`.
    pub fn at(&self, wall_ms: i64) -> i64 {
        match *self {
            Clock::Wall => wall_ms,
            Clock::Compressed { origin_ms, scale } => {
                let run = (wall_ms - origin_ms).saturating_mul(i64::from(scale));
                origin_ms.saturating_add(run)
            }
        }
    }

    /// The first wall time (ms) at which this clock reads `at` or later
    /// (for a sleep until then; at least `origin_ms` in compressed time).
    pub fn wall_at(&self, at: i64) -> i64 {
        match *self {
            Clock::Wall => at,
            Clock::Compressed { origin_ms, scale } => {
                let scale = i64::from(scale.max(1));
                origin_ms + ((at - origin_ms).max(0) + scale - 1) / scale
            }
        }
    }
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

    #[test]
    fn compressed_time_runs_scale_times_faster_from_its_origin() {
        let clock = Clock::Compressed {
            origin_ms: 1_000,
            scale: 60,
        };
        assert_eq!(clock.at(1_000), 1_000);
        assert_eq!(clock.at(2_000), 61_000);
        assert_eq!(clock.wall_at(61_000), 2_000);
        // Never early: at the wall time given, the clock has reached `at`.
        assert_eq!(clock.wall_at(61_001), 2_001);
        assert!(clock.at(clock.wall_at(61_001)) >= 61_001);
        assert_eq!(Clock::Wall.at(5), 5);
        assert!(clock.now_ms() > now_ms());
    }
}
