//! `mailfleet bench scan`'s rspamd stage, side by side in one run:
//!
//! - (e) peer: `rspamc` alone (rspamd's own client, `-n <concurrency>`
//!   parallel requests) over the corpus written out as files;
//! - (f) mailfleet's whole scan of a message: clamd, the attachment
//!   policy, then rspamd (`Engine::scan` + `Engine::spam`, the scanner's
//!   calls) at the same concurrency.
//!
//! They alternate for the rounds, each pass on a fresh corpus (clamd
//! caches clean hashes; rspamd keeps no result cache, so its peer could
//! reuse one, but a fresh one keeps the two alike). Every pass checks that
//! every message got rspamd's answer; the ratio is f/e.

use std::{path::Path, process::Command, time::Instant};

use anyhow::Context;
use futures::{stream, StreamExt};
use mailfleet_fleet::config::Config;
use mailfleet_scan::{
    rspamd::{CheckEnvelope, FailMode, RspamdConfig},
    Engine, SpamOutcome,
};

use super::corpus::Mail;

/// [`rspamc_vs_scan`] at each of the load's concurrency levels.
pub async fn every_level(
    cfg: &Config,
    load: &super::scan::ScanLoad,
    fresh: &mut dyn FnMut() -> Vec<Mail>,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    for &c in &load.concurrency {
        fields.push(rspamc_vs_scan(cfg, fresh, c.max(1), load.rounds, dir).await?);
    }
    Ok(fields)
}

/// (e) and (f) at `concurrency`, alternated for `rounds`; each round's
/// corpus comes from `fresh`. Returns the median msgs/s of each, and the
/// machine-readable fields.
pub async fn rspamc_vs_scan(
    cfg: &Config,
    fresh: &mut dyn FnMut() -> Vec<Mail>,
    concurrency: usize,
    rounds: usize,
    dir: &Path,
) -> anyhow::Result<String> {
    let spam = RspamdConfig {
        enabled: true,
        // Wait rather than fall back: a stage that did not score is no
        // measure of scoring.
        fail_mode: FailMode::Retry,
        ..cfg.consumers.scanner.spam.clone()
    };
    let scanner = &cfg.consumers.scanner;
    let clamd = scanner.use_clamd.then(|| scanner.clamd.clone());
    let engine = Engine::new(scanner.policy.clone(), clamd).with_rspamd(&spam);
    let (mut peer, mut ours) = (Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        let mails = fresh();
        let rspamc = rspamc_pass(&spam.address, &mails, concurrency, dir)?;
        let mails = fresh();
        let scan = scan_pass(&engine, &mails, concurrency).await?;
        println!(
            "rspamd concurrency {concurrency} round {round}: rspamc alone {rspamc:.0} msgs/s, clamd + policy + rspamd {scan:.0} msgs/s"
        );
        peer.push(rspamc);
        ours.push(scan);
    }
    let (peer, ours) = (median(&mut peer), median(&mut ours));
    let ratio = ours / peer;
    println!(
        "rspamd concurrency {concurrency}: rspamc alone {peer:.0} msgs/s, mailfleet clamd + policy + rspamd {ours:.0} msgs/s, ratio {ratio:.2}"
    );
    Ok(format!(
        "rspamc_c{concurrency}_mps={peer:.0} spam_scan_c{concurrency}_mps={ours:.0} spam_ratio_c{concurrency}={ratio:.2}"
    ))
}

/// msgs/s of `rspamc -n <concurrency>` over the corpus as files. The files
/// are written before the clock starts.
fn rspamc_pass(
    address: &str,
    mails: &[Mail],
    concurrency: usize,
    dir: &Path,
) -> anyhow::Result<f64> {
    let corpus = dir.join("rspamc-corpus");
    let _ = std::fs::remove_dir_all(&corpus);
    std::fs::create_dir_all(&corpus)?;
    let mut files = Vec::with_capacity(mails.len());
    for (i, m) in mails.iter().enumerate() {
        let file = corpus.join(format!("{i:06}.eml"));
        std::fs::write(&file, &m.raw)?;
        files.push(file);
    }
    let started = Instant::now();
    let out = Command::new("rspamc")
        .args([
            "-h",
            address,
            "-n",
            &concurrency.to_string(),
            "--compact",
            "-j",
        ])
        .args(&files)
        .output()
        .context("running rspamc (Debian's rspamd package; ops/rspamd installs it)")?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "rspamc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON reply per file, each with its action.
    let answered = String::from_utf8_lossy(&out.stdout)
        .matches("\"action\":")
        .count();
    anyhow::ensure!(
        answered == mails.len(),
        "rspamc answered {answered} of {} messages",
        mails.len()
    );
    let _ = std::fs::remove_dir_all(&corpus);
    Ok(mails.len() as f64 / secs)
}

/// msgs/s of the scanner's calls: clamd and the policy, then rspamd for
/// what they found clean.
async fn scan_pass(engine: &Engine, mails: &[Mail], concurrency: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<bool>> = stream::iter(mails.iter().map(|m| async move {
        let verdict = engine.scan(&m.raw).await?;
        if verdict != mailfleet_scan::Verdict::Clean {
            return Ok(false);
        }
        let envelope = CheckEnvelope {
            from: m.sender.clone(),
            rcpts: vec![m.recipient.clone()],
            ip: Some("127.0.0.1".into()),
            ..CheckEnvelope::default()
        };
        match engine.spam(&m.raw, &envelope).await? {
            SpamOutcome::Scored(_) => Ok(true),
            other => anyhow::bail!("{}: not scored: {other:?}", m.message_id),
        }
    }))
    .buffered(concurrency)
    .collect()
    .await;
    let secs = started.elapsed().as_secs_f64();
    let scored = results
        .into_iter()
        .collect::<anyhow::Result<Vec<bool>>>()?
        .into_iter()
        .filter(|s| *s)
        .count();
    anyhow::ensure!(scored > 0, "no message reached rspamd");
    Ok(mails.len() as f64 / secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
