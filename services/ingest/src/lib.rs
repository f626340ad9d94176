//! Mail ingest: how accepted mail enters the pipeline and gets scanned.
//!
//! - [`lmtp`]: the LMTP server Postfix delivers to. It stores each message
//!   once in the [`blob`] store and produces one `MessageReceived` per
//!   recipient before answering 250.
//! - [`scanner`]: the consumer that scans each received message with
//!   clamd and the attachment policy (crate `mailfleet-scan`) and emits
//!   `MessageScanned`.

pub mod blob;
pub mod lmtp;
pub mod message;
pub mod scanner;

use serde::Deserialize;

/// `[blobs]`: where raw messages are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// The blob store's folder, shared by the LMTP servers and the
    /// scanners of one host.
    pub dir: String,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            dir: "run/blobs".into(),
        }
    }
}

/// Ingest failures.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("listening on {listen}: {source}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Blob(#[from] blob::BlobError),
    #[error(transparent)]
    Runtime(#[from] mailfleet_runtime::RuntimeError),
}
