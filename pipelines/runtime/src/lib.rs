//! The mailfleet consumer runtime: Kafka in, pure decisions, RocksDB state
//! and input offsets committed together, outputs with deterministic ids.
//!
//! Start with [`Consumer`] (what a topic consumer implements: `decide`, and
//! optionally `effect`), then [`run`] (the batch loop, whose module doc
//! states the delivery guarantee and its precondition). [`Topology`] says
//! which consumer reads which topics; [`admin::apply`] creates them.

pub mod admin;
pub mod allow;
pub mod calendar;
pub mod changelog;
pub mod config;
mod consumer;
pub mod dedup;
mod error;
pub mod follow;
mod inputs;
pub mod listen;
pub mod metrics;
pub mod producer;
pub mod read;
mod read_cache;
pub mod replication;
mod runner;
pub mod settings;
mod shutdown;
mod state;
pub mod store;
pub mod time;
pub mod topology;
pub mod wiring;

/// For [`inputs!`]: the event types the generated code names.
#[doc(hidden)]
pub use mailfleet_events as __events;

pub use consumer::{
    output_id, Consumer, Decision, Decode, Emit, Input, Outcome, RecordMeta, Verdict,
};
pub use error::{RuntimeError, StateError, ValueError};
pub use runner::{offline, run, Capture, RunSpec, RunStats, FETCH_DEFAULTS};
pub use shutdown::{hold_signals, leave_group, Shutdown};
pub use state::{partition_key, split_partition_key, Overlay, StateKey, StateValue, StateView};
pub use store::Store;
pub use topology::Topology;
pub use wiring::Wiring;
