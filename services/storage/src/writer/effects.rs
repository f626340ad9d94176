//! The storage writer's I/O: Maildir deliveries, quarantine copies, purges.

use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use mailfleet_blob::BlobError;
use mailfleet_events::{
    accounts::{DeletionStep, DeletionStepCompleted, DeletionStepRequested},
    mail::{MailboxDeleted, MessageScanned, MessageStored, MessagesPurged, PurgeRequested},
    Envelope,
};
use mailfleet_runtime::{metrics as m, time::now_ms, Emit, Outcome};

use super::{decide::delivery_id, StorageWriter, NAME};
use crate::StorageError;

/// A replay of a delivery older than this looks in `cur/` too, where a
/// client may have moved the file (a fresh delivery cannot be there yet).
const FRESH_MS: i64 = 60_000;

impl StorageWriter {
    /// Write a clean message into its folder and report it.
    pub(super) fn deliver(&self, s: &MessageScanned) -> Outcome {
        let raw = match self.blobs.get(&s.blob_id) {
            Ok(raw) => raw,
            Err(e) => return blob_outcome(e),
        };
        let raw = super::spam::prepend(&raw, s);
        let folder = if s.spam.as_ref().is_some_and(|spam| spam.flagged) {
            self.cfg.spam_folder.clone()
        } else {
            self.rules.route(&raw)
        };
        let id = delivery_id(s);
        let name = self.maildirs.file_name(id, s.received_at, &raw);
        let replay = now_ms().saturating_sub(s.received_at) > FRESH_MS;
        let written = match self
            .maildirs
            .deliver(&s.account, &folder, &name, &raw, replay)
        {
            Ok(w) => w,
            Err(e) => return maildir_outcome(e),
        };
        let stored = MessageStored {
            envelope: Envelope::caused_by(&s.envelope, NAME),
            account: s.account.clone(),
            delivery_id: id.to_string(),
            folder,
            file: name.full,
            size: raw.len() as i64,
            stored_bytes: written.map_or(raw.len() as i64, |w| w as i64),
            blob_id: s.blob_id.clone(),
            received_at: s.received_at,
            message_id: s.message_id.clone(),
        };
        metrics::counter!(m::STORAGE_MESSAGES, "result" => "stored").increment(1);
        Outcome::Emitted(vec![Emit::new(
            &self.cfg.stored_topic,
            s.account.as_bytes(),
            stored,
        )])
    }

    /// Copy the message into the quarantine (admins only: 0700/0600).
    pub(super) fn quarantine(&self, s: &MessageScanned, path: &str) -> Outcome {
        let target = self.quarantine_dir.join(path);
        if target.exists() {
            return Outcome::Done;
        }
        let raw = match self.blobs.get(&s.blob_id) {
            Ok(raw) => raw,
            Err(e) => return blob_outcome(e),
        };
        match write_private(&target, &raw) {
            Ok(()) => {
                metrics::counter!(m::STORAGE_MESSAGES, "result" => "quarantined").increment(1);
                Outcome::Done
            }
            Err(e) => Outcome::Temporary(format!("quarantine {}: {e}", target.display())),
        }
    }

    /// Remove what the request asks for and report it.
    pub(super) fn purge(&self, p: &PurgeRequested) -> Outcome {
        let before = p.received_before.map(|ms| ms.div_euclid(1000));
        let removed = match self.maildirs.purge(&p.account, &p.folder, before) {
            Ok(r) => r,
            Err(e) => return maildir_outcome(e),
        };
        let purged = MessagesPurged {
            envelope: Envelope::caused_by(&p.envelope, NAME),
            account: p.account.clone(),
            folder: p.folder.clone(),
            count: removed.len() as i64,
            bytes: removed.iter().map(|(_, size)| *size as i64).sum(),
            files: removed.into_iter().map(|(name, _)| name).collect(),
            job: p.job.clone(),
        };
        tracing::info!(account = %p.account, folder = %p.folder, count = purged.count,
            bytes = purged.bytes, job = %p.job, "purged");
        metrics::counter!(m::STORAGE_MESSAGES, "result" => "purged").increment(purged.count as u64);
        Outcome::Emitted(vec![Emit::new(
            &self.cfg.stored_topic,
            p.account.as_bytes(),
            purged,
        )])
    }
}

impl StorageWriter {
    /// The deletion saga's Maildir step: remove the home, then say so on
    /// the stored topic (the indexer forgets the account, on a rebuild
    /// too) and to the saga.
    pub(super) fn delete_mailbox(&self, r: &DeletionStepRequested) -> Outcome {
        let (files, bytes) = match self.maildirs.remove_home(&r.account) {
            Ok(removed) => removed,
            Err(e) => return maildir_outcome(e),
        };
        tracing::info!(account = %r.account, files, bytes, "mailbox deleted");
        let envelope = || Envelope::caused_by(&r.envelope, NAME);
        let key = r.account.as_bytes();
        Outcome::Emitted(vec![
            Emit::new(
                &self.cfg.stored_topic,
                key,
                MailboxDeleted {
                    envelope: envelope(),
                    account: r.account.clone(),
                    files: files as i64,
                    bytes: bytes as i64,
                    reason: "account-deleted".into(),
                },
            ),
            Emit::new(
                &self.cfg.accounts_topic,
                key,
                DeletionStepCompleted {
                    envelope: envelope(),
                    account: r.account.clone(),
                    step: DeletionStep::Maildir,
                    detail: format!("removed {files} files, {bytes} bytes"),
                },
            ),
        ])
    }
}

/// A blob that is gone or corrupt never comes back: dead letter. An I/O
/// error may pass: retry.
fn blob_outcome(e: BlobError) -> Outcome {
    match e {
        BlobError::NotFound { .. } | BlobError::BadId(_) | BlobError::Corrupt { .. } => {
            Outcome::Permanent(e.to_string())
        }
        other => Outcome::Temporary(other.to_string()),
    }
}

fn maildir_outcome(e: StorageError) -> Outcome {
    match e {
        StorageError::BadAccount(_) | StorageError::BadFolder(_) => {
            Outcome::Permanent(e.to_string())
        }
        other => Outcome::Temporary(other.to_string()),
    }
}

fn write_private(target: &Path, raw: &[u8]) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let tmp = target.with_extension("tmp");
    let mut file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(raw)?;
    file.sync_all()?;
    fs::rename(&tmp, target)?;
    File::open(dir)?.sync_all()
}
