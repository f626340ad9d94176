//! Helpers for the fault tests (`tests/tests/faults_*.rs`): private
//! instances of the real servers that a test may stop and start, and a
//! watch on a consumer through an outage.
//!
//! A private instance is the `ops/` script with its own run folder and
//! port (`MAILFLEET_RUN_DIR`, `MAILFLEET_<SERVICE>_PORT`), so stopping it
//! disturbs no other test: the shared instances on the default ports are
//! never touched. Dropping one resets it (stopped, data deleted), also
//! when the test fails.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use mailfleet_runtime::{admin, config::KafkaConfig, read::end_offsets, Store};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Offset, TopicPartitionList,
};

use crate::{free_port, repo_root, scrape, scratch_dir, wait_until, Children};

/// Offsets per (topic, partition).
pub type Offsets = BTreeMap<(String, i32), i64>;

/// A private instance of a real server run by `ops/<script>`.
pub struct Private {
    script: &'static str,
    /// Its run folder (`MAILFLEET_RUN_DIR`).
    pub run_dir: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    env: Vec<(&'static str, String)>,
}

impl Private {
    fn new(script: &'static str, test: &str, env: &[&'static str]) -> Private {
        let port = free_port();
        let mut vars = vec![(env[0], port.to_string())];
        vars.extend(env[1..].iter().map(|v| (*v, free_port().to_string())));
        Private {
            script,
            run_dir: scratch_dir(&format!("{test}-{script}")),
            port,
            env: vars,
        }
    }

    /// A single-node Kafka broker (`ops/kafka`).
    pub fn kafka(test: &str) -> Private {
        Private::new(
            "kafka",
            test,
            &[
                "MAILFLEET_KAFKA_PORT",
                "MAILFLEET_KAFKA_CONTROLLER_PORT",
                "MAILFLEET_KAFKA_SASL_SSL_PORT",
                "MAILFLEET_KAFKA_SSL_PORT",
            ],
        )
    }

    /// slapd with the accounts tree (`ops/ldap`), on its own ldap:// and
    /// ldaps:// ports.
    pub fn slapd(test: &str) -> Private {
        Private::new(
            "ldap",
            test,
            &["MAILFLEET_LDAP_PORT", "MAILFLEET_LDAP_TLS_PORT"],
        )
    }

    /// Postfix (`ops/postfix`): the inbound smtpd on `port`, submission on
    /// `MAILFLEET_SUBMISSION_PORT`.
    pub fn postfix(test: &str) -> Private {
        Private::new(
            "postfix",
            test,
            &["MAILFLEET_POSTFIX_PORT", "MAILFLEET_SUBMISSION_PORT"],
        )
    }

    /// clamd with the test signatures (`ops/clamav`).
    pub fn clamd(test: &str) -> Private {
        Private::new("clamav", test, &["MAILFLEET_CLAMAV_PORT"])
    }

    /// SeaweedFS's S3 server (`ops/s3`): `port` is the S3 port; its
    /// master, volume server and filer get ports of their own too.
    pub fn s3(test: &str) -> Private {
        Private::new(
            "s3",
            test,
            &[
                "MAILFLEET_S3_PORT",
                "MAILFLEET_S3_MASTER_PORT",
                "MAILFLEET_S3_VOLUME_PORT",
                "MAILFLEET_S3_FILER_PORT",
                "MAILFLEET_S3_GRPC_PORT",
                "MAILFLEET_S3_MASTER_GRPC_PORT",
                "MAILFLEET_S3_VOLUME_GRPC_PORT",
                "MAILFLEET_S3_FILER_GRPC_PORT",
            ],
        )
    }

    /// Also give the script `key` = `value` (e.g.
    /// `MAILFLEET_KAFKA_EXTRA_PROPERTIES`).
    pub fn with_env(mut self, key: &'static str, value: String) -> Private {
        self.env.push((key, value));
        self
    }

