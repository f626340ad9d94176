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

    #[error("changelog {topic}: {reason}")]
    Changelog { topic: String, reason: String },
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
    /// An output of a decision or an effect did not fit its schema.
    #[error("output {index} ({event}): {source}")]
    EncodeOutput {
        index: usize,
        event: &'static str,
        #[source]
        source: mailfleet_events::EventError,
    },
    /// Settings could not be put in their canonical JSON form.
    #[error("{0}")]
    Settings(#[source] serde_json::Error),
    /// A `kafka.property_files` key that is not set.
    #[error("kafka.property_files.{key}: not set")]
    PropertyFileUnset { key: String },
    /// A `kafka.property_files` file could not be read.
    #[error("kafka.property_files.{key} = {path:?}: {source}")]
    ReadPropertyFile {
        key: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A topic name not 1..=249 characters long.
    #[error("length {0} is not 1..=249")]
    TopicNameLength(usize),
    /// `.` or `..` as a topic name.
    #[error("'.' and '..' are not topic names")]
    TopicNameDots,
    /// A character Kafka does not allow in a topic name.
    #[error("character {0:?} is not allowed (only a-z A-Z 0-9 . _ -)")]
    TopicNameChar(char),
    /// An environment override with no key after the prefix.
    #[error("no key")]
    EnvNoKey,
    /// An environment override whose path goes through a value that is
    /// not a table.
    #[error("{part} is not a table")]
    EnvNotATable { part: String },
    /// An allow-list entry whose address part is not an IP address.
    #[error("{addr:?} is not an IP address")]
    CidrAddress { addr: String },
    /// An allow-list entry whose prefix length is not a number in range.
    #[error("prefix {prefix:?} is not a number 0..={bits}")]
    CidrPrefix { prefix: String, bits: u8 },
    /// An allow-list entry with host bits set (usually a typo).
    #[error("host bits are set (the network is {network}/{prefix})")]
    CidrHostBits {
        network: std::net::IpAddr,
        prefix: u8,
    },
}

/// A state value could not be read back.
#[derive(Debug, Error)]
pub enum StateError {
    /// RocksDB failed; transient, the batch is retried.
    #[error("reading state: {0}")]
    Read(#[source] rocksdb::Error),
    /// The stored bytes are not a valid value of the expected type.
    #[error("corrupt state value for key {key}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: ValueError,
    },
}

/// What is wrong with stored bytes that are not a value of the expected
/// type ([`StateValue::from_bytes`](crate::StateValue::from_bytes)). The
/// texts end up in dead-letter reasons: keep them stable.
#[derive(Debug, Error)]
pub enum ValueError {
    /// A fixed-size value of another size.
    #[error("{len} bytes, expected {expected}")]
    Length { len: usize, expected: usize },
    /// Text that is not UTF-8.
    #[error("{0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// A named part of the value is bad.
    #[error("{part}: {source}")]
    Part {
        part: &'static str,
        #[source]
        source: Box<ValueError>,
    },
    /// The value's own type refuses the bytes (a bad layout, an unknown
    /// tag, settings that do not build): its crate's error says why.
    #[error("{0}")]
    Invalid(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ValueError {
    /// `source`, a crate's own error, as the reason a value is refused.
    pub fn invalid(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Invalid(Box::new(source))
    }

    /// This error as what is wrong with the part `part` of a value
    /// (`"usage: 5 bytes, expected 16"`).
    pub fn in_part(self, part: &'static str) -> Self {
        Self::Part {
            part,
            source: Box::new(self),
        }
    }
}

impl From<std::string::FromUtf8Error> for ValueError {
    /// The same text: a `FromUtf8Error` shows its `Utf8Error`.
    fn from(e: std::string::FromUtf8Error) -> Self {
        Self::Utf8(e.utf8_error())
    }
}
