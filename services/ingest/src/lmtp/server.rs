//! The listener and one task per connection: read commands, answer them
//! (flushing only when no pipelined command is waiting), read DATA, make
//! the message durable and answer once per recipient. After STARTTLS the
//! same conversation goes on over TLS, with a fresh read buffer: what the
//! client pipelined after the command, in the clear, is dropped unread.
//!
//! Shutdown drains (RFC 5321 §3.8): the listener closes at once; a
//! transaction whose DATA has started is read to its end and answered per
//! recipient; a session waiting for its next command (idle, or between
//! transactions, or with commands pipelined after the last answer) gets
//! `421 4.3.2` and is closed, and Postfix retries elsewhere or later.
//! `serve` returns once every session is gone, or after
//! `lmtp.drain_timeout_s` with the rest cut unanswered.

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::future::join_all;
use mailfleet_blob::{blob_id, BlobStore};
use mailfleet_events::{mail::MessageReceived, Envelope};
use mailfleet_runtime::{
    allow::AllowList,
    config::KafkaConfig,
    listen::{self, Handler, Refusal},
    metrics as m,
    producer::EventProducer,
    time::now_ms,
    Shutdown,
};
use mailfleet_tls::{Reason, ServerStream, TlsAcceptor};
use tokio::{
    io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter},
    net::{TcpListener, TcpStream},
    time::timeout,
};

use super::{
    data::{read_data, DataEnd},
    line::{read_line, trim_eol, Line},
    session::{reply, Limits, RecipientCheck, Session, Step, Transaction},
    LmtpConfig,
};
use crate::{
    message::{summarize, Summary},
    IngestError,
};

struct Server {
    cfg: LmtpConfig,
    blobs: Arc<BlobStore>,
    producer: EventProducer,
    recipients: Arc<dyn RecipientCheck>,
    /// Unique per process: host and pid, for session ids.
    instance: String,
    sessions: AtomicU64,
    /// From `[lmtp.tls]`: STARTTLS is offered when set.
    tls: Option<TlsAcceptor>,
}

/// A connection, buffered both ways: reads see what the client pipelined,
/// replies go out at a flush.
type Conn<S> = BufReader<BufWriter<S>>;

fn buffered<S: AsyncRead + AsyncWrite>(stream: S) -> Conn<S> {
    BufReader::with_capacity(64 * 1024, BufWriter::new(stream))
}

/// How a conversation ended.
enum End {
    Closed,
    /// `220` to STARTTLS was sent and flushed: the handshake is next.
    StartTls,
}

/// Serve LMTP on `listener` until shutdown.
pub async fn serve(
    cfg: LmtpConfig,
    listener: TcpListener,
    blobs: Arc<BlobStore>,
    kafka: &KafkaConfig,
    recipients: Arc<dyn RecipientCheck>,
    shutdown: Shutdown,
) -> Result<(), IngestError> {
    let allow = AllowList::parse("lmtp.allow", &cfg.allow)?;
    let tls = cfg.tls.as_ref().map(|t| t.acceptor()).transpose()?;
    let instance = format!("{}-{}", cfg.hostname, std::process::id());
    let ack = Duration::from_millis(cfg.ack_timeout_ms);
    let producer =
        EventProducer::with_delivery_timeout(kafka, &format!("mailfleet-lmtp-{instance}"), ack)?;
    let server = Arc::new(Server {
        cfg,
        blobs,
        producer,
        recipients,
        instance,
        sessions: AtomicU64::new(0),
        tls,
    });
    // Exported from the start, so that rates work before the first event.
    metrics::counter!(m::LMTP_ABORTED).increment(0);
    metrics::counter!(m::LMTP_BYTES).increment(0);
    metrics::gauge!(m::LMTP_CONNECTIONS).set(0.0);
    metrics::counter!(m::LMTP_CONNECTIONS_DENIED).increment(0);
    for result in ["ok", "failed"] {
        metrics::counter!(m::LMTP_TLS_HANDSHAKES, "result" => result).increment(0);
    }
    let (listen, starttls) = (&server.cfg.listen, server.tls.is_some());
    let required = server.cfg.require_tls;
    tracing::info!(%listen, starttls, required, "LMTP server listening");
    let max = server.cfg.max_connections;
    let drain = Duration::from_secs(server.cfg.drain_timeout_s);
    let slots = listen::accept_loop(listener, &allow, max, server, shutdown).await;
    slots.drain_within(drain, "lmtp").await;
    Ok(())
}

