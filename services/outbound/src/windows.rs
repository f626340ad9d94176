//! One account's sliding windows, in buckets: recipients and deferrals per
//! minute (the hour window), messages and bytes per hour (the day
//! window), and the distinct recipients with the minute each was last
//! passed. Every change first prunes what fell out of its window, so an
//! active account's record stays bounded; a quiet one is dropped on the
//! clock's ticks ([`Windows::is_idle`]).
//!
//! A window ending at `now` holds the buckets after `now - length`:
//! the current minute and the 59 before it for the hour, the current
//! hour and the 23 before it for the day (so a day's figures move on by
//! the hour, the hour's by the minute). Buckets later than `now` (an
//! attempt stamped by a policy host whose clock runs ahead) count too,
//! and are kept.

/// Minutes in the hour window.
pub const HOUR_MINUTES: i64 = 60;
/// Hours in the day window.
pub const DAY_HOURS: i64 = 24;
/// Minutes in the day window of distinct recipients.
pub const DAY_MINUTES: i64 = DAY_HOURS * 60;

/// The minute (since the epoch) of a time in ms.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// The hour (since the epoch) of a time in ms.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(3_600_000)
}

/// A count in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minute {
    pub minute: i64,
    pub count: u32,
}

/// Messages relayed and their bytes in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hour {
    pub hour: i64,
    pub messages: u32,
    pub bytes: i64,
}

/// A recipient (its [`recipient_hash`]) and the minute it was last passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub hash: u64,
    pub minute: i64,
}

/// The windows of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Windows {
    /// Recipients passed, per minute.
    pub recipients: Vec<Minute>,
    /// Attempts deferred for a limit, per minute.
    pub deferrals: Vec<Minute>,
    /// Messages relayed and bytes, per hour.
    pub days: Vec<Hour>,
    /// Distinct recipients passed, each with its last minute.
    pub distinct: Vec<Seen>,
}

/// The figures at one moment, as a decision reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub recipients_last_hour: i64,
    pub deferrals_last_hour: i64,
    pub distinct_recipients_last_day: i64,
    pub messages_last_day: i64,
    pub bytes_last_day: i64,
}

