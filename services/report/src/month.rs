//! Calendar months (UTC), the report's unit.

use std::fmt;

use mailfleet_runtime::calendar::{civil_from_days, days_from_civil, DAY_MS};

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    /// 1..=12.
    pub month: u32,
}

/// A month that is not `YYYY-MM`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("month {0:?}: expected YYYY-MM, for example 2026-11")]
pub struct BadMonth(pub String);

impl Month {
    /// The month of a time in ms since the epoch.
    pub fn of_ms(ms: i64) -> Month {
        let (y, m, _) = civil_from_days(ms.div_euclid(DAY_MS));
        Month {
            year: y as i32,
            month: m as u32,
        }
    }

    /// Parse `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Month, BadMonth> {
        let bad = || BadMonth(s.to_string());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// The month before.
    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                month: self.month - 1,
                ..self
            }
        }
    }

    /// This month and the `n - 1` before it, oldest first.
    pub fn trailing(self, n: usize) -> Vec<Month> {
        let mut out = vec![self];
        while out.len() < n {
            let first = out[0].prev();
            out.insert(0, first);
        }
        out
    }

    /// Midnight UTC of the month's first day, in ms.
    pub fn start_ms(self) -> i64 {
        days_from_civil(i64::from(self.year), i64::from(self.month), 1) * DAY_MS
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_print_and_step_back() {
        let m = Month::parse("2026-01").unwrap();
        assert_eq!(m.to_string(), "2026-01");
        assert_eq!(m.prev().to_string(), "2025-12");
        let t: Vec<String> = m.trailing(3).iter().map(Month::to_string).collect();
        assert_eq!(t, ["2025-11", "2025-12", "2026-01"]);
        assert_eq!(Month::of_ms(m.start_ms()), m);
        assert_eq!(Month::of_ms(m.start_ms() - 1).to_string(), "2025-12");
    }

    #[test]
    fn a_bad_month_is_named() {
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "abcd-ef"] {
            let e = Month::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
