//! Helpers for the ingest tests: a private set of mail topics, a config
//! for `mailfleet lmtp` / `mailfleet run scanner`, and a plain LMTP client.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use anyhow::Context;
use mailfleet_events::{Event, Registry};
use mailfleet_runtime::{
    admin,
    config::KafkaConfig,
    topology::{Route, TopicSpec},
    Topology,
};

use crate::{free_port, scratch_dir, unique, Consumed};

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
    pub lmtp_port: u16,
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
            lmtp_port: free_port(),
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
        ];
        Topology {
            topics: topics
                .iter()
                .map(|t| (t.to_string(), TopicSpec::scratch(3)))
                .collect::<BTreeMap<_, _>>(),
            consumers: BTreeMap::from([(
                "scanner".to_string(),
                Route {
                    group: format!("{}-scanner", self.name),
                    reads: vec![self.received.clone()],
                    writes: vec![
                        self.scanned.clone(),
                        self.accounts.clone(),
                        self.alerts.clone(),
                    ],
                },
            )]),
        }
    }

    /// Write a config for this world (topology, topics, folders, ports)
    /// plus `extra` TOML lines; returns its path.
    pub fn write_config(
        &self,
        file: &str,
        metrics_port: u16,
        extra: &str,
    ) -> anyhow::Result<PathBuf> {
        let topo = self.dir.join("topology.toml");
        let mut text = String::new();
        for (name, t) in &self.topology().topics {
            text += &format!(
                "[topics.\"{name}\"]\npartitions = {}\nretention_ms = {}\ncleanup_policy = \"delete\"\n",
                t.partitions, t.retention_ms
            );
        }
        let route = &self.topology().consumers["scanner"];
        text += &format!(
            "[consumers.scanner]\ngroup = {:?}\nreads = {:?}\nwrites = {:?}\n",
            route.group, route.reads, route.writes
        );
        std::fs::write(&topo, text)?;
        let dir = |d: &str| self.dir.join(d).display().to_string();
        let config = format!(
            "[pipelines]\ntopology = {topo:?}\n\
             [kafka]\nbrokers = {brokers:?}\n\
             [runtime]\ndata_dir = {state:?}\ndeadletter_topic = {dead:?}\nbatch_max_wait_ms = 2\n\
             retry_initial_ms = 100\nretry_max_ms = 1000\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [blobs]\ndir = {blobs:?}\n\
             [lmtp]\nlisten = \"127.0.0.1:{port}\"\nhostname = \"lmtp.test\"\ntopic = {received:?}\n\
             {extra}\n",
            topo = topo.display().to_string(),
            brokers = self.kafka.brokers,
            state = dir("state"),
            dead = self.deadletter,
            blobs = dir("blobs"),
            port = self.lmtp_port,
            received = self.received,
        );
        let path = self.dir.join(file);
        std::fs::write(&path, config)?;
        Ok(path)
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
        let stream = TcpStream::connect(("127.0.0.1", port))?;
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
        self.send(&dot_stuff(message))?;
        (0..accepted)
            .map(|_| Ok(self.reply()?.join("\n")))
            .collect()
    }
}

/// A message as sent after DATA: CRLF lines, dots stuffed, the final dot.
pub fn dot_stuff(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b".\r\n");
    out
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
