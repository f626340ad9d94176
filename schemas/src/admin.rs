//! Events for administrators.

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertSeverity {
    Info,
    Warning,
    Critical,
    /// A symbol this reader does not know.
    Unknown,
}

/// `mailfleet.admin.AdminAlert`: something an administrator must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAlert {
    pub envelope: Envelope,
    pub severity: AlertSeverity,
    /// Stable machine name, e.g. `virus-from-local-sender`.
    pub kind: String,
    pub account: Option<String>,
    pub summary: String,
    pub detail: Option<String>,
}
impl_event!(AdminAlert, "mailfleet.admin.AdminAlert");
