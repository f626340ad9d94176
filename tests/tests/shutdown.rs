//! SIGTERM while the groups rebalance (R1). Every consumer `mailfleet run`
//! knows runs in three processes that join and are stopped in quick
//! succession, cycle after cycle, so the stops land while the groups are
//! still rebalancing, while members start up, and while they close. Every
//! process must exit 0 within a few seconds.
//!
//! What it caught: the rebalance callback asked librdkafka for the
//! assignment (`rd_kafka_assignment`) while the consumer was closing, and
//! waited for ever for a group that was going away; and a SIGTERM that came
//! before the signal handler was installed killed the process.
//!
//! The second test stops members while the group still waits for one that
//! was killed with `kill -9` (it never left; the group holds its
//! rebalance until the session times out): the state the fault tests'
//! `mailfleet run lifecycle` hung in.
//!
//! The close timeout is raised to a minute here, so a process that only
//! stops because its close was abandoned fails the test too.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use mailfleet_runtime::{
    admin,
    topology::{Route, TopicSpec},
    Topology,
};
use mailfleet_tests::{directory, *};

use rand::Rng;

/// Cycles of start-and-stop.
const CYCLES: usize = 8;
/// Processes per cycle, each running every consumer.
const MEMBERS: usize = 3;
/// Cycles of freeze-and-stop (each over 10 s: the session must expire).
const FROZEN_CYCLES: usize = 4;
/// Longest a stopping process may take.
const EXIT_WITHIN: Duration = Duration::from_secs(8);

/// The service's topology with every topic and group renamed for this test.
fn renamed(name: &str) -> anyhow::Result<Topology> {
    let real = Topology::load(Some(&repo_root().join("pipelines/topology.toml")))?;
    let t = |topic: &String| format!("{name}.{topic}");
    Ok(Topology {
        topics: real
            .topics
            .keys()
            .map(|topic| (t(topic), TopicSpec::scratch(3)))
            .collect::<BTreeMap<_, _>>(),
        consumers: real
            .consumers
            .iter()
            .map(|(consumer, route)| {
                let route = Route {
                    group: format!("{name}-{}", route.group),
                    reads: route.reads.iter().map(t).collect(),
                    writes: route.writes.iter().map(t).collect(),
                };
                (consumer.clone(), route)
            })
            .collect(),
    })
}

/// One config per member slot: its own state folder and metrics port.
fn configs(name: &str, dir: &Path, topology: &Topology) -> anyhow::Result<Vec<PathBuf>> {
    // Every path absolute: the children run in the test's folder.
    let path = |p: PathBuf| p.display().to_string();
    let rest = format!(
        "[blobs]\ndir = {blobs:?}\n\
         [ldap]\nurl = {url:?}\nbind_password_file = {password:?}\ntimeout_ms = 3000\n\
         [consumers.greylist]\nwhitelist_clients = [{clients:?}]\nwhitelist_recipients = [{rcpts:?}]\n\
         [consumers.storage]\nmail_root = {mail:?}\nquarantine_dir = {quarantine:?}\n",
        blobs = path(dir.join("blobs")),
        url = directory::ldap_url(),
        password = path(directory::service_password_file()),
        clients = path(repo_root().join("ops/greylist/whitelist_clients")),
        rcpts = path(repo_root().join("ops/greylist/whitelist_recipients")),
        mail = path(dir.join("mail")),
        quarantine = path(dir.join("quarantine")),
    );
    (0..MEMBERS)
        .map(|slot| {
            ConfigFiles {
                dir,
                topology_file: "topology.toml",
                topology,
                brokers: &kafka().brokers,
                data_dir: &dir.join(format!("state-{slot}")),
                deadletter: &format!("{name}.deadletter"),
                metrics_port: free_port(),
            }
            .write(&format!("member-{slot}.toml"), &rest)
        })
        .collect()
}

/// SIGTERM `child`.
fn signal(child: &Child) -> anyhow::Result<Instant> {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    Ok(Instant::now())
}

