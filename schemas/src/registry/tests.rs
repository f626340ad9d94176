use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::Serialize;

use super::*;
use crate::accounts::*;
use crate::admin::*;
use crate::greylist::*;
use crate::mail::*;
use crate::runtime::*;
use crate::Envelope;

fn env(id: &str) -> Envelope {
    Envelope::new(id, 1_700_000_000_000, "test")
}

fn round_trip<E: Event + PartialEq + std::fmt::Debug>(event: E) {
    let bytes = crate::encode(&event).unwrap();
    assert_eq!(bytes[..2], framing::MAGIC);
    // The direct writer handles every event type (arrays and maps aside)
    // and writes apache-avro's bytes.
    let newest = Registry::builtin().newest(E::NAME).unwrap();
    let mut by_apache = framing::header(&newest.fingerprint, 0);
    Registry::encode_value(newest, &event, &mut by_apache).unwrap();
    assert_eq!(bytes, by_apache, "{} encodes differently", E::NAME);
    let mut direct = framing::header(&newest.fingerprint, 0);
    if let Err(e) = datum::write(&newest.schema, &event, &mut direct) {
        assert!(
            e.to_string().contains("left to apache-avro"),
            "{} not written directly: {e}",
            E::NAME
        );
    }
    let back: E = Registry::builtin().decode(&bytes).unwrap();
    assert_eq!(back, event);
    // Both decoders, each on its own: the direct reader must handle every
    // event type and give what apache-avro's `Value` path gives.
    let writer = Registry::builtin().writer_of(&bytes).unwrap();
    let direct: E = Registry::decode_direct(writer, &bytes)
        .unwrap_or_else(|| panic!("{} not read directly", E::NAME));
    let via_value: E = Registry::decode_value(writer, None, &bytes).unwrap();
    assert_eq!(direct, event);
    assert_eq!(via_value, event);
    // Every cut of the bytes: the direct reader refuses it, and the decode
    // gives what apache-avro gives (which reads a union index cut off at
    // the end as null), never a panic. A byte more is left over.
    for cut in 0..bytes.len() {
        assert!(Registry::decode_direct::<E>(writer, &bytes[..cut]).is_none());
        if cut >= framing::HEADER_LEN {
            assert_eq!(
                Registry::builtin().decode::<E>(&bytes[..cut]).ok(),
                Registry::decode_value::<E>(writer, None, &bytes[..cut]).ok(),
                "{} cut at {cut}",
                E::NAME
            );
        } else {
            assert!(Registry::builtin().decode::<E>(&bytes[..cut]).is_err());
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Registry::decode_direct::<E>(writer, &longer).is_none());
    let err = Registry::builtin().decode::<E>(&longer).unwrap_err();
    assert!(err.to_string().contains("left over"), "{err}");
}

#[test]
fn corrupted_bytes_decode_alike_or_fail_alike() {
    // Every single-byte change of a few events: where the direct reader
    // succeeds, apache-avro gives the same event; where it fails, the
    // decode falls back and fails (or succeeds) exactly as apache-avro.
    let attempt = DeliveryAttempted {
        envelope: Envelope {
            causation_id: Some("c".into()),
            ..env("a1")
        },
        client_address: Some("192.0.2.1".into()),
        client_name: None,
        reverse_client_name: Some("r".into()),
        helo_name: None,
        sender: Some("s@x".into()),
        recipient: Some("r@y".into()),
        instance: None,
        size: Some(-5),
        queue_id: None,
        policy_host: "mx1".into(),
        answered: None,
    };
    let decided = GreylistDecided {
        envelope: env("d1"),
        triplet: Some("t".into()),
        verdict: GreylistVerdict::Defer,
        reason: GreylistReason::TooEarly,
        action: "DEFER".into(),
        delay_seconds: 1 << 40,
        policy_host: "mx1".into(),
        settings_hash: None,
    };
    fn check<E: Event + PartialEq + std::fmt::Debug>(event: &E) {
        let bytes = crate::encode(event).unwrap();
        let writer = Registry::builtin().writer_of(&bytes).unwrap();
        for i in framing::HEADER_LEN..bytes.len() {
            for value in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, bytes[i] ^ 0x01] {
                let mut bad = bytes.clone();
                bad[i] = value;
                let slow = Registry::decode_value::<E>(writer, None, &bad);
                match Registry::decode_direct::<E>(writer, &bad) {
                    Some(fast) => assert_eq!(
                        Some(&fast),
                        slow.as_ref().ok(),
                        "byte {i} = {value:#x}: the direct reader differs"
                    ),
                    None => assert_eq!(
                        Registry::builtin().decode::<E>(&bad).ok(),
                        slow.ok(),
                        "byte {i} = {value:#x}: the fallback differs"
                    ),
                }
            }
        }
    }
    check(&attempt);
    check(&decided);
    check(&TestEvent {
        envelope: env("t"),
        key: "k".into(),
        payload: vec![1, 2, 3],
        weight: 7,
    });
}

