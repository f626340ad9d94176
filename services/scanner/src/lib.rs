//! The scanner consumer: for each `MessageReceived`, scan the stored
//! message (clamd, then the attachment policy) and emit `MessageScanned`.
//!
//! It is an effector: the verdict comes from I/O, so `decide` only checks
//! the input and the effect returns the verdict's events
//! ([`Outcome::Emitted`]). clamd down is `Temporary`: the partition waits
//! and retries, and no verdict is ever invented. A virus sent by one of
//! our own accounts also emits `AccountBlocked` and an `AdminAlert`.
//!
//! Start at [`Scanner`]: [`decide`] is the pure part, `effects.rs` reads
//! the blob (crate `mailfleet-blob`) and scans it (crate `mailfleet-scan`).

mod config;
pub mod decide;
mod effects;

use std::{future::Future, sync::Arc};

use mailfleet_blob::BlobStore;
use mailfleet_events::mail::MessageReceived;
use mailfleet_runtime::{metrics as m, Consumer, Decision, Input, Outcome, StateError, StateView};
use mailfleet_scan::Engine;

pub use config::ScannerConfig;

/// The consumer's name: its metrics label, output ids and store folder.
pub const NAME: &str = "scanner";

/// The scanner consumer.
pub struct Scanner {
    cfg: ScannerConfig,
    blobs: Arc<BlobStore>,
    /// The attachment policy and clamd, the same calls the submission
    /// milter makes.
    engine: Engine,
}

impl Scanner {
    pub fn new(cfg: ScannerConfig, blobs: Arc<BlobStore>) -> Self {
        let clamd = cfg.use_clamd.then(|| cfg.clamd.clone());
        let engine = Engine::new(cfg.policy.clone(), clamd);
        // Exported from the start, so that alerts on failures have a series.
        for kind in ["clamd", "blob"] {
            metrics::counter!(m::SCANNER_FAILURES, "kind" => kind).increment(0);
        }
        Self { cfg, blobs, engine }
    }
}

impl Consumer for Scanner {
    type Event = MessageReceived;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        _state: &StateView<'_>,
        input: &Input<MessageReceived>,
    ) -> Result<Decision, StateError> {
        Ok(decide::check(&input.event))
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn effect(
        &self,
        input: &Input<MessageReceived>,
        _decision: &Decision,
    ) -> impl Future<Output = Outcome> + Send {
        self.scan(&input.event)
    }
}

/// The scanner as `mailfleet run scanner` runs it, over the blob store.
pub async fn build(
    cfg: &ScannerConfig,
    blobs: Arc<BlobStore>,
    _wiring: &mailfleet_runtime::Wiring,
) -> Result<Scanner, mailfleet_runtime::RuntimeError> {
    Ok(Scanner::new(cfg.clone(), blobs))
}
