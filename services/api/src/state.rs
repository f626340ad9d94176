//! What every handler shares: the projection, the acknowledged producer,
//! the per-account write locks and the gate on password hashing.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use mailfleet_events::{Envelope, Event};
use mailfleet_password as password;
use mailfleet_runtime::{producer::EventProducer, time::Clock};
use tokio::sync::{Mutex, MutexGuard, Semaphore};

use super::{
    config::Plans,
    errors::ApiError,
    learn::Learning,
    projection::{new_event_id, Account, Projection},
    wire::{AccountView, Secret},
};

/// The `producer` of the API's events.
pub const PRODUCER: &str = "api";
/// Stripes of the per-account write lock: two accounts share one with
/// probability 1/1024, which only serialises them.
const LOCK_STRIPES: usize = 1024;

/// The handlers' shared state.
pub struct AppState {
    pub projection: Projection,
    pub writer: Writer,
    pub locks: Locks,
    pub plans: Plans,
    /// The bearer token every request must carry, if configured.
    pub token: Option<Secret>,
    /// At most this many argon2 hashes or verifications at once: each
    /// takes 64 MiB, so a burst of logins must not take the memory.
    pub hashing: Semaphore,
    /// The learn route's rspamd, blob store and topic (`[api.spam]`).
    pub learning: Option<Learning>,
    /// What stamps the events (compressed time only in demos and tests).
    pub clock: Clock,
}

impl AppState {
    /// 503 until the projection has caught up.
    pub fn ready(&self) -> Result<(), ApiError> {
        if self.projection.is_ready() {
            Ok(())
        } else {
            Err(ApiError::NotReady {
                topic: self.writer.topic.clone(),
            })
        }
    }

    /// A fresh envelope: a new id, event time now.
    pub fn envelope(&self) -> Envelope {
        Envelope::new(new_event_id(), self.clock.now_ms(), PRODUCER)
    }

    /// The account's view now, or `fallback`'s if it vanished meanwhile.
    pub fn view_of(&self, fallback: &Account) -> AccountView {
        self.projection
            .get(&fallback.account)
            .unwrap_or_else(|| fallback.clone())
            .view()
    }

    /// Hash a password off the async workers.
    pub async fn hash(&self, secret: Secret) -> Result<String, ApiError> {
        let _permit = self.permit().await?;
        tokio::task::spawn_blocking(move || password::hash(secret.expose()))
            .await
            .map_err(|e| ApiError::Internal(format!("the hashing thread failed: {e}")))?
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Verify a password against `account`'s stored hash off the async
    /// workers. An unreadable stored hash is a 500 naming the account and
    /// the scheme, never the hash.
    pub async fn verify(&self, secret: Secret, account: &Account) -> Result<bool, ApiError> {
        let _permit = self.permit().await?;
        let stored = account.password_hash.clone();
        tokio::task::spawn_blocking(move || password::verify(secret.expose(), &stored))
            .await
            .map_err(|e| ApiError::Internal(format!("the verifying thread failed: {e}")))?
            .map_err(|e| {
                ApiError::Internal(format!(
                    "cannot verify the password of account {}: {e}",
                    account.account
                ))
            })
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.hashing
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(format!("hashing gate closed: {e}")))
    }
}

/// Produces the API's events and waits for Kafka's acknowledgement.
pub struct Writer {
    producer: EventProducer,
    topic: String,
    timeout: Duration,
}

impl Writer {
    pub fn new(producer: EventProducer, topic: &str, timeout: Duration) -> Self {
        Self {
            producer,
            topic: topic.to_string(),
            timeout,
        }
    }

    /// Send `event` keyed by `account` (lower-cased) and wait for the
    /// acknowledgement (`acks=all`), at most the configured timeout.
    pub async fn send<E: Event>(&self, account: &str, event: &E) -> Result<(), ApiError> {
        let failed = |reason: String| ApiError::Kafka {
            event: E::NAME.rsplit('.').next().unwrap_or(E::NAME),
            account: account.to_string(),
            topic: self.topic.clone(),
            reason,
        };
        // librdkafka gives up after message.timeout.ms (= the timeout); the
        // extra second only guards against it never answering.
        let send = self.producer.send(&self.topic, account.as_bytes(), event);
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), send).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!(
                "no acknowledgement within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// Per-account write locks, striped: a check of the projection, the
/// produce and the projection update of one account happen under one
/// lock, so two concurrent registrations of one address cannot both pass
/// the check. This holds within one API process only: run one per
/// cluster.
pub struct Locks {
    stripes: Vec<Mutex<()>>,
}

impl Default for Locks {
    fn default() -> Self {
        Self {
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl Locks {
    /// Wait for `account`'s lock.
    pub async fn lock(&self, account: &str) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        account.hash(&mut h);
        let stripe = (h.finish() % self.stripes.len() as u64) as usize;
        self.stripes[stripe].lock().await
    }
}
