//! `mailfleet scheduler`: the process that emits time (F6). It writes a
//! `ClockTicked` into every partition of each `[clock] topics` topic every
//! `scheduler.tick_every_s`, and a `JobDue` to `scheduler.jobs_topic` for
//! every run of a `[scheduler.jobs.*]` job; what is due when comes from the
//! pure core, [`Schedules`]. A purge run also goes
//! into every partition of `scheduler.purge_topic`, where each partition of
//! the purge planner (`mailfleet run purger`) plans its own accounts.
//!
//! **The lease: exactly one active scheduler.** Every instance joins the
//! consumer group `scheduler.lease_group` on the one-partition topic
//! `scheduler.lease_topic` from a thread of its own that only polls (the
//! topic carries no records). The group coordinator assigns partition 0 to
//! exactly one member; that member emits, the others are hot standbys. A
//! revocation stops emission *before* the rebalance completes: the revoke
//! callback takes the lock the emitter holds while it writes one instant's
//! records, so the next owner's read-back sees everything its predecessor
//! wrote. A killed owner keeps the lease until `lease_session_timeout_ms`
//! passes; then a standby takes over and catches up.
//!
//! **Catch-up: the jobs topic is the only state.** After each instant's
//! records (its ticks and job runs) the emitter writes a progress mark to
//! the jobs topic: a `JobDue` with `job = "@mark"` (not a valid job name)
//! and `kind = "scheduler-mark"`, whose `event_time` is that instant;
//! consumers of `JobDue` skip that kind. On becoming active the emitter
//! reads back the newest records of each partition of the jobs topic:
//! `last` is the newest mark, or one ms before the newest job run if that
//! run is newer (an owner that died between a run and its mark), and the
//! runs already there are not written again. [`Schedules::due`] then gives
//! every tick and run in `(last, now]`, so nothing missed during downtime
//! is skipped and no job run is written twice. Ticks of the instant an
//! owner died in may be written twice; their ids (`clock:<topic>:
//! <partition>:<ms>`, as `mailfleet clock` makes them) are deterministic, so
//! consumers deduplicate them. Job run ids are [`run_id`].
//!
//! **Compressed time** ([`Timing`], `mailfleet scheduler --time-scale N`):
//! a demo and test facility, never for production. The emitter reads a
//! [`Clock`] that runs N times faster than the wall clock, so a season of
//! ticks and job runs passes in minutes; `--until` makes it emit every
//! instant up to a given time and exit (as a clean shutdown), so a demo
//! knows which ticks are in the log before it acts. The catch-up rules are
//! unchanged: a restarted compressed scheduler resumes at its last mark.
//!
//! **Metrics** (`[metrics] listen`): `mailfleet_scheduler_leader` (1 while
//! this instance holds the lease), `mailfleet_scheduler_runs_total{job}`
//! and `mailfleet_clock_ticks_total{clock}`, all at 0 from the start.

mod lease;
mod read_back;

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use mailfleet_events::{clock::ClockTicked, scheduler::JobDue, Envelope};
use mailfleet_runtime::{
    config::KafkaConfig,
    metrics as m,
    producer::EventProducer,
    time::{now_ms, Clock},
};
use mailfleet_runtime::{Shutdown, Topology};
use tokio::sync::Mutex;

use crate::{schedule::run_id, Due, JobConfig, JobKind, ProcessConfig, SchedulerError, Schedules};
use lease::{join_lease, set_leader, LeaseState};
use read_back::{read_back, ReadBack};

/// The `job` of a progress mark; `@` is not allowed in job names.
pub const MARK_JOB: &str = "@mark";
/// The `kind` of a progress mark.
pub const MARK_KIND: &str = "scheduler-mark";
/// How often the emitter looks at the clock and the lease.
const POLL: Duration = Duration::from_millis(250);

/// The emitter's time: the wall clock, or compressed time (demo and tests
/// only), and optionally an instant after which it stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// What "now" is.
    pub clock: Clock,
    /// Emit every instant up to this one (ms, on `clock`), then return.
    pub until: Option<i64>,
}

