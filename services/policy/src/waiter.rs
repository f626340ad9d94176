//! Waiting for an answer: one reader per decisions topic (the greylist's,
//! the outbound limits') follows it from its current end and hands each
//! decision meant for this policy host to the request waiting on its
//! causation id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mailfleet_events::{greylist::GreylistDecided, submission::SubmissionDecided, Event, Registry};
use mailfleet_runtime::{config::KafkaConfig, follow::follow_from_end, RuntimeError, Shutdown};
use rdkafka::Message;
use tokio::sync::oneshot;

/// A decision a request waits for: which attempt caused it, and which
/// policy host asked.
pub trait Answer: Event + Send + 'static {
    /// The attempt's event id.
    fn cause(&self) -> Option<&str>;
    /// The policy host that produced the attempt.
    fn host(&self) -> &str;
}

impl Answer for GreylistDecided {
    fn cause(&self) -> Option<&str> {
        self.envelope.causation_id.as_deref()
    }
    fn host(&self) -> &str {
        &self.policy_host
    }
}

impl Answer for SubmissionDecided {
    fn cause(&self) -> Option<&str> {
        self.envelope.causation_id.as_deref()
    }
    fn host(&self) -> &str {
        &self.policy_host
    }
}

/// Requests waiting for their decision, by attempt event id.
pub struct Waiters<A> {
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<A>>>>,
}

impl<A> Clone for Waiters<A> {
    fn clone(&self) -> Self {
        Self {
            pending: self.pending.clone(),
        }
    }
}

impl<A> Default for Waiters<A> {
    fn default() -> Self {
        Self {
            pending: Arc::default(),
        }
    }
}

impl<A: Answer> Waiters<A> {
    /// Register before producing the attempt, so the answer cannot be missed.
    pub fn register(&self, attempt_id: &str) -> oneshot::Receiver<A> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(attempt_id.to_string(), tx);
        rx
    }

    /// Forget a request that timed out.
    pub fn forget(&self, attempt_id: &str) {
        self.lock().remove(attempt_id);
    }

    fn deliver(&self, decided: A) {
        let Some(cause) = decided.cause().map(str::to_string) else {
            return;
        };
        if let Some(tx) = self.lock().remove(&cause) {
            let _ = tx.send(decided);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<A>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Follow the decisions topic from its end until shutdown, showing every
/// decision (any host's) to `seen` and handing each decision for this host
/// to its waiter.
pub fn follow<A: Answer>(
    kafka: &KafkaConfig,
    topic: &str,
    host: &str,
    waiters: Waiters<A>,
    patience: Duration,
    shutdown: Shutdown,
    seen: impl Fn(&A) + Send + 'static,
) -> Result<(), RuntimeError> {
    let host = host.to_string();
    let name = format!("policy-{topic}");
    follow_from_end(kafka, topic, &name, patience, shutdown, move |msg| {
        let Some(bytes) = msg.payload() else { return };
        match Registry::builtin().decode::<A>(bytes) {
            Ok(d) => {
                seen(&d);
                if d.host() == host {
                    waiters.deliver(d);
                }
            }
            Err(e) => tracing::warn!(error = %e, offset = msg.offset(), "undecodable decision"),
        }
    })
}
