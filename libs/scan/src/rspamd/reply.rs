//! rspamd's JSON answers, read into mailfleet's types with no I/O: the
//! scan (`/checkv2`) and a learn (`/learnspam`, `/learnham`).

use mailfleet_events::mail::{LearnOutcome, SpamAction, SpamResult, SpamSymbol};
use serde::Deserialize;

use super::RspamdError;

/// The part of a `/checkv2` answer mailfleet keeps.
#[derive(Debug, Deserialize)]
struct CheckV2 {
    action: String,
    score: f64,
    required_score: f64,
    #[serde(default)]
    symbols: std::collections::BTreeMap<String, Symbol>,
}

#[derive(Debug, Deserialize)]
struct Symbol {
    #[serde(default)]
    score: f64,
}

/// Read a `/checkv2` answer. `flag` says which actions the scanner's
/// mapping delivers to the Spam folder; `max_symbols` bounds the list
/// (highest absolute score first, then by name, so the list repeats).
pub fn parse_check(
    body: &[u8],
    max_symbols: usize,
    flag: impl Fn(SpamAction) -> bool,
) -> Result<SpamResult, RspamdError> {
    let reply: CheckV2 = serde_json::from_slice(body).map_err(|e| RspamdError::BadReply {
        what: "checkv2",
        reason: format!("{e}; body starts {:?}", preview(body)),
    })?;
    let action = SpamAction::from_rspamd(&reply.action).ok_or_else(|| RspamdError::BadReply {
        what: "checkv2",
        reason: format!("action {:?} is not one rspamd uses", reply.action),
    })?;
    for (what, value) in [
        ("score", reply.score),
        ("required_score", reply.required_score),
    ] {
        if !value.is_finite() {
            return Err(RspamdError::BadReply {
                what: "checkv2",
                reason: format!("{what} {value} is not a finite number"),
            });
        }
    }
    let mut symbols: Vec<SpamSymbol> = reply
        .symbols
        .into_iter()
        .map(|(name, s)| SpamSymbol {
            name,
            score: if s.score.is_finite() { s.score } else { 0.0 },
        })
        .collect();
    symbols.sort_by(|a, b| {
        b.score
            .abs()
            .total_cmp(&a.score.abs())
            .then_with(|| a.name.cmp(&b.name))
    });
    symbols.truncate(max_symbols);
    Ok(SpamResult {
        action,
        score: reply.score,
        required: reply.required_score,
        symbols,
        flagged: flag(action),
    })
}

/// What a learn came to, with rspamd's reason when it did not learn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnReply {
    pub outcome: LearnOutcome,
    pub detail: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LearnBody {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    error: Option<String>,
}

/// Read a learn answer by its HTTP status: 2xx with `success` learned;
/// 208 already learned; another 4xx refused with rspamd's `error`. A 5xx
/// is an error (the caller retries).
pub fn parse_learn(status: u16, body: &[u8]) -> Result<LearnReply, RspamdError> {
    let parsed: Option<LearnBody> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|b| b.error.clone());
    let detail = || error.clone().or_else(|| Some(preview(body)));
    match status {
        // rspamd's answer to a message with fewer tokens than the
        // classifier's `min_tokens` (11): no body, the reason only in its log.
        204 => Ok(LearnReply {
            outcome: LearnOutcome::Refused,
            detail: Some("too few tokens to learn (HTTP 204)".into()),
        }),
        208 => Ok(LearnReply {
            outcome: LearnOutcome::AlreadyLearned,
            detail: detail(),
        }),
        200..=299 if parsed.as_ref().is_some_and(|b| b.success) => Ok(LearnReply {
            outcome: LearnOutcome::Learned,
            detail: None,
        }),
        200..=299 | 400..=499 => Ok(LearnReply {
            outcome: LearnOutcome::Refused,
            detail: detail(),
        }),
        _ => Err(RspamdError::Status {
            status,
            body: preview(body),
        }),
    }
}

/// The learned count in a controller `/stat` answer: the `learned` total.
pub fn parse_learned(body: &[u8]) -> Result<u64, RspamdError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| RspamdError::BadReply {
            what: "stat",
            reason: e.to_string(),
        })?;
    value["learned"]
        .as_u64()
        .ok_or_else(|| RspamdError::BadReply {
            what: "stat",
            reason: format!("no numeric \"learned\" in {:?}", preview(body)),
        })
}

/// The first 200 bytes of a body, for an error message.
pub(super) fn preview(body: &[u8]) -> String {
    let end = body.len().min(200);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GTUBE: &[u8] = br#"{"is_skipped":false,"score":0.0,"required_score":15.0,
        "action":"reject","thresholds":{"reject":15.0,"add header":6.0},
        "symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0},
          "MIME_GOOD":{"name":"MIME_GOOD","score":-0.1}},"messages":{}}"#;

    #[test]
    fn a_check_keeps_action_score_and_symbols() {
        let r = parse_check(GTUBE, 32, |a| a == SpamAction::AddHeader).unwrap();
        assert_eq!(r.action, SpamAction::Reject);
        assert_eq!(r.required, 15.0);
        assert!(!r.flagged);
        let names: Vec<_> = r.symbols.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["MIME_GOOD", "GTUBE"], "highest |score| first");
    }

    #[test]
    fn symbols_are_bounded_and_ordered_the_same_every_time() {
        let many: String = (0..100)
            .map(|i| format!("\"S{i:03}\":{{\"score\":{}}}", i % 7))
            .collect::<Vec<_>>()
            .join(",");
        let body = format!(
            r#"{{"score":1.5,"required_score":15,"action":"no action","symbols":{{{many}}}}}"#
        );
        let r = parse_check(body.as_bytes(), 5, |_| false).unwrap();
        assert_eq!(r.symbols.len(), 5);
        assert!(r.symbols.iter().all(|s| s.score == 6.0));
        assert_eq!(r.symbols[0].name, "S006");
    }

    #[test]
    fn garbage_and_unknown_actions_are_errors_naming_the_value() {
        let e = parse_check(b"<html>502 Bad Gateway</html>", 32, |_| false).unwrap_err();
        assert!(e.to_string().contains("502 Bad Gateway"), "{e}");
        let e = parse_check(
            br#"{"score":1,"required_score":15,"action":"shrug"}"#,
            32,
            |_| false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"shrug\""), "{e}");
    }

    #[test]
    fn learn_answers_by_status() {
        let ok = parse_learn(200, br#"{"success":true,"scan_time":0.01}"#).unwrap();
        assert_eq!(ok.outcome, LearnOutcome::Learned);
        let again = parse_learn(
            208,
            br#"{"error":"<m@x> has been already learned as spam, ignore it"}"#,
        )
        .unwrap();
        assert_eq!(again.outcome, LearnOutcome::AlreadyLearned);
        assert!(again.detail.unwrap().contains("already learned"));
        let few = parse_learn(400, br#"{"error":"too few tokens"}"#).unwrap();
        assert_eq!(few.outcome, LearnOutcome::Refused);
        let short = parse_learn(204, b"").unwrap();
        assert_eq!(short.outcome, LearnOutcome::Refused);
        assert!(short.detail.unwrap().contains("too few tokens"));
        assert!(parse_learn(500, b"oops").is_err());
    }

    #[test]
    fn stat_reads_the_learned_total() {
        assert_eq!(parse_learned(br#"{"learned":7,"scanned":9}"#).unwrap(), 7);
        assert!(parse_learned(br#"{"scanned":9}"#).is_err());
    }
}