/// Run until SIGTERM (or `timing.until`): standby until the lease is ours,
/// then emit.
pub async fn run(
    cfg: &ProcessConfig<'_>,
    topology: &Topology,
    timing: Timing,
    shutdown: Shutdown,
) -> Result<(), SchedulerError> {
    let sec = cfg.scheduler;
    let schedules = Schedules::new(&sec.core)?;
    let clocked = cfg
        .clock
        .topics
        .iter()
        .map(|t| Ok((t.clone(), partitions(topology, "clock.topics", t)?)))
        .collect::<Result<Vec<_>, SchedulerError>>()?;
    partitions(topology, "scheduler.jobs_topic", &sec.jobs_topic)?;
    // Only a purge job needs the purge topic, and its ticks.
    let purges = sec.core.jobs.values().any(|j| j.kind == JobKind::Purge);
    let purge_partitions = if purges {
        if !cfg.clock.topics.contains(&sec.purge_topic) {
            return Err(SchedulerError::CheckPurgeTopic {
                topic: sec.purge_topic.clone(),
                clocked: cfg.clock.topics.clone(),
            });
        }
        partitions(topology, "scheduler.purge_topic", &sec.purge_topic)?
    } else {
        0
    };
    let lease_partitions = partitions(topology, "scheduler.lease_topic", &sec.lease_topic)?;
    if lease_partitions != 1 {
        return Err(SchedulerError::CheckLeaseTopic {
            topic: sec.lease_topic.clone(),
            partitions: lease_partitions,
        });
    }
    let name = format!("scheduler:{}", std::process::id());
    m::install_exporter(cfg.metrics)?;
    let clock = format!("every-{}s", sec.core.tick_every_s);
    init_metrics(&sec.core.jobs, &clock);
    let emitter = Emitter {
        producer: EventProducer::new(cfg.kafka, "mailfleet-scheduler")?,
        kafka: cfg.kafka.clone(),
        jobs_topic: sec.jobs_topic.clone(),
        purge: (sec.purge_topic.clone(), purge_partitions),
        jobs: sec.core.jobs.clone(),
        tick_every_s: sec.core.tick_every_s,
        clock,
        schedules,
        clocked,
        name,
        timing,
    };
    let state = Arc::new(Mutex::new(LeaseState::default()));
    let close = Duration::from_millis(cfg.runtime.close_timeout_ms);
    let lease = join_lease(cfg.kafka, sec, state.clone(), shutdown.clone(), close)?;
    let result = emitter.run(&state, &shutdown).await;
    shutdown.trigger();
    // Leave the group now, so that a standby takes over at once.
    tokio::task::spawn_blocking(move || lease.join())
        .await?
        .map_err(|_| SchedulerError::JoinLeaseThread)?;
    result
}

/// Every series at 0 (standby, no run, no tick yet), so that `rate()` and
/// alerts see them before the first event.
fn init_metrics(jobs: &BTreeMap<String, JobConfig>, clock: &str) {
    set_leader(false);
    for job in jobs.keys() {
        metrics::counter!(m::SCHEDULER_RUNS, "job" => job.clone()).increment(0);
    }
    metrics::counter!(m::CLOCK_TICKS, "clock" => clock.to_string()).increment(0);
}

fn partitions(topology: &Topology, key: &'static str, topic: &str) -> Result<i32, SchedulerError> {
    topology
        .topics
        .get(topic)
        .map(|spec| spec.partitions)
        .ok_or_else(|| SchedulerError::FindTopic {
            key,
            topic: topic.to_string(),
        })
}

/// What the active scheduler writes, and where.
struct Emitter {
    producer: EventProducer,
    kafka: KafkaConfig,
    jobs_topic: String,
    /// The purge topic and its partitions: each gets every purge run.
    purge: (String, i32),
    jobs: BTreeMap<String, JobConfig>,
    tick_every_s: u32,
    /// `ClockTicked.clock`: `every-<tick_every_s>s`.
    clock: String,
    schedules: Schedules,
    /// Each clocked topic with its partition count.
    clocked: Vec<(String, i32)>,
    /// `Envelope.producer`: which instance wrote it.
    name: String,
    timing: Timing,
}

impl Emitter {
    async fn run(
        &self,
        state: &Mutex<LeaseState>,
        shutdown: &Shutdown,
    ) -> Result<(), SchedulerError> {
        loop {
            let epoch = loop {
                {
                    let s = state.lock().await;
                    if s.active {
                        break s.epoch;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.wait() => return Ok(()),
                }
            };
            let (kafka, topic) = (self.kafka.clone(), self.jobs_topic.clone());
            let back = tokio::task::spawn_blocking(move || read_back(&kafka, &topic)).await??;
            tracing::info!(last = ?back.last, runs_seen = back.seen.len(), "active: catching up");
            if !self.emit_while_active(state, epoch, back, shutdown).await? {
                return Ok(());
            }
        }
    }

    /// Emit until the lease is lost (`Ok(true)`) or shutdown (`Ok(false)`).
    async fn emit_while_active(
        &self,
        state: &Mutex<LeaseState>,
        epoch: u64,
        back: ReadBack,
        shutdown: &Shutdown,
    ) -> Result<bool, SchedulerError> {
        let ReadBack { mut last, seen } = back;
        let until = self.timing.until.unwrap_or(i64::MAX);
        loop {
            let now = self.timing.clock.now_ms().min(until);
            let catch = self.schedules.due(last, now)?;
            if catch.ticks_merged > 0 {
                tracing::warn!(
                    merged = catch.ticks_merged,
                    "long downtime: missed ticks thinned"
                );
            }
            for group in catch.due.chunk_by(|a, b| a.at() == b.at()) {
                let at = group[0].at();
                let guard = state.lock().await;
                if !guard.active || guard.epoch != epoch {
                    return Ok(true);
                }
                self.emit_instant(at, group, &seen).await?;
                drop(guard);
                last = Some(at);
            }
            if catch.resume_after.is_some() {
                continue;
            }
            if now >= until {
                tracing::info!(until, "emitted every instant up to --until: stopping");
                return Ok(false);
            }
            let next = self.schedules.next_after(last.unwrap_or(now).max(now))?;
            let wall = self.timing.clock.wall_at(next) - now_ms();
            let wait = Duration::from_millis(u64::try_from(wall).unwrap_or(0)).min(POLL);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => return Ok(false),
            }
            let s = state.lock().await;
            if !s.active || s.epoch != epoch {
                return Ok(true);
            }
        }
    }

