//! `mailfleet scheduler` over the real broker: a bad cron expression stops
//! it at start-up; after downtime it emits every missed tick and job run
//! exactly once; of two instances only one emits, and when the active one
//! is killed the standby takes over without gaps or repeats.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use mailfleet_events::{clock::ClockTicked, scheduler::JobDue, Envelope, Registry};
use mailfleet_runtime::{
    admin, producer::EventProducer, time::now_ms, topology::TopicSpec, Topology,
};
use mailfleet_tests::*;

/// The progress mark's job and kind (services/scheduler/src/emitter/mod.rs).
const MARK_JOB: &str = "@mark";
const MARK_KIND: &str = "scheduler-mark";

/// One test's topics and config.
struct World {
    name: String,
    jobs: String,
    clocked: String,
    dir: PathBuf,
    config: PathBuf,
}

/// Create the test's own lease (1 partition), jobs (3) and clocked (2)
/// topics and write a config; `scheduler` is appended to `[scheduler]`.
async fn world(name: &str, scheduler: &str, create: bool) -> anyhow::Result<World> {
    let name = unique(name);
    let (lease, jobs, clocked, dead) = (
        format!("{name}.lease"),
        format!("{name}.jobs"),
        format!("{name}.clocked"),
        format!("{name}.dead"),
    );
    let topology = Topology {
        topics: BTreeMap::from([
            (lease.clone(), TopicSpec::scratch(1)),
            (jobs.clone(), TopicSpec::scratch(3)),
            (clocked.clone(), TopicSpec::scratch(2)),
            (dead.clone(), TopicSpec::scratch(1)),
        ]),
        consumers: BTreeMap::new(),
    };
    if create {
        admin::apply(&kafka(), &topology).await?;
    }
    let dir = scratch_dir(&name);
    let brokers = kafka().brokers;
    let files = ConfigFiles {
        dir: &dir,
        topology_file: "topology.toml",
        topology: &topology,
        brokers: &brokers,
        data_dir: &dir.join("state"),
        deadletter: &dead,
        metrics_port: free_port(),
    };
    let rest = format!(
        "[clock]\ntopics = [{clocked:?}]\n\
         [scheduler]\njobs_topic = {jobs:?}\nlease_topic = {lease:?}\n\
         lease_group = \"{name}-lease\"\nlease_session_timeout_ms = 6000\n{scheduler}"
    );
    let config = files.write("scheduler.toml", &rest)?;
    Ok(World {
        name,
        jobs,
        clocked,
        dir,
        config,
    })
}

/// Every record of the jobs topic, marks included.
fn job_records(topic: &str, idle: Duration) -> anyhow::Result<Vec<JobDue>> {
    read_topic(topic, usize::MAX, idle)?
        .iter()
        .map(|(_, v)| Ok(Registry::builtin().decode::<JobDue>(v)?))
        .collect()
}

/// The job runs (not the marks) of the jobs topic.
fn runs(topic: &str, idle: Duration) -> anyhow::Result<Vec<JobDue>> {
    Ok(job_records(topic, idle)?
        .into_iter()
        .filter(|r| r.kind != MARK_KIND)
        .collect())
}

