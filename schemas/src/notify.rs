//! Notifications to people (over-quota notices, lifecycle warnings).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// `mailfleet.notify.NotificationRequested`: tell `to` something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequested {
    pub envelope: Envelope,
    pub to: String,
    /// A stable template name.
    pub template: String,
    pub account: Option<String>,
    pub params: BTreeMap<String, String>,
}
impl_event!(
    NotificationRequested,
    "mailfleet.notify.NotificationRequested"
);
