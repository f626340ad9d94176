//! Mail ingest: how accepted mail enters the pipeline.
//!
//! - [`lmtp`]: the LMTP server Postfix delivers to. It stores each message
//!   once in the blob store (crate `mailfleet-blob`) and produces one
//!   `MessageReceived` per recipient before answering 250. The scanner
//!   consumer (crate `mailfleet-scanner`) takes it from there.

pub mod lmtp;
pub mod message;

/// Ingest failures.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("listening on {listen}: {source}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    /// `[lmtp.tls]` names a certificate or key that cannot be used.
    #[error("lmtp.tls: {0}")]
    Tls(#[from] mailfleet_tls::TlsError),
    #[error(transparent)]
    Blob(#[from] mailfleet_blob::BlobError),
    #[error(transparent)]
    Runtime(#[from] mailfleet_runtime::RuntimeError),
    /// The blocking task that stores a message did not finish.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}
