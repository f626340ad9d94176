//! Avro binary read straight into a serde type.

use apache_avro::Schema;
use serde::de::{
    self, value::BorrowedStrDeserializer, value::StrDeserializer, DeserializeSeed,
    IntoDeserializer, Visitor,
};

use super::{fail, is_int, is_long, DatumError, Result};

impl de::Error for DatumError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DatumError(msg.to_string())
    }
}

/// Read one `T` written with `schema` from the front of `input`, leaving
/// the rest in `input`.
pub(crate) fn read<T: de::DeserializeOwned>(schema: &Schema, input: &mut &[u8]) -> Result<T> {
    T::deserialize(Datum { schema, input })
}

fn byte(input: &mut &[u8]) -> Result<u8> {
    let Some((&b, rest)) = input.split_first() else {
        return fail("input ends early");
    };
    *input = rest;
    Ok(b)
}

fn take<'de>(input: &mut &'de [u8], n: usize) -> Result<&'de [u8]> {
    if n > input.len() {
        return fail("length past the end of the input");
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// A zig-zag varint of at most 64 bits.
fn long(input: &mut &[u8]) -> Result<i64> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = byte(input)?;
        if shift == 63 && b > 1 {
            return fail("varint longer than 64 bits");
        }
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
        }
    }
    fail("varint longer than 64 bits")
}

fn int(input: &mut &[u8]) -> Result<i32> {
    i32::try_from(long(input)?).map_err(|_| DatumError("int out of range".into()))
}

/// A non-negative length or index that fits what is left of the input.
fn len(input: &mut &[u8]) -> Result<usize> {
    let n = long(input)?;
    match usize::try_from(n) {
        Ok(n) if n <= input.len() => Ok(n),
        _ => fail("length out of range"),
    }
}

fn bytes<'de>(input: &mut &'de [u8]) -> Result<&'de [u8]> {
    let n = len(input)?;
    take(input, n)
}

fn string<'de>(input: &mut &'de [u8]) -> Result<&'de str> {
    std::str::from_utf8(bytes(input)?).map_err(|_| DatumError("string is not UTF-8".into()))
}

/// The branch a union value was written with.
fn branch<'s>(
    schema: &'s apache_avro::schema::UnionSchema,
    input: &mut &[u8],
) -> Result<&'s Schema> {
    let i = long(input)?;
    usize::try_from(i)
        .ok()
        .and_then(|i| schema.variants().get(i))
        .ok_or_else(|| DatumError("union branch out of range".into()))
}

/// The count of the next block of an array or map (0: the end).
fn block(input: &mut &[u8]) -> Result<usize> {
    let n = long(input)?;
    let count = if n < 0 {
        long(input)?; // the block's size in bytes, not needed here
        n.checked_neg()
            .ok_or_else(|| DatumError("block count out of range".into()))?
    } else {
        n
    };
    // Every item takes at least one byte here (null items are refused).
    match usize::try_from(count) {
        Ok(c) if c <= input.len() => Ok(c),
        _ => fail("block count out of range"),
    }
}

struct Datum<'s, 'i, 'de> {
    schema: &'s Schema,
    input: &'i mut &'de [u8],
}

impl<'de> de::Deserializer<'de> for Datum<'_, '_, 'de> {
    type Error = DatumError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::Null => visitor.visit_unit(),
            Schema::Boolean => match byte(self.input)? {
                0 => visitor.visit_bool(false),
                1 => visitor.visit_bool(true),
                _ => fail("boolean byte not 0 or 1"),
            },
            s if is_int(s) => visitor.visit_i32(int(self.input)?),
            s if is_long(s) => visitor.visit_i64(long(self.input)?),
            Schema::Float => {
                let b = take(self.input, 4)?;
                visitor.visit_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Schema::Double => {
                let b = take(self.input, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                visitor.visit_f64(f64::from_le_bytes(a))
            }
            Schema::Bytes => visitor.visit_bytes(bytes(self.input)?),
            Schema::String => visitor.visit_borrowed_str(string(self.input)?),
            Schema::Enum(e) => visitor.visit_str(symbol(e, self.input)?),
            Schema::Union(u) => {
                let schema = branch(u, self.input)?;
                Datum {
                    schema,
                    input: self.input,
                }
                .deserialize_any(visitor)
            }
            Schema::Array(a) => visitor.visit_seq(Items {
                schema: &a.items,
                input: self.input,
                left: 0,
                done: false,
            }),
            Schema::Map(m) => visitor.visit_map(Entries {
                schema: &m.types,
                input: self.input,
                left: 0,
                done: false,
            }),
            Schema::Record(r) => visitor.visit_map(Fields {
                fields: r.fields.iter(),
                input: self.input,
                next: None,
            }),
            _ => fail("schema kind not read directly"),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64
    }

    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        fail("avro has no char")
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::String => visitor.visit_borrowed_str(string(self.input)?),
            _ => fail("not a string"),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::String => visitor.visit_borrowed_str(string(self.input)?),
            Schema::Enum(e) => visitor.visit_str(symbol(e, self.input)?),
            _ => fail("not a string or enum"),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::Bytes => visitor.visit_bytes(bytes(self.input)?),
            Schema::String => visitor.visit_bytes(string(self.input)?.as_bytes()),
            _ => fail("not bytes or a string"),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::Bytes => visitor.visit_byte_buf(bytes(self.input)?.to_vec()),
            Schema::String => visitor.visit_byte_buf(string(self.input)?.as_bytes().to_vec()),
            _ => fail("not bytes or a string"),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let Schema::Union(u) = self.schema else {
            return fail("an option that is not a union");
        };
        match branch(u, self.input)? {
            Schema::Null => visitor.visit_none(),
            schema => visitor.visit_some(Datum {
                schema,
                input: self.input,
            }),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::Null => visitor.visit_unit(),
            _ => fail("not null"),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::Array(_) => self.deserialize_any(visitor),
            _ => fail("not an array"),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.schema {
            Schema::Map(_) | Schema::Record(_) => self.deserialize_any(visitor),
            _ => fail("not a map or record"),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.schema {
            Schema::Record(_) => self.deserialize_any(visitor),
            _ => fail("not a record"),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.schema {
            Schema::Enum(e) => {
                let symbol: StrDeserializer<'_, DatumError> =
                    symbol(e, self.input)?.into_deserializer();
                visitor.visit_enum(symbol)
            }
            Schema::String => {
                let symbol: BorrowedStrDeserializer<'_, DatumError> =
                    BorrowedStrDeserializer::new(string(self.input)?);
                visitor.visit_enum(symbol)
            }
            _ => fail("not an enum"),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }
}

fn symbol<'s>(e: &'s apache_avro::schema::EnumSchema, input: &mut &[u8]) -> Result<&'s str> {
    let i = int(input)?;
    usize::try_from(i)
        .ok()
        .and_then(|i| e.symbols.get(i))
        .map(String::as_str)
        .ok_or_else(|| DatumError("enum index out of range".into()))
}

/// A record's fields, in schema order, as a map from field name to value.
struct Fields<'s, 'i, 'de> {
    fields: std::slice::Iter<'s, apache_avro::schema::RecordField>,
    input: &'i mut &'de [u8],
    next: Option<&'s Schema>,
}

