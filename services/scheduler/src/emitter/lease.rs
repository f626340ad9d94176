//! The lease: exactly one active scheduler (see the module doc of
//! [`super`]). A thread of its own polls the lease group; the revoke
//! callback stops emission before the rebalance goes on.

use std::{sync::Arc, time::Duration};

use mailfleet_runtime::{admin::client_config, config::KafkaConfig, metrics as m, Shutdown};
use rdkafka::{
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance},
    ClientContext,
};
use tokio::sync::Mutex;

use super::POLL;
use crate::{SchedulerError, SchedulerSection};

/// `mailfleet_scheduler_leader`: 1 while this instance holds the lease.
pub(super) fn set_leader(active: bool) {
    metrics::gauge!(m::SCHEDULER_LEADER).set(if active { 1.0 } else { 0.0 });
}

/// Whether this instance holds the lease; `epoch` counts acquisitions, so
/// an emitter notices a loss and a regain between two of its looks.
#[derive(Default)]
pub(super) struct LeaseState {
    pub(super) active: bool,
    pub(super) epoch: u64,
}

/// Stops emission on a revocation before the rebalance goes on.
struct LeaseContext {
    state: Arc<Mutex<LeaseState>>,
}

impl ClientContext for LeaseContext {}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_) | Rebalance::Error(_)) {
            // Waits while the emitter writes an instant: the next owner
            // reads back a complete instant.
            let mut state = self.state.blocking_lock();
            if state.active {
                tracing::info!("lease revoked: standby");
            }
            state.active = false;
            set_leader(false);
        }
    }
}

/// Join the lease group on a thread that polls until shutdown, then leaves.
pub(super) fn join_lease(
    kafka: &KafkaConfig,
    sec: &SchedulerSection,
    state: Arc<Mutex<LeaseState>>,
    shutdown: Shutdown,
    close: Duration,
) -> Result<std::thread::JoinHandle<()>, SchedulerError> {
    let session = sec.lease_session_timeout_ms;
    let consumer: BaseConsumer<LeaseContext> = client_config(kafka)
        .set("group.id", &sec.lease_group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 6).max(500).to_string())
        .create_with_context(LeaseContext {
            state: state.clone(),
        })
        .map_err(SchedulerError::CreateLeaseConsumer)?;
    consumer
        .subscribe(&[&sec.lease_topic])
        .map_err(|source| SchedulerError::SubscribeLease {
            topic: sec.lease_topic.clone(),
            source,
        })?;
    let topic = sec.lease_topic.clone();
    let handle = std::thread::Builder::new()
        .name("scheduler-lease".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                if let Some(Err(e)) = consumer.poll(POLL) {
                    tracing::warn!(error = %e, "lease consumer");
                }
                let owns = consumer.assignment().is_ok_and(|tpl| {
                    tpl.elements_for_topic(&topic)
                        .iter()
                        .any(|e| e.partition() == 0)
                });
                let mut s = state.blocking_lock();
                if owns && !s.active {
                    s.epoch += 1;
                    tracing::info!(epoch = s.epoch, "lease acquired: active");
                } else if !owns && s.active {
                    tracing::info!("lease lost: standby");
                }
                s.active = owns;
                set_leader(owns);
            }
            state.blocking_lock().active = false;
            set_leader(false);
            mailfleet_runtime::leave_group(consumer, close, "scheduler-lease");
        })
        .map_err(SchedulerError::StartLeaseThread)?;
    Ok(handle)
}
