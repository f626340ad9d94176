//! A fleet scales while load flows (F10): up to three processes, each
//! `mailfleet run greylist lifecycle`, share one group per consumer; the
//! test starts one, scales up to three, scales down to two (SIGTERM), and
//! up to three again with a process whose state folder is empty, all while
//! attempts and account events keep coming. Each process keeps its own
//! state folder, so a partition that moves is restored on its new process
//! by replaying its input (F7). Afterwards:
//! - `mailfleet audit decisions` finds 0 diffs for both consumers: every
//!   output on the topics is what a replay of the inputs decides;
//! - each partition's state, taken from the process that holds it to the
//!   end, has the same digest as a single-process replay of the same input.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Child,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use mailfleet_events::{
    accounts::{AccountRegistered, LoginChannel, LoginRecorded},
    clock::ClockTicked,
    greylist::DeliveryAttempted,
    Envelope,
};
use mailfleet_runtime::{
    admin, metrics as m,
    producer::EventProducer,
    topology::{Route, TopicSpec},
    Topology,
};
use mailfleet_tests::*;

/// 2026-11-30T00:00:00Z.
const T0: i64 = 1_795_996_800_000;
const DAY: i64 = 86_400_000;
const PARTITIONS: i32 = 6;

struct World {
    dir: PathBuf,
    config: PathBuf,
    attempts: String,
    accounts: String,
}

async fn world() -> anyhow::Result<World> {
    let name = unique("fleet");
    let t = |s: &str| format!("{name}.{s}");
    let (attempts, decisions, accounts, notify, status, dead) = (
        t("attempts"),
        t("decisions"),
        t("accounts"),
        t("notify"),
        t("status"),
        t("dead"),
    );
    let route = |c: &str, reads: &[&String], writes: &[&String]| {
        (
            c.to_string(),
            Route {
                group: format!("{name}-{c}"),
                reads: reads.iter().map(|s| s.to_string()).collect(),
                writes: writes.iter().map(|s| s.to_string()).collect(),
            },
        )
    };
    let topology = Topology {
        topics: [&attempts, &decisions, &accounts, &notify, &status]
            .iter()
            .map(|t| (t.to_string(), TopicSpec::scratch(PARTITIONS)))
            .chain([(dead.clone(), TopicSpec::scratch(1))])
            .collect(),
        consumers: BTreeMap::from([
            route("greylist", &[&attempts], &[&decisions]),
            route("lifecycle", &[&accounts], &[&accounts, &notify, &status]),
        ]),
    };
    admin::apply(&kafka(), &topology).await?;
    let dir = scratch_dir(&name);
    let root = repo_root();
    let rest = format!(
        "[consumers.greylist]\nwhitelist_clients = [{wc:?}]\nwhitelist_recipients = [{wr:?}]\n\
         [consumers.lifecycle]\nevents_topic = {accounts:?}\nnotify_topic = {notify:?}\nstatus_topic = {status:?}\n",
        wc = root.join("ops/greylist/whitelist_clients").display().to_string(),
        wr = root.join("ops/greylist/whitelist_recipients").display().to_string(),
    );
    let brokers = kafka().brokers;
    let config = ConfigFiles {
        dir: &dir,
        topology_file: "topology.toml",
        topology: &topology,
        brokers: &brokers,
        data_dir: &dir.join("state"),
        deadletter: &dead,
        metrics_port: free_port(),
    }
    .write("fleet.toml", &rest)?;
    Ok(World {
        dir,
        config,
        attempts,
        accounts,
    })
}

/// One process of the fleet: its own state folder and metrics port.
struct Member {
    name: String,
    child: Option<Child>,
    port: u16,
    state: PathBuf,
}

impl Member {
    fn start(w: &World, name: &str) -> anyhow::Result<Member> {
        let port = free_port();
        let state = w.dir.join(format!("state-{name}"));
        let child = spawn_with_env(
            &w.config,
            &["run", "greylist", "lifecycle"],
            &[
                ("MAILFLEET_RUNTIME__DATA_DIR", &state.display().to_string()),
                ("MAILFLEET_METRICS__LISTEN", &format!("127.0.0.1:{port}")),
            ],
            &w.dir.join(format!("{name}.log")),
        )?;
        Ok(Member {
            name: name.into(),
            child: Some(child),
            port,
            state,
        })
    }

    /// Partitions this process holds of `consumer` (-1: not scrapable yet).
    fn assigned(&self, consumer: &str) -> f64 {
        let label = format!("consumer=\"{consumer}\"");
        scrape(self.port).map_or(-1.0, |t| {
            metric_sum(&t, m::ASSIGNED_PARTITIONS, &[label.as_str()])
        })
    }

