//! `mailfleet scan <file.eml>`: the scanner's verdict on one file, for
//! operators. The last line printed is exactly one JSON object, with the
//! spam result when rspamd was asked, e.g.
//! `{"verdict":"clean","spam":{"action":"reject","score":1001.0,"required":15.0,"symbols":["GTUBE"]}}`;
//! the exit code is 0 for any verdict and non-zero only when scanning
//! failed (rspamd not answering is `"spam":{"unscored":"<why>"}`, as the
//! scanner delivers such mail).

use std::path::PathBuf;

use anyhow::Context;
use mailfleet_scan::{
    clamd::{Clamd, ClamdConfig},
    policy,
    rspamd::{CheckEnvelope, FailMode, RspamdConfig},
    Engine, SpamOutcome, Verdict,
};
use serde_json::{json, Value};

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
    /// rspamd's address (its normal worker); the config's
    /// `consumers.scanner.spam.address` otherwise.
    #[arg(long)]
    rspamd: Option<String>,
    /// Skip the spam score.
    #[arg(long, conflicts_with = "rspamd")]
    no_rspamd: bool,
    /// The envelope sender rspamd is told (MAIL FROM).
    #[arg(long, default_value = "")]
    from: String,
    /// The client address rspamd is told.
    #[arg(long)]
    ip: Option<String>,
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
    let spam = if verdict == Verdict::Clean && !args.no_rspamd {
        spam(&args, &scanner.spam, &raw).await?
    } else {
        Value::Null
    };
    let line = Line {
        verdict: &verdict,
        spam,
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// The JSON line: the verdict's fields first, then the spam result.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    verdict: &'a Verdict,
    #[serde(skip_serializing_if = "Value::is_null")]
    spam: Value,
}

/// rspamd's answer as the JSON line shows it. Asked whenever `--rspamd` is
/// given or the config enables it; no answer is reported, not an error.
async fn spam(args: &ScanArgs, cfg: &RspamdConfig, raw: &[u8]) -> anyhow::Result<Value> {
    if args.rspamd.is_none() && !cfg.enabled {
        return Ok(Value::Null);
    }
    let cfg = RspamdConfig {
        enabled: true,
        address: args.rspamd.clone().unwrap_or_else(|| cfg.address.clone()),
        fail_mode: FailMode::Deliver,
        ..cfg.clone()
    };
    let engine = Engine::new(policy::PolicyConfig::default(), None).with_rspamd(&cfg);
    let envelope = CheckEnvelope {
        from: args.from.clone(),
        ip: args.ip.clone(),
        ..CheckEnvelope::default()
    };
    Ok(match engine.spam(raw, &envelope).await? {
        SpamOutcome::Scored(r) => json!({
            "action": r.action.as_rspamd(),
            "score": r.score,
            "required": r.required,
            "symbols": r.symbols.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            "disposition": cfg.actions.of(r.action),
        }),
        SpamOutcome::Unscored(why) => json!({ "unscored": why }),
        SpamOutcome::NotAsked => Value::Null,
    })
}
