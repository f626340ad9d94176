//! The greylist crate's one error type.

use mailfleet_runtime::RuntimeError;

/// What the greylist can fail at: reading its whitelists and its settings.
#[derive(Debug, thiserror::Error)]
pub enum GreylistError {
    /// A whitelist file could not be read.
    #[error("reading whitelist {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A whitelist line's `/regex/` does not compile.
    #[error("{path} line {line}: {source}: {text:?}")]
    Regex {
        path: String,
        line: usize,
        text: String,
        #[source]
        source: regex::Error,
    },
    /// A client whitelist line that is no address, network or host name.
    #[error("{path} line {line}: not an address, network or host name: {text:?}")]
    NotAClient {
        path: String,
        line: usize,
        text: String,
    },
    /// A recipient whitelist line that is no address.
    #[error("{path} line {line}: not an address: {text:?}")]
    NotARecipient {
        path: String,
        line: usize,
        text: String,
    },
    /// The settings could not be put in their recorded form.
    #[error("{0}")]
    Settings(#[from] RuntimeError),
    /// Recorded settings are not the greylist's rules as JSON.
    #[error("{0}")]
    ReadRules(#[source] serde_json::Error),
    /// Recorded settings give a config with these problems.
    #[error("{}", .0.join("; "))]
    InvalidRules(Vec<String>),
    /// A stored auto-whitelist count that does not fit a `u32`.
    #[error("count {0} out of range")]
    AwlCount(i64),
}
