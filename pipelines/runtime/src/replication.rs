//! How many copies of each topic the cluster keeps, and how many must have
//! a record before it counts as written; the checks of both, pure.
//!
//! A topic's `replication_factor` and `min_insync_replicas` come from its
//! topology entry, else from `[kafka]` (the operator's defaults for every
//! topic: the built-in topology sets neither). They are checked at config
//! load ([`problems`], [`Replication::problems`]) and, by `topics apply`,
//! against what the cluster has ([`against_cluster`]).
//!
//! # What they promise
//! Every producer of mailfleet writes with `acks=all` ([`crate::producer`]):
//! the partition leader acknowledges a record once every in-sync replica
//! has it, and refuses it (`NOT_ENOUGH_REPLICAS`, a transient error) while
//! fewer than `min.insync.replicas` replicas are in sync. So with
//! replication factor 3 and min ISR 2, an acknowledged record (the `250`
//! of `mailfleet lmtp`) is on at least two brokers: losing one loses
//! nothing and writes go on; losing two stops writes (the LMTP server
//! answers 4xx, consumers retry) rather than acknowledge a record one
//! broker alone has. Precondition: no unclean leader election (Kafka's
//! default), so an out-of-sync replica never becomes leader.

use crate::{config::KafkaConfig, topology::TopicSpec};

/// One topic's replication as declared, with the key each value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// Copies of each partition.
    pub factor: i32,
    /// `topics.<name>.replication_factor` or `kafka.replication_factor`.
    pub factor_key: String,
    /// `min.insync.replicas`; `None` leaves the broker's default.
    pub min_insync: Option<i32>,
    /// `topics.<name>.min_insync_replicas` or `kafka.min_insync_replicas`.
    pub min_insync_key: String,
}

impl Replication {
    /// `[kafka]`'s defaults.
    pub fn defaults(kafka: &KafkaConfig) -> Replication {
        Replication {
            factor: kafka.replication_factor,
            factor_key: "kafka.replication_factor".into(),
            min_insync: kafka.min_insync_replicas,
            min_insync_key: "kafka.min_insync_replicas".into(),
        }
    }

    /// Topic `name`'s replication: its own settings, else `kafka`'s.
    pub fn of(name: &str, spec: &TopicSpec, kafka: &KafkaConfig) -> Replication {
        let mut rep = Replication::defaults(kafka);
        if let Some(f) = spec.replication_factor {
            rep.factor = f;
            rep.factor_key = format!("topics.{name}.replication_factor");
        }
        if let Some(m) = spec.min_insync_replicas {
            rep.min_insync = Some(m);
            rep.min_insync_key = format!("topics.{name}.min_insync_replicas");
        }
        rep
    }

    /// A min ISR above the replication factor: no `acks=all` write could
    /// ever be acknowledged.
    pub fn problems(&self) -> Option<String> {
        let m = self
            .min_insync
            .filter(|m| self.factor >= 1 && *m > self.factor)?;
        Some(format!(
            "{} = {m}: more than the replication factor {} ({}): no write could ever be \
             acknowledged",
            self.min_insync_key, self.factor, self.factor_key
        ))
    }
}

/// The values' own problems, under `prefix` (`kafka` or `topics.<name>`).
pub fn problems(prefix: &str, factor: Option<i32>, min_insync: Option<i32>) -> Vec<String> {
    [
        ("replication_factor", factor),
        ("min_insync_replicas", min_insync),
    ]
    .into_iter()
    .filter_map(|(field, value)| {
        let v = value.filter(|v| *v < 1)?;
        Some(format!("{prefix}.{field} = {v}: must be >= 1"))
    })
    .collect()
}

