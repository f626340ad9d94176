//! The local Postfix and Dovecot, as `ops/` runs them: what the bench
//! reads from them, changes in them and puts back.

use std::{
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_fleet::config::Config;
use mailfleet_scan::clamd::Clamd;
use tokio::{io::AsyncWriteExt, process::Command};

use super::{
    plan::{Batch, Plan},
    Side, StoreLoad, POLL,
};

/// The folder `ops/` runs the services in (`MAILFLEET_RUN_DIR`, else `run`).
fn run_dir() -> PathBuf {
    PathBuf::from(std::env::var("MAILFLEET_RUN_DIR").unwrap_or_else(|_| "run".into()))
}

/// The local Postfix's `main.cf`, as `ops/postfix` wrote it.
pub(in crate::bench) struct MainCf {
    /// Its folder (`postconf -c`).
    pub(in crate::bench) conf_dir: PathBuf,
    pub(in crate::bench) text: String,
}

impl MainCf {
    pub(in crate::bench) fn read() -> anyhow::Result<MainCf> {
        let conf_dir = run_dir().join("postfix/etc");
        let path = conf_dir.join("main.cf");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: run `ops/postfix start` (from the repository root)",
                path.display()
            )
        })?;
        Ok(MainCf { conf_dir, text })
    }

    /// The value of `key` (`key = value`), if it is set.
    pub(in crate::bench) fn setting(&self, key: &str) -> Option<String> {
        self.text.lines().find_map(|l| {
            let value = l.strip_prefix(key)?.trim_start().strip_prefix('=')?;
            Some(value.trim().to_string())
        })
    }
}

/// The local Postfix and Dovecot as `ops/` runs them, and what the bench
/// changes in them (Postfix's transport, Dovecot users) to put back.
pub(super) struct Ops {
    /// Of every bench account's local part: `bs<hex>`.
    pub(super) prefix: String,
    domain: String,
    postfix_conf: PathBuf,
    /// Postfix's `virtual_transport` before the bench.
    transport: String,
    pub(super) maillog: PathBuf,
    /// Dovecot's mail root.
    pub(super) mail_root: PathBuf,
    /// Dovecot's passwd file of the domain.
    passwd: PathBuf,
    /// `<uid>:<gid>` of Dovecot's mail user.
    mail_owner: String,
}

impl Ops {
    pub(super) fn read(load: &StoreLoad, prefix: &str) -> anyhow::Result<Ops> {
        let main_cf = MainCf::read()?;
        let setting = |key: &str| main_cf.setting(key);
        let dovecot = run_dir().join("dovecot");
        let mail_root = std::fs::read_to_string(dovecot.join("mail_root"))
            .context("reading Dovecot's mail root: run `ops/dovecot start`")?;
        Ok(Ops {
            prefix: prefix.to_string(),
            domain: load.domain.clone(),
            transport: setting("virtual_transport").context("main.cf has no virtual_transport")?,
            maillog: setting("maillog_file")
                .context("main.cf has no maillog_file")?
                .into(),
            postfix_conf: main_cf.conf_dir,
            mail_root: mail_root.trim().into(),
            passwd: dovecot.join("passwd").join(&load.domain),
            mail_owner: std::fs::read_to_string(dovecot.join("mail_owner")).unwrap_or_default(),
        })
    }

    /// The owner mailfleet's files get: Dovecot's mail user, when running as root.
    pub(super) fn owner(&self) -> (Option<u32>, Option<u32>) {
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        match self.mail_owner.trim().split_once(':') {
            Some((uid, gid)) if root => (uid.parse().ok(), gid.parse().ok()),
            _ => (None, None),
        }
    }

    pub(super) async fn preflight(&self, cfg: &Config) -> anyhow::Result<()> {
        Clamd::new(cfg.consumers.scanner.clamd.clone())
            .ping()
            .await
            .context("clamd does not answer PING: run `ops/clamav start`")?;
        for service in ["ops/dovecot", "ops/postfix"] {
            let (ok, out) = shell(service, &["status"], &[], None).await?;
            anyhow::ensure!(ok, "{service} status: {out}: run `{service} start`");
        }
        let conf = self.postfix_conf.display().to_string();
        let (_, queue) = shell("postqueue", &["-c", &conf, "-p"], &[], None).await?;
        if !queue.contains("Mail queue is empty") {
            let summary = queue.lines().last().unwrap_or_default();
            println!("note: Postfix's queue is not empty ({summary}); only this run's accounts are counted");
        }
        Ok(())
    }

    /// Point Postfix's `virtual_transport` at `transport` (a reload).
    pub(super) async fn set_transport(&self, transport: &str) -> anyhow::Result<()> {
        let env = [("MAILFLEET_POSTFIX_TRANSPORT", transport)];
        let (ok, out) = shell("ops/postfix", &["start"], &env, None).await?;
        anyhow::ensure!(ok, "ops/postfix start with transport {transport}: {out}");
        Ok(())
    }

