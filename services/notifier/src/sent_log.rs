//! The sent-log: one small marker file per event id, which survives the
//! consumer's state and tells a re-run effect what already happened.
//!
//! `<dir>/<2 hex>/<sha256 of the event id>` holds `sending` before the SMTP
//! transaction and `sent` once the relay answered 250 to the message; each
//! write goes to a temporary file that is fsynced and renamed over the
//! marker, then the folder is fsynced, so a crash leaves the old marker or
//! the new one, never a torn one.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::error::NotifierError;

/// What the sent-log knows of one event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Nothing: never tried, or tried and nothing was sent.
    New,
    /// A transaction began and did not end with a known result: the mail
    /// may or may not have been sent.
    Sending,
    /// The relay accepted the mail.
    Sent,
}

/// The sent-log in one folder.
#[derive(Debug, Clone)]
pub struct SentLog {
    dir: PathBuf,
}

impl SentLog {
    /// Open (and create) the folder.
    pub fn open(dir: &Path) -> Result<SentLog, NotifierError> {
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
        Ok(SentLog {
            dir: dir.to_path_buf(),
        })
    }

    /// What is known of `event_id`. A marker that reads as neither state
    /// counts as `Sending`: when in doubt, do not send again.
    pub fn mark(&self, event_id: &str) -> Result<Mark, NotifierError> {
        let path = self.path(event_id);
        match fs::read_to_string(&path) {
            Ok(text) if text.starts_with("sent\n") => Ok(Mark::Sent),
            Ok(_) => Ok(Mark::Sending),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mark::New),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Record that the transaction for `event_id` begins.
    pub fn sending(&self, event_id: &str) -> Result<(), NotifierError> {
        self.write(event_id, "sending")
    }

    /// Record that the relay accepted the mail for `event_id`.
    pub fn sent(&self, event_id: &str) -> Result<(), NotifierError> {
        self.write(event_id, "sent")
    }

    /// Forget `event_id`: the transaction failed and nothing was sent.
    pub fn clear(&self, event_id: &str) -> Result<(), NotifierError> {
        let path = self.path(event_id);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path_parent(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing", &path)(e)),
        }
    }

    /// The marker file of `event_id`.
    pub fn path(&self, event_id: &str) -> PathBuf {
        let hex: String = Sha256::digest(event_id.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(&hex[..2]).join(hex)
    }

    fn write(&self, event_id: &str, state: &str) -> Result<(), NotifierError> {
        let path = self.path(event_id);
        let dir = path_parent(&path);
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(io("creating", &tmp))?;
        file.write_all(format!("{state}\n{event_id}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("renaming into", &path))?;
        sync_dir(dir)
    }
}

fn path_parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Make a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), NotifierError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NotifierError + 'a {
    move |source| NotifierError::SentLog {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_sent_log_moves_from_new_to_sending_to_sent() {
        let dir = tempfile::tempdir().unwrap();
        let log = SentLog::open(&dir.path().join("sent")).unwrap();
        let id = "lifecycle:accounts.events:3:17:1";
        assert_eq!(log.mark(id).unwrap(), Mark::New);
        log.sending(id).unwrap();
        assert_eq!(log.mark(id).unwrap(), Mark::Sending);
        log.sent(id).unwrap();
        assert_eq!(log.mark(id).unwrap(), Mark::Sent);
        assert_eq!(log.mark("another").unwrap(), Mark::New);

        // A failure that sent nothing clears the attempt; clearing twice is fine.
        log.sending("e-failed").unwrap();
        log.clear("e-failed").unwrap();
        log.clear("e-failed").unwrap();
        assert_eq!(log.mark("e-failed").unwrap(), Mark::New);

        // Reopened (a restart), it remembers; a torn marker counts as sending.
        let log = SentLog::open(&dir.path().join("sent")).unwrap();
        assert_eq!(log.mark(id).unwrap(), Mark::Sent);
        std::fs::create_dir_all(log.path("e-torn").parent().unwrap()).unwrap();
        std::fs::write(log.path("e-torn"), "se").unwrap();
        assert_eq!(log.mark("e-torn").unwrap(), Mark::Sending);
        let text = std::fs::read_to_string(log.path(id)).unwrap();
        assert_eq!(text, format!("sent\n{id}\n"));
    }
}