#[test]
fn every_schema_file_loads() {
    let names = Registry::builtin().names();
    for expected in [
        "mailfleet.clock.ClockTicked",
        "mailfleet.greylist.DeliveryAttempted",
        "mailfleet.greylist.GreylistDecided",
        "mailfleet.runtime.Counted",
        "mailfleet.runtime.DeadLetter",
        "mailfleet.runtime.TestEvent",
        "mailfleet.mail.MessageReceived",
        "mailfleet.mail.MessageScanned",
        "mailfleet.accounts.AccountBlocked",
        "mailfleet.admin.AdminAlert",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        Registry::builtin()
            .newest("mailfleet.runtime.TestEvent")
            .unwrap()
            .version,
        2
    );
}

#[test]
fn every_event_type_round_trips() {
    round_trip(TestEvent {
        envelope: env("t1"),
        key: "k".into(),
        payload: vec![0, 1, 255],
        weight: 3,
    });
    round_trip(Counted {
        envelope: env("c1"),
        key: "k".into(),
        count: 7,
    });
    round_trip(DeadLetter {
        envelope: Envelope {
            causation_id: Some("x".into()),
            ..env("d1")
        },
        consumer: "counter".into(),
        topic: "t".into(),
        partition: 2,
        offset: 99,
        kind: DeadLetterKind::UnknownSchema,
        reason: "unknown schema fingerprint 0102".into(),
        original_key: None,
        original_value: Some(vec![0xde, 0xad]),
        original_timestamp: Some(5),
    });
    round_trip(DeliveryAttempted {
        envelope: env("a1"),
        client_address: Some("192.0.2.1".into()),
        client_name: Some("mx.example.net".into()),
        reverse_client_name: None,
        helo_name: Some("mx.example.net".into()),
        sender: Some("a@example.net".into()),
        recipient: Some("b@example.org".into()),
        instance: Some("123.456".into()),
        size: Some(1024),
        queue_id: None,
        policy_host: "mx1".into(),
        answered: Some("DUNNO".into()),
    });
    round_trip(GreylistDecided {
        envelope: env("g1"),
        triplet: Some("192.0.2/a@example.net/b@example.org".into()),
        verdict: GreylistVerdict::Defer,
        reason: GreylistReason::New,
        action: "DEFER_IF_PERMIT Greylisted".into(),
        delay_seconds: 300,
        policy_host: "mx1".into(),
        settings_hash: Some("ab".repeat(32)),
    });
    round_trip(received("r1"));
    round_trip(MessageScanned {
        envelope: env("s1"),
        account: "bob@example.org".into(),
        recipient: "Bob@Example.org".into(),
        sender: String::new(),
        blob_id: "ab".repeat(32),
        size: 512,
        received_at: 1_700_000_000_000,
        message_id: None,
        verdict: ScanVerdict::Banned,
        signature: None,
        file: Some("a.zip/x.exe".into()),
        rule: Some("banned-extension".into()),
        scanner: "policy-only".into(),
        spam: None,
        spam_error: None,
    });
    round_trip(AccountBlocked {
        envelope: env("b1"),
        account: "alice@example.org".into(),
        reason: BlockReason::Virus,
        message_id: Some("m1@example.org".into()),
        blob_id: None,
        detail: "Eicar-Signature FOUND".into(),
    });
    round_trip(AdminAlert {
        envelope: env("al1"),
        severity: AlertSeverity::Critical,
        kind: "virus-from-local-sender".into(),
        account: Some("alice@example.org".into()),
        summary: "alice@example.org sent a virus".into(),
        detail: None,
    });
}

