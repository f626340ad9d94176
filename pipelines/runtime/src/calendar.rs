//! Civil-date arithmetic on UTC milliseconds, for deciders that reason in
//! calendar time: the lifecycle's inactivity threshold ("3 calendar months
//! and 2 days after the last login"), dates in reasons, notices and headers. Proleptic Gregorian, no leap seconds (Unix time).
//!
//! The day/civil conversions are Howard Hinnant's `days_from_civil` and
//! `civil_from_days` (the greylist's header date uses the second too).

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// `ms` plus `months` calendar months, keeping the time of day; a day past
/// the new month's end is clamped to it (Jan 31 + 1 month = Feb 28 or 29).
/// The date is non-decreasing in `ms`, the time is not: Jan 30 18:00 and
/// Jan 31 01:00 + 1 month are Feb 28 18:00 and Feb 28 01:00. So the
/// earliest-timer watermark rounds down to [`start_of_day`].
pub fn add_months(ms: i64, months: u32) -> i64 {
    let (days, time_of_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + i64::from(months);
    let (y, m) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let d = d.min(days_in_month(y, m));
    days_from_civil(y, m, d) * DAY_MS + time_of_day
}

/// Midnight UTC of the day of `ms`.
pub fn start_of_day(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

/// `2026-08-26` for a time in ms.
pub fn date(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-08-26T13:05:00Z` for a time in ms (RFC 3339, whole seconds).
pub fn date_time(ms: i64) -> String {
    let secs = ms.rem_euclid(DAY_MS) / 1000;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(ms),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month 1..=12, day 1..=31) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Midnight UTC of a civil date, ms.
    fn at(y: i64, m: i64, d: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_MS
    }

    #[test]
    fn civil_conversions_round_trip_and_know_fixed_points() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn months_clamp_to_the_end_of_a_shorter_month() {
        assert_eq!(add_months(at(2026, 1, 31), 3), at(2026, 4, 30));
        assert_eq!(add_months(at(2026, 1, 31), 1), at(2026, 2, 28));
        assert_eq!(add_months(at(2026, 8, 31), 3), at(2026, 11, 30));
        assert_eq!(
            add_months(at(2026, 10, 31), 3),
            at(2027, 1, 31),
            "over a year end"
        );
        assert_eq!(add_months(at(2026, 5, 15), 0), at(2026, 5, 15));
    }

    #[test]
    fn leap_years_give_february_29_only_when_they_exist() {
        assert_eq!(
            add_months(at(2027, 11, 30), 3),
            at(2028, 2, 29),
            "2028 is leap"
        );
        assert_eq!(add_months(at(2028, 2, 29), 12), at(2029, 2, 28));
        assert_eq!(
            add_months(at(2099, 11, 30), 3),
            at(2100, 2, 28),
            "2100 is not"
        );
        assert_eq!(add_months(at(1999, 11, 30), 3), at(2000, 2, 29), "2000 is");
        assert_eq!(add_months(at(2028, 2, 29), 48), at(2032, 2, 29));
    }

    #[test]
    fn the_time_of_day_is_kept_and_the_date_never_goes_backwards() {
        let noon = at(2026, 1, 31) + 12 * HOUR_MS + 1;
        assert_eq!(add_months(noon, 3), at(2026, 4, 30) + 12 * HOUR_MS + 1);
        let before_1970 = at(1969, 12, 31) + 5;
        assert_eq!(add_months(before_1970, 2), at(1970, 2, 28) + 5);
        let (evening, night) = (at(2026, 1, 30) + 18 * HOUR_MS, at(2026, 1, 31) + HOUR_MS);
        assert!(
            add_months(night, 1) < add_months(evening, 1),
            "the time may go back"
        );
        let mut last = i64::MIN;
        for t in (at(2027, 12, 25)..at(2028, 3, 5)).step_by((HOUR_MS * 7) as usize) {
            let next = start_of_day(add_months(t, 3));
            assert!(next >= last, "{} then {}", date_time(last), date_time(next));
            assert_eq!(start_of_day(next), next);
            last = next;
        }
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(date(at(2026, 8, 26) + DAY_MS - 1), "2026-08-26");
        assert_eq!(
            date_time(at(2026, 11, 29) + 16 * HOUR_MS + 61_999),
            "2026-11-29T16:01:01Z"
        );
        assert_eq!(date_time(-1), "1969-12-31T23:59:59Z");
    }
}
