//! HTTPS for the account API (`[api.tls]`): the accept loop, one task per
//! connection doing the TLS handshake, and the router served over it by
//! hyper's HTTP/1, as `axum::serve` serves it over plain TCP.
//!
//! A handshake gets [`HANDSHAKE_TIMEOUT`]; one that is slow or fails holds
//! up only its own task, never the accept loop. Each failure is logged
//! with the peer and rustls's reason and counted by [`Failure`] in
//! `mailfleet_api_tls_handshake_failures_total{reason}`. On shutdown the
//! loop stops accepting, each connection finishes the request in flight
//! and closes (hyper's graceful shutdown; an idle one closes at once), and
//! [`serve`] returns when the last one has, as `axum::serve`'s graceful
//! shutdown does.

use std::{error::Error, io, net::SocketAddr, pin::pin, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use mailfleet_runtime::{metrics as m, Shutdown};
use mailfleet_tls::{Reason, TlsAcceptor};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

/// How long a client has to finish the TLS handshake. Ours are local or
/// LAN clients; 10 s is generous for them and short for a slowloris.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake failed: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No handshake within [`HANDSHAKE_TIMEOUT`].
    Timeout,
    /// Mutual TLS: the client showed no certificate, or one that
    /// `client_ca_file` did not sign.
    ClientCertificate,
    /// The client ended the handshake with an alert; most often it does
    /// not trust the API's certificate.
    ClientAlert,
    /// Not TLS, or no TLS both sides speak (plain HTTP to the HTTPS port).
    Protocol,
    /// The connection closed or broke before the handshake finished.
    Io,
}

impl Failure {
    /// Every reason: the series initialised at 0 at start.
    pub const ALL: [Failure; 5] = [
        Self::Timeout,
        Self::ClientCertificate,
        Self::ClientAlert,
        Self::Protocol,
        Self::Io,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ClientCertificate => "client_certificate",
            Self::ClientAlert => "client_alert",
            Self::Protocol => "protocol",
            Self::Io => "io",
        }
    }

    /// The reason of a failed handshake's error.
    pub fn of(e: &io::Error) -> Self {
        match rustls_error(e) {
            Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
                Self::ClientCertificate
            }
            Some(rustls::Error::AlertReceived(_)) => Self::ClientAlert,
            Some(_) => Self::Protocol,
            None => Self::Io,
        }
    }
}

/// The rustls error inside `e`, however deep: tokio-rustls wraps it in an
/// `io::Error`, hyper-rustls that in another, hyper's client in its own.
/// (`io::Error::source` skips the error it wraps, so each is opened.)
pub fn rustls_error<'e>(e: &'e (dyn Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            let inner: &(dyn Error + 'static) = inner;
            if let Some(tls) = rustls_error(inner) {
                return Some(tls);
            }
        }
        next = e.source();
    }
    None
}

/// Accept on `listener` until `shutdown` trips, each connection in its own
/// task; then wait for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    acceptor: TlsAcceptor,
    shutdown: Shutdown,
) {
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            // Reap finished connections, so the set holds only open ones.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        connections.spawn(connection(tcp, peer, acceptor, router, shutdown));
    }
    drop(listener);
    tracing::debug!(
        open = connections.len(),
        "account API no longer accepting; waiting for its open connections"
    );
    while connections.join_next().await.is_some() {}
}

/// A failed `accept`: a connection that died in the backlog is nothing;
/// anything else (out of file descriptors) is logged, and the loop waits a
/// second for descriptors to free up, as `axum::serve` does.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "account API: accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection: the handshake (abandoned on shutdown), then HTTP/1
/// until the client closes or shutdown ends it gracefully.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: Shutdown,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        _ = shutdown.wait() => return,
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                failed(peer, Failure::of(&e), &Reason(&e).to_string());
                return;
            }
            Err(_) => {
                let reason = format!("no handshake within {HANDSHAKE_TIMEOUT:?}");
                failed(peer, Failure::Timeout, &reason);
                return;
            }
        },
    };
    // With a timer hyper also bounds the wait for a request's headers
    // (30 s), which the plain path leaves open.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
    let mut conn = pin!(conn);
    let mut stopping = pin!(shutdown.wait());
    let mut graceful = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                }
                return;
            }
            _ = &mut stopping, if !graceful => {
                conn.as_mut().graceful_shutdown();
                graceful = true;
            }
        }
    }
}

/// Count and log a failed handshake. A failure a client or operator can
/// act on is logged at info; a dropped connection or a timeout (port
/// scanners, health checks that only connect) at debug.
fn failed(peer: SocketAddr, failure: Failure, reason: &str) {
    let label = failure.label();
    metrics::counter!(m::API_TLS_HANDSHAKE_FAILURES, "reason" => label).increment(1);
    match failure {
        Failure::Io | Failure::Timeout => {
            tracing::debug!(%peer, failure = label, reason, "account API: TLS handshake failed")
        }
        _ => tracing::info!(%peer, failure = label, reason, "account API: TLS handshake failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tls_failures_are_classified_from_rustls_errors_however_wrapped() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let none = wrap(rustls::Error::NoCertificatesPresented);
        assert_eq!(Failure::of(&none), Failure::ClientCertificate);
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let twice = io::Error::other(wrap(unknown.clone()));
        assert_eq!(Failure::of(&twice), Failure::ClientCertificate);
        assert_eq!(rustls_error(&twice), Some(&unknown));
        assert_eq!(Reason(&twice).to_string(), unknown.to_string());
        let alert = wrap(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        ));
        assert_eq!(Failure::of(&alert), Failure::ClientAlert);
        let garbage = wrap(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(Failure::of(&garbage), Failure::Protocol);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(Failure::of(&eof), Failure::Io);
        let labels: std::collections::BTreeSet<_> =
            Failure::ALL.iter().map(|f| f.label()).collect();
        assert_eq!(labels.len(), Failure::ALL.len());
    }
}
