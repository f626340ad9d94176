//! One order for the records of co-partitioned input topics, the same live
//! and in a replay.
//!
//! A consumer reading several topics sees, per partition number, records
//! from each of them. librdkafka hands them over in fetch order, which
//! depends on timing: a replay of the same log interleaves them
//! differently, and a decision that depends on the order (a quota change
//! before or after a delivery) would then differ.
//!
//! The order used instead is a merge of the topics' queues by the broker's
//! append time (every topic is `message.timestamp.type = LogAppendTime`),
//! then the topic's place in the consumer's `reads`, then the offset. The
//! head of one topic is released only when every other topic of its
//! partition either has a head of its own to compare with, or will bring
//! nothing that sorts before it:
//! - it is exhausted (a replay reached its stop offset), or
//! - it is caught up with its high watermark and the candidate was appended
//!   more than `merge_grace_ms` ago. A record appended to it later carries a
//!   later append time, provided the broker's clock is within the grace of
//!   this host's and the high watermark this client knows is not older than
//!   the grace.
//!
//! A replay has every record at hand and takes the same merge, so live and
//! replay agree. A record that breaks the assumption (it arrives with an
//! append time before one already released in its partition) is processed
//! at once and counted as late; an audit then shows its decision if it
//! differed.

use rustc_hash::FxHashMap;
use std::collections::{HashSet, VecDeque};

use super::{batch::Record, context::Tp};

/// What the runner knows of one input partition that has no record queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Nothing more will be read from it (a replay reached its stop).
    Exhausted,
    /// Everything up to the high watermark has been read.
    CaughtUp,
    /// Records are still to be fetched, or nothing is known yet.
    Behind,
}

/// The queued records of every input topic, by partition number.
pub struct Merge {
    topics: Vec<String>,
    grace_ms: i64,
    queues: FxHashMap<i32, Vec<VecDeque<Record>>>,
    /// The sort key of the last record released, per partition.
    released: FxHashMap<i32, (i64, usize)>,
    late: u64,
}

fn stamp(rec: &Record) -> i64 {
    rec.meta.timestamp.unwrap_or(0)
}

impl Merge {
    /// A merge of `topics` (the consumer's `reads`, whose order breaks ties).
    pub fn new(topics: &[String], grace_ms: u64) -> Self {
        Self {
            topics: topics.to_vec(),
            grace_ms: grace_ms as i64,
            queues: FxHashMap::default(),
            released: FxHashMap::default(),
            late: 0,
        }
    }

    /// Records that arrived after one with a later append time had already
    /// been released in their partition.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// How many records are queued.
    pub fn len(&self) -> usize {
        self.queues
            .values()
            .flat_map(|qs| qs.iter())
            .map(VecDeque::len)
            .sum()
    }

    /// Whether any record of this input partition is queued.
    pub fn holds(&self, tp: &Tp) -> bool {
        let Some(i) = self.index(&tp.0) else {
            return false;
        };
        self.queues.get(&tp.1).is_some_and(|qs| !qs[i].is_empty())
    }

