//! `[scheduler]`: the clock tick, the catch-up bounds and the jobs.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cron_fields::shape_problem;

/// Milliseconds in a day (Unix days: no leap seconds).
const DAY_MS: i64 = 86_400_000;

/// `[scheduler]`: what the scheduler emits and when.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Seconds between two `ClockTicked`; ticks fall on multiples of it
    /// since the epoch, so every instance and every replay agrees on them.
    pub tick_every_s: u32,
    /// The most ticks one catch-up emits: after a longer downtime the
    /// missed ticks are thinned to at most this many, the latest kept. A
    /// tick at `T` fires every timer due at or before `T`, so a thinned
    /// tick delays timers but loses none.
    pub max_catch_up_ticks: u32,
    /// The most job runs one catch-up returns; the rest come from the next
    /// call (the result says where to resume). Job runs are never dropped.
    pub max_catch_up_runs: u32,
    /// The jobs by name (`[scheduler.jobs.<name>]`). Listing any job
    /// replaces the whole default set.
    pub jobs: BTreeMap<String, JobConfig>,
}

/// `[scheduler.jobs.<name>]`: one scheduled job.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// When it runs: the `cron` crate's format, seconds first and the year
    /// optional (`sec min hour day-of-month month day-of-week [year]`), UTC.
    pub cron: String,
    /// What it does.
    pub kind: JobKind,
    /// The folder a purge empties (required for `purge`; INBOX is refused,
    /// as the storage writer refuses it).
    #[serde(default)]
    pub folder: Option<String>,
    /// Purge only messages received more than this many days before the
    /// run; absent: the whole folder.
    #[serde(default)]
    pub older_than_days: Option<u32>,
    /// Minutes after the due time over which a purge's accounts are spread.
    #[serde(default = "default_window_minutes")]
    pub window_minutes: u32,
    /// The purge rate limit; every second and every minute stays within it.
    #[serde(default = "default_max_purges_per_s")]
    pub max_purges_per_s: f64,
}

/// What a job does when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// One `PurgeRequested` per account with mail in `folder`, staggered.
    Purge,
    /// Rebuild Postfix's `virtual_mailbox_maps` from the account statuses.
    PostfixMap,
}

/// 00:00-04:00 for a midnight job.
fn default_window_minutes() -> u32 {
    240
}

/// 72,000 accounts fit a 4-hour window.
fn default_max_purges_per_s() -> f64 {
    5.0
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let jobs = [
            ("trash-purge", JobConfig::purge("0 0 0 * * *", "Trash")),
            ("spam-purge", JobConfig::purge("0 0 0 1 * *", "Spam")),
            ("postfix-map", JobConfig::postfix_map("0 */10 * * * *")),
        ];
        Self {
            tick_every_s: 60,
            max_catch_up_ticks: 1440,
            max_catch_up_runs: 10_000,
            jobs: jobs.into_iter().map(|(n, j)| (n.to_string(), j)).collect(),
        }
    }
}

impl JobConfig {
    /// A purge of the whole `folder` with the default window and rate.
    pub fn purge(cron: &str, folder: &str) -> Self {
        Self::new(cron, JobKind::Purge, Some(folder))
    }

    /// A Postfix map rebuild.
    pub fn postfix_map(cron: &str) -> Self {
        Self::new(cron, JobKind::PostfixMap, None)
    }

    fn new(cron: &str, kind: JobKind, folder: Option<&str>) -> Self {
        Self {
            cron: cron.to_string(),
            kind,
            folder: folder.map(str::to_string),
            older_than_days: None,
            window_minutes: default_window_minutes(),
            max_purges_per_s: default_max_purges_per_s(),
        }
    }

    /// `PurgeRequested.received_before` for a run due at `due_at` (ms).
    pub fn received_before(&self, due_at: i64) -> Option<i64> {
        self.older_than_days
            .map(|d| due_at.saturating_sub(i64::from(d) * DAY_MS))
    }

    /// The spreading window, ms.
    pub fn window_ms(&self) -> i64 {
        i64::from(self.window_minutes) * 60_000
    }
}

/// Upper bounds that keep every duration far inside `i64` milliseconds.
const MAX_TICK_S: u32 = 86_400;
const MAX_WINDOW_MINUTES: u32 = 31 * 1440;
const MAX_AGE_DAYS: u32 = 36_600;
const MAX_RATE: f64 = 100_000.0;

