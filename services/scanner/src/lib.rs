//! The scanner consumer: for each `MessageReceived`, scan the stored
//! message (clamd, then the attachment policy, then rspamd's spam score)
//! and emit `MessageScanned`.
//!
//! It is an effector: the verdict comes from I/O, so `decide` only checks
//! the input and the effect returns the verdict's events
//! ([`Outcome::Emitted`]). clamd down is `Temporary`: the partition waits
//! and retries, and no verdict is ever invented. rspamd down delivers the
//! message unscored, saying so (fail mode `deliver`), or waits like clamd
//! (`retry`).
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
        let engine = Engine::new(cfg.policy.clone(), clamd).with_rspamd(&cfg.spam);
        // Exported from the start, so that alerts on failures have a series.
        for kind in ["clamd", "blob", "rspamd"] {
            metrics::counter!(m::SCANNER_FAILURES, "kind" => kind).increment(0);
        }
        for reason in ["rspamd", "size"] {
            metrics::counter!(m::SCANNER_SPAM_UNSCORED, "reason" => reason).increment(0);
        }
        metrics::counter!(m::SCANNER_SPAM, "action" => "no action").increment(0);
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
