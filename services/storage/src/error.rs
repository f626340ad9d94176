//! The storage crate's one error type.

use std::path::PathBuf;

/// What storage can fail at: Maildir work (each naming the path), the
/// writer's recorded settings, and state values that do not read back.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An account name that cannot be a mailbox path.
    #[error("account {0:?} cannot be a mailbox path (needs user@domain, no '/', no leading dot)")]
    BadAccount(String),
    /// A folder name that cannot be a Maildir++ folder.
    #[error("folder {0:?} is not a valid folder name")]
    BadFolder(String),
    /// Creating a Maildir folder or file failed.
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a message file failed.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading a Maildir folder or file failed.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Removing a message file or a mailbox failed.
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Compressing a message file failed.
    #[error("compressing for {path}: zstd error {code}")]
    Compress { path: PathBuf, code: usize },
    /// A stored index entry whose layout does not add up.
    #[error("message entry of {0} bytes is malformed")]
    MessageEntry(usize),
    /// A stored delivery state that is none of the known ones.
    #[error("delivery state {0:?}")]
    DeliveryState(Vec<u8>),
    /// A stored quota record shorter than its fixed part.
    #[error("quota of {0} bytes, expected at least 10")]
    QuotaSize(usize),
}
