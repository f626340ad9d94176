//! Metric names (the telemetry contract) and the Prometheus exporter.
//!
//! Names follow `mailfleet_<area>_<name>_<unit>`. Every metric carries a
//! `consumer` label; lag also carries `topic` and `partition`.

use mailfleet_events::runtime::DeadLetterKind;
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::{config::MetricsConfig, error::RuntimeError};

/// Inputs handled (applied, ignored or dead-lettered), per consumer.
pub const EVENTS_PROCESSED: &str = "mailfleet_runtime_events_processed_total";
/// Output events produced and acknowledged by Kafka.
pub const OUTPUTS_PRODUCED: &str = "mailfleet_runtime_outputs_produced_total";
/// Failures by `kind`: poll, produce, unacked (outputs still waiting for
/// Kafka's acknowledgement, every 5 s), store, transient.
pub const ERRORS: &str = "mailfleet_runtime_errors_total";
/// Inputs sent to the dead-letter topic, by `kind`.
pub const DEADLETTERS: &str = "mailfleet_runtime_deadletters_total";
/// Partitions paused for a retry after a transient failure.
pub const RETRIES: &str = "mailfleet_runtime_retries_total";
/// Time from the first poll of a batch to its commit.
pub const BATCH_DURATION: &str = "mailfleet_runtime_batch_duration_seconds";
/// Events per committed batch.
pub const BATCH_EVENTS: &str = "mailfleet_runtime_batch_events";
/// Records between the committed offset and the partition's end.
pub const CONSUMER_LAG: &str = "mailfleet_runtime_consumer_lag_events";
/// Partitions currently assigned to this process.
pub const ASSIGNED_PARTITIONS: &str = "mailfleet_runtime_assigned_partitions";
/// Records of a multi-topic consumer queued for the cross-topic merge.
pub const MERGE_HELD: &str = "mailfleet_runtime_merge_held_events";
/// Records that arrived with an append time before one already released in
/// their partition: their order may differ from a replay's.
pub const MERGE_LATE: &str = "mailfleet_runtime_merge_late_total";

/// Greylist decisions made, by `verdict` and `reason`.
pub const GREYLIST_DECISIONS: &str = "mailfleet_greylist_decisions_total";
/// Attempts the policy server had already answered (`answered`) whose
/// decision gave another action: each is also in `audit decisions greylist`.
pub const GREYLIST_ANSWERED_DIFFERENTLY: &str = "mailfleet_greylist_answered_differently_total";
/// Account status transitions decided by the lifecycle, by `to`.
pub const LIFECYCLE_TRANSITIONS: &str = "mailfleet_lifecycle_transitions_total";

/// Policy requests answered, by `result`: decided, repeat (a triplet
/// the greylist let through, answered once the attempt was acknowledged),
/// timeout, not_rcpt, and
/// for authenticated submissions submission_pass, submission_defer,
/// submission_refused, submission_not_ready, submission_timeout.
pub const POLICY_REQUESTS: &str = "mailfleet_policy_requests_total";
/// Time from an RCPT request to its answer.
pub const POLICY_REQUEST_DURATION: &str = "mailfleet_policy_request_duration_seconds";
/// Where an answer's time went, by `stage`: `acknowledged` (the attempt
/// produced until Kafka acknowledged it), `decided` (from then until its
/// decision was read back from the decisions topic).
pub const POLICY_WAIT: &str = "mailfleet_policy_wait_seconds";
/// Requests refused as malformed, oversized or too slow (connection closed).
pub const POLICY_MALFORMED: &str = "mailfleet_policy_malformed_total";
/// Open Postfix connections.
pub const POLICY_CONNECTIONS: &str = "mailfleet_policy_connections";
/// Connections closed at once because `max_connections` were open.
pub const POLICY_CONNECTIONS_REFUSED: &str = "mailfleet_policy_connections_refused_total";
/// Connections closed at once because the client is outside `policy.allow`.
pub const POLICY_CONNECTIONS_DENIED: &str = "mailfleet_policy_connections_denied_total";

