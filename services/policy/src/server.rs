//! The listener: one task per Postfix connection, many requests each.
//!
//! Shutdown drains: the listener closes at once; a connection waiting for
//! its next request is closed (Postfix's policy client opens a new one, to
//! the restarted server); a request that has started to arrive is read,
//! answered (its decision, or the fail mode after `policy.timeout_ms`) and
//! its connection closed. The decision followers run until the drain ends,
//! so a request in flight still gets its decision. `serve` returns once
//! every connection is gone, or after `policy.drain_timeout_s`.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use mailfleet_events::greylist::triplet::Grouping;
use mailfleet_runtime::{
    allow::AllowList,
    config::KafkaConfig,
    listen::{self, Handler, Refusal},
    metrics as m,
    producer::EventProducer,
    RuntimeError, Shutdown,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{tcp::OwnedReadHalf, TcpListener, TcpStream},
    time::timeout,
};

use mailfleet_events::{
    greylist::{DeliveryAttempted, GreylistDecided},
    submission::{LimitAction, SubmissionDecided},
    Event,
};

use crate::{
    attempt,
    protocol::{read_request, reply, Limits, Request},
    repeats::Passed,
    submission::{self, MaySubmit, Submitters},
    waiter::{self, Answer, Waiters},
    PolicyConfig,
};

struct Server {
    cfg: PolicyConfig,
    grouping: Grouping,
    limits: Limits,
    producer: EventProducer,
    waiters: Waiters<GreylistDecided>,
    submissions: Waiters<SubmissionDecided>,
    submitters: Option<Arc<dyn Submitters>>,
    /// What the greylist let through, when repeats are answered at once.
    passed: Option<Arc<Passed>>,
}

/// Serve until shutdown. `grouping` must match the greylist consumer's, as
/// attempts are keyed (partitioned) by client network. `submitters`, if
/// given, says which accounts may submit (`policy.check_submitters`).
pub async fn serve(
    cfg: PolicyConfig,
    grouping: Grouping,
    kafka: &KafkaConfig,
    submitters: Option<Arc<dyn Submitters>>,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let allow = AllowList::parse("policy.allow", &cfg.allow)?;
    // Stopped when `serve` returns, after the drain, not at the signal.
    let followers = StopOnDrop(Shutdown::new());
    let passed = (cfg.answer_repeats_s > 0)
        .then(|| Arc::new(Passed::new(cfg.answer_repeats_s, cfg.answer_repeats_max)));
    let (waiters, submissions) = follow_decisions(&cfg, kafka, passed.clone(), &followers.0)?;
    let listener =
        TcpListener::bind(&cfg.listen)
            .await
            .map_err(|source| RuntimeError::ReadConfig {
                path: format!("policy.listen {}", cfg.listen),
                source,
            })?;
    tracing::info!(listen = %cfg.listen, host = %cfg.host, "policy server listening");
    let server = Arc::new(Server {
        limits: Limits {
            max_line: cfg.max_line_bytes,
            max_request: cfg.max_request_bytes,
            ..Limits::default()
        },
        producer: EventProducer::new(kafka, &format!("mailfleet-policy-{}", cfg.host))?,
        grouping,
        waiters,
        submissions,
        submitters,
        passed,
        cfg,
    });
    // Exported from the start, so that rates and alerts see the first one.
    metrics::counter!(m::POLICY_CONNECTIONS_DENIED).increment(0);
    metrics::counter!(m::POLICY_CONNECTIONS_REFUSED).increment(0);
    metrics::counter!(m::POLICY_MALFORMED).increment(0);
    metrics::gauge!(m::POLICY_CONNECTIONS).set(0.0);
    let max = server.cfg.max_connections;
    let drain = Duration::from_secs(server.cfg.drain_timeout_s);
    let slots = listen::accept_loop(listener, &allow, max, server, shutdown).await;
    slots.drain_within(drain, "policy").await;
    Ok(())
}