impl SchedulerConfig {
    /// Every problem, each naming the key and the value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=MAX_TICK_S).contains(&self.tick_every_s) {
            out.push(format!(
                "scheduler.tick_every_s = {}: must be 1..={MAX_TICK_S}",
                self.tick_every_s
            ));
        }
        for (k, v) in [
            ("max_catch_up_ticks", self.max_catch_up_ticks),
            ("max_catch_up_runs", self.max_catch_up_runs),
        ] {
            if v == 0 {
                out.push(format!("scheduler.{k} = 0: must be >= 1"));
            }
        }
        for (name, job) in &self.jobs {
            job_problems(name, job, &mut out);
        }
        out
    }
}

fn job_problems(name: &str, job: &JobConfig, out: &mut Vec<String>) {
    let key = |k: &str| format!("scheduler.jobs.{name}.{k}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        out.push(format!(
            "scheduler.jobs.{name:?}: a job name is letters, digits, - and _"
        ));
    }
    if let Some(problem) = cron_problem(&job.cron) {
        out.push(format!("{} = {:?}: {problem}", key("cron"), job.cron));
    }
    match job.kind {
        JobKind::Purge => purge_problems(job, &key, out),
        JobKind::PostfixMap => {
            if let Some(f) = &job.folder {
                out.push(format!(
                    "{} = {f:?}: only a purge has a folder",
                    key("folder")
                ));
            }
            if let Some(d) = job.older_than_days {
                out.push(format!(
                    "{} = {d}: only a purge has an age rule",
                    key("older_than_days")
                ));
            }
        }
    }
}

fn purge_problems(job: &JobConfig, key: &dyn Fn(&str) -> String, out: &mut Vec<String>) {
    match job.folder.as_deref() {
        None => out.push(format!(
            "{}: missing; a purge needs a folder",
            key("folder")
        )),
        Some(f) if f.trim().is_empty() || f.chars().any(char::is_control) => {
            out.push(format!("{} = {f:?}: not a folder name", key("folder")))
        }
        Some(f) if f.eq_ignore_ascii_case("INBOX") => {
            out.push(format!("{} = {f:?}: INBOX is never purged", key("folder")))
        }
        Some(_) => {}
    }
    if let Some(d) = job.older_than_days.filter(|d| *d > MAX_AGE_DAYS) {
        out.push(format!(
            "{} = {d}: must be <= {MAX_AGE_DAYS}",
            key("older_than_days")
        ));
    }
    if !(1..=MAX_WINDOW_MINUTES).contains(&job.window_minutes) {
        out.push(format!(
            "{} = {}: must be 1..={MAX_WINDOW_MINUTES}",
            key("window_minutes"),
            job.window_minutes
        ));
    }
    let rate = job.max_purges_per_s;
    // At least one purge a minute: the per-minute budget is floor(60 * rate).
    if !(rate.is_finite() && (1.0 / 60.0..=MAX_RATE).contains(&rate)) {
        out.push(format!(
            "{} = {rate}: must be between 1/60 (one a minute) and {MAX_RATE}",
            key("max_purges_per_s")
        ));
    }
}

/// Why `expr` is not a schedule: the readable pre-check, then `cron`
/// itself, then whether it ever fires (`0 0 0 30 2 *` does not).
fn cron_problem(expr: &str) -> Option<String> {
    if let Some(problem) = shape_problem(expr) {
        return Some(problem);
    }
    match expr.parse::<cron::Schedule>() {
        Err(e) => Some(e.to_string()),
        Ok(s) if s.after(&chrono::DateTime::UNIX_EPOCH).next().is_none() => {
            Some("never fires".into())
        }
        Ok(_) => None,
    }
}

#[cfg(test)]
mod scheduler_tests {
    use super::*;

    fn read(text: &str) -> Result<SchedulerConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn scheduler_defaults_have_no_problems_and_match_the_issue() {
        let cfg = SchedulerConfig::default();
        assert_eq!(cfg.problems(), Vec::<String>::new());
        assert_eq!(cfg.tick_every_s, 60);
        let trash = &cfg.jobs["trash-purge"];
        assert_eq!(
            (trash.cron.as_str(), trash.kind),
            ("0 0 0 * * *", JobKind::Purge)
        );
        assert_eq!(trash.folder.as_deref(), Some("Trash"));
        let spam = &cfg.jobs["spam-purge"];
        assert_eq!(
            (spam.cron.as_str(), spam.folder.as_deref()),
            ("0 0 0 1 * *", Some("Spam"))
        );
        let map = &cfg.jobs["postfix-map"];
        assert_eq!(
            (map.cron.as_str(), map.kind),
            ("0 */10 * * * *", JobKind::PostfixMap)
        );
        assert_eq!(map.folder, None);
    }

