//! The account API (`mailfleet api`): JSON over HTTP (axum) for
//! registration, logins, quota, plan and the admin events, and the
//! [`client`] the `mailfleet account` CLI uses.
//!
//! With `[api.tls]` it serves HTTPS only ([`https`]: rustls, optionally
//! requiring client certificates); the client verifies the server's
//! certificate. A bearer token (`api.token_file`) guards every
//! `/accounts` route, and is required whenever `api.listen` is not a
//! loopback address: the API refuses to start without it
//! ([`ApiConfig::unprotected`]).
//!
//! Every change is an event on `accounts.events`, keyed by the lower-cased
//! address, produced with `acks=all` ([`state::Writer`]); a request is
//! answered only after Kafka acknowledged its event. Reads come from the
//! [`projection`] of that topic, which the API rebuilds at every start from
//! its [`snapshot`] and the events after it (from the beginning with
//! `api.snapshot_interval_s = 0`) and answers 503 until it has caught up.
//!
//! **One API process per cluster.** A registration checks the projection
//! and produces under a per-account lock ([`state::Locks`]), so two
//! concurrent registrations of one address cannot both succeed in one
//! process; two processes could each accept one (the lifecycle then
//! dead-letters the second `AccountRegistered`). Passwords live only in
//! request bodies: events carry the `{ARGON2}` hash, and neither is logged.
//!
//! Users' spam judgements come in on the [`learn`] route (`[api.spam]`):
//! taught to rspamd, recorded as `SpamLearned` on `mail.learned`.
//!
//! Start at [`routes`] for what each route does; [`decide`] holds the
//! status rules, [`wire`] the JSON bodies. Every failure, the server's
//! and the client's, is an [`ApiError`]. Passwords are checked and hashed
//! by `mailfleet-password`.

pub mod address;
pub mod client;
pub mod config;
pub mod decide;
pub mod errors;
pub mod https;
pub mod learn;
pub mod projection;
pub mod routes;
pub mod snapshot;
pub mod state;
pub mod telemetry;
pub mod wire;

use std::{sync::Arc, time::Duration};

use mailfleet_runtime::{config::KafkaConfig, producer::EventProducer, Shutdown};
use tokio::sync::Semaphore;

pub use client::ApiClient;
pub use config::{ApiConfig, Plans};
pub use errors::ApiError;
pub use mailfleet_tls::{ClientTls, ServerTls};

use learn::Learning;
use projection::Projection;
use state::{AppState, Locks, Writer};
use wire::Secret;

/// Everything `mailfleet api` needs besides Kafka: the `[api]` table and
/// what it takes from other tables.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub config: ApiConfig,
    /// The storage writer's plans (`[consumers.storage.plans]`).
    pub plans: Plans,
    /// `consumers.lifecycle.activate_on_register`: the status shown right
    /// after a registration (`active`, else `pending`).
    pub active_on_register: bool,
    /// The host's blob store (`[blobs]`, opened by the caller): the learn
    /// route's store unless `api.spam.blobs_dir` names a folder.
    pub blobs: Option<Arc<mailfleet_blob::BlobStore>>,
    /// What stamps the events: the wall clock, or compressed time
    /// (`mailfleet api --time-scale`, demo and tests only).
    pub clock: mailfleet_runtime::time::Clock,
}

/// Serve until `shutdown` trips: follow the topic, listen, answer.
/// Refuses before touching Kafka or the port when `listen` is not
/// loopback and no token is set, or when `[api.tls]` or the token file
/// cannot be used.
pub async fn serve(
    settings: ApiSettings,
    kafka: &KafkaConfig,
    shutdown: Shutdown,
) -> Result<(), ApiError> {
    let cfg = &settings.config;
    if let Some(refusal) = cfg.unprotected() {
        return Err(refusal);
    }
    let token = cfg.token_file.as_deref().map(read_token).transpose()?;
    let acceptor = cfg
        .tls
        .as_ref()
        .map(mailfleet_tls::ServerTls::acceptor)
        .transpose()
        .map_err(ApiError::ServerTls)?;
    if cfg.snapshot_interval_s > 0 {
        snapshot::ensure_topic(kafka, &cfg.events_topic).await?;
    }
    let state = app_state(&settings, kafka, token, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ApiError::Bind {
            listen: cfg.listen.clone(),
            source,
        })?;
    tracing::info!(listen = %cfg.listen, topic = %cfg.events_topic, auth = token_state(cfg),
        tls = tls_state(cfg), "account API listening; answering 503 until the projection caught up");
    if cfg.tls.is_none() && !is_loopback(&cfg.listen) {
        tracing::warn!(listen = %cfg.listen, "api.listen is not loopback and [api.tls] is unset: \
            the bearer token and passwords cross the network in clear unless a TLS proxy is in front");
    }
    let router = routes::router(state, cfg.max_body_bytes);
    match acceptor {
        Some(acceptor) => https::serve(listener, router, acceptor, shutdown).await,
        None => axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .map_err(ApiError::Serve)?,
    }
    Ok(())
}

