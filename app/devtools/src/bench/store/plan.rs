//! The run's plan: every batch, in order, and what each gave.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::{Phase, Side, StoreLoad};
use crate::bench::{corpus::base64_noise, cpu::Cpu};

/// One batch of messages to fresh accounts, through one side.
pub(super) struct Batch {
    pub(super) side: Side,
    pub(super) phase: Phase,
    pub(super) round: usize,
    /// Unique in the run, in every account and Message-ID of the batch.
    pub(super) tag: String,
    /// Full addresses.
    pub(super) users: Vec<String>,
    pub(super) messages: usize,
    /// Messages per second; `None`: flat out.
    pub(super) rate: Option<f64>,
    pub(super) seed: u64,
}

impl Batch {
    /// The raw message `i` (CRLF; no line starts with a dot) and its Message-ID.
    pub(super) fn message(&self, i: usize, bytes: usize) -> (String, Vec<u8>) {
        let id = format!("{}-{i}@bench.example.net", self.tag);
        let to = self.recipient(i);
        let mut raw = format!(
            "Message-ID: <{id}>\r\nFrom: Bench <bench@example.net>\r\nTo: <{to}>\r\n\
             Subject: store bench {i}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nThe photo from today.\r\n--b{i}\r\n\
             Content-Type: image/jpeg; name=\"photo-{i}.jpg\"\r\n\
             Content-Disposition: attachment; filename=\"photo-{i}.jpg\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        )
        .into_bytes();
        let tail = format!("--b{i}--\r\n");
        // Whole base64 lines (76 characters and CRLF), unique per message.
        let fill = bytes.saturating_sub(raw.len() + tail.len()) / 78 * 78;
        raw.extend(base64_noise(self.seed ^ i as u64, fill));
        raw.extend(tail.as_bytes());
        (id, raw)
    }

    pub(super) fn recipient(&self, i: usize) -> &str {
        &self.users[i % self.users.len()]
    }

    /// The `new/` folder of each account's INBOX under `root`.
    pub(super) fn inboxes(&self, root: &Path) -> Vec<PathBuf> {
        self.users
            .iter()
            .filter_map(|u| u.split_once('@'))
            .map(|(user, domain)| root.join(domain).join(user).join("Maildir/new"))
            .collect()
    }
}

/// Every batch of the run, in order: per round and side a warm-up, flat
/// out, paced.
pub(super) struct Plan(pub(super) Vec<Batch>);

impl Plan {
    pub(super) fn new(load: &StoreLoad, prefix: &str) -> Plan {
        let paced = (load.rate * load.rate_seconds).round().max(1.0) as usize;
        let mut batches = Vec::new();
        for round in 1..=load.rounds.max(1) {
            for side in [Side::Dovecot, Side::Mailfleet] {
                for (phase, messages, rate) in [
                    (Phase::WarmUp, load.sessions.max(1), None),
                    (Phase::FlatOut, load.messages.max(1), None),
                    (Phase::Paced, paced, Some(load.rate)),
                ] {
                    let first = |s: &str| s[..1].to_lowercase();
                    let tag = format!(
                        "{prefix}-{round}{}{}",
                        first(side.name()),
                        first(phase.name())
                    );
                    let n = load.users.clamp(1, messages);
                    batches.push(Batch {
                        side,
                        phase,
                        round,
                        users: (0..n)
                            .map(|k| format!("{tag}-{k}@{}", load.domain))
                            .collect(),
                        tag,
                        messages,
                        rate,
                        seed: rand::random(),
                    });
                }
            }
        }
        Plan(batches)
    }
}

/// What one batch gave.
pub(super) struct BatchRun {
    pub(super) batch: Batch,
    /// First connection to the newest file's ctime.
    pub(super) secs: f64,
    /// How long Postfix took to accept all of them.
    pub(super) inject_secs: f64,
    pub(super) cpu: Cpu,
    /// Wall time `cpu` covers.
    pub(super) cpu_secs: f64,
    /// Per message, Postfix's `250` after DATA to the file, ms.
    pub(super) e2e_ms: Vec<f64>,
    /// Postfix's maillog per message: delay= and delays=a/b/c/d, s.
    pub(super) delays: Vec<[f64; 5]>,
    /// File name → ctime (ms since the epoch).
    pub(super) files: HashMap<String, f64>,
}
