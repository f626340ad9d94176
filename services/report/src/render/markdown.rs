//! The Markdown report: the headline figures against last month, what
//! changed, and the month's breakdowns.

use std::fmt::Write;

use super::{change, notable, rows, thousands, value, BREAKDOWNS};
use crate::figures::Report;

pub fn render(report: &Report) -> String {
    let this = report.this();
    let mut out = format!("# mailfleet monthly report: {}\n\n", report.month);
    let last = report.last();
    let before = last.map(|l| l.month.as_str()).unwrap_or("-");
    let _ = writeln!(out, "## Headline figures\n");
    let _ = writeln!(
        out,
        "| figure | {} | {before} | change |\n|---|---:|---:|---:|",
        this.month
    );
    let previous = last.map(|l| l.headline());
    for (i, (key, title, now)) in this.headline().into_iter().enumerate() {
        let was = previous.as_ref().map_or(0, |p| p[i].2);
        let _ = writeln!(
            out,
            "| {title} | {} | {} | {} |",
            value(key, now),
            value(key, was),
            change(now, was)
        );
    }
    let _ = writeln!(out, "\n## What changed since last month\n");
    let notes = notable(report);
    if notes.is_empty() {
        let _ = writeln!(out, "No headline figure moved by 10% or more.");
    }
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(out, "\n## This month in detail");
    for (title, name, level) in BREAKDOWNS {
        let table = if *level { &this.levels } else { &this.counts };
        let Some(labels) = table.get(*name) else {
            continue;
        };
        let _ = writeln!(out, "\n### {title}\n\n| | {} |\n|---|---:|", this.month);
        for (label, v) in rows(this, name, labels) {
            let label = if label.is_empty() { "(all)" } else { &label };
            let shown = if name.contains("bytes") {
                value(name, v)
            } else {
                thousands(v)
            };
            let _ = writeln!(out, "| {label} | {shown} |");
        }
    }
    out
}
