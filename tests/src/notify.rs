//! Helpers for the notifier tests: a `mailfleet run notifier` config over a
//! [`MailWorld`]'s topics, the events it reads, the LMTP server on the port
//! the test Postfix delivers to, and the Maildir files that arrive.

use std::{
    collections::BTreeMap,
    net::TcpStream,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_events::{
    admin::{AdminAlert, AlertSeverity},
    notify::NotificationRequested,
    Envelope, Event,
};
use mailfleet_runtime::{
    producer::EventProducer,
    topology::{Route, TopicSpec},
    Topology,
};

use crate::{ingest::MailWorld, spawn_with_env, ConfigFiles};

/// The test Postfix (`ops/postfix start`), which relays the notices.
pub const POSTFIX: &str = "127.0.0.1:2525";
/// Where that Postfix delivers by LMTP (`ops/test` starts it with
/// `MAILFLEET_POSTFIX_TRANSPORT=lmtp:inet:127.0.0.1:2424`).
pub const POSTFIX_LMTP_PORT: u16 = 2424;
/// A client address in the test Postfix's `mynetworks`: mail from it skips
/// the policy (greylisting) check.
pub const TRUSTED_SOURCE: &str = "127.0.0.2";

/// Fail with a useful message unless the test Postfix answers.
pub fn require_postfix() -> anyhow::Result<()> {
    anyhow::ensure!(
        TcpStream::connect(POSTFIX).is_ok(),
        "Postfix is not listening on {POSTFIX}: run \
         `MAILFLEET_POSTFIX_TRANSPORT=lmtp:inet:127.0.0.1:2424 ops/postfix start` (ops/test does)"
    );
    Ok(())
}

/// A `[consumers.notifier]` table: the relay, the admins and extra lines.
pub fn notifier_table(relay: &str, admins: &[&str], extra: &str) -> String {
    let (host, port) = relay.rsplit_once(':').unwrap_or((relay, "25"));
    format!(
        "[consumers.notifier]\nrelay_host = {host:?}\nrelay_port = {port}\n\
         from = \"mailfleet <postmaster@example.test>\"\nadmins = {admins:?}\n\
         timeout_s = 20\n{extra}\n"
    )
}

/// Write a topology with the notifier's route over `world`'s notice and
/// alert topics, and a config using state folder `state` (below the
/// world's folder), metrics port `metrics_port` and `table`.
pub fn notifier_config(
    world: &MailWorld,
    file: &str,
    state: &str,
    metrics_port: u16,
    table: &str,
) -> anyhow::Result<PathBuf> {
    let topology = Topology {
        topics: [&world.notify, &world.alerts, &world.deadletter]
            .iter()
            .map(|t| (t.to_string(), TopicSpec::scratch(3)))
            .collect(),
        consumers: BTreeMap::from([(
            "notifier".to_string(),
            Route {
                group: format!("{}-notifier", world.name),
                reads: vec![world.notify.clone(), world.alerts.clone()],
                writes: vec![],
            },
        )]),
    };
    ConfigFiles {
        dir: &world.dir,
        topology_file: "topology-notifier.toml",
        topology: &topology,
        brokers: &world.kafka.brokers,
        data_dir: &world.dir.join(state),
        deadletter: &world.deadletter,
        metrics_port,
    }
    .write(file, table)
}

/// `mailfleet lmtp` on `port`, waited for. The notices go to fresh test
/// addresses that are no accounts, so the LMTP account check is off.
pub async fn spawn_lmtp(config: &Path, port: u16, log: &Path) -> anyhow::Result<Child> {
    let no_check = [("MAILFLEET_LMTP__CHECK_ACCOUNTS", "false")];
    let mut child = spawn_with_env(config, &["lmtp"], &no_check, log)?;
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("mailfleet lmtp exited with {status}: see {}", log.display());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the LMTP server did not listen on {port} within 30 s: see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(child)
}

/// Produce `event` to `topic` under `key`.
pub async fn produce<E: Event>(
    world: &MailWorld,
    topic: &str,
    key: &str,
    event: &E,
) -> anyhow::Result<()> {
    let producer = EventProducer::new(&world.kafka, "notifier-test")?;
    producer.send(topic, key.as_bytes(), event).await?;
    Ok(())
}

/// The lifecycle's notice for an account that became inactive.
pub fn deactivated_notice(id: &str, account: &str, deletion_after: &str) -> NotificationRequested {
    NotificationRequested {
        envelope: Envelope::new(id, 1_780_000_000_000, "lifecycle"),
        to: account.to_string(),
        template: "deactivated".into(),
        account: Some(account.to_string()),
        params: BTreeMap::from([
            ("respond_within_hours".to_string(), "24".to_string()),
            ("deletion_after".to_string(), deletion_after.to_string()),
        ]),
    }
}

/// The scanner's alert for a virus sent by one of our own accounts.
pub fn virus_alert(
    id: &str,
    severity: AlertSeverity,
    sender: &str,
    message_id: &str,
    signature: &str,
) -> AdminAlert {
    AdminAlert {
        envelope: Envelope::new(id, 1_780_000_000_000, "scanner"),
        severity,
        kind: "virus-from-local-sender".into(),
        account: Some(sender.to_string()),
        summary: format!("{sender} sent a virus ({signature}); the account is blocked"),
        detail: Some(format!(
            "blob 00ff message-id {message_id} to someone@example.net; clear a false positive \
             with `mailfleet account unblock {sender}`"
        )),
    }
}

/// The message files in `account`'s INBOX (`new/` and `cur/`) below `root`.
pub fn inbox(root: &Path, account: &str) -> Vec<PathBuf> {
    let Some((local, domain)) = account.split_once('@') else {
        return Vec::new();
    };
    let maildir = root.join(domain).join(local).join("Maildir");
    ["new", "cur"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(maildir.join(sub)).into_iter().flatten())
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

/// Every file below `dir` (none if it does not exist).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A stored message as text, its body decoded when it is
/// quoted-printable (lettre picks it for lines longer than 76 characters,
/// so a long parameter may otherwise be split by a soft line break).
pub fn read_message(path: &Path) -> anyhow::Result<String> {
    let raw = String::from_utf8(std::fs::read(path)?)?;
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return Ok(raw);
    };
    let qp = head
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable");
    Ok(if qp {
        format!("{head}\r\n\r\n{}", quoted_printable(body)?)
    } else {
        raw
    })
}

/// Decode quoted-printable text (RFC 2045 6.7).
fn quoted_printable(text: &str) -> anyhow::Result<String> {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = joined.get(i + 1..i + 3).context("truncated =XX escape")?;
            out.push(u8::from_str_radix(hex, 16)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}
