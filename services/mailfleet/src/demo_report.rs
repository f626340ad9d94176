//! The demo's last step: the reporter catches up with everything the demo
//! (and earlier runs) wrote, and the month's report is written as HTML and
//! Markdown, with its headline figures on screen.

use std::path::PathBuf;

use mailfleet_report::{read_store, render, report, Month};
use mailfleet_runtime::{RunSpec, Shutdown, Store, Topology};

use crate::{config::Config, consumers, demo_mail::ends};

/// Run the reporter up to the topics' ends, then write this month's report
/// into `out_dir`; returns the HTML and Markdown paths.
pub async fn run(
    cfg: &Config,
    topology: &Topology,
    out_dir: &std::path::Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let route = topology.route(mailfleet_report::NAME)?;
    let spec = RunSpec {
        stop_at: Some(ends(cfg, &route.reads)?),
        ..RunSpec::for_route(route, &cfg.kafka, &cfg.runtime)
    };
    let stats =
        consumers::run_consumer_with(mailfleet_report::NAME, cfg, topology, spec, Shutdown::new())
            .await?;
    println!(
        "== reporter: {} events counted (its state: {})",
        stats.events,
        cfg.runtime.data_dir.join(mailfleet_report::NAME).display()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let month = Month::of_ms(now);
    let store = Store::open_read_only(&cfg.runtime.data_dir.join(mailfleet_report::NAME))?;
    let (counts, snapshots) = read_store(&store)?;
    let r = report(&counts, &snapshots, month, 12);
    std::fs::create_dir_all(out_dir)?;
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
