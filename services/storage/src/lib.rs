//! Mail storage: the storage writer ([`writer`]) puts clean mail into
//! Dovecot-readable Maildirs ([`maildir`]) within each account's quota,
//! quarantines the rest and carries out purges; the indexer ([`index`])
//! keeps a per-account index that can be rebuilt from the log at any time.

mod error;
pub mod index;
pub mod maildir;
pub mod usage;
pub mod writer;

pub use error::StorageError;
