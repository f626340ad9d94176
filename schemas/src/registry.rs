//! The schema registry: every version of every event schema under `schemas/`,
//! looked up by fingerprint (to read) or by name (to write the newest).

use std::{collections::HashMap, sync::LazyLock};

use apache_avro::{schema::Name, GenericSingleObjectReader, Schema};

use crate::{datum, framing, Event, EventError};

/// The registry's few keys are looked up once or twice per event: FxHash,
/// not SipHash (which showed in the profile of every decode and encode); a
/// fingerprint is already a hash, and the names are the schemas' own.
type KeyMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

mod files {
    include!(concat!(env!("OUT_DIR"), "/schema_files.rs"));
}

/// One version of one event schema, from one `.avsc` file.
pub struct SchemaVersion {
    /// Avro full name, e.g. `mailfleet.runtime.TestEvent`.
    pub name: String,
    /// The `N` of `Name.vN.avsc`.
    pub version: u32,
    /// Path under `schemas/`.
    pub path: String,
    /// The parsed schema.
    pub schema: Schema,
    /// CRC-64-AVRO fingerprint of the canonical form, little-endian.
    pub fingerprint: [u8; 8],
    /// A reader with the schema's names resolved once, for the fast path.
    reader: GenericSingleObjectReader,
    /// Whether [`datum::read`] handles every part of the schema.
    direct: bool,
    /// Whether this is the newest version of its schema.
    is_newest: bool,
}

impl std::fmt::Debug for SchemaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaVersion")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("fingerprint", &framing::fingerprint_hex(&self.fingerprint))
            .finish()
    }
}

/// All schema versions, indexed by fingerprint and by name.
#[derive(Debug)]
pub struct Registry {
    versions: Vec<SchemaVersion>,
    by_fingerprint: KeyMap<[u8; 8], usize>,
    newest: KeyMap<String, usize>,
}

static BUILTIN: LazyLock<Registry> = LazyLock::new(|| {
    // The files are compiled in and checked by this crate's tests, so a
    // failure here is a broken build, not bad input.
    Registry::from_files(files::SCHEMA_FILES).expect("schemas/ embedded in the build are valid")
});

