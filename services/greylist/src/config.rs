use std::path::PathBuf;

use mailfleet_events::greylist::triplet::Grouping;
use serde::{Deserialize, Serialize};

/// `[consumers.greylist]`: postgrey's options under mailfleet names (see
/// `docs/greylisting.md` for the mapping).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    /// Seconds a new triplet is deferred (postgrey `--delay`).
    pub delay_s: i64,
    /// Days after its last sighting a triplet or auto-whitelisted client is
    /// forgotten (postgrey `--max-age`).
    pub max_age_days: i64,
    /// Seconds after the first attempt within which a retry must come, or
    /// greylisting starts over (postgrey `--retry-window`, 2 days).
    pub retry_window_s: i64,
    /// Successful passes (at most one counted an hour) after which a client
    /// address skips greylisting; 0 turns it off (postgrey `--auto-whitelist-clients`).
    pub auto_whitelist_clients: u32,
    /// IPv4 prefix of the client network in the triplet (postgrey `--ipv4cidr`).
    pub ipv4_prefix: u8,
    /// IPv6 prefix of the client network (postgrey `--ipv6cidr`).
    pub ipv6_prefix: u8,
    /// Use the full client address, not its network (postgrey `--lookup-by-host`).
    pub lookup_by_host: bool,
    /// The Postfix action for a deferral (postgrey `--greylist-action`).
    pub greylist_action: String,
    /// Text after the action; `%s` is the seconds left, `%r` the recipient
    /// domain (postgrey `--greylist-text`).
    pub greylist_text: String,
    /// Header prepended on a triplet's first pass; `%t` seconds delayed, `%h`
    /// host, `%d` date (postgrey `--x-greylist-header`).
    pub x_greylist_header: String,
    /// Host name in the header.
    pub hostname: String,
    /// Client whitelist files (postgrey `--whitelist-clients`); relative
    /// paths are from the working directory. Checked when the consumer starts.
    pub whitelist_clients: Vec<PathBuf>,
    /// Recipient whitelist files (postgrey `--whitelist-recipients`).
    pub whitelist_recipients: Vec<PathBuf>,
    /// How often the whitelist files are checked for changes, seconds.
    pub whitelist_reload_s: u64,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        Self {
            delay_s: 300,
            max_age_days: 35,
            retry_window_s: 2 * 86_400,
            auto_whitelist_clients: 5,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            lookup_by_host: false,
            greylist_action: "DEFER_IF_PERMIT".into(),
            greylist_text: "Greylisted, try again in %s seconds".into(),
            x_greylist_header: "X-Greylist: delayed %t seconds by mailfleet at %h; %d".into(),
            hostname: "localhost".into(),
            whitelist_clients: vec![PathBuf::from("ops/greylist/whitelist_clients")],
            whitelist_recipients: vec![PathBuf::from("ops/greylist/whitelist_recipients")],
            whitelist_reload_s: 10,
        }
    }
}

/// The settings a greylist decision depends on: what a `ConfigChanged`
/// records (the whitelist files are not in it yet: they reload on their
/// own, see `docs/replay.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreylistRules {
    pub delay_s: i64,
    pub max_age_days: i64,
    pub retry_window_s: i64,
    pub auto_whitelist_clients: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub lookup_by_host: bool,
    pub greylist_action: String,
    pub greylist_text: String,
    pub x_greylist_header: String,
    pub hostname: String,
    /// The whitelist files' texts when recorded (absent in settings
    /// recorded without them: the live files are used then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitelists: Option<RecordedLists>,
}

/// Whitelist texts as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedLists {
    pub clients: Vec<crate::whitelist::ListText>,
    pub recipients: Vec<crate::whitelist::ListText>,
}

impl GreylistConfig {
    /// The decision-relevant settings (without the whitelists, which come
    /// from the files: see `Greylist::settings`).
    pub fn rules(&self) -> GreylistRules {
        GreylistRules {
            delay_s: self.delay_s,
            max_age_days: self.max_age_days,
            retry_window_s: self.retry_window_s,
            auto_whitelist_clients: self.auto_whitelist_clients,
            ipv4_prefix: self.ipv4_prefix,
            ipv6_prefix: self.ipv6_prefix,
            lookup_by_host: self.lookup_by_host,
            greylist_action: self.greylist_action.clone(),
            greylist_text: self.greylist_text.clone(),
            x_greylist_header: self.x_greylist_header.clone(),
            hostname: self.hostname.clone(),
            whitelists: None,
        }
    }

    /// This config with `rules` in force.
    pub fn with_rules(&self, rules: GreylistRules) -> GreylistConfig {
        GreylistConfig {
            delay_s: rules.delay_s,
            max_age_days: rules.max_age_days,
            retry_window_s: rules.retry_window_s,
            auto_whitelist_clients: rules.auto_whitelist_clients,
            ipv4_prefix: rules.ipv4_prefix,
            ipv6_prefix: rules.ipv6_prefix,
            lookup_by_host: rules.lookup_by_host,
            greylist_action: rules.greylist_action,
            greylist_text: rules.greylist_text,
            x_greylist_header: rules.x_greylist_header,
            hostname: rules.hostname,
            ..self.clone()
        }
    }
}

impl GreylistConfig {
    /// How client addresses are grouped into triplets and partitions.
    pub fn grouping(&self) -> Grouping {
        Grouping {
            ipv4_prefix: self.ipv4_prefix,
            ipv6_prefix: self.ipv6_prefix,
            by_host: self.lookup_by_host,
        }
    }

    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let k = "consumers.greylist";
        if self.delay_s < 0 {
            out.push(format!("{k}.delay_s = {}: must be >= 0", self.delay_s));
        }
        if self.max_age_days < 1 {
            out.push(format!(
                "{k}.max_age_days = {}: must be >= 1",
                self.max_age_days
            ));
        }
        if self.retry_window_s < self.delay_s {
            out.push(format!(
                "{k}.retry_window_s = {}: must be >= delay_s ({})",
                self.retry_window_s, self.delay_s
            ));
        }
        if self.ipv4_prefix > 32 {
            out.push(format!(
                "{k}.ipv4_prefix = {}: must be 0..=32",
                self.ipv4_prefix
            ));
        }
        if self.ipv6_prefix > 128 {
            out.push(format!(
                "{k}.ipv6_prefix = {}: must be 0..=128",
                self.ipv6_prefix
            ));
        }
        if self.greylist_action.trim().is_empty() {
            out.push(format!("{k}.greylist_action is empty"));
        }
        out
    }
}
