//! mailfleet's wire types: every event as a typed Rust struct, and the Avro
//! single-object encoding that puts it on Kafka.
//!
//! The `.avsc` files beside this crate are the contract; the structs here
//! mirror the newest version of each. Start with [`Registry`], which holds
//! every schema version found under `schemas/` and resolves a writer schema
//! by its fingerprint, and with [`Event`], the trait every event type
//! implements. [`encode`] and [`Registry::decode`] are the two directions.
//!
//! Wire format (Avro single-object encoding): `C3 01`, the 8-byte
//! little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's
//! canonical form, then the Avro binary body. Any language with an Avro
//! library and the `.avsc` files can read the topics.

pub mod accounts;
pub mod admin;
mod bounds;
pub mod clock;
pub mod config;
mod datum;
mod envelope;
mod error;
pub mod framing;
pub mod greylist;
pub mod mail;
pub mod notify;
mod registry;
pub mod runtime;
pub mod scheduler;
pub mod submission;

pub use envelope::Envelope;
pub use error::EventError;
pub use registry::{canonical_form, Registry, SchemaVersion};

use serde::{de::DeserializeOwned, Serialize};

/// A typed event with a schema in `schemas/`.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The Avro full name, e.g. `mailfleet.greylist.GreylistDecided`.
    const NAME: &'static str;
    /// The shared envelope.
    fn envelope(&self) -> &Envelope;
    /// The shared envelope, to set ids on the way out.
    fn envelope_mut(&mut self) -> &mut Envelope;
}

/// Encode an event with the newest version of its schema.
pub fn encode<E: Event>(event: &E) -> Result<Vec<u8>, EventError> {
    Registry::builtin().encode(event)
}

/// An event whose type is known only at run time: what a consumer producing
/// several event types hands to the runtime.
pub trait AnyEvent: Send + Sync {
    /// The Avro full name.
    fn name(&self) -> &'static str;
    /// The envelope, to stamp deterministic ids.
    fn envelope_mut(&mut self) -> &mut Envelope;
    /// Encode with the newest schema version.
    fn encode(&self) -> Result<Vec<u8>, EventError>;
}

impl<E: Event> AnyEvent for E {
    fn name(&self) -> &'static str {
        E::NAME
    }
    fn envelope_mut(&mut self) -> &mut Envelope {
        Event::envelope_mut(self)
    }
    fn encode(&self) -> Result<Vec<u8>, EventError> {
        encode(self)
    }
}

/// Implements [`Event`] for a struct with an `envelope: Envelope` field.
#[macro_export]
macro_rules! impl_event {
    ($ty:ty, $name:literal) => {
        impl $crate::Event for $ty {
            const NAME: &'static str = $name;
            fn envelope(&self) -> &$crate::Envelope {
                &self.envelope
            }
            fn envelope_mut(&mut self) -> &mut $crate::Envelope {
                &mut self.envelope
            }
        }
    };
}
