//! Helpers for the fault tests (F9): one world with the mail topics
//! ([`MailWorld`]) plus the greylist's attempts and decisions, a config per
//! process, each consumer in its own `mailfleet run <consumer>` process
//! (so that it can be killed alone), and the checks that compare a faulty
//! run with a clean one.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use mailfleet_events::{Envelope, Event, Registry};
use mailfleet_runtime::{
    admin,
    config::KafkaConfig,
    topology::{Route, TopicSpec},
    Topology,
};

use crate::{
    end_offsets, free_port,
    ingest::MailWorld,
    live_digests,
    outage::{self, Offsets},
    read_topic_from, replay_digests, repo_root, run_cli, spawn_with_env, wait_applied, ConfigFiles,
};

/// The consumers the fault tests run, each in its own process.
pub const CONSUMERS: [&str; 5] = ["greylist", "scanner", "storage", "index", "lifecycle"];

/// A [`MailWorld`] plus the greylist's topics.
pub struct FaultWorld {
    pub mail: MailWorld,
    pub attempts: String,
    pub decisions: String,
    pub mail_root: PathBuf,
}

impl FaultWorld {
    /// Create every topic (3 partitions each) on `kafka`.
    pub async fn new(name: &str, kafka: KafkaConfig) -> anyhow::Result<FaultWorld> {
        let mail = MailWorld::new(name, kafka).await?;
        let world = FaultWorld {
            attempts: format!("{}.attempts", mail.name),
            decisions: format!("{}.decisions", mail.name),
            mail_root: mail.dir.join("mail"),
            mail,
        };
        admin::apply(&world.mail.kafka, &world.grey_topology()).await?;
        Ok(world)
    }

    fn grey_topology(&self) -> Topology {
        Topology {
            topics: BTreeMap::from([
                (self.attempts.clone(), TopicSpec::scratch(3)),
                (self.decisions.clone(), TopicSpec::scratch(3)),
            ]),
            consumers: BTreeMap::from([(
                "greylist".to_string(),
                Route {
                    group: format!("{}-greylist", self.mail.name),
                    reads: vec![self.attempts.clone()],
                    writes: vec![self.decisions.clone()],
                },
            )]),
        }
    }

    /// The greylist's and the policy server's config (its own topology
    /// file), with `policy` as extra `[policy]` lines.
    pub fn grey_config(&self, file: &str, metrics: u16, policy: &str) -> anyhow::Result<PathBuf> {
        let lists = |f: &str| {
            repo_root()
                .join("ops/greylist")
                .join(f)
                .display()
                .to_string()
        };
        let rest = format!(
            "[consumers.greylist]\nwhitelist_clients = [{:?}]\nwhitelist_recipients = [{:?}]\n\
             [policy]\nattempts_topic = {:?}\ndecisions_topic = {:?}\n{policy}\n",
            lists("whitelist_clients"),
            lists("whitelist_recipients"),
            self.attempts,
            self.decisions,
        );
        let mut topology = self.grey_topology();
        // The dead letters go to the mail world's topic.
        topology
            .topics
            .insert(self.mail.deadletter.clone(), TopicSpec::scratch(3));
        ConfigFiles {
            dir: &self.mail.dir,
            topology_file: "grey-topology.toml",
            topology: &topology,
            brokers: &self.mail.kafka.brokers,
            data_dir: &self.mail.dir.join("state"),
            deadletter: &self.mail.deadletter,
            metrics_port: metrics,
        }
        .write(file, &rest)
    }

    /// The config of the mail and account consumers and `mailfleet lmtp`:
    /// the scanner with the attachment policy alone (no clamd), the
    /// storage writer, the indexer and the lifecycle.
    pub fn mail_config(&self, file: &str, metrics: u16) -> anyhow::Result<PathBuf> {
        let w = &self.mail;
        let tables = w.scanner_table(false, &[])
            + &w.storage_table(&self.mail_root, None, "")
            + &format!(
                "[consumers.lifecycle]\nevents_topic = {:?}\nnotify_topic = {:?}\nstatus_topic = {:?}\n",
                w.accounts, w.notify, w.status
            );
        w.write_config(file, metrics, &tables)
    }

