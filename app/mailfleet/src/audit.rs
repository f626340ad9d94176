//! `mailfleet audit ...`: answers from the events alone.
//!
//! - `audit decisions <consumer>` replays the consumer (no outputs, no
//!   effects) and compares every output and dead letter it decides, by
//!   event id, with what its output topics recorded. Ids are deterministic
//!   (`<consumer>:<topic>:<partition>:<offset>:<index>`), so each recorded
//!   output names the input it came from. The last line is exactly
//!   `audited=<n> diffs=<n>`, and a diff exits non-zero.
//! - `audit account <address>`: the account's whole history across the
//!   topics, in order, with each transition's recorded reason; it works
//!   after deletion too, from the tombstone and the log.
//! - `audit mail <message-id | queue id>`: the mail's path, from the
//!   greylist decisions for its triplets to where it was stored.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use mailfleet_events::Registry;
use mailfleet_runtime::{
    admin::{client_config, watermarks},
    config::KafkaConfig,
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};
use serde_json::Value;

use crate::{
    config::Config,
    consumers::ALL_DECIDED,
    replay::{self, RangeArgs, Tp},
};

/// `mailfleet audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute a consumer's decisions and compare them with the recorded outputs.
    Decisions {
        /// Any consumer; of one whose effects emit events (scanner, storage,
        /// deleter, directory), the decided outputs.
        consumer: String,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// An account's whole history across the topics.
    Account {
        /// The address.
        account: String,
    },
    /// A mail's path: greylisting, reception, scan, storage.
    Mail {
        /// Its Message-ID (with or without <>), or the Postfix queue id.
        id: String,
    },
}

/// Run an audit; `Ok(false)` when it found a difference.
pub async fn run(cmd: AuditCommand, cfg: &Config) -> anyhow::Result<bool> {
    match cmd {
        AuditCommand::Decisions { consumer, range } => decisions(cfg, &consumer, &range).await,
        AuditCommand::Account { account } => account_history(cfg, &account).map(|()| true),
        AuditCommand::Mail { id } => mail_path(cfg, &id).map(|()| true),
    }
}

/// One record read back, decoded.
#[derive(Debug, Clone)]
pub struct Read {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub name: String,
    pub json: Value,
}

impl Read {
    fn id(&self) -> &str {
        self.json["envelope"]["event_id"].as_str().unwrap_or("")
    }

    fn time(&self) -> i64 {
        self.json["envelope"]["event_time"].as_i64().unwrap_or(0)
    }

    /// The event's short name (`GreylistDecided`).
    fn short(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }
}

/// Every record of `topic` from the beginning to its end now, decoded;
/// records that are no event of the registry are skipped.
pub fn read_all(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Vec<Read>> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("enable.auto.commit", "false")
        .set("group.id", "mailfleet-audit")
        .create()
        .context("creating the audit reader")?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for (id, low, high) in watermarks(&consumer, topic, Duration::from_secs(10))
        .with_context(|| format!("{topic}: reading its offsets"))?
    {
        if high > low {
            tpl.add_partition_offset(topic, id, Offset::Offset(low))?;
            ends.insert(id, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let mut idle = 0;
    while !ends.is_empty() {
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            idle += 1;
            anyhow::ensure!(idle < 60, "{topic}: reading stalled with {ends:?} to go");
            continue;
        };
        idle = 0;
        let msg = msg.with_context(|| format!("reading {topic}"))?;
        if let Ok((name, json)) = Registry::builtin().to_json(msg.payload().unwrap_or_default()) {
            out.push(Read {
                topic: topic.to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key().map(<[u8]>::to_vec),
                name,
                json,
            });
        }
        if ends
            .get(&msg.partition())
            .is_some_and(|end| msg.offset() + 1 >= *end)
        {
            ends.remove(&msg.partition());
        }
    }
    Ok(out)
}

/// The record at one offset.
fn read_one(kafka: &KafkaConfig, topic: &str, partition: i32, offset: i64) -> Option<Read> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("enable.auto.commit", "false")
        .set("group.id", "mailfleet-audit")
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .ok()?;
    consumer.assign(&tpl).ok()?;
    for _ in 0..20 {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(500)) {
            let (name, json) = Registry::builtin()
                .to_json(msg.payload().unwrap_or_default())
                .ok()?;
            return Some(Read {
                topic: topic.to_string(),
                partition,
                offset: msg.offset(),
                key: msg.key().map(<[u8]>::to_vec),
                name,
                json,
            });
        }
    }
    None
}

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