impl Registry {
    /// The registry of the schemas compiled into this build.
    pub fn builtin() -> &'static Registry {
        &BUILTIN
    }

    /// Build a registry from (path, JSON) pairs named `dir/Name.vN.avsc`.
    pub fn from_files(files: &[(&str, &str)]) -> Result<Registry, EventError> {
        let mut reg = Registry {
            versions: Vec::new(),
            by_fingerprint: KeyMap::default(),
            newest: KeyMap::default(),
        };
        for (path, json) in files {
            reg.add(load(path, json)?)?;
        }
        for &i in reg.newest.values() {
            reg.versions[i].is_newest = true;
        }
        Ok(reg)
    }

    fn add(&mut self, v: SchemaVersion) -> Result<(), EventError> {
        let clash = |other: &SchemaVersion, what: &str| EventError::LoadSchema {
            path: v.path.clone(),
            reason: format!("same {what} as {}", other.path),
        };
        if let Some(&i) = self.by_fingerprint.get(&v.fingerprint) {
            return Err(clash(&self.versions[i], "fingerprint"));
        }
        let idx = self.versions.len();
        match self.newest.get(&v.name).copied() {
            Some(i) if self.versions[i].version == v.version => {
                return Err(clash(&self.versions[i], "name and version"));
            }
            Some(i) if self.versions[i].version > v.version => {}
            _ => {
                self.newest.insert(v.name.clone(), idx);
            }
        }
        self.by_fingerprint.insert(v.fingerprint, idx);
        self.versions.push(v);
        Ok(())
    }

    /// The schema version with this fingerprint.
    pub fn by_fingerprint(&self, fp: &[u8; 8]) -> Option<&SchemaVersion> {
        self.by_fingerprint.get(fp).map(|&i| &self.versions[i])
    }

    /// The newest version of the schema with this full name.
    pub fn newest(&self, name: &str) -> Option<&SchemaVersion> {
        self.newest.get(name).map(|&i| &self.versions[i])
    }

    /// Every version of one schema, oldest first.
    pub fn versions_of(&self, name: &str) -> Vec<&SchemaVersion> {
        let mut all: Vec<_> = self.versions.iter().filter(|v| v.name == name).collect();
        all.sort_by_key(|v| v.version);
        all
    }

    /// Every schema full name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<_> = self.newest.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Which schema version wrote these bytes.
    pub fn writer_of(&self, bytes: &[u8]) -> Result<&SchemaVersion, EventError> {
        let (fp, _) = framing::split(bytes)?;
        self.by_fingerprint(&fp)
            .ok_or_else(|| EventError::UnknownFingerprint(framing::fingerprint_hex(&fp)))
    }

    /// Encode an event with the newest version of its schema.
    pub fn encode<E: Event>(&self, event: &E) -> Result<Vec<u8>, EventError> {
        let v = self
            .newest(E::NAME)
            .ok_or_else(|| EventError::UnknownSchema(E::NAME.to_string()))?;
        let mut out = framing::header(&v.fingerprint, 128);
        if v.direct && datum::write(&v.schema, event, &mut out).is_ok() {
            return Ok(out);
        }
        // What the direct writer refuses, apache-avro writes (or refuses).
        out.truncate(framing::HEADER_LEN);
        Self::encode_value(v, event, &mut out)?;
        Ok(out)
    }

    /// Encode through apache-avro's schema-aware serializer.
    fn encode_value<E: Event>(
        v: &SchemaVersion,
        event: &E,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        apache_avro::write_avro_datum_ref(&v.schema, event, out).map_err(|e| {
            EventError::Encode {
                name: E::NAME,
                source: Box::new(e),
            }
        })?;
        Ok(())
    }

    /// Decode bytes written with any known version of `E`'s schema into `E`.
    pub fn decode<E: Event>(&self, bytes: &[u8]) -> Result<E, EventError> {
        let writer = self.writer_of(bytes)?;
        if writer.name != E::NAME {
            return Err(EventError::WrongType {
                expected: E::NAME,
                actual: writer.name.clone(),
            });
        }
        let reader = if writer.is_newest {
            None
        } else {
            self.newest(E::NAME)
        };
        if reader.is_none() {
            // Straight into `E`; anything the direct reader refuses is
            // decoded through apache-avro as before, so errors stay its own.
            if let Some(event) = Self::decode_direct(writer, bytes) {
                return Ok(event);
            }
        }
        Self::decode_value(writer, reader, bytes)
    }

    /// Decode with the writer's own schema without an intermediate
    /// `Value`, if the direct reader handles it whole.
    fn decode_direct<E: Event>(writer: &SchemaVersion, bytes: &[u8]) -> Option<E> {
        if !writer.direct {
            return None;
        }
        let mut body = bytes.get(framing::HEADER_LEN..)?;
        let event = datum::read::<E>(&writer.schema, &mut body).ok()?;
        body.is_empty().then_some(event)
    }

    /// Decode through apache-avro's `Value`, resolving into `reader` if set.
    fn decode_value<E: Event>(
        writer: &SchemaVersion,
        reader: Option<&SchemaVersion>,
        bytes: &[u8],
    ) -> Result<E, EventError> {
        crate::bounds::check(writer, bytes)?;
        let fail = |e| EventError::Decode {
            name: writer.name.clone(),
            version: writer.version,
            source: Box::new(e),
        };
        let mut body = bytes;
        let value = match reader {
            // The newest version: names were resolved once, at load.
            None => writer.reader.read_value(&mut body).map_err(fail)?,
            // An older version: resolve it into the newest.
            Some(r) => {
                body = &bytes[framing::HEADER_LEN..];
                apache_avro::from_avro_datum(&writer.schema, &mut body, Some(&r.schema))
                    .map_err(fail)?
            }
        };
        if !body.is_empty() {
            return Err(EventError::Framing(format!(
                "{} bytes left over after the {} body",
                body.len(),
                writer.name
            )));
        }
        apache_avro::from_value(&value).map_err(fail)
    }
}

