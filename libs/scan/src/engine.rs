//! [`Engine`]: one configured scanner (the attachment policy and, if
//! used, clamd) with the scanner's name for the audit trail. The scanner
//! consumer (inbound mail) and the submission milter (outbound mail) each
//! hold one, so both directions scan with the same calls.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    clamd::{Clamd, ClamdConfig},
    policy::PolicyConfig,
    scan, ScanError, Verdict,
};

/// How long a clamd version string is reused before asking again (it
/// changes when clamd reloads its signatures).
const VERSION_TTL: Duration = Duration::from_secs(600);

/// What the verdicts name as their scanner when clamd is not used.
pub const POLICY_ONLY: &str = "policy-only";

/// The attachment policy plus, optionally, clamd.
pub struct Engine {
    policy: PolicyConfig,
    clamd: Option<Clamd>,
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
            version: Mutex::new(None),
        }
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
