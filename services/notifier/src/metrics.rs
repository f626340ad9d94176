//! The notifier's metric names, `mailfleet_notifier_<name>_<unit>` as in
//! `mailfleet_runtime::metrics`. Each carries a `template` label (only
//! known template names; `unknown` otherwise).

/// Mails the relay accepted.
pub const SENT: &str = "mailfleet_notifier_sent_total";
/// Notices not sent, by `kind`: `rejected` (cannot be composed:
/// dead-lettered), `refused` (5xx: dead-lettered), `deferred` (relay down
/// or 4xx: retried).
pub const FAILED: &str = "mailfleet_notifier_failed_total";
/// Notices whose transaction began but whose end was never recorded (a
/// crash, or a connection lost after the message was handed over): not
/// sent again, as the mail may have gone out.
pub const UNKNOWN: &str = "mailfleet_notifier_unknown_outcome_total";
/// Inputs whose mail the sent-log shows as already sent (a re-run or a
/// replay): skipped.
pub const DUPLICATES: &str = "mailfleet_notifier_duplicates_total";
/// Time of one SMTP transaction, connect to the final reply.
pub const SEND_DURATION: &str = "mailfleet_notifier_send_duration_seconds";

/// Every name, for the test that each is emitted.
pub const ALL: &[&str] = &[SENT, FAILED, UNKNOWN, DUPLICATES, SEND_DURATION];
