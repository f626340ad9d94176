//! `mailfleet postfix-map`: installs Postfix's recipient map
//! (`virtual_mailbox_maps`) on each `postfix-map` job run, so that Postfix
//! itself refuses mail for unknown and closed accounts with `550`, without
//! asking anyone per mail.
//!
//! **Source: the account status projection, not LDAP.** The map is
//! rendered ([`crate::postfix_map::render`]) from the
//! compacted `accounts.status` topic, the record the LMTP server checks at
//! RCPT, with the same rule (`AccountStatus::takes_mail`): Postfix and LMTP
//! cannot disagree, and LDAP is only a later copy of the same events kept
//! by the directory consumer, so reading it would add a lag and a second
//! source of truth, and make the map depend on slapd being up.
//!
//! **Installing.** One process per Postfix host (each host has its own
//! map file); it follows the status topic from the beginning and the jobs
//! topic, and on each run (and once at start) renders the map and, only if
//! its digest differs from the installed file's, writes `<path>.tmp`, runs
//! `postmap -c <dir> <type>:<path>.tmp`, and renames the table and then the
//! source into place: Postfix sees the old table or the new one, never a
//! half-written one, and picks the new one up at its next SMTP session.
//! Nothing is installed while the projection is still catching up: a
//! partial map would refuse mail for every account not read yet.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mailfleet_events::{accounts::AccountStatus, scheduler::JobDue, Registry};
use mailfleet_runtime::{follow::follow, metrics as m, RuntimeError, Shutdown};
use rdkafka::Message;
use sha2::{Digest, Sha256};

use crate::{
    postfix_map::{render, PostfixMap},
    PostfixMapConfig, ProcessConfig, SchedulerError,
};

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The map changed and is in place.
    Written,
    /// The installed map already says the same.
    Unchanged,
}

