//! Helpers for the submission milter tests: a `mailfleet submission` child
//! with its own topic, an account in slapd with a random password, swaks
//! against Postfix's submission listener (127.0.0.1:1587), and the sink
//! (`ops/smtp-sink`) that plays the world Postfix relays to.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::Duration,
};

use mailfleet_events::submission::MessageSubmitted;
use mailfleet_runtime::{admin, topology::TopicSpec, Topology};
use mailfleet_submission::milter::{
    client::{Envelope, MtaClient, POSTFIX_OFFER},
    reply::Reply,
};

use crate::{
    directory::{account_dn, account_ldif, add, argon2_hash, random_password, Cleanup, PEOPLE},
    free_port,
    ingest::decode_all,
    kafka, read_topic, repo_root, scratch_dir, spawn_with_env, unique, wait_listening, wait_until,
};

/// Postfix's submission listener (`ops/postfix`).
pub const SUBMISSION: &str = "127.0.0.1:1587";
/// Where that listener's `smtpd_milters` points.
pub const MILTER_PORT: u16 = 10027;
/// Where its `check_policy_service` points (the inbound policy port).
pub const POLICY_PORT: u16 = 10023;
/// The relay transport `ops/test` starts Postfix with: `ops/smtp-sink`.
pub const SINK_RELAY: &str = "smtp:[127.0.0.1]:2526";

/// One `mailfleet submission` config and its topic.
pub struct Milter {
    pub topic: String,
    pub port: u16,
    pub metrics_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Milter {
    /// A topic and a config listening on `port` (0: a free one):
    /// `submission_keys` are more `[submission]` keys, `brokers` where
    /// Kafka is and `clamd` clamd's address.
    pub async fn new(
        name: &str,
        port: u16,
        submission_keys: &str,
        brokers: &str,
        clamd: &str,
    ) -> anyhow::Result<Milter> {
        let name = unique(name);
        let dir = scratch_dir(&name);
        let topic = format!("{name}.submitted");
        let topology = Topology {
            topics: BTreeMap::from([(topic.clone(), TopicSpec::scratch(3))]),
            consumers: BTreeMap::new(),
        };
        admin::apply(&kafka(), &topology).await?;
        let port = if port == 0 { free_port() } else { port };
        let metrics_port = free_port();
        let config = dir.join("submission.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = {brokers:?}\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
                 [submission]\nlisten = \"127.0.0.1:{port}\"\ntopic = {topic:?}\nhostname = \"test\"\n\
                 {submission_keys}\n\
                 [consumers.scanner.clamd]\naddress = {clamd:?}\nconnect_timeout_ms = 500\n"
            ),
        )?;
        Ok(Milter {
            log: dir.join("milter.log"),
            topic,
            port,
            metrics_port,
            config,
        })
    }

    /// Start it (with extra environment) and wait until it listens.
    pub async fn spawn(&self, env: &[(&str, &str)]) -> anyhow::Result<Child> {
        let child = spawn_with_env(&self.config, &["submission"], env, &self.log)?;
        let port = self.port;
        wait_listening("the milter to listen", port).await?;
        Ok(child)
    }

    /// Submit `raw` from `alice@example.test` to two recipients as
    /// `login`, over one new milter connection, as Postfix would.
    pub async fn submit(
        &self,
        login: Option<&str>,
        queue_id: &str,
        raw: &str,
    ) -> anyhow::Result<Reply> {
        let mut mta = MtaClient::connect(("127.0.0.1", self.port), POSTFIX_OFFER).await?;
        let env = Envelope {
            login,
            queue_id,
            sender: "alice@example.test",
            recipients: &["bob@example.net", "carol@example.net"],
            client_ip: "127.0.0.1",
        };
        let reply = mta.submit(&env, raw.as_bytes()).await?;
        mta.quit().await?;
        Ok(reply)
    }

    /// The events on the topic: until `want` or nothing new for `idle`.
    pub fn events(&self, want: usize, idle: Duration) -> anyhow::Result<Vec<MessageSubmitted>> {
        decode_all(&read_topic(&self.topic, want, idle)?)
    }