    /// The config `consumer` runs with (a fresh metrics port each time).
    pub fn config_for(&self, consumer: &str) -> anyhow::Result<PathBuf> {
        let file = format!("{consumer}.toml");
        if consumer == "greylist" {
            self.grey_config(&file, free_port(), "")
        } else {
            self.mail_config(&file, free_port())
        }
    }

    /// The topics `consumer` reads.
    pub fn inputs(&self, consumer: &str) -> anyhow::Result<Vec<String>> {
        let file = if consumer == "greylist" {
            "grey-topology.toml"
        } else {
            "topology.toml"
        };
        let topology = Topology::load(Some(&self.mail.dir.join(file)))?;
        Ok(topology.route(consumer)?.reads.clone())
    }

    /// The state folder of `consumer`.
    pub fn store(&self, consumer: &str) -> PathBuf {
        self.mail.dir.join("state").join(consumer)
    }

    /// Every record of `topic`, as (key, value).
    pub fn records(&self, topic: &str) -> anyhow::Result<Vec<crate::Consumed>> {
        read_topic_from(&self.mail.kafka, topic, usize::MAX, Duration::from_secs(2))
    }

    /// Wait until every consumer has applied its inputs up to their ends,
    /// and no consumer wrote anything more meanwhile (the pipeline is idle).
    /// On the shared broker only (the helpers it uses read that one).
    pub async fn settle(&self, consumers: &[&str]) -> anyhow::Result<()> {
        let mut topics: Vec<String> = Vec::new();
        for c in consumers {
            topics.extend(self.inputs(c)?);
        }
        topics.sort();
        topics.dedup();
        for _ in 0..20 {
            let before = end_offsets(&topics)?;
            for c in consumers {
                wait_applied(&self.store(c), &self.inputs(c)?).await?;
            }
            if end_offsets(&topics)? == before {
                return Ok(());
            }
        }
        anyhow::bail!("the pipeline never became idle")
    }
}

/// One consumer's process, restarted after each kill.
pub struct Proc {
    pub consumer: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Child,
    pub store: PathBuf,
    pub kills: u32,
    /// Kills that came after the process had committed some input since
    /// its start (it was killed at work, not while starting).
    pub kills_at_work: u32,
    /// Inputs committed between a start and the kill that followed it.
    pub applied_between_kills: i64,
    applied_at_start: i64,
}

impl Proc {
    /// `mailfleet run <consumer>` with static group membership, so that a
    /// restarted process takes its partitions back at once.
    pub fn spawn(world: &FaultWorld, consumer: &str) -> anyhow::Result<Proc> {
        let config = world.config_for(consumer)?;
        let log = world.mail.dir.join(format!("{consumer}.log"));
        let child = Self::start(&config, consumer, &log)?;
        Ok(Proc {
            consumer: consumer.to_string(),
            config,
            log,
            child,
            store: world.store(consumer),
            kills: 0,
            kills_at_work: 0,
            applied_between_kills: 0,
            applied_at_start: 0,
        })
    }

    /// The input records its store has committed (all partitions).
    pub fn applied(&self) -> i64 {
        mailfleet_runtime::Store::open_read_only(&self.store)
            .map(|s| s.offsets().iter().map(|(_, _, o)| o).sum())
            .unwrap_or(0)
    }

    fn start(config: &Path, consumer: &str, log: &Path) -> anyhow::Result<Child> {
        spawn_with_env(
            config,
            &["run", consumer],
            &[("MAILFLEET_RUNTIME__INSTANCE_ID", "faults")],
            log,
        )
    }

