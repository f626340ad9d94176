//! The accept loop of every TCP server (LMTP, the policy server, the
//! submission milter): the allow list checked before a byte is read, a
//! connection limit, a pause after a failed `accept` (out of file
//! descriptors, say: retrying at once would spin), and shutdown.
//!
//! What a server says to a client it turns away differs (LMTP answers
//! `421`, the policy server and the milter just close), so that, the
//! metrics and the connection itself are the server's [`Handler`].
//!
//! Shutdown: the loop stops accepting at once and hands back its
//! [`Slots`]; the server then waits for the connections in flight, each of
//! which finishes what it is doing and closes ([`Slots::drain_within`]).

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::timeout,
};

use crate::{allow::AllowList, Shutdown};

/// How long the loop waits after a failed `accept`.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client is not in the server's allow list.
    NotAllowed,
    /// Every connection slot is taken.
    Busy,
}

/// A server's part of the accept loop.
pub trait Handler: Send + Sync + 'static {
    /// Serve one connection to its end; it holds a slot until then.
    fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send;

    /// Turn a connection away (count it, answer, close); runs on a task of
    /// its own so that a slow client cannot hold up the loop.
    fn refuse(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        why: Refusal,
    ) -> impl Future<Output = ()> + Send;
}

/// The connection slots of a loop, once it ended.
pub struct Slots {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Slots {
    /// Connections being served now.
    pub fn busy(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Wait until every connection has ended.
    pub async fn drain(self) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }

    /// Wait at most `limit` for every connection to end, with a log line
    /// when the wait starts (how many) and one when it ends (how long, or
    /// how many the limit cut); `server` names the server in them. Returns
    /// how many were cut: their tasks go with the runtime, each connection
    /// closed without its answer.
    pub async fn drain_within(self, limit: Duration, server: &str) -> usize {
        let (open, limit_s) = (self.busy(), limit.as_secs());
        tracing::info!(
            server,
            sessions = open,
            limit_s,
            "draining the sessions in flight"
        );
        let started = Instant::now();
        let (slots, max) = (self.slots.clone(), self.max);
        if timeout(limit, self.drain()).await.is_ok() {
            let took_ms = started.elapsed().as_millis() as u64;
            tracing::info!(
                server,
                sessions = open,
                took_ms,
                "drained: every session ended"
            );
            return 0;
        }
        // The timed-out wait gave back the slots it had taken.
        let cut = max.saturating_sub(slots.available_permits());
        tracing::warn!(
            server,
            sessions = open,
            cut,
            limit_s,
            "drain timeout: closing the sessions still in flight unanswered"
        );
        cut
    }
}

/// Accept connections on `listener` until shutdown: clients outside
/// `allow`, and clients past `max_connections`, are refused through the
/// handler; the others are served each on a task of its own.
pub async fn accept_loop<H: Handler>(
    listener: TcpListener,
    allow: &AllowList,
    max_connections: usize,
    handler: Arc<H>,
    shutdown: Shutdown,
) -> Slots {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let handler = handler.clone();
        if !allow.allows(peer.ip()) {
            tokio::spawn(handler.refuse(stream, peer, Refusal::NotAllowed));
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(handler.refuse(stream, peer, Refusal::Busy));
            continue;
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            handler.connection(stream, peer, shutdown).await;
            drop(slot);
        });
    }
    Slots {
        slots,
        max: max_connections,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Writes `served` or `refused <why>` to each client, and records it.
    #[derive(Default)]
    struct Echo {
        seen: Mutex<Vec<String>>,
    }

    impl Handler for Echo {
        async fn connection(self: Arc<Self>, mut stream: TcpStream, _: SocketAddr, _: Shutdown) {
            self.seen.lock().unwrap().push("served".into());
            let _ = stream.write_all(b"served").await;
            // Hold the slot until the client closes.
            let _ = stream.read(&mut [0u8; 1]).await;
        }

        async fn refuse(self: Arc<Self>, mut stream: TcpStream, _: SocketAddr, why: Refusal) {
            self.seen.lock().unwrap().push(format!("refused {why:?}"));
            let _ = stream
                .write_all(format!("refused {why:?}").as_bytes())
                .await;
        }
    }

    async fn answer(port: u16) -> (TcpStream, String) {
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = client.read(&mut buf).await.unwrap();
        (client, String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    async fn start(
        allow: &[&str],
        max: usize,
    ) -> (u16, Arc<Echo>, Shutdown, tokio::task::JoinHandle<Slots>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let allow = AllowList::parse("test.allow", &allow).unwrap();
        let (echo, shutdown) = (Arc::new(Echo::default()), Shutdown::new());
        let (h, sd) = (echo.clone(), shutdown.clone());
        let task = tokio::spawn(async move { accept_loop(listener, &allow, max, h, sd).await });
        (port, echo, shutdown, task)
    }

    #[tokio::test]
    async fn refuses_clients_outside_the_allow_list_and_past_the_limit() {
        let (port, echo, shutdown, task) = start(&["127.0.0.0/8"], 1).await;
        let (first, said) = answer(port).await;
        assert_eq!(said, "served");
        let (_, said) = answer(port).await;
        assert_eq!(said, "refused Busy");
        drop(first);
        shutdown.trigger();
        task.await.unwrap().drain().await;
        assert_eq!(*echo.seen.lock().unwrap(), ["served", "refused Busy"]);

        let (port, echo, shutdown, task) = start(&["10.0.0.0/8"], 4).await;
        let (_, said) = answer(port).await;
        assert_eq!(said, "refused NotAllowed");
        shutdown.trigger();
        task.await.unwrap();
        assert_eq!(*echo.seen.lock().unwrap(), ["refused NotAllowed"]);
    }

    #[tokio::test]
    async fn drain_within_waits_for_the_connections_and_counts_what_it_cuts() {
        let (port, _, shutdown, task) = start(&["127.0.0.0/8"], 4).await;
        let (_held, _) = answer(port).await;
        shutdown.trigger();
        let slots = task.await.unwrap();
        assert_eq!(slots.busy(), 1);
        let cut = slots.drain_within(Duration::from_millis(100), "test").await;
        assert_eq!(cut, 1, "the held connection outlived the limit");

        let (port, _, shutdown, task) = start(&["127.0.0.0/8"], 4).await;
        let (closing, _) = answer(port).await;
        shutdown.trigger();
        let slots = task.await.unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(closing);
        });
        let cut = slots.drain_within(Duration::from_secs(10), "test").await;
        assert_eq!(cut, 0, "the connection ended within the limit");
    }
}
