//! `audit mail <message-id | queue id>`: the mail's path, from the
//! greylist decisions for its triplets to where it was stored.

use std::collections::BTreeSet;

use mailfleet_fleet::config::Config;
use serde_json::Value;

use super::{read_all, rfc3339, summary, Read};

pub(super) fn mail_path(cfg: &Config, id: &str) -> anyhow::Result<()> {
    let wanted = id.trim().trim_start_matches('<').trim_end_matches('>');
    let received = read_all(&cfg.kafka, &cfg.lmtp.topic)?;
    let (attempts, decisions) = greylisting(cfg)?;
    let (copies, by_queue) = find(wanted, &received, &attempts);
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
    for (from, to) in &pairs(&copies, &by_queue) {
        print_greylisting(from, to, &copies, &attempts, &decisions);
    }
    for r in &copies {
        print_delivery(r, &scanned, &stored);
    }
    Ok(())
}

/// The greylist consumer's inputs (the policy requests) and outputs (its
/// decisions), read whole; none without a greylist route.
fn greylisting(cfg: &Config) -> anyhow::Result<(Vec<Read>, Vec<Read>)> {
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
    Ok((attempts, decisions))
}

/// The copies of the mail received over LMTP, and the policy requests
/// Postfix reported with `wanted` as their queue id.
fn find<'a>(
    wanted: &str,
    received: &'a [Read],
    attempts: &'a [Read],
) -> (Vec<&'a Read>, Vec<&'a Read>) {
    let message_id = |r: &Read| {
        r.json["message_id"]
            .as_str()
            .map(|m| m.trim_start_matches('<').trim_end_matches('>').to_string())
    };
    // A queue id: the MX's, as the LMTP server recorded it (XFORWARD
    // IDENT), which every copy carries; Postfix has none yet at the first
    // RCPT (it opens the queue file after it), so a policy request
    // rarely does.
    let mut copies: Vec<&Read> = received
        .iter()
        .filter(|r| {
            message_id(r).as_deref() == Some(wanted) || r.json["queue_id"].as_str() == Some(wanted)
        })
        .collect();
    // Or the attempts Postfix reported with it, which name the pair.
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
    (copies, by_queue)
}

/// Every (sender, recipient) pair the mail went by, lower-cased.
fn pairs(copies: &[&Read], by_queue: &[&Read]) -> BTreeSet<(String, String)> {
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
    for a in by_queue {
        pairs.insert((
            a.json["sender"].as_str().unwrap_or("").to_ascii_lowercase(),
            a.json["recipient"]
                .as_str()
                .unwrap_or("")
                .to_ascii_lowercase(),
        ));
    }
    pairs
}

/// The policy requests of one pair up to its reception, each with the
/// greylist's decision.
fn print_greylisting(
    from: &str,
    to: &str,
    copies: &[&Read],
    attempts: &[Read],
    decisions: &[Read],
) {
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

/// One copy's reception, its scan and where it was stored.
fn print_delivery(r: &Read, scanned: &[Read], stored: &[Read]) {
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
        if let Some(spam) = spam_line(&s.json) {
            println!("  {}  spam: {spam}", rfc3339(s.time()));
        }
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

/// rspamd's verdict on a `MessageScanned` (v2), e.g. `REJECT, score
/// 15.0 of 15.0, tests GTUBE` or `unscored: rspamd at ...: refused`;
/// `None` when rspamd was not asked.
fn spam_line(scanned: &Value) -> Option<String> {
    if let Some(why) = scanned["spam_error"].as_str() {
        return Some(format!("unscored: {why}"));
    }
    let spam = scanned.get("spam").filter(|v| v.is_object())?;
    let tests: Vec<&str> = spam["symbols"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    Some(format!(
        "{}{}, score {:.1} of {:.1}, tests {}",
        spam["action"].as_str().unwrap_or("?"),
        if spam["flagged"].as_bool() == Some(true) {
            " (flagged: Spam folder)"
        } else {
            ""
        },
        spam["score"].as_f64().unwrap_or(f64::NAN),
        spam["required"].as_f64().unwrap_or(f64::NAN),
        if tests.is_empty() {
            "none".to_string()
        } else {
            tests.join(",")
        }
    ))
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
    use serde_json::json;

    use super::spam_line;

    #[test]
    fn the_spam_line_shows_action_score_and_tests_or_why_unscored() {
        let scored = json!({"spam": {"action": "ADD_HEADER", "score": 7.9, "required": 15.0,
            "symbols": [{"name": "MAILFLEET_TEST_SPAMMY", "score": 8.0}], "flagged": true},
            "spam_error": null});
        assert_eq!(
            spam_line(&scored).unwrap(),
            "ADD_HEADER (flagged: Spam folder), score 7.9 of 15.0, tests MAILFLEET_TEST_SPAMMY"
        );
        let down = json!({"spam": null, "spam_error": "rspamd at x: refused"});
        assert_eq!(spam_line(&down).unwrap(), "unscored: rspamd at x: refused");
        assert_eq!(spam_line(&json!({"spam": null, "spam_error": null})), None);
        assert_eq!(spam_line(&json!({"verdict": "CLEAN"})), None, "a v1 event");
    }
}
