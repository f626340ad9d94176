//! The outbound limits consumer (`mailfleet run outbound`): what the
//! service's own users may send, per account, over sliding windows.
//!
//! For each recipient of an authenticated submission the policy server
//! writes a `SubmissionAttempted` to `submission.attempts` and waits for
//! the `SubmissionDecided` with the attempt's id as `causation_id` on
//! `submission.decisions` (as it does for greylisting). The submission
//! filter's `MessageSubmitted` (`mail.submitted`) counts each relayed
//! message and its bytes, and a virus in one blocks the account at once.
//! The plans and blocks come from `accounts.events`. Limits per plan,
//! and what counts as abuse, are in [`OutboundConfig`]; the rules are in
//! [`decide`] (start at [`decide::decide`]), the windows in [`windows`],
//! the state in [`state`]. All three input topics are keyed by account,
//! so one account's state lives in one partition.
//!
//! No effects: a replay or `mailfleet audit decisions outbound` recomputes
//! every output from the log, with the settings recorded in it
//! (`ConfigChanged`).

mod config;
pub mod decide;
mod error;
pub mod metrics;
mod outputs;
pub mod state;
pub mod windows;

use mailfleet_runtime::{
    settings::{InForce, Settings},
    Consumer, Decision, Input, RuntimeError, StateError, StateView,
};

pub use config::{OutboundConfig, OutboundRules, PlanLimits, MAX_TRACKED_RECIPIENTS};
pub use decide::{Limit, OutboundInput};
pub use error::OutboundError;
pub use outputs::{ABUSE_KIND, VIRUS_KIND};

/// The consumer's name.
pub const NAME: &str = "outbound";

/// The outbound limits consumer: no effects, only events.
pub struct Outbound {
    /// The config file's limits until a `ConfigChanged`, then the log's.
    in_force: InForce<OutboundConfig>,
}

impl Outbound {
    pub fn new(cfg: OutboundConfig) -> Self {
        Self {
            in_force: InForce::new(NAME, cfg),
        }
    }

    /// Its config file's config.
    pub fn config(&self) -> &OutboundConfig {
        self.in_force.file()
    }

    /// The settings this config file gives, as a `ConfigChanged` records them.
    pub fn settings(&self) -> Result<Settings, RuntimeError> {
        self.in_force.settings()
    }
}

impl Consumer for Outbound {
    type Event = OutboundInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<OutboundInput>,
    ) -> Result<Decision, StateError> {
        if let OutboundInput::Config(c) = &input.event {
            return self.in_force.take_recorded(state, c);
        }
        let (cfg, _) = self.in_force.current(state)?;
        decide::decide(&cfg, state, &input.event)
    }
}

/// The outbound limits as `mailfleet run outbound` runs them; a live run
/// records their settings.
pub async fn build(
    cfg: &OutboundConfig,
    wiring: &mailfleet_runtime::Wiring,
) -> Result<Outbound, mailfleet_runtime::RuntimeError> {
    let outbound = Outbound::new(cfg.clone());
    let settings = outbound.settings().map_err(|e| wiring.invalid(e))?;
    wiring.record_settings(&settings).await?;
    Ok(outbound)
}
