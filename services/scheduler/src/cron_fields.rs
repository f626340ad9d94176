//! A readable pre-check of a cron expression's shape, run before the
//! `cron` crate parses it. `cron` reports a bad hour as "Hours must be less
//! than 23. ('25' specified.)" inside a parser trace; an operator needs
//! "hour 25 out of range 0-23". Anything this check lets through is left to
//! `cron`, whose message is then used as it is.

/// The fields of the `cron` crate's format: seconds first, the year
/// optional. Ranges are `cron`'s own (days of the week are 1-7, Sunday 1).
const FIELDS: [(&str, u64, u64); 7] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 1, 7),
    ("year", 1970, 2100),
];

/// The first problem with `expr`'s field count or numeric ranges, if any.
pub(crate) fn shape_problem(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if !(6..=7).contains(&fields.len()) {
        return Some(format!(
            "{} fields; expected 6 (second minute hour day-of-month month \
             day-of-week) or 7 (and year)",
            fields.len()
        ));
    }
    fields
        .iter()
        .zip(FIELDS)
        .find_map(|(field, (name, lo, hi))| range_problem(field, name, lo, hi))
}

/// A number outside `lo..=hi` or a zero step in one field such as
/// `0-30/5,45`; names, `*`, `?` and the like are left to `cron`.
fn range_problem(field: &str, name: &str, lo: u64, hi: u64) -> Option<String> {
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if step.and_then(|s| s.parse::<u64>().ok()) == Some(0) {
            return Some(format!("{name} step 0 in {part:?}"));
        }
        for bound in range.split('-') {
            match bound.parse::<u64>() {
                Ok(n) if n < lo || n > hi => {
                    return Some(format!("{name} {n} out of range {lo}-{hi}"))
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod scheduler_tests {
    use super::*;

    #[test]
    fn cron_fields_name_the_field_the_value_and_the_range() {
        assert_eq!(
            shape_problem("0 0 25 * * *").as_deref(),
            Some("hour 25 out of range 0-23")
        );
        assert_eq!(
            shape_problem("0 */10 * 0 * *").as_deref(),
            Some("day of month 0 out of range 1-31")
        );
        assert_eq!(
            shape_problem("0 0 0 1 1-13 *").as_deref(),
            Some("month 13 out of range 1-12")
        );
        assert_eq!(
            shape_problem("0 0,60 * * * *").as_deref(),
            Some("minute 60 out of range 0-59")
        );
        assert_eq!(
            shape_problem("*/0 * * * * *").as_deref(),
            Some("second step 0 in \"*/0\"")
        );
        assert_eq!(
            shape_problem("0 0 0 * * * 2200").as_deref(),
            Some("year 2200 out of range 1970-2100")
        );
    }

    #[test]
    fn cron_fields_count_is_checked_and_good_expressions_pass() {
        let five = shape_problem("0 0 * * *").unwrap_or_default();
        assert!(five.starts_with("5 fields; expected 6"), "{five}");
        assert!(shape_problem("").is_some());
        for good in [
            "0 0 0 * * *",
            "0 0 0 1 * *",
            "0 */10 * * * *",
            "0 30 9,17 * Jan-Mar Mon-Fri",
            "0 0 0 * * ? 2030",
        ] {
            assert_eq!(shape_problem(good), None, "{good}");
        }
    }
}
