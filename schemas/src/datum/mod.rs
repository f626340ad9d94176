//! Avro binary read straight into a serde type, for bytes written with the
//! newest version of a schema (the reader's own): no
//! `apache_avro::types::Value` tree is built, with its field names copied
//! per record and every string copied twice, then dropped. Profiling showed
//! that tree as most of the cost of a decode (`docs/benchmarks.md`,
//! "Profile and fix (F10)").
//!
//! The reader is strict: anything it does not handle the way
//! `apache_avro::from_value` would (a schema kind outside
//! [`supported`], a union read other than as an `Option`, an over-long
//! varint, a length past the end of the input) is an error, and the
//! caller then decodes through apache-avro as before. So a success here
//! gives the value apache-avro gives, and every failure ends in
//! apache-avro's own error.
//!
//! [`read()`] is the reader (a serde `Deserializer` over the bytes), in
//! `read.rs`; [`write()`] the writer (a serde `Serializer` into them), in
//! `write.rs`.

mod read;
mod write;

use apache_avro::Schema;

pub(crate) use read::read;
pub(crate) use write::write;

/// Why the direct reader gave up (the caller falls back, so this is never
/// shown to a user).
#[derive(Debug)]
pub(crate) struct DatumError(String);

impl std::fmt::Display for DatumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DatumError {}

type Result<T> = std::result::Result<T, DatumError>;

fn fail<T>(what: &str) -> Result<T> {
    Err(DatumError(what.to_string()))
}

/// The kinds Avro writes as a zig-zag varint that fits an i32.
pub(crate) fn is_int(schema: &Schema) -> bool {
    matches!(schema, Schema::Int | Schema::Date | Schema::TimeMillis)
}

/// The kinds Avro writes as a zig-zag varint of up to 64 bits (the other
/// integer logical types).
pub(crate) fn is_long(schema: &Schema) -> bool {
    matches!(
        schema,
        Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
    )
}

/// Whether every part of `schema` is a kind this reader handles (no named
/// references, fixed, decimal, uuid or duration).
pub(crate) fn supported(schema: &Schema) -> bool {
    match schema {
        s if is_int(s) || is_long(s) => true,
        Schema::Null
        | Schema::Boolean
        | Schema::Float
        | Schema::Double
        | Schema::Bytes
        | Schema::String
        | Schema::Enum(_) => true,
        Schema::Array(a) => supported(&a.items),
        Schema::Map(m) => supported(&m.types),
        Schema::Union(u) => u.variants().iter().all(supported),
        Schema::Record(r) => r.fields.iter().all(|f| supported(&f.schema)),
        _ => false,
    }
}
