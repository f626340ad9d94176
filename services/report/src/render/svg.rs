//! Small SVG charts, drawn by hand: a trend as columns, a breakdown as
//! horizontal bars. Text is escaped; sizes are fixed so the page lays out
//! without scripts.

use std::fmt::Write;

/// Escape text for XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PALETTE: [&str; 6] = [
    "#2b6cb0", "#2f855a", "#c05621", "#6b46c1", "#b83280", "#718096",
];

/// Columns for a figure over months (oldest first); the last is this month.
pub fn trend(title: &str, points: &[(String, i64)], fmt: impl Fn(i64) -> String) -> String {
    let (w, h, pad, top) = (320.0, 160.0, 24.0, 28.0);
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let n = points.len().max(1) as f64;
    let slot = (w - 2.0 * pad) / n;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart trend" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title><text x="{pad}" y="18" class="title">{t}</text>"#,
        t = escape(title)
    );
    let base = h - pad;
    for (i, (month, v)) in points.iter().enumerate() {
        let bh = ((*v).max(0) as f64 / max) * (base - top);
        let x = pad + i as f64 * slot + slot * 0.15;
        let colour = if i + 1 == points.len() {
            PALETTE[0]
        } else {
            "#a0aec0"
        };
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="{colour}"><title>{m}: {val}</title></rect>"#,
            y = base - bh,
            bw = slot * 0.7,
            m = escape(month),
            val = escape(&fmt(*v)),
        );
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            out,
            r#"<text x="{pad}" y="{ly}" class="axis">{a}</text><text x="{rx}" y="{ly}" class="axis" text-anchor="end">{b}</text><text x="{rx}" y="18" class="value" text-anchor="end">{v}</text>"#,
            ly = h - 6.0,
            rx = w - pad,
            a = escape(&first.0),
            b = escape(&last.0),
            v = escape(&fmt(last.1)),
        );
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars for one month's breakdown of a figure.
pub fn breakdown(title: &str, items: &[(String, i64)], fmt: impl Fn(i64) -> String) -> String {
    let (w, row, top, label_w) = (480.0, 22.0, 30.0, 150.0);
    let h = top + row * items.len().max(1) as f64 + 8.0;
    let max = items.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart breakdown" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title><text x="4" y="18" class="title">{t}</text>"#,
        t = escape(title)
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = top + i as f64 * row;
        let bw = ((*v).max(0) as f64 / max) * (w - label_w - 90.0);
        let label = if label.is_empty() { "(all)" } else { label };
        let _ = write!(
            out,
            r#"<text x="{lx}" y="{ty:.1}" class="label" text-anchor="end">{l}</text><rect x="{label_w}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="{c}"/><text x="{vx:.1}" y="{ty:.1}" class="value">{val}</text>"#,
            lx = label_w - 6.0,
            ty = y + row * 0.65,
            l = escape(label),
            bh = row * 0.7,
            c = PALETTE[i % PALETTE.len()],
            vx = label_w + bw + 6.0,
            val = escape(&fmt(*v)),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_text_and_draw_one_bar_per_point() {
        let points = vec![("2026-09".to_string(), 3), ("2026-10".to_string(), 6)];
        let svg = trend("Logins <all>", &points, |v| v.to_string());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Logins &lt;all&gt;"));
        assert_eq!(svg.matches("<rect").count(), 2);
        let svg = breakdown("By channel", &points, |v| v.to_string());
        assert_eq!(svg.matches("<rect").count(), 2);
    }
}
