//! Prints one JSON line per sample event: its full name, the Avro
//! single-object bytes the Rust encoder writes (hex), and the values they
//! hold. `tests/python/test_fastavro.py` decodes the bytes with fastavro
//! and only the `.avsc` files, and compares.

use mailfleet_events::{
    accounts::{
        AccountBlocked, AccountDeleted, AccountPasswordChanged, AccountReactivated,
        AccountRegistered, AccountStatus, AccountStatusChanged, AccountUnblocked, BlockReason,
        DeletionStep, DeletionStepCompleted, DeletionStepRequested, LoginChannel, LoginFailed,
        LoginRecorded, MigrationCompleted, MigrationStarted, PlanChanged, QuotaChanged,
        UsageChanged,
    },
    admin::{AdminAlert, AlertSeverity},
    clock::ClockTicked,
    greylist::{DeliveryAttempted, GreylistDecided, GreylistReason, GreylistVerdict},
    mail::{
        BodyType, LearnOutcome, MailboxDeleted, MessageQuarantined, MessageReceived,
        MessageRejected, MessageScanned, MessageStored, MessagesPurged, PurgeRequested,
        QuarantineReason, RejectReason, ScanVerdict, SpamAction, SpamClass, SpamLearned,
        SpamResult, SpamSymbol,
    },
    notify::NotificationRequested,
    runtime::{Counted, DeadLetter, DeadLetterKind, TestEvent},
    Envelope, Event,
};