/// What the handlers share: the projection following the topic, the
/// acknowledged producer, the learn route.
fn app_state(
    settings: &ApiSettings,
    kafka: &KafkaConfig,
    token: Option<Secret>,
    shutdown: Shutdown,
) -> Result<Arc<AppState>, ApiError> {
    let cfg = &settings.config;
    let projection = Projection::follow(
        kafka,
        &cfg.events_topic,
        settings.active_on_register,
        cfg.snapshot_interval_s > 0,
        shutdown.clone(),
    )?;
    let timeout = Duration::from_millis(cfg.ack_timeout_ms);
    let producer = EventProducer::with_delivery_timeout(kafka, "mailfleet-api", timeout)?;
    let learning = cfg
        .spam
        .as_ref()
        .map(|spam| Learning::open(spam, settings.blobs.clone(), producer.clone(), timeout))
        .transpose()?;
    announce_ready(projection.clone(), shutdown.clone());
    if cfg.snapshot_interval_s > 0 {
        let every = Duration::from_secs(cfg.snapshot_interval_s);
        write_snapshots(
            projection.clone(),
            kafka,
            &cfg.events_topic,
            every,
            shutdown,
        )?;
    }
    telemetry::init();
    let parallel = std::thread::available_parallelism().map_or(2, usize::from);
    Ok(Arc::new(AppState {
        projection,
        writer: Writer::new(producer, &cfg.events_topic, timeout),
        locks: Locks::default(),
        plans: settings.plans.clone(),
        token,
        hashing: Semaphore::new(parallel),
        learning,
        clock: settings.clock,
    }))
}

/// Log once when the projection has caught up, so an operator sees when
/// the 503s end.
fn announce_ready(projection: Projection, shutdown: Shutdown) {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        while !projection.is_ready() {
            if shutdown.is_triggered() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(
            accounts = projection.len(),
            after_ms = started.elapsed().as_millis() as u64,
            "account projection caught up; answering requests"
        );
    });
}

/// Every `every`, once caught up, write the accounts changed since the
/// last snapshot and the offsets they reflect ([`snapshot`]).
fn write_snapshots(
    projection: Projection,
    kafka: &KafkaConfig,
    topic: &str,
    every: Duration,
    shutdown: Shutdown,
) -> Result<(), ApiError> {
    let producer: rdkafka::producer::FutureProducer =
        mailfleet_runtime::admin::client_config(kafka)
            .set("client.id", "mailfleet-api-snapshot")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(|e| ApiError::Internal(format!("creating the snapshot producer: {e}")))?;
    let topic = topic.to_string();
    tokio::spawn(async move {
        let mut written = std::collections::HashMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.wait() => return,
            }
            if !projection.is_ready() {
                continue;
            }
            let snap = projection.take_snapshot();
            if snap.accounts.is_empty() && snap.offsets == written {
                continue;
            }
            match snapshot::write(&producer, &topic, &snap).await {
                Ok(()) => {
                    tracing::debug!(accounts = snap.accounts.len(), "account snapshot written");
                    written = snap.offsets;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing the account snapshot; retrying next time");
                    projection.unsent(&snap);
                }
            }
        }
    });
    Ok(())
}

fn token_state(cfg: &ApiConfig) -> &'static str {
    if cfg.token_file.is_some() {
        "bearer token"
    } else {
        "none"
    }
}

fn tls_state(cfg: &ApiConfig) -> &'static str {
    match &cfg.tls {
        None => "off (plain HTTP)",
        Some(tls) if tls.client_ca_file.is_some() => "HTTPS, client certificates required",
        Some(_) => "HTTPS",
    }
}

fn is_loopback(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

/// The bearer token from its file, trimmed; never logged.
pub fn read_token(path: &std::path::Path) -> Result<Secret, ApiError> {
    let failed = |reason: String| ApiError::Token {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(failed("the file is empty".into()));
    }
    Ok(Secret::new(token))
}
