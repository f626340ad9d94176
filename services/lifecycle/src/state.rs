//! The lifecycle's state tables: one small record per account and one
//! earliest-timer watermark per partition.
//!
//! | key                | value                                   |
//! |--------------------|-----------------------------------------|
//! | `a` + account      | [`Account`]: status, since, clock (17 B) |
//! | `w`                | [`Earliest`]: two ms values (16 B)       |

use mailfleet_events::accounts::AccountStatus;
use mailfleet_runtime::{calendar::start_of_day, StateKey, StateValue, ValueError};

use super::{config::LifecycleConfig, LifecycleError};

/// An account's record: `a` + the lower-cased address.
pub struct AccountKey<'a>(pub &'a str);

/// The partition's earliest timers: `w`, one key per partition.
pub struct EarliestKey;

/// A status that is stored. `DELETED` is not: the tombstone removes the
/// record, so the address may be registered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Active,
    Inactive,
    Deleting,
    Blocked,
}

/// What the lifecycle keeps per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub status: Status,
    /// When the account entered `status`, ms (event time).
    pub since: i64,
    /// When the inactivity clock started, ms: the last login, or the later
    /// registration, reactivation or unblock that restarted it.
    pub clock: i64,
}

/// Lower bounds of the partition's timer bases, `i64::MAX` for none:
/// every active account's `clock` is >= `active_clock`, every inactive
/// account's `since` is >= `inactive_since`. Bases, not due times, so a
/// changed threshold in the config applies to them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earliest {
    pub active_clock: i64,
    pub inactive_since: i64,
}

impl From<Status> for AccountStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => Self::Pending,
            Status::Active => Self::Active,
            Status::Inactive => Self::Inactive,
            Status::Deleting => Self::Deleting,
            Status::Blocked => Self::Blocked,
        }
    }
}

impl Account {
    /// A record entering `status` at `now`, its inactivity clock at `clock`.
    pub fn new(status: Status, now: i64, clock: i64) -> Self {
        Self {
            status,
            since: now,
            clock,
        }
    }

    /// When this account's timer fires, if it has one: active → inactive,
    /// inactive → deleting. Other statuses wait for an event.
    pub fn due(&self, cfg: &LifecycleConfig) -> Option<i64> {
        match self.status {
            Status::Active => Some(cfg.inactive_at(self.clock)),
            Status::Inactive => Some(cfg.deleting_at(self.since)),
            Status::Pending | Status::Deleting | Status::Blocked => None,
        }
    }
}

impl Earliest {
    /// No timers.
    pub const NONE: Self = Self {
        active_clock: i64::MAX,
        inactive_since: i64::MAX,
    };

    /// Lower the bounds to cover `account`; whether they changed.
    pub fn include(&mut self, account: &Account) -> bool {
        let before = *self;
        match account.status {
            Status::Active => self.active_clock = self.active_clock.min(account.clock),
            Status::Inactive => self.inactive_since = self.inactive_since.min(account.since),
            Status::Pending | Status::Deleting | Status::Blocked => {}
        }
        *self != before
    }

    /// A time no timer of the partition fires before. The inactivity part
    /// is rounded down to midnight: a later clock can reach its threshold
    /// earlier in the same day (see [`mailfleet_runtime::calendar::add_months`]).
    pub fn due(&self, cfg: &LifecycleConfig) -> i64 {
        let active = (self.active_clock != i64::MAX)
            .then(|| start_of_day(cfg.inactive_at(self.active_clock)));
        let inactive =
            (self.inactive_since != i64::MAX).then(|| cfg.deleting_at(self.inactive_since));
        active.into_iter().chain(inactive).min().unwrap_or(i64::MAX)
    }
}

impl StateKey for AccountKey<'_> {
    type Value = Account;
    const PREFIX: u8 = b'a';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for EarliestKey {
    type Value = Earliest;
    const PREFIX: u8 = b'w';
    fn encode_key(&self, _: &mut Vec<u8>) {}
}