/// What `topics apply` must refuse for `topic`, given what the cluster at
/// `bootstrap` has: `actual`, the most replicas a partition of the topic
/// has (`None`: no such topic yet), and the live brokers its metadata
/// lists. A replication factor is never lowered; one above the brokers
/// cannot be created (only a topic that already has its replicas may be
/// applied while a broker is down).
pub fn against_cluster(
    topic: &str,
    declared: &Replication,
    actual: Option<i32>,
    brokers: usize,
    bootstrap: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let f = declared.factor;
    let to_place = actual.is_none_or(|a| a < f);
    if to_place && usize::try_from(f).is_ok_and(|f| f > brokers) {
        out.push(format!(
            "{} = {f}: more than the {brokers} live broker(s) the cluster at {bootstrap} lists",
            declared.factor_key
        ));
    }
    let Some(a) = actual else {
        return out;
    };
    if a > f {
        out.push(format!(
            "topic {topic}: replication factor {a} on the cluster, {f} declared ({}): \
             refusing to lower it (declare {a})",
            declared.factor_key
        ));
    }
    if let Some(m) = declared.min_insync.filter(|m| *m > a && a < f) {
        out.push(format!(
            "{} = {m}: more than the {a} replica(s) topic {topic} has: every write would be \
             refused until it has {f}",
            declared.min_insync_key
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(factor: i32, min_insync: Option<i32>) -> KafkaConfig {
        KafkaConfig {
            replication_factor: factor,
            min_insync_replicas: min_insync,
            ..KafkaConfig::default()
        }
    }

    fn spec(factor: Option<i32>, min_insync: Option<i32>) -> TopicSpec {
        TopicSpec {
            replication_factor: factor,
            min_insync_replicas: min_insync,
            ..TopicSpec::scratch(1)
        }
    }

    #[test]
    fn a_topic_takes_its_own_values_else_the_kafka_defaults_and_names_the_key() {
        let r = Replication::of("t", &spec(None, Some(1)), &kafka(3, Some(2)));
        assert_eq!((r.factor, r.min_insync), (3, Some(1)));
        assert_eq!(r.factor_key, "kafka.replication_factor");
        assert_eq!(r.min_insync_key, "topics.t.min_insync_replicas");
        let r = Replication::of("t", &spec(Some(2), None), &kafka(3, None));
        assert_eq!((r.factor, r.min_insync), (2, None));
        assert_eq!(r.factor_key, "topics.t.replication_factor");
    }

    #[test]
    fn min_isr_above_the_factor_and_values_below_one_are_named() {
        let r = Replication::of("t", &spec(Some(1), None), &kafka(3, Some(2)));
        let p = r.problems().unwrap();
        assert!(p.starts_with("kafka.min_insync_replicas = 2:"), "{p}");
        assert!(p.contains("topics.t.replication_factor"), "{p}");
        assert_eq!(
            Replication::of("t", &spec(None, None), &kafka(3, Some(3))).problems(),
            None
        );
        let p = problems("kafka", Some(0), Some(-1)).join("\n");
        assert!(
            p.contains("kafka.replication_factor = 0: must be >= 1"),
            "{p}"
        );
        assert!(
            p.contains("kafka.min_insync_replicas = -1: must be >= 1"),
            "{p}"
        );
        assert!(problems("kafka", Some(1), None).is_empty());
    }

    #[test]
    fn more_replicas_than_brokers_are_refused_unless_the_topic_has_them() {
        let r = Replication::of("t", &spec(None, None), &kafka(4, None));
        let p = against_cluster("t", &r, None, 3, "b:1").join("\n");
        assert!(
            p.contains("kafka.replication_factor = 4: more than the 3 live"),
            "{p}"
        );
        assert!(p.contains("b:1"), "{p}");
        let p = against_cluster("t", &r, Some(3), 3, "b:1").join("\n");
        assert!(p.contains("kafka.replication_factor = 4"), "{p}");
        // A broker down: a topic already on 3 replicas is fine.
        let r = Replication::of("t", &spec(None, None), &kafka(3, Some(2)));
        assert!(against_cluster("t", &r, Some(3), 2, "b:1").is_empty());
        assert!(!against_cluster("t", &r, None, 2, "b:1").is_empty());
    }

    #[test]
    fn lowering_is_refused_naming_topic_actual_and_declared() {
        let r = Replication::of("t", &spec(Some(2), None), &kafka(1, None));
        let p = against_cluster("t", &r, Some(3), 3, "b:1").join("\n");
        assert!(
            p.contains("topic t: replication factor 3 on the cluster, 2 declared"),
            "{p}"
        );
        assert!(p.contains("topics.t.replication_factor"), "{p}");
        assert!(against_cluster("t", &r, Some(2), 3, "b:1").is_empty());
    }

    #[test]
    fn a_min_isr_the_existing_replicas_cannot_meet_is_named() {
        let r = Replication::of("t", &spec(None, None), &kafka(3, Some(2)));
        let p = against_cluster("t", &r, Some(1), 3, "b:1").join("\n");
        assert!(
            p.contains("kafka.min_insync_replicas = 2: more than the 1 replica"),
            "{p}"
        );
        assert!(against_cluster("t", &r, Some(2), 3, "b:1").is_empty());
    }
}
