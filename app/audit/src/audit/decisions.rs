//! `audit decisions <consumer>`: recompute a consumer's decisions by a
//! replay and compare them, by event id, with what its output topics
//! recorded.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use mailfleet_events::Registry;
use mailfleet_fleet::{config::Config, consumers::ALL_DECIDED};
use serde_json::Value;

use super::{read::read_one, read_all, Read};
use crate::replay::{self, Range, RangeArgs, Replayed, Tp};

/// The input position an output or dead-letter id of `consumer` names.
fn input_of(consumer: &str, id: &str) -> Option<(Tp, i64)> {
    let rest = id.strip_prefix(consumer)?.strip_prefix(':')?;
    if let Some(letter) = rest.strip_prefix("deadletter:") {
        let mut parts = letter.rsplitn(3, ':');
        let offset = parts.next()?.parse().ok()?;
        let partition = parts.next()?.parse().ok()?;
        return Some(((parts.next()?.to_string(), partition), offset));
    }
    let mut parts = rest.rsplitn(4, ':');
    parts.next()?.parse::<usize>().ok()?; // the output's index
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    Some(((parts.next()?.to_string(), partition), offset))
}

/// The index of an output id (none for a dead letter).
fn output_index(id: &str) -> Option<usize> {
    if id.contains(":deadletter:") {
        return None;
    }
    id.rsplit(':').next()?.parse().ok()
}

/// What the rules give, by output id: the event's name and its JSON.
type Recomputed = BTreeMap<String, (String, Value)>;
/// What the topics recorded, by output id: every distinct version.
type Recorded = BTreeMap<String, Vec<Read>>;

