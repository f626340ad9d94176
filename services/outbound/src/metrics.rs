//! The outbound limits' metric names, `mailfleet_outbound_<name>_<unit>`
//! as in `mailfleet_runtime::metrics`, and the two places they are
//! counted.

use mailfleet_events::accounts::BlockReason;

use crate::decide::Limit;

/// Decisions on submission attempts, by `action` (`pass`, `defer`) and
/// `limit` (the limit's name, `none` for a pass).
pub const DECISIONS: &str = "mailfleet_outbound_decisions_total";
/// Accounts blocked by this consumer, by `reason` (`abuse`, `virus`).
pub const BLOCKS: &str = "mailfleet_outbound_blocks_total";

/// Every name, for the docs test and the test that each is emitted.
pub const ALL: &[&str] = &[DECISIONS, BLOCKS];

/// Count one decision.
pub fn decided(limit: Option<Limit>) {
    let (action, limit) = match limit {
        None => ("pass", "none"),
        Some(l) => ("defer", l.name()),
    };
    metrics::counter!(DECISIONS, "action" => action, "limit" => limit).increment(1);
}

/// Count one block.
pub fn blocked(reason: BlockReason) {
    let reason = match reason {
        BlockReason::Virus => "virus",
        BlockReason::Abuse => "abuse",
        BlockReason::Admin => "admin",
        BlockReason::Unknown => "unknown",
    };
    metrics::counter!(BLOCKS, "reason" => reason).increment(1);
}