/// Wait for each signalled member: each must exit 0 within `EXIT_WITHIN`
/// of its SIGTERM. Returns the slowest stop.
fn wait_all(members: &mut [(Child, Instant, String)]) -> anyhow::Result<Duration> {
    let mut slowest = Duration::ZERO;
    for (child, signalled, what) in members.iter_mut() {
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(status.success(), "{what} exited with {status}");
                slowest = slowest.max(signalled.elapsed());
                break;
            }
            if signalled.elapsed() > EXIT_WITHIN {
                let _ = child.kill();
                anyhow::bail!("{what} did not exit within {EXIT_WITHIN:?} of SIGTERM (hung)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(slowest)
}

/// One test's members: their configs (a slot each), the `run` arguments
/// naming every consumer, and the log they share.
struct Members {
    configs: Vec<PathBuf>,
    args: Vec<String>,
    log: PathBuf,
}

impl Members {
    /// The renamed topology's topics on the broker, and the configs.
    async fn new(prefix: &str) -> anyhow::Result<Members> {
        let name = unique(prefix);
        let dir = scratch_dir(&name);
        let topology = renamed(&name)?;
        admin::apply(&kafka(), &topology).await?;
        // Every consumer `mailfleet run` knows has its route in the topology.
        let consumers: Vec<String> = topology.consumers.keys().cloned().collect();
        anyhow::ensure!(consumers.len() >= 11, "too few consumers: {consumers:?}");
        Ok(Members {
            configs: configs(&name, &dir, &topology)?,
            args: std::iter::once("run".to_string())
                .chain(consumers)
                .collect(),
            log: dir.join("members.log"),
        })
    }

    /// Start slot `slot` running every consumer.
    fn spawn(&self, slot: usize) -> anyhow::Result<Child> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        spawn_with_env(&self.configs[slot], &args, MEMBER_ENV, &self.log)
    }
}

/// SIGTERM every member of `members`, `gap_ms` (a random 0..gap) apart,
/// named `label` and their index; each must exit 0 within `EXIT_WITHIN`.
/// Returns the slowest stop.
async fn stop_members(
    members: &mut Children,
    gap_ms: u64,
    label: &str,
) -> anyhow::Result<Duration> {
    let mut stopping = Vec::new();
    for (i, child) in members.0.drain(..).enumerate() {
        let signalled = signal(&child)?;
        stopping.push((child, signalled, format!("{label} member {i}")));
        // Each leave rebalances the group the next one is closing in.
        let gap = rand::rng().random_range(0..=gap_ms);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    let took = tokio::task::block_in_place(|| wait_all(&mut stopping));
    for (child, _, _) in &mut stopping {
        let _ = child.kill();
        let _ = child.wait();
    }
    took
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_rebalances_exits_cleanly_every_time() -> anyhow::Result<()> {
    let m = Members::new("shutdown").await?;
    let mut rng = rand::rng();
    let mut slowest = Duration::ZERO;
    for cycle in 0..CYCLES {
        let mut members = Children::default();
        for slot in 0..MEMBERS {
            members.0.push(m.spawn(slot)?);
            // Joins land while the group settles the previous one.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        }
        // From "still starting" (0) to "settled" (3 s) over the cycles.
        let wait = (cycle as u64 * 3000) / (CYCLES as u64 - 1);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let label = format!("cycle {cycle} (stopped {wait} ms after the last start)");
        slowest = slowest.max(stop_members(&mut members, 300, &label).await?);
    }
    let text = std::fs::read_to_string(&m.log)?;
    anyhow::ensure!(
        !text.contains("could not leave the group in time"),
        "a close was abandoned instead of completing: see {}",
        m.log.display()
    );
    anyhow::ensure!(
        text.contains("SIGTERM: shutting down"),
        "no member logged its SIGTERM: see {}",
        m.log.display()
    );
    no_errors(&text, &m.log)?;
    eprintln!("slowest stop: {slowest:?} over {CYCLES} cycles of {MEMBERS} members");
    Ok(())
}

/// The members' settings: the close timeout raised so that only a clean
/// close passes.
const MEMBER_ENV: &[(&str, &str)] = &[("MAILFLEET_RUNTIME__CLOSE_TIMEOUT_MS", "60000")];

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_the_group_waits_for_a_killed_member_exits_cleanly() -> anyhow::Result<()> {
    let m = Members::new("shutdown-crashed").await?;
    let mut rng = rand::rng();
    let mut slowest = Duration::ZERO;
    // Slot 0 is started and killed; slots 1 and 2 are started and stopped.
    for cycle in 0..CYCLES {
        let mut victim = m.spawn(0)?;
        let mut members = Children::default();
        members.0.push(m.spawn(1)?);
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..4000))).await;
        // A crash: the group keeps waiting for it until its session ends.
        victim.kill()?;
        victim.wait()?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
        members.0.push(m.spawn(2)?);
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        let label = format!("cycle {cycle} (a member killed)");
        slowest = slowest.max(stop_members(&mut members, 300, &label).await?);
    }
    let text = std::fs::read_to_string(&m.log)?;
    anyhow::ensure!(
        !text.contains("could not leave the group in time"),
        "a close was abandoned instead of completing: see {}",
        m.log.display()
    );
    no_errors(&text, &m.log)?;
    eprintln!("slowest stop: {slowest:?} over {CYCLES} cycles");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_right_after_a_frozen_member_lost_its_session_exits_cleanly() -> anyhow::Result<()>
{
    let m = Members::new("shutdown-frozen").await?;
    let mut rng = rand::rng();
    let mut slowest = Duration::ZERO;
    // A member frozen (SIGSTOP) past `session.timeout.ms` (10 s) is thrown
    // out of its groups; thawed, it finds its assignment lost, and the
    // SIGTERM lands in that revocation or right after it. With no
    // membership left there is no LeaveGroup to wait for: librdkafka tears
    // the group down at once, racing the revocation callback.
    for cycle in 0..FROZEN_CYCLES {
        let mut members = Children::default();
        for slot in 0..2 {
            members.0.push(m.spawn(slot)?);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(3000..5000))).await;
        let frozen = members.0[0].id().to_string();
        std::process::Command::new("kill")
            .args(["-STOP", &frozen])
            .status()?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(11_000..13_000))).await;
        std::process::Command::new("kill")
            .args(["-CONT", &frozen])
            .status()?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        let label = format!("cycle {cycle} (a member frozen)");
        slowest = slowest.max(stop_members(&mut members, 0, &label).await?);
    }
    eprintln!("slowest stop: {slowest:?} over {FROZEN_CYCLES} cycles");
    Ok(())
}

