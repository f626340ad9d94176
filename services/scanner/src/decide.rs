//! The scanner's pure part: which inputs it can scan, and which events a
//! verdict becomes.

use mailfleet_events::{
    mail::{MessageReceived, MessageScanned, ScanVerdict},
    Envelope,
};
use mailfleet_runtime::{Decision, Emit};
use mailfleet_scan::{SpamOutcome, Verdict};

use super::{config::ScannerConfig, NAME};

/// Accept an input for scanning, or reject it for good with the reason.
pub fn check(received: &MessageReceived) -> Decision {
    let id = &received.envelope.event_id;
    let hex = received.blob_id.len() == 64
        && received
            .blob_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex {
        return Decision::reject(format!(
            "MessageReceived {id}: blob_id {:?} is not a sha256 in lower-case hex",
            received.blob_id
        ));
    }
    if received.account.is_empty() {
        return Decision::reject(format!("MessageReceived {id}: account is empty"));
    }
    if received.size < 0 {
        return Decision::reject(format!(
            "MessageReceived {id}: size {} is negative",
            received.size
        ));
    }
    Decision::apply()
}

/// The event one verdict becomes: the `MessageScanned`, and nothing else.
///
/// Mail that came in over LMTP never blocks an account, whatever sender it
/// claims: an envelope sender (or a From header) is not proof, and blocking
/// on it let anyone block any account by sending a virus "from" it. Only a
/// message an account submitted with SMTP AUTH proves who sent it; those
/// come through the submission path, where the outbound limits consumer
/// blocks the account (docs/submission.md).
/// What the scans of one message found.
pub struct Scanned<'a> {
    /// clamd and the attachment policy.
    pub verdict: &'a Verdict,
    /// What scanned, for the audit trail.
    pub scanner: &'a str,
    pub spam: SpamOutcome,
    /// The configured actions quarantine rspamd's answer.
    pub quarantine: bool,
}

pub fn verdict_events(
    cfg: &ScannerConfig,
    received: &MessageReceived,
    scanned: &Scanned<'_>,
) -> Vec<Emit> {
    let findings = scanned.verdict.findings();
    let (spam, spam_error) = match &scanned.spam {
        SpamOutcome::Scored(result) => (Some(result.clone()), None),
        SpamOutcome::Unscored(reason) => (None, Some(reason.clone())),
        SpamOutcome::NotAsked => (None, None),
    };
    let verdict = if findings.verdict == ScanVerdict::Clean && scanned.quarantine {
        ScanVerdict::Spam
    } else {
        findings.verdict
    };
    let scanned = MessageScanned {
        envelope: Envelope::caused_by(&received.envelope, NAME),
        account: received.account.clone(),
        recipient: received.recipient.clone(),
        sender: received.sender.clone(),
        blob_id: received.blob_id.clone(),
        size: received.size,
        received_at: received.received_at,
        message_id: received.message_id.clone(),
        verdict,
        signature: findings.signature,
        file: findings.file,
        rule: findings.rule,
        scanner: scanned.scanner.to_string(),
        spam,
        spam_error,
    };
    vec![Emit::new(
        &cfg.scanned_topic,
        received.account.as_bytes(),
        scanned,
    )]
}

#[cfg(test)]
mod tests {
    use mailfleet_events::mail::{BodyType, SpamAction, SpamResult, SpamSymbol};
    use mailfleet_runtime::Verdict as Decided;

    use super::*;

    fn received(sender: &str) -> MessageReceived {
        MessageReceived {
            envelope: Envelope::new("lmtp:x", 1_000, "lmtp@mx"),
            account: "bob@example.org".into(),
            recipient: "Bob@example.org".into(),
            sender: sender.into(),
            blob_id: "ab".repeat(32),
            size: 10,
            received_at: 1_000,
            body_type: BodyType::SevenBit,
            lhlo: "mx".into(),
            session_id: "s".into(),
            recipient_count: 1,
            recipient_index: 0,
            message_id: Some("m@x".into()),
            header_from: None,
            subject: None,
            header_date: None,
            client_address: None,
            client_name: None,
            client_helo: None,
            queue_id: None,
        }
    }

    fn plain<'a>(verdict: &'a Verdict, scanner: &'a str) -> Scanned<'a> {
        Scanned {
            verdict,
            scanner,
            spam: SpamOutcome::NotAsked,
            quarantine: false,
        }
    }