/// The policy server's names, for the test that each is emitted.
pub const POLICY_ALL: &[&str] = &[
    POLICY_REQUESTS,
    POLICY_REQUEST_DURATION,
    POLICY_WAIT,
    POLICY_MALFORMED,
    POLICY_CONNECTIONS,
    POLICY_CONNECTIONS_REFUSED,
    POLICY_CONNECTIONS_DENIED,
];

/// LMTP messages (DATA phases), by `result`: accepted, partial (some
/// recipients got 451), too_big, storage_failed, kafka_failed.
pub const LMTP_MESSAGES: &str = "mailfleet_lmtp_messages_total";
/// LMTP recipients answered after DATA, by `result`: accepted, deferred, rejected.
pub const LMTP_RECIPIENTS: &str = "mailfleet_lmtp_recipients_total";
/// Raw bytes of accepted messages.
pub const LMTP_BYTES: &str = "mailfleet_lmtp_received_bytes_total";
/// Time from the end of DATA to the replies: blob fsync plus Kafka acks.
pub const LMTP_ACK_DURATION: &str = "mailfleet_lmtp_ack_duration_seconds";
/// Open LMTP connections.
pub const LMTP_CONNECTIONS: &str = "mailfleet_lmtp_connections";
/// DATA phases cut off by the client before the final dot.
pub const LMTP_ABORTED: &str = "mailfleet_lmtp_aborted_total";
/// Connections answered `421 4.7.0` and closed: client outside `lmtp.allow`.
pub const LMTP_CONNECTIONS_DENIED: &str = "mailfleet_lmtp_connections_denied_total";
/// LMTP STARTTLS handshakes, by `result`: ok, failed (closed; the reason is
/// logged with the client's address).
pub const LMTP_TLS_HANDSHAKES: &str = "mailfleet_lmtp_tls_handshakes_total";

/// The LMTP server's names, for the test that each is emitted.
pub const LMTP_ALL: &[&str] = &[
    LMTP_MESSAGES,
    LMTP_RECIPIENTS,
    LMTP_BYTES,
    LMTP_ACK_DURATION,
    LMTP_CONNECTIONS,
    LMTP_ABORTED,
    LMTP_CONNECTIONS_DENIED,
    LMTP_TLS_HANDSHAKES,
];

/// Messages scanned, by `verdict`: clean, infected, banned.
pub const SCANNER_VERDICTS: &str = "mailfleet_scanner_verdicts_total";
/// Time to scan one message (blob read, clamd, attachment policy).
pub const SCANNER_DURATION: &str = "mailfleet_scanner_scan_duration_seconds";
/// Scans that could not finish, by `kind`: clamd, blob, rspamd (fail
/// mode `retry` only).
pub const SCANNER_FAILURES: &str = "mailfleet_scanner_failures_total";
/// Messages rspamd scored, by its `action` (`no action`, `add header`,
/// `reject`, ...).
pub const SCANNER_SPAM: &str = "mailfleet_scanner_spam_total";
/// Messages delivered unscored because rspamd did not answer (fail mode
/// `deliver`) or the message was past `max_size`, by `reason`: rspamd,
/// size.
pub const SCANNER_SPAM_UNSCORED: &str = "mailfleet_scanner_spam_unscored_total";

/// The scanner's names, for the test that each is emitted.
pub const SCANNER_ALL: &[&str] = &[
    SCANNER_VERDICTS,
    SCANNER_DURATION,
    SCANNER_FAILURES,
    SCANNER_SPAM,
    SCANNER_SPAM_UNSCORED,
];

