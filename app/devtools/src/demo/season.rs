//! The accounts' season, in compressed time. `mailfleet api` is restarted
//! with `--time-scale N` and `mailfleet scheduler` runs with the same
//! clock (a demo/test facility: both read a clock N times faster than the
//! wall clock from one origin, so the events they stamp share one
//! timeline). The demo plays the users and the admin through the API,
//! each action at its day of the season; the scheduler, in legs that stop
//! at a given instant (`--until`), writes the clock ticks and the purge
//! runs:
//!
//! 1. (a fresh jobs topic only) a first leg up to the season's start, so
//!    that later legs catch up from there;
//! 2. the users' season: logins over every channel, plan changes, a
//!    bigger quota, an admin block, each at its day;
//! 3. the clock up to the idle accounts' threshold (the lifecycle's
//!    months and days after their registration): they go inactive, and
//!    each gets a notice through Postfix;
//! 4. two answer it by reactivating, one logs in again;
//! 5. the clock past the grace period: the others are deleted everywhere.
//!
//! The purge jobs (`[scheduler.jobs.*]` of kind purge) run on their
//! schedules all season long. Scheduler time never goes back: a season
//! starts where the scheduler's last mark left off, at the earliest now.

use std::time::Duration;

use anyhow::Context;
use mailfleet_api::{
    wire::{AdminBlockReason, BlockRequest, Channel, LoginRequest, ReactivateRequest},
    ApiClient,
};
use mailfleet_directory as directory;
use mailfleet_events::scheduler::JobDue;
use mailfleet_fleet::config::Config;
use mailfleet_lifecycle::{self as lifecycle, deleter};
use mailfleet_runtime::{
    calendar::date_time,
    time::{now_ms, Clock},
};
use mailfleet_scheduler::JobKind;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{
    accounts::{api_base, connect, plan_of, DemoAccounts, Plan},
    fleet::Fleet,
    mail::read_all,
};

const DAY_MS: i64 = 86_400_000;
/// The demo scheduler's tick: every 6 hours of compressed time.
const TICK_S: u32 = 6 * 3600;
const TICK_MS: i64 = TICK_S as i64 * 1000;
/// Every channel a login comes over.
const CHANNELS: [Channel; 4] = [
    Channel::Webmail,
    Channel::Imap,
    Channel::Activesync,
    Channel::Syncml,
];

