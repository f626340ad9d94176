//! Accounts over time: the lifecycle decider (this crate's root, below),
//! the [`deleter`] (the deletion saga that `DELETING` starts) and the
//! [`status`] projection of the statuses the lifecycle keeps, which the
//! LMTP server and the policy server read (wired by the binary).
//!
//! # The lifecycle
//!
//! The account lifecycle: a pure decider over `accounts.events` that moves
//! each account through its statuses and says so. Start at
//! [`decide::decide`]; the rules for one event are in `step`, the timers in
//! [`decide::tick`].
//!
//! ```text
//! from                      on                                 to        reason
//! PENDING                   AccountRegistered (with            ACTIVE    registered
//!                           activate_on_register; else it
//!                           is stored PENDING, silently)
//! PENDING, INACTIVE         LoginRecorded                      ACTIVE    login
//! INACTIVE                  AccountReactivated                 ACTIVE    reactivated
//! PENDING, ACTIVE, INACTIVE AccountBlocked                     BLOCKED   virus|admin|abuse
//! BLOCKED                   AccountUnblocked                   ACTIVE    unblocked
//! ACTIVE                    tick >= clock + inactive_after     INACTIVE  no-login-since:<date>
//! INACTIVE                  tick >= since + grace period       DELETING  grace-expired
//! any stored status         AccountDeleted (the tombstone)     DELETED   deleted
//! ```
//!
//! Every transition emits `AccountStatusChanged { from, to, reason }` to
//! `events_topic`, keyed by account, and a copy to the compacted
//! `status_topic` (a pending registration, which is no transition, gets a
//! `PENDING -> PENDING` copy there), whose latest record per account the
//! LMTP server checks at RCPT ([`crate::status`]). Reasons: `registered`, `login`,
//! `virus` / `admin` / `abuse` (`blocked` for an unknown block reason),
//! `unblocked`, `reactivated`, `no-login-since:<YYYY-MM-DD>` (the date the
//! inactivity clock started), `grace-expired`, `deleted`. Becoming inactive
//! also emits `NotificationRequested { template: "deactivated", params:
//! { respond_within_hours, deletion_after } }` to `notify_topic`
//! (`deletion_after` is an RFC 3339 UTC time). Becoming `DELETING` is the
//! request for deletion: the deletion saga (a later piece) keys off
//! `AccountStatusChanged { to: DELETING }` and ends with the `AccountDeleted`
//! tombstone, which this decider reads back.
//!
//! Time is the input's event time, never the wall clock. Timers fire only
//! on `ClockTicked` (in every partition of the topic): a tick at `T` fires
//! every timer due at or before `T`, at most one transition per account, so
//! the grace period always runs from the tick that sent the notice. Until
//! a tick fires a timer, events act on the current status: a login that
//! arrives after the threshold but before the tick still counts. A replay
//! of the same records therefore decides the same transitions.
//!
//! Rules the issue left open:
//! - the inactivity clock starts at registration and restarts at every
//!   login, reactivation and unblock; while blocked it does not run (a
//!   login while blocked changes nothing: the clock restarts at the
//!   unblock, and an unblock always returns the account to `ACTIVE`);
//! - a block of a deleting account, or a second block, changes nothing;
//! - a login (or reactivation) while `DELETING` is too late: ignored;
//! - events for an unknown account (never registered here, or deleted) are
//!   ignored, not dead-lettered: a login racing the tombstone is normal.
//!   Accounts that predate this consumer need an `AccountRegistered`;
//! - a registration for an account that exists is dead-lettered, naming it;
//! - the tombstone deletes the record whatever the status (it is a fact),
//!   so the address can be registered again;
//! - a pending account has no timer.
//!
//! State ([`state`]): one 17-byte record per account and a per-partition
//! watermark of the earliest timer, so a tick before it costs one read and
//! only a tick that may fire something scans the partition's accounts.

mod config;
pub mod decide;
pub mod deleter;
mod error;
pub mod state;
pub mod status;

use mailfleet_runtime::{
    settings::{InForce, Settings},
    Consumer, Decision, Input, RuntimeError, StateError, StateView,
};

pub use config::{LifecycleConfig, LifecycleRules};
pub use decide::{seed, tick, LifecycleInput};
pub use error::LifecycleError;
pub use state::{Account, Status};

/// The consumer's name.
pub const NAME: &str = "lifecycle";

/// The lifecycle consumer: no effects, only events.
pub struct Lifecycle {
    /// The config file's thresholds until a `ConfigChanged`, then the log's.
    in_force: InForce<LifecycleConfig>,
}

impl Lifecycle {
    pub fn new(cfg: LifecycleConfig) -> Self {
        Self {
            in_force: InForce::new(NAME, cfg),
        }
    }

    /// Its config file's config.
    pub fn config(&self) -> &LifecycleConfig {
        self.in_force.file()
    }

    /// The settings this config file gives, as a `ConfigChanged` records them.
    pub fn settings(&self) -> Result<Settings, RuntimeError> {
        self.in_force.settings()
    }
}

impl Consumer for Lifecycle {
    type Event = LifecycleInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<LifecycleInput>,
    ) -> Result<Decision, StateError> {
        if let LifecycleInput::Config(c) = &input.event {
            return self.in_force.take_recorded(state, c);
        }
        let (cfg, _) = self.in_force.current(state)?;
        decide::decide(&cfg, state, &input.event)
    }
}

/// The lifecycle as `mailfleet run lifecycle` runs it; a live run records
/// its settings.
pub async fn build(
    cfg: &LifecycleConfig,
    wiring: &mailfleet_runtime::Wiring,
) -> Result<Lifecycle, mailfleet_runtime::RuntimeError> {
    let lifecycle = Lifecycle::new(cfg.clone());
    let settings = lifecycle.settings().map_err(|e| wiring.invalid(e))?;
    wiring.record_settings(&settings).await?;
    Ok(lifecycle)
}