/// Messages in the index, per input `partition` (sum for the total).
pub const INDEX_MESSAGES: &str = "mailfleet_index_messages";
/// Bytes of the indexed messages, per input `partition`.
pub const INDEX_BYTES: &str = "mailfleet_index_bytes";
/// Bytes stored, per `plan` and input `partition` (sum over partitions).
pub const STORAGE_BYTES: &str = "mailfleet_storage_bytes";
/// Storage writer results, by `result`: stored, quarantined, rejected, purged.
pub const STORAGE_MESSAGES: &str = "mailfleet_storage_messages_total";

/// The storage writer's and the indexer's names, for the test that each is emitted.
pub const STORAGE_ALL: &[&str] = &[INDEX_MESSAGES, INDEX_BYTES, STORAGE_BYTES, STORAGE_MESSAGES];

/// Purges a purge run planned, per `job` (the run's job name).
pub const PURGES_PLANNED: &str = "mailfleet_purges_planned_total";
/// `PurgeRequested` released on clock ticks, per `folder`.
pub const PURGES_RELEASED: &str = "mailfleet_purges_released_total";
/// The busiest minute of the latest plan, per `job` and `partition` (one
/// partition's share: the sum over partitions is the whole run's bound).
pub const PURGE_PLAN_PEAK_PER_MINUTE: &str = "mailfleet_purge_plan_peak_per_minute";
/// Accounts of the latest plan placed past its window, per `job` and
/// `partition` (more than 0: the window is too small at the rate limit).
pub const PURGE_PLAN_PAST_WINDOW: &str = "mailfleet_purge_plan_past_window";
/// The busiest minute actually released (by planned time), per `partition`.
pub const PURGES_RELEASED_PEAK_PER_MINUTE: &str = "mailfleet_purges_released_peak_per_minute";

/// Lines in the installed Postfix recipient map.
pub const POSTFIX_MAP_ENTRIES: &str = "mailfleet_postfix_map_entries";
/// Postfix map runs, by `result`: installed, unchanged, failed.
pub const POSTFIX_MAP_RUNS: &str = "mailfleet_postfix_map_runs_total";

/// The Postfix map installer's names, for the test that each is emitted.
pub const POSTFIX_MAP_ALL: &[&str] = &[POSTFIX_MAP_ENTRIES, POSTFIX_MAP_RUNS];

/// Job runs (`JobDue`) the active scheduler wrote, per `job`.
pub const SCHEDULER_RUNS: &str = "mailfleet_scheduler_runs_total";
/// 1 while this scheduler holds the lease and emits, 0 on standby.
pub const SCHEDULER_LEADER: &str = "mailfleet_scheduler_leader";
/// Clock instants emitted (one `ClockTicked` into every partition of each
/// clocked topic), per `clock` (`every-<n>s`); by `mailfleet clock` and by
/// the active `mailfleet scheduler`.
pub const CLOCK_TICKS: &str = "mailfleet_clock_ticks_total";

/// The scheduler's names, for the test that each is emitted.
pub const SCHEDULER_ALL: &[&str] = &[SCHEDULER_RUNS, SCHEDULER_LEADER, CLOCK_TICKS];
/// The clock's names, for the test that each is emitted.
pub const CLOCK_ALL: &[&str] = &[CLOCK_TICKS];

/// Account API requests answered, by `route` (method and route pattern,
/// e.g. `POST /accounts`; `unmatched` for no route) and `status` (the code).
pub const API_REQUESTS: &str = "mailfleet_api_requests_total";
/// Time from a request's arrival to its answer, by `route`.
pub const API_REQUEST_DURATION: &str = "mailfleet_api_request_duration_seconds";

/// TLS handshakes the account API refused or lost (`[api.tls]`), by
/// `reason`: timeout, client_certificate, client_alert, protocol, io.
pub const API_TLS_HANDSHAKE_FAILURES: &str = "mailfleet_api_tls_handshake_failures_total";

/// The account API's names, for the test that each is emitted.
pub const API_ALL: &[&str] = &[
    API_REQUESTS,
    API_REQUEST_DURATION,
    API_TLS_HANDSHAKE_FAILURES,
];

