//! The notifier's link to its relay over TLS (`relay_security`,
//! `[consumers.notifier.tls]`), against a private Postfix with TLS on
//! (`MAILFLEET_POSTFIX_TLS=1`, the test's own CA from `ops/certs`):
//! - STARTTLS then SMTP AUTH on the submission listener (AUTH only after
//!   STARTTLS, checked by the real Dovecot against the real slapd), with
//!   a client certificate: the notice goes on over LMTP with TLS to
//!   `mailfleet lmtp` and arrives (`MessageReceived`); Postfix's log shows
//!   both TLS sessions (the notifier's certificate verified) and the login;
//! - a relay whose certificate does not verify (the notifier trusts
//!   `wrong-ca.pem`): nothing is sent, the attempt is deferred and logged
//!   with rustls's reason.
//!
//! Not covered here: `relay_security = "smtps"` (implicit TLS), which this
//! Postfix does not listen for; its settings are unit-tested in
//! `services/notifier`.

use std::{path::Path, process::Child, time::Duration};

use mailfleet_events::mail::MessageReceived;
use mailfleet_tests::{ingest::*, notify::*, postfix_tls::*, submission, *};

const SENT: &str = "mailfleet_notifier_sent_total";
const FAILED: &str = "mailfleet_notifier_failed_total";

/// Dovecot's auth port, which the submission listener asks (`ops/dovecot`).
const DOVECOT_AUTH: &str = "127.0.0.1:12345";

/// `[consumers.notifier]` keys for STARTTLS trusting `ca` (with the
/// test client certificate of `certs`), then more keys.
fn tls_keys(certs: &Path, ca: &str, more: &str) -> String {
    let file = |f: &str| format!("{:?}", certs.join(f).display().to_string());
    format!(
        "relay_security = \"starttls\"\n{more}\n[consumers.notifier.tls]\nca_file = {}\n\
         cert_file = {}\nkey_file = {}\n",
        file(ca),
        file("client.pem"),
        file("client.key"),
    )
}

/// Start `mailfleet run notifier` on `config`; its metrics on `port`.
async fn start_notifier(config: &Path, port: u16, log: &Path) -> anyhow::Result<Child> {
    let child = spawn_mailfleet(config, &["run", "notifier"], log)?;
    wait_until("the notifier's metrics", Duration::from_secs(30), || {
        scrape(port).is_some()
    })
    .await?;
    Ok(child)
}