    #[test]
    fn scheduler_a_bad_cron_names_the_job_key_and_the_expression() {
        let mut cfg = SchedulerConfig::default();
        for (job, cron) in [
            ("trash-purge", "0 0 25 * * *"),
            ("spam-purge", "0 0 0 30 2 *"),
            ("postfix-map", "0 0 0 * * Funday"),
        ] {
            cfg.jobs.insert(job.into(), JobConfig::postfix_map(cron));
        }
        let problems = cfg.problems();
        assert!(
            problems.contains(
                &"scheduler.jobs.trash-purge.cron = \"0 0 25 * * *\": hour 25 out of range 0-23"
                    .into()
            ),
            "{problems:?}"
        );
        assert!(
            problems
                .contains(&"scheduler.jobs.spam-purge.cron = \"0 0 0 30 2 *\": never fires".into()),
            "{problems:?}"
        );
        let map = problems
            .iter()
            .find(|p| p.contains("postfix-map"))
            .cloned()
            .unwrap_or_default();
        assert!(
            map.starts_with("scheduler.jobs.postfix-map.cron = \"0 0 0 * * Funday\": "),
            "{map}"
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn scheduler_every_problem_names_key_and_value() {
        let mut cfg = SchedulerConfig {
            tick_every_s: 0,
            max_catch_up_runs: 0,
            ..SchedulerConfig::default()
        };
        let bad = JobConfig {
            older_than_days: Some(99_999),
            window_minutes: 0,
            max_purges_per_s: f64::NAN,
            ..JobConfig::purge("0 0 0 * * *", "inbox")
        };
        cfg.jobs.insert("bad purge".into(), bad);
        cfg.jobs.insert(
            "no-folder".into(),
            JobConfig {
                kind: JobKind::Purge,
                ..JobConfig::postfix_map("0 0 0 * * *")
            },
        );
        let problems = cfg.problems().join("\n");
        for expected in [
            "scheduler.tick_every_s = 0: must be 1..=86400",
            "scheduler.max_catch_up_runs = 0",
            "scheduler.jobs.\"bad purge\": a job name",
            "scheduler.jobs.bad purge.folder = \"inbox\": INBOX is never purged",
            "scheduler.jobs.bad purge.older_than_days = 99999",
            "scheduler.jobs.bad purge.window_minutes = 0",
            "scheduler.jobs.bad purge.max_purges_per_s = NaN",
            "scheduler.jobs.no-folder.folder: missing",
        ] {
            assert!(problems.contains(expected), "{expected} not in\n{problems}");
        }
    }

    #[test]
    fn scheduler_config_reads_toml_refuses_unknown_keys_and_defaults_the_rest() {
        let cfg = read(
            "tick_every_s = 30\n[jobs.trash-purge]\ncron = \"0 0 1 * * *\"\n\
             kind = \"purge\"\nfolder = \"Trash\"\nolder_than_days = 1\n",
        )
        .unwrap();
        assert_eq!(cfg.tick_every_s, 30);
        assert_eq!(cfg.jobs.len(), 1, "listing jobs replaces the defaults");
        let trash = &cfg.jobs["trash-purge"];
        assert_eq!((trash.window_minutes, trash.max_purges_per_s), (240, 5.0));
        assert_eq!(trash.received_before(10 * DAY_MS), Some(9 * DAY_MS));
        let err = read("tick_s = 1").unwrap_err().to_string();
        assert!(err.contains("unknown field `tick_s`"), "{err}");
        let err = read("[jobs.x]\ncron = \"* * * * * *\"\nkind = \"purge\"\nfoldr = \"T\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `foldr`"), "{err}");
        let err = read("[jobs.x]\ncron = \"* * * * * *\"\nkind = \"vacuum\"").unwrap_err();
        assert!(err.to_string().contains("vacuum"), "{err}");
    }
}
