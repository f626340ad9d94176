//! A bounds pass over an Avro body before apache-avro decodes it.
//!
//! apache-avro 0.21 reserves room for a whole array or map block as soon
//! as it has read the block's item count (`items.reserve(len)`), checked
//! only against its global 512 MiB limit, which it applies to the count,
//! not to the bytes: a 122-byte record with a large map count made it ask
//! for 21 GB (found by the fuzz target `avro_decode`, regression in
//! `fuzz/regressions/avro_decode/`). One such record on a topic would
//! crash its consumer on every restart.
//!
//! This pass walks the body along the writer's schema, allocating
//! nothing, and refuses an array or map block count or a string or bytes
//! length larger than the bytes left: every item of a block takes at least
//! one byte in the schemas here (no arrays of `null`). It refuses nothing
//! else (the error is apache-avro's `ReadBytes`, as for a short body): on
//! anything it does not follow (a truncated or over-long varint,
//! a bad union index, a logical type it does not walk) it stops looking
//! and apache-avro decides, with its own error, as before.

use apache_avro::{error::Details, schema::Name, Schema};

use crate::{datum, framing, EventError, SchemaVersion};

/// Refuse `bytes` (a framed record written with `writer`) if a length or
/// count in its body is larger than the bytes left.
pub(crate) fn check(writer: &SchemaVersion, bytes: &[u8]) -> Result<(), EventError> {
    let body = bytes.get(framing::HEADER_LEN..).unwrap_or_default();
    let mut walk = Walk {
        root: &writer.schema,
        bytes: body,
        pos: 0,
        depth: 0,
    };
    match walk.value(&writer.schema) {
        Ok(()) | Err(Stop::GiveUp) => Ok(()),
        Err(Stop::TooLong { what, count, left }) => {
            let reason = format!("{what} of {count} with {left} bytes left");
            let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, reason);
            Err(EventError::Decode {
                name: writer.name.clone(),
                version: writer.version,
                source: Box::new(Details::ReadBytes(eof).into()),
            })
        }
    }
}

/// Deeper than this, the walk stops looking (our schemas nest 3 deep).
const MAX_DEPTH: usize = 64;

enum Stop {
    /// A count or length larger than the bytes left.
    TooLong {
        what: &'static str,
        count: u64,
        left: usize,
    },
    /// Something this pass does not follow: apache-avro decides.
    GiveUp,
}