    /// SIGTERM, and it must exit 0 (it leaves the group cleanly).
    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child)?;
        }
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait until the live members hold `want` partitions each, of both consumers.
async fn wait_spread(members: &[&Member], want: f64) -> anyhow::Result<()> {
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    wait_until(
        &format!("{names:?} to hold {want} partitions each of greylist and lifecycle"),
        Duration::from_secs(90),
        || {
            members
                .iter()
                .all(|m| m.assigned("greylist") == want && m.assigned("lifecycle") == want)
        },
    )
    .await
}

/// Steady load until `stop`: attempts (first tries, and retries ten minutes
/// of event time later) and account events (registrations and logins), in
/// event-time order; returns how many of each were sent.
async fn load(
    attempts: String,
    accounts: String,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<(u64, u64)> {
    let p = EventProducer::new(&kafka(), "fleet-load")?;
    let (mut n_attempts, mut n_accounts) = (0u64, 0u64);
    let mut i: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..50 {
            let at = T0 + i * 1000;
            let ip = format!("198.51.{}.{}", i % 200, i % 7 + 1);
            let (from, to) = (
                format!("s{i}@sender.test"),
                format!("r{}@example.test", i % 40),
            );
            let key = format!("{ip}/{to}");
            p.send(
                &attempts,
                key.as_bytes(),
                &attempt(&format!("a{i}"), at, &ip, &from, &to),
            )
            .await?;
            n_attempts += 1;
            if i % 3 == 0 {
                // The retry of an earlier first try, now past its delay.
                let j = i - 600;
                if j >= 0 {
                    let ip = format!("198.51.{}.{}", j % 200, j % 7 + 1);
                    let (from, to) = (
                        format!("s{j}@sender.test"),
                        format!("r{}@example.test", j % 40),
                    );
                    let key = format!("{ip}/{to}");
                    p.send(
                        &attempts,
                        key.as_bytes(),
                        &attempt(&format!("r{j}"), at, &ip, &from, &to),
                    )
                    .await?;
                    n_attempts += 1;
                }
            }
            if i % 10 == 0 {
                let account = format!("u{}@example.test", i / 10);
                let reg = AccountRegistered {
                    envelope: Envelope::new(format!("reg-{i}"), at, "test"),
                    account: account.clone(),
                    password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
                    plan: "free".into(),
                    display_name: None,
                };
                p.send(&accounts, account.as_bytes(), &reg).await?;
                n_accounts += 1;
            }
            if i % 10 == 5 && i > 100 {
                // Some earlier account logs in.
                let account = format!("u{}@example.test", (i / 10) % (i / 20).max(1));
                let login = LoginRecorded {
                    envelope: Envelope::new(format!("login-{i}"), at, "test"),
                    account: account.clone(),
                    channel: LoginChannel::Imap,
                    ip: None,
                };
                p.send(&accounts, account.as_bytes(), &login).await?;
                n_accounts += 1;
            }
            i += 1;
        }
        sent.store(n_attempts + n_accounts, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The clock moves past the inactivity threshold of the accounts that
    // never logged in: the lifecycle decides transitions on every partition.
    for partition in 0..PARTITIONS {
        let tick = ClockTicked {
            envelope: Envelope::new(
                format!("clock:{accounts}:{partition}"),
                T0 + 100 * DAY,
                "test",
            ),
            clock: "daily".into(),
            period_ms: DAY,
        };
        p.send_to_partition(&accounts, partition, &mailfleet_events::encode(&tick)?)
            .await?;
        n_accounts += 1;
    }
    Ok((n_attempts, n_accounts))
}

fn attempt(id: &str, at: i64, ip: &str, from: &str, to: &str) -> DeliveryAttempted {
    DeliveryAttempted {
        envelope: Envelope::new(id, at, "test"),
        client_address: Some(ip.into()),
        client_name: Some("mx.sender.test".into()),
        reverse_client_name: Some("mx.sender.test".into()),
        helo_name: Some("mx.sender.test".into()),
        sender: Some(from.into()),
        recipient: Some(to.into()),
        instance: Some(format!("i-{id}")),
        size: Some(100),
        queue_id: None,
        policy_host: "mx1".into(),
        answered: None,
    }
}

/// Wait until, for every input partition of `topics`, some member's store
/// has applied it to its current end.
async fn wait_caught_up(states: &[PathBuf], topics: &[String]) -> anyhow::Result<()> {
    let ends = end_offsets(topics)?;
    wait_until(
        "the fleet to apply every input to its end",
        Duration::from_secs(120),
        || {
            let mut best: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for dir in states {
                let Ok(store) = mailfleet_runtime::Store::open_read_only(dir) else {
                    continue;
                };
                for (t, p, o) in store.offsets() {
                    let e = best.entry((t, p)).or_default();
                    *e = (*e).max(o);
                }
            }
            outage::caught_up(&best, &ends)
        },
    )
    .await
}

/// Each partition's digest of `consumer`'s state, from the member whose
/// store has applied that partition of `input` to its end.
fn fleet_digests(
    states: &[PathBuf],
    consumer: &str,
    input: &str,
) -> anyhow::Result<BTreeMap<i32, String>> {
    let ends = end_offsets(&[input.to_string()])?;
    let mut out = BTreeMap::new();
    for dir in states {
        let dir = dir.join(consumer);
        if !dir.exists() {
            continue;
        }
        let store = mailfleet_runtime::Store::open_read_only(&dir)?;
        let at_end: BTreeSet<i32> = store
            .offsets()
            .into_iter()
            .filter(|(t, p, o)| t == input && ends.get(&(t.clone(), *p)).is_some_and(|e| o >= e))
            .map(|(_, p, _)| p)
            .collect();
        drop(store);
        for (p, digest) in live_digests(&dir)? {
            if at_end.contains(&p) {
                if let Some(other) = out.insert(p, digest.clone()) {
                    assert_eq!(
                        other, digest,
                        "{consumer} partition {p}: two members at the end disagree"
                    );
                }
            }
        }
    }
    Ok(out)
}

fn audit(config: &Path, consumer: &str) -> anyhow::Result<String> {
    let out = run_cli(config, &["audit", "decisions", consumer])?;
    Ok(out.lines().last().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_scales_up_and_down_under_load_with_no_audit_diffs() -> anyhow::Result<()> {
    let w = world().await?;
    let mut a = Member::start(&w, "a")?;
    wait_spread(&[&a], PARTITIONS as f64).await?;

    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let loader = tokio::spawn(load(
        w.attempts.clone(),
        w.accounts.clone(),
        stop.clone(),
        sent.clone(),
    ));
    let past = |n: u64| {
        let sent = sent.clone();
        async move {
            wait_until(
                &format!("the load to pass {n} events"),
                Duration::from_secs(120),
                || sent.load(Ordering::SeqCst) >= n,
            )
            .await
        }
    };

    // Scale up: 1 -> 3.
    past(2_000).await?;
    let mut b = Member::start(&w, "b")?;
    let mut c = Member::start(&w, "c")?;
    wait_spread(&[&a, &b, &c], 2.0).await?;
    // Scale down: 3 -> 2 (b leaves cleanly).
    past(sent.load(Ordering::SeqCst) + 3_000).await?;
    b.stop()?;
    wait_spread(&[&a, &c], 3.0).await?;
    // Scale up again: a member with no state takes partitions and restores
    // them from the log.
    past(sent.load(Ordering::SeqCst) + 3_000).await?;
    let mut d = Member::start(&w, "d")?;
    wait_spread(&[&a, &c, &d], 2.0).await?;
    past(sent.load(Ordering::SeqCst) + 3_000).await?;
    stop.store(true, Ordering::SeqCst);
    let (n_attempts, n_accounts) = loader.await??;
    println!("load: {n_attempts} attempts, {n_accounts} account events and ticks");

    let states: Vec<PathBuf> = [&a, &b, &c, &d].iter().map(|m| m.state.clone()).collect();
    for consumer in ["greylist", "lifecycle"] {
        let dirs: Vec<PathBuf> = states.iter().map(|s| s.join(consumer)).collect();
        let input = if consumer == "greylist" {
            &w.attempts
        } else {
            &w.accounts
        };
        wait_caught_up(&dirs, std::slice::from_ref(input)).await?;
    }
    // The lifecycle's own outputs on its input (the transitions of the
    // tick) are inputs too, and applying them may write more: rounds until
    // a round ends with the topic's ends where they were when it began.
    let lifecycle_dirs: Vec<PathBuf> = states.iter().map(|s| s.join("lifecycle")).collect();
    let mut settled = false;
    for _ in 0..10 {
        let before = end_offsets(std::slice::from_ref(&w.accounts))?;
        wait_caught_up(&lifecycle_dirs, std::slice::from_ref(&w.accounts)).await?;
        if end_offsets(std::slice::from_ref(&w.accounts))? == before {
            settled = true;
            break;
        }
    }
    assert!(settled, "the lifecycle kept writing to its own input");
    for m in [&mut a, &mut c, &mut d] {
        m.stop()?;
    }

    for (consumer, input) in [("greylist", &w.attempts), ("lifecycle", &w.accounts)] {
        let last = audit(&w.config, consumer)?;
        println!("audit decisions {consumer}: {last}");
        let audited: u64 = last
            .strip_prefix("audited=")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            last.ends_with(" diffs=0") && audited > 0,
            "{consumer}: {last}"
        );
        let replay_dir = w.dir.join(format!("replay-{consumer}"));
        let out = run_cli(
            &w.config,
            &[
                "replay",
                consumer,
                "--state-dir",
                &replay_dir.display().to_string(),
            ],
        )?;
        let single = replay_digests(&out);
        let fleet = fleet_digests(&states, consumer, input)?;
        assert_eq!(
            fleet.len(),
            PARTITIONS as usize,
            "{consumer}: every partition held to the end by some member: {fleet:?}"
        );
        assert_eq!(
            fleet, single,
            "{consumer}: the fleet's state per partition vs a single-process replay"
        );
    }
    Ok(())
}
