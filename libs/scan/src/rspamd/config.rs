//! `[*.spam]`: where rspamd listens, how long to wait for it, what to do
//! when it does not answer, and what each of its actions means for the
//! message. Defaults live here and only here.

use mailfleet_events::mail::SpamAction;
use serde::{Deserialize, Serialize};

/// What happens to a message when rspamd chose an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    /// Delivered as usual (the folder rules still apply), with the score
    /// in `X-Spam-Status`.
    Deliver,
    /// Delivered to the Spam folder with `X-Spam-Flag: YES`.
    SpamFolder,
    /// Quarantined (admins only) with the score and symbols; never
    /// silently dropped.
    Quarantine,
}

/// One [`Disposition`] per rspamd action. The keys are rspamd's own
/// names: `"add header" = "spam-folder"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Actions {
    #[serde(rename = "no action")]
    pub no_action: Disposition,
    /// mailfleet greylists on its own (the policy server); rspamd's
    /// greylist action is configured off in `ops/rspamd.d`.
    pub greylist: Disposition,
    #[serde(rename = "add header")]
    pub add_header: Disposition,
    #[serde(rename = "rewrite subject")]
    pub rewrite_subject: Disposition,
    /// A temporary refusal is greylisting by another name: ignored.
    #[serde(rename = "soft reject")]
    pub soft_reject: Disposition,
    pub reject: Disposition,
}

impl Default for Actions {
    fn default() -> Self {
        Self {
            no_action: Disposition::Deliver,
            greylist: Disposition::Deliver,
            add_header: Disposition::SpamFolder,
            rewrite_subject: Disposition::SpamFolder,
            soft_reject: Disposition::Deliver,
            reject: Disposition::Quarantine,
        }
    }
}

impl Actions {
    /// The disposition of `action`; an action this build does not know is
    /// delivered, as the scan never invents a verdict.
    pub fn of(&self, action: SpamAction) -> Disposition {
        match action {
            SpamAction::NoAction | SpamAction::Unknown => self.no_action,
            SpamAction::Greylist => self.greylist,
            SpamAction::AddHeader => self.add_header,
            SpamAction::RewriteSubject => self.rewrite_subject,
            SpamAction::SoftReject => self.soft_reject,
            SpamAction::Reject => self.reject,
        }
    }
}

/// What to do with a message rspamd did not score (down, timing out,
/// answering garbage) once the retries are spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Deliver it unscored, with `X-Spam-Status: Unscored (<reason>)`, and
    /// count it: mail keeps flowing while rspamd is down.
    Deliver,
    /// Retry later: the partition waits, as it does for clamd.
    Retry,
}

/// `[consumers.scanner.spam]` and `[submission.spam]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RspamdConfig {
    /// Ask rspamd at all.
    pub enabled: bool,
    /// rspamd's normal worker (`POST /checkv2`), `host:port`.
    pub address: String,
    /// rspamd's controller (`/learnspam`, `/learnham`, `/stat`).
    pub controller: String,
    /// All tries of one message together, in ms: the longest a partition
    /// waits for rspamd before the fail mode applies.
    pub timeout_ms: u64,
    /// Tries after the first, within `timeout_ms`.
    pub retries: u32,
    /// Symbols kept per message, highest absolute score first.
    pub max_symbols: usize,
    /// Larger messages are not scored (unscored, "larger than max_size"),
    /// as Amavis skipped spam checks past its size limit.
    pub max_size: u64,
    pub fail_mode: FailMode,
    pub actions: Actions,
}

impl Default for RspamdConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            address: "127.0.0.1:11333".into(),
            controller: "127.0.0.1:11334".into(),
            timeout_ms: 5_000,
            retries: 1,
            max_symbols: 32,
            max_size: 20 * 1024 * 1024,
            fail_mode: FailMode::Deliver,
            actions: Actions::default(),
        }
    }
}

/// Largest `timeout_ms`: past it the consumer's own stall detection
/// would take the wait for a hang.
const MAX_TIMEOUT_MS: u64 = 60_000;

impl RspamdConfig {
    /// Every problem, each naming its key (relative to this table) and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, value) in [("address", &self.address), ("controller", &self.controller)] {
            if let Err(reason) = check_address(value) {
                out.push(format!("{key} = {value:?}: {reason}"));
            }
        }
        if !(100..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            out.push(format!(
                "timeout_ms = {}: must be between 100 and {MAX_TIMEOUT_MS}",
                self.timeout_ms
            ));
        }
        if self.retries > 5 {
            out.push(format!("retries = {}: at most 5", self.retries));
        }
        if !(1..=256).contains(&self.max_symbols) {
            out.push(format!(
                "max_symbols = {}: must be between 1 and 256",
                self.max_symbols
            ));
        }
        if self.max_size == 0 {
            out.push("max_size = 0: must be at least 1".into());
        }
        out
    }
}

/// `host:port` with a port; the host is a name or an address.
fn check_address(value: &str) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err("expected host:port".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port {port:?} is not a port number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_map_like_amavis() {
        let cfg = RspamdConfig::default();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        assert_eq!(cfg.actions.of(SpamAction::Reject), Disposition::Quarantine);
        assert_eq!(
            cfg.actions.of(SpamAction::AddHeader),
            Disposition::SpamFolder
        );
        assert_eq!(cfg.actions.of(SpamAction::SoftReject), Disposition::Deliver);
        assert_eq!(cfg.fail_mode, FailMode::Deliver);
    }

    #[test]
    fn actions_are_read_by_rspamd_names_and_unknown_ones_refused() {
        let a: Actions = serde_json::from_str(r#"{"reject": "spam-folder"}"#).unwrap();
        assert_eq!(a.reject, Disposition::SpamFolder);
        assert_eq!(a.add_header, Disposition::SpamFolder, "others default");
        let a: Actions = serde_json::from_str(r#"{"add header": "deliver"}"#).unwrap();
        assert_eq!(a.add_header, Disposition::Deliver);
        let e = serde_json::from_str::<Actions>(r#"{"add_header": "deliver"}"#).unwrap_err();
        assert!(e.to_string().contains("add_header"), "{e}");
        let e = serde_json::from_str::<Actions>(r#"{"reject": "drop"}"#).unwrap_err();
        assert!(e.to_string().contains("drop"), "{e}");
    }

    #[test]
    fn problems_name_key_and_value() {
        let cfg = RspamdConfig {
            address: "11333".into(),
            controller: "127.0.0.1:x".into(),
            timeout_ms: 0,
            retries: 9,
            max_symbols: 0,
            max_size: 0,
            ..RspamdConfig::default()
        };
        let p = cfg.problems();
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p[0].starts_with("address = \"11333\""));
        assert!(p[1].contains("port \"x\""));
        assert!(p[2].starts_with("timeout_ms = 0"));
    }
}
