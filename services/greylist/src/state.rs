//! The greylist's state tables.

use mailfleet_runtime::{StateKey, StateValue, ValueError};

use crate::GreylistError;

/// A triplet: `t` + the triplet text.
pub struct TripletKey(pub String);
/// When a triplet was first and last seen, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub first: i64,
    pub last: i64,
}

/// A client address in the auto-whitelist: `a` + the address.
pub struct AwlKey(pub String);
/// Counted passes (at most one an hour) and the last one, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awl {
    pub count: u32,
    pub last: i64,
}

/// A Postfix instance (one message) that already got its header: `i` + id.
pub struct InstanceKey(pub String);

impl StateKey for TripletKey {
    type Value = Seen;
    const PREFIX: u8 = b't';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for AwlKey {
    type Value = Awl;
    const PREFIX: u8 = b'a';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for InstanceKey {
    type Value = i64;
    const PREFIX: u8 = b'i';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

fn two_i64(bytes: &[u8]) -> Result<(i64, i64), ValueError> {
    <(i64, i64)>::from_bytes(bytes)
}

impl StateValue for Seen {
    fn to_bytes(&self) -> Vec<u8> {
        [self.first.to_le_bytes(), self.last.to_le_bytes()].concat()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        two_i64(bytes).map(|(first, last)| Seen { first, last })
    }
}

impl StateValue for Awl {
    fn to_bytes(&self) -> Vec<u8> {
        [i64::from(self.count).to_le_bytes(), self.last.to_le_bytes()].concat()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let (count, last) = two_i64(bytes)?;
        let count = u32::try_from(count)
            .map_err(|_| ValueError::invalid(GreylistError::AwlCount(count)))?;
        Ok(Awl { count, last })
    }
}