    /// The port the script was given in `var` (e.g.
    /// `MAILFLEET_KAFKA_CONTROLLER_PORT`).
    pub fn port_of(&self, var: &str) -> Option<u16> {
        self.env
            .iter()
            .find(|(k, _)| *k == var)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// `ops/<script>` with this instance's folder and ports, to add
    /// arguments to.
    pub fn command(&self) -> Command {
        let mut command = Command::new(repo_root().join("ops").join(self.script));
        command
            .env("MAILFLEET_RUN_DIR", &self.run_dir)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    }

    fn ops(&self, action: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let out = self.command().arg(action).output()?;
        anyhow::ensure!(
            out.status.success(),
            "ops/{} {action} (port {}): {}\n{}",
            self.script,
            self.port,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(started.elapsed())
    }

    /// Start it (and wait until it answers); how long that took.
    pub fn start(&self) -> anyhow::Result<Duration> {
        self.ops("start")
    }

    /// Stop it; how long that took.
    pub fn stop(&self) -> anyhow::Result<Duration> {
        self.ops("stop")
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's client settings (for [`Private::kafka`]).
    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.address(),
            ..KafkaConfig::default()
        }
    }

    /// `ldap://127.0.0.1:<port>` (for [`Private::slapd`]).
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", self.address())
    }

    /// `ldaps://127.0.0.1:<its TLS port>` (for [`Private::slapd`]).
    pub fn ldaps_url(&self) -> Option<String> {
        let port = self.port_of("MAILFLEET_LDAP_TLS_PORT")?;
        Some(format!("ldaps://127.0.0.1:{port}"))
    }

    /// The service DN's password file (for [`Private::slapd`]).
    pub fn ldap_password_file(&self) -> PathBuf {
        self.run_dir.join("ldap/secrets/mailfleet.password")
    }

    /// How many entries the subtree at `base` has (0 when it does not
    /// exist), searched as the service DN (for [`Private::slapd`]).
    pub fn ldap_count(&self, base: &str) -> anyhow::Result<usize> {
        let out = Command::new("ldapsearch")
            .args(["-x", "-LLL", "-o", "nettimeout=5", "-H", &self.ldap_url()])
            .args(["-D", crate::directory::SERVICE_DN, "-y"])
            .arg(self.ldap_password_file())
            .args(["-b", base, "-s", "sub", "(objectClass=*)", "1.1"])
            .env("LDAPNOINIT", "1")
            .output()?;
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("dn: "))
                .count()),
            Some(32) => Ok(0), // noSuchObject
            code => anyhow::bail!(
                "ldapsearch {base} on {}: exit {code:?}: {}",
                self.ldap_url(),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Err(e) = self.ops("reset") {
            eprintln!("resetting the private {}: {e}", self.script);
        }
    }
}

/// The offsets a consumer store has applied (empty before its first
/// commit). Read-only: the consumer may be running.
pub fn applied(store_dir: &Path) -> Offsets {
    Store::open_read_only(store_dir)
        .map(|s| offsets(&s))
        .unwrap_or_default()
}

/// The offsets `store` has applied.
pub fn offsets(store: &Store) -> Offsets {
    store
        .offsets()
        .into_iter()
        .map(|(t, p, o)| ((t, p), o))
        .collect()
}

/// The offsets `group` committed to Kafka (its lag telemetry), for every
/// partition of `partitions`; a partition with none counts as 0. Reads them
/// without joining the group.
pub fn committed(
    kafka: &KafkaConfig,
    group: &str,
    partitions: &Offsets,
) -> anyhow::Result<Offsets> {
    let c: BaseConsumer = admin::client_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions.keys() {
        tpl.add_partition(t, *p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            ((e.topic().to_string(), e.partition()), o)
        })
        .collect())
}

/// Whether every partition in `ends` is applied up to its end.
pub fn caught_up(applied: &Offsets, ends: &Offsets) -> bool {
    ends.iter()
        .all(|(tp, end)| *end == 0 || applied.get(tp).is_some_and(|o| o >= end))
}