/// `mailfleet lmtp` for `world`, requiring STARTTLS with `certs`'s server
/// certificate.
async fn tls_lmtp(world: &MailWorld, certs: &Path) -> anyhow::Result<Child> {
    let config = world.write_config("lmtp.toml", free_port(), &lmtp_tls_keys(certs, true))?;
    spawn_lmtp(&config, world.lmtp_port, &world.dir.join("lmtp.log")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn notifier_authenticates_after_starttls_and_the_notice_arrives() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::net::TcpStream::connect(DOVECOT_AUTH).is_ok(),
        "Dovecot's auth is not listening on {DOVECOT_AUTH}: run `ops/ldap start` and \
         `ops/dovecot start` (ops/test does)"
    );
    let world = MailWorld::new("notifier-tls", kafka()).await?;
    let postfix = TlsPostfix::start("notifier-tls", world.lmtp_port)?;
    let mut children = Children(vec![tls_lmtp(&world, &postfix.certs).await?]);

    let tag = unique("notifier-tls");
    let login = format!("{tag}-sender@example.test");
    let (password, _account) = submission::account(&login)?;
    let password_file = world.dir.join("notifier.password");
    std::fs::write(&password_file, format!("{password}\n"))?;
    let user = format!("{tag}@example.test");
    let relay = format!("127.0.0.1:{}", postfix.submission_port());
    let auth = format!(
        "username = {login:?}\npassword_file = {:?}",
        password_file.display().to_string()
    );
    let table = notifier_table(&relay, &[], &tls_keys(&postfix.certs, "ca.pem", &auth));
    let metrics = free_port();
    let config = notifier_config(&world, "notifier.toml", "notifier-state", metrics, &table)?;
    let log = world.dir.join("notifier.log");
    children
        .0
        .push(start_notifier(&config, metrics, &log).await?);
    let notice = deactivated_notice(&format!("{tag}-n1"), &user, "2026-06-01T10:00:00Z");
    produce(&world, &world.notify, &user, &notice).await?;

    let mut received = Vec::new();
    for _ in 0..30 {
        let records = read_topic(&world.received, 1, Duration::from_secs(2))?;
        received = decode_all::<MessageReceived>(&records)?;
        if !received.is_empty() {
            break;
        }
    }
    let notifier_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        received.len(),
        1,
        "{received:?}\n{notifier_log}\n{}",
        postfix.log()?
    );
    assert_eq!(received[0].account, user);
    assert_eq!(received[0].sender, "", "the notifier sends from <>");
    let text = scrape(metrics).unwrap_or_default();
    assert!(
        metric_sum(&text, SENT, &["template=\"deactivated\""]) >= 1.0,
        "{text}"
    );

    let postfix_log = postfix.log()?;
    for needle in [
        // The notifier's STARTTLS, its client certificate verified.
        "Trusted TLS connection established from localhost[127.0.0.1]".to_string(),
        format!("sasl_method=PLAIN, sasl_username={login}"),
        format!(
            "Trusted TLS connection established to 127.0.0.1[127.0.0.1]:{}",
            world.lmtp_port
        ),
    ] {
        assert!(
            postfix_log.contains(&needle),
            "no {needle:?} in Postfix's log:\n{postfix_log}"
        );
    }
    assert!(
        !postfix_log.contains(&password) && !notifier_log.contains(&password),
        "the password is in a log"
    );
    children.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn notifier_sends_nothing_to_a_relay_it_cannot_verify() -> anyhow::Result<()> {
    let world = MailWorld::new("notifier-untrusted", kafka()).await?;
    let postfix = TlsPostfix::start("notifier-untrusted", world.lmtp_port)?;
    let mut children = Children(vec![tls_lmtp(&world, &postfix.certs).await?]);
    let tag = unique("untrusted");
    let user = format!("{tag}@example.test");
    // The inbound listener (STARTTLS offered, no AUTH), from an address in
    // its mynetworks: only the certificate stands in the way.
    let relay = format!("127.0.0.1:{}", postfix.port());
    let source = "source_address = \"127.0.0.2\"";
    let table = notifier_table(
        &relay,
        &[],
        &tls_keys(&postfix.certs, "wrong-ca.pem", source),
    );
    let metrics = free_port();
    let config = notifier_config(&world, "notifier.toml", "notifier-state", metrics, &table)?;
    let log = world.dir.join("notifier.log");
    children
        .0
        .push(start_notifier(&config, metrics, &log).await?);
    let notice = deactivated_notice(&format!("{tag}-n1"), &user, "2026-06-01T10:00:00Z");
    produce(&world, &world.notify, &user, &notice).await?;

    wait_until("a deferred attempt", Duration::from_secs(60), || {
        scrape(metrics).is_some_and(|t| {
            metric_sum(
                &t,
                FAILED,
                &["kind=\"deferred\"", "template=\"deactivated\""],
            ) >= 1.0
        })
    })
    .await?;
    let text = std::fs::read_to_string(&log)?;
    let refused = format!("mail to {user} not sent: relay {relay}: STARTTLS failed");
    assert!(
        text.lines()
            .any(|l| l.contains(&refused) && l.contains("UnknownIssuer")),
        "no {refused:?} with rustls's reason in the notifier's log:\n{text}"
    );
    assert!(read_topic(&world.received, 1, Duration::from_secs(2))?.is_empty());
    assert!(
        !postfix.log()?.contains("from=<>"),
        "Postfix took a message:\n{}",
        postfix.log()?
    );
    children.terminate()
}
