//! Message scanning as Amavis with ClamAV did it for the original service.
//!
//! Start with [`scan`]: it runs the virus scan ([`clamd`], the real clamd
//! over INSTREAM) and then the attachment policy ([`policy`]: banned file
//! names and types, also inside zip archives) over one raw message, and
//! returns one [`Verdict`]. A clean message is then scored for spam by
//! [`rspamd`] ([`Engine::spam`]). The scanner consumer, the submission milter
//! and `mailfleet scan` all call it, so the operator tool, inbound and
//! outbound mail never disagree; [`Engine`] holds one configured scanner
//! with its name for the audit trail.

pub mod clamd;
mod engine;
pub mod policy;
pub mod rspamd;

pub use engine::{Engine, SpamOutcome, POLICY_ONLY};

use mailfleet_events::mail::ScanVerdict;
use serde::Serialize;

/// What scanning one message concluded.
///
/// Serialised as the one JSON object `mailfleet scan` prints, e.g.
/// `{"verdict":"banned","file":"invoice.pdf.exe","rule":"double-extension"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// No virus and nothing the attachment policy bans.
    Clean,
    /// clamd reported a signature (`stream: <signature> FOUND`).
    Infected { signature: String },
    /// The attachment policy banned a part: the (decoded) file name, or
    /// `archive.zip/inner.exe` for a member of an archive, and the rule.
    Banned { file: String, rule: String },
}

/// A verdict as the events carry it (`MessageScanned`,
/// `MessageSubmitted`): the kind, and the signature or the banned file and
/// its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    pub verdict: ScanVerdict,
    pub signature: Option<String>,
    pub file: Option<String>,
    pub rule: Option<String>,
}

impl Verdict {
    /// This verdict as the events carry it.
    pub fn findings(&self) -> Findings {
        let (verdict, signature, file, rule) = match self {
            Verdict::Clean => (ScanVerdict::Clean, None, None, None),
            Verdict::Infected { signature } => {
                (ScanVerdict::Infected, Some(signature.clone()), None, None)
            }
            Verdict::Banned { file, rule } => (
                ScanVerdict::Banned,
                None,
                Some(file.clone()),
                Some(rule.clone()),
            ),
        };
        Findings {
            verdict,
            signature,
            file,
            rule,
        }
    }
}

/// Why a message could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("virus scan: {0}")]
    Clamd(#[from] clamd::ClamdError),
    /// rspamd gave no answer and the fail mode is `retry`.
    #[error("spam scan: {0}")]
    Rspamd(#[from] rspamd::RspamdError),
}

impl ScanError {
    /// Whether trying again later may succeed (clamd down), as opposed to
    /// never (the message is more than clamd accepts).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Clamd(e) => e.is_transient(),
            Self::Rspamd(_) => true,
        }
    }
}

/// Scan one raw message: clamd first (a virus outranks a banned name, as
/// in Amavis), then the attachment policy. Without `clamd`, the policy
/// alone. A failed virus scan is an error, never a verdict.
pub async fn scan(
    raw: &[u8],
    policy: &policy::PolicyConfig,
    clamd: Option<&clamd::Clamd>,
) -> Result<Verdict, ScanError> {
    if let Some(clamd) = clamd {
        if let clamd::ClamdReply::Found { signature } = clamd.scan(raw).await? {
            return Ok(Verdict::Infected { signature });
        }
    }
    Ok(policy::check(raw, policy)
        .banned
        .map_or(Verdict::Clean, Verdict::from))
}