#[test]
fn storage_and_account_events_round_trip() {
    round_trip(MessageStored {
        envelope: env("st1"),
        account: "bob@example.org".into(),
        delivery_id: "lmtp:ab:bob@example.org".into(),
        folder: "INBOX".into(),
        file: "1700000000.M1P2.mx,S=10,W=11".into(),
        size: 10,
        stored_bytes: 9,
        blob_id: "ab".repeat(32),
        received_at: 1_700_000_000_000,
        message_id: None,
    });
    round_trip(MessageQuarantined {
        envelope: env("q1"),
        account: "bob@example.org".into(),
        delivery_id: "d".into(),
        reason: QuarantineReason::Banned,
        detail: "x.exe banned-extension".into(),
        path: "2026-11-28/ab.eml".into(),
        size: 10,
        blob_id: "ab".repeat(32),
        sender: String::new(),
        message_id: Some("m@x".into()),
    });
    round_trip(MessageRejected {
        envelope: env("rj1"),
        account: "bob@example.org".into(),
        delivery_id: "d".into(),
        reason: RejectReason::OverQuota,
        size: 10,
        used_bytes: 100,
        quota_bytes: 100,
        sender: "a@example.net".into(),
        blob_id: "ab".repeat(32),
        message_id: None,
        settings_hash: None,
    });
    round_trip(PurgeRequested {
        envelope: env("p1"),
        account: "bob@example.org".into(),
        folder: "Trash".into(),
        received_before: Some(1_700_000_000_000),
        job: "trash-cleanup".into(),
    });
    round_trip(MessagesPurged {
        envelope: env("pd1"),
        account: "bob@example.org".into(),
        folder: "Trash".into(),
        count: 2,
        bytes: 20,
        files: vec!["a".into(), "b".into()],
        job: "trash-cleanup".into(),
    });
    round_trip(QuotaChanged {
        envelope: env("qc1"),
        account: "bob@example.org".into(),
        quota_bytes: None,
    });
    round_trip(PlanChanged {
        envelope: env("pc1"),
        account: "bob@example.org".into(),
        plan: "plus".into(),
    });
    round_trip(UsageChanged {
        envelope: env("u1"),
        account: "bob@example.org".into(),
        used_bytes: 5,
        messages: 1,
        quota_bytes: 10,
        over_quota: false,
        settings_hash: None,
    });
    round_trip(crate::notify::NotificationRequested {
        envelope: env("n1"),
        to: "a@example.net".into(),
        template: "over-quota-sender".into(),
        account: Some("bob@example.org".into()),
        params: [("size".to_string(), "10".to_string())].into(),
    });
}

