//! The milter's metric names, `mailfleet_submission_<name>_<unit>` as in
//! `mailfleet_runtime::metrics`; each is listed in `docs/metrics.md`.

/// Messages answered at their end (or refused at MAIL), by `result`:
/// accepted, infected, banned, too_big, unscannable (refused for good),
/// scan_failed, not_recorded, no_auth (answered 4xx).
pub const MESSAGES: &str = "mailfleet_submission_messages_total";
/// Time from the end of a message to its reply: the scan and Kafka's
/// acknowledgement.
pub const EOM_DURATION: &str = "mailfleet_submission_eom_duration_seconds";
/// Bytes of the messages scanned.
pub const BYTES: &str = "mailfleet_submission_scanned_bytes_total";
/// Open milter connections (one per Postfix SMTP session).
pub const CONNECTIONS: &str = "mailfleet_submission_connections";
/// Connections closed at once: the client is outside `submission.allow`,
/// or `max_connections` were open.
pub const CONNECTIONS_REFUSED: &str = "mailfleet_submission_connections_refused_total";
/// Connections closed because the MTA broke the protocol (a malformed or
/// oversized packet, a command out of order).
pub const PROTOCOL_ERRORS: &str = "mailfleet_submission_protocol_errors_total";
/// Messages the MTA abandoned before their end (SMFIC_ABORT, or the
/// connection lost mid-message).
pub const ABORTED: &str = "mailfleet_submission_aborted_total";

/// Every name, for the tests that each is documented and emitted.
pub const ALL: &[&str] = &[
    MESSAGES,
    EOM_DURATION,
    BYTES,
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    PROTOCOL_ERRORS,
    ABORTED,
];

/// The `result` labels of [`MESSAGES`].
pub const RESULTS: &[&str] = &[
    "accepted",
    "infected",
    "banned",
    "too_big",
    "unscannable",
    "scan_failed",
    "not_recorded",
    "no_auth",
];

/// The `reason` labels of [`CONNECTIONS_REFUSED`].
pub const REFUSALS: &[&str] = &["not_allowed", "busy"];

/// Put every series at 0, so that rates and alerts see them before the
/// first event.
pub fn init() {
    for result in RESULTS {
        metrics::counter!(MESSAGES, "result" => *result).increment(0);
    }
    for reason in REFUSALS {
        metrics::counter!(CONNECTIONS_REFUSED, "reason" => *reason).increment(0);
    }
    metrics::counter!(BYTES).increment(0);
    metrics::gauge!(CONNECTIONS).set(0.0);
    metrics::counter!(PROTOCOL_ERRORS).increment(0);
    metrics::counter!(ABORTED).increment(0);
}
