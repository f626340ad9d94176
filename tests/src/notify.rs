//! Helpers for the notifier tests: a `mailfleet run notifier` config over a
//! [`MailWorld`]'s topics, the events it reads, the LMTP server on the port
//! the test Postfix delivers to, and the Maildir files that arrive.

use std::{
    collections::BTreeMap,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_events::{
    admin::{AdminAlert, AlertSeverity},
    notify::NotificationRequested,
    Envelope, Event,
};
use mailfleet_runtime::producer::EventProducer;

use crate::{ingest::MailWorld, mailfleet_bin};

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
    let topo = world.dir.join("topology-notifier.toml");
    let mut text = String::new();
    for topic in [&world.notify, &world.alerts, &world.deadletter] {
        text += &format!(
            "[topics.\"{topic}\"]\npartitions = 3\nretention_ms = 3600000\ncleanup_policy = \"delete\"\n"
        );
    }
    text += &format!(
        "[consumers.notifier]\ngroup = \"{}-notifier\"\nreads = [{:?}, {:?}]\nwrites = []\n",
        world.name, world.notify, world.alerts
    );
    std::fs::write(&topo, text)?;
    let config = format!(
        "[pipelines]\ntopology = {topo:?}\n\
         [kafka]\nbrokers = {brokers:?}\n\
         [runtime]\ndata_dir = {state:?}\ndeadletter_topic = {dead:?}\nbatch_max_wait_ms = 2\n\
         retry_initial_ms = 100\nretry_max_ms = 1000\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
         {table}\n",
        topo = topo.display().to_string(),
        brokers = world.kafka.brokers,
        state = world.dir.join(state).display().to_string(),
        dead = world.deadletter,
    );
    let path = world.dir.join(file);
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Start `mailfleet --config <config> <args>` with extra environment; its
/// log goes to `log`.
pub fn spawn_with_env(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .env("MAILFLEET_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("spawning mailfleet")
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
