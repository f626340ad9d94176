//! The storage writer's state tables.

use mailfleet_runtime::{StateKey, StateValue, ValueError};

use crate::StorageError;

/// A delivery already handled: `d` + the MessageReceived id.
pub struct DeliveredKey(pub String);

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Stored,
    Quarantined,
    Rejected,
}

/// An account's storage use: `u` + account.
pub struct UsageKey(pub String);

/// Bytes and messages stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: i64,
    pub messages: i64,
}

/// An account's plan and explicit quota: `q` + account.
pub struct QuotaKey(pub String);

/// Plan (None: the default) and explicit quota (None: the plan's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuota {
    pub plan: Option<String>,
    pub explicit: Option<i64>,
}

/// Bytes stored by this partition's accounts on one plan: `p` + plan.
pub struct PlanBytesKey(pub String);

impl StateKey for PlanBytesKey {
    type Value = i64;
    const PREFIX: u8 = b'p';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for DeliveredKey {
    type Value = Delivered;
    const PREFIX: u8 = b'd';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for UsageKey {
    type Value = Usage;
    const PREFIX: u8 = b'u';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for QuotaKey {
    type Value = AccountQuota;
    const PREFIX: u8 = b'q';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateValue for Delivered {
    fn to_bytes(&self) -> Vec<u8> {
        vec![match self {
            Self::Stored => b's',
            Self::Quarantined => b'q',
            Self::Rejected => b'r',
        }]
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        match bytes {
            b"s" => Ok(Self::Stored),
            b"q" => Ok(Self::Quarantined),
            b"r" => Ok(Self::Rejected),
            other => Err(ValueError::invalid(StorageError::DeliveryState(
                other.to_vec(),
            ))),
        }
    }
}

impl StateValue for Usage {
    fn to_bytes(&self) -> Vec<u8> {
        (self.bytes, self.messages).to_bytes()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let (bytes, messages) = <(i64, i64)>::from_bytes(bytes).map_err(|e| e.in_part("usage"))?;
        Ok(Usage { bytes, messages })
    }
}

impl StateValue for AccountQuota {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.plan.as_ref().map_or(0, String::len));
        out.push(u8::from(self.explicit.is_some()));
        out.extend_from_slice(&self.explicit.unwrap_or(0).to_le_bytes());
        out.push(u8::from(self.plan.is_some()));
        out.extend_from_slice(self.plan.as_deref().unwrap_or("").as_bytes());
        out
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        if bytes.len() < 10 {
            return Err(ValueError::invalid(StorageError::QuotaSize(bytes.len())));
        }
        let explicit = (bytes[0] == 1)
            .then(|| i64::from_bytes(&bytes[1..9]))
            .transpose()?;
        let plan = (bytes[9] == 1)
            .then(|| String::from_utf8(bytes[10..].to_vec()))
            .transpose()?;
        Ok(AccountQuota { plan, explicit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_named() {
        let q = AccountQuota {
            plan: Some("plus".into()),
            explicit: Some(-1),
        };
        assert_eq!(AccountQuota::from_bytes(&q.to_bytes()).unwrap(), q);
        let none = AccountQuota::default();
        assert_eq!(AccountQuota::from_bytes(&none.to_bytes()).unwrap(), none);
        let u = Usage {
            bytes: 7,
            messages: 2,
        };
        assert_eq!(Usage::from_bytes(&u.to_bytes()).unwrap(), u);
        assert!(Usage::from_bytes(b"short")
            .unwrap_err()
            .to_string()
            .contains("5 bytes"));
        assert!(Delivered::from_bytes(b"x").is_err());
    }
}
