//! The submission path: a request with `sasl_username` comes from the
//! submission listener, where one of our own accounts sends with SMTP AUTH
//! (docs/submission.md). The authenticated login, not the envelope sender,
//! names the account. An account that is not active is refused at once;
//! otherwise the attempt goes to the outbound limits consumer, whose
//! `SubmissionDecided` is the answer: `DUNNO` to pass (Postfix goes on to
//! `permit_sasl_authenticated`), or its `DEFER 4.7.1` naming the limit.

use mailfleet_events::{submission::SubmissionAttempted, Envelope};

use crate::{protocol::Request, PolicyConfig};

/// Whether an account may send now: the account statuses, behind a trait
/// so that this crate needs no account crate (the binary wires the
/// projection the LMTP server uses).
pub trait Submitters: Send + Sync {
    fn may_submit(&self, account: &str) -> MaySubmit;
}

/// What the account statuses say of a submitting account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaySubmit {
    /// Active: its attempt goes to the limits.
    Yes,
    /// Refused, with the status in words (`blocked`, `inactive`, ...).
    No(&'static str),
    /// The statuses are still being read.
    NotReady,
}

/// The lower-cased login of an authenticated request, if it is one.
pub fn login(req: &Request) -> Option<String> {
    req.get("sasl_username")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
}

/// The answer for an account that may not send.
pub fn refusal(account: &str, status: &str) -> String {
    format!("REJECT 5.7.1 <{account}>: account is {status} and may not send mail")
}

/// The answer while the statuses are still being read.
pub const NOT_READY: &str = "DEFER 4.3.0 Account status not loaded yet, try again later";

/// The `SubmissionAttempted` for an authenticated RCPT request of `account`.
pub fn attempt(cfg: &PolicyConfig, req: &Request, account: &str) -> SubmissionAttempted {
    let get = |k: &str| req.get(k).cloned().unwrap_or_default();
    let (id, now_ms) = crate::attempt::identity(cfg, req);
    SubmissionAttempted {
        envelope: Envelope::new(id, now_ms, format!("policy@{}", cfg.host)),
        account: account.to_string(),
        sasl_username: get("sasl_username"),
        sender: get("sender"),
        recipient: get("recipient"),
        client_address: get("client_address"),
        client_name: get("client_name"),
        size: req.get("size").and_then(|s| s.parse().ok()).unwrap_or(0),
        queue_id: get("queue_id"),
        instance: get("instance"),
        policy_host: cfg.host.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> Request {
        let mut req = Request::default();
        for (k, v) in pairs {
            req.insert(k.to_string(), v.to_string());
        }
        req
    }

    #[test]
    fn only_a_request_with_a_login_is_a_submission() {
        assert_eq!(login(&request(&[("sender", "a@x.test")])), None);
        assert_eq!(login(&request(&[("sasl_username", "")])), None);
        assert_eq!(
            login(&request(&[("sasl_username", " Alice@Example.Test ")])),
            Some("alice@example.test".into())
        );
    }

    #[test]
    fn the_attempt_names_the_login_not_the_sender() {
        let req = request(&[
            ("sasl_username", "Alice@example.test"),
            ("sender", "someone-else@example.test"),
            ("recipient", "bob@remote.test"),
            ("size", "1234"),
            ("queue_id", "4ABC"),
            ("instance", "1.2.3"),
        ]);
        let a = attempt(&PolicyConfig::default(), &req, "alice@example.test");
        assert_eq!(a.account, "alice@example.test");
        assert_eq!(a.sasl_username, "Alice@example.test");
        assert_eq!(a.sender, "someone-else@example.test");
        assert_eq!((a.size, a.queue_id.as_str()), (1234, "4ABC"));
        assert_eq!(a.policy_host, "mx1");
        let bad = request(&[("sasl_username", "a@x.test"), ("size", "-")]);
        assert_eq!(attempt(&PolicyConfig::default(), &bad, "a@x.test").size, 0);
    }

    #[test]
    fn a_refusal_is_permanent_and_names_the_account_and_status() {
        let r = refusal("alice@example.test", "blocked");
        assert!(r.starts_with("REJECT 5.7.1 <alice@example.test>"), "{r}");
        assert!(r.contains("blocked"), "{r}");
    }
}
