//! The demo's fleet: the service's long-running processes, started as an
//! operator would start them, and the demo's way of knowing when they have
//! caught up with the traffic it sent.
//!
//! - `mailfleet run --all`: every consumer of the service in one process,
//!   its `/metrics` on its own port;
//! - `mailfleet lmtp`: the LMTP server Postfix delivers to (the notifier's
//!   notices come back through it into the mailboxes), `/metrics` on the
//!   next port;
//! - `mailfleet api`: the account API on `[api] listen`, `/metrics` on the
//!   port after; restarted in compressed time for the accounts' season
//!   ([`Fleet::compress_api`]);
//! - `mailfleet policy`: the policy server Postfix asks at RCPT (`[policy]
//!   listen`), in compressed time ([`Fleet::policy_clock`]), `/metrics` on
//!   the port after the api's;
//! - `mailfleet scheduler`, in compressed time up to a given instant
//!   ([`Fleet::run_scheduler`]): the clock and the jobs, one leg at a time,
//!   `/metrics` on the port after the policy server's.
//!
//! The consumers commit their offsets to their Kafka groups (for lag
//! telemetry). A set of consumers has settled when every group's committed
//! offset has reached the end of each of its input partitions, and those
//! ends did not move between two looks (a consumer's outputs are another's
//! inputs: a saga settles only when its last step has).

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{admin, read::end_offsets, time::Clock, Topology};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Offset, TopicPartitionList,
};

/// One process of the fleet.
struct Process {
    what: String,
    child: Child,
    metrics: String,
}

/// The fleet's processes, stopped (SIGTERM) when dropped.
pub struct Fleet {
    processes: Vec<Process>,
    log: PathBuf,
    groups: HashMap<String, BaseConsumer>,
    cfg: Config,
    topology: Topology,
    exe: PathBuf,
    config_path: Option<PathBuf>,
    metrics_port: u16,
    policy_clock: Clock,
}

/// Which process of the fleet, by its place in [`Fleet::processes`].
const CONSUMERS: usize = 0;
const API: usize = 2;

