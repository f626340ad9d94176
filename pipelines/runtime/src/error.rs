use thiserror::Error;

/// Everything the runtime can fail at, named after the operation.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The config file could not be read.
    #[error("reading config {path}: {source}")]
    ReadConfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The config is not valid TOML or does not fit the expected shape.
    #[error("parsing config {path}: {message}")]
    ParseConfig { path: String, message: String },
    /// The config parsed, but some values are wrong; every problem is listed.
    #[error("invalid config:\n  - {}", .0.join("\n  - "))]
    InvalidConfig(Vec<String>),
    /// Opening the RocksDB state store failed.
    #[error("opening state store {path}: {source}")]
    OpenStore {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    /// Reading from or writing to the state store failed.
    #[error("state store {op}: {source}")]
    Store {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// Creating a Kafka client failed.
    #[error("creating Kafka {what} client: {source}")]
    CreateClient {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A Kafka operation failed.
    #[error("Kafka {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Creating or altering a topic was refused by the broker.
    #[error("applying topic {topic}: {reason}")]
    ApplyTopic { topic: String, reason: String },
    /// Starting the Prometheus exporter failed.
    #[error("starting metrics exporter on {listen}: {reason}")]
    Metrics { listen: String, reason: String },
    /// An event did not fit its schema.
    #[error("encoding event: {0}")]
    Encode(#[from] mailfleet_events::EventError),
    /// Reading a topic to its end did not get there.
    #[error("reading {topic}: {reason}")]
    Read { topic: String, reason: String },
    /// A record read is not the event it was read as.
    #[error("decoding the record at {place}: {source}")]
    Decode {
        place: String,
        #[source]
        source: mailfleet_events::EventError,
    },
    /// The consumer thread panicked or could not be joined.
    #[error("consumer {consumer} thread: {reason}")]
    Thread { consumer: String, reason: String },
}

/// A state value could not be read back.
#[derive(Debug, Error)]
pub enum StateError {
    /// RocksDB failed; transient, the batch is retried.
    #[error("reading state: {0}")]
    Read(#[source] rocksdb::Error),
    /// The stored bytes are not a valid value of the expected type.
    #[error("corrupt state value for key {key}: {reason}")]
    Corrupt { key: String, reason: String },
}