impl Registry {
    /// Any event as JSON, resolved into the newest version of its schema
    /// (so the same event written by two versions compares equal), with
    /// its full name: for audits and tools that handle every type.
    pub fn to_json(&self, bytes: &[u8]) -> Result<(String, serde_json::Value), EventError> {
        let writer = self.writer_of(bytes)?;
        crate::bounds::check(writer, bytes)?;
        let fail = |e| EventError::Decode {
            name: writer.name.clone(),
            version: writer.version,
            source: Box::new(e),
        };
        let newest = self.newest(&writer.name).unwrap_or(writer);
        let mut body = &bytes[framing::HEADER_LEN..];
        let value = apache_avro::from_avro_datum(&writer.schema, &mut body, Some(&newest.schema))
            .map_err(fail)?;
        let json = serde_json::Value::try_from(value).map_err(fail)?;
        Ok((writer.name.clone(), json))
    }
}

fn load(path: &str, json: &str) -> Result<SchemaVersion, EventError> {
    let bad = |reason: String| EventError::LoadSchema {
        path: path.to_string(),
        reason,
    };
    let schema = Schema::parse_str(json).map_err(|e| bad(e.to_string()))?;
    let name = match &schema {
        Schema::Record(r) => full_name(&r.name),
        other => return Err(bad(format!("top level is {other:?}, expected a record"))),
    };
    let file = path.rsplit('/').next().unwrap_or(path);
    let (stem, version) =
        parse_file_name(file).ok_or_else(|| bad("file name must be Name.vN.avsc".to_string()))?;
    if !name.ends_with(&format!(".{stem}")) && name != stem {
        return Err(bad(format!(
            "file is named {stem} but the record is {name}"
        )));
    }
    let fingerprint = framing::crc64_avro(canonical_form(&schema).as_bytes());
    let header = framing::header(&fingerprint, 0);
    let reader =
        GenericSingleObjectReader::new_with_header_builder(schema.clone(), FixedHeader(header))
            .map_err(|e| bad(e.to_string()))?;
    Ok(SchemaVersion {
        name,
        version,
        path: path.to_string(),
        direct: datum::supported(&schema),
        schema,
        fingerprint,
        reader,
        is_newest: false,
    })
}

/// The Parsing Canonical Form of the Avro specification.
///
/// apache-avro 0.21 leaves a primitive with a logical type as
/// `{"type":"long"}` after stripping `logicalType`, where the
/// specification's [PRIMITIVES] rule reduces it to `"long"` (as Java and
/// fastavro do). The fingerprint must match theirs, so the form is mended.
pub fn canonical_form(schema: &Schema) -> String {
    let mut form = schema.canonical_form();
    for primitive in [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ] {
        form = form.replace(
            &format!("{{\"type\":\"{primitive}\"}}"),
            &format!("\"{primitive}\""),
        );
    }
    form
}

/// A single-object header fixed at load.
struct FixedHeader(Vec<u8>);

impl apache_avro::headers::HeaderBuilder for FixedHeader {
    fn build_header(&self) -> Vec<u8> {
        self.0.clone()
    }
}

fn full_name(name: &Name) -> String {
    match &name.namespace {
        Some(ns) => format!("{ns}.{}", name.name),
        None => name.name.clone(),
    }
}

fn parse_file_name(file: &str) -> Option<(&str, u32)> {
    let stem = file.strip_suffix(".avsc")?;
    let (name, version) = stem.rsplit_once(".v")?;
    Some((name, version.parse().ok()?))
}

#[cfg(test)]
mod tests;
