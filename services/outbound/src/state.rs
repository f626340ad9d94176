//! The outbound limits' tables, each keyed by the lower-cased account:
//!
//! - `a` account: its plan (as the account events last set it) and
//!   whether it is blocked;
//! - `w` account: its sliding windows ([`Windows`]), bounded by pruning
//!   on each event of the account and dropped when idle on the ticks.

use mailfleet_runtime::{StateKey, StateValue, ValueError};

use crate::{
    windows::{Hour, Minute, Seen, Windows},
    OutboundError,
};

/// An account's plan and block: `a` + account.
pub struct AccountKey<'a>(pub &'a str);

/// What the account events said of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountRow {
    /// The plan; `None`: never seen (the default plan applies).
    pub plan: Option<String>,
    /// Blocked (for any reason) and not unblocked since.
    pub blocked: bool,
}

/// An account's windows: `w` + account.
pub struct WindowsKey<'a>(pub &'a str);

impl StateKey for AccountKey<'_> {
    type Value = AccountRow;
    const PREFIX: u8 = b'a';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for WindowsKey<'_> {
    type Value = Windows;
    const PREFIX: u8 = b'w';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

/// Flags byte of an [`AccountRow`].
const BLOCKED: u8 = 1;
const HAS_PLAN: u8 = 2;

impl StateValue for AccountRow {
    fn to_bytes(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.blocked {
            flags |= BLOCKED;
        }
        if self.plan.is_some() {
            flags |= HAS_PLAN;
        }
        let mut out = vec![flags];
        out.extend_from_slice(self.plan.as_deref().unwrap_or("").as_bytes());
        out
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let (&flags, plan) = bytes
            .split_first()
            .ok_or_else(|| ValueError::invalid(OutboundError::EmptyAccountRow))?;
        if flags & !(BLOCKED | HAS_PLAN) != 0 {
            return Err(ValueError::invalid(OutboundError::UnknownFlags(flags)));
        }
        let plan =
            String::from_utf8(plan.to_vec()).map_err(|e| ValueError::from(e).in_part("plan"))?;
        Ok(AccountRow {
            plan: (flags & HAS_PLAN != 0).then_some(plan),
            blocked: flags & BLOCKED != 0,
        })
    }
}

/// The layout version of a [`Windows`] record.
const WINDOWS_V1: u8 = 1;

impl StateValue for Windows {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![WINDOWS_V1];
        for minutes in [&self.recipients, &self.deferrals] {
            out.extend_from_slice(&(minutes.len() as u32).to_le_bytes());
            for m in minutes {
                out.extend_from_slice(&m.minute.to_le_bytes());
                out.extend_from_slice(&m.count.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.days.len() as u32).to_le_bytes());
        for h in &self.days {
            out.extend_from_slice(&h.hour.to_le_bytes());
            out.extend_from_slice(&h.messages.to_le_bytes());
            out.extend_from_slice(&h.bytes.to_le_bytes());
        }
        out.extend_from_slice(&(self.distinct.len() as u32).to_le_bytes());
        for s in &self.distinct {
            out.extend_from_slice(&s.hash.to_le_bytes());
            out.extend_from_slice(&s.minute.to_le_bytes());
        }
        out
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        Self::read(&mut Reader(bytes)).map_err(ValueError::invalid)
    }
}

impl Windows {
    /// A [`Windows`] record off the front of `r`, which it must use up.
    fn read(r: &mut Reader<'_>) -> Result<Self, OutboundError> {
        let version = r.take::<1>()?[0];
        if version != WINDOWS_V1 {
            return Err(OutboundError::WindowsLayout {
                version,
                expected: WINDOWS_V1,
            });
        }
        let minutes = |r: &mut Reader<'_>| -> Result<Vec<Minute>, OutboundError> {
            (0..r.len()?)
                .map(|_| {
                    Ok(Minute {
                        minute: r.i64()?,
                        count: r.u32()?,
                    })
                })
                .collect()
        };
        let recipients = minutes(r)?;
        let deferrals = minutes(r)?;
        let days = (0..r.len()?)
            .map(|_| {
                Ok(Hour {
                    hour: r.i64()?,
                    messages: r.u32()?,
                    bytes: r.i64()?,
                })
            })
            .collect::<Result<_, OutboundError>>()?;
        let distinct = (0..r.len()?)
            .map(|_| {
                Ok(Seen {
                    hash: r.i64()? as u64,
                    minute: r.i64()?,
                })
            })
            .collect::<Result<_, OutboundError>>()?;
        if !r.0.is_empty() {
            return Err(OutboundError::LeftOver(r.0.len()));
        }
        Ok(Windows {
            recipients,
            deferrals,
            days,
            distinct,
        })
    }
}

/// Reads little-endian numbers off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], OutboundError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(OutboundError::CutShort {
                left: self.0.len(),
                wanted: N,
            })?;
        self.0 = rest;
        Ok(*head)
    }
    fn u32(&mut self) -> Result<u32, OutboundError> {
        self.take().map(u32::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, OutboundError> {
        self.take().map(i64::from_le_bytes)
    }
    /// A count of entries, checked against what is left (no huge
    /// allocation from a corrupt count).
    fn len(&mut self) -> Result<u32, OutboundError> {
        let n = self.u32()?;
        if n as usize > self.0.len() {
            return Err(OutboundError::Entries {
                count: n,
                left: self.0.len(),
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_windows_round_trip_and_bad_bytes_are_named() {
        for row in [
            AccountRow::default(),
            AccountRow {
                plan: Some("free".into()),
                blocked: true,
            },
            AccountRow {
                plan: Some(String::new()),
                blocked: false,
            },
        ] {
            assert_eq!(AccountRow::from_bytes(&row.to_bytes()).unwrap(), row);
        }
        assert!(AccountRow::from_bytes(&[0x80])
            .unwrap_err()
            .to_string()
            .contains("flags"));

        let w = Windows {
            recipients: vec![Minute {
                minute: 5,
                count: 2,
            }],
            deferrals: vec![Minute {
                minute: -1,
                count: 9,
            }],
            days: vec![Hour {
                hour: 7,
                messages: 3,
                bytes: 1 << 40,
            }],
            distinct: vec![Seen {
                hash: u64::MAX,
                minute: 5,
            }],
        };
        let bytes = w.to_bytes();
        assert_eq!(Windows::from_bytes(&bytes).unwrap(), w);
        assert_eq!(
            Windows::from_bytes(&Windows::default().to_bytes()).unwrap(),
            Windows::default()
        );
        for cut in 0..bytes.len() {
            assert!(Windows::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Windows::from_bytes(&longer)
            .unwrap_err()
            .to_string()
            .contains("left over"));
        assert!(Windows::from_bytes(&[2])
            .unwrap_err()
            .to_string()
            .contains("layout 2"));
    }
}