#[test]
fn lifecycle_events_round_trip() {
    let account = || "bob@example.org".to_string();
    round_trip(AccountRegistered {
        envelope: env("ar"),
        account: account(),
        password_hash: "{SSHA512}aGFzaA==".into(),
        plan: "free".into(),
        display_name: Some("Bob".into()),
    });
    round_trip(LoginRecorded {
        envelope: env("lr"),
        account: account(),
        channel: LoginChannel::Activesync,
        ip: Some("192.0.2.1".into()),
    });
    round_trip(LoginFailed {
        envelope: env("lf"),
        account: account(),
        channel: LoginChannel::Webmail,
        ip: None,
        reason: "bad-password".into(),
    });
    round_trip(AccountStatusChanged {
        envelope: env("sc"),
        account: account(),
        from: AccountStatus::Active,
        to: AccountStatus::Inactive,
        reason: "no-login-since:2026-08-26".into(),
        settings_hash: None,
    });
    round_trip(AccountUnblocked {
        envelope: env("au"),
        account: account(),
        by: "admin".into(),
        note: "false positive".into(),
    });
    round_trip(AccountReactivated {
        envelope: env("ra"),
        account: account(),
        by: "user".into(),
    });
    round_trip(AccountDeleted {
        envelope: env("ad"),
        account: account(),
        reason: "inactive".into(),
    });
    round_trip(AccountPasswordChanged {
        envelope: env("pc"),
        account: account(),
        password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
        reason: "migration".into(),
    });
    for step in [
        DeletionStep::Maildir,
        DeletionStep::Index,
        DeletionStep::Directory,
        DeletionStep::Blobs,
    ] {
        round_trip(DeletionStepRequested {
            envelope: env("dr"),
            account: account(),
            step,
            attempt: 2,
        });
        round_trip(DeletionStepCompleted {
            envelope: env("dc"),
            account: account(),
            step,
            detail: "3 files, 1200 bytes".into(),
        });
    }
    round_trip(MigrationStarted {
        envelope: env("ms"),
        account: account(),
        target_mail_root: "/srv/paid/mail".into(),
        target_ldap_base: "ou=paid,dc=mailfleet,dc=test".into(),
        by: "admin".into(),
    });
    round_trip(MigrationCompleted {
        envelope: env("mc"),
        account: account(),
        target_mail_root: "/srv/paid/mail".into(),
        target_ldap_base: "ou=paid,dc=mailfleet,dc=test".into(),
        messages: 12,
        bytes: 34_567,
        entries: 4,
        token_delivery: "printed".into(),
    });
    round_trip(MailboxDeleted {
        envelope: env("md"),
        account: account(),
        files: 12,
        bytes: 34_567,
        reason: "account-deleted".into(),
    });
}

fn received(id: &str) -> MessageReceived {
    MessageReceived {
        envelope: env(id),
        account: "bob@example.org".into(),
        recipient: "bob@example.org".into(),
        sender: "alice@example.net".into(),
        blob_id: "0f".repeat(32),
        size: 20_480,
        received_at: 1_700_000_000_000,
        body_type: BodyType::EightBitMime,
        lhlo: "mx1.example.org".into(),
        session_id: "s-1".into(),
        recipient_count: 2,
        recipient_index: 0,
        message_id: Some("abc@example.net".into()),
        header_from: Some("Alice <alice@example.net>".into()),
        subject: Some("Grüße".into()),
        header_date: Some("Sat, 28 Nov 2026 10:00:00 +0000".into()),
        client_address: None,
        client_name: None,
        client_helo: None,
        queue_id: None,
    }
}

/// The v1 shape of TestEvent, as an old producer would still write it.
#[derive(Serialize)]
struct TestEventV1 {
    envelope: Envelope,
    key: String,
    #[serde(with = "apache_avro::serde_avro_bytes")]
    payload: Vec<u8>,
}

fn encode_v1(key: &str) -> Vec<u8> {
    let v1 = &Registry::builtin().versions_of("mailfleet.runtime.TestEvent")[0];
    assert_eq!(v1.version, 1);
    let mut out = framing::header(&v1.fingerprint, 64);
    let old = TestEventV1 {
        envelope: env("old"),
        key: key.into(),
        payload: vec![9],
    };
    apache_avro::write_avro_datum_ref(&v1.schema, &old, &mut out).unwrap();
    out
}