struct Walk<'a> {
    root: &'a Schema,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Walk<'_> {
    fn value(&mut self, schema: &Schema) -> Result<(), Stop> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Stop::GiveUp);
        }
        let result = self.kind(schema);
        self.depth -= 1;
        result
    }

    fn kind(&mut self, schema: &Schema) -> Result<(), Stop> {
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1),
            Schema::Enum(_) => self.long().map(drop),
            s if datum::is_int(s) || datum::is_long(s) => self.long().map(drop),
            Schema::Float => self.skip(4),
            Schema::Double => self.skip(8),
            Schema::String | Schema::Bytes => self.length("a length"),
            Schema::Fixed(fixed) => self.skip(fixed.size),
            Schema::Union(union) => {
                let index = usize::try_from(self.long()?).map_err(|_| Stop::GiveUp)?;
                let variant = union.variants().get(index).ok_or(Stop::GiveUp)?;
                self.value(variant)
            }
            Schema::Record(record) => record
                .fields
                .iter()
                .try_for_each(|field| self.value(&field.schema)),
            Schema::Array(array) => self.blocks("an array block", |w| w.value(&array.items)),
            Schema::Map(map) => self.blocks("a map block", |w| {
                w.length("a map key length")?;
                w.value(&map.types)
            }),
            Schema::Ref { name } => {
                let target = find(self.root, name).ok_or(Stop::GiveUp)?;
                self.value(target)
            }
            // Decimal, BigDecimal, Uuid, Duration: not in our schemas.
            _ => Err(Stop::GiveUp),
        }
    }

    /// Blocks of items up to a zero count; a negative count is followed
    /// by the block's size in bytes.
    fn blocks(
        &mut self,
        what: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        loop {
            let count = match self.long()? {
                0 => return Ok(()),
                n if n < 0 => {
                    self.long()?;
                    n.unsigned_abs()
                }
                n => n.unsigned_abs(),
            };
            self.fits(what, count)?;
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    /// A length, then that many bytes.
    fn length(&mut self, what: &'static str) -> Result<(), Stop> {
        let len = u64::try_from(self.long()?).map_err(|_| Stop::GiveUp)?;
        self.fits(what, len)?;
        self.skip(len as usize) // fits: len <= bytes left
    }

    fn fits(&self, what: &'static str, count: u64) -> Result<(), Stop> {
        let left = self.bytes.len() - self.pos;
        if count > left as u64 {
            return Err(Stop::TooLong { what, count, left });
        }
        Ok(())
    }

    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        if n > self.bytes.len() - self.pos {
            return Err(Stop::GiveUp);
        }
        self.pos += n;
        Ok(())
    }

    /// A zig-zag varint long; at most 10 bytes.
    fn long(&mut self) -> Result<i64, Stop> {
        let mut raw = 0u64;
        for i in 0..10 {
            let byte = *self.bytes.get(self.pos).ok_or(Stop::GiveUp)?;
            self.pos += 1;
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(Stop::GiveUp)
    }
}

/// The named schema `name` defined somewhere in `schema`.
fn find<'s>(schema: &'s Schema, name: &Name) -> Option<&'s Schema> {
    match schema {
        Schema::Record(r) if &r.name == name => Some(schema),
        Schema::Enum(e) if &e.name == name => Some(schema),
        Schema::Fixed(f) if &f.name == name => Some(schema),
        Schema::Record(r) => r.fields.iter().find_map(|f| find(&f.schema, name)),
        Schema::Array(a) => find(&a.items, name),
        Schema::Map(m) => find(&m.types, name),
        Schema::Union(u) => u.variants().iter().find_map(|v| find(v, name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    const SCHEMA: &str = r#"{"type":"record","name":"T","namespace":"x","fields":[
        {"name":"m","type":{"type":"map","values":"string"}},
        {"name":"a","type":{"type":"array","items":["null","long"]}}]}"#;

    fn framed(reg: &Registry, body: &[u8]) -> Vec<u8> {
        let mut bytes = framing::header(&reg.newest("x.T").unwrap().fingerprint, 0);
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn counts_and_lengths_past_the_end_are_refused_naming_them() {
        let reg = Registry::from_files(&[("x/T.v1.avsc", SCHEMA)]).unwrap();
        // A map count of 2^31 - 1 (zig-zag), then nothing.
        let err = reg.to_json(&framed(&reg, &[0xfe, 0xff, 0xff, 0xff, 0x0f]));
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains(
                "x.T (v1): Failed to read bytes: a map block of 2147483647 with 0 bytes left"
            ),
            "{err}"
        );
        // A negative array count (then its byte size) past the end.
        let err = reg.to_json(&framed(&reg, &[0x00, 0x13, 0x02, 0x02, 0x02]));
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("an array block of 10 with 2 bytes left"),
            "{err}"
        );
        // A key length past the end.
        let err = reg.to_json(&framed(&reg, &[0x02, 0x7e, b'k']));
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("a map key length of 63 with 1 bytes left"),
            "{err}"
        );
    }

    #[test]
    fn well_formed_and_otherwise_broken_bodies_go_to_apache_avro() {
        let reg = Registry::from_files(&[("x/T.v1.avsc", SCHEMA)]).unwrap();
        // {"k": "v"}, [null, 1]
        let good = [
            0x02, 0x02, b'k', 0x02, b'v', 0x00, 0x04, 0x00, 0x02, 0x02, 0x00,
        ];
        let (_, json) = reg.to_json(&framed(&reg, &good)).unwrap();
        assert_eq!(json, serde_json::json!({"m": {"k": "v"}, "a": [null, 1]}));
        // A union index out of range: apache-avro's own error.
        let err = reg.to_json(&framed(&reg, &[0x00, 0x02, 0x08, 0x00]));
        let err = err.unwrap_err().to_string();
        assert!(!err.contains("bytes left"), "{err}");
    }
}
