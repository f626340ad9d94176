//! The scanner's pure part: which inputs it can scan, and which events a
//! verdict becomes.

use mailfleet_events::{
    accounts::{AccountBlocked, BlockReason},
    admin::{AdminAlert, AlertSeverity},
    mail::{MessageReceived, MessageScanned, ScanVerdict},
    Envelope,
};
use mailfleet_runtime::{Decision, Emit};
use mailfleet_scan::Verdict;

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

/// The events one verdict becomes: always the `MessageScanned`; for a
/// virus from one of our own accounts, also `AccountBlocked` and an alert.
pub fn verdict_events(
    cfg: &ScannerConfig,
    received: &MessageReceived,
    verdict: &Verdict,
    scanner: &str,
) -> Vec<Emit> {
    let envelope = || Envelope::caused_by(&received.envelope, NAME);
    let (kind, signature, file, rule) = match verdict {
        Verdict::Clean => (ScanVerdict::Clean, None, None, None),
        Verdict::Infected { signature } => {
            (ScanVerdict::Infected, Some(signature.clone()), None, None)
        }
        Verdict::Banned { file, rule } => (
            ScanVerdict::Banned,
            None,
            Some(file.clone()),
            Some(rule.clone()),
        ),
    };
    let scanned = MessageScanned {
        envelope: envelope(),
        account: received.account.clone(),
        recipient: received.recipient.clone(),
        sender: received.sender.clone(),
        blob_id: received.blob_id.clone(),
        size: received.size,
        received_at: received.received_at,
        message_id: received.message_id.clone(),
        verdict: kind,
        signature: signature.clone(),
        file,
        rule,
        scanner: scanner.to_string(),
    };
    let mut out = vec![Emit::new(
        &cfg.scanned_topic,
        received.account.as_bytes(),
        scanned,
    )];
    let Some(signature) = signature else {
        return out;
    };
    // Once per message, not per recipient: the first recipient's input
    // blocks the sender.
    if !cfg.is_local(&received.sender) || received.recipient_index != 0 {
        return out;
    }
    let sender = received.sender.to_lowercase();
    out.push(Emit::new(
        &cfg.accounts_topic,
        sender.as_bytes(),
        AccountBlocked {
            envelope: envelope(),
            account: sender.clone(),
            reason: BlockReason::Virus,
            message_id: received.message_id.clone(),
            blob_id: Some(received.blob_id.clone()),
            detail: signature.clone(),
        },
    ));
    out.push(Emit::new(
        &cfg.alerts_topic,
        sender.as_bytes(),
        AdminAlert {
            envelope: envelope(),
            severity: AlertSeverity::Critical,
            kind: "virus-from-local-sender".into(),
            account: Some(sender.clone()),
            summary: format!("{sender} sent a virus ({signature}); the account is blocked"),
            detail: Some(format!(
                "blob {} message-id {} to {}; clear a false positive with `mailfleet account unblock {sender}`",
                received.blob_id,
                received.message_id.as_deref().unwrap_or("-"),
                received.account
            )),
        },
    ));
    out
}

#[cfg(test)]
mod tests {
    use mailfleet_events::mail::BodyType;
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
        }
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
            &Verdict::Clean,
            "policy-only",
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "mail.scanned");
        assert_eq!(out[0].key, b"bob@example.org");
    }

    #[test]
    fn a_virus_from_a_local_sender_blocks_the_sender() {
        let v = Verdict::Infected {
            signature: "Eicar".into(),
        };
        let out = verdict_events(&cfg(), &received("Alice@example.org"), &v, "ClamAV");
        let topics: Vec<_> = out.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["mail.scanned", "accounts.events", "admin.alerts"]);
        assert_eq!(out[1].key, b"alice@example.org");
        let outside = verdict_events(&cfg(), &received("mallory@example.net"), &v, "ClamAV");
        assert_eq!(outside.len(), 1, "remote senders are not our accounts");
        let bounce = verdict_events(&cfg(), &received(""), &v, "ClamAV");
        assert_eq!(bounce.len(), 1, "the null sender is nobody");
        let mut second = received("alice@example.org");
        second.recipient_index = 1;
        let again = verdict_events(&cfg(), &second, &v, "ClamAV");
        assert_eq!(again.len(), 1, "the sender is blocked once per message");
    }

    #[test]
    fn banned_is_not_a_virus() {
        let v = Verdict::Banned {
            file: "x.exe".into(),
            rule: "banned-extension".into(),
        };
        assert_eq!(
            verdict_events(&cfg(), &received("alice@example.org"), &v, "p").len(),
            1
        );
    }
}
