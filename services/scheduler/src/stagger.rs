//! A purge job's plan: when each account's `PurgeRequested` goes out.
//!
//! The original service emptied every Trash at midnight in one go and
//! caused load peaks. Here each account gets a second in the window
//! `[due_at, due_at + window)` from a stable hash of the account (SHA-256,
//! so a replay, a restart or a new leader plans the same times, and the
//! accounts of every shard and partition are spread over the whole
//! window). The rate limit then holds per one-second and per one-minute
//! bucket (UTC-aligned, as a dashboard counts them): an account whose
//! bucket is full moves to the next free second; one that would so fall
//! past the window takes a second still free in it, from its start. Only
//! if the window cannot hold every account at the limit does the plan run
//! past it, and it says by how many.
//!
//! Budgets for a rate `r` per second: `max(1, floor(r))` a second and
//! `max(1, floor(60 r))` a minute, so a rate under 1/s is met per minute.
//!
//! **Shards.** A purge is planned by every partition of the purge topic on
//! its own (the accounts are sharded by key hash over the partitions), and
//! the limit must hold for their sum. Each partition is a [`Lane`]: it
//! places only in the seconds it owns (epoch second mod the partition
//! count), so no second is shared, and [`RateLimit::shared`] splits the
//! per-minute budget between the lanes. Summed over every lane, a second
//! holds at most `max(1, floor(r))` and a minute at most `60 r`.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use crate::SchedulerError;

/// One account's purge time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The account (lower-cased address, the record key).
    pub account: String,
    /// When its `PurgeRequested` is due, ms.
    pub at: i64,
}

/// The plan of one purge run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgePlan {
    /// Every account once, by time then account.
    pub slots: Vec<Slot>,
    /// The busiest one-second bucket of the plan.
    pub peak_per_second: u32,
    /// The busiest one-minute bucket of the plan.
    pub peak_per_minute: u32,
    /// The end of the window, ms (exclusive).
    pub window_end: i64,
    /// Accounts planned at or after `window_end`: the window was too small
    /// for them at the rate limit (0: all inside).
    pub past_window: usize,
    /// Accounts listed more than once (each is planned once).
    pub duplicates: usize,
}

/// The per-bucket budgets derived from a rate in purges per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Purges in one second.
    pub per_second: u32,
    /// Purges in one minute.
    pub per_minute: u32,
}

impl RateLimit {
    /// The budgets for `max_per_s`, which must be finite and at least one
    /// a minute.
    pub fn new(max_per_s: f64) -> Result<Self, SchedulerError> {
        if !(max_per_s.is_finite() && max_per_s >= 1.0 / 60.0) {
            return Err(SchedulerError::PlanPurge {
                what: "max_purges_per_s",
                value: max_per_s.to_string(),
                reason: "must be finite and at least 1/60 (one a minute)",
            });
        }
        // `as` saturates; the config caps the rate far below u32::MAX.
        let budget = |x: f64| (x.floor() as u32).max(1);
        Ok(Self {
            per_second: budget(max_per_s),
            per_minute: budget(max_per_s * 60.0),
        })
    }
}

impl RateLimit {
    /// The budgets of one of `lanes` lanes sharing `max_per_s`: the whole
    /// per-second budget in the seconds the lane owns, and its share of
    /// the per-minute one, which must be at least one.
    pub fn shared(max_per_s: f64, lanes: u32) -> Result<Self, SchedulerError> {
        let whole = Self::new(max_per_s)?;
        let lanes = lanes.max(1);
        if lanes == 1 {
            return Ok(whole);
        }
        let per_minute = (max_per_s * 60.0 / f64::from(lanes)).floor();
        if per_minute < 1.0 {
            return Err(SchedulerError::PlanPurge {
                what: "max_purges_per_s",
                value: max_per_s.to_string(),
                reason: "gives each partition of the purge topic less than one purge a minute",
            });
        }
        Ok(Self {
            per_second: whole.per_second,
            per_minute: per_minute as u32,
        })
    }
}

/// The seconds one shard may use: those whose epoch second is `index`
/// modulo `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    pub index: u32,
    pub of: u32,
}

impl Lane {
    /// Every second: an unsharded plan.
    pub const WHOLE: Lane = Lane { index: 0, of: 1 };

    /// Partition `partition` of `partitions`.
    pub fn partition(partition: i32, partitions: i32) -> Result<Self, SchedulerError> {
        let of = u32::try_from(partitions).ok().filter(|n| *n >= 1);
        let index = u32::try_from(partition).ok();
        match (index, of) {
            (Some(index), Some(of)) if index < of => Ok(Self { index, of }),
            _ => Err(SchedulerError::PlanPurge {
                what: "partition",
                value: format!("{partition} of {partitions}"),
                reason: "must be one of the purge topic's partitions",
            }),
        }
    }

    fn owns(self, time_ms: i64) -> bool {
        time_ms.div_euclid(1000).rem_euclid(i64::from(self.of)) == i64::from(self.index)
    }
}

/// Plan a purge of `accounts` due at `due_at` over `window_ms`.
pub fn plan<S: AsRef<str>>(
    due_at: i64,
    window_ms: i64,
    limit: RateLimit,
    accounts: &[S],
) -> Result<PurgePlan, SchedulerError> {
    plan_lane(due_at, window_ms, limit, Lane::WHOLE, accounts)
}