impl Fleet {
    /// Start `mailfleet run --all`, `mailfleet lmtp` and `mailfleet api`
    /// with this process's config (file and environment), logging to
    /// `log`, their `/metrics` on `metrics_port` and the ports after it,
    /// and `mailfleet policy` on `policy_clock`.
    pub fn start(
        cfg: &Config,
        topology: &Topology,
        config_path: Option<&Path>,
        (log, metrics_port): (&Path, u16),
        policy_clock: Clock,
    ) -> anyhow::Result<Fleet> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let exe = std::env::current_exe().context("finding the mailfleet binary")?;
        let mut fleet = Fleet {
            processes: Vec::new(),
            log: log.to_path_buf(),
            groups: HashMap::new(),
            cfg: cfg.clone(),
            topology: topology.clone(),
            exe,
            config_path: config_path.map(Path::to_path_buf),
            metrics_port,
            policy_clock,
        };
        let policy = [&["policy".to_string()][..], &time_args(policy_clock)].concat();
        // A loaded demo machine may take more than the default 2 s to
        // decide; the demo counts the greylist's answers, not fail-open ones.
        let patient = [(
            "MAILFLEET_POLICY__TIMEOUT_MS".to_string(),
            "10000".to_string(),
        )];
        for (args, port, env) in [
            (
                vec!["run".to_string(), "--all".into()],
                metrics_port,
                &[][..],
            ),
            (vec!["lmtp".to_string()], metrics_port + 1, &[]),
            (vec!["api".to_string()], metrics_port + 2, &[]),
            (policy, metrics_port + 3, &patient),
        ] {
            let process = fleet.spawn(&args, port, env)?;
            fleet.processes.push(process);
        }
        Ok(fleet)
    }

    /// Start `mailfleet <args>` with the demo's config, `/metrics` on `port`
    /// and `env` on top, logging to the fleet's log.
    fn spawn(
        &self,
        args: &[String],
        port: u16,
        env: &[(String, String)],
    ) -> anyhow::Result<Process> {
        let out = File::options().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.exe);
        if let Some(path) = &self.config_path {
            cmd.arg("--config").arg(path);
        }
        let metrics = format!("127.0.0.1:{port}");
        let child = cmd
            .args(args)
            .env("MAILFLEET_METRICS__LISTEN", &metrics)
            .env("MAILFLEET_LOG__FORMAT", "text")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting mailfleet {}", args.join(" ")))?;
        Ok(Process {
            what: format!("mailfleet {}", args.join(" ")),
            child,
            metrics,
        })
    }

    /// Restart `mailfleet api` on `clock` (`--time-scale`, `--time-origin`):
    /// its events are stamped in the season's compressed time.
    pub fn compress_api(&mut self, clock: Clock) -> anyhow::Result<()> {
        let mut old = self.processes.remove(API);
        stop_one(&mut old)?;
        let args = [&["api".to_string()][..], &time_args(clock)].concat();
        let process = self.spawn(&args, self.metrics_port + 2, &[])?;
        self.processes.insert(API, process);
        Ok(())
    }

    /// Run `mailfleet scheduler` on `clock` until it has emitted every tick
    /// and job run up to `until` and exited; `env` configures it on top.
    pub async fn run_scheduler(
        &mut self,
        clock: Clock,
        until: i64,
        env: &[(String, String)],
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let args = [
            &["scheduler".to_string()][..],
            &time_args(clock),
            &["--until".to_string(), until.to_string()],
        ]
        .concat();
        let mut leg = self.spawn(&args, self.metrics_port + 4, env)?;
        loop {
            if let Some(status) = leg.child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "mailfleet scheduler exited ({status}); the last lines of {}:\n{}",
                    self.log.display(),
                    tail(&self.log, 15)
                );
                return Ok(started.elapsed());
            }
            if let Err(e) = self.check_alive() {
                let _ = stop_one(&mut leg);
                return Err(e);
            }
            if started.elapsed() > Duration::from_secs(300) {
                let _ = stop_one(&mut leg);
                anyhow::bail!("mailfleet scheduler did not reach --until {until} in 300 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What runs, one line each, with its pid and `/metrics`.
    pub fn describe(&self) -> Vec<String> {
        self.processes
            .iter()
            .map(|p| {
                format!(
                    "{:<22} pid {:<7} http://{}/metrics",
                    p.what,
                    p.child.id(),
                    p.metrics
                )
            })
            .collect()
    }

    /// Wait until something listens on each of `addrs` (the fleet's LMTP,
    /// policy and API ports); fail at once, with the log's tail, if a
    /// process of the fleet exits meanwhile (a port taken, a bad config).
    pub async fn wait_listening(&mut self, addrs: &[&str]) -> anyhow::Result<()> {
        let started = Instant::now();
        for addr in addrs {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                self.check_alive()?;
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(120),
                    "nothing listens on {addr} after 120 s (the fleet's log: {})",
                    self.log.display()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// The clock of `mailfleet policy`.
    pub fn policy_clock(&self) -> Clock {
        self.policy_clock
    }

    /// The `/metrics` address of `mailfleet run --all`.
    pub fn consumers_metrics(&self) -> &str {
        &self.processes[CONSUMERS].metrics
    }

    /// Wait until `names` have caught up with their inputs (see the module
    /// doc), or fail after `timeout` naming who lags, or at once if a
    /// process of the fleet has exited.
    pub async fn settle(&mut self, names: &[&str], timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last: Option<BTreeMap<(String, i32), i64>> = None;
        loop {
            self.check_alive()?;
            let mut behind = Vec::new();
            let mut all_ends = BTreeMap::new();
            for name in names {
                let route = self.topology.route(name)?.clone();
                let ends = end_offsets(&self.cfg.kafka, &route.reads)?;
                let committed = self.committed(&route.group, &ends)?;
                for (tp, end) in &ends {
                    let at = committed.get(tp).copied().unwrap_or(0);
                    if at < *end {
                        behind.push(format!("{name} {}/{} at {at} of {end}", tp.0, tp.1));
                    }
                }
                all_ends.extend(ends);
            }
            if behind.is_empty() && last.as_ref() == Some(&all_ends) {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "the fleet did not catch up in {}s: {} (its log: {})",
                timeout.as_secs(),
                if behind.is_empty() {
                    "its inputs kept growing".to_string()
                } else {
                    behind.join(", ")
                },
                self.log.display()
            );
            last = behind.is_empty().then_some(all_ends);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Each partition's committed offset of `group` (absent: none yet).
    fn committed(
        &mut self,
        group: &str,
        ends: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
        if !self.groups.contains_key(group) {
            let consumer: BaseConsumer = admin::client_config(&self.cfg.kafka)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .create()?;
            self.groups.insert(group.to_string(), consumer);
        }
        let consumer = &self.groups[group];
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in ends.keys() {
            tpl.add_partition(topic, *partition);
        }
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .with_context(|| format!("reading group {group}'s committed offsets"))?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.processes {
            if let Some(status) = p.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}); the last lines of {}:\n{}",
                    p.what,
                    self.log.display(),
                    tail(&self.log, 15)
                );
            }
        }
        Ok(())
    }

    /// SIGTERM every process and wait for it (each leaves its group and
    /// flushes its state); SIGKILL after 30 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        for p in &self.processes {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut failed = Vec::new();
        for p in &mut self.processes {
            loop {
                if let Some(status) = p.child.try_wait()? {
                    if !status.success() {
                        failed.push(format!("{} exited {status}", p.what));
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    failed.push(format!("{} did not stop in 30 s (killed)", p.what));
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.processes.clear();
        anyhow::ensure!(
            failed.is_empty(),
            "{} (log: {})",
            failed.join("; "),
            self.log.display()
        );
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.processes.is_empty() {
            let _ = self.stop_all();
        }
    }
}

/// SIGTERM one process and wait for it (SIGKILL after 30 s).
fn stop_one(p: &mut Process) -> anyhow::Result<()> {
    if !crate::process::terminate(&mut p.child, Duration::from_secs(30))? {
        anyhow::bail!("{} did not stop in 30 s (killed)", p.what);
    }
    Ok(())
}

/// The flags that put `mailfleet api` or `mailfleet scheduler` on `clock`.
fn time_args(clock: Clock) -> Vec<String> {
    match clock {
        Clock::Wall => Vec::new(),
        Clock::Compressed { origin_ms, scale } => vec![
            "--time-scale".into(),
            scale.to_string(),
            "--time-origin".into(),
            origin_ms.to_string(),
        ],
    }
}

/// The last `n` lines of a file (for an error message).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sum of one metric's samples in a Prometheus text page, by one label.
pub fn by_label(page: &str, metric: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once("} ")) else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let key = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == label)
            .map(|(_, v)| v.trim_matches('"').to_string())
            .unwrap_or_default();
        *out.entry(key).or_default() += value;
    }
    out
}

/// GET http://<addr>/metrics (plain HTTP/1.0 on loopback).
pub fn scrape(addr: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(body))
}