/// The purge planner's names, for the test that each is emitted.
pub const PURGER_ALL: &[&str] = &[
    PURGES_PLANNED,
    PURGES_RELEASED,
    PURGE_PLAN_PEAK_PER_MINUTE,
    PURGE_PLAN_PAST_WINDOW,
    PURGES_RELEASED_PEAK_PER_MINUTE,
];

/// The runtime's names, for the test that each is emitted.
pub const ALL: &[&str] = &[
    EVENTS_PROCESSED,
    OUTPUTS_PRODUCED,
    ERRORS,
    DEADLETTERS,
    RETRIES,
    BATCH_DURATION,
    BATCH_EVENTS,
    CONSUMER_LAG,
    ASSIGNED_PARTITIONS,
];

/// The `kind`s of [`ERRORS`] the runner counts.
pub const ERROR_KINDS: &[&str] = &["poll", "produce", "unacked", "transient"];

/// Every [`DeadLetterKind`], as the `kind` label of [`DEADLETTERS`] spells
/// it (its `Debug` name).
pub fn dead_letter_kinds() -> Vec<String> {
    use DeadLetterKind::*;
    let all = [Undecodable, UnknownSchema, WrongType, Rejected, Unknown];
    // A new kind fails to compile here until it is added to `all`.
    all.iter()
        .map(|k| match k {
            Undecodable | UnknownSchema | WrongType | Rejected | Unknown => format!("{k:?}"),
        })
        .collect()
}

/// Put a consumer's failure counters at 0 (each error and dead-letter
/// kind, and the retries) when it starts, so that `rate()` and alerts see
/// them before the first failure.
pub fn init_consumer(consumer: &str) {
    for kind in ERROR_KINDS {
        metrics::counter!(ERRORS, "consumer" => consumer.to_string(), "kind" => *kind).increment(0);
    }
    for kind in dead_letter_kinds() {
        metrics::counter!(DEADLETTERS, "consumer" => consumer.to_string(), "kind" => kind)
            .increment(0);
    }
    metrics::counter!(RETRIES, "consumer" => consumer.to_string()).increment(0);
}

/// Serve `/metrics` on the configured address (loopback by default).
/// Must be called inside a tokio runtime.
pub fn install_exporter(cfg: &MetricsConfig) -> Result<(), RuntimeError> {
    let Some(addr) = cfg.addr() else {
        return Ok(());
    };
    let fail = |reason: String| RuntimeError::Metrics {
        listen: cfg.listen.clone(),
        reason,
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // Every duration is a histogram with buckets (not a summary), so
        // dashboards can aggregate quantiles across processes.
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_string()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0,
            ],
        )
        .map_err(|e| fail(e.to_string()))?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(BATCH_EVENTS.to_string()),
            &[1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0],
        )
        .map_err(|e| fail(e.to_string()))?
        .install()
        .map_err(|e| fail(e.to_string()))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        EVENTS_PROCESSED,
        "Inputs handled: applied, ignored or dead-lettered"
    );
    describe_counter!(OUTPUTS_PRODUCED, "Output events acknowledged by Kafka");
    describe_counter!(ERRORS, "Failures by kind");
    describe_counter!(DEADLETTERS, "Inputs sent to the dead-letter topic");
    describe_counter!(RETRIES, "Partitions paused for a retry");
    describe_histogram!(
        BATCH_DURATION,
        Unit::Seconds,
        "Poll-to-commit time of a batch"
    );
    describe_histogram!(BATCH_EVENTS, "Events per committed batch");
    describe_gauge!(
        CONSUMER_LAG,
        "Records between committed offset and partition end"
    );
    describe_gauge!(ASSIGNED_PARTITIONS, "Partitions assigned to this process");
    describe_gauge!(MERGE_HELD, "Records queued for the cross-topic merge");
    describe_counter!(
        MERGE_LATE,
        "Records that arrived after a later one of their partition was released"
    );
}
