//! The second stage of the batch loop: send a decided batch's outputs,
//! await every acknowledgement, then write its `WriteBatch`, on a thread
//! of its own, while the loop polls, decodes and decides the next batch.
//!
//! At most one batch is in flight. The next batch is decided against the
//! in-flight one's pending state ([`crate::state::StateView::with_earlier`]),
//! and is handed over only once that one is committed, so batches commit in
//! order and each `WriteBatch` still holds one batch's state and offsets. A
//! crash while a batch is in flight commits neither it nor the next: both
//! are read again from the stored offsets and decided as before.

use rustc_hash::FxHashMap;
use std::{
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use futures::future::join_all;

use super::{
    batch::{commit_of, PartitionWork},
    context::Tp,
    fault, Capture,
};
use crate::{
    error::RuntimeError, metrics as m, producer::EventProducer, shutdown::Shutdown, state::Overlay,
    store::Store,
};

/// A decided batch, uncommitted.
pub(super) struct Batch {
    pub work: FxHashMap<Tp, PartitionWork>,
    pub overlays: FxHashMap<i32, Overlay>,
    /// Records taken into it.
    pub count: usize,
    /// When its first record was polled.
    pub started: Instant,
}

impl Batch {
    /// Whether a partition stalled in it (and must be paused before more
    /// of it is polled).
    pub fn stalled(&self) -> bool {
        self.work.values().any(|w| w.stall.is_some())
    }
}

/// What the committing thread needs: every piece owned or shared.
pub(super) struct Committer {
    pub name: String,
    pub store: Arc<Store>,
    /// Made at the first output, so that a run that sends nothing (a
    /// replay, a consumer without outputs) has none to stop: stopping a
    /// producer waits out its polling thread's 100 ms poll.
    pub producer: Option<EventProducer>,
    pub kafka: crate::config::KafkaConfig,
    pub tokio: tokio::runtime::Handle,
    pub faults: fault::Armed,
    pub shutdown: Shutdown,
    pub settings: Settings,
}

/// What the run's spec says of sending and retrying.
pub(super) struct Settings {
    capture: Option<Capture>,
    produce: bool,
    retry_initial_ms: u64,
    retry_max_ms: u64,
}

impl Settings {
    pub fn of(spec: &super::RunSpec) -> Self {
        Self {
            capture: spec.capture.clone(),
            produce: spec.produce,
            retry_initial_ms: spec.runtime.retry_initial_ms,
            retry_max_ms: spec.runtime.retry_max_ms,
        }
    }
}

/// The committing thread, fed one batch at a time.
pub(super) struct Pipeline {
    jobs: Option<mpsc::SyncSender<Arc<Batch>>>,
    done: mpsc::Receiver<Result<(), RuntimeError>>,
    thread: Option<std::thread::JoinHandle<()>>,
    name: String,
}

impl Pipeline {
    pub fn start(mut committer: Committer) -> Result<Self, RuntimeError> {
        let (jobs, inbox) = mpsc::sync_channel::<Arc<Batch>>(1);
        let (outbox, done) = mpsc::sync_channel(1);
        let name = committer.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("commit-{name}"))
            .spawn(move || {
                for batch in inbox {
                    let result = committer.send(&batch.work).and_then(|()| {
                        committer
                            .store
                            .commit(&commit_of(&batch.work, &batch.overlays))
                    });
                    drop(batch);
                    if outbox.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| RuntimeError::Thread {
                consumer: name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            name,
        })
    }

    /// Hand a decided batch over; [`Self::wait`] gives its result.
    pub fn submit(&self, batch: Arc<Batch>) -> Result<(), RuntimeError> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(batch).ok())
            .ok_or_else(|| self.gone())
    }

    /// Wait until the batch handed over last is acknowledged and committed.
    pub fn wait(&self) -> Result<(), RuntimeError> {
        self.done.recv().map_err(|_| self.gone())?
    }

    /// The result of the batch handed over last, if it is in by now.
    pub fn try_wait(&self) -> Option<Result<(), RuntimeError>> {
        match self.done.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(self.gone())),
        }
    }

    fn gone(&self) -> RuntimeError {
        RuntimeError::Thread {
            consumer: self.name.clone(),
            reason: "the committing thread ended".into(),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Committer {
    /// Produce every output and dead letter; return once Kafka acked all.
    /// A failed send is retried with backoff; nothing is committed until
    /// all succeed, and a shutdown during retries commits nothing.
    fn send(&mut self, work: &FxHashMap<Tp, PartitionWork>) -> Result<(), RuntimeError> {
        let mut pending: Vec<&super::batch::Outgoing> =
            work.values().flat_map(|w| &w.outputs).collect();
        if let Some(capture) = &self.settings.capture {
            for o in &pending {
                (capture.0)(&o.topic, &o.key, &o.payload);
            }
        }
        if !self.settings.produce || pending.is_empty() {
            return Ok(());
        }
        if self.producer.is_none() {
            let client_id = format!("mailfleet-{}-out", self.name);
            self.producer = Some(EventProducer::new(&self.kafka, &client_id)?);
        }
        let Some(producer) = self.producer.as_ref() else {
            return Ok(()); // made just above
        };
        let outputs = pending.len();
        let mut backoff = Duration::from_millis(self.settings.retry_initial_ms);
        while !pending.is_empty() {
            let sends = pending
                .iter()
                .map(|o| producer.send_raw(&o.topic, &o.key, &o.payload));
            let results = self
                .tokio
                .block_on(self.acknowledged(join_all(sends), pending.len()));
            let mut failed = Vec::new();
            for (out, result) in pending.into_iter().zip(results) {
                if let Err(e) = result {
                    tracing::warn!(consumer = %self.name, topic = %out.topic, error = %e, "produce failed");
                    metrics::counter!(m::ERRORS, "consumer" => self.name.clone(), "kind" => "produce")
                        .increment(1);
                    failed.push(out);
                }
            }
            pending = failed;
            if !pending.is_empty() {
                if self.shutdown.is_triggered() {
                    return Err(RuntimeError::Thread {
                        consumer: self.name.clone(),
                        reason: "shut down while outputs were failing; batch not committed".into(),
                    });
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(self.settings.retry_max_ms));
            }
        }
        fault::after_ack(self.faults, &self.name, outputs);
        Ok(())
    }

    /// Await `sends`. librdkafka keeps and retries records the broker has
    /// not acknowledged (until `message.timeout.ms`, 300 s by default), so
    /// while the broker is down the batch waits here, and the loop stops
    /// at the next batch: every [`ACK_WAIT_REPORT`] the wait is logged and
    /// counted as an error of kind `unacked`, so the outage shows in the
    /// metrics while it lasts, not only once the sends fail or succeed.
    async fn acknowledged<F: std::future::Future>(&self, sends: F, outputs: usize) -> F::Output {
        let started = Instant::now();
        let mut sends = std::pin::pin!(sends);
        loop {
            tokio::select! {
                results = &mut sends => return results,
                () = tokio::time::sleep(ACK_WAIT_REPORT) => {
                    metrics::counter!(m::ERRORS, "consumer" => self.name.clone(), "kind" => "unacked")
                        .increment(1);
                    tracing::warn!(consumer = %self.name, outputs, waited_s = started.elapsed().as_secs(),
                        "outputs not acknowledged by Kafka yet; the batch waits, nothing is committed");
                }
            }
        }
    }
}

/// How often a wait for acknowledgements is reported.
const ACK_WAIT_REPORT: Duration = Duration::from_secs(5);