    fn index(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == topic)
    }

    /// Queue polled records. A record of a topic that is not an input is
    /// returned at once (it has nothing to be ordered against).
    pub fn push(&mut self, records: Vec<Record>) -> Vec<Record> {
        let mut passed = Vec::new();
        for rec in records {
            let Some(i) = self.index(&rec.meta.topic) else {
                passed.push(rec);
                continue;
            };
            let n = self.topics.len();
            let queues = self
                .queues
                .entry(rec.meta.partition)
                .or_insert_with(|| (0..n).map(|_| VecDeque::new()).collect());
            queues[i].push_back(rec);
        }
        passed
    }

    /// Release, in merge order, every record that nothing still to come can
    /// precede. `source` tells where an input partition with an empty queue
    /// stands; `now_ms` is this host's clock.
    pub fn release(
        &mut self,
        now_ms: i64,
        mut source: impl FnMut(&str, i32) -> Source,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        let mut partitions: Vec<i32> = self.queues.keys().copied().collect();
        partitions.sort_unstable();
        for p in partitions {
            let Some(queues) = self.queues.get_mut(&p) else {
                continue;
            };
            // Where each empty queue's topic stands, asked once per call.
            let mut known: Vec<Option<Source>> = vec![None; queues.len()];
            loop {
                let head = queues
                    .iter()
                    .enumerate()
                    .filter_map(|(i, q)| q.front().map(|r| ((stamp(r), i, r.meta.offset), i)))
                    .min();
                let Some(((ts, i, _), _)) = head else {
                    break;
                };
                let mut clear = true;
                for (j, q) in queues.iter().enumerate() {
                    if j == i || !q.is_empty() {
                        continue;
                    }
                    let s = *known[j].get_or_insert_with(|| source(&self.topics[j], p));
                    let ok = match s {
                        Source::Exhausted => true,
                        Source::CaughtUp => now_ms - ts > self.grace_ms,
                        Source::Behind => false,
                    };
                    if !ok {
                        clear = false;
                        break;
                    }
                }
                if !clear {
                    break;
                }
                let Some(rec) = queues[i].pop_front() else {
                    break;
                };
                if self.released.get(&p).is_some_and(|&last| (ts, i) < last) {
                    self.late += 1;
                }
                self.released.insert(p, (ts, i));
                out.push(rec);
            }
            if queues.iter().all(VecDeque::is_empty) {
                self.queues.remove(&p);
            }
        }
        out
    }

    /// Put records released but not decided (their partition stalled) back
    /// at the front of their queues, in the order they were released.
    pub fn unrelease(&mut self, records: Vec<Record>) {
        for rec in records.into_iter().rev() {
            let Some(i) = self.index(&rec.meta.topic) else {
                continue;
            };
            let n = self.topics.len();
            let p = rec.meta.partition;
            // Released again, they must not count as late.
            self.released.remove(&p);
            self.queues
                .entry(p)
                .or_insert_with(|| (0..n).map(|_| VecDeque::new()).collect())[i]
                .push_front(rec);
        }
    }

    /// Drop the queued records of one input partition (it is read again
    /// from an earlier offset).
    pub fn drop_topic(&mut self, tp: &Tp) {
        let Some(i) = self.index(&tp.0) else {
            return;
        };
        if let Some(queues) = self.queues.get_mut(&tp.1) {
            queues[i].clear();
            if queues.iter().all(VecDeque::is_empty) {
                self.queues.remove(&tp.1);
            }
        }
    }

    /// Drop the queued records of partition `p`; return, per input topic,
    /// the first offset dropped (where reading must resume).
    pub fn drop_partition(&mut self, p: i32) -> Vec<(Tp, i64)> {
        let Some(queues) = self.queues.remove(&p) else {
            return Vec::new();
        };
        queues
            .into_iter()
            .enumerate()
            .filter_map(|(i, q)| Some(((self.topics[i].clone(), p), q.front()?.meta.offset)))
            .collect()
    }

    /// Drop the queued records of every partition not in `assigned`.
    pub fn drop_unassigned(&mut self, assigned: &HashSet<i32>) -> Vec<(Tp, i64)> {
        let gone: Vec<i32> = self
            .queues
            .keys()
            .filter(|p| !assigned.contains(p))
            .copied()
            .collect();
        gone.into_iter()
            .flat_map(|p| self.drop_partition(p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::RecordMeta;

    fn rec(topic: &str, partition: i32, offset: i64, ts: i64) -> Record {
        Record {
            meta: RecordMeta {
                topic: topic.into(),
                partition,
                offset,
                key: None,
                timestamp: Some(ts),
            },
            payload: None,
        }
    }

    fn ids(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{}{}@{}", r.meta.topic, r.meta.partition, r.meta.offset))
            .collect()
    }

    fn merge() -> Merge {
        Merge::new(&["a".to_string(), "b".to_string()], 1000)
    }

    #[test]
    fn heads_are_merged_by_append_time_then_topic_then_offset() {
        let mut m = merge();
        m.push(vec![
            rec("a", 0, 0, 10),
            rec("a", 0, 1, 30),
            rec("b", 0, 0, 20),
            rec("b", 0, 1, 30),
        ]);
        // Both topics exhausted: everything goes, in one order.
        let out = m.release(0, |_, _| Source::Exhausted);
        assert_eq!(ids(&out), ["a0@0", "b0@0", "a0@1", "b0@1"]);
        assert_eq!(m.len(), 0);
        assert_eq!(m.late(), 0);
    }

    #[test]
    fn the_fetch_order_does_not_matter() {
        let all = [
            rec("a", 0, 0, 5),
            rec("b", 0, 0, 7),
            rec("a", 0, 1, 9),
            rec("b", 0, 1, 9),
            rec("a", 0, 2, 12),
        ];
        let order = |chunks: Vec<Vec<usize>>| {
            let mut m = merge();
            let mut out = Vec::new();
            for chunk in chunks {
                m.push(chunk.iter().map(|&i| clone(&all[i])).collect());
                out.extend(m.release(0, |_, _| Source::Behind));
            }
            out.extend(m.release(0, |_, _| Source::Exhausted));
            ids(&out)
        };
        let one = order(vec![vec![0, 1, 2, 3, 4]]);
        assert_eq!(one, ["a0@0", "b0@0", "a0@1", "b0@1", "a0@2"]);
        assert_eq!(order(vec![vec![0, 2, 4], vec![1, 3]]), one);
        assert_eq!(order(vec![vec![1, 3], vec![0], vec![2, 4]]), one);
    }

    fn clone(r: &Record) -> Record {
        rec(
            &r.meta.topic,
            r.meta.partition,
            r.meta.offset,
            r.meta.timestamp.unwrap_or(0),
        )
    }

    #[test]
    fn a_head_waits_for_a_topic_that_is_behind() {
        let mut m = merge();
        m.push(vec![rec("a", 0, 0, 10)]);
        assert!(m.release(1_000_000, |_, _| Source::Behind).is_empty());
        assert!(m.holds(&("a".into(), 0)));
        assert!(!m.holds(&("b".into(), 0)));
    }

    #[test]
    fn a_caught_up_topic_lets_a_head_go_once_the_grace_has_passed() {
        let mut m = merge();
        m.push(vec![rec("a", 0, 0, 10_000)]);
        assert!(m.release(10_500, |_, _| Source::CaughtUp).is_empty());
        assert!(m.release(11_000, |_, _| Source::CaughtUp).is_empty());
        assert_eq!(ids(&m.release(11_001, |_, _| Source::CaughtUp)), ["a0@0"]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut m = merge();
        m.push(vec![rec("a", 0, 0, 10), rec("a", 1, 0, 10)]);
        let out = m.release(0, |_, p| {
            if p == 1 {
                Source::Exhausted
            } else {
                Source::Behind
            }
        });
        assert_eq!(ids(&out), ["a1@0"]);
    }

    #[test]
    fn a_record_older_than_one_released_is_counted_late() {
        let mut m = merge();
        m.push(vec![rec("a", 0, 0, 100)]);
        assert_eq!(m.release(5_000, |_, _| Source::CaughtUp).len(), 1);
        m.push(vec![rec("b", 0, 0, 50)]);
        assert_eq!(m.release(5_000, |_, _| Source::CaughtUp).len(), 1);
        assert_eq!(m.late(), 1);
    }

    #[test]
    fn dropping_a_partition_gives_where_to_resume() {
        let mut m = merge();
        m.push(vec![
            rec("a", 0, 4, 10),
            rec("a", 0, 5, 11),
            rec("b", 0, 9, 12),
            rec("a", 1, 2, 10),
        ]);
        let mut resume = m.drop_partition(0);
        resume.sort();
        assert_eq!(resume, [(("a".into(), 0), 4), (("b".into(), 0), 9)]);
        let rest = m.drop_unassigned(&HashSet::from([0]));
        assert_eq!(rest, [(("a".into(), 1), 2)]);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn records_put_back_after_a_stall_come_first_again() {
        let mut m = merge();
        m.push(vec![
            rec("a", 0, 0, 10),
            rec("b", 0, 0, 20),
            rec("a", 0, 1, 30),
            rec("b", 0, 1, 40),
        ]);
        let mut out = m.release(0, |_, _| Source::Exhausted);
        assert_eq!(out.len(), 4);
        // a0@0 was decided; b0@0 stalled (read again from Kafka); the rest
        // were not decided.
        let rest = out.split_off(2);
        m.drop_topic(&("b".into(), 0));
        m.unrelease(rest.into_iter().filter(|r| &*r.meta.topic == "a").collect());
        m.push(vec![rec("b", 0, 0, 20), rec("b", 0, 1, 40)]);
        let again = m.release(0, |_, _| Source::Exhausted);
        assert_eq!(ids(&again), ["b0@0", "a0@1", "b0@1"]);
        assert_eq!(m.late(), 0);
    }

    #[test]
    fn a_record_of_another_topic_passes_through() {
        let mut m = merge();
        let passed = m.push(vec![rec("c", 0, 0, 1)]);
        assert_eq!(ids(&passed), ["c0@0"]);
    }
}