#[test]
fn older_versions_decode_into_the_current_type() {
    let bytes = encode_v1("legacy");
    let event: TestEvent = Registry::builtin().decode(&bytes).unwrap();
    assert_eq!(event.key, "legacy");
    assert_eq!(event.payload, vec![9]);
    assert_eq!(event.weight, 1, "v1 events read with v2's default");
}

/// A reader of each newer version must read data of every older one.
#[test]
fn every_newer_version_reads_every_older_one() {
    let reg = Registry::builtin();
    let mut pairs = 0;
    for name in reg.names() {
        let versions = reg.versions_of(name);
        for (i, older) in versions.iter().enumerate() {
            for newer in &versions[i + 1..] {
                SchemaCompatibility::can_read(&older.schema, &newer.schema)
                    .unwrap_or_else(|e| panic!("{} cannot read {}: {e}", newer.path, older.path));
                pairs += 1;
            }
        }
    }
    // Every pair of versions of one schema on disk was checked: a version
    // added as a file but not to the registry fails here, and so does a
    // loop that checks nothing.
    let mut versions_on_disk = std::collections::BTreeMap::<String, usize>::new();
    // The run-time value (cargo and nextest set it): the compile-time one
    // can name another clone that shared the target folder and is gone.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    );
    for dir in std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
    {
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if let Some((stem, _)) = name.strip_suffix(".avsc").and_then(|n| n.rsplit_once(".v")) {
                let key = format!("{}/{stem}", dir.file_name().to_string_lossy());
                *versions_on_disk.entry(key).or_default() += 1;
            }
        }
    }
    let expected: usize = versions_on_disk.values().map(|n| n * (n - 1) / 2).sum();
    let with_two = versions_on_disk.values().filter(|n| **n > 1).count();
    assert!(
        with_two >= 8,
        "schemas with several versions: {versions_on_disk:?}"
    );
    assert_eq!(
        pairs, expected,
        "pairs checked vs on disk: {versions_on_disk:?}"
    );
}

