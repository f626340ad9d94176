use chrono::{TimeZone, Utc};

use super::*;
use crate::{JobConfig, SchedulerConfig};

/// A UTC civil time, ms.
fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .map(|t| t.timestamp_millis())
        .unwrap_or(i64::MIN)
}

fn defaults() -> Schedules {
    Schedules::new(&SchedulerConfig::default()).expect("the defaults are valid")
}

fn tick(at: i64) -> Due {
    Due::Tick { at }
}

fn job(name: &str, at: i64) -> Due {
    Due::Job {
        job: name.into(),
        at,
    }
}

fn runs(due: &[Due]) -> Vec<Due> {
    due.iter()
        .filter(|d| matches!(d, Due::Job { .. }))
        .cloned()
        .collect()
}

#[test]
fn scheduler_first_start_emits_the_current_tick_period_only() {
    let midnight = at(2026, 11, 28, 0, 0, 0);
    let got = defaults().due(None, midnight + 30_000).unwrap();
    assert_eq!(
        got.due,
        [
            tick(midnight),
            job("postfix-map", midnight),
            job("trash-purge", midnight)
        ]
    );
    assert_eq!((got.ticks_merged, got.resume_after), (0, None));
    let later = defaults().due(None, midnight + 90_000).unwrap();
    assert_eq!(later.due, [tick(midnight + 60_000)], "nothing older");
}

#[test]
fn scheduler_steps_emit_each_instant_once_and_never_the_last_one() {
    let s = defaults();
    let t0 = at(2026, 11, 28, 0, 9, 0);
    assert_eq!(s.due(Some(t0), t0).unwrap(), CatchUp::default());
    assert_eq!(s.due(Some(t0), t0 + 59_999).unwrap().due, []);
    let ten = t0 + 60_000;
    assert_eq!(
        s.due(Some(t0 + 500), ten).unwrap().due,
        [tick(ten), job("postfix-map", ten)]
    );
    assert_eq!(
        s.due(Some(ten), ten + 60_000).unwrap().due,
        [tick(ten + 60_000)]
    );
    assert_eq!(
        s.due(Some(ten), ten - 60_000).unwrap(),
        CatchUp::default(),
        "a clock that went back emits nothing"
    );
}

#[test]
fn scheduler_catches_up_after_downtime_over_a_month_end() {
    let last = at(2026, 11, 30, 23, 50, 0);
    let now = at(2026, 12, 1, 0, 20, 30);
    let got = defaults().due(Some(last), now).unwrap();
    let ticks = got
        .due
        .iter()
        .filter(|d| matches!(d, Due::Tick { .. }))
        .count();
    assert_eq!(ticks, 30, "23:51 .. 00:20");
    let dec1 = at(2026, 12, 1, 0, 0, 0);
    assert_eq!(
        runs(&got.due),
        [
            job("postfix-map", dec1),
            job("spam-purge", dec1),
            job("trash-purge", dec1),
            job("postfix-map", dec1 + 600_000),
            job("postfix-map", dec1 + 1_200_000),
        ]
    );
    assert!(
        got.due.windows(2).all(|w| w[0].at() <= w[1].at()),
        "in time order"
    );
    assert!(got.due.iter().all(|d| d.at() > last && d.at() <= now));
    assert_eq!(
        got.due,
        defaults().due(Some(last), now).unwrap().due,
        "deterministic"
    );
}

#[test]
fn scheduler_long_downtime_thins_ticks_but_keeps_every_run() {
    let last = at(2026, 11, 27, 0, 0, 0);
    let now = at(2026, 11, 30, 0, 0, 0);
    let got = defaults().due(Some(last), now).unwrap();
    let ticks: Vec<i64> = got
        .due
        .iter()
        .filter(|d| matches!(d, Due::Tick { .. }))
        .map(Due::at)
        .collect();
    assert_eq!(ticks.len(), 1440, "at most max_catch_up_ticks");
    assert_eq!(
        got.ticks_merged,
        3 * 1440 - 1440,
        "and says how many merged"
    );
    assert_eq!(ticks.last(), Some(&now), "the latest tick is kept");
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 180_000), "evenly");
    let all = runs(&got.due);
    let count = |name: &str| {
        all.iter()
            .filter(|d| matches!(d, Due::Job { job, .. } if job == name))
            .count()
    };
    assert_eq!((count("trash-purge"), count("postfix-map")), (3, 3 * 144));
    assert_eq!(got.resume_after, None);
}

#[test]
fn scheduler_bounded_runs_resume_without_dropping_any() {
    let cfg = SchedulerConfig {
        max_catch_up_runs: 100,
        ..SchedulerConfig::default()
    };
    let paged = Schedules::new(&cfg).unwrap();
    let (last, now) = (at(2026, 11, 27, 0, 0, 0), at(2026, 11, 30, 0, 0, 0));
    let mut from = last;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = paged.due(Some(from), now).unwrap();
        assert!(
            runs(&page.due).len() <= 100 + 2,
            "bounded by max + jobs at one instant"
        );
        pages += 1;
        seen.extend(runs(&page.due));
        match page.resume_after {
            Some(t) => {
                assert!(page.due.iter().all(|d| d.at() <= t));
                from = t;
            }
            None => break,
        }
    }
    assert!(pages > 4, "{pages} pages");
    assert_eq!(seen, runs(&defaults().due(Some(last), now).unwrap().due));
}

#[test]
fn scheduler_next_after_is_the_nearest_tick_or_run() {
    let s = defaults();
    let t = at(2026, 11, 28, 0, 0, 30);
    assert_eq!(s.next_after(t).unwrap(), t + 30_000);
    let mut cfg = SchedulerConfig {
        tick_every_s: 3600,
        ..SchedulerConfig::default()
    };
    cfg.jobs
        .insert("noon".into(), JobConfig::postfix_map("0 0 12 * * *"));
    let hourly = Schedules::new(&cfg).unwrap();
    assert_eq!(
        hourly.next_after(t).unwrap(),
        t + 570_000,
        "postfix-map at 00:10"
    );
    assert_eq!(hourly.tick_every_ms(), 3_600_000);
}

#[test]
fn scheduler_refuses_bad_configs_and_times_naming_them() {
    let mut cfg = SchedulerConfig::default();
    cfg.jobs
        .insert("x".into(), JobConfig::postfix_map("0 0 25 * * *"));
    let err = Schedules::new(&cfg)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("scheduler.jobs.x.cron = \"0 0 25 * * *\": hour 25"),
        "{err}"
    );
    let err = defaults().due(None, i64::MAX).unwrap_err().to_string();
    assert!(err.contains("out of range"), "{err}");
    assert!(defaults().next_after(i64::MIN).is_err());
}

#[test]
fn scheduler_run_ids_name_the_job_and_the_due_time() {
    let id = run_id("trash-purge", at(2026, 11, 28, 0, 0, 0)).unwrap();
    assert_eq!(id, "trash-purge:2026-11-28T00:00:00Z");
    assert!(run_id("x", i64::MAX).is_err());
}