impl<'de> de::MapAccess<'de> for Fields<'_, '_, 'de> {
    type Error = DatumError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        self.next = Some(&field.schema);
        let name: StrDeserializer<'_, DatumError> = field.name.as_str().into_deserializer();
        seed.deserialize(name).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let Some(schema) = self.next.take() else {
            return fail("a value asked before its key");
        };
        seed.deserialize(Datum {
            schema,
            input: &mut *self.input,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

/// An array's items, block by block.
struct Items<'s, 'i, 'de> {
    schema: &'s Schema,
    input: &'i mut &'de [u8],
    left: usize,
    done: bool,
}

/// Move to the next item of a block sequence; false at its end.
fn advance(input: &mut &[u8], left: &mut usize, done: &mut bool, item: &Schema) -> Result<bool> {
    if *done {
        return Ok(false);
    }
    if *left == 0 {
        if matches!(item, Schema::Null) {
            return fail("an array or map of nulls");
        }
        *left = block(input)?;
        if *left == 0 {
            *done = true;
            return Ok(false);
        }
    }
    *left -= 1;
    Ok(true)
}

impl<'de> de::SeqAccess<'de> for Items<'_, '_, 'de> {
    type Error = DatumError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !advance(self.input, &mut self.left, &mut self.done, self.schema)? {
            return Ok(None);
        }
        seed.deserialize(Datum {
            schema: self.schema,
            input: &mut *self.input,
        })
        .map(Some)
    }
}

/// A map's entries, block by block: string keys.
struct Entries<'s, 'i, 'de> {
    schema: &'s Schema,
    input: &'i mut &'de [u8],
    left: usize,
    done: bool,
}

impl<'de> de::MapAccess<'de> for Entries<'_, '_, 'de> {
    type Error = DatumError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !advance(self.input, &mut self.left, &mut self.done, self.schema)? {
            return Ok(None);
        }
        let key: BorrowedStrDeserializer<'de, DatumError> =
            BorrowedStrDeserializer::new(string(self.input)?);
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(Datum {
            schema: self.schema,
            input: &mut *self.input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_read_as_avro_writes_them() {
        for n in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut buf = Vec::new();
            apache_avro::to_avro_datum(&Schema::Long, apache_avro::types::Value::Long(n))
                .map(|b| buf.extend(b))
                .unwrap();
            let mut input = &buf[..];
            assert_eq!(long(&mut input).unwrap(), n);
            assert!(input.is_empty());
        }
        // Eleven bytes of continuation, or a tenth byte with more than the
        // 64th bit, are refused rather than wrapped.
        assert!(long(&mut &[0xff; 11][..]).is_err());
        let mut ten = vec![0xff; 9];
        ten.push(0x02);
        assert!(long(&mut &ten[..]).is_err());
        assert!(long(&mut &[0x80][..]).is_err(), "ends early");
    }

    #[test]
    fn lengths_past_the_input_and_bad_indexes_are_errors() {
        let string = Schema::String;
        // length 100 with 3 bytes left
        assert!(read::<String>(&string, &mut &[0xc8, 0x01, b'a', b'b', b'c'][..]).is_err());
        // negative length
        assert!(read::<String>(&string, &mut &[0x01, b'a'][..]).is_err());
        // not UTF-8
        assert!(read::<String>(&string, &mut &[0x02, 0xff][..]).is_err());
        let nullable = Schema::parse_str(r#"["null", "string"]"#).unwrap();
        assert_eq!(
            read::<Option<String>>(&nullable, &mut &[0x00][..]).unwrap(),
            None
        );
        assert_eq!(
            read::<Option<String>>(&nullable, &mut &[0x02, 0x02, b'x'][..]).unwrap(),
            Some("x".into())
        );
        assert!(
            read::<Option<String>>(&nullable, &mut &[0x04][..]).is_err(),
            "branch 2"
        );
        let array = Schema::parse_str(r#"{"type": "array", "items": "long"}"#).unwrap();
        // a block of 1000 items in 2 bytes
        assert!(read::<Vec<i64>>(&array, &mut &[0xd0, 0x0f, 0x02, 0x00][..]).is_err());
        let boolean = Schema::Boolean;
        assert!(read::<bool>(&boolean, &mut &[0x02][..]).is_err());
    }
}
