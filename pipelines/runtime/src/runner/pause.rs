//! A partition that met a transient failure: paused at the failed offset
//! with an exponential backoff, then sought back and resumed.

use std::time::{Duration, Instant};

use rdkafka::{consumer::Consumer as _, topic_partition_list::TopicPartitionList, Offset};

use super::{batch, context::Tp, Runner};
use crate::{consumer::Consumer, metrics as m};

/// Where a paused partition starts again, and when.
pub(super) struct Paused {
    pub(super) resume_at: Instant,
    pub(super) offset: i64,
}

impl<C: Consumer> Runner<C> {
    /// Stop a partition at its failed offset until its backoff ends.
    pub(super) fn pause(&mut self, tp: Tp, stall: batch::Stall) {
        let n = self.failures.entry(tp.clone()).or_insert(0);
        *n += 1;
        let backoff = stall.after.unwrap_or_else(|| {
            let base = self
                .spec
                .runtime
                .retry_initial_ms
                .saturating_mul(1 << (*n - 1).min(20));
            Duration::from_millis(base.min(self.spec.runtime.retry_max_ms))
        });
        metrics::counter!(m::RETRIES, "consumer" => self.name.clone()).increment(1);
        metrics::counter!(m::ERRORS, "consumer" => self.name.clone(), "kind" => "transient")
            .increment(1);
        tracing::warn!(consumer = %self.name, topic = %tp.0, partition = tp.1, offset = stall.offset,
            reason = %stall.reason, backoff_ms = backoff.as_millis() as u64, "partition paused");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        if let Err(e) = self.kc.pause(&tpl) {
            tracing::warn!(consumer = %self.name, error = %e, "pause");
        }
        self.shared
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tp.clone(), stall.offset);
        self.paused.insert(
            tp,
            Paused {
                resume_at: Instant::now() + backoff,
                offset: stall.offset,
            },
        );
    }

    /// Seek paused partitions back to their failed offset and resume them.
    pub(super) fn resume_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Tp> = self
            .paused
            .iter()
            .filter(|(_, p)| p.resume_at <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            let Some(p) = self.paused.remove(&tp) else {
                continue;
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&tp.0, tp.1);
            let seek = self.kc.seek(
                &tp.0,
                tp.1,
                Offset::Offset(p.offset),
                Duration::from_secs(5),
            );
            match seek.and_then(|_| self.kc.resume(&tpl)) {
                Ok(()) => tracing::info!(consumer = %self.name, topic = %tp.0, partition = tp.1,
                    offset = p.offset, "partition resumed"),
                Err(e) => {
                    tracing::warn!(consumer = %self.name, error = %e, "resume failed; retrying");
                    self.paused.insert(
                        tp,
                        Paused {
                            resume_at: now + Duration::from_millis(500),
                            ..p
                        },
                    );
                }
            }
        }
    }
}
