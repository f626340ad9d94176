//! The scanner's I/O: read the blob, ask clamd, apply the policy.

use std::time::Instant;

use mailfleet_blob::BlobError;
use mailfleet_events::mail::MessageReceived;
use mailfleet_runtime::{metrics as m, Outcome};
use mailfleet_scan::{rspamd::CheckEnvelope, SpamOutcome, Verdict};

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
        let spam = if matches!(verdict, Verdict::Clean) {
            match self.spam(received, &raw).await {
                Ok(spam) => spam,
                Err(outcome) => return outcome,
            }
        } else {
            SpamOutcome::NotAsked
        };
        let quarantine = match &spam {
            SpamOutcome::Scored(result) => {
                self.engine.disposition(result) == mailfleet_scan::rspamd::Disposition::Quarantine
            }
            _ => false,
        };
        let scanner = self.engine.name().await;
        Outcome::Emitted(decide::verdict_events(
            &self.cfg,
            received,
            &decide::Scanned {
                verdict: &verdict,
                scanner: &scanner,
                spam,
                quarantine,
            },
        ))
    }

    /// Ask rspamd about a clean message with the envelope it came with.
    /// Under fail mode `retry` no answer is a retry, as for clamd.
    async fn spam(&self, received: &MessageReceived, raw: &[u8]) -> Result<SpamOutcome, Outcome> {
        let envelope = CheckEnvelope {
            from: received.sender.clone(),
            rcpts: vec![received.recipient.clone()],
            ip: received.client_address.clone(),
            helo: received.client_helo.clone(),
            hostname: received.client_name.clone(),
            queue_id: received.queue_id.clone(),
            user: None,
        };
        let started = Instant::now();
        let spam = match self.engine.spam(raw, &envelope).await {
            Ok(spam) => spam,
            Err(e) => {
                metrics::counter!(m::SCANNER_FAILURES, "kind" => "rspamd").increment(1);
                return Err(Outcome::Temporary(format!(
                    "scoring blob {}: {e}",
                    received.blob_id
                )));
            }
        };
        match &spam {
            SpamOutcome::Scored(result) => {
                let action = result.action.as_rspamd();
                metrics::counter!(m::SCANNER_SPAM, "action" => action).increment(1);
                tracing::debug!(blob = %received.blob_id, action, score = result.score,
                    took_ms = started.elapsed().as_millis() as u64, "spam scored");
            }
            SpamOutcome::Unscored(reason) => {
                let label = if reason.contains("max_size") {
                    "size"
                } else {
                    "rspamd"
                };
                metrics::counter!(m::SCANNER_SPAM_UNSCORED, "reason" => label).increment(1);
                tracing::warn!(blob = %received.blob_id, %reason, "delivered unscored");
            }
            SpamOutcome::NotAsked => {}
        }
        Ok(spam)
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