async fn decisions(cfg: &Config, name: &str, args: &RangeArgs) -> anyhow::Result<bool> {
    // A consumer whose effect emits events (the storage writer's
    // MessageStored, the scanner's verdict) has its decided outputs
    // audited; what its effects emitted cannot be recomputed without doing
    // them again, and is counted, not compared.
    let all_decided = ALL_DECIDED.contains(&name);
    let topology = cfg.topology()?;
    let route = topology.route(name)?;
    let range = replay::resolve(&cfg.kafka, &route.reads, args)?;
    let captured: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = captured.clone();
    let capture = mailfleet_runtime::Capture(Arc::new(move |_topic, _key, payload| {
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(payload.to_vec());
    }));
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let state_dir = cfg.runtime.data_dir.join(format!("audit-{name}-{stamp}"));
    let replayed = replay::replay(cfg, name, &range, &state_dir, Some(capture)).await;
    let _ = std::fs::remove_dir_all(&state_dir);
    let replayed = replayed?;

    // Recomputed: id -> (event name, JSON).
    let mut recomputed: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for payload in captured.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let (event, json) = Registry::builtin().to_json(payload)?;
        let id = json["envelope"]["event_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        recomputed.insert(id, (event, json));
    }
    // Recorded: every distinct version of each id of this consumer whose
    // input lies in the replayed range.
    let mut topics: BTreeSet<String> = route.writes.iter().cloned().collect();
    topics.insert(cfg.runtime.deadletter_topic.clone());
    let mut recorded: BTreeMap<String, Vec<Read>> = BTreeMap::new();
    for topic in &topics {
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
    let mut effect_outputs = 0;
    if !all_decided {
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
        let kind = match (mine, theirs.len()) {
            (None, _) => "recorded, but the rules do not give it",
            (Some(_), 0) => "the rules give it, but it was never recorded",
            (Some(_), _) => "recorded differently from what the rules give",
        };
        println!("diff {id}: {kind}");
        match input_of(name, id).and_then(|((t, p), o)| read_one(&cfg.kafka, &t, p, o)) {
            Some(input) => println!(
                "  input      {}/{}@{} {} {}",
                input.topic,
                input.partition,
                input.offset,
                input.short(),
                input.json
            ),
            None => println!("  input      (not readable)"),
        }
        for r in theirs {
            println!(
                "  recorded   {}/{}@{} {} {}",
                r.topic,
                r.partition,
                r.offset,
                r.short(),
                r.json
            );
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

/// Fields worth a line: everything but the envelope and secrets.
fn summary(json: &Value) -> String {
    let Value::Object(fields) = json else {
        return json.to_string();
    };
    fields
        .iter()
        .filter(|(k, v)| {
            k.as_str() != "envelope"
                && k.as_str() != "account"
                && !k.contains("password")
                && !v.is_null()
        })
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

fn account_history(cfg: &Config, account: &str) -> anyhow::Result<()> {
    let wanted = account.trim().to_ascii_lowercase();
    let topics: BTreeSet<&str> = [
        // Not the status topic: the lifecycle's status changes are on the
        // events topic too, and the compacted copy keeps only the latest.
        cfg.api.events_topic.as_str(),
        cfg.consumers.storage.stored_topic.as_str(),
        cfg.consumers.storage.notify_topic.as_str(),
        cfg.consumers.directory.alerts_topic.as_str(),
        // What it sent and the limits' answers: why it was throttled.
        cfg.consumers.outbound.decisions_topic.as_str(),
        cfg.submission.topic.as_str(),
    ]
    .into_iter()
    .collect();
    let mut found = Vec::new();
    for topic in topics {
        for r in read_all(&cfg.kafka, topic)? {
            let by_key = r
                .key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(wanted.as_bytes()));
            let by_field = r.json["account"]
                .as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case(&wanted));
            // Of the stored topic only what ends a mailbox: not every mail.
            let relevant =
                r.topic != cfg.consumers.storage.stored_topic || r.short() == "MailboxDeleted";
            if (by_key || by_field) && relevant {
                found.push(r);
            }
        }
    }
    anyhow::ensure!(
        !found.is_empty(),
        "no events for {wanted:?} on any account topic"
    );
    found.sort_by(|a, b| (a.time(), &a.topic, a.offset).cmp(&(b.time(), &b.topic, b.offset)));
    let mut seen = BTreeSet::new();
    println!("history of {wanted}");
    for r in found {
        if !seen.insert(r.id().to_string()) {
            continue; // the same event re-sent after a crash
        }
        let line = match r.short() {
            "AccountStatusChanged" => format!(
                "{} -> {} (reason: {})",
                r.json["from"].as_str().unwrap_or("?").to_lowercase(),
                r.json["to"].as_str().unwrap_or("?").to_lowercase(),
                r.json["reason"].as_str().unwrap_or("")
            ),
            _ => summary(&r.json),
        };
        println!("  {}  {:<24} {line}", rfc3339(r.time()), r.short());
    }
    Ok(())
}

fn mail_path(cfg: &Config, id: &str) -> anyhow::Result<()> {
    let wanted = id.trim().trim_start_matches('<').trim_end_matches('>');
    let received = read_all(&cfg.kafka, &cfg.lmtp.topic)?;
    let topology = cfg.topology()?;
    let greylist = topology.route("greylist").ok();
    let attempts = match greylist.and_then(|r| r.reads.first()) {
        Some(t) => read_all(&cfg.kafka, t)?,
        None => Vec::new(),
    };
    let decisions = match greylist.and_then(|r| r.writes.first()) {
        Some(t) => read_all(&cfg.kafka, t)?,
        None => Vec::new(),
    };
    let message_id = |r: &Read| {
        r.json["message_id"]
            .as_str()
            .map(|m| m.trim_start_matches('<').trim_end_matches('>').to_string())
    };
    let mut copies: Vec<&Read> = received
        .iter()
        .filter(|r| message_id(r).as_deref() == Some(wanted))
        .collect();
    // A queue id: the attempts Postfix reported with it name the pair.
    let by_queue: Vec<&Read> = attempts
        .iter()
        .filter(|a| a.json["queue_id"].as_str() == Some(wanted))
        .collect();
    if copies.is_empty() {
        for a in &by_queue {
            let (from, to) = (a.json["sender"].as_str(), a.json["recipient"].as_str());
            copies.extend(received.iter().filter(|r| {
                r.json["sender"].as_str().map(str::to_ascii_lowercase)
                    == from.map(str::to_ascii_lowercase)
                    && r.json["account"].as_str().map(str::to_ascii_lowercase)
                        == to.map(str::to_ascii_lowercase)
                    && r.time() >= a.time()
            }));
        }
    }
    anyhow::ensure!(
        !copies.is_empty() || !by_queue.is_empty(),
        "no mail with Message-ID or queue id {wanted:?} on {}",
        cfg.lmtp.topic
    );
    let scanned = read_all(&cfg.kafka, &cfg.consumers.scanner.scanned_topic)?;
    let stored = read_all(&cfg.kafka, &cfg.consumers.storage.stored_topic)?;
    println!("path of {wanted}");
    if copies.is_empty() {
        println!("  never received over LMTP");
    }
    let mut pairs: BTreeSet<(String, String)> = copies
        .iter()
        .map(|r| {
            (
                r.json["sender"].as_str().unwrap_or("").to_ascii_lowercase(),
                r.json["account"]
                    .as_str()
                    .unwrap_or("")
                    .to_ascii_lowercase(),
            )
        })
        .collect();
    for a in &by_queue {
        pairs.insert((
            a.json["sender"].as_str().unwrap_or("").to_ascii_lowercase(),
            a.json["recipient"]
                .as_str()
                .unwrap_or("")
                .to_ascii_lowercase(),
        ));
    }
    for (from, to) in &pairs {
        println!("  greylisting of <{from}> -> <{to}>:");
        let received_at = copies
            .iter()
            .filter(|r| {
                r.json["account"]
                    .as_str()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                    == Some(to)
            })
            .map(|r| r.time())
            .max()
            .unwrap_or(i64::MAX);
        let mut any = false;
        for a in attempts.iter().filter(|a| {
            a.json["sender"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref()
                == Some(from)
                && a.json["recipient"]
                    .as_str()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                    == Some(to)
                && a.time() <= received_at
        }) {
            any = true;
            let decided = decisions
                .iter()
                .find(|d| d.json["envelope"]["causation_id"].as_str() == Some(a.id()));
            let verdict = decided.map_or("no decision recorded".to_string(), |d| {
                format!(
                    "{} ({}) triplet {}",
                    d.json["verdict"].as_str().unwrap_or("?"),
                    d.json["reason"].as_str().unwrap_or("?"),
                    d.json["triplet"].as_str().unwrap_or("?")
                )
            });
            println!(
                "    {}  attempt from {} {}: {verdict}",
                rfc3339(a.time()),
                a.json["client_address"].as_str().unwrap_or("?"),
                a.json["client_name"].as_str().unwrap_or("")
            );
        }
        if !any {
            println!("    no policy request recorded (a trusted client, or another MX)");
        }
    }
    for r in &copies {
        println!(
            "  {}  received for {} from <{}>, {} bytes, blob {}",
            rfc3339(r.time()),
            r.json["account"].as_str().unwrap_or("?"),
            r.json["sender"].as_str().unwrap_or(""),
            r.json["size"],
            r.json["blob_id"].as_str().unwrap_or("?")
        );
        let rid = r.id();
        for s in scanned
            .iter()
            .filter(|s| s.json["envelope"]["causation_id"].as_str() == Some(rid))
        {
            println!(
                "  {}  scanned: {}",
                rfc3339(s.time()),
                summary(&pick(&s.json, &["verdict", "signature", "file", "rule"]))
            );
            let sid = s.id();
            for o in stored.iter().filter(|o| {
                o.json["delivery_id"].as_str() == Some(rid)
                    || o.json["envelope"]["causation_id"].as_str() == Some(sid)
            }) {
                let what = match o.short() {
                    "MessageStored" => format!(
                        "stored in {} as {}",
                        o.json["folder"].as_str().unwrap_or("?"),
                        o.json["file"].as_str().unwrap_or("?")
                    ),
                    "MessageQuarantined" => format!("quarantined: {}", summary(&o.json)),
                    "MessageRejected" => format!("rejected: {}", summary(&o.json)),
                    other => format!("{other}: {}", summary(&o.json)),
                };
                println!("  {}  {what}", rfc3339(o.time()));
            }
        }
    }
    Ok(())
}

/// Only `keys` of a JSON object.
fn pick(json: &Value, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .filter_map(|k| json.get(*k).map(|v| ((*k).to_string(), v.clone())))
            .collect(),
    )
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

    #[test]
    fn audit_summaries_leave_out_the_envelope_and_secrets() {
        let json = serde_json::json!({
            "envelope": {"event_id": "x"},
            "account": "bob@x",
            "password_hash": "{ARGON2}...",
            "plan": "free",
            "display_name": null,
            "quota_bytes": 5,
        });
        assert_eq!(summary(&json), "plan=free quota_bytes=5");
    }
}
