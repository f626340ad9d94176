//! The scheduler's pure core (F6): what is due when, how a purge is spread
//! out, and what the Postfix recipient map says. No I/O: every function
//! takes the time and the data as arguments, so a replay or a standby that
//! takes over computes the same answer. Start at [`Schedules::due`].
//!
//! - [`config`]: `[scheduler]`, its defaults (trash daily, spam monthly,
//!   the Postfix map every 10 minutes, a tick every 60 s) and
//!   [`SchedulerConfig::problems`], which names the key and the value of
//!   every problem, a bad cron expression included;
//! - [`schedule`]: the ticks and job runs due between the last emitted
//!   instant and now, so that nothing missed during downtime is skipped;
//! - [`stagger`]: a purge run's plan, one time per account in the window
//!   under a per-second and per-minute rate limit, with its peaks;
//! - [`postfix_map`]: the `virtual_mailbox_maps` text and its digest.
//!
//! # The plan for the wiring (not built yet)
//!
//! Nothing here talks to Kafka, and `mailfleet scheduler` does not exist
//! yet; a later change wires this core in as follows.
//!
//! **Exactly one active scheduler.** Every scheduler instance joins one
//! consumer group on a single-partition topic `scheduler.lease`. The group
//! coordinator assigns partition 0 to exactly one member; that member
//! emits, the others are hot standbys holding only a subscription. On an
//! assignment the new owner reads the last emitted instant back from the
//! jobs topic (the `event_time` of its last record: the topic is the
//! scheduler's only state) and calls [`Schedules::due`] with it, so it
//! emits exactly what its predecessor had not, and nothing twice if the
//! predecessor stopped cleanly. On a revocation it stops emitting before
//! the rebalance completes; a member that stalls past
//! `max.poll.interval.ms` loses the partition the same way. The window in
//! which a stalled old owner and the new one both emit is closed by making
//! every output idempotent: event ids and `PurgeRequested.job` derive from
//! [`schedule::run_id`], so consumers deduplicate a repeated run.
//!
//! **Emitting.** Each [`Due::Tick`] becomes a `ClockTicked` in every
//! partition of every clocked topic; each [`Due::Job`] a `JobDue` on the
//! jobs topic (its schema is still to be written). A purge run reads the
//! accounts with mail in its folder from the storage side, plans them with
//! [`stagger::plan`] and emits one `PurgeRequested` per [`stagger::Slot`]
//! at its time, keyed by account, which the storage writer of F4 executes;
//! the plan's peaks and `past_window` go to metrics and, when the window
//! is too small, an admin alert. A map run renders [`postfix_map::render`]
//! from the status projection, writes it to a temporary file, runs
//! `postmap`, renames it into place, and skips all of that when the digest
//! equals the installed one; it never installs a map while the projection
//! is still catching up (an empty map would make Postfix refuse all mail).

pub mod config;
mod cron_fields;
mod error;
pub mod postfix_map;
pub mod purger;
pub mod schedule;
pub mod stagger;

pub use config::{JobConfig, JobKind, SchedulerConfig};
pub use error::SchedulerError;
pub use schedule::{CatchUp, Due, Schedules};
