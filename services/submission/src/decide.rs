//! The pure part of the end of a message: which reply each outcome gets,
//! and the `MessageSubmitted` event a verdict becomes.
//!
//! | outcome | reply to Postfix | the client sees |
//! |---|---|---|
//! | clean | `SMFIR_CONTINUE` | `250 2.0.0 Ok: queued as ...` |
//! | virus | `554 5.7.1 Virus <signature> found; message not sent` | the same |
//! | banned attachment | `554 5.7.1 Attachment <file> refused (<rule>); message not sent` | the same |
//! | spam (rspamd's `reject`, by default) | `554 5.7.1 Message refused as spam (score <s> of <required>); message not sent` | the same |
//! | over `max_message_bytes` | `552 5.3.4 Message size exceeds fixed limit of <max> bytes; message not sent` | the same |
//! | clamd refuses the size | `552 5.3.4 Message too large for the virus scanner; message not sent` | the same |
//! | clamd down, Kafka not acknowledging, rspamd down under fail mode `retry` | `451 4.7.1 ...; try again later` | the same; the client retries |
//! | no `{auth_authen}` at the end (misconfiguration) | `451 4.7.1 ...` | the same |
//!
//! The event id is `submission:<account>:<digest>`, the digest being the
//! sha256 of the message without Postfix's `Received` header
//! ([`crate::message`]). A message submitted again after a 4xx (the
//! milter killed, Kafka slow) gets a new queue id but the same event id,
//! so downstream drops the repeat: one message, one event, even when the
//! first event reached Kafka and its reply never reached the client.

use mailfleet_events::{
    mail::{ScanVerdict, SpamResult},
    submission::{MessageSubmitted, SubmitAction},
    Envelope,
};
use mailfleet_scan::Verdict;

use crate::{milter::reply::Reply, session::Submission};

/// The reply for a verdict: go on when clean, else refuse for good.
pub fn verdict_reply(verdict: &Verdict) -> Reply {
    match verdict {
        Verdict::Clean => Reply::Continue,
        Verdict::Infected { signature } => Reply::code(
            554,
            "5.7.1",
            &format!("Virus {signature} found; message not sent"),
        ),
        Verdict::Banned { file, rule } => Reply::code(
            554,
            "5.7.1",
            &format!("Attachment {file} refused ({rule}); message not sent"),
        ),
    }
}

/// No `{auth_authen}`: a configuration error, so temporary; the client
/// keeps its message and retries once the operator fixed it.
pub fn no_auth_reply() -> Reply {
    Reply::code(
        451,
        "4.7.1",
        "Submission needs an authenticated session (server misconfigured); try again later",
    )
}

/// Over `submission.max_message_bytes`: permanent, as it always will be.
pub fn too_big_reply(max: u64) -> Reply {
    Reply::code(
        552,
        "5.3.4",
        &format!("Message size exceeds fixed limit of {max} bytes; message not sent"),
    )
}

/// clamd refused the message for its size (`StreamMaxLength`): permanent.
pub fn unscannable_reply() -> Reply {
    Reply::code(
        552,
        "5.3.4",
        "Message too large for the virus scanner; message not sent",
    )
}

/// clamd unreachable or failing: the client retries later.
pub fn scan_failed_reply() -> Reply {
    Reply::code(
        451,
        "4.7.1",
        "Virus scanner unavailable; message not sent, try again later",
    )
}

/// Kafka did not acknowledge the event in time: the client retries later.
pub fn not_recorded_reply() -> Reply {
    Reply::code(
        451,
        "4.7.1",
        "Submission could not be recorded; message not sent, try again later",
    )
}

/// The event id of a submission: the account and the message's digest.
pub fn event_id(submission: &Submission) -> String {
    format!(
        "submission:{}:{}",
        submission.account, submission.message.digest
    )
}

/// The event for a scanned submission.
pub fn submitted_event(
    submission: &Submission,
    verdict: &Verdict,
    scanner: &str,
    producer: &str,
    now_ms: i64,
) -> MessageSubmitted {
    let findings = verdict.findings();
    let action = match verdict {
        Verdict::Clean => SubmitAction::Accepted,
        _ => SubmitAction::Rejected,
    };
    MessageSubmitted {
        envelope: Envelope::new(event_id(submission), now_ms, producer),
        account: submission.account.clone(),
        sasl_username: submission.sasl_username.clone(),
        sender: submission.sender.clone(),
        recipients: submission.recipients.clone(),
        size: submission.message.bytes.len() as i64,
        queue_id: submission.queue_id.clone().unwrap_or_default(),
        message_id: submission.message.message_id.clone(),
        client_address: submission.client_address.clone().unwrap_or_default(),
        verdict: findings.verdict,
        signature: findings.signature,
        file: findings.file,
        rule: findings.rule,
        scanner: scanner.to_string(),
        action,
    }
}

/// rspamd refused a submission (its `reject`, by default): permanent, the
/// score and threshold named, as the sender's client shows it.
pub fn spam_reply(spam: &SpamResult) -> Reply {
    Reply::code(
        554,
        "5.7.1",
        &format!(
            "Message refused as spam (score {:.1} of {:.1}); message not sent",
            spam.score, spam.required
        ),
    )
}