/// What the demo does through the API on a day of the season.
#[derive(Debug, Clone, Copy)]
enum Action {
    Login(Channel),
    Plan(&'static str),
    Quota(i64),
    Block,
}

/// The season on the scheduler's clock: where the scheduler resumed, its
/// last tick, and the latest event time of it all (the answers to the
/// notices, stamped by the API's clock after the first legs).
pub struct Span {
    pub start: i64,
    pub end: i64,
    pub last: i64,
    /// Logins recorded through the API.
    pub logins: usize,
}

/// Play the season; returns its span.
pub async fn run(
    cfg: &Config,
    accounts: &DemoAccounts,
    fleet: &mut Fleet,
    scale: u32,
) -> anyhow::Result<Span> {
    let last = last_scheduled(cfg)?;
    let clock = compressed(scale, last.map(|l| l + TICK_MS));
    fleet.compress_api(clock)?;
    let api = connect(&api_base(cfg)).await?;
    let start = clock.now_ms();
    let env = scheduler_env(cfg);
    println!(
        "== the season, in compressed time ({scale} × the wall clock): mailfleet api and mailfleet scheduler --time-scale {scale}, from {}",
        date_time(start)
    );
    if last.is_none() {
        fleet.run_scheduler(clock, start, &env).await?;
    }
    let (done, logins) = play(&api, accounts, clock, start).await?;
    println!("== the users and the admin, through the API at their days: {done} calls, {logins} of them logins");
    // The scheduler resumes at its last mark (or the first leg's). The
    // second leg stops one tick past the idle accounts' threshold, or past
    // its first tick if that threshold is behind it (a season that starts
    // where an earlier one ended): well before the grace period ends.
    let from = last.unwrap_or(start);
    let newest = accounts
        .registered_at
        .iter()
        .copied()
        .max()
        .unwrap_or(start);
    let idle = from.max(cfg.consumers.lifecycle.inactive_at(newest)) + TICK_MS;
    leg(fleet, clock, (from, idle), &env).await?;
    settle(fleet, "the idle accounts' notices").await?;
    answer_notices(&api, accounts).await?;
    let answered = clock.now_ms();
    let end = idle + cfg.consumers.lifecycle.grace_ms() + TICK_MS;
    leg(fleet, clock, (idle, end), &env).await?;
    Ok(Span {
        start: from,
        end,
        last: end.max(answered),
        logins: logins + 1,
    })
}

/// One leg of the scheduler, `from` to `until` on `clock`, told.
async fn leg(
    fleet: &mut Fleet,
    clock: Clock,
    (from, until): (i64, i64),
    env: &[(String, String)],
) -> anyhow::Result<()> {
    let took = fleet.run_scheduler(clock, until, env).await?;
    println!(
        "== mailfleet scheduler: ticks every {} h and the purge runs from {} to {} ({} days) in {:.1}s",
        TICK_S / 3600,
        date_time(from),
        date_time(until),
        (until - from) / DAY_MS,
        took.as_secs_f64()
    );
    Ok(())
}

/// Wait until the lifecycle and those after it have caught up.
pub async fn settle(fleet: &mut Fleet, what: &'static str) -> anyhow::Result<()> {
    let took = fleet
        .settle(
            &[
                lifecycle::NAME,
                deleter::NAME,
                directory::NAME,
                "storage",
                "index",
                "notifier",
                "purger",
            ],
            Duration::from_secs(240),
        )
        .await
        .with_context(|| {
            format!("{what} (is slapd up? ops/ldap start; Postfix? ops/postfix start)")
        })?;
    println!(
        "== the fleet's lifecycle, deleter, directory, notifier, purger, storage and index caught up in {:.1}s",
        took.as_secs_f64()
    );
    Ok(())
}

/// The newest instant the scheduler wrote (its marks and runs on the jobs
/// topic), if any.
fn last_scheduled(cfg: &Config) -> anyhow::Result<Option<i64>> {
    let jobs: Vec<JobDue> = read_all(cfg, &cfg.scheduler.jobs_topic)?;
    Ok(jobs.iter().map(|j| j.envelope.event_time).max())
}

/// A clock `scale` times faster than the wall clock that reads at least
/// `after` now (its origin set back as far as that needs), else now.
fn compressed(scale: u32, after: Option<i64>) -> Clock {
    let now = now_ms();
    let origin_ms = match after {
        // origin + (now - origin) * scale = after
        Some(after) if after > now && scale > 1 => {
            let n = i128::from(scale);
            ((n * i128::from(now) - i128::from(after)) / (n - 1)) as i64
        }
        _ => now,
    };
    Clock::Compressed { origin_ms, scale }
}

/// The demo's scheduler: a tick every [`TICK_S`], and only the configured
/// purge jobs (the demo runs no `mailfleet postfix-map`).
fn scheduler_env(cfg: &Config) -> Vec<(String, String)> {
    let mut env = vec![(
        "MAILFLEET_SCHEDULER__TICK_EVERY_S".to_string(),
        TICK_S.to_string(),
    )];
    for (name, job) in &cfg.scheduler.core.jobs {
        if job.kind != JobKind::Purge {
            continue;
        }
        let key = |k: &str| format!("MAILFLEET_SCHEDULER__JOBS__{}__{k}", name.to_uppercase());
        env.push((key("CRON"), job.cron.clone()));
        env.push((key("KIND"), "purge".into()));
        env.push((key("WINDOW_MINUTES"), job.window_minutes.to_string()));
        env.push((
            key("MAX_PURGES_PER_S"),
            format!("{:?}", job.max_purges_per_s),
        ));
        if let Some(folder) = &job.folder {
            env.push((key("FOLDER"), folder.clone()));
        }
        if let Some(days) = job.older_than_days {
            env.push((key("OLDER_THAN_DAYS"), days.to_string()));
        }
    }
    env
}

/// The users' and the admin's actions, each at its day of the season:
/// (day, account, action), in day order.
fn actions() -> Vec<(i64, usize, Action)> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut out = Vec::new();
    for i in 0..super::accounts::ACCOUNTS {
        match plan_of(i) {
            Plan::Regular => {
                for n in 0..rng.random_range(1..=4) {
                    let channel = CHANNELS[(i + n) % CHANNELS.len()];
                    out.push((rng.random_range(20..95), i, Action::Login(channel)));
                }
                // Some upgrade their plan; support raises one quota by hand.
                if i % 5 == 1 {
                    let plan = if i % 10 == 1 { "plus" } else { "pro" };
                    out.push((30 + i as i64, i, Action::Plan(plan)));
                }
                if i == 3 {
                    out.push((45, i, Action::Quota(20 * 1024 * 1024 * 1024)));
                }
            }
            Plan::Blocked => out.push((10, i, Action::Block)),
            Plan::Reactivates | Plan::LateLogin | Plan::Gone => {}
        }
    }
    out.sort_by_key(|(day, i, _)| (*day, *i));
    out
}

