//! What is due between the last emitted instant and now: clock ticks and
//! job runs, in time order, so that a restart after downtime emits what
//! was missed. Pure and deterministic: the same `(last, now)` gives the
//! same answer; all times are UTC milliseconds since the epoch.
//!
//! Bounds: after a long downtime the missed ticks are thinned to
//! `max_catch_up_ticks` (the latest kept; a tick at `T` fires every timer
//! due at or before `T`, so timers are delayed, never lost) and the answer
//! says how many were merged. Job runs are never dropped: when more than
//! `max_catch_up_runs` are due, the answer stops at an instant and says
//! where to resume.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{SchedulerConfig, SchedulerError};

/// One thing to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// A `ClockTicked` at `at`.
    Tick { at: i64 },
    /// A `JobDue` for the job named `job`, due at `at`.
    Job { job: String, at: i64 },
}

impl Due {
    /// When it is due, ms.
    pub fn at(&self) -> i64 {
        match self {
            Self::Tick { at } | Self::Job { at, .. } => *at,
        }
    }
}

/// The answer of [`Schedules::due`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatchUp {
    /// Everything due, in time order; at one instant the tick comes first,
    /// then the jobs by name.
    pub due: Vec<Due>,
    /// Ticks due in the covered span that were merged into a later tick of
    /// `due` (0 unless the downtime was longer than `max_catch_up_ticks`).
    pub ticks_merged: u64,
    /// `Some(t)`: more job runs were due than `max_catch_up_runs`; `due`
    /// covers everything up to and including `t`, so emit it and ask again
    /// with `last = Some(t)`.
    pub resume_after: Option<i64>,
}

/// The parsed schedules of a valid [`SchedulerConfig`].
pub struct Schedules {
    tick_ms: i64,
    max_ticks: i64,
    max_runs: usize,
    /// By name, so runs at one instant come in name order.
    jobs: Vec<(String, cron::Schedule)>,
}

impl Schedules {
    /// Parse every job's cron expression; refuses a config with problems,
    /// naming all of them.
    pub fn new(cfg: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            return Err(SchedulerError::Validate(problems));
        }
        let jobs = cfg
            .jobs
            .iter()
            .map(|(name, job)| match job.cron.parse::<cron::Schedule>() {
                Ok(s) => Ok((name.clone(), s)),
                Err(source) => Err(SchedulerError::ParseCron {
                    job: name.clone(),
                    expr: job.cron.clone(),
                    source,
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tick_ms: i64::from(cfg.tick_every_s) * 1000,
            max_ticks: i64::from(cfg.max_catch_up_ticks),
            max_runs: cfg.max_catch_up_runs as usize,
            jobs,
        })
    }

    /// The tick period, ms.
    pub fn tick_every_ms(&self) -> i64 {
        self.tick_ms
    }

    /// Everything due in `(last, now]`. On a first start (`last` is
    /// `None`) that is the tick period containing `now`: its tick and any
    /// run due since it, nothing older. A `now` at or before `last` (a
    /// clock that went back) gives nothing.
    pub fn due(&self, last: Option<i64>, now: i64) -> Result<CatchUp, SchedulerError> {
        let from = last.unwrap_or_else(|| self.floor_tick(now) - 1);
        if now <= from {
            return Ok(CatchUp::default());
        }
        let mut runs = self.runs_between(from, now)?;
        let resume_after = (runs.len() > self.max_runs).then(|| {
            let cut = runs[self.max_runs - 1].at();
            runs.retain(|r| r.at() <= cut);
            cut
        });
        let (ticks, ticks_merged) = self.ticks_between(from, resume_after.unwrap_or(now));
        let mut due = ticks;
        due.extend(runs);
        // Stable: ticks stay before the runs of their instant.
        due.sort_by_key(Due::at);
        Ok(CatchUp {
            due,
            ticks_merged,
            resume_after,
        })
    }

    /// The next instant after `t` at which anything is due (a tick at the
    /// latest), for the emitter to sleep until.
    pub fn next_after(&self, t: i64) -> Result<i64, SchedulerError> {
        let after = to_time(t)?;
        let next_tick = self.floor_tick(t) + self.tick_ms;
        Ok(self
            .jobs
            .iter()
            .filter_map(|(_, s)| s.after(&after).next())
            .map(|d| d.timestamp_millis())
            .fold(next_tick, i64::min))
    }

    /// Job runs in `(from, to]`, sorted by time then name; per job at most
    /// `max_runs + 1`, which is enough to find the first `max_runs` overall.
    fn runs_between(&self, from: i64, to: i64) -> Result<Vec<Due>, SchedulerError> {
        let after = to_time(from)?;
        to_time(to)?;
        let mut runs: Vec<Due> = Vec::new();
        for (name, schedule) in &self.jobs {
            let times = schedule.after(&after).map(|d| d.timestamp_millis());
            runs.extend(
                times
                    .take_while(|at| *at <= to)
                    .take(self.max_runs + 1)
                    .map(|at| Due::Job {
                        job: name.clone(),
                        at,
                    }),
            );
        }
        runs.sort_by_key(Due::at);
        Ok(runs)
    }

    /// Ticks in `(from, to]` on multiples of the period, thinned to at most
    /// `max_ticks` (every `stride`-th counting back from the latest), and
    /// how many were merged away.
    fn ticks_between(&self, from: i64, to: i64) -> (Vec<Due>, u64) {
        let (first, last) = (
            from.div_euclid(self.tick_ms) + 1,
            to.div_euclid(self.tick_ms),
        );
        if last < first {
            return (Vec::new(), 0);
        }
        let n = last - first + 1;
        let stride = (n + self.max_ticks - 1) / self.max_ticks;
        let mut ticks: Vec<Due> = (0..)
            .map(|i| last - i * stride)
            .take_while(|k| *k >= first)
            .map(|k| Due::Tick {
                at: k * self.tick_ms,
            })
            .collect();
        ticks.reverse();
        let merged = n - ticks.len() as i64;
        (ticks, merged.unsigned_abs())
    }

    fn floor_tick(&self, t: i64) -> i64 {
        t - t.rem_euclid(self.tick_ms)
    }
}

/// The id of one run, `<job>:<due time, RFC 3339>`, e.g.
/// `trash-purge:2026-11-28T00:00:00Z`: `PurgeRequested.job` and the seed of
/// the events a run emits, so a replay or a new leader repeats it exactly.
pub fn run_id(job: &str, at: i64) -> Result<String, SchedulerError> {
    let time = to_time(at)?.to_rfc3339_opts(SecondsFormat::Secs, true);
    Ok(format!("{job}:{time}"))
}

fn to_time(ms: i64) -> Result<DateTime<Utc>, SchedulerError> {
    DateTime::from_timestamp_millis(ms).ok_or(SchedulerError::ConvertTime { ms })
}

#[cfg(test)]
mod scheduler_tests;