/// A stable 64-bit hash of a recipient (FNV-1a of the lower-cased
/// address): the state outlives any one build, so no hasher whose output
/// may change between versions.
pub fn recipient_hash(recipient: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in recipient.trim().bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn add_minute(buckets: &mut Vec<Minute>, minute: i64) {
    match buckets.iter_mut().find(|b| b.minute == minute) {
        Some(b) => b.count = b.count.saturating_add(1),
        None => {
            buckets.push(Minute { minute, count: 1 });
            buckets.sort_by_key(|b| b.minute);
        }
    }
}

fn sum_minutes(buckets: &[Minute]) -> i64 {
    buckets.iter().map(|b| i64::from(b.count)).sum()
}

impl Windows {
    /// Drop every bucket that fell out of its window at `now_ms`.
    pub fn prune(&mut self, now_ms: i64) {
        let (minute, hour) = (minute_of(now_ms), hour_of(now_ms));
        self.recipients.retain(|b| b.minute > minute - HOUR_MINUTES);
        self.deferrals.retain(|b| b.minute > minute - HOUR_MINUTES);
        self.days.retain(|b| b.hour > hour - DAY_HOURS);
        self.distinct.retain(|s| s.minute > minute - DAY_MINUTES);
    }

    /// The figures of the windows (pruned at the time they are read for).
    pub fn figures(&self) -> Figures {
        Figures {
            recipients_last_hour: sum_minutes(&self.recipients),
            deferrals_last_hour: sum_minutes(&self.deferrals),
            distinct_recipients_last_day: self.distinct.len() as i64,
            messages_last_day: self.days.iter().map(|b| i64::from(b.messages)).sum(),
            bytes_last_day: self.days.iter().map(|b| b.bytes).sum(),
        }
    }

    /// Whether `hash` was passed within the day window.
    pub fn knows(&self, hash: u64) -> bool {
        self.distinct.iter().any(|s| s.hash == hash)
    }

    /// Count a passed recipient at `now_ms`. A new one joins the distinct
    /// set while it holds fewer than `max_distinct`.
    pub fn pass(&mut self, hash: u64, now_ms: i64, max_distinct: usize) {
        let minute = minute_of(now_ms);
        add_minute(&mut self.recipients, minute);
        if let Some(s) = self.distinct.iter_mut().find(|s| s.hash == hash) {
            s.minute = s.minute.max(minute);
        } else if self.distinct.len() < max_distinct {
            self.distinct.push(Seen { hash, minute });
        }
    }

    /// Count a deferral at `now_ms`.
    pub fn defer(&mut self, now_ms: i64) {
        add_minute(&mut self.deferrals, minute_of(now_ms));
    }

    /// Count a relayed message of `bytes` at `now_ms`.
    pub fn relayed(&mut self, bytes: i64, now_ms: i64) {
        let hour = hour_of(now_ms);
        match self.days.iter_mut().find(|b| b.hour == hour) {
            Some(b) => {
                b.messages = b.messages.saturating_add(1);
                b.bytes = b.bytes.saturating_add(bytes);
            }
            None => {
                self.days.push(Hour {
                    hour,
                    messages: 1,
                    bytes,
                });
                self.days.sort_by_key(|b| b.hour);
            }
        }
    }

    /// Forget the deferrals (an admin cleared the account: its abuse
    /// count starts over).
    pub fn clear_deferrals(&mut self) {
        self.deferrals.clear();
    }

    /// Whether nothing is left in any window at `now_ms`.
    pub fn is_idle(&self, now_ms: i64) -> bool {
        let mut pruned = self.clone();
        pruned.prune(now_ms);
        pruned == Windows::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_996_800_000; // 2026-11-30T00:00:00Z
    const MIN: i64 = 60_000;

    #[test]
    fn the_hour_window_slides_by_the_minute() {
        let mut w = Windows::default();
        for i in 0..3 {
            w.pass(i, T0 + i as i64 * 20 * MIN, 10);
        }
        assert_eq!(w.figures().recipients_last_hour, 3);
        // At T0 + 60 min the T0 minute is out, the others are in.
        w.prune(T0 + 60 * MIN);
        assert_eq!(w.figures().recipients_last_hour, 2);
        w.prune(T0 + 60 * MIN + 40 * MIN);
        assert_eq!(w.figures().recipients_last_hour, 0);
        assert_eq!(
            w.figures().distinct_recipients_last_day,
            3,
            "a day keeps them"
        );
    }

    #[test]
    fn the_day_window_slides_by_the_hour_and_drops_quiet_accounts() {
        let mut w = Windows::default();
        w.relayed(100, T0);
        w.relayed(50, T0 + 30 * MIN);
        w.relayed(7, T0 + 23 * 60 * MIN);
        assert_eq!(w.days.len(), 2, "one bucket per hour");
        w.prune(T0 + 24 * 60 * MIN);
        let f = w.figures();
        assert_eq!((f.messages_last_day, f.bytes_last_day), (1, 7));
        assert!(!w.is_idle(T0 + 24 * 60 * MIN));
        assert!(w.is_idle(T0 + 47 * 60 * MIN));
    }

    #[test]
    fn distinct_recipients_are_bounded_and_refreshed() {
        let mut w = Windows::default();
        for i in 0..5 {
            w.pass(i, T0, 3);
        }
        assert_eq!(w.figures().distinct_recipients_last_day, 3);
        assert!(w.knows(2) && !w.knows(3));
        // A known recipient passed again later stays a day from then.
        w.pass(0, T0 + 23 * 60 * MIN, 3);
        w.prune(T0 + DAY_MINUTES * MIN + MIN);
        assert_eq!(
            w.distinct,
            vec![Seen {
                hash: 0,
                minute: minute_of(T0) + 23 * 60
            }]
        );
    }

    #[test]
    fn a_bucket_ahead_of_now_counts_and_stays() {
        let mut w = Windows::default();
        w.defer(T0 + 5 * MIN);
        w.prune(T0);
        assert_eq!(w.figures().deferrals_last_hour, 1);
    }

    #[test]
    fn the_recipient_hash_ignores_case_and_is_stable() {
        assert_eq!(
            recipient_hash("Bob@Example.org"),
            recipient_hash("bob@example.org")
        );
        assert_ne!(
            recipient_hash("bob@example.org"),
            recipient_hash("bob@example.net")
        );
        // FNV-1a 64 of "a": the published test vector.
        assert_eq!(recipient_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