/// Wait until the store has applied `topics` up to their ends as they are
/// now; how long that took.
pub async fn wait_caught_up(
    kafka: &KafkaConfig,
    store_dir: &Path,
    topics: &[String],
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let target = end_offsets(kafka, topics)?;
    wait_until(
        &format!("{} to apply {target:?}", store_dir.display()),
        limit,
        || caught_up(&applied(store_dir), &target),
    )
    .await?;
    Ok(started.elapsed())
}

/// One look at a consumer during an outage.
pub struct Sample {
    /// Since the watch began.
    pub at: Duration,
    /// The offsets its store had applied.
    pub applied: Offsets,
    /// Its Prometheus text (empty when it did not answer).
    pub metrics: String,
}

/// Samples of a consumer's store and metrics over time.
pub struct Watch {
    store: PathBuf,
    metrics_port: u16,
    started: Instant,
    pub samples: Vec<Sample>,
}

impl Watch {
    pub fn new(store: &Path, metrics_port: u16) -> Watch {
        Watch {
            store: store.to_path_buf(),
            metrics_port,
            started: Instant::now(),
            samples: Vec::new(),
        }
    }

    /// Take a sample now.
    pub fn sample(&mut self) -> &Sample {
        self.samples.push(Sample {
            at: self.started.elapsed(),
            applied: applied(&self.store),
            metrics: scrape(self.metrics_port).unwrap_or_default(),
        });
        self.samples.last().expect("just pushed")
    }

    /// A metric's value (the sum of the matching samples) in each sample.
    pub fn series(&self, name: &str, labels: &[&str]) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| crate::metric_sum(&s.metrics, name, labels))
            .collect()
    }

    /// The increase of a metric from the first sample to the last, and
    /// its last value.
    pub fn growth(&self, name: &str, labels: &[&str]) -> (f64, f64) {
        let series = self.series(name, labels);
        let first = series.first().copied().unwrap_or(0.0);
        let last = series.last().copied().unwrap_or(0.0);
        (last - first, last)
    }

    /// When each sample was taken, whole seconds into the watch.
    pub fn times(&self) -> Vec<u64> {
        self.samples.iter().map(|s| s.at.as_secs()).collect()
    }

    /// Fail unless no sample has the store past `held` (the offsets at the
    /// outage's start, i.e. the first input that had to fail on each
    /// partition), naming the first sample that was.
    pub fn assert_held(&self, held: &Offsets) -> anyhow::Result<()> {
        for s in &self.samples {
            for (tp, o) in &s.applied {
                let limit = held.get(tp).copied().unwrap_or(0);
                anyhow::ensure!(
                    *o <= limit,
                    "{}/{} applied up to {o} at {:?} into the watch: past the first failed \
                     input at {limit}",
                    tp.0,
                    tp.1,
                    s.at
                );
            }
        }
        Ok(())
    }
}

/// The `consumer` label of the runtime metrics, as scraped.
pub fn consumer_label(name: &str) -> String {
    format!("consumer=\"{name}\"")
}

/// Fail unless every child is still running.
pub fn alive(children: &mut Children, what: &str) -> anyhow::Result<()> {
    for child in &mut children.0 {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} exited during the outage: {status}");
        }
    }
    Ok(())
}

/// The sum of all partitions' offsets.
pub fn total(offsets: &Offsets) -> i64 {
    offsets.values().sum()
}

/// Every record of `topic` from the beginning with its timestamp (the
/// broker's append time on mailfleet topics), until nothing new came for
/// `idle`.
pub fn read_timed(
    kafka: &KafkaConfig,
    topic: &str,
    idle: Duration,
) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
    Ok(crate::read_as_written(kafka, topic, usize::MAX, idle)?
        .into_iter()
        .map(|r| (r.timestamp.unwrap_or(-1), r.payload))
        .collect())
}

/// One line of figures for the test's output (`--nocapture` shows it).
pub fn report(what: &str, figures: &[(&str, String)]) {
    let text: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("FAULT {what}: {}", text.join(" "));
}
