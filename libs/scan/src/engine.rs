//! [`Engine`]: one configured scanner (the attachment policy and, if
//! used, clamd) with the scanner's name for the audit trail. The scanner
//! consumer (inbound mail) and the submission milter (outbound mail) each
//! hold one, so both directions scan with the same calls.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use mailfleet_events::mail::SpamResult;

use crate::{
    clamd::{Clamd, ClamdConfig},
    policy::PolicyConfig,
    rspamd::{CheckEnvelope, Disposition, FailMode, Rspamd, RspamdConfig},
    scan, ScanError, Verdict,
};

/// How long a clamd version string is reused before asking again (it
/// changes when clamd reloads its signatures).
const VERSION_TTL: Duration = Duration::from_secs(600);

/// What the verdicts name as their scanner when clamd is not used.
pub const POLICY_ONLY: &str = "policy-only";

/// What the spam scan concluded on one message.
#[derive(Debug, Clone, PartialEq)]
pub enum SpamOutcome {
    /// rspamd is not used here.
    NotAsked,
    /// rspamd's answer, mapped (`flagged`) by the configured actions.
    Scored(SpamResult),
    /// rspamd was to be asked and gave no answer (fail mode `deliver`), or
    /// the message is past `max_size`: the reason.
    Unscored(String),
}

/// The attachment policy plus, optionally, clamd and rspamd.
pub struct Engine {
    policy: PolicyConfig,
    clamd: Option<Clamd>,
    rspamd: Option<Rspamd>,
    /// The clamd version and when it was asked for.
    version: Mutex<Option<(Instant, String)>>,
}

impl Engine {
    /// An engine with `policy` and, when `clamd` is given, a virus scan
    /// first. Connects to clamd only per scan.
    pub fn new(policy: PolicyConfig, clamd: Option<ClamdConfig>) -> Self {
        Self {
            policy,
            clamd: clamd.map(Clamd::new),
            rspamd: None,
            version: Mutex::new(None),
        }
    }

    /// The same engine, also scoring spam with rspamd when `cfg.enabled`.
    pub fn with_rspamd(mut self, cfg: &RspamdConfig) -> Self {
        self.rspamd = cfg.enabled.then(|| Rspamd::new(cfg.clone()));
        self
    }

    /// The rspamd client, when spam is scored.
    pub fn rspamd(&self) -> Option<&Rspamd> {
        self.rspamd.as_ref()
    }

    /// Score one message with rspamd (after [`Engine::scan`] found it
    /// clean). No answer is [`SpamOutcome::Unscored`] under fail mode
    /// `deliver`, and a transient error under `retry`: never an invented
    /// score.
    pub async fn spam(
        &self,
        raw: &[u8],
        envelope: &CheckEnvelope,
    ) -> Result<SpamOutcome, ScanError> {
        let Some(rspamd) = &self.rspamd else {
            return Ok(SpamOutcome::NotAsked);
        };
        let cfg = rspamd.config();
        if raw.len() as u64 > cfg.max_size {
            return Ok(SpamOutcome::Unscored(format!(
                "{} bytes, larger than max_size {}",
                raw.len(),
                cfg.max_size
            )));
        }
        match rspamd.check(raw, envelope).await {
            Ok(result) => Ok(SpamOutcome::Scored(result)),
            Err(e) if cfg.fail_mode == FailMode::Deliver => {
                Ok(SpamOutcome::Unscored(e.to_string()))
            }
            Err(e) => Err(ScanError::Rspamd(e)),
        }
    }

    /// What the configured actions make of a scored message.
    pub fn disposition(&self, result: &SpamResult) -> Disposition {
        self.rspamd.as_ref().map_or(Disposition::Deliver, |r| {
            r.config().actions.of(result.action)
        })
    }

    /// Scan one raw message ([`crate::scan`]).
    pub async fn scan(&self, raw: &[u8]) -> Result<Verdict, ScanError> {
        scan(raw, &self.policy, self.clamd.as_ref()).await
    }

    /// What scans, for the audit trail: clamd's version (asked for at most
    /// every 10 minutes; `clamd` when it does not answer), or `policy-only`.
    pub async fn name(&self) -> String {
        let Some(clamd) = &self.clamd else {
            return POLICY_ONLY.into();
        };
        if let Ok(cache) = self.version.lock() {
            if let Some((at, version)) = cache.as_ref() {
                if at.elapsed() < VERSION_TTL {
                    return version.clone();
                }
            }
        }
        let version = clamd.version().await.unwrap_or_else(|_| "clamd".into());
        if let Ok(mut cache) = self.version.lock() {
            *cache = Some((Instant::now(), version.clone()));
        }
        version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_clamd_the_policy_alone_decides() {
        let engine = Engine::new(PolicyConfig::default(), None);
        assert_eq!(engine.name().await, POLICY_ONLY);
        let raw =
            b"From: a@x\r\nContent-Type: application/octet-stream; name=\"x.exe\"\r\n\r\nMZ\r\n";
        match engine.scan(raw).await.unwrap() {
            Verdict::Banned { file, rule } => {
                assert_eq!(file, "x.exe");
                assert_eq!(rule, crate::policy::RULE_BANNED_EXTENSION);
            }
            other => panic!("expected banned, got {other:?}"),
        }
        let clean = engine.scan(b"From: a@x\r\n\r\nhello\r\n").await.unwrap();
        assert_eq!(clean, Verdict::Clean);
    }
}
