//! The settings in force, as part of the log.

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// `mailfleet.config.ConfigChanged`: the settings a consumer decides with
/// from this point of its input on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub envelope: Envelope,
    /// The consumer, e.g. `greylist`.
    pub consumer: String,
    /// Canonical JSON of the decision-relevant settings.
    pub settings: String,
    /// SHA-256 of `settings`, hex.
    pub hash: String,
}
impl_event!(ConfigChanged, "mailfleet.config.ConfigChanged");