    /// Everything due at one instant, then its progress mark.
    async fn emit_instant(
        &self,
        at: i64,
        due: &[Due],
        seen: &HashSet<String>,
    ) -> Result<(), SchedulerError> {
        for item in due {
            match item {
                Due::Tick { at } => self.tick(*at).await?,
                Due::Job { job, at } => {
                    let id = run_id(job, *at)?;
                    if seen.contains(&id) {
                        tracing::info!(run = %id, "already written by the previous owner");
                        continue;
                    }
                    let event = self.job_due(job, *at, id)?;
                    if event.kind == "purge" {
                        self.fan_out(&event).await?;
                    }
                    self.producer
                        .send(&self.jobs_topic, job.as_bytes(), &event)
                        .await?;
                    metrics::counter!(m::SCHEDULER_RUNS, "job" => job.clone()).increment(1);
                    tracing::info!(run = %event.run_id, "job due");
                }
            }
        }
        let id = run_id(MARK_JOB, at)?;
        let mark = JobDue {
            envelope: Envelope::new(id.clone(), at, self.name.as_str()),
            job: MARK_JOB.into(),
            kind: MARK_KIND.into(),
            due_at: at,
            run_id: id,
            params: BTreeMap::new(),
        };
        self.producer
            .send(&self.jobs_topic, MARK_JOB.as_bytes(), &mark)
            .await?;
        Ok(())
    }

    /// A `ClockTicked` at `at` into every partition of each clocked topic.
    async fn tick(&self, at: i64) -> Result<(), SchedulerError> {
        let period_ms = i64::from(self.tick_every_s) * 1000;
        let mut sends = Vec::new();
        for (topic, partitions) in &self.clocked {
            for partition in 0..*partitions {
                let tick = ClockTicked {
                    envelope: Envelope::new(
                        format!("clock:{topic}:{partition}:{at}"),
                        at,
                        self.name.as_str(),
                    ),
                    clock: self.clock.clone(),
                    period_ms,
                };
                let bytes = mailfleet_events::encode(&tick)?;
                sends.push(async move {
                    self.producer
                        .send_to_partition(topic, partition, &bytes)
                        .await
                });
            }
        }
        futures::future::try_join_all(sends).await?;
        metrics::counter!(m::CLOCK_TICKS, "clock" => self.clock.clone()).increment(1);
        tracing::debug!(at, "ticked");
        Ok(())
    }

    /// A purge run into every partition of the purge topic, before its
    /// record on the jobs topic: a run a new owner finds there reached
    /// every planner (a repeat is ignored by its run id).
    async fn fan_out(&self, event: &JobDue) -> Result<(), SchedulerError> {
        let (topic, partitions) = (&self.purge.0, self.purge.1);
        let bytes = mailfleet_events::encode(event)?;
        let sends = (0..partitions).map(|partition| {
            let bytes = &bytes;
            async move {
                self.producer
                    .send_to_partition(topic, partition, bytes)
                    .await
            }
        });
        futures::future::try_join_all(sends).await?;
        Ok(())
    }

    fn job_due(&self, job: &str, at: i64, id: String) -> Result<JobDue, SchedulerError> {
        job_due(&self.jobs, &self.name, job, at, id)
    }
}

/// The `JobDue` of one run of `job` (as configured in `jobs`) due at `at`,
/// written by `producer`; its params carry the job's settings.
pub fn job_due(
    jobs: &BTreeMap<String, JobConfig>,
    producer: &str,
    job: &str,
    at: i64,
    id: String,
) -> Result<JobDue, SchedulerError> {
    let cfg = jobs
        .get(job)
        .ok_or_else(|| SchedulerError::FindJob { job: job.into() })?;
    let mut params = BTreeMap::new();
    let kind = match cfg.kind {
        JobKind::Purge => "purge",
        JobKind::PostfixMap => "postfix-map",
    };
    if let Some(folder) = &cfg.folder {
        params.insert("folder".into(), folder.clone());
    }
    if let Some(days) = cfg.older_than_days {
        params.insert("older_than_days".into(), days.to_string());
    }
    if let Some(before) = cfg.received_before(at) {
        params.insert("received_before".into(), before.to_string());
    }
    if cfg.kind == JobKind::Purge {
        params.insert("window_minutes".into(), cfg.window_minutes.to_string());
        params.insert("max_purges_per_s".into(), cfg.max_purges_per_s.to_string());
    }
    Ok(JobDue {
        envelope: Envelope::new(id.clone(), at, producer),
        job: job.into(),
        kind: kind.into(),
        due_at: at,
        run_id: id,
        params,
    })
}
