//! The end of a message: scan it, record the verdict on Kafka, and only
//! then answer. The reply never runs ahead of the record: a clean message
//! is let through only once its `MessageSubmitted` is acknowledged
//! (`acks=all`, idempotent producer), and a refused one is refused only
//! once its refusal is on the log, where the consumer that blocks the
//! account reads it. Without the acknowledgement the answer is `451 4.7.1`
//! and the client submits again (with the same event id, see
//! [`crate::decide`]).

use std::time::{Duration, Instant};

use mailfleet_events::mail::SpamResult;
use mailfleet_runtime::time::now_ms;
use mailfleet_scan::{
    rspamd::{CheckEnvelope, Disposition},
    SpamOutcome, Verdict,
};
use tracing::Instrument;

use crate::{
    decide, fault, metrics as m, milter::reply::Reply, server::Milter, session::Submission,
};

impl Milter {
    /// Scan, record and answer one message.
    pub(crate) async fn end_of_message(&self, submission: Submission) -> Reply {
        let span = tracing::info_span!(
            "submission",
            queue_id = submission.queue_id.as_deref().unwrap_or("-"),
            account = %submission.account,
        );
        async {
            if let Some(hold) = fault::hold() {
                tracing::warn!(?hold, "{} is set: holding the message", fault::HOLD_ENV);
                tokio::time::sleep(hold).await;
            }
            let started = Instant::now();
            let (reply, result) = self.judge(&submission).await;
            metrics::counter!(m::MESSAGES, "result" => result).increment(1);
            metrics::histogram!(m::EOM_DURATION).record(started.elapsed().as_secs_f64());
            reply
        }
        .instrument(span)
        .await
    }

    /// The reply and the `result` label.
    async fn judge(&self, submission: &Submission) -> (Reply, &'static str) {
        let bytes = &submission.message.bytes;
        let verdict = match self.engine.scan(bytes).await {
            Ok(verdict) => verdict,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "scan failed; answering 451 4.7.1");
                return (decide::scan_failed_reply(), "scan_failed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "message cannot be scanned; answering 552 5.3.4");
                return (decide::unscannable_reply(), "unscannable");
            }
        };
        let spam = match self.spam(submission, &verdict).await {
            Ok(spam) => spam,
            Err(e) => {
                tracing::warn!(error = %e, "spam scan failed; answering 451 4.7.1");
                return (decide::scan_failed_reply(), "scan_failed");
            }
        };
        metrics::counter!(m::BYTES).increment(bytes.len() as u64);
        if let Err(error) = self.record(submission, &verdict, spam.as_ref()).await {
            let cause = std::error::Error::source(&error).map(ToString::to_string);
            tracing::warn!(%error, ?cause, ?verdict, "event not acknowledged; answering 451 4.7.1");
            return (decide::not_recorded_reply(), "not_recorded");
        }
        if let Some(spam) = &spam {
            tracing::info!(sender = %submission.sender, score = spam.score,
                action = spam.action.as_rspamd(), "refused as spam");
            return (decide::spam_reply(spam), "spam");
        }
        match &verdict {
            Verdict::Clean => tracing::debug!(size = bytes.len(), "clean; accepted"),
            refused => tracing::info!(sender = %submission.sender, verdict = ?refused, "refused"),
        }
        (
            decide::verdict_reply(&verdict),
            decide::verdict_label(&verdict),
        )
    }

    /// rspamd's answer on a clean submission, when the configured actions
    /// refuse it (its `reject`, by default); `None` to let it through. The
    /// account's login goes to rspamd as `User`. rspamd not answering is
    /// the fail mode's: unscored under `deliver`, an error (451) under
    /// `retry`.
    async fn spam(
        &self,
        submission: &Submission,
        verdict: &Verdict,
    ) -> Result<Option<SpamResult>, mailfleet_scan::ScanError> {
        if *verdict != Verdict::Clean {
            return Ok(None);
        }
        let envelope = CheckEnvelope {
            from: submission.sender.clone(),
            rcpts: submission.recipients.clone(),
            ip: submission.client_address.clone(),
            queue_id: submission.queue_id.clone(),
            user: Some(submission.account.clone()),
            ..CheckEnvelope::default()
        };
        match self
            .engine
            .spam(&submission.message.bytes, &envelope)
            .await?
        {
            SpamOutcome::Scored(result)
                if self.engine.disposition(&result) == Disposition::Quarantine =>
            {
                Ok(Some(result))
            }
            SpamOutcome::Unscored(why) => {
                tracing::warn!(%why, "submission not scored; accepted");
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Produce the event and wait for Kafka's acknowledgement, at most
    /// `ack_timeout_ms` (librdkafka's own delivery timeout is the same; the
    /// extra second only guards against it not firing).
    async fn record(
        &self,
        submission: &Submission,
        verdict: &Verdict,
        spam: Option<&SpamResult>,
    ) -> Result<(), RecordError> {
        let scanner = self.engine.name().await;
        let mut event =
            decide::submitted_event(submission, verdict, &scanner, &self.producer_name, now_ms());
        if let Some(spam) = spam {
            decide::refuse_as_spam(&mut event, spam);
        }
        let limit = Duration::from_millis(self.cfg.ack_timeout_ms) + Duration::from_secs(1);
        let send = self
            .producer
            .send(&self.cfg.topic, submission.account.as_bytes(), &event);
        match tokio::time::timeout(limit, send).await {
            Ok(acked) => acked.map(|_| ()).map_err(RecordError::Produce),
            Err(_) => Err(RecordError::Timeout(limit)),
        }
    }
}

/// Why an event was not recorded.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("producing MessageSubmitted")]
    Produce(#[source] mailfleet_runtime::RuntimeError),
    #[error("no acknowledgement from Kafka within {0:?}")]
    Timeout(Duration),
}