    /// SIGKILL it and start it again. It must not have died by itself.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.child.try_wait()?.is_none(),
            "{} died by itself; see {}",
            self.consumer,
            self.log.display()
        );
        self.child.kill()?;
        self.child.wait()?;
        self.kills += 1;
        let applied = self.applied();
        if applied > self.applied_at_start {
            self.kills_at_work += 1;
            self.applied_between_kills += applied - self.applied_at_start;
        }
        self.applied_at_start = applied;
        self.child = Self::start(&self.config, &self.consumer, &self.log)?;
        Ok(())
    }

    /// SIGTERM: a graceful stop must exit 0.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        crate::terminate(&mut self.child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Outputs of one kind, deduplicated by event id.
#[derive(Debug, Default)]
pub struct Deduped {
    /// Distinct event ids.
    pub distinct: usize,
    /// Records dropped as copies of an id already seen (re-sent after a kill).
    pub copies: usize,
    /// Ids recorded with different contents.
    pub conflicting: Vec<String>,
    /// Transitions (by the caller's identity) recorded under more than one id.
    pub doubled: Vec<String>,
    /// The identities seen, with their one event.
    pub by_identity: HashMap<String, Envelope>,
}

/// Deduplicate the `E` records of `records` (others are skipped) by event
/// id, and group the distinct ones by `identity` (what makes a transition
/// the same transition, whatever its id).
pub fn dedup<E: Event>(
    records: &[crate::Consumed],
    identity: impl Fn(&E) -> String,
) -> anyhow::Result<Deduped> {
    let mut out = Deduped::default();
    let mut payloads: HashMap<String, &[u8]> = HashMap::new();
    for (_, bytes) in records {
        let Ok(event) = Registry::builtin().decode::<E>(bytes) else {
            continue;
        };
        let id = event.envelope().event_id.clone();
        if let Some(first) = payloads.get(&id) {
            out.copies += 1;
            if *first != bytes.as_slice() {
                out.conflicting.push(id);
            }
            continue;
        }
        payloads.insert(id.clone(), bytes);
        out.distinct += 1;
        let key = identity(&event);
        if let Some(other) = out.by_identity.get(&key) {
            out.doubled
                .push(format!("{key}: {} and {id}", other.event_id));
        } else {
            out.by_identity.insert(key, event.envelope().clone());
        }
    }
    Ok(out)
}

/// The figures of one consumer after a faulty run, against a clean run of
/// the same log (`mailfleet replay` for state, `mailfleet audit decisions`
/// for the decided outputs).
#[derive(Debug)]
pub struct CleanRunComparison {
    /// Partitions whose live state digest differs from the replay's.
    pub state_diffs: usize,
    /// Partitions compared (with state in either).
    pub partitions: usize,
    /// `audited=<n>` of the audit.
    pub audited: u64,
    /// `diffs=<n>` of the audit.
    pub audit_diffs: u64,
}

/// Replay `consumer` from the log into fresh state and compare digests
/// with its live store; audit its decided outputs.
pub fn compare_with_clean_run(
    config: &Path,
    consumer: &str,
    live_store: &Path,
    replay_dir: &Path,
) -> anyhow::Result<CleanRunComparison> {
    let out = run_cli(
        config,
        &[
            "replay",
            consumer,
            "--state-dir",
            &replay_dir.display().to_string(),
        ],
    )?;
    let replayed = replay_digests(&out);
    let live = live_digests(live_store)?;
    let mut partitions: Vec<&i32> = replayed.keys().chain(live.keys()).collect();
    partitions.sort();
    partitions.dedup();
    let state_diffs = partitions
        .iter()
        .filter(|p| replayed.get(p) != live.get(p))
        .count();
    let (audited, audit_diffs) = audit_decisions(config, consumer)?;
    Ok(CleanRunComparison {
        state_diffs,
        partitions: partitions.len(),
        audited,
        audit_diffs,
    })
}