impl Handler for Server {
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: Shutdown) {
        metrics::gauge!(m::LMTP_CONNECTIONS).increment(1.0);
        if let Err(e) = self.session(stream, peer, &shutdown).await {
            tracing::debug!(%peer, error = %e, "LMTP connection ended with an error");
        }
        metrics::gauge!(m::LMTP_CONNECTIONS).decrement(1.0);
    }

    async fn refuse(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, why: Refusal) {
        match why {
            Refusal::NotAllowed => {
                metrics::counter!(m::LMTP_CONNECTIONS_DENIED).increment(1);
                tracing::warn!(%peer, "client not in lmtp.allow; answering 421 4.7.0 and closing");
                refuse_denied(stream).await
            }
            Refusal::Busy => {
                tracing::warn!(%peer, "connection limit reached; answering 421");
                refuse_busy(stream).await
            }
        }
    }
}

async fn refuse_busy(mut stream: TcpStream) {
    let busy = reply(421, "4.3.2", "Too many connections, try again later");
    let _ = stream.write_all(busy.as_bytes()).await;
}

/// A client outside `lmtp.allow`: a `421` greeting, then close. Postfix
/// logs the text and keeps the mail queued (a temporary failure), so a
/// wrong allow list delays mail and says why instead of bouncing it.
async fn refuse_denied(mut stream: TcpStream) {
    let text = reply(
        421,
        "4.7.0",
        "Client address not allowed, closing connection",
    );
    let _ = timeout(Duration::from_secs(5), stream.write_all(text.as_bytes())).await;
}

