//! A test's own copy of the whole topology: every topic and route of
//! `pipelines/topology.toml` under the test's prefix (`{name}.{topic}`, at
//! most 3 partitions each, groups `{name}-{consumer}`), and a config whose
//! every topic key names those copies. So `mailfleet run --all`, or any one
//! consumer, runs on its real routes without touching the shared topics.

use std::path::PathBuf;

use anyhow::Context;
use mailfleet_runtime::{
    admin,
    config::KafkaConfig,
    topology::{Route, TopicSpec},
    Topology,
};

use crate::{directory, free_port, kafka, repo_root, scratch_dir, unique, ConfigFiles};

/// The prefixed copy of the topology, its folder and the LMTP port.
pub struct FullWorld {
    pub name: String,
    pub dir: PathBuf,
    pub kafka: KafkaConfig,
    pub topology: Topology,
    /// Where `mailfleet lmtp` listens (`[lmtp] listen`).
    pub lmtp_port: u16,
}

impl FullWorld {
    /// Create every topic of the copy on the broker under test.
    pub async fn new(name: &str) -> anyhow::Result<FullWorld> {
        let name = unique(name);
        let real = Topology::load(Some(&repo_root().join("pipelines/topology.toml")))?;
        let rename = |ts: &[String]| ts.iter().map(|t| format!("{name}.{t}")).collect();
        let topology = Topology {
            topics: real
                .topics
                .iter()
                .map(|(t, spec)| {
                    (
                        format!("{name}.{t}"),
                        TopicSpec::scratch(spec.partitions.min(3)),
                    )
                })
                .collect(),
            consumers: real
                .consumers
                .iter()
                .map(|(c, r)| {
                    let route = Route {
                        group: format!("{name}-{c}"),
                        reads: rename(&r.reads),
                        writes: rename(&r.writes),
                    };
                    (c.clone(), route)
                })
                .collect(),
        };
        let kafka = kafka();
        admin::apply(&kafka, &topology)
            .await
            .context("creating the topology's topics")?;
        Ok(FullWorld {
            dir: scratch_dir(&name),
            name,
            kafka,
            topology,
            lmtp_port: free_port(),
        })
    }

    /// This world's copy of the real topic `real` (`accounts.events`).
    pub fn topic(&self, real: &str) -> String {
        format!("{}.{real}", self.name)
    }

    /// The topics `consumer` reads, in its route's order.
    pub fn reads(&self, consumer: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.topology.route(consumer)?.reads.clone())
    }

    /// The state folder of `consumer`.
    pub fn store(&self, consumer: &str) -> PathBuf {
        self.dir.join("state").join(consumer)
    }

    /// Where the storage writer keeps the Maildirs.
    pub fn mail_root(&self) -> PathBuf {
        self.dir.join("mail")
    }

    /// A random domain of this world, for its addresses.
    pub fn domain(&self) -> String {
        format!("{}.test", self.name)
    }

    /// Write the config (every section's topics, the blob store, slapd of
    /// `ops/ldap`, the test Postfix as the notifier's relay with `admins`)
    /// plus `extra` TOML tables; returns its path.
    pub fn write_config(
        &self,
        file: &str,
        metrics_port: u16,
        admins: &[&str],
        extra: &str,
    ) -> anyhow::Result<PathBuf> {
        let t = |real: &str| self.topic(real);
        let dir = |d: &str| self.dir.join(d).display().to_string();
        let list = |f: &str| {
            repo_root()
                .join("ops/greylist")
                .join(f)
                .display()
                .to_string()
        };
        let tables = format!(
            "[blobs]\ndir = {blobs:?}\n\
             [lmtp]\nlisten = \"127.0.0.1:{lmtp}\"\nhostname = \"lmtp.test\"\ntopic = {received:?}\n\
             check_accounts = false\nstatus_topic = {status:?}\n\
             [api]\nevents_topic = {events:?}\n\
             [submission]\ntopic = {submitted:?}\n\
             [ldap]\nurl = {ldap:?}\nbind_password_file = {password:?}\ntimeout_ms = 3000\n\
             [consumers.greylist]\nwhitelist_clients = [{wc:?}]\nwhitelist_recipients = [{wr:?}]\n\
             [consumers.scanner]\nuse_clamd = false\nscanned_topic = {scanned:?}\n\
             accounts_topic = {events:?}\nalerts_topic = {alerts:?}\n\
             [consumers.storage]\nmail_root = {mail:?}\nquarantine_dir = {quarantine:?}\n\
             hostname = \"test\"\nstored_topic = {stored:?}\nusage_topic = {usage:?}\n\
             notify_topic = {notify:?}\naccounts_topic = {events:?}\n\
             [consumers.lifecycle]\nevents_topic = {events:?}\nnotify_topic = {notify:?}\n\
             status_topic = {status:?}\n\
             [consumers.deleter]\nevents_topic = {events:?}\nalerts_topic = {alerts:?}\n\
             [consumers.directory]\nevents_topic = {events:?}\nalerts_topic = {alerts:?}\n\
             [consumers.purger]\npurge_topic = {purge:?}\nalerts_topic = {alerts:?}\n\
             [consumers.outbound]\ndecisions_topic = {decisions:?}\naccounts_topic = {events:?}\n\
             alerts_topic = {alerts:?}\n\
             [consumers.notifier]\nrelay_host = \"127.0.0.1\"\nrelay_port = 2525\n\
             source_address = \"127.0.0.2\"\ntimeout_s = 20\n\
             from = \"mailfleet <postmaster@example.test>\"\nadmins = {admins:?}\n\
             {extra}\n",
            blobs = dir("blobs"),
            lmtp = self.lmtp_port,
            received = t("mail.received"),
            status = t("accounts.status"),
            events = t("accounts.events"),
            submitted = t("mail.submitted"),
            ldap = directory::ldap_url(),
            password = directory::service_password_file().display().to_string(),
            wc = list("whitelist_clients"),
            wr = list("whitelist_recipients"),
            scanned = t("mail.scanned"),
            alerts = t("admin.alerts"),
            mail = self.mail_root().display().to_string(),
            quarantine = dir("quarantine"),
            stored = t("mail.stored"),
            usage = t("accounts.usage"),
            notify = t("notify.requests"),
            purge = t("mail.purge"),
            decisions = t("submission.decisions"),
        );
        ConfigFiles {
            dir: &self.dir,
            topology_file: "topology.toml",
            topology: &self.topology,
            brokers: &self.kafka.brokers,
            data_dir: &self.dir.join("state"),
            deadletter: &self.topic("deadletter"),
            metrics_port,
        }
        .write(file, &tables)
    }
}
