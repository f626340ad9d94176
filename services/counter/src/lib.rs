//! The counting consumer: the worked example of a mailfleet topic consumer
//! (see `docs/adding-a-consumer.md`).
//!
//! It reads `TestEvent`s, keeps a count per key in its RocksDB state, and
//! emits a `Counted` event with the running count for each one. The runtime
//! tests and the consume benchmark run it. Start at [`decide`].

mod config;
mod decide;
pub mod traffic;

pub use config::CounterConfig;
pub use decide::{stored_counts, CountKey, Counter};

/// The counter as `mailfleet run counter` runs it: counts go to the first
/// topic of its route.
pub async fn build(
    cfg: &CounterConfig,
    wiring: &mailfleet_runtime::Wiring,
) -> Result<Counter, mailfleet_runtime::RuntimeError> {
    Ok(Counter::new(cfg.clone(), wiring.first_output()))
}
