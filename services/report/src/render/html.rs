//! The HTML report: one self-contained page (inline CSS and SVG, no
//! scripts, nothing fetched), with each headline figure's trend over the
//! report's months and this month's breakdowns.

use std::fmt::Write;

use super::{
    change, notable, rows,
    svg::{breakdown, escape, trend},
    value, BREAKDOWNS,
};
use crate::figures::Report;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#1a202c;background:#fff}\
h1{font-size:24px}h2{font-size:18px;margin-top:28px}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:4px 10px;border-bottom:1px solid #e2e8f0}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.grid{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e2e8f0;border-radius:6px;background:#f7fafc}\
.chart .title{font-size:12px;font-weight:600;fill:#2d3748}.chart .axis,.chart .label,.chart .value{font-size:11px;fill:#4a5568}";

pub fn render(report: &Report) -> String {
    let this = report.this();
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mailfleet monthly report {m}</title><style>{STYLE}</style></head><body>\n<h1>mailfleet monthly report: {m}</h1>\n",
        m = escape(&report.month)
    );
    let last = report.last();
    let previous = last.map(|l| l.headline());
    let _ = write!(
        out,
        "<h2>Headline figures</h2><table><tr><th>figure</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th class=\"n\">change</th></tr>",
        escape(&this.month),
        escape(last.map_or("-", |l| l.month.as_str()))
    );
    for (i, (key, title, now)) in this.headline().into_iter().enumerate() {
        let was = previous.as_ref().map_or(0, |p| p[i].2);
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(title),
            escape(&value(key, now)),
            escape(&value(key, was)),
            escape(&change(now, was))
        );
    }
    out.push_str("</table>\n<h2>What changed since last month</h2><ul>");
    let notes = notable(report);
    if notes.is_empty() {
        out.push_str("<li>No headline figure moved by 10% or more.</li>");
    }
    for note in notes {
        let _ = write!(out, "<li>{}</li>", escape(&note));
    }
    let _ = write!(
        out,
        "</ul>\n<h2>Trends, {} to {}</h2><div class=\"grid\">",
        escape(&report.months[0].month),
        escape(&this.month)
    );
    let series: Vec<Vec<(&str, &str, i64)>> = report.months.iter().map(|f| f.headline()).collect();
    for (i, (key, title, _)) in this.headline().into_iter().enumerate() {
        let points: Vec<(String, i64)> = report
            .months
            .iter()
            .zip(&series)
            .map(|(f, h)| (f.month.clone(), h[i].2))
            .collect();
        out.push_str(&trend(title, &points, |v| value(key, v)));
    }
    out.push_str("</div>\n<h2>This month in detail</h2><div class=\"grid\">");
    for (title, name, level) in BREAKDOWNS {
        let table = if *level { &this.levels } else { &this.counts };
        let Some(labels) = table.get(*name) else {
            continue;
        };
        let items = rows(this, name, labels);
        out.push_str(&breakdown(title, &items, |v| value(name, v)));
    }
    out.push_str("</div>\n</body></html>\n");
    out
}