/// `mailfleet audit decisions <consumer>`: `audited=` and `diffs=` of its
/// summary line (it exits 1 on a diff: the summary is read either way).
pub fn audit_decisions(config: &Path, consumer: &str) -> anyhow::Result<(u64, u64)> {
    let audit = std::process::Command::new(crate::mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(["audit", "decisions", consumer])
        .output()?;
    let text = String::from_utf8_lossy(&audit.stdout).into_owned();
    let last = text.lines().last().unwrap_or_default();
    let figure = |name: &str| -> Option<u64> {
        last.split(' ')
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
    };
    let (Some(audited), Some(diffs)) = (figure("audited="), figure("diffs=")) else {
        anyhow::bail!(
            "audit decisions {consumer}: no summary line ({}):\n{text}{}",
            audit.status,
            String::from_utf8_lossy(&audit.stderr)
        );
    };
    Ok((audited, diffs))
}

/// [`compare_with_clean_run`] for a consumer run by several processes
/// (`stores`: each member's state folder of `consumer`, the dead ones'
/// too): each partition's state is taken from the members whose store has
/// applied it to the end of every input (`inputs`, co-partitioned); two
/// such members that disagree count as a diff.
pub fn compare_fleet_with_clean_run(
    config: &Path,
    consumer: &str,
    fleet: (&KafkaConfig, &[String], &[PathBuf]),
    replay_dir: &Path,
) -> anyhow::Result<CleanRunComparison> {
    let (kafka, inputs, stores) = fleet;
    let out = run_cli(
        config,
        &[
            "replay",
            consumer,
            "--state-dir",
            &replay_dir.display().to_string(),
        ],
    )?;
    let replayed = replay_digests(&out);
    let ends = mailfleet_runtime::read::end_offsets(kafka, inputs)?;
    let mut live: BTreeMap<i32, String> = BTreeMap::new();
    let mut disagree = 0;
    for dir in stores.iter().filter(|d| d.exists()) {
        let applied = outage::applied(dir);
        for (p, digest) in live_digests(dir)? {
            let of_p: Offsets = ends
                .iter()
                .filter(|((_, q), _)| *q == p)
                .map(|(tp, end)| (tp.clone(), *end))
                .collect();
            if !outage::caught_up(&applied, &of_p) {
                continue;
            }
            if live.insert(p, digest.clone()).is_some_and(|d| d != digest) {
                disagree += 1;
            }
        }
    }
    let mut partitions: Vec<&i32> = replayed.keys().chain(live.keys()).collect();
    partitions.sort();
    partitions.dedup();
    let state_diffs = disagree
        + partitions
            .iter()
            .filter(|p| replayed.get(p) != live.get(p))
            .count();
    let (audited, audit_diffs) = audit_decisions(config, consumer)?;
    Ok(CleanRunComparison {
        state_diffs,
        partitions: partitions.len(),
        audited,
        audit_diffs,
    })
}

/// Whether, for every partition in `ends`, some store of `stores` (the
/// members of one consumer's group, dead or alive) has applied it up to
/// its end: the group's lag is zero against `ends`.
pub fn fleet_caught_up(stores: &[PathBuf], ends: &Offsets) -> bool {
    let mut best = Offsets::new();
    for dir in stores {
        for (tp, o) in outage::applied(dir) {
            let e = best.entry(tp).or_default();
            *e = (*e).max(o);
        }
    }
    outage::caught_up(&best, ends)
}

/// The message files of every Maildir folder under `root`, recursively.
pub fn maildir_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == "new" || d == "cur")
            {
                out.push(path);
            }
        }
    }
    out
}

/// How many files under `root` carry each Message-ID.
pub fn message_ids_on_disk(root: &Path) -> anyhow::Result<HashMap<String, usize>> {
    let mut out = HashMap::new();
    for file in maildir_files(root) {
        let text = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .map(str::to_string)
            .unwrap_or_else(|| format!("(none in {})", file.display()));
        *out.entry(id).or_insert(0) += 1;
    }
    Ok(out)
}
