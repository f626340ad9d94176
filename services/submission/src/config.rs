//! `[submission]`: the milter Postfix's submission listener calls. The
//! scan itself (clamd and the attachment policy) is `[consumers.scanner]`'s,
//! so inbound and outbound mail are scanned alike.

use serde::Deserialize;

/// `[submission]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// `host:port` to listen on (Postfix:
    /// `smtpd_milters = inet:127.0.0.1:10027` on the submission listener).
    pub listen: String,
    /// Client networks (CIDRs) that may connect; any other is closed at
    /// once (Postfix then applies `milter_default_action`). Default:
    /// loopback only.
    pub allow: Vec<String>,
    /// Largest message scanned, bytes; a larger one is refused with
    /// `552 5.3.4`. Keep it at or above Postfix's `message_size_limit`.
    pub max_message_bytes: u64,
    /// Most simultaneous connections (Postfix opens one per SMTP session);
    /// more are closed at once, and Postfix answers those sessions 4xx.
    pub max_connections: usize,
    /// Seconds a connection may wait for Postfix's next packet; Postfix
    /// itself waits up to `smtpd_timeout` (300 s) for a slow client.
    pub idle_timeout_s: u64,
    /// How long to wait for Kafka's acknowledgement of the event, ms,
    /// before answering `451 4.7.1`. With clamd's `scan_timeout_ms` it must
    /// stay under Postfix's `milter_content_timeout` (300 s).
    pub ack_timeout_ms: u64,
    /// On SIGTERM, the longest wait, s, for the messages being scanned to
    /// be answered (connections waiting for Postfix's next packet close at
    /// once). What still runs then is cut unanswered, and Postfix answers
    /// that session with `milter_default_action` (tempfail: the client
    /// retries). 140: one clamd scan may take its `scan_timeout_ms`
    /// (130 s). The unit's `TimeoutStopSec=` must exceed it.
    pub drain_timeout_s: u64,
    /// Topic the `MessageSubmitted` events go to, keyed by account.
    pub topic: String,
    /// This host's name, in the events' `producer` (`submission@<name>`).
    pub hostname: String,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:10027".into(),
            allow: mailfleet_runtime::allow::loopback(),
            max_message_bytes: 50 * 1024 * 1024,
            max_connections: 200,
            idle_timeout_s: 600,
            ack_timeout_ms: 30_000,
            drain_timeout_s: 140,
            topic: "mail.submitted".into(),
            hostname: "localhost".into(),
        }
    }
}

impl SubmissionConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            out.push(format!(
                "submission.listen = {:?}: not an ip:port",
                self.listen
            ));
        }
        out.extend(mailfleet_runtime::allow::AllowList::problems(
            "submission.allow",
            &self.allow,
        ));
        let positive = [
            ("max_message_bytes", self.max_message_bytes),
            ("max_connections", self.max_connections as u64),
            ("idle_timeout_s", self.idle_timeout_s),
            ("ack_timeout_ms", self.ack_timeout_ms),
            ("drain_timeout_s", self.drain_timeout_s),
        ];
        for (key, value) in positive {
            if value == 0 {
                out.push(format!("submission.{key} = 0: must be > 0"));
            }
        }
        if self.ack_timeout_ms > 240_000 {
            out.push(format!(
                "submission.ack_timeout_ms = {}: over 240000, Postfix gives up first \
                 (milter_content_timeout is 300 s)",
                self.ack_timeout_ms
            ));
        }
        if self.topic.trim().is_empty() {
            out.push(format!(
                "submission.topic = {:?}: must not be empty",
                self.topic
            ));
        }
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            out.push(format!(
                "submission.hostname = {:?}: must be one word",
                self.hostname
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_problems_name_the_key_and_value() {
        assert!(SubmissionConfig::default().problems().is_empty());
        let bad = SubmissionConfig {
            listen: "localhost:10027".into(),
            allow: vec!["10.0.0.1/8".into()],
            max_message_bytes: 0,
            ack_timeout_ms: 600_000,
            drain_timeout_s: 0,
            topic: " ".into(),
            ..SubmissionConfig::default()
        };
        let problems = bad.problems().join("\n");
        for expected in [
            "submission.listen = \"localhost:10027\"",
            "submission.allow[0] = \"10.0.0.1/8\"",
            "submission.max_message_bytes = 0",
            "submission.ack_timeout_ms = 600000",
            "submission.drain_timeout_s = 0",
            "submission.topic = \" \"",
        ] {
            assert!(problems.contains(expected), "{expected} in {problems}");
        }
    }
}
