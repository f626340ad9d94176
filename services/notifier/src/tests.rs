//! Unit tests of the notifier's pure parts (templates, composing,
//! deciding, error classes) and of the sent-log on a temporary folder.

use std::collections::BTreeMap;

use mailfleet_events::{
    admin::{AdminAlert, AlertSeverity},
    notify::NotificationRequested,
    Envelope,
};
use mailfleet_runtime::Verdict;

use super::{
    decide::{decide, AlertPolicy, Mail, NotifierInput},
    *,
};

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn composer() -> Composer {
    let cfg = NotifierConfig::default();
    let addresses = cfg.addresses().expect("the defaults parse");
    Composer::new(Templates::load(None).expect("built-ins parse"), &addresses)
}

fn policy() -> AlertPolicy {
    AlertPolicy {
        admins: vec!["admin@example.test".parse().unwrap()],
        min_severity: Severity::Warning,
    }
}

/// The header section of a composed message.
fn headers(message: &lettre::Message) -> String {
    let text = String::from_utf8(message.formatted()).unwrap();
    text.split("\r\n\r\n").next().unwrap().to_string()
}

fn body(message: &lettre::Message) -> String {
    let text = String::from_utf8(message.formatted()).unwrap();
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn deactivated(id: &str) -> NotificationRequested {
    NotificationRequested {
        envelope: Envelope::new(id, 1_780_000_000_000, "lifecycle"),
        to: "bob@example.test".into(),
        template: "deactivated".into(),
        account: Some("bob@example.test".into()),
        params: params(&[
            ("respond_within_hours", "24"),
            ("deletion_after", "2026-05-29T10:00:00Z"),
        ]),
    }
}

fn virus_alert(severity: AlertSeverity) -> AdminAlert {
    AdminAlert {
        envelope: Envelope::new("scanner:mail.received:1:7:2", 1_780_000_000_000, "scanner"),
        severity,
        kind: "virus-from-local-sender".into(),
        account: Some("carol@example.test".into()),
        summary: "carol@example.test sent a virus (Eicar-Signature); the account is blocked".into(),
        detail: Some("blob ab12 message-id <m1@example.test> to dan@example.test".into()),
    }
}

fn mail_of(d: &mailfleet_runtime::Decision) -> &Mail {
    assert!(matches!(d.verdict, Verdict::Apply), "not applied");
    d.intent_as::<Mail>().expect("a Mail intent")
}

fn rejection(d: &mailfleet_runtime::Decision) -> String {
    match &d.verdict {
        Verdict::Reject(reason) => reason.clone(),
        _ => panic!("expected a rejection"),
    }
}

/// A template, its parameters, and a text the rendering must contain.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn notifier_every_builtin_template_renders_with_its_params() {
    let t = Templates::load(None).unwrap();
    let cases: &[Case] = &[
        (
            "deactivated",
            &[
                ("account", "bob@example.test"),
                ("respond_within_hours", "24"),
                ("deletion_after", "2026-05-29T10:00:00Z"),
            ],
            "2026-05-29T10:00:00Z",
        ),
        (
            "over-quota-recipient",
            &[
                ("account", "bob@example.test"),
                ("size", "1000"),
                ("used_bytes", "990"),
                ("quota_bytes", "1024"),
                ("message_id", "m1@example.net"),
            ],
            "990 of 1024",
        ),
        (
            "over-quota-sender",
            &[
                ("account", "bob@example.test"),
                ("size", "1000"),
                ("used_bytes", "990"),
                ("quota_bytes", "1024"),
                ("message_id", "m1@example.net"),
            ],
            "m1@example.net",
        ),
        (
            "admin-alert",
            &[
                ("severity", "CRITICAL"),
                ("kind", "virus-from-local-sender"),
                ("account", "carol@example.test"),
                ("summary", "carol sent a virus"),
                ("detail", "message-id <m1@x>"),
                ("event_id", "e1"),
            ],
            "message-id <m1@x>",
        ),
        (
            "migration-token",
            &[
                ("account", "bob@example.test"),
                ("token", "tok-123"),
                ("target", "cluster-b"),
            ],
            "tok-123",
        ),
    ];
    for (name, pairs, needle) in cases {
        let r = t.render(name, &params(pairs)).unwrap();
        assert!(!r.subject.is_empty(), "{name}");
        assert!(r.body.contains(needle), "{name}: {}", r.body);
        assert!(
            !r.subject.contains("{{") && !r.body.contains("{{"),
            "{name}"
        );
    }
    assert_eq!(t.names().count(), cases.len());
}

