//! The demo's last step: the fleet's reporter catches up with everything
//! the demo (and earlier runs) wrote, the fleet's own metrics are shown and
//! the fleet stopped, and the month's report is written as HTML and
//! Markdown, with its headline figures on screen. The accounts' season ran
//! in compressed time, months ahead: the month it ended in gets its
//! report too.

use std::{path::PathBuf, time::Duration};

use mailfleet_fleet::config::Config;
use mailfleet_report::{read_store, render, report, Month, Stored};
use mailfleet_runtime::{time::now_ms, Store};

use super::fleet::{by_label, scrape, Fleet};

/// Wait for the fleet's reporter to catch up with everything the demo (and
/// earlier runs) wrote, show what the fleet did, stop it, then write this
/// month's report (and that of the month `season_end` falls in) into
/// `out_dir`; returns this month's HTML and Markdown paths.
pub async fn run(
    cfg: &Config,
    out_dir: &std::path::Path,
    mut fleet: Fleet,
    season_end: i64,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let took = fleet
        .settle(&[mailfleet_report::NAME], Duration::from_secs(300))
        .await?;
    println!(
        "== the fleet's reporter caught up in {:.1}s (its state: {})",
        took.as_secs_f64(),
        cfg.runtime.data_dir.join(mailfleet_report::NAME).display()
    );
    let page = scrape(fleet.consumers_metrics())?;
    let processed = by_label(
        &page,
        "mailfleet_runtime_events_processed_total",
        "consumer",
    );
    let produced = by_label(
        &page,
        "mailfleet_runtime_outputs_produced_total",
        "consumer",
    );
    let letters = by_label(&page, "mailfleet_runtime_deadletters_total", "consumer");
    println!(
        "== the fleet, from its /metrics (http://{}/metrics), since it started:",
        fleet.consumers_metrics()
    );
    for (consumer, n) in &processed {
        println!(
            "  {consumer:<10} {:>7} events in, {:>7} out, {:>4} dead letters",
            n,
            produced.get(consumer).copied().unwrap_or(0.0),
            letters.get(consumer).copied().unwrap_or(0.0)
        );
    }
    fleet.stop()?;
    let month = Month::of_ms(now_ms());
    let store = Store::open_read_only(&cfg.runtime.data_dir.join(mailfleet_report::NAME))?;
    let stored = read_store(&store)?;
    std::fs::create_dir_all(out_dir)?;
    let season = Month::of_ms(season_end);
    if season != month {
        println!("== the month the season ended in (compressed time), {season}:");
        write_month(out_dir, &stored, season)?;
        println!("== this month, {month}:");
    }
    write_month(out_dir, &stored, month)
}

/// Write `month`'s report as HTML and Markdown into `out_dir` and show its
/// headline figures; returns both paths.
fn write_month(
    out_dir: &std::path::Path,
    stored: &Stored,
    month: Month,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let r = report(stored, month, 12);
    let html = out_dir.join(format!("{month}.html"));
    let md = out_dir.join(format!("{month}.md"));
    std::fs::write(&html, render::render(&r, render::Format::Html))?;
    let markdown = render::render(&r, render::Format::Markdown);
    std::fs::write(&md, &markdown)?;
    // One screen: the headline table and what changed.
    let summary: String = markdown
        .split("\n## This month in detail")
        .next()
        .unwrap_or_default()
        .to_string();
    println!("{summary}");
    Ok((html, md))
}