    fn only(out: &[Emit]) -> MessageScanned {
        assert_eq!(out.len(), 1);
        let bytes = out[0].event.encode().expect("outputs fit their schema");
        mailfleet_events::Registry::builtin()
            .decode(&bytes)
            .expect("a MessageScanned")
    }

    fn cfg() -> ScannerConfig {
        ScannerConfig {
            local_domains: vec!["Example.org".into()],
            ..ScannerConfig::default()
        }
    }

    #[test]
    fn bad_inputs_are_rejected_with_the_value() {
        let mut r = received("a@example.net");
        r.blob_id = "../../x".into();
        match check(&r).verdict {
            Decided::Reject(reason) => assert!(reason.contains("\"../../x\""), "{reason}"),
            _ => panic!("expected a rejection"),
        }
        assert!(matches!(check(&received("")).verdict, Decided::Apply));
        let mut r = received("a@example.net");
        r.size = -1;
        match check(&r).verdict {
            Decided::Reject(reason) => assert!(reason.contains("size -1"), "{reason}"),
            _ => panic!("expected a rejection"),
        }
    }

    #[test]
    fn clean_mail_gives_one_verdict_caused_by_the_input() {
        let out = verdict_events(
            &cfg(),
            &received("alice@example.org"),
            &plain(&Verdict::Clean, "policy-only"),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "mail.scanned");
        assert_eq!(out[0].key, b"bob@example.org");
    }

    #[test]
    fn an_inbound_virus_never_blocks_the_sender_it_claims() {
        let v = Verdict::Infected {
            signature: "Eicar".into(),
        };
        // A forged local sender, a remote one, the null sender: each only
        // gets its verdict (the mail is quarantined downstream).
        for sender in ["Alice@example.org", "mallory@example.net", ""] {
            let out = verdict_events(&cfg(), &received(sender), &plain(&v, "ClamAV"));
            let topics: Vec<_> = out.iter().map(|e| e.topic.as_str()).collect();
            assert_eq!(topics, ["mail.scanned"], "sender {sender:?}");
        }
    }

    #[test]
    fn banned_is_not_a_virus() {
        let v = Verdict::Banned {
            file: "x.exe".into(),
            rule: "banned-extension".into(),
        };
        assert_eq!(
            verdict_events(&cfg(), &received("alice@example.org"), &plain(&v, "p")).len(),
            1
        );
    }

    fn spam(action: SpamAction, flagged: bool) -> SpamResult {
        SpamResult {
            action,
            score: 20.0,
            required: 15.0,
            symbols: vec![SpamSymbol {
                name: "GTUBE".into(),
                score: 0.0,
            }],
            flagged,
        }
    }

    #[test]
    fn a_quarantined_spam_score_is_the_spam_verdict_with_its_result() {
        let result = spam(SpamAction::Reject, false);
        let out = verdict_events(
            &cfg(),
            &received("a@example.net"),
            &Scanned {
                verdict: &Verdict::Clean,
                scanner: "ClamAV",
                spam: SpamOutcome::Scored(result.clone()),
                quarantine: true,
            },
        );
        let scanned = only(&out);
        assert_eq!(scanned.verdict, ScanVerdict::Spam);
        assert_eq!(scanned.spam, Some(result));
        assert_eq!(scanned.spam_error, None);
    }

    #[test]
    fn a_flagged_score_stays_clean_and_unscored_mail_says_why() {
        let flagged = spam(SpamAction::AddHeader, true);
        let scanned = only(&verdict_events(
            &cfg(),
            &received("a@example.net"),
            &Scanned {
                verdict: &Verdict::Clean,
                scanner: "ClamAV",
                spam: SpamOutcome::Scored(flagged),
                quarantine: false,
            },
        ));
        assert_eq!(scanned.verdict, ScanVerdict::Clean);
        assert!(scanned.spam.unwrap().flagged);
        let scanned = only(&verdict_events(
            &cfg(),
            &received("a@example.net"),
            &Scanned {
                verdict: &Verdict::Clean,
                scanner: "ClamAV",
                spam: SpamOutcome::Unscored("rspamd at 127.0.0.1:1: refused".into()),
                quarantine: false,
            },
        ));
        assert_eq!(scanned.verdict, ScanVerdict::Clean);
        assert_eq!(scanned.spam, None);
        assert!(scanned.spam_error.unwrap().contains("refused"));
    }
}