fn line<E: Event>(event: &E) -> Result<String, Box<dyn std::error::Error>> {
    let bytes = mailfleet_events::encode(event)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let value = serde_json::json!({ "name": E::NAME, "hex": hex, "value": event });
    Ok(value.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |id: &str| Envelope {
        causation_id: Some("cause-1".into()),
        ..Envelope::new(id, 1_764_340_000_123, "samples")
    };
    let tick = ClockTicked {
        envelope: env("k1"),
        clock: "hourly".into(),
        period_ms: 3_600_000,
    };
    println!("{}", line(&tick)?);
    println!(
        "{}",
        line(&TestEvent {
            envelope: env("t1"),
            key: "käy-1".into(),
            payload: vec![0, 1, 254, 255],
            weight: 42
        })?
    );
    println!(
        "{}",
        line(&Counted {
            envelope: env("c1"),
            key: "key-1".into(),
            count: -7
        })?
    );
    println!(
        "{}",
        line(&DeadLetter {
            envelope: env("d1"),
            consumer: "counter".into(),
            topic: "runtime.test-events".into(),
            partition: 5,
            offset: 1 << 40,
            kind: DeadLetterKind::UnknownSchema,
            reason: "unknown schema fingerprint 0102030405060708".into(),
            original_key: Some(b"k".to_vec()),
            original_value: None,
            original_timestamp: Some(1_764_340_000_000),
        })?
    );
    println!(
        "{}",
        line(&DeliveryAttempted {
            envelope: env("a1"),
            client_address: Some("2001:db8::1".into()),
            client_name: Some("unknown".into()),
            reverse_client_name: None,
            helo_name: Some("mx.example.net".into()),
            sender: Some("prvs=1234abcd=alice@example.net".into()),
            recipient: Some("bob@example.org".into()),
            instance: Some("a1b2.c3d4".into()),
            size: Some(12_345),
            queue_id: None,
            policy_host: "mx1".into(),
            answered: None,
        })?
    );
    println!(
        "{}",
        line(&GreylistDecided {
            envelope: env("g1"),
            triplet: Some("2001:db8::/alice@example.net/bob@example.org".into()),
            verdict: GreylistVerdict::Defer,
            reason: GreylistReason::TooEarly,
            action: "DEFER_IF_PERMIT Greylisted, try again in 120 seconds".into(),
            delay_seconds: 120,
            policy_host: "mx1".into(),
            settings_hash: None,
        })?
    );
    print_mail_samples(&env)
}

fn print_mail_samples(env: &dyn Fn(&str) -> Envelope) -> Result<(), Box<dyn std::error::Error>> {
    let blob_id = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    println!(
        "{}",
        line(&MessageReceived {
            envelope: env("m1"),
            account: "bob@example.org".into(),
            recipient: "Bob@example.org".into(),
            sender: String::new(),
            blob_id: blob_id.into(),
            size: 20_480,
            received_at: 1_764_340_000_000,
            body_type: BodyType::EightBitMime,
            lhlo: "mx1.example.org".into(),
            session_id: "lmtp-1".into(),
            recipient_count: 1,
            recipient_index: 0,
            message_id: Some("1@example.net".into()),
            header_from: Some("Zoë <zoe@example.net>".into()),
            subject: None,
            header_date: Some("Sat, 28 Nov 2026 10:00:00 +0000".into()),
            client_address: Some("192.0.2.25".into()),
            client_name: Some("mail.example.net".into()),
            client_helo: Some("mail.example.net".into()),
            queue_id: Some("4Rk2Lq0x7Sz".into()),
        })?
    );
    println!(
        "{}",
        line(&MessageScanned {
            envelope: env("s1"),
            account: "bob@example.org".into(),
            recipient: "bob@example.org".into(),
            sender: "zoe@example.net".into(),
            blob_id: blob_id.into(),
            size: 20_480,
            received_at: 1_764_340_000_000,
            message_id: None,
            verdict: ScanVerdict::Infected,
            signature: Some("Mailfleet.Test.EICAR.UNOFFICIAL".into()),
            file: None,
            rule: None,
            scanner: "ClamAV 1.4.3".into(),
            spam: None,
            spam_error: None,
        })?
    );
    print_spam_samples(env, blob_id)?;
    println!(
        "{}",
        line(&AccountBlocked {
            envelope: env("b1"),
            account: "zoe@example.org".into(),
            reason: BlockReason::Virus,
            message_id: None,
            blob_id: Some(blob_id.into()),
            detail: "Mailfleet.Test.EICAR.UNOFFICIAL".into(),
        })?
    );
    println!(
        "{}",
        line(&AdminAlert {
            envelope: env("al1"),
            severity: AlertSeverity::Warning,
            kind: "virus-from-local-sender".into(),
            account: None,
            summary: "a local account sent a virus".into(),
            detail: Some(format!("blob {blob_id}")),
        })?
    );
    print_storage_samples(env, blob_id)
}

fn print_spam_samples(
    env: &dyn Fn(&str) -> Envelope,
    blob_id: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let scored = MessageScanned {
        envelope: env("s2"),
        account: "bob@example.org".into(),
        recipient: "bob@example.org".into(),
        sender: "zoe@example.net".into(),
        blob_id: blob_id.into(),
        size: 20_480,
        received_at: 1_764_340_000_000,
        message_id: Some("2@example.net".into()),
        verdict: ScanVerdict::Clean,
        signature: None,
        file: None,
        rule: None,
        scanner: "ClamAV 1.4.3".into(),
        spam: Some(SpamResult {
            action: SpamAction::AddHeader,
            score: 7.9,
            required: 15.0,
            symbols: vec![
                SpamSymbol {
                    name: "MAILFLEET_TEST_SPAMMY".into(),
                    score: 8.0,
                },
                SpamSymbol {
                    name: "MIME_GOOD".into(),
                    score: -0.1,
                },
            ],
            flagged: true,
        }),
        spam_error: None,
    };
    let unscored = MessageScanned {
        envelope: env("s3"),
        spam: None,
        spam_error: Some(
            "rspamd at 127.0.0.1:11333 did not answer within 5000 ms (2 tries)".into(),
        ),
        ..scored.clone()
    };
    let learned = SpamLearned {
        envelope: env("l1"),
        account: "bob@example.org".into(),
        folder: "Spam".into(),
        file: "1764340000.M1P2.mx1".into(),
        blob_id: blob_id.into(),
        size: 20_480,
        message_id: Some("2@example.net".into()),
        class: SpamClass::Spam,
        outcome: LearnOutcome::AlreadyLearned,
        detail: Some("<2@example.net> has been already learned as spam, ignore it".into()),
        requested_by: "api".into(),
    };
    println!("{}", line(&scored)?);
    println!("{}", line(&unscored)?);
    println!("{}", line(&learned)?);
    Ok(())
}

fn print_storage_samples(
    env: &dyn Fn(&str) -> Envelope,
    blob_id: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let account = || "bob@example.org".to_string();
    let samples = [
        line(&MessageStored {
            envelope: env("st1"),
            account: account(),
            delivery_id: format!("lmtp:{blob_id}:bob@example.org"),
            folder: "Spam".into(),
            file: "1764340000.M9f86d081884c7d65P0.mx1,S=20480,W=20800".into(),
            size: 20_480,
            stored_bytes: 6_000,
            blob_id: blob_id.into(),
            received_at: 1_764_340_000_000,
            message_id: Some("1@example.net".into()),
        })?,
        line(&MessageQuarantined {
            envelope: env("q1"),
            account: account(),
            delivery_id: "lmtp:x:bob@example.org".into(),
            reason: QuarantineReason::Infected,
            detail: "Mailfleet.Test.EICAR.UNOFFICIAL".into(),
            path: format!("2026-11-28/{blob_id}.eml"),
            size: 900,
            blob_id: blob_id.into(),
            sender: "zoe@example.net".into(),
            message_id: None,
        })?,
        line(&MessageRejected {
            envelope: env("rj1"),
            account: account(),
            delivery_id: "lmtp:y:bob@example.org".into(),
            reason: RejectReason::OverQuota,
            size: 20_480,
            used_bytes: 10_737_418_240,
            quota_bytes: 10_737_418_240,
            sender: "zoe@example.net".into(),
            blob_id: blob_id.into(),
            message_id: None,
            settings_hash: None,
        })?,
    ];
    for sample in samples {
        println!("{sample}");
    }
    print_purge_and_usage_samples(env)
}

fn print_purge_and_usage_samples(
    env: &dyn Fn(&str) -> Envelope,
) -> Result<(), Box<dyn std::error::Error>> {
    let account = || "bob@example.org".to_string();
    let samples = [
        line(&PurgeRequested {
            envelope: env("p1"),
            account: account(),
            folder: "Trash".into(),
            received_before: None,
            job: "trash-cleanup:2026-11-28".into(),
        })?,
        line(&MessagesPurged {
            envelope: env("pd1"),
            account: account(),
            folder: "Trash".into(),
            count: 1,
            bytes: 20_480,
            files: vec!["1764340000.M1P0.mx1".into()],
            job: "trash-cleanup:2026-11-28".into(),
        })?,
        line(&QuotaChanged {
            envelope: env("qc1"),
            account: account(),
            quota_bytes: Some(53_687_091_200),
        })?,
        line(&PlanChanged {
            envelope: env("pc1"),
            account: account(),
            plan: "plus".into(),
        })?,
        line(&UsageChanged {
            envelope: env("u1"),
            account: account(),
            used_bytes: 20_480,
            messages: 1,
            quota_bytes: 10_737_418_240,
            over_quota: false,
            settings_hash: None,
        })?,
        line(&NotificationRequested {
            envelope: env("n1"),
            to: "zoe@example.net".into(),
            template: "over-quota-sender".into(),
            account: Some(account()),
            params: [("recipient".to_string(), account())].into(),
        })?,
    ];
    for sample in samples {
        println!("{sample}");
    }
    print_lifecycle_samples(env)
}

fn print_lifecycle_samples(
    env: &dyn Fn(&str) -> Envelope,
) -> Result<(), Box<dyn std::error::Error>> {
    let account = || "carol@example.org".to_string();
    let samples = [
        line(&AccountRegistered {
            envelope: env("ar1"),
            account: account(),
            password_hash: "{SSHA512}c2FtcGxlLWhhc2g=".into(),
            plan: "free".into(),
            display_name: None,
        })?,
        line(&LoginRecorded {
            envelope: env("lr1"),
            account: account(),
            channel: LoginChannel::Syncml,
            ip: Some("2001:db8::7".into()),
        })?,
        line(&LoginFailed {
            envelope: env("lf1"),
            account: account(),
            channel: LoginChannel::Imap,
            ip: Some("192.0.2.9".into()),
            reason: "bad-password".into(),
        })?,
        line(&AccountStatusChanged {
            envelope: env("sc1"),
            account: account(),
            from: AccountStatus::Inactive,
            to: AccountStatus::Deleting,
            reason: "grace-expired".into(),
            settings_hash: None,
        })?,
        line(&AccountUnblocked {
            envelope: env("au1"),
            account: account(),
            by: "postmaster".into(),
            note: "EICAR test by the user".into(),
        })?,
        line(&AccountReactivated {
            envelope: env("ra1"),
            account: account(),
            by: "user".into(),
        })?,
        line(&AccountDeleted {
            envelope: env("ad1"),
            account: account(),
            reason: "grace-expired".into(),
        })?,
        line(&AccountPasswordChanged {
            envelope: env("pc1"),
            account: account(),
            password_hash: "{SSHA512}c2FsdGVkaGFzaA==".into(),
            reason: "migration".into(),
        })?,
    ];
    for sample in samples {
        println!("{sample}");
    }
    print_deletion_samples(env)
}

fn print_deletion_samples(
    env: &dyn Fn(&str) -> Envelope,
) -> Result<(), Box<dyn std::error::Error>> {
    let account = || "carol@example.org".to_string();
    let samples = [
        line(&DeletionStepRequested {
            envelope: env("dr1"),
            account: account(),
            step: DeletionStep::Directory,
            attempt: 1,
        })?,
        line(&DeletionStepCompleted {
            envelope: env("dc1"),
            account: account(),
            step: DeletionStep::Blobs,
            detail: "released 3 references, removed 2 blobs".into(),
        })?,
        line(&MigrationStarted {
            envelope: env("ms1"),
            account: account(),
            target_mail_root: "/srv/paid/mail".into(),
            target_ldap_base: "ou=paid,dc=mailfleet,dc=test".into(),
            by: "admin".into(),
        })?,
        line(&MigrationCompleted {
            envelope: env("mc1"),
            account: account(),
            target_mail_root: "/srv/paid/mail".into(),
            target_ldap_base: "ou=paid,dc=mailfleet,dc=test".into(),
            messages: 3,
            bytes: 4096,
            entries: 4,
            token_delivery: "mailed".into(),
        })?,
        line(&MailboxDeleted {
            envelope: env("md1"),
            account: account(),
            files: 3,
            bytes: 4096,
            reason: "account-deleted".into(),
        })?,
    ];
    for sample in samples {
        println!("{sample}");
    }
    print_scheduler_samples(env)
}

fn print_scheduler_samples(
    env: &dyn Fn(&str) -> Envelope,
) -> Result<(), Box<dyn std::error::Error>> {
    let job_due = mailfleet_events::scheduler::JobDue {
        envelope: env("trash-purge:2025-11-28T00:00:00Z"),
        job: "trash-purge".into(),
        kind: "purge".into(),
        due_at: 1_764_288_000_000,
        run_id: "trash-purge:2025-11-28T00:00:00Z".into(),
        params: [("folder".to_string(), "Trash".to_string())].into(),
    };
    println!("{}", line(&job_due)?);
    let settings = r#"{"delay_s":300,"max_age_days":35}"#;
    let changed = mailfleet_events::config::ConfigChanged {
        envelope: env("config:greylist:0123456789abcdef:smtp.attempts:0"),
        consumer: "greylist".into(),
        settings: settings.into(),
        hash: "9f1a".repeat(16),
    };
    println!("{}", line(&changed)?);
    print_submission_samples(env)
}

fn print_submission_samples(
    env: &dyn Fn(&str) -> Envelope,
) -> Result<(), Box<dyn std::error::Error>> {
    use mailfleet_events::submission::{
        LimitAction, MessageSubmitted, SubmissionAttempted, SubmissionDecided, SubmitAction,
    };
    let account = || "dave@example.org".to_string();
    let samples = [
        line(&SubmissionAttempted {
            envelope: env("sa1"),
            account: account(),
            sasl_username: "Dave@Example.org".into(),
            sender: account(),
            recipient: "zoë@example.net".into(),
            client_address: "192.0.2.25".into(),
            client_name: "webmail.example.org".into(),
            size: 4_096,
            queue_id: String::new(),
            instance: "5f3e.6a1b2c3d.1a2b3.0".into(),
            policy_host: "sub1".into(),
        })?,
        line(&SubmissionDecided {
            envelope: env("sd1"),
            account: account(),
            recipient: "zoë@example.net".into(),
            action: LimitAction::Defer,
            limit: Some("recipients_per_hour".into()),
            reply: "DEFER 4.7.1 recipients per hour limit 100 reached for dave@example.org".into(),
            recipients_last_hour: 100,
            distinct_recipients_last_day: 80,
            messages_last_day: 12,
            bytes_last_day: 262_144_000,
            plan: "free".into(),
            policy_host: "sub1".into(),
            settings_hash: None,
        })?,
        line(&MessageSubmitted {
            envelope: env("ms1"),
            account: account(),
            sasl_username: "Dave@Example.org".into(),
            sender: account(),
            recipients: vec!["zoë@example.net".into(), "erin@example.com".into()],
            size: 4_096,
            queue_id: "4Rk2Lq0x7Sz".into(),
            message_id: None,
            client_address: "2001:db8::25".into(),
            verdict: ScanVerdict::Banned,
            signature: None,
            file: Some("invoice.pdf.exe".into()),
            rule: Some("double-extension".into()),
            scanner: "policy-only".into(),
            action: SubmitAction::Rejected,
        })?,
    ];
    for sample in samples {
        println!("{sample}");
    }
    Ok(())
}
