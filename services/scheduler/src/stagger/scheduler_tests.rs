use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// 2026-11-28T00:00:00Z.
const MIDNIGHT: i64 = 1_795_824_000_000;
const HOUR_MS: i64 = 3_600_000;

fn accounts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("user{i:05}@mailfleet.test"))
        .collect()
}

/// The busiest bucket of `width` ms, counted here, not by the plan.
fn busiest(plan: &PurgePlan, width: i64) -> usize {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for s in &plan.slots {
        *counts.entry(s.at.div_euclid(width)).or_default() += 1;
    }
    counts.values().copied().max().unwrap_or(0)
}

#[test]
fn scheduler_stagger_10000_accounts_over_four_hours_at_5_per_second() {
    let all = accounts(10_000);
    let limit = RateLimit::new(5.0).unwrap();
    let plan = plan(MIDNIGHT, 4 * HOUR_MS, limit, &all).unwrap();

    let planned: BTreeSet<&str> = plan.slots.iter().map(|s| s.account.as_str()).collect();
    assert_eq!(plan.slots.len(), 10_000, "each account once");
    assert_eq!(
        planned,
        all.iter().map(String::as_str).collect(),
        "every account"
    );
    assert!(plan
        .slots
        .iter()
        .all(|s| s.at >= MIDNIGHT && s.at < MIDNIGHT + 4 * HOUR_MS));
    assert_eq!(
        (plan.past_window, plan.window_end),
        (0, MIDNIGHT + 4 * HOUR_MS)
    );
    assert!(busiest(&plan, 1000) <= 5, "{}", busiest(&plan, 1000));
    assert!(busiest(&plan, 60_000) <= 300);
    assert_eq!(plan.peak_per_second as usize, busiest(&plan, 1000));
    assert_eq!(plan.peak_per_minute as usize, busiest(&plan, 60_000));
    assert!(
        plan.slots.windows(2).all(|w| w[0].at <= w[1].at),
        "sorted by time"
    );
    for hour in 0..4 {
        let start = MIDNIGHT + hour * HOUR_MS;
        let n = plan
            .slots
            .iter()
            .filter(|s| s.at >= start && s.at < start + HOUR_MS)
            .count();
        assert!(
            (2000..3000).contains(&n),
            "hour {hour}: {n} of 10,000: not spread evenly"
        );
    }
}

#[test]
fn scheduler_stagger_same_input_gives_the_same_plan_whatever_the_order() {
    let mut all = accounts(2000);
    let limit = RateLimit::new(5.0).unwrap();
    let first = plan(MIDNIGHT, HOUR_MS, limit, &all).unwrap();
    all.reverse();
    all.push(all[0].clone());
    let again = plan(MIDNIGHT, HOUR_MS, limit, &all).unwrap();
    assert_eq!(first.slots, again.slots);
    assert_eq!((first.duplicates, again.duplicates), (0, 1));
    let bob = |p: &PurgePlan| {
        p.slots
            .iter()
            .find(|s| s.account == "bob@x.test")
            .map(|s| s.at)
    };
    let alone = plan(MIDNIGHT, HOUR_MS, limit, &["bob@x.test"]).unwrap();
    let next_day = plan(MIDNIGHT + 24 * HOUR_MS, HOUR_MS, limit, &["bob@x.test"]).unwrap();
    assert_eq!(
        bob(&next_day),
        bob(&alone).map(|t| t + 24 * HOUR_MS),
        "an account keeps its time of day"
    );
}

#[test]
fn scheduler_stagger_a_small_window_runs_past_it_and_says_so() {
    let all = accounts(100);
    let plan = plan(MIDNIGHT, 60_000, RateLimit::new(1.0).unwrap(), &all).unwrap();
    assert_eq!(plan.slots.len(), 100);
    assert_eq!(plan.past_window, 40, "60 fit a minute at 1/s");
    assert_eq!(plan.slots.last().map(|s| s.at), Some(MIDNIGHT + 99_000));
    assert_eq!((plan.peak_per_second, plan.peak_per_minute), (1, 60));
    assert_eq!(busiest(&plan, 1000), 1);
}

#[test]
fn scheduler_stagger_a_rate_under_one_per_second_holds_per_minute() {
    let limit = RateLimit::new(0.5).unwrap();
    assert_eq!(
        limit,
        RateLimit {
            per_second: 1,
            per_minute: 30
        }
    );
    let plan = plan(MIDNIGHT + 500, 10 * 60_000, limit, &accounts(290)).unwrap();
    assert_eq!((plan.slots.len(), plan.past_window), (290, 0));
    assert!(busiest(&plan, 60_000) <= 30, "{}", busiest(&plan, 60_000));
    assert!(busiest(&plan, 1000) <= 1);
    let over = super::plan(MIDNIGHT, 10 * 60_000, limit, &accounts(301)).unwrap();
    assert_eq!(over.past_window, 1, "10 minutes hold 300");
}