pub(super) async fn decisions(cfg: &Config, name: &str, args: &RangeArgs) -> anyhow::Result<bool> {
    // A consumer whose effect emits events (the storage writer's
    // MessageStored, the scanner's verdict) has its decided outputs
    // audited; what its effects emitted cannot be recomputed without doing
    // them again, and is counted, not compared.
    let all_decided = ALL_DECIDED.iter().any(|c| c.as_str() == name);
    let topology = cfg.topology()?;
    let route = topology.route(name)?;
    let range = replay::resolve(&cfg.kafka, &route.reads, args)?;
    let (replayed, mut recomputed) = recompute(cfg, name, &range).await?;
    let mut topics: BTreeSet<String> = route.writes.iter().cloned().collect();
    topics.insert(cfg.runtime.deadletter_topic.clone());
    let mut recorded = recorded(cfg, name, &topics, &range)?;
    let mut effect_outputs = 0;
    if !all_decided {
        effect_outputs = set_aside_effects(name, &mut recomputed, &mut recorded);
    }
    let ids: BTreeSet<&String> = recomputed.keys().chain(recorded.keys()).collect();
    let mut diffs = 0;
    for id in &ids {
        let mine = recomputed.get(*id);
        let theirs = recorded.get(*id).map(Vec::as_slice).unwrap_or_default();
        let same = match mine {
            Some((_, json)) => theirs.len() == 1 && theirs[0].json == *json,
            None => false,
        };
        if same {
            continue;
        }
        diffs += 1;
        print_diff(cfg, name, id, mine, theirs);
    }
    let (answered, answered_diffs) = check_answered(cfg, name, &route.reads, &range, &recomputed)?;
    diffs += answered_diffs;
    if answered > 0 {
        println!("answered at once: {answered} inputs, {answered_diffs} answered otherwise than the rules give");
    }
    eprintln!(
        "replayed {} events of {name}; compared with {}",
        replayed.stats.events,
        topics.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    if !all_decided {
        println!("not audited: {effect_outputs} outputs emitted by {name}'s effects");
    }
    println!("audited={} diffs={diffs}", ids.len());
    Ok(diffs == 0)
}

/// Inputs that carry the answer already given for them (`answered`: the
/// policy server's answer to a repeat, before the greylist decided it):
/// that answer must be the `action` the rules give for the input (its
/// first output). Returns how many there were, and how many differ.
fn check_answered(
    cfg: &Config,
    name: &str,
    reads: &[String],
    range: &Range,
    recomputed: &Recomputed,
) -> anyhow::Result<(usize, usize)> {
    let (mut answered, mut differ) = (0, 0);
    for topic in reads {
        for input in read_all(&cfg.kafka, topic)? {
            let Some(given) = input.json.get("answered").and_then(Value::as_str) else {
                continue;
            };
            if !range.contains(&(input.topic.clone(), input.partition), input.offset) {
                continue;
            }
            answered += 1;
            let id = format!(
                "{name}:{}:{}:{}:0",
                input.topic, input.partition, input.offset
            );
            let action = recomputed.get(&id).and_then(|(_, j)| j["action"].as_str());
            if action == Some(given) {
                continue;
            }
            differ += 1;
            println!("diff {id}: answered {given:?} at once, but the rules give {action:?}");
            println!("  input      {}", input.line());
        }
    }
    Ok((answered, differ))
}

/// Replay `name` over `range` into a state folder of its own (removed
/// after), capturing every output it decides.
async fn recompute(
    cfg: &Config,
    name: &str,
    range: &Range,
) -> anyhow::Result<(Replayed, Recomputed)> {
    let captured: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = captured.clone();
    let capture = mailfleet_runtime::Capture(Arc::new(move |_topic, _key, payload| {
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(payload.to_vec());
    }));
    let stamp = mailfleet_runtime::time::now_ms();
    let state_dir = cfg.runtime.data_dir.join(format!("audit-{name}-{stamp}"));
    let replayed = replay::replay(cfg, name, range, &state_dir, Some(capture)).await;
    let _ = std::fs::remove_dir_all(&state_dir);
    let replayed = replayed?;

    // Recomputed: id -> (event name, JSON).
    let mut recomputed: Recomputed = BTreeMap::new();
    for payload in captured.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let (event, json) = Registry::builtin().to_json(payload)?;
        let id = json["envelope"]["event_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        recomputed.insert(id, (event, json));
    }
    Ok((replayed, recomputed))
}

/// Recorded: every distinct version of each id of this consumer on
/// `topics` whose input lies in the replayed range.
fn recorded(
    cfg: &Config,
    name: &str,
    topics: &BTreeSet<String>,
    range: &Range,
) -> anyhow::Result<Recorded> {
    let mut recorded: Recorded = BTreeMap::new();
    for topic in topics {
        for r in read_all(&cfg.kafka, topic)? {
            let Some((tp, offset)) = input_of(name, r.id()) else {
                continue;
            };
            if !range.contains(&tp, offset) {
                continue;
            }
            let versions = recorded.entry(r.id().to_string()).or_default();
            if !versions.iter().any(|v| v.json == r.json) {
                versions.push(r);
            }
        }
    }
    Ok(recorded)
}

/// Of a consumer whose effects emit events: leave out the recorded
/// outputs its effects emitted, and the decided outputs of inputs its
/// effect refused; returns how many effect outputs were left out.
fn set_aside_effects(name: &str, recomputed: &mut Recomputed, recorded: &mut Recorded) -> usize {
    let mut effect_outputs = 0;
    // Decided outputs per input come first (indexes 0..n); later ones
    // are the effect's. An input the effect refused was dead-lettered
    // live, so its decided outputs were never sent.
    let mut decided: HashMap<(Tp, i64), usize> = HashMap::new();
    for id in recomputed.keys() {
        if let (Some(input), Some(_)) = (input_of(name, id), output_index(id)) {
            *decided.entry(input).or_default() += 1;
        }
    }
    let refused: BTreeSet<(Tp, i64)> = recorded
        .keys()
        .filter(|id| output_index(id).is_none())
        .filter_map(|id| input_of(name, id))
        .collect();
    recorded.retain(|id, _| {
        let (Some(input), Some(index)) = (input_of(name, id), output_index(id)) else {
            return true;
        };
        let effect = index >= decided.get(&input).copied().unwrap_or(0);
        effect_outputs += usize::from(effect);
        !effect
    });
    recomputed.retain(|id, _| {
        input_of(name, id)
            .is_none_or(|input| output_index(id).is_none() || !refused.contains(&input))
    });
    effect_outputs
}

/// One difference: the input it came from, what was recorded and what the
/// rules give.
fn print_diff(cfg: &Config, name: &str, id: &str, mine: Option<&(String, Value)>, theirs: &[Read]) {
    let kind = match (mine, theirs.len()) {
        (None, _) => "recorded, but the rules do not give it",
        (Some(_), 0) => "the rules give it, but it was never recorded",
        (Some(_), _) => "recorded differently from what the rules give",
    };
    println!("diff {id}: {kind}");
    match input_of(name, id).and_then(|((t, p), o)| read_one(&cfg.kafka, &t, p, o)) {
        Some(input) => println!("  input      {}", input.line()),
        None => println!("  input      (not readable)"),
    }
    for r in theirs {
        println!("  recorded   {}", r.line());
    }
    if theirs.is_empty() {
        println!("  recorded   none");
    }
    match mine {
        Some((event, json)) => println!(
            "  recomputed {} {json}",
            event.rsplit('.').next().unwrap_or(event)
        ),
        None => println!("  recomputed none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_output_ids_name_their_input() {
        assert_eq!(
            input_of("greylist", "greylist:smtp.attempts:3:17:0"),
            Some((("smtp.attempts".to_string(), 3), 17))
        );
        assert_eq!(
            input_of("greylist", "greylist:deadletter:smtp.attempts:2:5"),
            Some((("smtp.attempts".to_string(), 2), 5))
        );
        assert_eq!(
            input_of("greylist", "lifecycle:accounts.events:0:1:0"),
            None
        );
        assert_eq!(input_of("greylist", "greylist:x"), None);
        assert_eq!(
            input_of("index", "indexer:a:1:2:0"),
            None,
            "a prefix is not the name"
        );
    }
}
