//! The secrets scan (`docs/security.md`, "No plaintext passwords"): look
//! for each password of a test, plain or in base64 at any alignment, in
//! every record of the test's topics (raw key, value and headers, all
//! partitions), every file the test's processes wrote, and what the shared
//! servers (Kafka, slapd, Dovecot, Postfix) logged while it ran. A hit
//! names the topic, partition and offset, or the file and line.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use mailfleet_runtime::read::read_to_end;

use crate::{kafka, repo_root};

/// A secret to look for, by what it is.
pub struct Needle {
    what: String,
    forms: Vec<(String, Vec<u8>)>,
}

impl Needle {
    /// The password itself and its base64 (standard and URL-safe) at each
    /// of the three alignments it can take inside a longer base64 text.
    pub fn new(what: impl Into<String>, secret: &str) -> Needle {
        let mut forms = vec![("plain".to_string(), secret.as_bytes().to_vec())];
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = base64(&bytes);
            let (from, to) = ((shift * 8).div_ceil(6), bytes.len() * 8 / 6);
            let core = &encoded[from..to];
            forms.push((format!("base64@{shift}"), core.as_bytes().to_vec()));
            let url = core.replace('+', "-").replace('/', "_");
            forms.push((format!("base64url@{shift}"), url.into_bytes()));
        }
        Needle {
            what: what.into(),
            forms,
        }
    }

    /// The first form found in `haystack`: (form, byte offset).
    pub fn find(&self, haystack: &[u8]) -> Option<(&str, usize)> {
        self.forms.iter().find_map(|(form, n)| {
            haystack
                .windows(n.len())
                .position(|w| w == n.as_slice())
                .map(|at| (form.as_str(), at))
        })
    }
}

pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Every hit of any needle in `bytes`, described with `place(offset)`.
pub fn scan(needles: &[Needle], bytes: &[u8], place: impl Fn(usize) -> String) -> Vec<String> {
    needles
        .iter()
        .filter_map(|n| {
            n.find(bytes)
                .map(|(form, at)| format!("{} ({form}) in {}", n.what, place(at)))
        })
        .collect()
}

/// Every record of `topic` on the shared broker (all partitions, to their
/// current end) scanned: (records read, hits).
pub fn scan_topic(needles: &[Needle], topic: &str) -> anyhow::Result<(usize, Vec<String>)> {
    let records = read_to_end(&kafka(), topic, "secrets-scan")?;
    let mut hits = Vec::new();
    for r in &records {
        let mut parts = vec![r.key.clone().unwrap_or_default(), r.payload.clone()];
        for (key, value) in &r.headers {
            parts.push(key.as_bytes().to_vec());
            parts.push(value.clone().unwrap_or_default());
        }
        let place = format!(
            "topic {topic} partition {} offset {}",
            r.partition, r.offset
        );
        hits.extend(scan(needles, &parts.concat(), |_| place.clone()));
    }
    Ok((records.len(), hits))
}

/// `bytes` (the part of `name` after `lines_before` lines) scanned; hits
/// name the file and line.
fn scan_text(needles: &[Needle], name: &str, bytes: &[u8], lines_before: usize) -> Vec<String> {
    scan(needles, bytes, |at| {
        let line = lines_before + 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
        format!("{name}:{line}")
    })
}

/// `path` from byte `from` scanned; hits name the file and line.
pub fn scan_file(needles: &[Needle], path: &Path, from: u64) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path)?;
    let skip = (from as usize).min(bytes.len());
    let lines_before = bytes[..skip].iter().filter(|b| **b == b'\n').count();
    Ok(scan_text(
        needles,
        &path.display().to_string(),
        &bytes[skip..],
        lines_before,
    ))
}

pub use crate::notify::files_below;

/// Write `secret` to a new 0600 file at `path`, as an operator keeps one.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, secret.as_bytes())?;
    Ok(())
}

/// The shared servers' logs, marked where they end now: only what they
/// write from here on is the test's. Each must exist (`ops/test` starts
/// every one of them): a missing log fails the test rather than being
/// skipped, so the scan cannot pass by reading nothing.
pub struct SharedLogs {
    files: Vec<(PathBuf, u64)>,
    /// Postfix's maillog, read through `ops/postfix log` (its spool may be
    /// outside the run folder): the line count now.
    maillog_lines: usize,
}

/// The shared servers' log files in the run folder.
const LOG_FILES: [&str; 4] = [
    "ldap/slapd.log",
    "kafka/server.log",
    "kafka/kafka.out",
    "dovecot/dovecot.log",
];

fn run_dir() -> PathBuf {
    std::env::var_os("MAILFLEET_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("run"))
}

/// All of Postfix's maillog.
fn maillog() -> anyhow::Result<String> {
    let out = Command::new(repo_root().join("ops/postfix"))
        .args(["log", "100000000"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ops/postfix log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl SharedLogs {
    /// Mark the end of every log now.
    pub fn mark() -> anyhow::Result<SharedLogs> {
        let run = run_dir();
        let mut files = Vec::new();
        for name in LOG_FILES {
            let path = run.join(name);
            let len = std::fs::metadata(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e} (is the server running?)", path.display()))?
                .len();
            files.push((path, len));
        }
        Ok(SharedLogs {
            files,
            maillog_lines: maillog()?.lines().count(),
        })
    }

    /// How many logs are watched.
    pub fn len(&self) -> usize {
        self.files.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// What every log gained since [`SharedLogs::mark`], scanned; and how
    /// many lines were read.
    pub fn scan(&self, needles: &[Needle]) -> anyhow::Result<(usize, Vec<String>)> {
        let mut hits = Vec::new();
        let mut lines = 0;
        for (path, from) in &self.files {
            let bytes = std::fs::read(path)?;
            let skip = (*from as usize).min(bytes.len());
            lines += bytes[skip..].iter().filter(|b| **b == b'\n').count();
            hits.extend(scan_file(needles, path, *from)?);
        }
        let log = maillog()?;
        let new: Vec<&str> = log.lines().skip(self.maillog_lines).collect();
        lines += new.len();
        let text = new.join("\n");
        hits.extend(scan_text(
            needles,
            "postfix maillog",
            text.as_bytes(),
            self.maillog_lines,
        ));
        Ok((lines, hits))
    }
}