#[test]
fn notifier_missing_params_and_unknown_templates_are_named() {
    let t = Templates::load(None).unwrap();
    let err = t
        .render("deactivated", &params(&[("account", "bob@example.test")]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "template \"deactivated\" needs parameter(s) deletion_after, respond_within_hours \
         that the event does not carry"
    );
    let err = t.render("welcome", &params(&[])).unwrap_err().to_string();
    assert!(err.starts_with("unknown template \"welcome\""), "{err}");
    assert!(err.contains("deactivated"), "lists the known ones: {err}");
}

#[test]
fn notifier_render_errors_never_show_a_parameter_value() {
    let t = Templates::load(None).unwrap();
    let secret = "s3cret-token-value";
    let err = t
        .render(
            "migration-token",
            &params(&[("account", "bob@example.test"), ("token", secret)]),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("target") && !err.contains(secret), "{err}");
}

#[test]
fn notifier_bad_template_files_are_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let load = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap();
        let err = Templates::load(Some(dir.path())).unwrap_err().to_string();
        std::fs::remove_file(dir.path().join(name)).unwrap();
        err
    };
    let err = load("a.txt", "Hello\n\nbody");
    assert!(err.contains("a.txt") && err.contains("Subject:"), "{err}");
    let err = load("b.txt", "Subject: x\nbody");
    assert!(err.contains("b.txt") && err.contains("blank line"), "{err}");
    let err = load("c.txt", "Subject: x\n\nHello {{name");
    assert!(err.contains("c.txt") && err.contains("without"), "{err}");
    let err = load("d.txt", "Subject: {{bad name}}\n\nx");
    assert!(err.contains("d.txt") && err.contains("bad name"), "{err}");
    let err = load("Bad Name.txt", "Subject: x\n\ny");
    assert!(err.contains("Bad Name.txt"), "{err}");
}

#[test]
fn notifier_override_folder_replaces_and_adds_templates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deactivated.txt"),
        "Subject: Inactive: {{account}}\r\n\r\nLog in within {{respond_within_hours}} h.\r\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("welcome.txt"),
        "Subject: Hi\n\nWelcome {{to}}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("README"), "not a template").unwrap();
    let t = Templates::load(Some(dir.path())).unwrap();
    let r = t
        .render(
            "deactivated",
            &params(&[("account", "a@b.test"), ("respond_within_hours", "24")]),
        )
        .unwrap();
    assert_eq!(r.subject, "Inactive: a@b.test");
    assert_eq!(r.body, "Log in within 24 h.\r\n");
    assert_eq!(
        t.render("welcome", &params(&[("to", "x@y.test")]))
            .unwrap()
            .body,
        "Welcome x@y.test\n"
    );
    assert!(t.contains("admin-alert"), "built-ins stay");
}

#[test]
fn notifier_crlf_in_params_never_makes_a_header() {
    let c = composer();
    let mut n = deactivated("e-inject");
    let evil = "bob@example.test\r\nBcc: evil@attacker.test\r\nX-Evil: 1";
    n.account = Some(evil.into());
    n.params
        .insert("deletion_after".into(), format!("soon\r\n\r\n{evil}"));
    let d = decide(&c, &policy(), &NotifierInput::Request(n));
    let message = &mail_of(&d).message;
    let head = headers(message);
    for line in head.lines() {
        assert!(
            !line.starts_with("Bcc:") && !line.starts_with("X-Evil:"),
            "injected header: {head}"
        );
    }
    assert_eq!(head.matches("\r\nSubject: ").count(), 1, "{head}");
    assert_eq!(message.envelope().to().len(), 1, "no extra recipient");
    assert_eq!(message.envelope().to()[0].to_string(), "bob@example.test");
}

#[test]
fn notifier_message_id_is_derived_from_the_event_id() {
    let from: lettre::message::Mailbox = "mailfleet <postmaster@example.test>".parse().unwrap();
    let a = message_id("lifecycle:accounts.events:3:17:1", &from);
    assert_eq!(a, message_id("lifecycle:accounts.events:3:17:1", &from));
    assert_ne!(a, message_id("lifecycle:accounts.events:3:17:2", &from));
    let hex = a
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix(".notice@example.test>"))
        .unwrap();
    assert_eq!(hex.len(), 32);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));

    // The whole message is a function of the event: a re-decided input
    // composes the same bytes.
    let c = composer();
    let one = decide(&c, &policy(), &NotifierInput::Request(deactivated("e1")));
    let two = decide(&c, &policy(), &NotifierInput::Request(deactivated("e1")));
    assert_eq!(
        mail_of(&one).message.formatted(),
        mail_of(&two).message.formatted()
    );
}