    /// Wait until the log has `text`.
    pub async fn wait_log(&self, text: &str) -> anyhow::Result<()> {
        let log = self.log.clone();
        wait_until(
            &format!("{text:?} in the milter's log"),
            Duration::from_secs(60),
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains(text)),
        )
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The SMTP reply line of a milter reply (empty for a pass).
pub fn reply_line(reply: &Reply) -> &str {
    match reply {
        Reply::ReplyCode(line) => line,
        _ => "",
    }
}

/// An active account in slapd with a random password, removed when the
/// returned guard drops.
pub fn account(address: &str) -> anyhow::Result<(String, Cleanup)> {
    let password = random_password();
    let dn = account_dn(PEOPLE, address);
    let guard = Cleanup(vec![dn.clone()]);
    crate::directory::remove(&dn);
    add(&account_ldif(
        &dn,
        address,
        &argon2_hash(&password)?,
        "active",
    ))?;
    Ok((password, guard))
}

/// swaks: AUTH PLAIN as `login` at the submission listener, MAIL FROM
/// `login`, one recipient, the message in `data`. Its whole transcript;
/// swaks's exit code is not checked (a refusal is an answer).
pub fn swaks_submit(login: &str, password: &str, to: &str, data: &Path) -> anyhow::Result<String> {
    let out: Output = Command::new("swaks")
        .args(["--server", SUBMISSION, "--auth", "PLAIN"])
        .args(["--auth-user", login, "--auth-password", password])
        .args(["--from", login, "--to", to, "--timeout", "120"])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The server's reply to the end of DATA in a swaks transcript (the first
/// server line after the final dot), or "" when DATA never ended.
pub fn data_reply(transcript: &str) -> String {
    let mut lines = transcript.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line == "-> ." {
            for next in lines.by_ref() {
                for prefix in ["<**", "<-"] {
                    if let Some(reply) = next.strip_prefix(prefix) {
                        return reply.trim().to_string();
                    }
                }
            }
        }
    }
    String::new()
}

/// `ops/smtp-sink count <marker>`: messages at the sink that hold `marker`.
pub fn sink_count(marker: &str) -> anyhow::Result<usize> {
    let out = Command::new(repo_root().join("ops/smtp-sink"))
        .args(["count", marker])
        .output()?;
    anyhow::ensure!(out.status.success(), "ops/smtp-sink count failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Fail with how to fix it unless Postfix's submission listener relays to
/// the sink with the milter on, and the sink runs.
pub fn require_submission_postfix() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::net::TcpStream::connect(SUBMISSION).is_ok(),
        "Postfix's submission listener is not on {SUBMISSION}: run `ops/ldap start`, \
         `ops/dovecot start`, `ops/smtp-sink start`, then \
         `MAILFLEET_POSTFIX_RELAY='{SINK_RELAY}' ops/postfix start` (ops/test does)"
    );
    let status = Command::new(repo_root().join("ops/smtp-sink"))
        .arg("start")
        .output()?;
    anyhow::ensure!(status.status.success(), "ops/smtp-sink start failed");
    let conf = Command::new(repo_root().join("ops/postfix"))
        .arg("map-path")
        .output()?;
    let map = PathBuf::from(String::from_utf8_lossy(&conf.stdout).trim());
    let main_cf = map.parent().map(|d| d.join("main.cf")).unwrap_or_default();
    let text = std::fs::read_to_string(&main_cf).unwrap_or_default();
    anyhow::ensure!(
        text.lines()
            .any(|l| l.trim() == format!("default_transport = {SINK_RELAY}")),
        "{} does not relay to the sink: run `MAILFLEET_POSTFIX_RELAY='{SINK_RELAY}' \
         ops/postfix start` (ops/test does)",
        main_cf.display()
    );
    Ok(())
}

/// A stand-in for the policy service on `port` that answers every request
/// `DUNNO` while the returned task runs. The submission listener asks the
/// policy service at RCPT; the outbound limits behind it have their own
/// tests (`outbound.rs`), and the milter's do not depend on them.
pub async fn dunno_policy(port: u16) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            anyhow::anyhow!("127.0.0.1:{port} is taken ({e}): is a policy server running?")
        })?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.is_empty() && write.write_all(b"action=DUNNO\n\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    }))
}
