use mailfleet_scan::{clamd::ClamdConfig, policy::PolicyConfig, rspamd::RspamdConfig};
use serde::Deserialize;

/// `[consumers.scanner]`: the scanner consumer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannerConfig {
    /// Scan with clamd. Off, only the attachment policy runs: for sites
    /// without clamd, never a silent fallback when clamd is down.
    pub use_clamd: bool,
    /// Where clamd listens.
    pub clamd: ClamdConfig,
    /// The attachment policy: banned names, types and archive limits.
    pub policy: PolicyConfig,
    /// Spam scoring with rspamd, after clamd and the policy found the
    /// message clean: where it listens, the fail mode, and what each of
    /// its actions means (docs/spam.md).
    pub spam: RspamdConfig,
    /// Domains whose addresses are the service's own accounts. Inbound
    /// mail claiming one as its sender is scanned like any other and never
    /// blocks that account: an envelope sender is not proof. Only the
    /// submission path, with SMTP AUTH, blocks (docs/submission.md).
    pub local_domains: Vec<String>,
    /// Topic the verdicts go to.
    pub scanned_topic: String,
    /// Unused: the scanner no longer blocks accounts (an inbound virus is
    /// no proof of its sender). Accepted so that older configs still load.
    pub accounts_topic: String,
    /// Unused, like `accounts_topic`: the scanner raises no admin alerts.
    pub alerts_topic: String,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        Self {
            use_clamd: true,
            clamd: ClamdConfig::default(),
            policy: PolicyConfig::default(),
            spam: RspamdConfig::default(),
            local_domains: Vec::new(),
            scanned_topic: "mail.scanned".into(),
            accounts_topic: String::new(),
            alerts_topic: String::new(),
        }
    }
}

impl ScannerConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let prefix = |p: String| format!("consumers.scanner.{p}");
        if self.use_clamd {
            out.extend(self.clamd.problems().into_iter().map(prefix));
        }
        if self.spam.enabled {
            out.extend(
                self.spam
                    .problems()
                    .into_iter()
                    .map(|p| format!("consumers.scanner.spam.{p}")),
            );
        }
        if let Err(problems) = self.policy.validate() {
            out.extend(
                problems
                    .into_iter()
                    .map(|p| format!("consumers.scanner.policy.{p}")),
            );
        }
        for domain in &self.local_domains {
            if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace) {
                out.push(format!(
                    "consumers.scanner.local_domains: {domain:?} is not a domain"
                ));
            }
        }
        if self.scanned_topic.is_empty() {
            out.push("consumers.scanner.scanned_topic is empty".into());
        }
        out
    }
}