#[test]
fn scheduler_stagger_refuses_bad_rates_and_windows_naming_them() {
    for bad in [0.0, -1.0, 0.01, f64::NAN, f64::INFINITY] {
        let err = RateLimit::new(bad).unwrap_err().to_string();
        assert!(err.contains(&format!("max_purges_per_s = {bad}")), "{err}");
    }
    let limit = RateLimit::new(5.0).unwrap();
    let err = plan(MIDNIGHT, 999, limit, &["a@x"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("window_ms = 999"), "{err}");
    let err = plan(i64::MAX - 10, HOUR_MS, limit, &["a@x"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("due_at"), "{err}");
    let empty = plan(MIDNIGHT, HOUR_MS, limit, &[] as &[&str]).unwrap();
    assert_eq!((empty.slots.len(), empty.peak_per_second), (0, 0));
}

#[test]
fn scheduler_stagger_a_dense_window_is_held_at_the_limit() {
    let plan = plan(
        MIDNIGHT,
        40 * 60_000,
        RateLimit::new(5.0).unwrap(),
        &accounts(10_000),
    )
    .unwrap();
    assert_eq!(
        (plan.slots.len(), plan.past_window),
        (10_000, 0),
        "12,000 fit"
    );
    assert_eq!(busiest(&plan, 1000), 5, "the limit binds and holds");
    assert!(busiest(&plan, 60_000) <= 300);
    let over = super::plan(
        MIDNIGHT,
        30 * 60_000,
        RateLimit::new(5.0).unwrap(),
        &accounts(10_000),
    )
    .unwrap();
    assert_eq!(over.past_window, 1000, "9,000 fit 30 minutes");
    assert_eq!((over.peak_per_second, busiest(&over, 1000)), (5, 5));
}

/// The plans of every partition, merged as the storage writers see them.
fn merged(plans: &[PurgePlan]) -> PurgePlan {
    let mut slots: Vec<Slot> = plans.iter().flat_map(|p| p.slots.clone()).collect();
    slots.sort_unstable_by(|a, b| (a.at, &a.account).cmp(&(b.at, &b.account)));
    let (peak_per_second, peak_per_minute) = peaks(&slots);
    PurgePlan {
        past_window: plans.iter().map(|p| p.past_window).sum(),
        duplicates: 0,
        window_end: plans[0].window_end,
        slots,
        peak_per_second,
        peak_per_minute,
    }
}

#[test]
fn scheduler_stagger_12_partitions_planning_alone_hold_the_limit_together() {
    let all = accounts(10_000);
    let partitions = 12;
    let limit = RateLimit::shared(5.0, partitions as u32).unwrap();
    assert_eq!(
        limit,
        RateLimit {
            per_second: 5,
            per_minute: 25
        }
    );
    let plans: Vec<PurgePlan> = (0..partitions)
        .map(|p| {
            // Any sharding will do; the planner gets Kafka's.
            let shard: Vec<&String> = all
                .iter()
                .filter(|a| hash(a) % partitions as u64 == p as u64)
                .collect();
            let lane = Lane::partition(p, partitions).unwrap();
            plan_lane(MIDNIGHT, 4 * HOUR_MS, limit, lane, &shard).unwrap()
        })
        .collect();
    let all_of_them = merged(&plans);
    assert_eq!(all_of_them.slots.len(), 10_000);
    assert_eq!(all_of_them.past_window, 0);
    assert!(busiest(&all_of_them, 1000) <= 5);
    assert!(
        busiest(&all_of_them, 60_000) <= 300,
        "{}",
        busiest(&all_of_them, 60_000)
    );
    for (p, plan) in plans.iter().enumerate() {
        assert!(
            plan.slots
                .iter()
                .all(|s| (s.at / 1000) % partitions as i64 == p as i64),
            "partition {p} keeps to its own seconds"
        );
    }
    for hour in 0..4 {
        let start = MIDNIGHT + hour * HOUR_MS;
        let n = all_of_them
            .slots
            .iter()
            .filter(|s| s.at >= start && s.at < start + HOUR_MS)
            .count();
        assert!((2000..3000).contains(&n), "hour {hour}: {n}");
    }
}

#[test]
fn scheduler_stagger_partitions_too_many_for_the_rate_are_refused() {
    let err = RateLimit::shared(0.1, 12).unwrap_err().to_string();
    assert!(err.contains("max_purges_per_s = 0.1"), "{err}");
    assert!(err.contains("partition"), "{err}");
    assert_eq!(
        RateLimit::shared(0.5, 1).unwrap(),
        RateLimit::new(0.5).unwrap()
    );
    // Under 1/s with lanes: each second is one lane's, a minute's share
    // per lane; the sum stays within 60 r.
    let limit = RateLimit::shared(0.5, 3).unwrap();
    assert_eq!((limit.per_second, limit.per_minute), (1, 10));
    let plans: Vec<PurgePlan> = (0..3)
        .map(|p| {
            let shard = accounts(60)
                .into_iter()
                .filter(|a| hash(a) % 3 == p as u64)
                .collect::<Vec<_>>();
            let lane = Lane::partition(p, 3).unwrap();
            plan_lane(MIDNIGHT, 10 * 60_000, limit, lane, &shard).unwrap()
        })
        .collect();
    let all = merged(&plans);
    assert_eq!(all.slots.len(), 60);
    assert!(busiest(&all, 60_000) <= 30);
    assert!(busiest(&all, 1000) <= 1);
    assert!(Lane::partition(3, 3).is_err());
    assert!(Lane::partition(-1, 3).is_err());
}
