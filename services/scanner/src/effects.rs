//! The scanner's I/O: read the blob, ask clamd, apply the policy.

use std::time::Instant;

use mailfleet_blob::BlobError;
use mailfleet_events::mail::MessageReceived;
use mailfleet_runtime::{metrics as m, Outcome};
use mailfleet_scan::Verdict;

use super::{decide, Scanner};

impl Scanner {
    /// Scan one message and turn the verdict into events.
    pub(super) async fn scan(&self, received: &MessageReceived) -> Outcome {
        let started = Instant::now();
        let raw = match self.read(&received.blob_id).await {
            Ok(raw) => raw,
            Err(outcome) => return outcome,
        };
        let verdict = match self.engine.scan(&raw).await {
            Ok(v) => v,
            Err(e) => {
                metrics::counter!(m::SCANNER_FAILURES, "kind" => "clamd").increment(1);
                let reason = format!("scanning blob {}: {e}", received.blob_id);
                return if e.is_transient() {
                    Outcome::Temporary(reason)
                } else {
                    Outcome::Permanent(reason)
                };
            }
        };
        let label = match &verdict {
            Verdict::Clean => "clean",
            Verdict::Infected { .. } => "infected",
            Verdict::Banned { .. } => "banned",
        };
        metrics::counter!(m::SCANNER_VERDICTS, "verdict" => label).increment(1);
        metrics::histogram!(m::SCANNER_DURATION).record(started.elapsed().as_secs_f64());
        if !matches!(verdict, Verdict::Clean) {
            tracing::info!(blob = %received.blob_id, account = %received.account,
                sender = %received.sender, ?verdict, "message not clean");
        }
        let scanner = self.engine.name().await;
        Outcome::Emitted(decide::verdict_events(
            &self.cfg, received, &verdict, &scanner,
        ))
    }

    /// The raw message, or the outcome when it cannot be read: a missing or
    /// corrupt blob never becomes readable (dead letter, with the reason); an
    /// I/O error may pass (retry).
    async fn read(&self, id: &str) -> Result<Vec<u8>, Outcome> {
        let blobs = self.blobs.clone();
        let owned = id.to_string();
        let read = tokio::task::spawn_blocking(move || blobs.get(&owned)).await;
        let failure = match read {
            Ok(Ok(raw)) => return Ok(raw),
            Ok(Err(
                e @ (BlobError::NotFound { .. } | BlobError::BadId(_) | BlobError::Corrupt { .. }),
            )) => Outcome::Permanent(e.to_string()),
            Ok(Err(e)) => Outcome::Temporary(e.to_string()),
            Err(e) => Outcome::Temporary(format!("reading blob {id}: {e}")),
        };
        metrics::counter!(m::SCANNER_FAILURES, "kind" => "blob").increment(1);
        Err(failure)
    }
}
