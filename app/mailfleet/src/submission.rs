//! `mailfleet submission`: the milter Postfix's SASL submission listener
//! calls (`smtpd_milters = inet:127.0.0.1:10027`). It scans with
//! `[consumers.scanner]`'s clamd and attachment policy, so inbound and
//! outbound mail are scanned alike; see `docs/submission.md`.

use anyhow::Context;
use mailfleet_runtime::{metrics, Shutdown};
use mailfleet_scan::Engine;

use crate::config::Config;

/// Serve the milter until SIGTERM.
pub async fn run(cfg: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    metrics::install_exporter(&cfg.metrics)?;
    let scanner = &cfg.consumers.scanner;
    let clamd = scanner.use_clamd.then(|| scanner.clamd.clone());
    let engine = Engine::new(scanner.policy.clone(), clamd).with_rspamd(&scanner.spam);
    let listener = tokio::net::TcpListener::bind(&cfg.submission.listen)
        .await
        .with_context(|| format!("submission.listen = {:?}", cfg.submission.listen))?;
    Ok(mailfleet_submission::serve(
        cfg.submission.clone(),
        listener,
        engine,
        &cfg.kafka,
        shutdown,
    )
    .await?)
}