#[test]
fn notifier_headers_date_and_auto_submitted() {
    let c = composer();
    let mut n = deactivated("e-date");
    n.envelope.event_time = 0;
    let d = decide(&c, &policy(), &NotifierInput::Request(n));
    let head = headers(&mail_of(&d).message);
    assert!(
        head.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000"),
        "{head}"
    );
    assert!(head.contains("Auto-Submitted: auto-generated"), "{head}");
    assert!(
        head.contains("From: mailfleet <postmaster@example.test>"),
        "{head}"
    );
    assert!(head.contains("To: bob@example.test"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; charset=utf-8"),
        "{head}"
    );
    let id = message_id("e-date", &"postmaster@example.test".parse().unwrap());
    assert!(head.contains(&format!("Message-ID: {id}")), "{head}");
    // The null reverse-path by default (RFC 3834).
    assert!(mail_of(&d).message.envelope().from().is_none());
}

#[test]
fn notifier_deactivated_notice_carries_its_params() {
    let d = decide(
        &composer(),
        &policy(),
        &NotifierInput::Request(deactivated("e2")),
    );
    let mail = mail_of(&d);
    assert_eq!(mail.event_id, "e2");
    assert_eq!(mail.template, "deactivated");
    let text = body(&mail.message);
    assert!(text.contains("within 24 hours"), "{text}");
    assert!(text.contains("2026-05-29T10:00:00Z"), "{text}");
    assert!(headers(&mail.message).contains("bob@example.test has been deactivated"));
}

#[test]
fn notifier_unsendable_notices_are_rejected_with_the_reason() {
    let c = composer();
    let mut n = deactivated("e3");
    n.template = "no-such-template".into();
    let reason = rejection(&decide(&c, &policy(), &NotifierInput::Request(n)));
    assert!(reason.contains("\"no-such-template\""), "{reason}");

    let mut n = deactivated("e4");
    n.params.remove("deletion_after");
    let reason = rejection(&decide(&c, &policy(), &NotifierInput::Request(n)));
    assert!(
        reason.contains("deletion_after") && reason.contains("e4"),
        "{reason}"
    );

    let mut n = deactivated("e5");
    n.to = "not an address".into();
    let reason = rejection(&decide(&c, &policy(), &NotifierInput::Request(n)));
    assert!(reason.contains("\"not an address\""), "{reason}");

    let n = deactivated("");
    let reason = rejection(&decide(&c, &policy(), &NotifierInput::Request(n)));
    assert!(reason.contains("event_id"), "{reason}");
}

#[test]
fn notifier_virus_alert_mails_the_admin_the_message_id_and_signature() {
    let d = decide(
        &composer(),
        &policy(),
        &NotifierInput::Alert(virus_alert(AlertSeverity::Critical)),
    );
    let mail = mail_of(&d);
    assert_eq!(mail.template, "admin-alert");
    assert_eq!(mail.to, vec!["admin@example.test".to_string()]);
    let text = body(&mail.message);
    assert!(text.contains("<m1@example.test>"), "{text}");
    assert!(text.contains("Eicar-Signature"), "{text}");
    assert!(text.contains("virus-from-local-sender"), "{text}");
    assert!(headers(&mail.message).contains("[mailfleet CRITICAL]"));
}

#[test]
fn notifier_alerts_below_the_threshold_or_without_admins_are_ignored() {
    let c = composer();
    let info = NotifierInput::Alert(virus_alert(AlertSeverity::Info));
    assert!(matches!(
        decide(&c, &policy(), &info).verdict,
        Verdict::Ignore
    ));
    let warning = NotifierInput::Alert(virus_alert(AlertSeverity::Warning));
    assert!(matches!(
        decide(&c, &policy(), &warning).verdict,
        Verdict::Apply
    ));
    let unknown = NotifierInput::Alert(virus_alert(AlertSeverity::Unknown));
    assert!(matches!(
        decide(&c, &policy(), &unknown).verdict,
        Verdict::Apply
    ));
    let nobody = AlertPolicy {
        admins: vec![],
        ..policy()
    };
    let critical = NotifierInput::Alert(virus_alert(AlertSeverity::Critical));
    assert!(matches!(
        decide(&c, &nobody, &critical).verdict,
        Verdict::Ignore
    ));
    let other = NotifierInput::Other(Envelope::default());
    assert!(matches!(
        decide(&c, &policy(), &other).verdict,
        Verdict::Ignore
    ));
}

#[test]
fn notifier_config_problems_name_key_and_value() {
    assert!(NotifierConfig::default().problems().is_empty());
    let cfg = NotifierConfig {
        from: "postmaster at example".into(),
        admins: vec!["ok@example.test".into(), "nope".into()],
        return_path: "also nope".into(),
        source_address: Some("127.0.0.300".into()),
        relay_port: 0,
        timeout_s: 0,
        username: Some("u".into()),
        templates_dir: Some("/no/such/templates".into()),
        ..NotifierConfig::default()
    };
    let all = cfg.problems().join("\n");
    for needle in [
        "consumers.notifier.from = \"postmaster at example\"",
        "consumers.notifier.admins[1] = \"nope\"",
        "consumers.notifier.return_path = \"also nope\"",
        "consumers.notifier.source_address = \"127.0.0.300\"",
        "consumers.notifier.relay_port = 0",
        "consumers.notifier.timeout_s = 0",
        "consumers.notifier.username is set but consumers.notifier.password_file is not",
        "/no/such/templates",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn notifier_builds_with_a_sent_log_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NotifierConfig::default();
    let sent = cfg.sent_log_dir(dir.path());
    assert_eq!(sent, dir.path().join("notifier-sent"));
    Notifier::new(&cfg, &sent).unwrap();
    assert!(sent.is_dir());
    let bad = NotifierConfig {
        from: "x".into(),
        ..NotifierConfig::default()
    };
    let err = Notifier::new(&bad, &sent).err().unwrap().to_string();
    assert!(err.contains("consumers.notifier.from = \"x\""), "{err}");
}

/// A test CA and a certificate it signs, as PEM files in `dir`: (ca,
/// cert, key).
fn test_pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["mailfleet".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let files = (
        dir.join("ca.pem"),
        dir.join("client.pem"),
        dir.join("client.key"),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

#[test]
fn notifier_auth_needs_tls_and_the_error_names_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "secret\n").unwrap();
    let plain_auth = NotifierConfig {
        username: Some("mailfleet".into()),
        password_file: Some(password.clone()),
        ..NotifierConfig::default()
    };
    let all = plain_auth.problems().join("\n");
    assert!(
        all.contains(
            "consumers.notifier.username is set but consumers.notifier.relay_security = \"none\""
        ),
        "{all}"
    );
    let err = Mailer::new(&plain_auth).err().unwrap().to_string();
    assert!(err.contains("relay_security"), "refused at load: {err}");
    let unused_tls = NotifierConfig {
        tls: Some(mailfleet_tls::ClientTls::default()),
        ..NotifierConfig::default()
    };
    let all = unused_tls.problems().join("\n");
    assert!(
        all.contains(
            "[consumers.notifier.tls] is set but consumers.notifier.relay_security = \"none\""
        ),
        "{all}"
    );
    for security in [RelaySecurity::StartTls, RelaySecurity::Smtps] {
        let over_tls = NotifierConfig {
            relay_security: security,
            ..plain_auth.clone()
        };
        assert!(over_tls.problems().is_empty(), "{:?}", over_tls.problems());
    }
}

#[test]
fn notifier_tls_settings_parse_and_build() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path());
    let text = format!(
        "relay_host = \"mx.example.test\"\nrelay_port = 587\nrelay_security = \"starttls\"\n\
         [tls]\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n"
    );
    let cfg: NotifierConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.relay_security, RelaySecurity::StartTls);
    assert_eq!(
        cfg.tls.as_ref().and_then(|t| t.ca_file.clone()),
        Some(ca.clone())
    );
    Mailer::new(&cfg).unwrap();
    let smtps: NotifierConfig = toml::from_str("relay_security = \"smtps\"").unwrap();
    assert_eq!(smtps.relay_security, RelaySecurity::Smtps);
    assert!(toml::from_str::<NotifierConfig>("relay_security = \"tls\"").is_err());
}

#[test]
fn notifier_tls_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, _) = test_pki(dir.path());
    let missing = dir.path().join("no-such-ca.pem");
    let tls = |t: mailfleet_tls::ClientTls| NotifierConfig {
        relay_security: RelaySecurity::StartTls,
        tls: Some(t),
        ..NotifierConfig::default()
    };
    let no_ca = tls(mailfleet_tls::ClientTls {
        ca_file: Some(missing.clone()),
        ..Default::default()
    });
    let err = Mailer::new(&no_ca).err().unwrap().to_string();
    assert!(
        err.starts_with("consumers.notifier.tls: ") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    let half = tls(mailfleet_tls::ClientTls {
        ca_file: Some(ca),
        cert_file: Some(cert),
        ..Default::default()
    });
    let err = Mailer::new(&half).err().unwrap().to_string();
    assert!(err.contains("cert_file is set without key_file"), "{err}");
}