impl Status {
    fn byte(self) -> u8 {
        match self {
            Self::Pending => b'p',
            Self::Active => b'a',
            Self::Inactive => b'i',
            Self::Deleting => b'd',
            Self::Blocked => b'b',
        }
    }

    fn from_byte(b: u8) -> Result<Self, LifecycleError> {
        Ok(match b {
            b'p' => Self::Pending,
            b'a' => Self::Active,
            b'i' => Self::Inactive,
            b'd' => Self::Deleting,
            b'b' => Self::Blocked,
            other => return Err(LifecycleError::StatusByte(other)),
        })
    }
}

impl StateValue for Account {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(self.status.byte());
        out.extend_from_slice(&self.since.to_le_bytes());
        out.extend_from_slice(&self.clock.to_le_bytes());
        out
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let Some((&status, times)) = bytes.split_first().filter(|_| bytes.len() == 17) else {
            return Err(ValueError::invalid(LifecycleError::AccountSize(
                bytes.len(),
            )));
        };
        let (since, clock) = <(i64, i64)>::from_bytes(times)?;
        Ok(Self {
            status: Status::from_byte(status).map_err(ValueError::invalid)?,
            since,
            clock,
        })
    }
}

impl StateValue for Earliest {
    fn to_bytes(&self) -> Vec<u8> {
        (self.active_clock, self.inactive_since).to_bytes()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let (active_clock, inactive_since) =
            <(i64, i64)>::from_bytes(bytes).map_err(|e| e.in_part("earliest timers"))?;
        Ok(Self {
            active_clock,
            inactive_since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_named() {
        for status in [
            Status::Pending,
            Status::Active,
            Status::Inactive,
            Status::Deleting,
            Status::Blocked,
        ] {
            let a = Account::new(status, -5, i64::MAX);
            assert_eq!(Account::from_bytes(&a.to_bytes()).unwrap(), a);
        }
        let e = Earliest {
            active_clock: 1,
            inactive_since: i64::MAX,
        };
        assert_eq!(Earliest::from_bytes(&e.to_bytes()).unwrap(), e);
        assert!(Account::from_bytes(b"a")
            .unwrap_err()
            .to_string()
            .contains("1 bytes"));
        let mut bad = Account::new(Status::Active, 0, 0).to_bytes();
        bad[0] = b'z';
        assert!(Account::from_bytes(&bad)
            .unwrap_err()
            .to_string()
            .contains("0x7a"));
        assert!(Earliest::from_bytes(b"x")
            .unwrap_err()
            .to_string()
            .contains("earliest"));
    }

    #[test]
    fn the_watermark_only_goes_down_and_only_for_timed_statuses() {
        let cfg = LifecycleConfig::default();
        let mut w = Earliest::NONE;
        assert_eq!(w.due(&cfg), i64::MAX);
        assert!(!w.include(&Account::new(Status::Blocked, 5, 5)));
        assert!(w.include(&Account::new(Status::Active, 100, 10)));
        assert!(!w.include(&Account::new(Status::Active, 100, 20)));
        assert_eq!(w.due(&cfg), start_of_day(cfg.inactive_at(10)));
        assert!(w.include(&Account::new(Status::Inactive, 30, 0)));
        assert_eq!(w.due(&cfg), cfg.deleting_at(30), "the grace ends first");
    }

    #[test]
    fn the_watermark_is_not_later_than_a_later_clock_whose_month_is_clamped() {
        let cfg = LifecycleConfig::default();
        let day = mailfleet_runtime::calendar::days_from_civil(2026, 1, 30) * 86_400_000;
        let (evening, night) = (day + 18 * 3_600_000, day + 25 * 3_600_000);
        let mut w = Earliest::NONE;
        w.include(&Account::new(Status::Active, 0, evening));
        assert!(!w.include(&Account::new(Status::Active, 0, night)));
        assert!(cfg.inactive_at(night) < cfg.inactive_at(evening));
        assert!(w.due(&cfg) <= cfg.inactive_at(night));
    }
}
