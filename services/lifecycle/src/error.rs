//! The lifecycle crate's one error type.

/// What the lifecycle and the deleter can fail at, named after what was
/// being read.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A stored account record of the wrong size.
    #[error("account of {0} bytes, expected 17")]
    AccountSize(usize),
    /// A stored account record with an unknown status byte.
    #[error("account status byte {0:#04x}")]
    StatusByte(u8),
    /// A stored saga record shorter than its fixed part.
    #[error("saga of {0} bytes, expected at least 10")]
    SagaSize(usize),
}
