//! One peer as its own process: spawned, watched until its output topic
//! holds one decision per attempt, measured from `/proc`, stopped.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_events::greylist::GreylistDecided;
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{
    admin,
    read::{decode, read_committed},
    time::now_ms,
};
use rdkafka::consumer::BaseConsumer;

use super::super::cpu::proc_cpu;

/// A running peer.
pub struct Peer {
    child: std::process::Child,
    /// Wall time at spawn, ms since the epoch (the broker's clock too).
    pub started_ms: i64,
    log: PathBuf,
}

/// What `/proc` says about a peer just before it is stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kb: u64,
    /// Resident set at the end (VmRSS), KiB.
    pub rss_kb: u64,
    /// CPU seconds (user + system, all threads).
    pub cpu_s: f64,
}

impl Peer {
    /// Start `cmd` with stdout and stderr to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Peer> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let started_ms = now_ms();
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(Peer {
            child,
            started_ms,
            log: log.to_path_buf(),
        })
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Wait until `topic`'s partitions hold at least `n` offsets and have
    /// stopped growing for a second (a transactional writer's commit
    /// markers take offsets too, so the count alone is not the end).
    pub fn wait_for(
        &mut self,
        cfg: &Config,
        topic: &str,
        n: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let consumer: BaseConsumer = admin::client_config(&cfg.kafka)
            .set("group.id", format!("bench-watch-{}", rand::random::<u32>()))
            .create()?;
        let started = Instant::now();
        let (mut last, mut still) = (0i64, 0u32);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the peer exited ({status}) before its outputs were all written; its log ({}):\n{}", self.log.display(), self.tail());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "{last} of {n} outputs after {timeout:?}; the peer's log ({}):\n{}",
                self.log.display(),
                self.tail()
            );
            // A topic made a moment ago may not have its leaders yet: retry.
            let Ok(marks) = admin::watermarks(&consumer, topic, Duration::from_secs(10)) else {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            };
            let sum: i64 = marks.iter().map(|(_, low, high)| high - low).sum();
            still = if sum == last { still + 1 } else { 0 };
            last = sum;
            if sum as u64 >= n && still >= 4 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The memory lines of `/proc/<pid>/status`, on one line.
    pub fn status_lines(&self) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .filter(|l| {
                ["VmHWM", "VmRSS", "RssAnon", "RssFile", "VmSwap"]
                    .iter()
                    .any(|f| l.starts_with(f))
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Read `/proc`, then SIGTERM and wait (SIGKILL after 60 s).
    pub fn stop(mut self) -> anyhow::Result<Usage> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |field: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let usage = Usage {
            peak_rss_kb: kb("VmHWM:"),
            rss_kb: kb("VmRSS:"),
            cpu_s: proc_cpu(&pid.to_string()).0,
        };
        crate::process::terminate(&mut self.child, Duration::from_secs(60))?;
        Ok(usage)
    }
}

/// Every decision in `topic`, committed ones only, with its broker append
/// time (the topics use LogAppendTime).
pub fn read_decisions(cfg: &Config, topic: &str) -> anyhow::Result<Vec<(i64, GreylistDecided)>> {
    read_committed(&cfg.kafka, topic, "bench")?
        .iter()
        .map(|r| Ok((r.timestamp.unwrap_or(0), decode::<GreylistDecided>(r)?)))
        .collect()
}
