//! The report's three renderings.

mod html;
mod markdown;
mod svg;

use std::collections::BTreeMap;

use crate::{figures::Report, names as n};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Markdown,
    Json,
}

/// A format that is not one of `html`, `md`, `json`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("format {0:?}: expected html, md or json")]
pub struct BadFormat(pub String);

impl std::str::FromStr for Format {
    type Err = BadFormat;
    fn from_str(s: &str) -> Result<Self, BadFormat> {
        match s {
            "html" => Ok(Format::Html),
            "md" | "markdown" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            other => Err(BadFormat(other.to_string())),
        }
    }
}

impl Format {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Markdown => "md",
            Format::Json => "json",
        }
    }
}

/// Render the report.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Html => html::render(report),
        Format::Markdown => markdown::render(report),
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_else(|e| {
            // Only maps of strings and integers: cannot fail.
            format!("{{\"error\": {:?}}}", e.to_string())
        }),
    }
}

/// The month's breakdowns, in report order: (title, figure, is a level).
pub(crate) const BREAKDOWNS: &[(&str, &str, bool)] = &[
    ("Accounts by status", n::ACCOUNTS, true),
    ("Logins by channel", n::LOGINS, false),
    ("Storage by plan (bytes)", n::STORAGE_BYTES, true),
    ("Index by plan (messages)", n::INDEX_MESSAGES, true),
    ("Greylisting", n::GREYLIST, false),
    ("Scan verdicts", n::SCANS, false),
    ("Spam (rspamd) by outcome", n::SPAM, false),
    ("Top spam symbols", n::SPAM_SYMBOLS, false),
    ("Quarantined", n::QUARANTINED, false),
    ("Submitted mails by outcome", n::SUBMITTED, false),
    ("Submitted mails by verdict", n::SUBMITTED_SCANS, false),
    (
        "Submission deferrals by limit",
        n::SUBMISSION_DEFERRALS,
        false,
    ),
    ("Account blocks by reason", n::BLOCKS, false),
    ("Purged messages by folder", n::PURGED_MESSAGES, false),
    ("Purged bytes by folder", n::PURGED_BYTES, false),
    ("Notifications by template", n::NOTIFICATIONS, false),
    ("Dead letters by consumer", n::DEAD_LETTERS, false),
    ("Failed logins by reason", n::LOGIN_FAILURES, false),
];

/// How many rows of the top spam symbols a report shows.
pub(crate) const TOP_SYMBOLS: usize = 10;

/// A breakdown's rows, by label; the spam symbols most first, the top
/// [`TOP_SYMBOLS`] only.
pub(crate) fn rows(
    this: &crate::figures::Figures,
    name: &str,
    labels: &BTreeMap<String, i64>,
) -> Vec<(String, i64)> {
    if name == n::SPAM_SYMBOLS {
        return this.top_spam_symbols(TOP_SYMBOLS);
    }
    labels.iter().map(|(l, v)| (l.clone(), *v)).collect()
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Bytes in the largest unit that keeps a whole part: `1.50 TB`.
pub(crate) fn bytes(v: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut x = v as f64;
    let mut unit = 0;
    while x.abs() >= 1000.0 && unit < UNITS.len() - 1 {
        x /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v} B")
    } else {
        format!("{x:.2} {}", UNITS[unit])
    }
}

/// A figure's value for display: bytes for byte figures.
pub(crate) fn value(key: &str, v: i64) -> String {
    if key.contains("bytes") {
        bytes(v)
    } else {
        thousands(v)
    }
}

/// `+34 (+2.8%)`, or `new` when last month was 0.
pub(crate) fn change(now: i64, before: i64) -> String {
    let d = now - before;
    if d == 0 {
        return "=".into();
    }
    let sign = if d > 0 { "+" } else { "" };
    if before == 0 {
        return if now == 0 {
            "=".into()
        } else {
            format!("{sign}{} (new)", thousands(d))
        };
    }
    let pct = d as f64 * 100.0 / before as f64;
    format!("{sign}{} ({sign}{pct:.1}%)", thousands(d))
}

/// The changes worth a sentence: the headline figures that moved by 10% or
/// more (or appeared), largest first.
pub(crate) fn notable(report: &Report) -> Vec<String> {
    let Some(last) = report.last() else {
        return Vec::new();
    };
    let before: std::collections::BTreeMap<&str, i64> = last
        .headline()
        .into_iter()
        .map(|(k, _, v)| (k, v))
        .collect();
    let mut moved: Vec<(f64, String)> = report
        .this()
        .headline()
        .into_iter()
        .filter_map(|(key, title, now)| {
            let was = before.get(key).copied().unwrap_or(0);
            let rel = if was == 0 {
                if now == 0 {
                    return None;
                }
                f64::INFINITY
            } else {
                (now - was) as f64 / was as f64
            };
            if rel.abs() < 0.10 {
                return None;
            }
            let verb = if now > was { "rose" } else { "fell" };
            Some((
                rel.abs(),
                format!(
                    "{title} {verb} from {} to {} ({}).",
                    value(key, was),
                    value(key, now),
                    if was == 0 {
                        "new".to_string()
                    } else {
                        format!("{:+.1}%", rel * 100.0)
                    }
                ),
            ))
        })
        .collect();
    moved.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    moved.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(thousands(12), "12");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500_000_000_000), "1.50 TB");
        assert_eq!(change(110, 100), "+10 (+10.0%)");
        assert_eq!(change(90, 100), "-10 (-10.0%)");
        assert_eq!(change(5, 0), "+5 (new)");
        assert_eq!(change(5, 5), "=");
    }

    #[test]
    fn the_submission_figures_are_in_the_headline_and_the_details() {
        use crate::figures::{report, Entry};
        let e = |name: &str, label: &str, v: i64| -> Entry {
            let month = crate::Month::parse("2026-10").unwrap();
            (0, month, name.into(), label.into(), v)
        };
        let counts = vec![
            e(n::SUBMITTED, "accepted", 1_200),
            e(n::SUBMITTED, "rejected", 3),
            e(n::SUBMITTED_SCANS, "infected", 2),
            e(n::SUBMISSION_DEFERRALS, "recipients_per_hour", 40),
            e(n::SUBMISSION_DEFERRALS, "blocked", 9),
            e(n::BLOCKS, "abuse", 1),
            e(n::BLOCKS, "virus", 2),
        ];
        let stored = crate::Stored {
            counts,
            ..Default::default()
        };
        let r = report(&stored, crate::Month::parse("2026-10").unwrap(), 1);
        let md = render(&r, Format::Markdown);
        for line in [
            "| Mails submitted by users | 1,203 | 0 | +1,203 (new) |",
            "| Viruses submitted by users | 2 | 0 | +2 (new) |",
            "| Submissions deferred for limits | 40 | 0 | +40 (new) |",
            "| Accounts blocked for abuse | 1 | 0 | +1 (new) |",
            "### Submission deferrals by limit",
            "| recipients_per_hour | 40 |",
            "### Account blocks by reason",
            "| virus | 2 |",
        ] {
            assert!(md.contains(line), "{line:?} not in\n{md}");
        }
        let html = render(&r, Format::Html);
        assert!(html.contains("Accounts blocked for abuse"), "{html}");
    }

    #[test]
    fn a_bad_format_is_named() {
        assert_eq!("md".parse::<Format>(), Ok(Format::Markdown));
        let e = "pdf".parse::<Format>().unwrap_err();
        assert!(e.to_string().contains("\"pdf\""), "{e}");
    }
}
