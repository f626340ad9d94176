use thiserror::Error;

/// Everything that can go wrong turning events into bytes and back.
#[derive(Debug, Error)]
pub enum EventError {
    /// A schema file is not valid Avro or is misnamed.
    #[error("schema file {path}: {reason}")]
    LoadSchema { path: String, reason: String },
    /// The bytes do not start with the single-object marker `C3 01` + fingerprint.
    #[error("not an Avro single-object event: {0}")]
    Framing(String),
    /// No schema under `schemas/` has this fingerprint.
    #[error("unknown schema fingerprint {0}")]
    UnknownFingerprint(String),
    /// The bytes are an event, but not of the type asked for.
    #[error("expected a {expected} event, got {actual}")]
    WrongType {
        expected: &'static str,
        actual: String,
    },
    /// No schema under `schemas/` has this name.
    #[error("no schema named {0}")]
    UnknownSchema(String),
    /// The Avro body does not match its writer schema, or cannot be read as the reader's.
    #[error("decoding {name} (v{version}): {source}")]
    Decode {
        name: String,
        version: u32,
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// The value does not fit its schema.
    #[error("encoding {name}: {source}")]
    Encode {
        name: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
}
