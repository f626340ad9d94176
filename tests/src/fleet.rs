//! A mail fleet for one test: [`MailWorld`]'s topics, `mailfleet lmtp`, and
//! one `mailfleet run` process with the consumers the test needs.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use mailfleet_events::{Event, Registry};
use mailfleet_runtime::producer::EventProducer;

use crate::{
    free_port,
    ingest::{dot_stuff, require_clamd, simple_message, LmtpClient, MailWorld},
    kafka, read_topic, spawn_mailfleet, wait_listening, Children,
};

/// What to run.
pub struct FleetOptions<'a> {
    /// Scan with the real clamd (else the attachment policy alone).
    pub clamd: bool,
    /// `lmtp.check_accounts`: refuse recipients that are not open accounts.
    pub check_accounts: bool,
    /// The consumers of the `mailfleet run` process.
    pub consumers: &'a [&'a str],
    /// Extra `[consumers.storage]` lines.
    pub storage_extra: &'a str,
    /// More config tables (`[consumers.lifecycle]`, `[ldap]`, ...).
    pub tables: String,
    /// Tables that name the world's topics, e.g.
    /// [`MailWorld::scheduler_tables`].
    pub world_tables: fn(&MailWorld) -> String,
}

impl Default for FleetOptions<'_> {
    fn default() -> Self {
        Self {
            clamd: true,
            check_accounts: false,
            consumers: &["scanner", "storage", "index"],
            storage_extra: "",
            tables: String::new(),
            world_tables: |_| String::new(),
        }
    }
}

/// The running fleet.
pub struct Fleet {
    pub world: MailWorld,
    pub mail_root: PathBuf,
    pub config: PathBuf,
    /// The consumer tables of the config, for more processes.
    pub tables: String,
    /// Where the consumers' process serves metrics.
    pub metrics: u16,
    pub children: Children,
}

impl Fleet {
    /// `mailfleet lmtp` and `mailfleet run scanner storage index` (clamd
    /// scanning), with extra `[consumers.storage]` lines.
    pub async fn start(name: &str, storage_extra: &str) -> anyhow::Result<Fleet> {
        Self::launch(
            name,
            FleetOptions {
                storage_extra,
                ..FleetOptions::default()
            },
        )
        .await
    }

    /// The fleet `options` describe.
    pub async fn launch(name: &str, options: FleetOptions<'_>) -> anyhow::Result<Fleet> {
        if options.clamd {
            require_clamd()?;
        }
        let mut world = MailWorld::new(name, kafka()).await?;
        world.check_accounts = options.check_accounts;
        let mail_root = world.dir.join("mail");
        let tables = world.scanner_table(options.clamd, &[])
            + &world.storage_table(&mail_root, None, options.storage_extra)
            + &options.tables
            + &(options.world_tables)(&world);
        let metrics = free_port();
        let config = world.write_config("fleet.toml", metrics, &tables)?;
        let lmtp_cfg = world.write_config("lmtp.toml", free_port(), &tables)?;
        let log = world.dir.join("children.log");
        let mut run = vec!["run"];
        run.extend(options.consumers);
        let children = Children(vec![
            spawn_mailfleet(&lmtp_cfg, &["lmtp"], &log)?,
            spawn_mailfleet(&config, &run, &log)?,
        ]);
        let port = world.lmtp_port;
        wait_listening("the LMTP server", port).await?;
        Ok(Fleet {
            world,
            mail_root,
            config,
            tables,
            metrics,
            children,
        })
    }

    /// Every event of type `E` on `topic` (others are skipped).
    pub fn events<E: Event>(&self, topic: &str) -> anyhow::Result<Vec<E>> {
        let records = read_topic(topic, usize::MAX, Duration::from_secs(1))?;
        Ok(records
            .iter()
            .filter_map(|(_, b)| Registry::builtin().decode::<E>(b).ok())
            .collect())
    }

    /// Wait (up to 30 s) until `topic` holds at least `n` events of type
    /// `E` that `keep` keeps.
    pub async fn wait_for_where<E: Event>(
        &self,
        topic: &str,
        n: usize,
        keep: impl Fn(&E) -> bool,
    ) -> anyhow::Result<Vec<E>> {
        for _ in 0..60 {
            let found: Vec<E> = self.events::<E>(topic)?.into_iter().filter(&keep).collect();
            if found.len() >= n {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("fewer than {n} {} on {topic}", E::NAME)
    }

    /// Wait until `topic` holds at least `n` events of type `E`.
    pub async fn wait_for<E: Event>(&self, topic: &str, n: usize) -> anyhow::Result<Vec<E>> {
        self.wait_for_where(topic, n, |_| true).await
    }

    /// Produce one event keyed by `key`.
    pub async fn produce<E: Event>(&self, topic: &str, key: &str, event: &E) -> anyhow::Result<()> {
        let producer = EventProducer::new(&kafka(), "fleet-test")?;
        producer.send(topic, key.as_bytes(), event).await?;
        Ok(())
    }

    /// Stop every process.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.children.terminate()
    }
}

/// The message files (in new/ and cur/) of one folder.
pub fn files(mailbox: &Path, folder: &str) -> Vec<PathBuf> {
    let dir = if folder == "INBOX" {
        mailbox.to_path_buf()
    } else {
        mailbox.join(format!(".{folder}"))
    };
    ["new", "cur"]
        .iter()
        .flat_map(|sub| {
            std::fs::read_dir(dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .collect()
}

/// Deliver one simple message to `to` over LMTP; the RCPT reply if it was
/// refused, else the reply after DATA.
pub fn deliver(port: u16, to: &str, subject: &str, body: &str) -> anyhow::Result<String> {
    deliver_from(port, "alice@example.net", to, subject, body)
}

/// [`deliver`] with another envelope sender (`""`: the null sender).
pub fn deliver_from(
    port: u16,
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
) -> anyhow::Result<String> {
    deliver_at(&format!("127.0.0.1:{port}"), from, to, subject, body)
}

/// [`deliver_from`] to the LMTP server at `addr` (`host:port`).
pub fn deliver_at(
    addr: &str,
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
) -> anyhow::Result<String> {
    let (mut c, _) = LmtpClient::connect_to(addr)?;
    c.command("LHLO test")?;
    let rcpt = c
        .command(&format!("MAIL FROM:<{from}>"))
        .and_then(|_| c.command(&format!("RCPT TO:<{to}>")))?;
    if !rcpt.starts_with("250") {
        c.command("RSET")?;
        return Ok(rcpt);
    }
    anyhow::ensure!(c.command("DATA")?.starts_with("354"));
    c.send(&dot_stuff(simple_message(subject, body).as_bytes()))?;
    Ok(c.reply()?.join("\n"))
}
