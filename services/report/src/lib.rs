//! The monthly report (`mailfleet run reporter`, `mailfleet report`).
//!
//! The original service was run from a monthly report: accounts, storage,
//! load, what went wrong and what changed. The reporter consumer keeps
//! those figures per month from the events alone ([`decide`]); the report
//! command sums them over partitions ([`figures`]) and renders them as
//! Markdown, JSON, or a self-contained HTML page with SVG charts
//! ([`render`]).
//!
//! A month is the UTC calendar month of each event's `event_time`, so a
//! replay of the log gives the same report. Counts (logins, deferrals,
//! purges) are what happened in the month; levels (accounts by status,
//! storage by plan) are every change up to the month's end, in event time,
//! so an event that arrives late still moves its own month and each one
//! after it.

pub mod decide;
pub mod figures;
pub mod month;
pub mod render;
pub mod state;

use mailfleet_runtime::{Consumer, Decision, Input, StateError, StateView};

pub use decide::ReporterInput;
pub use figures::{read_store, report, Figures, Report, Stored};
pub use month::Month;

/// The consumer's name.
pub const NAME: &str = "reporter";

/// The figures' names (and, in comments, their labels).
pub mod names {
    /// Accounts by status (`active`, `inactive`, `blocked`, `deleting`,
    /// `deleted`, `pending`): a level.
    pub const ACCOUNTS: &str = "accounts";
    /// Status changes by the status entered.
    pub const STATUS_CHANGES: &str = "status_changes";
    /// `AccountRegistered`.
    pub const REGISTRATIONS: &str = "registrations";
    /// `PlanChanged`, by the new plan.
    pub const PLAN_CHANGES: &str = "plan_changes";
    /// `MigrationCompleted`.
    pub const MIGRATIONS: &str = "migrations";
    /// Logins by channel (`webmail`, `activesync`, `syncml`, `imap`).
    pub const LOGINS: &str = "logins";
    /// Failed logins by reason.
    pub const LOGIN_FAILURES: &str = "login_failures";
    /// Bytes stored, by plan: a level.
    pub const STORAGE_BYTES: &str = "storage_bytes";
    /// Messages in the index, by plan: a level.
    pub const INDEX_MESSAGES: &str = "index_messages";
    /// Greylist outcomes: `deferred`, `passed`, `whitelisted`,
    /// `auto-whitelisted`.
    pub const GREYLIST: &str = "greylist";
    /// Scan verdicts: `clean`, `infected`, `banned`, `spam` (quarantined
    /// for rspamd's reject), `unknown`.
    pub const SCANS: &str = "scans";
    /// rspamd's say on inbound mail: `ham` (delivered as usual),
    /// `spam-folder` (flagged), `quarantined`, `unscored` (rspamd did not
    /// answer).
    pub const SPAM: &str = "spam";
    /// The rspamd symbols of the mail counted as spam (flagged or
    /// quarantined), by symbol: what made it spam.
    pub const SPAM_SYMBOLS: &str = "spam_symbols";
    /// Messages stored, and their bytes.
    pub const DELIVERED: &str = "delivered";
    pub const DELIVERED_BYTES: &str = "delivered_bytes";
    /// Messages refused for the recipient's quota.
    pub const REJECTED_OVER_QUOTA: &str = "rejected_over_quota";
    /// Messages quarantined, by reason.
    pub const QUARANTINED: &str = "quarantined";
    /// Mailbox purges, messages and bytes purged, by folder.
    pub const PURGES: &str = "purges";
    pub const PURGED_MESSAGES: &str = "purged_messages";
    pub const PURGED_BYTES: &str = "purged_bytes";
    /// Notifications requested, by template.
    pub const NOTIFICATIONS: &str = "notifications";
    /// Dead letters, by the consumer that wrote them.
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// Messages the service's own users submitted (`MessageSubmitted`), by
    /// outcome: `accepted` (relayed), `rejected` (refused to the sender).
    pub const SUBMITTED: &str = "submitted";
    /// Bytes of the submitted messages that were relayed.
    pub const SUBMITTED_BYTES: &str = "submitted_bytes";
    /// Verdicts on submitted messages: `clean`, `infected` (a virus from
    /// an account: it is blocked), `banned`, `unknown`.
    pub const SUBMITTED_SCANS: &str = "submitted_scans";
    /// Submission attempts deferred by the outbound limits, by limit
    /// (its name: `recipients_per_hour`, ..., `blocked`).
    pub const SUBMISSION_DEFERRALS: &str = "submission_deferrals";
    /// Accounts blocked (`AccountBlocked`), by reason: `virus`, `abuse`,
    /// `admin`.
    pub const BLOCKS: &str = "blocks";
}

/// The reporter: counts, never emits.
#[derive(Debug, Default)]
pub struct Reporter;

impl Consumer for Reporter {
    type Event = ReporterInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<ReporterInput>,
    ) -> Result<Decision, StateError> {
        decide::decide(state, &input.event)
    }
}

/// The reporter as `mailfleet run reporter` runs it.
pub async fn build(
    _wiring: &mailfleet_runtime::Wiring,
) -> Result<Reporter, mailfleet_runtime::RuntimeError> {
    Ok(Reporter)
}
