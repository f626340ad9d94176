//! CPU accounting for the benchmarks on a small shared machine: which
//! process used how much CPU during a run, and how busy the machine was,
//! from `/proc` (Linux only; unreadable entries count as zero).

use std::path::PathBuf;

use super::median;

/// Wall times and CPU of repeated runs of one thing (one server at one
/// size, one pass at one concurrency).
#[derive(Default)]
pub struct Tally {
    pub secs: Vec<f64>,
    pub cpu: Cpu,
}

impl Tally {
    pub fn add(&mut self, secs: f64, cpu: Cpu) {
        self.secs.push(secs);
        self.cpu = self.cpu.plus(cpu);
    }

    /// Median messages per second.
    pub fn rate(&self, messages: u64) -> f64 {
        let mut rates: Vec<f64> = self.secs.iter().map(|s| messages as f64 / s).collect();
        median(&mut rates)
    }

    /// CPU milliseconds per message of each process.
    pub fn ms_per_message(&self, messages: u64) -> Cpu {
        let n = (messages as usize * self.secs.len()) as f64 / 1000.0;
        self.cpu.scaled(1.0 / n)
    }
}

/// CPU seconds used by this process (e.g. the mailfleet server and its
/// librdkafka threads), its finished children (e.g. smtp-source), the peer
/// (e.g. smtp-sink or clamd) and the Kafka broker (all of a cluster's nodes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub own: f64,
    pub children: f64,
    pub peer: f64,
    pub kafka: f64,
    /// The whole machine: (busy, total) CPU seconds, all cores.
    machine: (f64, f64),
}

impl Cpu {
    pub fn now(peer: Option<u32>, kafka: impl IntoIterator<Item = u32>) -> Cpu {
        let (own, children) = proc_cpu("self");
        let other = |pid: u32| proc_cpu(&pid.to_string()).0;
        Cpu {
            own,
            children,
            peer: peer.map_or(0.0, other),
            kafka: kafka.into_iter().map(other).sum(),
            machine: machine_cpu(),
        }
    }

    pub fn minus(self, o: Cpu) -> Cpu {
        self.plus(o.scaled(-1.0))
    }

    pub fn plus(self, o: Cpu) -> Cpu {
        Cpu {
            own: self.own + o.own,
            children: self.children + o.children,
            peer: self.peer + o.peer,
            kafka: self.kafka + o.kafka,
            machine: (self.machine.0 + o.machine.0, self.machine.1 + o.machine.1),
        }
    }

    pub fn scaled(self, k: f64) -> Cpu {
        Cpu {
            own: self.own * k,
            children: self.children * k,
            peer: self.peer * k,
            kafka: self.kafka * k,
            machine: (self.machine.0 * k, self.machine.1 * k),
        }
    }

    /// Share of the machine's CPU time that was busy, %.
    pub fn busy(&self) -> f64 {
        100.0 * self.machine.0 / self.machine.1.max(f64::EPSILON)
    }
}

/// (busy, total) CPU seconds of all cores since boot, from `/proc/stat`
/// (idle and iowait count as not busy).
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// (own, waited-for children) CPU seconds of a process from
/// `/proc/<pid>/stat` (utime+stime, cutime+cstime; USER_HZ is 100).
pub(super) fn proc_cpu(pid: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or(0.0) / 100.0;
    (field(14) + field(15), field(16) + field(17))
}

/// The broker's pid, as `ops/kafka` records it.
pub fn kafka_pid() -> Option<u32> {
    ops_pid("kafka/kafka.pid")
}

/// The pids of the `ops/kafka` brokers among `brokers` (`host:port,...`):
/// the single broker's, or the nodes' of `ops/kafka cluster`, each known
/// by the listeners its `server.properties` advertises.
pub fn kafka_pids(brokers: &str) -> Vec<u32> {
    let nodes = (1..=3).map(|n| format!("kafka-cluster/node{n}"));
    std::iter::once("kafka".to_string())
        .chain(nodes)
        .filter(|dir| {
            let props = std::fs::read_to_string(run_dir().join(dir).join("server.properties"));
            let advertised = props.unwrap_or_default();
            let advertised = advertised
                .lines()
                .find_map(|l| l.strip_prefix("advertised.listeners="))
                .unwrap_or("")
                .to_string();
            brokers
                .split(',')
                .any(|b| advertised.contains(&format!("//{}", b.trim())))
        })
        .filter_map(|dir| ops_pid(&format!("{dir}/kafka.pid")))
        .collect()
}

fn run_dir() -> PathBuf {
    std::env::var("MAILFLEET_RUN_DIR")
        .unwrap_or_else(|_| "run".into())
        .into()
}

/// clamd's pid, as `ops/clamav` records it.
pub fn clamd_pid() -> Option<u32> {
    ops_pid("clamav/clamd.pid")
}

/// A pid file under the ops run folder (`MAILFLEET_RUN_DIR`, default `run`).
fn ops_pid(file: &str) -> Option<u32> {
    let pid = std::fs::read_to_string(run_dir().join(file)).ok()?;
    pid.trim().parse().ok()
}