/// Plan one shard's accounts in its `lane`.
pub fn plan_lane<S: AsRef<str>>(
    due_at: i64,
    window_ms: i64,
    limit: RateLimit,
    lane: Lane,
    accounts: &[S],
) -> Result<PurgePlan, SchedulerError> {
    if window_ms < 1000 {
        return Err(SchedulerError::PlanPurge {
            what: "window_ms",
            value: window_ms.to_string(),
            reason: "must be at least one second",
        });
    }
    let unique: BTreeSet<&str> = accounts.iter().map(AsRef::as_ref).collect();
    let window_s = (window_ms / 1000).unsigned_abs();
    // The latest possible placement: the window, then one a minute.
    let latest = i64::try_from(unique.len())
        .ok()
        .and_then(|n| n.checked_mul(60_000 * i64::from(lane.of)))
        .and_then(|spill| spill.checked_add(window_ms))
        .and_then(|span| due_at.checked_add(span));
    if latest.is_none() {
        return Err(SchedulerError::PlanPurge {
            what: "due_at",
            value: due_at.to_string(),
            reason: "the plan would end past the representable time",
        });
    }
    let mut wanted: Vec<(i64, &str)> = unique
        .iter()
        .map(|a| ((hash(a) % window_s) as i64, *a))
        .collect();
    wanted.sort_unstable();
    let mut slots = Vec::with_capacity(wanted.len());
    let mut buckets = Buckets::new(due_at, limit, lane);
    // First pass: each account at the first free second from its own.
    // Second pass: those that would fall past the window take the seconds
    // left free in it from its start, then run past it.
    let mut deferred = Vec::new();
    let mut cursor = 0;
    for (offset, account) in wanted {
        cursor = buckets.first_free(offset.max(cursor));
        if cursor >= window_s as i64 {
            deferred.push(account);
        } else {
            slots.push(buckets.take(account, cursor));
        }
    }
    cursor = 0;
    for account in deferred {
        cursor = buckets.first_free(cursor);
        slots.push(buckets.take(account, cursor));
    }
    slots.sort_unstable_by(|a, b| (a.at, &a.account).cmp(&(b.at, &b.account)));
    let window_end = due_at.saturating_add(window_ms);
    let (peak_per_second, peak_per_minute) = peaks(&slots);
    Ok(PurgePlan {
        past_window: slots.iter().filter(|s| s.at >= window_end).count(),
        duplicates: accounts.len() - unique.len(),
        slots,
        peak_per_second,
        peak_per_minute,
        window_end,
    })
}

/// The first 8 bytes of the account's SHA-256: stable across builds and
/// platforms, unlike `std`'s hasher.
fn hash(account: &str) -> u64 {
    let digest = Sha256::digest(account.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// How full each second and minute of the plan is. Both passes place in
/// non-decreasing order, so a pass can resume its search where its last
/// placement was: every second it skipped was, and stays, full.
struct Buckets {
    due_at: i64,
    limit: RateLimit,
    lane: Lane,
    seconds: HashMap<i64, u32>,
    minutes: HashMap<i64, u32>,
}

impl Buckets {
    fn new(due_at: i64, limit: RateLimit, lane: Lane) -> Self {
        Self {
            due_at,
            limit,
            lane,
            seconds: HashMap::new(),
            minutes: HashMap::new(),
        }
    }

    /// The first second at or after `o` (seconds after `due_at`) in the
    /// lane with room in both its second and its minute.
    fn first_free(&self, mut o: i64) -> i64 {
        loop {
            let minute = self.minute(o);
            if self.minutes.get(&minute).copied().unwrap_or(0) >= self.limit.per_minute {
                // The first second whose time falls in the next minute.
                let next_minute_ms = (minute + 1) * 60_000 - self.due_at;
                o = (next_minute_ms + 999).div_euclid(1000);
            } else if !self.lane.owns(self.time(o))
                || self.seconds.get(&o).copied().unwrap_or(0) >= self.limit.per_second
            {
                o += 1;
            } else {
                return o;
            }
        }
    }

    /// Count `account` in second `o` and give it its slot.
    fn take(&mut self, account: &str, o: i64) -> Slot {
        *self.seconds.entry(o).or_default() += 1;
        *self.minutes.entry(self.minute(o)).or_default() += 1;
        Slot {
            account: account.to_string(),
            at: self.time(o),
        }
    }

    fn minute(&self, o: i64) -> i64 {
        self.time(o).div_euclid(60_000)
    }

    fn time(&self, o: i64) -> i64 {
        self.due_at + o * 1000
    }
}

/// The busiest one-second and one-minute buckets of time-sorted slots.
fn peaks(slots: &[Slot]) -> (u32, u32) {
    let busiest = |width: i64| {
        let mut peak = 0;
        let mut run = (i64::MIN, 0u32);
        for s in slots {
            let bucket = s.at.div_euclid(width);
            run = if bucket == run.0 {
                (bucket, run.1 + 1)
            } else {
                (bucket, 1)
            };
            peak = peak.max(run.1);
        }
        peak
    };
    (busiest(1000), busiest(60_000))
}

#[cfg(test)]
mod scheduler_tests;