#[test]
fn the_compatibility_check_rejects_a_field_without_default() {
    let v1 = &Registry::builtin().versions_of("mailfleet.runtime.TestEvent")[0];
    let json = include_str!("../../runtime/TestEvent.v2.avsc").replace(r#""default": 1, "#, "");
    let broken = Schema::parse_str(&json).unwrap();
    assert!(SchemaCompatibility::can_read(&v1.schema, &broken).is_err());
}

/// The specification reduces a primitive with a logical type to its name.
#[test]
fn the_canonical_form_follows_the_specification() {
    let v = Registry::builtin()
        .newest("mailfleet.runtime.Counted")
        .unwrap();
    let form = canonical_form(&v.schema);
    assert!(
        form.contains(r#"{"name":"event_time","type":"long"}"#),
        "{form}"
    );
    assert!(
        !form.contains("logicalType") && !form.contains("doc"),
        "{form}"
    );
    assert_eq!(v.fingerprint, framing::crc64_avro(form.as_bytes()));
}

#[test]
fn bad_bytes_are_named() {
    let reg = Registry::builtin();
    let err = reg.decode::<TestEvent>(b"garbage bytes").unwrap_err();
    assert!(matches!(err, EventError::Framing(_)), "{err}");

    let mut unknown = framing::header(&[1, 2, 3, 4, 5, 6, 7, 8], 0);
    unknown.push(0);
    let err = reg.decode::<TestEvent>(&unknown).unwrap_err().to_string();
    assert!(err.contains("0102030405060708"), "{err}");

    let counted = crate::encode(&Counted {
        envelope: env("c"),
        key: "k".into(),
        count: 1,
    })
    .unwrap();
    let err = reg.decode::<TestEvent>(&counted).unwrap_err();
    assert!(matches!(err, EventError::WrongType { .. }), "{err}");

    let mut truncated = encode_v1("k");
    truncated.truncate(truncated.len() - 3);
    assert!(matches!(
        reg.decode::<TestEvent>(&truncated),
        Err(EventError::Decode { .. })
    ));

    let mut trailing = encode_v1("k");
    trailing.push(7);
    assert!(matches!(
        reg.decode::<TestEvent>(&trailing),
        Err(EventError::Framing(_))
    ));
}

#[test]
fn misnamed_and_duplicate_files_are_refused() {
    let json = include_str!("../../runtime/Counted.v1.avsc");
    let err = Registry::from_files(&[("runtime/Other.v1.avsc", json)]).unwrap_err();
    assert!(err.to_string().contains("Other"), "{err}");
    let err = Registry::from_files(&[("runtime/Counted.avsc", json)]).unwrap_err();
    assert!(err.to_string().contains("Name.vN.avsc"), "{err}");
    let err = Registry::from_files(&[("a/Counted.v1.avsc", json), ("b/Counted.v2.avsc", json)])
        .unwrap_err();
    assert!(err.to_string().contains("same fingerprint"), "{err}");
}

#[test]
fn scheduler_job_due_round_trips() {
    let params = [("folder", "Trash"), ("window_minutes", "240")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    round_trip(crate::scheduler::JobDue {
        envelope: env("trash-purge:2026-11-28T00:00:00Z"),
        job: "trash-purge".into(),
        kind: "purge".into(),
        due_at: 1_764_288_000_000,
        run_id: "trash-purge:2026-11-28T00:00:00Z".into(),
        params,
    });
    assert!(Registry::builtin()
        .names()
        .contains(&"mailfleet.scheduler.JobDue"));
}

#[test]
fn submission_events_round_trip() {
    use crate::submission::*;
    let attempt = SubmissionAttempted {
        envelope: env("sa1"),
        account: "alice@example.org".into(),
        sasl_username: "Alice@Example.org".into(),
        sender: "alice@example.org".into(),
        recipient: "bob@example.net".into(),
        client_address: "192.0.2.10".into(),
        client_name: "webmail.example.org".into(),
        size: 0,
        queue_id: String::new(),
        instance: "1a2b.3c4d.0".into(),
        policy_host: "sub1".into(),
    };
    round_trip(attempt.clone());
    round_trip(SubmissionDecided {
        envelope: Envelope {
            causation_id: Some("sa1".into()),
            ..env("sd1")
        },
        account: "alice@example.org".into(),
        recipient: "bob@example.net".into(),
        action: LimitAction::Defer,
        limit: Some("recipients_per_hour".into()),
        reply: "DEFER 4.7.1 recipients per hour limit 100 reached for alice@example.org".into(),
        recipients_last_hour: 100,
        distinct_recipients_last_day: 42,
        messages_last_day: 7,
        bytes_last_day: 1 << 33,
        plan: "free".into(),
        policy_host: "sub1".into(),
        settings_hash: Some("ab".repeat(32)),
    });
    round_trip(MessageSubmitted {
        envelope: env("ms1"),
        account: "alice@example.org".into(),
        sasl_username: "alice@example.org".into(),
        sender: String::new(),
        recipients: vec!["bob@example.net".into(), "carol@example.com".into()],
        size: 68,
        queue_id: "4XyZ1".into(),
        message_id: Some("m1@example.org".into()),
        client_address: "2001:db8::10".into(),
        verdict: ScanVerdict::Infected,
        signature: Some("Eicar-Signature".into()),
        file: None,
        rule: None,
        scanner: "ClamAV 1.4.3".into(),
        action: SubmitAction::Rejected,
    });
    for name in [
        "mailfleet.submission.SubmissionAttempted",
        "mailfleet.submission.SubmissionDecided",
        "mailfleet.submission.MessageSubmitted",
    ] {
        assert!(Registry::builtin().names().contains(&name), "{name}");
    }
}
