//! Helpers for the ingest tests: a private set of mail topics, a config
//! for `mailfleet lmtp` / `mailfleet run scanner`, and a plain LMTP client.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use mailfleet_events::{Event, Registry};
pub use mailfleet_ingest::lmtp::client::dot_stuff;
use mailfleet_runtime::{
    admin,
    config::KafkaConfig,
    topology::{Route, TopicSpec},
    Topology,
};

use crate::{free_port, scratch_dir, unique, ConfigFiles, Consumed};

/// One test's mail topics, folders and ports.
pub struct MailWorld {
    pub name: String,
    pub dir: PathBuf,
    pub kafka: KafkaConfig,
    pub received: String,
    pub scanned: String,
    pub accounts: String,
    pub alerts: String,
    pub deadletter: String,
    pub stored: String,
    pub purge: String,
    pub usage: String,
    pub notify: String,
    /// The lifecycle's compacted status topic (the LMTP RCPT check).
    pub status: String,
    /// The scheduler's job runs and its lease (one partition).
    pub jobs: String,
    pub lease: String,
    pub lmtp_port: u16,
    /// Whether the LMTP server refuses recipients that are not active
    /// accounts (`lmtp.check_accounts`); off unless a test registers them.
    pub check_accounts: bool,
}

impl MailWorld {
    /// Create the topics (3 partitions each) on `kafka`.
    pub async fn new(name: &str, kafka: KafkaConfig) -> anyhow::Result<MailWorld> {
        let name = unique(name);
        let topic = |t: &str| format!("{name}.{t}");
        let world = MailWorld {
            dir: scratch_dir(&name),
            received: topic("received"),
            scanned: topic("scanned"),
            accounts: topic("accounts"),
            alerts: topic("alerts"),
            deadletter: topic("dead"),
            stored: topic("stored"),
            purge: topic("purge"),
            usage: topic("usage"),
            notify: topic("notify"),
            status: topic("status"),
            jobs: topic("jobs"),
            lease: topic("lease"),
            lmtp_port: free_port(),
            check_accounts: false,
            kafka,
            name,
        };
        admin::apply(&world.kafka, &world.topology())
            .await
            .context("creating the mail topics")?;
        Ok(world)
    }

    fn topology(&self) -> Topology {
        let topics = [
            &self.received,
            &self.scanned,
            &self.accounts,
            &self.alerts,
            &self.deadletter,
            &self.stored,
            &self.purge,
            &self.usage,
            &self.notify,
            &self.status,
            &self.jobs,
        ];
        let mut all = topics
            .iter()
            .map(|t| (t.to_string(), TopicSpec::scratch(3)))
            .collect::<BTreeMap<_, _>>();
        all.insert(self.lease.clone(), TopicSpec::scratch(1));
        Topology {
            topics: all,
            consumers: BTreeMap::from([
                (
                    "scanner".to_string(),
                    Route {
                        group: format!("{}-scanner", self.name),
                        reads: vec![self.received.clone()],
                        writes: vec![self.scanned.clone()],
                    },
                ),
                (
                    "storage".to_string(),
                    Route {
                        group: format!("{}-storage", self.name),
                        reads: vec![
                            self.scanned.clone(),
                            self.accounts.clone(),
                            self.purge.clone(),
                            self.stored.clone(),
                        ],
                        writes: vec![
                            self.stored.clone(),
                            self.usage.clone(),
                            self.notify.clone(),
                            self.accounts.clone(),
                        ],
                    },
                ),
                (
                    "index".to_string(),
                    Route {
                        group: format!("{}-index", self.name),
                        reads: vec![self.stored.clone()],
                        writes: vec![self.accounts.clone()],
                    },
                ),
                self.route(
                    "lifecycle",
                    &[&self.accounts],
                    &[&self.accounts, &self.notify, &self.status],
                ),
                self.route(
                    "deleter",
                    &[&self.accounts],
                    &[&self.accounts, &self.alerts],
                ),
                self.route(
                    "directory",
                    &[&self.accounts],
                    &[&self.accounts, &self.alerts],
                ),
                self.route("notifier", &[&self.notify, &self.alerts], &[]),
                self.route(
                    "purger",
                    &[&self.stored, &self.purge],
                    &[&self.purge, &self.alerts],
                ),
            ]),
        }
    }

    fn route(&self, consumer: &str, reads: &[&String], writes: &[&String]) -> (String, Route) {
        let topics = |t: &[&String]| t.iter().map(|t| t.to_string()).collect();
        (
            consumer.to_string(),
            Route {
                group: format!("{}-{consumer}", self.name),
                reads: topics(reads),
                writes: topics(writes),
            },
        )
    }

