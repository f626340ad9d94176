//! The listener and one task per Postfix connection: read packets, let the
//! session decide, answer; at the end of a message, scan and record it
//! ([`crate::submit`]).
//!
//! Shutdown: no new connections; a connection waiting for its next packet
//! is closed (Postfix answers that SMTP session 4xx and the client
//! retries); a message being scanned is finished and answered first.
//! `serve` returns once every connection is gone, or after
//! `submission.drain_timeout_s` with the rest cut unanswered.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use mailfleet_runtime::{
    allow::AllowList,
    config::KafkaConfig,
    listen::{self, Handler},
    producer::EventProducer,
    Shutdown,
};
use mailfleet_scan::Engine;
use tokio::{
    net::{TcpListener, TcpStream},
    time::timeout,
};

use crate::{
    metrics as m,
    milter::{
        command::Command,
        wire::{Wire, WireError},
    },
    session::{ProtocolError, Refusal, Session, Step},
    SubmissionConfig, SubmissionError,
};

/// What every connection shares.
pub(crate) struct Milter {
    pub(crate) cfg: SubmissionConfig,
    pub(crate) engine: Engine,
    pub(crate) producer: EventProducer,
    /// `submission@<hostname>`, the events' producer.
    pub(crate) producer_name: String,
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Serve the milter on `listener` until shutdown, scanning with `engine`.
pub async fn serve(
    cfg: SubmissionConfig,
    listener: TcpListener,
    engine: Engine,
    kafka: &KafkaConfig,
    shutdown: Shutdown,
) -> Result<(), SubmissionError> {
    let allow = AllowList::parse("submission.allow", &cfg.allow)?;
    let ack = Duration::from_millis(cfg.ack_timeout_ms);
    let client_id = format!(
        "mailfleet-submission-{}-{}",
        cfg.hostname,
        std::process::id()
    );
    let producer = EventProducer::with_delivery_timeout(kafka, &client_id, ack)?;
    let milter = Arc::new(Milter {
        producer_name: format!("submission@{}", cfg.hostname),
        cfg,
        engine,
        producer,
    });
    m::init();
    tracing::info!(listen = %milter.cfg.listen, "submission milter listening");
    let max = milter.cfg.max_connections;
    let drain = Duration::from_secs(milter.cfg.drain_timeout_s);
    let slots = listen::accept_loop(listener, &allow, max, milter, shutdown).await;
    // Each connection answers the message it is scanning and closes.
    slots.drain_within(drain, "submission").await;
    tracing::info!("submission milter stopped");
    Ok(())
}

impl Handler for Milter {
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: Shutdown) {
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        self.session(stream, peer, &shutdown).await;
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    }

    async fn refuse(self: Arc<Self>, _: TcpStream, peer: SocketAddr, why: listen::Refusal) {
        // Dropping the stream closes it.
        match why {
            listen::Refusal::NotAllowed => {
                metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "not_allowed").increment(1);
                tracing::warn!(%peer, "client not in submission.allow; closing");
            }
            listen::Refusal::Busy => {
                metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "busy").increment(1);
                tracing::warn!(%peer, "submission.max_connections reached; closing");
            }
        }
    }
}

impl Milter {
    /// One Postfix connection, to its end; failures are logged and counted.
    async fn session(&self, stream: TcpStream, peer: SocketAddr, shutdown: &Shutdown) {
        let _ = stream.set_nodelay(true);
        let mut session = Session::new(self.cfg.max_message_bytes);
        let result = self
            .converse(&mut Wire::new(stream), &mut session, shutdown)
            .await;
        if session.in_message() {
            metrics::counter!(m::ABORTED).increment(1);
        }
        let queue_id = session.queue_id().unwrap_or("-");
        match result {
            Ok(()) => tracing::debug!(%peer, "milter connection closed"),
            Err(ConnectionError::Wire(WireError::Read(e) | WireError::Write(e))) => {
                tracing::info!(%peer, queue_id, error = %e, "milter connection lost")
            }
            Err(error) => {
                metrics::counter!(m::PROTOCOL_ERRORS).increment(1);
                tracing::warn!(%peer, queue_id, %error, "protocol error; closing the connection");
            }
        }
    }

    /// Read, decide, answer, until the MTA quits or shutdown.
    async fn converse(
        &self,
        wire: &mut Wire<TcpStream>,
        session: &mut Session,
        shutdown: &Shutdown,
    ) -> Result<(), ConnectionError> {
        let idle = Duration::from_secs(self.cfg.idle_timeout_s);
        loop {
            let read = tokio::select! {
                read = timeout(idle, wire.read(Command::decode)) => read,
                _ = shutdown.wait() => return Ok(()),
            };
            let Ok(read) = read else {
                tracing::info!(
                    idle_timeout_s = self.cfg.idle_timeout_s,
                    "milter connection idle; closing"
                );
                return Ok(());
            };
            let Some(command) = read? else {
                return Ok(());
            };
            match session.handle(command)? {
                Step::Reply(reply) => wire.send(|out| reply.encode(out)).await?,
                Step::Silent => {}
                Step::Aborted => metrics::counter!(m::ABORTED).increment(1),
                Step::Refuse {
                    reply,
                    reason,
                    queue_id,
                    account,
                } => {
                    refused(&reason, queue_id.as_deref(), account.as_deref());
                    wire.send(|out| reply.encode(out)).await?
                }
                Step::Scan(submission) => {
                    let reply = self.end_of_message(*submission).await;
                    wire.send(|out| reply.encode(out)).await?
                }
                Step::Close => return Ok(()),
            }
        }
    }
}

/// Log and count a refusal without a scan.
fn refused(reason: &Refusal, queue_id: Option<&str>, account: Option<&str>) {
    let queue_id = queue_id.unwrap_or("-");
    let account = account.unwrap_or("-");
    let result = match reason {
        Refusal::MissingMacro { .. } => {
            tracing::error!(queue_id, %reason, "refusing the message with 451 4.7.1");
            "no_auth"
        }
        Refusal::TooBig { .. } => {
            tracing::info!(queue_id, %account, %reason, "refusing the message with 552 5.3.4");
            "too_big"
        }
    };
    metrics::counter!(m::MESSAGES, "result" => result).increment(1);
}