/// Threads of process `pid` (1 until its tokio runtime starts).
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_as_soon_as_the_process_runs_exits_cleanly() -> anyhow::Result<()> {
    let m = Members::new("shutdown-early").await?;
    // The moment its runtime's threads exist the process is well into
    // `main`: it loads its config and topology, binds its metrics port and
    // starts its consumers. A SIGTERM from then on must stop it cleanly.
    // (The signal handler used to be installed only after all that, and a
    // SIGTERM before it killed the process: exit 143.)
    for round in 0..10 {
        let child = spawn_with_env(&m.configs[0], &["run", "counter"], MEMBER_ENV, &m.log)?;
        let pid = child.id();
        let started = Instant::now();
        while threads(pid) < 2 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "round {round}: the process never started its runtime"
            );
            std::hint::spin_loop();
        }
        let signalled = signal(&child)?;
        let mut member = [(child, signalled, format!("round {round}"))];
        tokio::task::block_in_place(|| wait_all(&mut member))?;
    }
    no_errors(&std::fs::read_to_string(&m.log)?, &m.log)
}

/// A clean stop logs no error. (Every stop used to log one: rdkafka's
/// drop closing the consumer the runtime had already closed.)
fn no_errors(text: &str, log: &Path) -> anyhow::Result<()> {
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
    anyhow::ensure!(
        errors.is_empty(),
        "clean stops logged {} error lines, the first: {}; see {}",
        errors.len(),
        errors[0],
        log.display()
    );
    Ok(())
}
