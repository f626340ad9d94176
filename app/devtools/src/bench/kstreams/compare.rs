//! The check that both peers decided every attempt, and alike: the first
//! run's decisions are the reference, keyed by the attempt's event id
//! (the decision's causation id); every other run is compared field by
//! field against it.

use std::collections::{BTreeMap, HashMap};

use mailfleet_events::greylist::GreylistDecided;

/// What a decision says, apart from where and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Said {
    event_id: String,
    verdict: String,
    reason: String,
    action: String,
    delay_seconds: i64,
    triplet: Option<String>,
    settings_hash: Option<String>,
}

impl Said {
    fn of(d: GreylistDecided) -> (String, Said) {
        (
            d.envelope.causation_id.unwrap_or_default(),
            Said {
                event_id: d.envelope.event_id,
                verdict: format!("{:?}", d.verdict),
                reason: format!("{:?}", d.reason),
                action: d.action,
                delay_seconds: d.delay_seconds,
                triplet: d.triplet,
                settings_hash: d.settings_hash,
            },
        )
    }
}

/// The first run's decisions.
pub struct Reference {
    name: String,
    by_attempt: HashMap<String, Said>,
}

/// The decisions of one run, checked: one per attempt, none twice.
fn index(
    name: &str,
    decisions: Vec<(i64, GreylistDecided)>,
    n: u64,
) -> anyhow::Result<HashMap<String, Said>> {
    let total = decisions.len();
    let by_attempt: HashMap<String, Said> =
        decisions.into_iter().map(|(_, d)| Said::of(d)).collect();
    anyhow::ensure!(
        by_attempt.len() == total && total as u64 == n,
        "{name}: {total} decisions for {} distinct attempts, {n} attempts produced",
        by_attempt.len()
    );
    Ok(by_attempt)
}

impl Reference {
    pub fn new(name: &str, decisions: Vec<(i64, GreylistDecided)>, n: u64) -> anyhow::Result<Self> {
        Ok(Reference {
            name: name.to_string(),
            by_attempt: index(name, decisions, n)?,
        })
    }

    /// Decisions per (verdict, reason).
    pub fn tally(&self) -> String {
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for s in self.by_attempt.values() {
            *counts
                .entry((s.verdict.clone(), s.reason.clone()))
                .or_default() += 1;
        }
        counts
            .iter()
            .map(|((v, r), c)| format!("{v}/{r} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Differences of another run from the reference: a count per field
    /// and the first few attempts in full.
    pub fn check(
        &self,
        name: &str,
        decisions: Vec<(i64, GreylistDecided)>,
        n: u64,
    ) -> anyhow::Result<Vec<String>> {
        let other = index(name, decisions, n)?;
        let mut per_field: BTreeMap<&str, u64> = BTreeMap::new();
        let mut examples = Vec::new();
        for (attempt, theirs) in &other {
            let Some(ours) = self.by_attempt.get(attempt) else {
                *per_field
                    .entry("attempt unknown to the reference")
                    .or_default() += 1;
                continue;
            };
            if ours == theirs {
                continue;
            }
            let fields = [
                ("event_id", ours.event_id != theirs.event_id),
                ("verdict", ours.verdict != theirs.verdict),
                ("reason", ours.reason != theirs.reason),
                ("action", ours.action != theirs.action),
                ("delay_seconds", ours.delay_seconds != theirs.delay_seconds),
                ("triplet", ours.triplet != theirs.triplet),
                ("settings_hash", ours.settings_hash != theirs.settings_hash),
            ];
            for (field, differs) in fields {
                if differs {
                    *per_field.entry(field).or_default() += 1;
                }
            }
            if examples.len() < 5 {
                examples.push(format!(
                    "{name} vs {}, attempt {attempt}: {theirs:?} vs {ours:?}",
                    self.name
                ));
            }
        }
        let mut out: Vec<String> = per_field
            .iter()
            .map(|(field, count)| {
                format!(
                    "{name} vs {}: {count} decisions differ in {field}",
                    self.name
                )
            })
            .collect();
        out.extend(examples);
        Ok(out)
    }
}
