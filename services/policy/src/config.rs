use serde::Deserialize;

/// What the policy server answers when no decision comes in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Let the mail through (`DUNNO`): greylisting fails open.
    Dunno,
    /// Ask the client to retry (`DEFER_IF_PERMIT`): fails closed.
    DeferIfPermit,
}

impl FailMode {
    /// The Postfix action.
    pub fn action(self) -> &'static str {
        match self {
            Self::Dunno => "DUNNO",
            Self::DeferIfPermit => {
                "DEFER_IF_PERMIT Greylisting service unavailable, try again later"
            }
        }
    }
}

/// What the policy server answers an authenticated submission when the
/// outbound limits do not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmissionFailMode {
    /// Ask the client to retry (`DEFER 4.3.0`): fails closed, so that a
    /// hijacked account cannot spray while the limits are not checked.
    Defer,
    /// Let it through (`DUNNO`) unchecked.
    Dunno,
}

impl SubmissionFailMode {
    /// The Postfix action.
    pub fn action(self) -> &'static str {
        match self {
            Self::Defer => "DEFER 4.3.0 Outbound limits unavailable, try again later",
            Self::Dunno => "DUNNO",
        }
    }
}

/// `[policy]`: the Postfix policy server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// `host:port` to listen on (Postfix: `check_policy_service inet:127.0.0.1:10023`).
    pub listen: String,
    /// Client networks (CIDRs) that may connect; any other client is
    /// closed at once. Default: loopback only.
    pub allow: Vec<String>,
    /// This server's name in events, so that its replies find it; unique per MX host.
    pub host: String,
    /// How long to wait for the greylist decision, ms.
    pub timeout_ms: u64,
    /// The answer when the decision does not come in time.
    pub fail_mode: FailMode,
    /// Most simultaneous connections; more are closed at once.
    pub max_connections: usize,
    /// Longest request line, bytes.
    pub max_line_bytes: usize,
    /// Largest request, bytes.
    pub max_request_bytes: usize,
    /// Seconds a connection may sit idle between requests (Postfix keeps
    /// them up to `smtpd_policy_service_max_idle`, 300 s).
    pub idle_timeout_s: u64,
    /// Seconds a started request may take to arrive whole (slow clients).
    pub request_timeout_s: u64,
    /// Seconds a SIGTERM waits for the requests in flight to be answered
    /// (their decision, or the fail mode after `timeout_ms`: keep it
    /// longer); idle connections close at once. What is still running
    /// then is closed unanswered.
    pub drain_timeout_s: u64,
    /// Take the event time from a `policy_test_time` attribute (Unix
    /// seconds) when a request carries one, as postgrey's policy-test does.
    /// For tests only: never enable it where Postfix clients connect.
    pub accept_test_time: bool,
    /// Answer `DUNNO` to a repeat of a triplet the greylist let through
    /// at most this many seconds before, as soon as Kafka acknowledged the
    /// attempt, without waiting for its decision (which is still made,
    /// and must agree: docs/greylisting.md). 0: always wait. Must be
    /// below the greylist's `max_age_days`.
    pub answer_repeats_s: u64,
    /// Most triplets remembered for that; past it the memory starts again
    /// empty (about 100 bytes each).
    pub answer_repeats_max: usize,
    /// Topic the attempts go to.
    pub attempts_topic: String,
    /// Topic the decisions come from.
    pub decisions_topic: String,
    /// Topic an authenticated submission's attempts go to (a request with
    /// `sasl_username`: the submission listener's, docs/submission.md).
    pub submission_attempts_topic: String,
    /// Topic the outbound limits' answers come from.
    pub submission_decisions_topic: String,
    /// The answer to a submission when the limits do not answer in
    /// `timeout_ms`.
    pub submission_fail_mode: SubmissionFailMode,
    /// Refuse a submission at RCPT (`REJECT 5.7.1`) unless the account is
    /// active, from the account statuses on `status_topic` (the projection
    /// the LMTP server checks recipients against).
    pub check_submitters: bool,
    /// The compacted topic of account statuses.
    pub status_topic: String,
    /// What stamps the attempts: the wall clock, or compressed time
    /// (`mailfleet policy --time-scale`, demo and tests only). Not a
    /// config key.
    #[serde(skip)]
    pub clock: mailfleet_runtime::time::Clock,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:10023".into(),
            allow: mailfleet_runtime::allow::loopback(),
            host: "mx1".into(),
            timeout_ms: 2000,
            fail_mode: FailMode::Dunno,
            max_connections: 1000,
            max_line_bytes: 16 * 1024,
            max_request_bytes: 64 * 1024,
            idle_timeout_s: 330,
            request_timeout_s: 10,
            drain_timeout_s: 10,
            accept_test_time: false,
            answer_repeats_s: 3600,
            answer_repeats_max: 200_000,
            attempts_topic: "smtp.attempts".into(),
            decisions_topic: "greylist.decisions".into(),
            submission_attempts_topic: "submission.attempts".into(),
            submission_decisions_topic: "submission.decisions".into(),
            submission_fail_mode: SubmissionFailMode::Defer,
            check_submitters: true,
            status_topic: "accounts.status".into(),
            clock: mailfleet_runtime::time::Clock::Wall,
        }
    }
}

impl PolicyConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = self.listen.parse::<std::net::SocketAddr>() {
            out.push(format!("policy.listen = {:?}: {e}", self.listen));
        }
        out.extend(mailfleet_runtime::allow::AllowList::problems(
            "policy.allow",
            &self.allow,
        ));
        if self.host.is_empty() {
            out.push("policy.host is empty".into());
        }
        for (key, v) in [
            ("timeout_ms", self.timeout_ms as usize),
            ("max_connections", self.max_connections),
            ("max_line_bytes", self.max_line_bytes),
            ("idle_timeout_s", self.idle_timeout_s as usize),
            ("request_timeout_s", self.request_timeout_s as usize),
            ("drain_timeout_s", self.drain_timeout_s as usize),
        ] {
            if v == 0 {
                out.push(format!("policy.{key} = 0: must be > 0"));
            }
        }
        for (key, topic) in [
            ("attempts_topic", &self.attempts_topic),
            ("decisions_topic", &self.decisions_topic),
            ("submission_attempts_topic", &self.submission_attempts_topic),
            (
                "submission_decisions_topic",
                &self.submission_decisions_topic,
            ),
        ] {
            if topic.is_empty() {
                out.push(format!("policy.{key} is empty"));
            }
        }
        if self.check_submitters && self.status_topic.is_empty() {
            out.push("policy.status_topic is empty while policy.check_submitters = true".into());
        }
        if self.max_request_bytes < self.max_line_bytes {
            out.push(format!(
                "policy.max_request_bytes = {}: must be >= max_line_bytes ({})",
                self.max_request_bytes, self.max_line_bytes
            ));
        }
        out
    }
}
