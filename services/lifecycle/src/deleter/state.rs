//! The saga's state: one record per account being deleted.
//!
//! | key           | value                                              |
//! |---------------|----------------------------------------------------|
//! | `s` + account | [`Saga`]: started, steps requested and done, reason |

use mailfleet_events::accounts::DeletionStep;
use mailfleet_runtime::{StateKey, StateValue, ValueError};

use crate::LifecycleError;

/// An account's saga: `s` + the lower-cased address.
pub struct SagaKey<'a>(pub &'a str);

/// A saga already reported as stuck: `k` + the lower-cased address.
pub struct AlertedKey<'a>(pub &'a str);

/// A set of steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps(u8);

/// One deletion in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    /// When the account became `DELETING`, ms (event time).
    pub started: i64,
    pub requested: Steps,
    pub done: Steps,
    /// The lifecycle's reason, carried to the tombstone.
    pub reason: String,
}

impl Steps {
    fn bit(step: DeletionStep) -> u8 {
        match step {
            DeletionStep::Maildir => 1,
            DeletionStep::Index => 2,
            DeletionStep::Directory => 4,
            DeletionStep::Blobs => 8,
            DeletionStep::Unknown => 0,
        }
    }

    pub fn has(self, step: DeletionStep) -> bool {
        let bit = Self::bit(step);
        bit != 0 && self.0 & bit == bit
    }

    pub fn with(self, step: DeletionStep) -> Self {
        Self(self.0 | Self::bit(step))
    }

    /// Every step.
    pub fn all(self) -> bool {
        self.0 & 0x0f == 0x0f
    }

    /// The steps in the set, in saga order, by name.
    pub fn names(self) -> Vec<&'static str> {
        [
            (DeletionStep::Maildir, "maildir"),
            (DeletionStep::Index, "index"),
            (DeletionStep::Directory, "directory"),
            (DeletionStep::Blobs, "blobs"),
        ]
        .into_iter()
        .filter(|(step, _)| self.has(*step))
        .map(|(_, name)| name)
        .collect()
    }
}

impl StateKey for AlertedKey<'_> {
    type Value = ();
    const PREFIX: u8 = b'k';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for SagaKey<'_> {
    type Value = Saga;
    const PREFIX: u8 = b's';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateValue for Saga {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.reason.len());
        out.extend_from_slice(&self.started.to_le_bytes());
        out.push(self.requested.0);
        out.push(self.done.0);
        out.extend_from_slice(self.reason.as_bytes());
        out
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        if bytes.len() < 10 {
            return Err(ValueError::invalid(LifecycleError::SagaSize(bytes.len())));
        }
        let (started, rest) = bytes.split_at(8);
        Ok(Self {
            started: i64::from_bytes(started)?,
            requested: Steps(rest[0]),
            done: Steps(rest[1]),
            reason: String::from_utf8(rest[2..].to_vec())
                .map_err(|e| ValueError::from(e).in_part("saga reason"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sagas_round_trip_and_short_records_are_named() {
        let saga = Saga {
            started: -3,
            requested: Steps::default().with(DeletionStep::Maildir),
            done: Steps::default().with(DeletionStep::Index),
            reason: "grace-expired".into(),
        };
        assert_eq!(Saga::from_bytes(&saga.to_bytes()).unwrap(), saga);
        assert!(Saga::from_bytes(b"short")
            .unwrap_err()
            .to_string()
            .contains("5 bytes"));
        assert!(!Steps::default()
            .with(DeletionStep::Unknown)
            .has(DeletionStep::Unknown));
    }
}
