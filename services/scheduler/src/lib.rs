//! The scheduler (F6): its pure core and the processes around it.
//!
//! The pure core says what is due when, how a purge is spread out, and
//! what the Postfix recipient map says. No I/O: every function of the core
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
//! - [`postfix_map`]: the `virtual_mailbox_maps` text and its digest;
//! - [`purger`]: the purge planner consumer (`mailfleet run purger`), which
//!   plans each purge run per partition and releases `PurgeRequested` on
//!   the clock ticks.
//!
//! The processes around it, which the `mailfleet` binary runs with the
//! config sections of [`section`] ([`ProcessConfig`]):
//!
//! - [`emitter`]: `mailfleet scheduler` (the lease, the ticks, the `JobDue`
//!   runs and the catch-up);
//! - [`clock`]: `mailfleet clock`, ticks alone, once or every period;
//! - [`postfix_install`]: `mailfleet postfix-map`, the map installer.
//!
//! `docs/scheduler.md` describes all three jobs end to end.

pub mod clock;
pub mod config;
mod cron_fields;
pub mod emitter;
mod error;
pub mod postfix_install;
pub mod postfix_map;
pub mod purger;
pub mod schedule;
pub mod section;
pub mod stagger;

pub use config::{JobConfig, JobKind, SchedulerConfig};
pub use error::SchedulerError;
pub use schedule::{CatchUp, Due, Schedules};
pub use section::{ClockConfig, PostfixMapConfig, ProcessConfig, SchedulerSection};
