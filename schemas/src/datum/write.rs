//! A serde type written straight as Avro binary.

use apache_avro::Schema;
use serde::ser;

use super::{fail, is_int, is_long, DatumError, Result};

/// Write `value` with `schema` after `out`'s contents, as
/// `apache_avro::write_avro_datum_ref` writes it, without its per-field
/// name lookups. Strict like [`read()`](super::read()): a struct whose fields do not come in
/// the schema's order, an array or map, or a value that does not match its
/// schema kind exactly, is an error, and the caller then encodes through
/// apache-avro (after truncating `out`).
pub(crate) fn write<T: serde::Serialize>(
    schema: &Schema,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<()> {
    value.serialize(Enc { schema, out })
}

impl ser::Error for DatumError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DatumError(msg.to_string())
    }
}

fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

struct Enc<'s, 'w> {
    schema: &'s Schema,
    out: &'w mut Vec<u8>,
}

impl Enc<'_, '_> {
    fn integer(self, n: i64) -> Result<()> {
        match self.schema {
            s if is_int(s) => {
                if i32::try_from(n).is_err() {
                    return fail("int out of range");
                }
                put_long(self.out, n);
            }
            s if is_long(s) => put_long(self.out, n),
            _ => return fail("not an int or long"),
        }
        Ok(())
    }
}

type Impossible = ser::Impossible<(), DatumError>;

impl<'s, 'w> ser::Serializer for Enc<'s, 'w> {
    type Ok = ();
    type Error = DatumError;
    type SerializeSeq = Impossible;
    type SerializeTuple = Impossible;
    type SerializeTupleStruct = Impossible;
    type SerializeTupleVariant = Impossible;
    type SerializeMap = Impossible;
    type SerializeStruct = Record<'s, 'w>;
    type SerializeStructVariant = Impossible;

    fn serialize_bool(self, v: bool) -> Result<()> {
        match self.schema {
            Schema::Boolean => {
                self.out.push(u8::from(v));
                Ok(())
            }
            _ => fail("not a boolean"),
        }
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.integer(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.integer(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.integer(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.integer(v)
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.integer(i64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.integer(i64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.integer(i64::from(v))
    }
    fn serialize_u64(self, _: u64) -> Result<()> {
        fail("u64 left to apache-avro")
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        match self.schema {
            Schema::Float => {
                self.out.extend_from_slice(&v.to_le_bytes());
                Ok(())
            }
            _ => fail("not a float"),
        }
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        match self.schema {
            Schema::Double => {
                self.out.extend_from_slice(&v.to_le_bytes());
                Ok(())
            }
            _ => fail("not a double"),
        }
    }
    fn serialize_char(self, _: char) -> Result<()> {
        fail("avro has no char")
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        match self.schema {
            Schema::String | Schema::Bytes => {
                put_bytes(self.out, v.as_bytes());
                Ok(())
            }
            _ => fail("not a string"),
        }
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        match self.schema {
            Schema::Bytes => {
                put_bytes(self.out, v);
                Ok(())
            }
            _ => fail("not bytes"),
        }
    }
    fn serialize_none(self) -> Result<()> {
        match self.schema {
            Schema::Null => Ok(()),
            Schema::Union(u) => match u.variants().iter().position(|s| matches!(s, Schema::Null)) {
                Some(i) => {
                    put_long(self.out, i as i64);
                    Ok(())
                }
                None => fail("a union without null"),
            },
            _ => fail("not null or a union"),
        }
    }
    fn serialize_some<T: ?Sized + serde::Serialize>(self, value: &T) -> Result<()> {
        match self.schema {
            Schema::Union(u) => {
                let Some((i, schema)) = u
                    .variants()
                    .iter()
                    .enumerate()
                    .find(|(_, s)| !matches!(s, Schema::Null))
                else {
                    return fail("a union of nulls");
                };
                put_long(self.out, i as i64);
                value.serialize(Enc {
                    schema,
                    out: self.out,
                })
            }
            _ => value.serialize(self),
        }
    }
    fn serialize_unit(self) -> Result<()> {
        match self.schema {
            Schema::Null => Ok(()),
            _ => fail("not null"),
        }
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        fail("unit struct left to apache-avro")
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result<()> {
        match self.schema {
            Schema::Enum(e) if (index as usize) < e.symbols.len() => {
                put_long(self.out, i64::from(index));
                Ok(())
            }
            _ => fail("not an enum of this many symbols"),
        }
    }
    fn serialize_newtype_struct<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<()> {
        fail("newtype variant left to apache-avro")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Impossible> {
        fail("arrays left to apache-avro")
    }
    fn serialize_tuple(self, _: usize) -> Result<Impossible> {
        fail("tuples left to apache-avro")
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Impossible> {
        fail("tuple structs left to apache-avro")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Impossible> {
        fail("tuple variants left to apache-avro")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Impossible> {
        fail("maps left to apache-avro")
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Record<'s, 'w>> {
        match self.schema {
            Schema::Record(r) => Ok(Record {
                fields: r.fields.iter(),
                out: self.out,
            }),
            _ => fail("not a record"),
        }
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Impossible> {
        fail("struct variants left to apache-avro")
    }
}

/// A record's fields, which must come in the schema's order.
struct Record<'s, 'w> {
    fields: std::slice::Iter<'s, apache_avro::schema::RecordField>,
    out: &'w mut Vec<u8>,
}

impl ser::SerializeStruct for Record<'_, '_> {
    type Ok = ();
    type Error = DatumError;

    fn serialize_field<T: ?Sized + serde::Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        match self.fields.next() {
            Some(field) if field.name == key => value.serialize(Enc {
                schema: &field.schema,
                out: &mut *self.out,
            }),
            _ => fail("fields out of the schema's order"),
        }
    }

    fn end(mut self) -> Result<()> {
        match self.fields.next() {
            None => Ok(()),
            Some(_) => fail("fewer fields than the schema"),
        }
    }
}