    /// Write a config for this world (topology, topics, folders, ports)
    /// plus `extra` TOML lines; returns its path.
    pub fn write_config(
        &self,
        file: &str,
        metrics_port: u16,
        extra: &str,
    ) -> anyhow::Result<PathBuf> {
        let dir = |d: &str| self.dir.join(d).display().to_string();
        let rest = format!(
            "[blobs]\ndir = {blobs:?}\n\
             [lmtp]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"lmtp.test\"\ntopic = {received:?}\n\
             check_accounts = {check}\nstatus_topic = {status:?}\n\
             {extra}",
            blobs = dir("blobs"),
            port = self.lmtp_port,
            received = self.received,
            check = self.check_accounts,
            status = self.status,
        );
        ConfigFiles {
            dir: &self.dir,
            topology_file: "topology.toml",
            topology: &self.topology(),
            brokers: &self.kafka.brokers,
            data_dir: &self.dir.join("state"),
            deadletter: &self.deadletter,
            metrics_port,
        }
        .write(file, &rest)
    }

    /// The `[consumers.scanner]` table for this world's topics.
    pub fn scanner_table(&self, clamd: bool, local_domains: &[&str]) -> String {
        format!(
            "[consumers.scanner]\nuse_clamd = {clamd}\nlocal_domains = {local_domains:?}\n\
             scanned_topic = {:?}\naccounts_topic = {:?}\nalerts_topic = {:?}\n\
             [consumers.scanner.clamd]\naddress = {:?}\n",
            self.scanned,
            self.accounts,
            self.alerts,
            clamd_address()
        )
    }

    /// The `[consumers.storage]` table: this world's topics, `mail_root`,
    /// the mail owner (`uid:gid`) if any, and extra lines.
    pub fn storage_table(
        &self,
        mail_root: &Path,
        owner: Option<(u32, u32)>,
        extra: &str,
    ) -> String {
        let owner = owner.map_or(String::new(), |(u, g)| {
            format!("mail_uid = {u}\nmail_gid = {g}\n")
        });
        format!(
            "[consumers.storage]\nmail_root = {:?}\nquarantine_dir = {:?}\nhostname = \"test\"\n{owner}\
             stored_topic = {:?}\nusage_topic = {:?}\nnotify_topic = {:?}\naccounts_topic = {:?}\n{extra}\n",
            mail_root.display().to_string(),
            self.dir.join("quarantine").display().to_string(),
            self.stored,
            self.usage,
            self.notify,
            self.accounts,
        )
    }

    /// The `[clock]`, `[scheduler]` (ticks every second, this world's
    /// topics, `jobs` as `[scheduler.jobs.*]` tables) and
    /// `[consumers.purger]` tables.
    pub fn scheduler_tables(&self, jobs: &str) -> String {
        format!(
            "[clock]\ntopics = [{purge:?}]\n\
             [consumers.purger]\npurge_topic = {purge:?}\nalerts_topic = {alerts:?}\n\
             [scheduler]\ntick_every_s = 1\njobs_topic = {jobs_topic:?}\nlease_topic = {lease:?}\n\
             lease_group = \"{name}-lease\"\nlease_session_timeout_ms = 6000\npurge_topic = {purge:?}\n\
             {jobs}\n",
            purge = self.purge,
            alerts = self.alerts,
            jobs_topic = self.jobs,
            lease = self.lease,
            name = self.name,
        )
    }

    /// The blob store this world's processes use.
    pub fn blob_dir(&self) -> PathBuf {
        self.dir.join("blobs")
    }
}

/// clamd as `ops/clamav start` runs it (or `MAILFLEET_CLAMD`).
pub fn clamd_address() -> String {
    std::env::var("MAILFLEET_CLAMD").unwrap_or_else(|_| "127.0.0.1:3310".into())
}

/// Fail with a useful message unless clamd answers.
pub fn require_clamd() -> anyhow::Result<()> {
    let address = clamd_address();
    anyhow::ensure!(
        TcpStream::connect(&address).is_ok(),
        "clamd is not listening on {address}: run `ops/clamav start` (ops/test does)"
    );
    Ok(())
}

/// Decode every record as `E`.
pub fn decode_all<E: Event>(records: &[Consumed]) -> anyhow::Result<Vec<E>> {
    records
        .iter()
        .map(|(_, bytes)| Ok(Registry::builtin().decode::<E>(bytes)?))
        .collect()
}

/// The EICAR test string, built from two halves so that this source file
/// itself does not trip a scanner.
pub fn eicar() -> String {
    let head = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$";
    let tail = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    format!("{head}{tail}")
}

