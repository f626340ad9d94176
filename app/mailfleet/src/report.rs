//! `mailfleet report --month YYYY-MM`: the monthly report from the
//! reporter consumer's state (`mailfleet run reporter`).

use std::path::PathBuf;

use anyhow::Context;
use mailfleet_report::{read_store, render, report, Month};
use mailfleet_runtime::Store;

use crate::config::Config;

/// `mailfleet report` arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The month, `YYYY-MM` (UTC).
    #[arg(long)]
    pub month: String,
    /// `html` (a self-contained page with SVG charts), `md` or `json`.
    #[arg(long, default_value = "html")]
    pub format: String,
    /// Write the report here instead of to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The reporter's store; default: `runtime.data_dir`/reporter. A replay
    /// (`mailfleet replay reporter --state-dir DIR`) leaves one in DIR/reporter.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// How many months the trends cover, this one included.
    #[arg(long, default_value_t = 12)]
    pub months: usize,
}

pub fn run(args: ReportArgs, cfg: &Config) -> anyhow::Result<()> {
    let month = Month::parse(&args.month)?;
    let format: render::Format = args.format.parse()?;
    anyhow::ensure!(
        (1..=120).contains(&args.months),
        "--months {}: must be 1..=120",
        args.months
    );
    let dir = args
        .state_dir
        .unwrap_or_else(|| cfg.runtime.data_dir.join(mailfleet_report::NAME));
    let store = Store::open_read_only(&dir).with_context(|| {
        format!(
            "opening the reporter's state in {}: run `mailfleet run reporter` first \
             (or `mailfleet replay reporter --state-dir DIR` and pass --state-dir DIR/reporter)",
            dir.display()
        )
    })?;
    let stored = read_store(&store)?;
    let text = render::render(&report(&stored, month, args.months), format);
    match args.out {
        None => print!("{text}"),
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