/// Mark a submission's event as refused for spam: verdict `SPAM`, and in
/// `rule` what rspamd said (`rspamd reject score=15.0 required=15.0
/// tests=GTUBE`), as `MessageSubmitted` has no spam fields of its own.
pub fn refuse_as_spam(event: &mut MessageSubmitted, spam: &SpamResult) {
    let tests: Vec<&str> = spam.symbols.iter().map(|s| s.name.as_str()).collect();
    event.verdict = ScanVerdict::Spam;
    event.action = SubmitAction::Rejected;
    event.rule = Some(format!(
        "rspamd {} score={:.1} required={:.1} tests={}",
        spam.action.as_rspamd(),
        spam.score,
        spam.required,
        tests.join(",")
    ));
}

/// The `result` label of a verdict in `mailfleet_submission_messages_total`.
pub fn verdict_label(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Clean => "accepted",
        Verdict::Infected { .. } => "infected",
        Verdict::Banned { .. } => "banned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use mailfleet_events::mail::ScanVerdict;

    fn submission() -> Submission {
        Submission {
            account: "alice@example.test".into(),
            sasl_username: "Alice@Example.test".into(),
            sender: "alice@example.test".into(),
            recipients: vec!["bob@example.net".into()],
            queue_id: Some("4XyZ1".into()),
            client_address: Some("127.0.0.1".into()),
            message: Message {
                bytes: b"Subject: x\r\n\r\nhi\r\n".to_vec(),
                digest: "ab".repeat(32),
                message_id: Some("<m@x>".into()),
            },
        }
    }

    #[test]
    fn replies_name_the_signature_and_the_file() {
        assert_eq!(verdict_reply(&Verdict::Clean), Reply::Continue);
        let virus = Verdict::Infected {
            signature: "Mailfleet.Test.EICAR.UNOFFICIAL".into(),
        };
        assert_eq!(
            verdict_reply(&virus),
            Reply::ReplyCode(
                "554 5.7.1 Virus Mailfleet.Test.EICAR.UNOFFICIAL found; message not sent".into()
            )
        );
        let banned = Verdict::Banned {
            file: "invoice.pdf.exe".into(),
            rule: "double-extension".into(),
        };
        assert_eq!(
            verdict_reply(&banned),
            Reply::ReplyCode(
                "554 5.7.1 Attachment invoice.pdf.exe refused (double-extension); message not sent"
                    .into()
            )
        );
        for temporary in [no_auth_reply(), scan_failed_reply(), not_recorded_reply()] {
            let Reply::ReplyCode(line) = temporary else {
                panic!("not a reply code")
            };
            assert!(line.starts_with("451 4.7.1 "), "{line}");
        }
        let Reply::ReplyCode(line) = too_big_reply(10) else {
            panic!()
        };
        assert!(line.starts_with("552 5.3.4 ") && line.contains(" 10 bytes"));
    }

    #[test]
    fn the_event_carries_the_verdict_and_a_content_id() {
        let s = submission();
        let virus = Verdict::Infected {
            signature: "Eicar".into(),
        };
        let e = submitted_event(&s, &virus, "ClamAV 1.4", "submission@mx", 7);
        assert_eq!(
            e.envelope.event_id,
            format!("submission:alice@example.test:{}", "ab".repeat(32))
        );
        assert_eq!(e.envelope.event_time, 7);
        assert_eq!(
            (e.verdict, e.action),
            (ScanVerdict::Infected, SubmitAction::Rejected)
        );
        assert_eq!(e.signature.as_deref(), Some("Eicar"));
        assert_eq!(
            (e.account.as_str(), e.sasl_username.as_str()),
            ("alice@example.test", "Alice@Example.test")
        );
        assert_eq!(e.size, 18);
        assert_eq!(e.queue_id, "4XyZ1");
        let clean = submitted_event(&s, &Verdict::Clean, "p", "p", 1);
        assert_eq!(
            (clean.verdict, clean.action),
            (ScanVerdict::Clean, SubmitAction::Accepted)
        );
        // The same message under another queue id: the same event id.
        let mut again = s.clone();
        again.queue_id = Some("5AbC2".into());
        assert_eq!(event_id(&again), event_id(&s));
        let mut anonymous = s;
        anonymous.queue_id = None;
        anonymous.client_address = None;
        let e = submitted_event(&anonymous, &Verdict::Clean, "p", "p", 1);
        assert_eq!((e.queue_id.as_str(), e.client_address.as_str()), ("", ""));
    }

    #[test]
    fn spam_is_refused_with_the_score_and_recorded_with_rspamds_say() {
        use mailfleet_events::mail::{SpamAction, SpamResult, SpamSymbol};
        let spam = SpamResult {
            action: SpamAction::Reject,
            score: 15.0,
            required: 15.0,
            symbols: vec![SpamSymbol {
                name: "GTUBE".into(),
                score: 0.0,
            }],
            flagged: false,
        };
        let reply = format!("{:?}", spam_reply(&spam));
        assert!(reply.contains("554") && reply.contains("5.7.1"), "{reply}");
        assert!(reply.contains("score 15.0 of 15.0"), "{reply}");
        let mut event = submitted_event(&submission(), &Verdict::Clean, "ClamAV", "p", 1);
        assert_eq!(event.action, SubmitAction::Accepted);
        refuse_as_spam(&mut event, &spam);
        assert_eq!(event.verdict, ScanVerdict::Spam);
        assert_eq!(event.action, SubmitAction::Rejected);
        assert_eq!(
            event.rule.as_deref(),
            Some("rspamd reject score=15.0 required=15.0 tests=GTUBE")
        );
    }
}