impl Server {
    async fn session(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: &Shutdown,
    ) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        let mut session = Session::new(
            &self.cfg.hostname,
            Limits {
                max_message_bytes: self.cfg.max_message_bytes,
                max_recipients: self.cfg.max_recipients,
                max_errors: self.cfg.max_errors,
            },
        );
        if self.tls.is_some() {
            session = session.with_starttls(self.cfg.require_tls);
        }
        let mut plain = buffered(stream);
        plain.write_all(session.greeting().as_bytes()).await?;
        if let End::Closed = self.converse(&mut plain, &mut session, shutdown).await? {
            return Ok(());
        }
        // RFC 3207 §4.2: whatever the client pipelined after STARTTLS came
        // in the clear; it goes with the read buffer, never executed. The
        // write buffer is empty: `converse` flushed the 220.
        let tcp = plain.into_inner().into_inner();
        let Some(tls) = self.handshake(tcp, peer, shutdown).await else {
            return Ok(());
        };
        // The session refuses a second STARTTLS, so this ends closed.
        let mut secure = buffered(tls);
        self.converse(&mut secure, &mut session, shutdown)
            .await
            .map(drop)
    }

    /// The TLS handshake after `220`; `None` (logged, counted) when it
    /// fails: the connection is then closed.
    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: &Shutdown,
    ) -> Option<ServerStream<TcpStream>> {
        // Set whenever the session offered STARTTLS.
        let acceptor = self.tls.as_ref()?;
        let idle = Duration::from_secs(self.cfg.idle_timeout_s);
        let done = tokio::select! {
            done = timeout(idle, acceptor.accept(tcp)) => done,
            _ = shutdown.wait() => return None,
        };
        let failed = |reason: &dyn std::fmt::Display| {
            metrics::counter!(m::LMTP_TLS_HANDSHAKES, "result" => "failed").increment(1);
            tracing::warn!(%peer, %reason, "LMTP STARTTLS handshake failed; closing the connection");
        };
        match done {
            Ok(Ok(stream)) => {
                metrics::counter!(m::LMTP_TLS_HANDSHAKES, "result" => "ok").increment(1);
                let (_, tls) = stream.get_ref();
                let version = tls.protocol_version().map(|v| format!("{v:?}"));
                let cipher = tls
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()));
                tracing::debug!(%peer, ?version, ?cipher, "LMTP STARTTLS: TLS established");
                Some(stream)
            }
            Ok(Err(e)) => {
                failed(&Reason(&e));
                None
            }
            Err(_) => {
                failed(&format!("no handshake within {idle:?}"));
                None
            }
        }
    }

    /// Commands and DATA until the client or the session ends it, or
    /// STARTTLS hands the connection to the handshake.
    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Conn<S>,
        session: &mut Session,
        shutdown: &Shutdown,
    ) -> io::Result<End> {
        let idle = Duration::from_secs(self.cfg.idle_timeout_s);
        let mut line = Vec::with_capacity(512);
        loop {
            // Pipelining: answers go out together once no command is waiting.
            if conn.buffer().is_empty() {
                conn.flush().await?;
            }
            line.clear();
            // Shutdown first: a command already pipelined gets the 421 too.
            let read = tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    send_now(conn, &reply(421, "4.3.2", "Shutting down, try again later")).await?;
                    return Ok(End::Closed);
                }
                read = timeout(idle, read_line(conn, &mut line)) => read,
            };
            let step = match read {
                Err(_) => {
                    send_now(conn, &reply(421, "4.4.2", "Idle timeout")).await?;
                    return Ok(End::Closed);
                }
                Ok(read) => match read? {
                    Line::Eof => return Ok(End::Closed),
                    Line::TooLong => session.line_too_long(),
                    Line::Command => session.handle(trim_eol(&line), self.recipients.as_ref()),
                },
            };
            match step {
                Step::Reply(text) => conn.write_all(text.as_bytes()).await?,
                Step::Close(text) => {
                    send_now(conn, &text).await?;
                    return Ok(End::Closed);
                }
                Step::StartTls(text) => {
                    send_now(conn, &text).await?;
                    return Ok(End::StartTls);
                }
                Step::Data(tx) => {
                    conn.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    conn.flush().await?;
                    let Some(answers) = self.data(conn, session, tx).await? else {
                        return Ok(End::Closed); // cut off during DATA: nothing was announced
                    };
                    for answer in answers {
                        conn.write_all(answer.as_bytes()).await?;
                    }
                }
            }
        }
    }

    /// Read the message and answer per recipient; `None` if the client
    /// went away before the final dot.
    async fn data<R: AsyncBufRead + Unpin>(
        &self,
        reader: &mut R,
        session: &Session,
        tx: Transaction,
    ) -> std::io::Result<Option<Vec<String>>> {
        let whole = Duration::from_secs(self.cfg.data_timeout_s);
        let end = match timeout(whole, read_data(reader, self.cfg.max_message_bytes)).await {
            Ok(end) => end?,
            Err(_) => DataEnd::Eof,
        };
        match end {
            DataEnd::Eof => {
                metrics::counter!(m::LMTP_ABORTED).increment(1);
                tracing::info!(lhlo = %session.lhlo(), "DATA cut off before the final dot; nothing announced");
                Ok(None)
            }
            DataEnd::TooBig { size } => {
                metrics::counter!(m::LMTP_MESSAGES, "result" => "too_big").increment(1);
                let max = self.cfg.max_message_bytes;
                let text = format!("Message size {size} exceeds fixed limit {max}");
                Ok(Some(each(&tx, |_| reply(552, "5.3.4", &text))))
            }
            DataEnd::Complete(raw) => Ok(Some(self.deliver(session, tx, raw).await)),
        }
    }

    /// Make the message durable, then answer each recipient by its ack.
    async fn deliver(&self, session: &Session, tx: Transaction, raw: Vec<u8>) -> Vec<String> {
        let started = Instant::now();
        let summary = summarize(&raw);
        let size = raw.len() as i64;
        let blob_id = match self.store(&tx, raw).await {
            Ok(id) => id,
            Err(error) => {
                tracing::error!(%error, "storing a message failed; answering 452");
                metrics::counter!(m::LMTP_MESSAGES, "result" => "storage_failed").increment(1);
                return each(&tx, |_| reply(452, "4.3.1", "Insufficient system storage"));
            }
        };
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        let received = Received {
            blob_id,
            size,
            now: now_ms(),
            lhlo: session.lhlo().to_string(),
            session_id: format!("{}-{n}", self.instance),
            summary,
        };
        let sends = tx.recipients.iter().enumerate().map(|(index, rcpt)| {
            let event = received.event(&tx, index, &self.cfg.hostname);
            async move {
                self.producer
                    .send(&self.cfg.topic, rcpt.account.as_bytes(), &event)
                    .await
            }
        });
        let acks = join_all(sends).await;
        let answers = answer_acks(&tx, &received.blob_id, acks);
        metrics::counter!(m::LMTP_MESSAGES, "result" => answers.result).increment(1);
        if answers.failed < tx.recipients.len() {
            metrics::counter!(m::LMTP_BYTES).increment(size as u64);
        }
        metrics::histogram!(m::LMTP_ACK_DURATION).record(started.elapsed().as_secs_f64());
        answers.replies
    }

    /// The message's references, then its blob: an account deletion racing
    /// this delivery then never removes a blob it is about to announce.
    async fn store(&self, tx: &Transaction, raw: Vec<u8>) -> Result<String, IngestError> {
        let blobs = self.blobs.clone();
        let holders: Vec<String> = tx.recipients.iter().map(|r| r.account.clone()).collect();
        tokio::task::spawn_blocking(move || {
            let id = blob_id(&raw);
            blobs.add_refs(&id, holders.iter().map(String::as_str))?;
            blobs.put_with_id(&id, &raw).map(|()| id)
        })
        .await?
        .map_err(IngestError::from)
    }
}