/// The file postmap writes beside the source for `map_type`.
fn table_suffix(map_type: &str) -> Result<&'static str, SchedulerError> {
    match map_type {
        "hash" | "btree" => Ok(".db"),
        "lmdb" => Ok(".lmdb"),
        "cdb" => Ok(".cdb"),
        other => Err(SchedulerError::CheckMapType {
            map_type: other.to_string(),
        }),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The digest of the installed map, if both its source and its table exist.
fn installed_digest(cfg: &PostfixMapConfig) -> Result<Option<String>, SchedulerError> {
    let table = with_suffix(&cfg.path, table_suffix(&cfg.map_type)?);
    match (fs::read(&cfg.path), table.exists()) {
        (Ok(text), true) => Ok(Some(hex::encode(Sha256::digest(&text)))),
        (Ok(_), false) => Ok(None),
        (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        (Err(source), _) => Err(SchedulerError::ReadMap {
            path: cfg.path.clone(),
            source,
        }),
    }
}

/// Install `map` at `cfg.path` unless the installed one is the same.
pub fn install(cfg: &PostfixMapConfig, map: &PostfixMap) -> Result<Installed, SchedulerError> {
    if !map.differs_from(installed_digest(cfg)?.as_deref()) {
        return Ok(Installed::Unchanged);
    }
    let suffix = table_suffix(&cfg.map_type)?;
    let tmp = with_suffix(&cfg.path, ".tmp");
    let dir = cfg
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|source| SchedulerError::CreateMapDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let write = |source: std::io::Error| SchedulerError::WriteMap {
        path: tmp.clone(),
        source,
    };
    let mut file = fs::File::create(&tmp).map_err(write)?;
    file.write_all(map.text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write)?;
    let mut postmap = Command::new(&cfg.postmap);
    if !cfg.postfix_config_dir.as_os_str().is_empty() {
        postmap.arg("-c").arg(&cfg.postfix_config_dir);
    }
    let target = format!("{}:{}", cfg.map_type, tmp.display());
    let out = postmap
        .arg(&target)
        .output()
        .map_err(|source| SchedulerError::RunPostmap {
            postmap: cfg.postmap.clone(),
            target: target.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(SchedulerError::BuildTable {
            postmap: cfg.postmap.clone(),
            target,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let rename = |from: &Path, to: &Path| {
        fs::rename(from, to).map_err(|source| SchedulerError::RenameMap {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        })
    };
    // The table first: it is what Postfix reads.
    rename(&with_suffix(&tmp, suffix), &with_suffix(&cfg.path, suffix))?;
    rename(&tmp, &cfg.path)?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SchedulerError::SyncMapDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok(Installed::Written)
}

/// Every account's status, from the status projection; `None` while it
/// catches up.
pub trait Statuses: Fn() -> Option<Vec<(String, AccountStatus)>> {}

impl<F: Fn() -> Option<Vec<(String, AccountStatus)>>> Statuses for F {}

/// Render from the projection and install; `None` while it catches up.
fn run_once(
    cfg: &PostfixMapConfig,
    statuses: &impl Statuses,
) -> Option<Result<(), SchedulerError>> {
    let snapshot = statuses()?;
    let map = render(snapshot.iter().map(|(a, s)| (a.as_str(), *s)));
    for r in &map.rejected {
        tracing::warn!(address = %r, "left out of the Postfix map");
    }
    let result = install(cfg, &map);
    let outcome = match &result {
        Ok(Installed::Written) => "installed",
        Ok(Installed::Unchanged) => "unchanged",
        Err(_) => "failed",
    };
    metrics::counter!(m::POSTFIX_MAP_RUNS, "result" => outcome).increment(1);
    match &result {
        Ok(_) => {
            metrics::gauge!(m::POSTFIX_MAP_ENTRIES).set(map.entries as f64);
            tracing::info!(path = %cfg.path.display(), entries = map.entries,
                rejected = map.rejected.len(), digest = %map.digest, outcome, "postfix map");
            println!(
                "postfix map {}: {} entries, {} left out, sha256 {} ({outcome})",
                cfg.path.display(),
                map.entries,
                map.rejected.len(),
                map.digest
            );
        }
        Err(e) => tracing::error!(error = chain(e), "postfix map not installed"),
    }
    Some(result.map(|_| ()))
}

/// `e` and its sources, `: `-separated (as `anyhow` shows an error chain).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// Serve until SIGTERM (or, with `once`, install once and return). The
/// statuses come from `follow_statuses(status_topic)`: the binary starts
/// the account status projection there
/// (`mailfleet_lifecycle::status::StatusProjection::follow`) and hands in
/// its snapshot.
pub async fn run<S: Statuses>(
    cfg: &ProcessConfig<'_>,
    once: bool,
    follow_statuses: impl FnOnce(&str) -> Result<S, RuntimeError>,
    shutdown: Shutdown,
) -> Result<(), SchedulerError> {
    let pm = cfg.scheduler.postfix_map.clone();
    table_suffix(&pm.map_type)?;
    let statuses = follow_statuses(&pm.status_topic)?;
    let wait = Duration::from_millis(500);
    if once {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(result) = run_once(&pm, &statuses) {
                shutdown.trigger();
                return result;
            }
            if Instant::now() >= deadline {
                return Err(SchedulerError::CatchUpStatuses {
                    topic: pm.status_topic,
                });
            }
            tokio::time::sleep(wait).await;
        }
    }
    // The newest postfix-map run seen on the jobs topic.
    let newest = Arc::new(AtomicI64::new(i64::MIN));
    let seen = newest.clone();
    let jobs = follow(
        cfg.kafka,
        &cfg.scheduler.jobs_topic,
        "postfix-map-jobs",
        shutdown.clone(),
        move |msg| {
            if let Ok(j) = Registry::builtin().decode::<JobDue>(msg.payload().unwrap_or_default()) {
                if j.kind == "postfix-map" {
                    seen.fetch_max(j.due_at, Ordering::AcqRel);
                }
            }
        },
    )?;
    // At start (a new or restarted host must not wait for the next run),
    // then on each run; a failed install is tried again at the next look.
    let mut done: Option<i64> = None;
    loop {
        let due = newest.load(Ordering::Acquire);
        if jobs.caught_up() && done.is_none_or(|d| due > d) {
            if let Some(Ok(())) = run_once(&pm, &statuses) {
                done = Some(due);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in postmap: copies `<file>` to `<file>.db` (or fails).
    fn fake_postmap(dir: &Path, fail: bool) -> String {
        let script = dir.join("postmap");
        let body = if fail {
            "#!/bin/sh\necho 'postmap: fatal: bad' >&2\nexit 1\n".to_string()
        } else {
            "#!/bin/sh\n[ \"$1\" = -c ] && shift 2\ncp \"${1#*:}\" \"${1#*:}.db\"\n".to_string()
        };
        fs::write(&script, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        script.display().to_string()
    }

    #[test]
    fn postfix_map_install_writes_once_and_skips_an_unchanged_map() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PostfixMapConfig {
            path: dir.path().join("recipients"),
            postmap: fake_postmap(dir.path(), false),
            postfix_config_dir: dir.path().to_path_buf(),
            ..PostfixMapConfig::default()
        };
        let map = render([
            ("a@x.test", AccountStatus::Active),
            ("b@x.test", AccountStatus::Inactive),
        ]);
        assert_eq!(install(&cfg, &map).unwrap(), Installed::Written);
        assert_eq!(
            fs::read_to_string(dir.path().join("recipients.db")).unwrap(),
            "a@x.test OK\n"
        );
        assert!(!dir.path().join("recipients.tmp").exists());
        assert_eq!(install(&cfg, &map).unwrap(), Installed::Unchanged);
        fs::remove_file(dir.path().join("recipients.db")).unwrap();
        assert_eq!(
            install(&cfg, &map).unwrap(),
            Installed::Written,
            "a missing table is rewritten"
        );
        let next = render([("b@x.test", AccountStatus::Active)]);
        assert_eq!(install(&cfg, &next).unwrap(), Installed::Written);
        assert_eq!(
            fs::read_to_string(dir.path().join("recipients")).unwrap(),
            "b@x.test OK\n"
        );
    }

    #[test]
    fn postfix_map_a_failing_postmap_leaves_the_installed_map_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = PostfixMapConfig {
            path: dir.path().join("recipients"),
            postmap: fake_postmap(dir.path(), false),
            postfix_config_dir: PathBuf::new(),
            ..PostfixMapConfig::default()
        };
        let map = render([("a@x.test", AccountStatus::Active)]);
        install(&cfg, &map).unwrap();
        let broken = dir.path().join("broken");
        fs::create_dir(&broken).unwrap();
        cfg.postmap = fake_postmap(&broken, true);
        let err = install(&cfg, &render([])).unwrap_err().to_string();
        assert!(err.contains("postmap: fatal: bad"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join("recipients.db")).unwrap(),
            "a@x.test OK\n",
            "the old map stays"
        );
        cfg.map_type = "mysql".into();
        let err = install(&cfg, &map).unwrap_err().to_string();
        assert!(err.contains("map_type = \"mysql\""), "{err}");
    }
}