/// Each action through the API once the clock reads its day; returns how
/// many calls were made, and how many of them were logins.
async fn play(
    api: &ApiClient,
    accounts: &DemoAccounts,
    clock: Clock,
    start: i64,
) -> anyhow::Result<(usize, usize)> {
    let actions = actions();
    for (day, i, action) in &actions {
        let wait = clock.wall_at(start + day * DAY_MS) - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let account = &accounts.list[*i];
        let done = match *action {
            Action::Login(channel) => {
                // Webmail checks the password through the API; the IMAP,
                // ActiveSync and SyncML front ends checked it themselves
                // and report the login.
                let password =
                    matches!(channel, Channel::Webmail).then(|| accounts.password(*i).clone());
                let req = LoginRequest {
                    channel,
                    ip: Some(format!("192.0.2.{}", 10 + i)),
                    password,
                };
                api.login(account, &req).await
            }
            Action::Plan(plan) => api.set_plan(account, plan).await,
            Action::Quota(bytes) => api.set_quota(account, Some(bytes)).await,
            Action::Block => {
                let req = BlockRequest {
                    reason: AdminBlockReason::Admin,
                    detail: "spam complaints (demo)".into(),
                };
                api.block(account, &req).await
            }
        };
        done.with_context(|| format!("{action:?} of {account} through mailfleet api"))?;
    }
    let logins = actions
        .iter()
        .filter(|a| matches!(a.2, Action::Login(_)))
        .count();
    Ok((actions.len(), logins))
}

/// The idle accounts got their notices: two reactivate, one logs in
/// (the API must have seen them inactive: it follows the topic).
async fn answer_notices(api: &ApiClient, accounts: &DemoAccounts) -> anyhow::Result<()> {
    for (i, account) in accounts.list.iter().enumerate() {
        let plan = plan_of(i);
        if !matches!(plan, Plan::Reactivates | Plan::LateLogin) {
            continue;
        }
        let mut tries = 0;
        loop {
            let view = api.show(account).await?;
            if view.status == "inactive" {
                break;
            }
            tries += 1;
            anyhow::ensure!(
                tries < 100,
                "{account} is {} after the idle threshold, not inactive",
                view.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if plan == Plan::Reactivates {
            let req = ReactivateRequest {
                by: Some("user (answered the notice)".into()),
            };
            api.reactivate(account, &req).await?;
        } else {
            let req = LoginRequest {
                channel: Channel::Syncml,
                ip: None,
                password: Some(accounts.password(i).clone()),
            };
            api.login(account, &req).await?;
        }
    }
    println!(
        "== two users answered their notice by reactivating, one by logging in (through the API)"
    );
    Ok(())
}