/// A plain blocking LMTP client that shows every reply line.
pub struct LmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LmtpClient {
    /// Connect and read the greeting.
    pub fn connect(port: u16) -> anyhow::Result<(LmtpClient, Vec<String>)> {
        LmtpClient::connect_to(&format!("127.0.0.1:{port}"))
    }

    /// Connect to `addr` (`host:port`) and read the greeting.
    pub fn connect_to(addr: &str) -> anyhow::Result<(LmtpClient, Vec<String>)> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut client = LmtpClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = client.reply()?;
        Ok((client, greeting))
    }

    /// Send raw bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes)?;
        Ok(())
    }

    /// Read one reply: its lines, through the one whose 4th byte is a space.
    pub fn reply(&mut self) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            anyhow::ensure!(
                self.reader.read_line(&mut line)? > 0,
                "connection closed; got {lines:?}"
            );
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Ok(lines);
            }
        }
    }

    /// Send one command line and read its reply's last line.
    pub fn command(&mut self, line: &str) -> anyhow::Result<String> {
        self.send(format!("{line}\r\n").as_bytes())?;
        Ok(self.reply()?.pop().unwrap_or_default())
    }

    /// A whole transaction: the per-recipient replies after DATA.
    pub fn deliver(
        &mut self,
        from: &str,
        to: &[&str],
        message: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut accepted = 0;
        anyhow::ensure!(self
            .command(&format!("MAIL FROM:<{from}>"))?
            .starts_with("250"));
        for rcpt in to {
            if self
                .command(&format!("RCPT TO:<{rcpt}>"))?
                .starts_with("250")
            {
                accepted += 1;
            }
        }
        let go = self.command("DATA")?;
        anyhow::ensure!(go.starts_with("354"), "DATA: {go}");
        self.send(&dot_stuff(message.as_bytes()))?;
        (0..accepted)
            .map(|_| Ok(self.reply()?.join("\n")))
            .collect()
    }
}

/// A small RFC 5322 message with a unique subject.
pub fn simple_message(subject: &str, body: &str) -> String {
    format!(
        "From: Alice <alice@example.net>\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
}

/// A message with one base64 attachment.
pub fn message_with_attachment(subject: &str, filename: &str, content: &[u8]) -> String {
    format!(
        "From: alice@example.net\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"{filename}\"\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        base64(content)
    )
}

/// Standard base64 with 76-column lines (no dependency for a test helper).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Dovecot as `ops/dovecot start` runs it: its mail root and mail owner.
pub fn dovecot() -> anyhow::Result<(PathBuf, (u32, u32))> {
    let dir = crate::repo_root().join("run/dovecot");
    let root = std::fs::read_to_string(dir.join("mail_root"))
        .context("Dovecot is not set up: run `ops/dovecot start` (ops/test does)")?;
    let owner = std::fs::read_to_string(dir.join("mail_owner"))?;
    let (uid, gid) = owner
        .trim()
        .split_once(':')
        .context("mail_owner is uid:gid")?;
    anyhow::ensure!(
        TcpStream::connect("127.0.0.1:1143").is_ok(),
        "Dovecot is not listening on 127.0.0.1:1143: run `ops/dovecot start` (ops/test does)"
    );
    Ok((PathBuf::from(root.trim()), (uid.parse()?, gid.parse()?)))
}

/// Create a Dovecot user with a random password (only its hash is
/// written); returns the password for this test's IMAP login.
pub fn dovecot_user(address: &str) -> anyhow::Result<String> {
    use std::process::{Command, Stdio};
    let password = format!("{:032x}", rand::random::<u128>());
    let mut pw = Command::new("doveadm")
        .args(["pw", "-s", "SHA512-CRYPT"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    pw.stdin
        .take()
        .context("doveadm stdin")?
        .write_all(format!("{password}\n{password}\n").as_bytes())?;
    let hash = String::from_utf8(pw.wait_with_output()?.stdout)?
        .trim()
        .to_string();
    let status = Command::new(crate::repo_root().join("ops/dovecot"))
        .args(["adduser", address, &hash])
        .status()?;
    anyhow::ensure!(status.success(), "ops/dovecot adduser {address} failed");
    Ok(password)
}

/// Fetch every message of `folder` over IMAP (Python's imaplib, the
/// client side of the end-to-end tests), raw, in UID order.
pub fn imap_fetch(address: &str, password: &str, folder: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let script = crate::repo_root().join("tests/python/imap_fetch.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args([address, folder])
        .env("IMAP_PASSWORD", password)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "imap_fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?
        .lines()
        .map(hex_decode)
        .collect()
}

fn hex_decode(hex: &str) -> anyhow::Result<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            Ok(u8::from_str_radix(
                hex.get(i..i + 2).context("odd hex")?,
                16,
            )?)
        })
        .collect()
}