/// A shutdown handle tripped when this is dropped.
struct StopOnDrop(Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

/// Follow the greylist's decisions and the outbound limits' until `stop`.
/// Every greylist decision, of every host, is shown to `passed`.
fn follow_decisions(
    cfg: &PolicyConfig,
    kafka: &KafkaConfig,
    passed: Option<Arc<Passed>>,
    stop: &Shutdown,
) -> Result<(Waiters<GreylistDecided>, Waiters<SubmissionDecided>), RuntimeError> {
    let waiters = Waiters::default();
    let patience = Duration::from_secs(15);
    let (topic, host) = (&cfg.decisions_topic, &cfg.host);
    let learn = move |d: &GreylistDecided| {
        if let Some(p) = &passed {
            p.learn(d);
        }
    };
    let (w, s) = (waiters.clone(), stop.clone());
    waiter::follow(kafka, topic, host, w, patience, s, learn)?;
    let submissions = Waiters::default();
    // Optional where no submission listener asks (an MX-only host, a test
    // world without the topic): submissions then get the fail mode.
    let (topic, patience) = (&cfg.submission_decisions_topic, Duration::from_secs(2));
    if let Err(e) = waiter::follow(
        kafka,
        topic,
        host,
        submissions.clone(),
        patience,
        stop.clone(),
        |_: &SubmissionDecided| {},
    ) {
        tracing::warn!(error = %e, %topic,
            "not following the outbound limits' decisions: submissions get policy.submission_fail_mode");
    }
    Ok((waiters, submissions))
}

impl Handler for Server {
    async fn connection(self: Arc<Self>, stream: TcpStream, _: SocketAddr, shutdown: Shutdown) {
        metrics::gauge!(m::POLICY_CONNECTIONS).increment(1.0);
        self.session(stream, &shutdown).await;
        metrics::gauge!(m::POLICY_CONNECTIONS).decrement(1.0);
    }

    async fn refuse(self: Arc<Self>, _: TcpStream, peer: SocketAddr, why: Refusal) {
        // Closed unread: Postfix's policy client logs the lost connection
        // and defers (451 4.3.5), so nothing passes unasked.
        match why {
            Refusal::NotAllowed => {
                metrics::counter!(m::POLICY_CONNECTIONS_DENIED).increment(1);
                tracing::warn!(%peer, "client not in policy.allow; closing");
            }
            Refusal::Busy => {
                metrics::counter!(m::POLICY_CONNECTIONS_REFUSED).increment(1);
                tracing::warn!(%peer, "connection limit reached; closing");
            }
        }
    }
}

impl Server {
    async fn session(&self, stream: TcpStream, shutdown: &Shutdown) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let whole = Duration::from_secs(self.cfg.request_timeout_s);
        loop {
            // Idle between requests may be long; a started request must be quick.
            if !self.next_request(&mut read, &peer, shutdown).await {
                return;
            }
            let request = match timeout(whole, read_request(&mut read, self.limits)).await {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    metrics::counter!(m::POLICY_MALFORMED).increment(1);
                    return tracing::warn!(%peer, error = %e, "malformed policy request; closing");
                }
                Err(_) => {
                    metrics::counter!(m::POLICY_MALFORMED).increment(1);
                    return tracing::warn!(%peer, "request not complete in time; closing");
                }
            };
            let action = self.answer(&request).await;
            if write.write_all(reply(&action).as_bytes()).await.is_err() {
                return;
            }
            if shutdown.is_triggered() {
                return tracing::debug!(%peer, "request answered; closing: shutting down");
            }
        }
    }

    /// Wait for the first bytes of the next request; `false` when the
    /// connection is to close instead: the client closed it, it sat idle
    /// for `idle_timeout_s`, or shutdown came first and nothing of a
    /// request is here (a request whose bytes are, is served).
    async fn next_request(
        &self,
        read: &mut BufReader<OwnedReadHalf>,
        peer: &str,
        shutdown: &Shutdown,
    ) -> bool {
        let idle = Duration::from_secs(self.cfg.idle_timeout_s);
        let waited = tokio::select! {
            waited = timeout(idle, read.fill_buf()) => Some(waited.map(has_bytes)),
            _ = shutdown.wait() => None,
        };
        match waited {
            Some(Ok(started)) => started,
            Some(Err(_)) => {
                tracing::debug!(%peer, "idle connection closed");
                false
            }
            None => {
                // One look, without waiting, at what the socket holds.
                let here = timeout(Duration::ZERO, read.fill_buf()).await;
                let started = here.is_ok_and(has_bytes);
                if !started {
                    tracing::debug!(%peer, "idle connection closed: shutting down");
                }
                started
            }
        }
    }

    /// The action for one request.
    async fn answer(&self, req: &Request) -> String {
        let rcpt = req
            .get("protocol_state")
            .is_some_and(|s| s.eq_ignore_ascii_case("RCPT"));
        if !rcpt {
            metrics::counter!(m::POLICY_REQUESTS, "result" => "not_rcpt").increment(1);
            return "DUNNO".into();
        }
        if let Some(account) = submission::login(req) {
            return self.answer_submission(req, &account).await;
        }
        let mut attempt = attempt::attempt(&self.cfg, req);
        let id = attempt.envelope.event_id.clone();
        let key = attempt::key(&attempt, self.grouping);
        let topic = &self.cfg.attempts_topic;
        if self.is_passed_repeat(&attempt) {
            return self.answer_repeat(&mut attempt, &key).await;
        }
        match self
            .ask(&self.waiters, &id, topic, key.as_bytes(), &attempt)
            .await
        {
            Some(decided) => {
                metrics::counter!(m::POLICY_REQUESTS, "result" => "decided").increment(1);
                decided.action
            }
            None => {
                metrics::counter!(m::POLICY_REQUESTS, "result" => "timeout").increment(1);
                tracing::warn!(attempt = %id, "no greylist decision in time; answering the fail mode");
                self.cfg.fail_mode.action().to_string()
            }
        }
    }

    /// Whether the greylist let this attempt's triplet through recently
    /// enough for a repeat to be answered at once.
    fn is_passed_repeat(&self, attempt: &DeliveryAttempted) -> bool {
        let Some(passed) = &self.passed else {
            return false;
        };
        let now = attempt.envelope.event_time.div_euclid(1000);
        attempt::triplet(attempt, self.grouping).is_some_and(|t| passed.lets_through(&t, now))
    }

    /// Answer a repeat of a passed triplet: `DUNNO`, once Kafka has
    /// acknowledged the attempt (carrying that answer); the fail mode if it
    /// does not in `timeout_ms`, as for a decision that does not come.
    async fn answer_repeat(&self, attempt: &mut DeliveryAttempted, key: &str) -> String {
        const PASS: &str = "DUNNO";
        let started = Instant::now();
        attempt.answered = Some(PASS.into());
        let topic = &self.cfg.attempts_topic;
        let limit = Duration::from_millis(self.cfg.timeout_ms);
        let sent = timeout(limit, self.producer.send(topic, key.as_bytes(), &*attempt)).await;
        metrics::histogram!(m::POLICY_REQUEST_DURATION).record(started.elapsed().as_secs_f64());
        match sent {
            Ok(Ok(_)) => {
                waited("acknowledged", started.elapsed());
                metrics::counter!(m::POLICY_REQUESTS, "result" => "repeat").increment(1);
                PASS.into()
            }
            Ok(Err(e)) => {
                metrics::counter!(m::POLICY_REQUESTS, "result" => "timeout").increment(1);
                tracing::warn!(attempt = %attempt.envelope.event_id, error = %e,
                    "attempt not acknowledged; answering the fail mode");
                self.cfg.fail_mode.action().to_string()
            }
            Err(_) => {
                metrics::counter!(m::POLICY_REQUESTS, "result" => "timeout").increment(1);
                tracing::warn!(attempt = %attempt.envelope.event_id,
                    "attempt not acknowledged in time; answering the fail mode");
                self.cfg.fail_mode.action().to_string()
            }
        }
    }

    /// Produce attempt `id` (`event`) to `topic` under `key` and wait, up
    /// to `timeout_ms`, for the decision it causes; `None` when none came.
    async fn ask<A: Answer, E: Event>(
        &self,
        waiters: &Waiters<A>,
        id: &str,
        topic: &str,
        key: &[u8],
        event: &E,
    ) -> Option<A> {
        let started = Instant::now();
        let reply = waiters.register(id);
        let round_trip = async {
            self.producer.send(topic, key, event).await.ok()?;
            let acked = started.elapsed();
            waited("acknowledged", acked);
            let answer = reply.await.ok()?;
            waited("decided", started.elapsed().saturating_sub(acked));
            Some(answer)
        };
        let limit = Duration::from_millis(self.cfg.timeout_ms);
        let answer = timeout(limit, round_trip).await.ok().flatten();
        metrics::histogram!(m::POLICY_REQUEST_DURATION).record(started.elapsed().as_secs_f64());
        if answer.is_none() {
            waiters.forget(id);
        }
        answer
    }

    /// The action for an authenticated RCPT: refused when the account may
    /// not send, else what the outbound limits decide.
    async fn answer_submission(&self, req: &Request, account: &str) -> String {
        let answered = |result: &'static str, action: String| {
            metrics::counter!(m::POLICY_REQUESTS, "result" => result).increment(1);
            action
        };
        match self.submitters.as_ref().map(|s| s.may_submit(account)) {
            Some(MaySubmit::No(status)) => {
                tracing::info!(%account, status, "submission refused: account may not send");
                return answered("submission_refused", submission::refusal(account, status));
            }
            Some(MaySubmit::NotReady) => {
                return answered("submission_not_ready", submission::NOT_READY.into())
            }
            Some(MaySubmit::Yes) | None => {}
        }
        let attempt = submission::attempt(&self.cfg, req, account);
        let id = attempt.envelope.event_id.clone();
        let topic = &self.cfg.submission_attempts_topic;
        let answer = self
            .ask(&self.submissions, &id, topic, account.as_bytes(), &attempt)
            .await;
        match answer {
            Some(decided) if decided.action == LimitAction::Pass => {
                answered("submission_pass", "DUNNO".into())
            }
            Some(decided) => answered("submission_defer", decided.reply),
            None => {
                tracing::warn!(attempt = %id, %account,
                    "no outbound limits decision in time; answering the submission fail mode");
                answered(
                    "submission_timeout",
                    self.cfg.submission_fail_mode.action().to_string(),
                )
            }
        }
    }
}

/// Whether a read found bytes: the first of a request.
fn has_bytes(read: std::io::Result<&[u8]>) -> bool {
    read.is_ok_and(|buf| !buf.is_empty())
}

/// One stage of an answer's wait (`mailfleet_policy_wait_seconds`): which
/// of Kafka's acknowledgement and the decision's way back a slow answer
/// waited on.
fn waited(stage: &'static str, took: Duration) {
    metrics::histogram!(m::POLICY_WAIT, "stage" => stage).record(took.as_secs_f64());
}