    /// Add the Dovecot side's accounts to Dovecot's passwd file, under the
    /// lock `ops/dovecot adduser` takes (one hash for all: LMTP only looks up).
    pub(super) async fn add_dovecot_users(&self, plan: &Plan) -> anyhow::Result<()> {
        let pw = ["pw", "-s", "SHA512-CRYPT", "-p", &self.prefix];
        let (ok, hash) = shell("doveadm", &pw, &[], None).await?;
        anyhow::ensure!(ok, "doveadm pw: {hash}");
        let lines: String = plan
            .0
            .iter()
            .filter(|b| b.side == Side::Dovecot)
            .flat_map(|b| &b.users)
            .filter_map(|u| u.split_once('@'))
            .map(|(user, _)| format!("{user}:{hash}\n"))
            .collect();
        self.passwd_locked("touch \"$0\" && cat >> \"$0\"", Some(lines))
            .await
    }

    /// Run `script` under `sh` with the passwd file as `$0` and the bench's
    /// account prefix as `$1`, holding the lock `ops/dovecot adduser` takes.
    async fn passwd_locked(&self, script: &str, stdin: Option<String>) -> anyhow::Result<()> {
        let lock = self.passwd.with_file_name(format!(".{}.lock", self.domain));
        let lock = lock.display().to_string();
        let file = self.passwd.display().to_string();
        let prefix = format!("{}-", self.prefix);
        let args = [lock.as_str(), "sh", "-c", script, &file, &prefix];
        let (ok, out) = shell("flock", &args, &[], stdin).await?;
        anyhow::ensure!(ok, "editing {file}: {out}");
        Ok(())
    }

    /// Put back Postfix's transport; remove the bench's Dovecot users,
    /// their Maildirs, and its mail still in Postfix's queue. Every step
    /// runs; the first failure is returned.
    pub(super) async fn restore(&self) -> anyhow::Result<()> {
        let transport = self.set_transport(&self.transport).await;
        let script =
            "grep -v \"^$1\" \"$0\" > \"$0.tmp\"; chmod 0644 \"$0.tmp\" && mv \"$0.tmp\" \"$0\"";
        let users = self.passwd_locked(script, None).await;
        let prefix = format!("{}-", self.prefix);
        let domain = self.mail_root.join(&self.domain);
        for entry in std::fs::read_dir(&domain).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let queue = self.purge_queue().await;
        transport.and(users).and(queue)
    }

    /// Delete this run's messages still in Postfix's queue (after a failure).
    async fn purge_queue(&self) -> anyhow::Result<()> {
        let conf = self.postfix_conf.display().to_string();
        let (_, json) = shell("postqueue", &["-c", &conf, "-j"], &[], None).await?;
        let ours = |m: &serde_json::Value| {
            let to = m["recipients"].as_array().into_iter().flatten();
            to.filter_map(|r| r["address"].as_str())
                .any(|a| a.starts_with(&self.prefix))
        };
        let ids: String = json
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(ours)
            .filter_map(|m| Some(format!("{}\n", m["queue_id"].as_str()?)))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        println!(
            "removing {} bench messages from Postfix's queue",
            ids.lines().count()
        );
        let (ok, out) = shell("postsuper", &["-c", &conf, "-d", "-"], &[], Some(ids)).await?;
        anyhow::ensure!(ok, "postsuper -d: {out}");
        Ok(())
    }

    /// Postfix's maillog for the batch's recipients, from byte `from`:
    /// delay= and delays=a/b/c/d of each delivered message. postlogd
    /// writes asynchronously: waits up to 2 s for all of them.
    pub(super) async fn delays(&self, from: u64, batch: &Batch) -> Vec<[f64; 5]> {
        let to = format!("to=<{}-", batch.tag);
        let started = Instant::now();
        loop {
            let text = std::fs::read(&self.maillog).unwrap_or_default();
            let tail = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
            let found: Vec<[f64; 5]> = tail
                .lines()
                .filter(|l| l.contains(&to) && l.contains("status=sent"))
                .filter_map(parse_delays)
                .collect();
            if found.len() >= batch.messages || started.elapsed() > Duration::from_secs(2) {
                return found;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `delay=0.12, delays=0.01/0/0/0.11` of one maillog line.
pub(super) fn parse_delays(line: &str) -> Option<[f64; 5]> {
    let field = |name: &str| {
        let start = line.find(name)? + name.len();
        line[start..].split(',').next()
    };
    let mut out = [field(" delay=")?.parse().ok()?, 0.0, 0.0, 0.0, 0.0];
    for (slot, part) in out[1..].iter_mut().zip(field(" delays=")?.split('/')) {
        *slot = part.parse().ok()?;
    }
    Some(out)
}

/// Run a program; (success, its stdout and stderr, trimmed).
pub(in crate::bench) async fn shell(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<String>,
) -> anyhow::Result<(bool, String)> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (from the repository root)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let text = [out.stdout, out.stderr].concat();
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&text).trim().to_string(),
    ))
}
