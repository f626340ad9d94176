//! `mailfleet bench lifecycle`: the lifecycle's decision pass that finds
//! the inactive accounts among N synthetic ones, against a raw RocksDB
//! scan of the same state (the floor any pass over every account pays).
//!
//! 1. History: N registrations spread over a year and ~`logins_per_account`
//!    logins each, decided by the real decider (events/s reported), and
//!    committed into a RocksDB store in `partitions` partitions.
//! 2. The pass, timed: one `ClockTicked` per partition through
//!    [`mailfleet_lifecycle::tick`] over that store, as the
//!    runtime would run it, counting the transitions and outputs.
//! 3. The peer, timed: iterating every account record of every partition.

use std::time::Instant;

use mailfleet_events::{
    accounts::{AccountRegistered, LoginChannel, LoginRecorded},
    Envelope,
};
use mailfleet_fleet::config::Config;
use mailfleet_lifecycle::{self as lifecycle, LifecycleConfig, LifecycleInput};
use mailfleet_runtime::{
    calendar::{days_from_civil, DAY_MS},
    partition_key,
    store::Commit,
    Overlay, StateView, Store, Verdict,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(clap::Args, Debug)]
pub struct LifecycleLoad {
    /// Synthetic accounts.
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u64,
    /// Mean logins per account over the year of history.
    #[arg(long, default_value_t = 3)]
    logins_per_account: u64,
    /// Partitions (the topic's; each is one tick).
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Rounds of (pass, raw scan); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub async fn run(cfg: &Config, load: LifecycleLoad) -> anyhow::Result<()> {
    let dir = super::scratch_dir(cfg, &format!("lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&dir, false)?;
    let life = cfg.consumers.lifecycle.clone();
    // "Now" is fixed, so runs are comparable: 2026-11-01.
    let now = days_from_civil(2026, 11, 1) * DAY_MS;
    let history = build_history(&store, &life, &load, now)?;
    println!(
        "history: {} accounts, {} events decided in {:.1} s ({:.0} events/s)",
        load.accounts,
        history.events,
        history.seconds,
        history.events as f64 / history.seconds
    );
    let (mut pass, mut raw) = (Vec::new(), Vec::new());
    let mut found = (0, 0);
    for round in 0..load.rounds.max(1) {
        let started = Instant::now();
        found = decision_pass(&store, &life, load.partitions, now)?;
        pass.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let scanned = raw_scan(&store, load.partitions)?;
        raw.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(
            scanned == load.accounts,
            "the raw scan saw {scanned} accounts, expected {}",
            load.accounts
        );
        println!(
            "round {round}: pass {:.2} s ({} inactive), raw scan {:.2} s",
            pass[round], found.0, raw[round]
        );
    }
    let (pass_s, raw_s) = (super::median(&mut pass), super::median(&mut raw));
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "accounts={} inactive={} outputs={} pass_s={pass_s:.2} accounts_per_s={:.0} \
         outputs_per_s={:.0} raw_scan_s={raw_s:.2} ratio_to_raw={:.2} goal_s=10 met={}",
        load.accounts,
        found.0,
        found.1,
        load.accounts as f64 / pass_s,
        found.1 as f64 / pass_s,
        pass_s / raw_s,
        pass_s <= 10.0
    );
    Ok(())
}

struct History {
    events: u64,
    seconds: f64,
}

/// Decide every account's registration and logins with the real decider,
/// partition by partition, and commit the state.
fn build_history(
    store: &Store,
    life: &LifecycleConfig,
    load: &LifecycleLoad,
    now: i64,
) -> anyhow::Result<History> {
    let mut rng = StdRng::seed_from_u64(7);
    let parts = load.partitions.max(1);
    let mut overlays: Vec<Overlay> = (0..parts).map(|_| Overlay::default()).collect();
    let bar = super::progress_bar(load.accounts, "history");
    let (mut events, started) = (0u64, Instant::now());
    for i in 0..load.accounts {
        let account = format!("user{i:07}@bench.test");
        let p = (i % parts as u64) as usize;
        let registered = now - rng.random_range(1..365) * DAY_MS;
        let mut inputs = vec![LifecycleInput::Registered(AccountRegistered {
            envelope: Envelope::new(format!("r{i}"), registered, "bench"),
            account: account.clone(),
            password_hash: "{ARGON2}bench".into(),
            plan: "free".into(),
            display_name: None,
        })];
        let logins = rng.random_range(0..=2 * load.logins_per_account);
        let mut times: Vec<i64> = (0..logins)
            .map(|_| rng.random_range(registered..now))
            .collect();
        times.sort_unstable();
        inputs.extend(times.into_iter().map(|t| {
            LifecycleInput::Login(LoginRecorded {
                envelope: Envelope::new(format!("l{i}:{t}"), t, "bench"),
                account: account.clone(),
                channel: LoginChannel::Webmail,
                ip: None,
            })
        }));
        for input in inputs {
            let overlay = &mut overlays[p];
            let d = lifecycle::decide::decide(life, &StateView::in_memory(overlay), &input)?;
            if matches!(d.verdict, Verdict::Apply) {
                overlay.extend(d.changes);
            }
            events += 1;
        }
        if i % 10_000 == 0 {
            bar.set_position(i);
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    for (p, overlay) in overlays.into_iter().enumerate() {
        let state = overlay
            .into_iter()
            .map(|(k, v)| (partition_key(p as i32, &k), v))
            .collect();
        store.commit(&Commit {
            state,
            offsets: Vec::new(),
        })?;
    }
    Ok(History { events, seconds })
}

/// One tick per partition at `now`: (transitions to inactive, outputs).
fn decision_pass(
    store: &Store,
    life: &LifecycleConfig,
    partitions: i32,
    now: i64,
) -> anyhow::Result<(u64, u64)> {
    let (mut inactive, mut outputs) = (0, 0);
    for p in 0..partitions.max(1) {
        let overlay = Overlay::default();
        let view = StateView::new(store, p, &overlay);
        let tick = Envelope::new(format!("tick:{p}"), now, "bench");
        let d = lifecycle::tick(life, &view, &tick)?;
        outputs += d.outputs.len() as u64;
        inactive += d
            .outputs
            .iter()
            .filter(|o| o.topic == life.notify_topic)
            .count() as u64;
    }
    Ok((inactive, outputs))
}

/// The floor: read every account record of every partition.
fn raw_scan(store: &Store, partitions: i32) -> anyhow::Result<u64> {
    let mut n = 0;
    for p in 0..partitions.max(1) {
        n += store.scan_state(&partition_key(p, b"a"))?.len() as u64;
    }
    Ok(n)
}
