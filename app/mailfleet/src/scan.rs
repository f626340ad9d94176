//! `mailfleet scan <file.eml>`: the scanner's verdict on one file, for
//! operators. The last line printed is exactly one JSON object; the exit
//! code is 0 for any verdict and non-zero only when scanning failed.

use std::path::PathBuf;

use anyhow::Context;
use mailfleet_scan::{
    clamd::{Clamd, ClamdConfig},
    policy,
};

use crate::config::Config;

#[derive(clap::Args)]
pub struct ScanArgs {
    /// The raw message (RFC 5322), e.g. a `.eml` file or a Maildir file.
    file: PathBuf,
    /// clamd's address; the config's `consumers.scanner.clamd.address` otherwise.
    #[arg(long)]
    clamd: Option<String>,
    /// Apply the attachment policy alone, without clamd.
    #[arg(long, conflicts_with = "clamd")]
    no_clamd: bool,
}

pub async fn run(args: ScanArgs, cfg: &Config) -> anyhow::Result<()> {
    let raw =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let scanner = &cfg.consumers.scanner;
    let clamd = (!args.no_clamd).then(|| {
        Clamd::new(ClamdConfig {
            address: args
                .clamd
                .clone()
                .unwrap_or_else(|| scanner.clamd.address.clone()),
            ..scanner.clamd.clone()
        })
    });
    let report = policy::check(&raw, &scanner.policy);
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    let verdict = mailfleet_scan::scan(&raw, &scanner.policy, clamd.as_ref())
        .await
        .with_context(|| format!("scanning {}", args.file.display()))?;
    println!("{}", serde_json::to_string(&verdict)?);
    Ok(())
}
