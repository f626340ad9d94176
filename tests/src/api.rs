//! Helpers for the account API tests: a private accounts topic, a
//! `mailfleet api` child on a free port with its log in the test's folder,
//! the API client, the `mailfleet account` CLI with the password on stdin,
//! and the events on the topic decoded by type. Passwords are generated at
//! run time and never reach a command line.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::Context;
use mailfleet_api::ApiClient;
use mailfleet_events::{Event, Registry};
use mailfleet_runtime::{admin, topology::TopicSpec, Topology};

use crate::{
    free_port, kafka, mailfleet_bin, read_topic, scratch_dir, spawn_mailfleet, unique, wait_until,
};

/// How long the API may take to catch up with its topic.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One test's API world: its topic, port, config, log and domain.
pub struct ApiWorld {
    pub name: String,
    pub dir: PathBuf,
    pub topic: String,
    pub port: u16,
    pub config: PathBuf,
    /// The API's stdout and stderr, across restarts.
    pub log: PathBuf,
    /// A random domain: this test's addresses.
    pub domain: String,
}

impl ApiWorld {
    /// Create the topic (3 partitions) and the config, with `api_extra`
    /// (TOML keys) added to its `[api]` table.
    pub async fn new(name: &str, api_extra: &str) -> anyhow::Result<ApiWorld> {
        let name = unique(name);
        let dir = scratch_dir(&name);
        let topic = format!("{name}.accounts");
        let topology = Topology {
            topics: BTreeMap::from([(topic.clone(), TopicSpec::scratch(3))]),
            consumers: BTreeMap::new(),
        };
        admin::apply(&kafka(), &topology)
            .await
            .context("creating the accounts topic")?;
        let port = free_port();
        let config = dir.join("mailfleet.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = {brokers:?}\n\
                 [runtime]\ndata_dir = {state:?}\n\
                 [metrics]\nlisten = \"\"\n\
                 [api]\nlisten = \"127.0.0.1:{port}\"\nevents_topic = {topic:?}\n{api_extra}\n",
                brokers = kafka().brokers,
                state = dir.join("state").display().to_string(),
            ),
        )?;
        Ok(ApiWorld {
            log: dir.join("api.log"),
            domain: format!("{name}.test"),
            name,
            dir,
            topic,
            port,
            config,
        })
    }

    /// `local@<this test's domain>`.
    pub fn address(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }

    /// Start `mailfleet api`; its log goes to [`Self::log`].
    pub fn spawn(&self) -> anyhow::Result<Child> {
        spawn_mailfleet(&self.config, &["api"], &self.log)
    }

    /// A client of this world's API.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(
            &format!("http://127.0.0.1:{}", self.port),
            None,
        )?)
    }

    /// Wait until the API answers `/ready` with 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = self.client()?;
        let started = std::time::Instant::now();
        loop {
            if client.ready().await.is_ok_and(|r| r.ready) {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < READY_WITHIN,
                "the API on port {} was not ready within {READY_WITHIN:?}; its log:\n{}",
                self.port,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `mailfleet --config <config> account <args>` with `stdin` piped in.
    pub fn cli(&self, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
        let mut child = Command::new(mailfleet_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("account")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning mailfleet account")?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Every event on the topic whose type is `E`, in no particular order
    /// across partitions; waits until at least `want` are there.
    pub async fn events<E: Event>(&self, want: usize) -> anyhow::Result<Vec<E>> {
        let mut found = Vec::new();
        let what = format!("{want} {} on {}", E::NAME, self.topic);
        wait_until(&what, Duration::from_secs(30), || {
            found = self.read::<E>().unwrap_or_default();
            found.len() >= want
        })
        .await?;
        Ok(found)
    }

    fn read<E: Event>(&self) -> anyhow::Result<Vec<E>> {
        let registry = Registry::builtin();
        let records = read_topic(&self.topic, usize::MAX, Duration::from_secs(2))?;
        let mut out = Vec::new();
        for (_, bytes) in records {
            if registry.writer_of(&bytes)?.name == E::NAME {
                out.push(registry.decode(&bytes)?);
            }
        }
        Ok(out)
    }

    /// The API's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A password that passes the policy, made at run time.
pub fn strong_password() -> String {
    format!("Api{:016x}7q", rand::random::<u64>())
}

/// The CLI's output as text, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
