//! Catch-up: where a new owner resumes, read back from the end of the
//! jobs topic (see the module doc of [`super`]).

use std::collections::HashSet;

use mailfleet_events::{scheduler::JobDue, Registry};
use mailfleet_runtime::{
    config::KafkaConfig,
    read::{end_offsets, read_last},
    RuntimeError,
};

use super::MARK_KIND;
use crate::SchedulerError;

/// Records read back from the end of each jobs partition: far more than one
/// instant writes (its runs and one mark).
const READ_BACK_RECORDS: i64 = 256;

/// Where a new owner resumes.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ReadBack {
    /// Everything at or before it was written (`None`: a first start).
    pub(super) last: Option<i64>,
    /// Runs already written, not to be written again.
    pub(super) seen: HashSet<String>,
}

impl ReadBack {
    /// From the records read back: the newest mark, or one ms before the
    /// newest run if that is newer (its instant was cut short).
    fn from_records(records: impl IntoIterator<Item = JobDue>) -> Self {
        let (mut mark, mut run) = (None::<i64>, None::<i64>);
        let mut seen = HashSet::new();
        for r in records {
            let t = r.envelope.event_time;
            if r.kind == MARK_KIND {
                mark = mark.max(Some(t));
            } else {
                run = run.max(Some(t));
                seen.insert(r.run_id);
            }
        }
        let last = match (mark, run) {
            (Some(m), Some(r)) => Some(m.max(r - 1)),
            (m, r) => m.or(r.map(|r| r - 1)),
        };
        Self { last, seen }
    }
}

/// Read the newest records of every partition of the jobs topic.
pub(super) fn read_back(kafka: &KafkaConfig, topic: &str) -> Result<ReadBack, SchedulerError> {
    let ends = end_offsets(kafka, &[topic.to_string()]).map_err(|source| {
        SchedulerError::ReadJobsOffsets {
            topic: topic.to_string(),
            source: Box::new(source),
        }
    })?;
    if ends.is_empty() {
        return Err(SchedulerError::FindJobsTopic {
            topic: topic.to_string(),
        });
    }
    let records =
        read_last(kafka, topic, "scheduler-readback", READ_BACK_RECORDS).map_err(|e| match e {
            RuntimeError::Read { .. } => SchedulerError::FinishReadBack {
                topic: topic.to_string(),
            },
            e => e.into(),
        })?;
    let mut jobs = Vec::with_capacity(records.len());
    for r in records {
        match Registry::builtin().decode::<JobDue>(&r.payload) {
            Ok(job) => jobs.push(job),
            Err(e) => tracing::warn!(%topic, partition = r.partition, offset = r.offset,
                error = %e, "not a JobDue; ignored"),
        }
    }
    Ok(ReadBack::from_records(jobs))
}

#[cfg(test)]
mod tests {
    use mailfleet_events::Envelope;
    use std::collections::BTreeMap;

    use super::*;
    use crate::{emitter::MARK_JOB, schedule::run_id};

    fn record(job: &str, kind: &str, at: i64) -> JobDue {
        let id = run_id(job, at).unwrap();
        JobDue {
            envelope: Envelope::new(id.clone(), at, "test"),
            job: job.into(),
            kind: kind.into(),
            due_at: at,
            run_id: id,
            params: BTreeMap::new(),
        }
    }

    #[test]
    fn scheduler_read_back_resumes_after_the_newest_mark() {
        let back = ReadBack::from_records([
            record("a", "purge", 1_000),
            record(MARK_JOB, MARK_KIND, 1_000),
            record(MARK_JOB, MARK_KIND, 2_000),
        ]);
        assert_eq!(back.last, Some(2_000));
    }

    #[test]
    fn scheduler_read_back_redoes_an_instant_cut_short_without_its_written_runs() {
        let back = ReadBack::from_records([
            record(MARK_JOB, MARK_KIND, 1_000),
            record("a", "purge", 5_000),
        ]);
        assert_eq!(back.last, Some(4_999));
        assert!(back.seen.contains(&run_id("a", 5_000).unwrap()));
    }

    #[test]
    fn scheduler_read_back_of_an_empty_topic_is_a_first_start() {
        assert_eq!(ReadBack::from_records([]), ReadBack::default());
    }
}