/// What every recipient's `MessageReceived` shares.
struct Received {
    blob_id: String,
    size: i64,
    now: i64,
    lhlo: String,
    session_id: String,
    summary: Summary,
}

impl Received {
    /// The event for recipient `index` of `tx`.
    fn event(&self, tx: &Transaction, index: usize, hostname: &str) -> MessageReceived {
        let rcpt = &tx.recipients[index];
        MessageReceived {
            // Derived from content and account: a message Postfix retries
            // after a 451 gets the same id, and downstream drops the
            // duplicate.
            envelope: Envelope::new(
                format!("lmtp:{}:{}", self.blob_id, rcpt.account),
                self.now,
                format!("lmtp@{hostname}"),
            ),
            account: rcpt.account.clone(),
            recipient: rcpt.address.clone(),
            sender: tx.sender.clone(),
            blob_id: self.blob_id.clone(),
            size: self.size,
            received_at: self.now,
            body_type: tx.body,
            lhlo: self.lhlo.clone(),
            session_id: self.session_id.clone(),
            recipient_count: tx.recipients.len() as i32,
            recipient_index: index as i32,
            message_id: self.summary.message_id.clone(),
            header_from: self.summary.from.clone(),
            subject: self.summary.subject.clone(),
            header_date: self.summary.date.clone(),
            // What the MTA said with XFORWARD (`xforward.rs`), for rspamd
            // and for finding the MTA's log lines.
            client_address: tx.forwarded.addr.clone(),
            client_name: tx.forwarded.name.clone(),
            client_helo: tx.forwarded.helo.clone(),
            queue_id: tx.forwarded.ident.clone(),
        }
    }
}

/// The answers to one message's recipients, by their acknowledgements.
struct Answers {
    replies: Vec<String>,
    failed: usize,
    /// The message's `result` label.
    result: &'static str,
}

fn answer_acks<T, E: std::fmt::Display>(
    tx: &Transaction,
    blob_id: &str,
    acks: Vec<Result<T, E>>,
) -> Answers {
    let mut failed = 0;
    let replies = tx
        .recipients
        .iter()
        .zip(acks)
        .map(|(rcpt, ack)| match ack {
            Ok(_) => {
                metrics::counter!(m::LMTP_RECIPIENTS, "result" => "accepted").increment(1);
                let queued = &blob_id[..16];
                reply(250, "2.0.0", &format!("<{}> Ok, queued as {queued}", rcpt.address))
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(recipient = %rcpt.address, error = %e, "Kafka did not acknowledge; answering 451");
                metrics::counter!(m::LMTP_RECIPIENTS, "result" => "deferred").increment(1);
                let text = format!("<{}> Temporary failure, try again later", rcpt.address);
                reply(451, "4.3.0", &text)
            }
        })
        .collect();
    let result = match failed {
        0 => "accepted",
        f if f == tx.recipients.len() => "kafka_failed",
        _ => "partial",
    };
    Answers {
        replies,
        failed,
        result,
    }
}

fn each(tx: &Transaction, answer: impl Fn(&str) -> String) -> Vec<String> {
    tx.recipients.iter().map(|r| answer(&r.address)).collect()
}

/// Send `text` now (the last reply before a close or the TLS handshake).
async fn send_now<W: AsyncWrite + Unpin>(writer: &mut W, text: &str) -> io::Result<()> {
    writer.write_all(text.as_bytes()).await?;
    writer.flush().await
}