/// Wait until a run due at or after `at` is there, written by `producer`
/// if given; returns all runs then.
async fn wait_for_run(
    topic: &str,
    at: i64,
    producer: Option<&str>,
    limit: Duration,
) -> anyhow::Result<Vec<JobDue>> {
    let started = std::time::Instant::now();
    loop {
        let all = runs(topic, Duration::from_millis(800))?;
        if all
            .iter()
            .any(|r| r.due_at >= at && producer.is_none_or(|p| r.envelope.producer == p))
        {
            return Ok(all);
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "no run due at or after {at} by {producer:?} within {limit:?}; runs: {:?}",
            all.iter()
                .map(|r| (&r.run_id, &r.envelope.producer))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each run's due time appears exactly once, every `step` ms from `from`
/// to the newest, with no gap; returns the newest.
fn assert_each_once(runs: &[JobDue], job: &str, from: i64, step: i64) -> anyhow::Result<i64> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.job == job) {
        anyhow::ensure!(
            r.envelope.event_id == r.run_id,
            "id is not the run id: {r:?}"
        );
        *counts.entry(r.due_at).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    anyhow::ensure!(twice.is_empty(), "runs written more than once: {twice:?}");
    let newest = *counts.keys().next_back().unwrap_or(&from);
    let expected: BTreeSet<i64> = (0..)
        .map(|i| from + i * step)
        .take_while(|t| *t <= newest)
        .collect();
    let got: BTreeSet<i64> = counts.keys().copied().collect();
    anyhow::ensure!(
        got == expected,
        "runs of {job}: missing {:?}, unexpected {:?}",
        expected.difference(&got).collect::<Vec<_>>(),
        got.difference(&expected).collect::<Vec<_>>()
    );
    Ok(newest)
}

#[tokio::test]
async fn scheduler_refuses_a_bad_cron_expression() -> anyhow::Result<()> {
    let w = world(
        "scheduler-badcron",
        "[scheduler.jobs.broken]\ncron = \"0 0 25 * * *\"\nkind = \"postfix-map\"\n",
        false,
    )
    .await?;
    let out = Command::new(mailfleet_bin())
        .arg("--config")
        .arg(&w.config)
        .arg("scheduler")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited {}: {stderr}", out.status);
    assert!(
        stderr.contains("scheduler.jobs.broken.cron") && stderr.contains("\"0 0 25 * * *\""),
        "the key and the expression are not named: {stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn scheduler_catches_up_after_downtime() -> anyhow::Result<()> {
    let w = world(
        "scheduler-catchup",
        "tick_every_s = 5\n[scheduler.jobs.every2]\ncron = \"*/2 * * * * *\"\nkind = \"postfix-map\"\n",
        true,
    )
    .await?;
    // The previous scheduler's last mark, 20-30 s ago: it went down then.
    let seed = (now_ms() - 20_000).div_euclid(10_000) * 10_000;
    let id = format!("{MARK_JOB}:seed");
    let mark = JobDue {
        envelope: Envelope::new(id.clone(), seed, "test"),
        job: MARK_JOB.into(),
        kind: MARK_KIND.into(),
        due_at: seed,
        run_id: id,
        params: BTreeMap::new(),
    };
    EventProducer::new(&kafka(), "scheduler-test")?
        .send(&w.jobs, MARK_JOB.as_bytes(), &mark)
        .await?;

    let started = now_ms();
    let mut children = Children(vec![spawn_mailfleet(
        &w.config,
        &["scheduler"],
        &w.dir.join("scheduler.log"),
    )?]);
    wait_for_run(&w.jobs, started + 2_000, None, Duration::from_secs(30)).await?;
    children.terminate()?;

    let runs = runs(&w.jobs, Duration::from_secs(2))?;
    let newest = assert_each_once(&runs, "every2", seed + 2_000, 2_000)?;
    assert!(newest >= started, "{}: never reached the present", w.name);

    // Every missed tick, once in each partition.
    let mut ticks: HashMap<(i32, i64), usize> = HashMap::new();
    for (_, bytes) in read_topic(&w.clocked, usize::MAX, Duration::from_secs(2))? {
        let t: ClockTicked = Registry::builtin().decode(&bytes)?;
        let p: i32 = t
            .envelope
            .event_id
            .rsplit(':')
            .nth(1)
            .unwrap_or("?")
            .parse()?;
        *ticks.entry((p, t.envelope.event_time)).or_default() += 1;
    }
    let newest_tick = ticks.keys().map(|(_, t)| *t).max().unwrap_or(seed);
    assert!(
        newest_tick >= started - 5_000,
        "ticks stopped at {newest_tick}"
    );
    for p in 0..2 {
        for at in (1..)
            .map(|i| seed + i * 5_000)
            .take_while(|t| *t <= newest_tick)
        {
            assert_eq!(ticks.get(&(p, at)), Some(&1), "tick {at} in partition {p}");
        }
    }
    assert_eq!(
        ticks.len(),
        2 * ((newest_tick - seed) / 5_000) as usize,
        "no tick before the mark"
    );
    Ok(())
}

#[tokio::test]
async fn scheduler_has_exactly_one_active_and_a_standby_takes_over() -> anyhow::Result<()> {
    let w = world(
        "scheduler-lease",
        "[scheduler.jobs.every1]\ncron = \"* * * * * *\"\nkind = \"postfix-map\"\n",
        true,
    )
    .await?;
    // Each instance serves /metrics on its own port.
    let ports = [free_port(), free_port()];
    let spawn = |n: &str, port: u16| {
        let listen = format!("127.0.0.1:{port}");
        let env = [("MAILFLEET_METRICS__LISTEN", listen.as_str())];
        let log = w.dir.join(format!("{n}.log"));
        spawn_with_env(&w.config, &["scheduler"], &env, &log)
    };
    let started = now_ms();
    let mut children = Children(vec![spawn("a", ports[0])?]);
    let pid_a = format!("scheduler:{}", children.0[0].id());
    wait_for_run(&w.jobs, started, Some(&pid_a), Duration::from_secs(30)).await?;
    children.0.push(spawn("b", ports[1])?);
    let pid_b = format!("scheduler:{}", children.0[1].id());
    // B joins: the group rebalances, the lease may move; runs go on.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before = wait_for_run(&w.jobs, now_ms() - 1_000, None, Duration::from_secs(20)).await?;
    let first = before.iter().map(|r| r.due_at).min().unwrap_or_default();
    assert_each_once(&before, "every1", first, 1_000)?;

    // Kill -9 whichever is active now.
    let newest = before
        .iter()
        .max_by_key(|r| r.due_at)
        .ok_or_else(|| anyhow::anyhow!("no runs"))?;
    let (active, standby) = if newest.envelope.producer == pid_a {
        (0, pid_b)
    } else {
        (1, pid_a)
    };
    // The active one says so on /metrics, the standby says 0.
    let leader = |port: u16| {
        let text = scrape(port).unwrap_or_default();
        metric_sum(&text, "mailfleet_scheduler_leader", &[])
    };
    assert_eq!(
        (leader(ports[active]), leader(ports[1 - active])),
        (1.0, 0.0),
        "mailfleet_scheduler_leader of the active and the standby"
    );
    children.0[active].kill()?;
    children.0[active].wait()?;
    let killed_at = now_ms();
    let after = wait_for_run(
        &w.jobs,
        killed_at + 3_000,
        Some(&standby),
        Duration::from_secs(40),
    )
    .await?;
    let survivor = children.0.remove(1 - active);
    Children(vec![survivor]).terminate()?;

    let all = runs(&w.jobs, Duration::from_secs(2))?;
    assert!(all.len() >= after.len());
    let newest = assert_each_once(&all, "every1", first, 1_000)?;
    assert!(
        newest >= killed_at + 3_000,
        "{}: the standby stopped",
        w.name
    );
    Ok(())
}
