//! The clamd client: `INSTREAM` scans, `PING` and `VERSION` over TCP.
//!
//! The protocol is clamd(8)'s "z" form: the command and the reply each end in
//! a NUL byte. `zINSTREAM\0` is followed by the data in chunks, each prefixed
//! by its length as 4 bytes big-endian, and a zero-length chunk that ends the
//! stream; clamd answers `stream: OK`, `stream: <signature> FOUND` or
//! `<text> ERROR`, then closes the connection. So every request opens its own
//! connection: there is nothing to pool.
//!
//! clamd stops reading once a stream passes its `StreamMaxLength`, replies
//! `INSTREAM size limit exceeded. ERROR` and closes, possibly while we are
//! still sending. The reply is therefore read while the data is being sent,
//! and a reply that arrives is preferred to the send error that follows it.
//!
//! [`parse_reply`] is the pure part; start there.

use std::io;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A reply longer than this is not clamd's (its longest is a signature name).
const MAX_REPLY_BYTES: usize = 4096;
/// The largest `chunk_bytes` accepted; clamd itself takes any chunk up to
/// `StreamMaxLength`, but a chunk is buffered whole on both sides.
const MAX_CHUNK_BYTES: usize = 16 << 20;

/// `[clamd]`: where clamd listens and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClamdConfig {
    /// `host:port` of clamd's TCPSocket (`ops/clamav` runs it on 127.0.0.1:3310).
    pub address: String,
    /// How long to wait for the TCP connection, ms.
    pub connect_timeout_ms: u64,
    /// How long one request may take from the first byte sent to the whole
    /// reply, ms. Above clamd's own MaxScanTime (upstream default 120 s), so
    /// that clamd's limit, not ours, ends a slow scan.
    pub scan_timeout_ms: u64,
    /// INSTREAM chunk size, bytes (clamdscan uses 64 KiB too).
    pub chunk_bytes: usize,
}

impl Default for ClamdConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:3310".into(),
            connect_timeout_ms: 2_000,
            scan_timeout_ms: 130_000,
            chunk_bytes: 64 * 1024,
        }
    }
}

impl ClamdConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let port_ok = self.address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            out.push(format!(
                "clamd.address = {:?}: must be host:port",
                self.address
            ));
        }
        for (key, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("scan_timeout_ms", self.scan_timeout_ms),
        ] {
            if v == 0 {
                out.push(format!("clamd.{key} = 0: must be > 0"));
            }
        }
        if !(1..=MAX_CHUNK_BYTES).contains(&self.chunk_bytes) {
            out.push(format!(
                "clamd.chunk_bytes = {}: must be between 1 and {MAX_CHUNK_BYTES}",
                self.chunk_bytes
            ));
        }
        out
    }

    /// `Ok` or every problem ([`ClamdConfig::problems`]).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// What clamd concluded about one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdReply {
    /// `stream: OK`.
    Clean,
    /// `stream: <signature> FOUND`. Signatures from a custom database carry
    /// clamd's suffix, e.g. `Mailfleet.Test.EICAR.UNOFFICIAL`.
    Found { signature: String },
}

/// Why a clamd request failed. See [`ClamdError::is_transient`].
#[derive(Debug, thiserror::Error)]
pub enum ClamdError {
    #[error("connecting to clamd at {address}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("sending {command} to clamd at {address}")]
    Send {
        address: String,
        command: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("receiving clamd's reply to {command} from {address}")]
    Receive {
        address: String,
        command: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("clamd {operation} timed out after {after_ms} ms")]
    Timeout {
        operation: &'static str,
        after_ms: u64,
    },
    /// clamd answered with an error, e.g. `INSTREAM size limit exceeded. ERROR`.
    #[error("clamd could not scan: {0}")]
    Scanner(String),
    /// A reply that is none of clamd's, quoted.
    #[error("unexpected reply from clamd: {0:?}")]
    Protocol(String),
}

impl ClamdError {
    /// Whether the same request may succeed later, so the message should be
    /// retried with backoff rather than given a permanent outcome.
    ///
    /// Connect, send, receive and timeout errors are transient: clamd is down,
    /// restarting or overloaded. A size-limit error is not: the message is
    /// too big and always will be. Other scanner errors are transient (they are
    /// clamd-side trouble: memory, temporary files), and so are protocol
    /// errors (a misconfigured address or a clamd bug, not the message's
    /// fault); the runtime's retry limit bounds both.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Send { .. } | Self::Receive { .. } => true,
            Self::Timeout { .. } | Self::Protocol(_) => true,
            Self::Scanner(text) => !text.contains("size limit exceeded"),
        }
    }
}

/// Parse one reply to `zINSTREAM`, with or without its terminating NUL.
pub fn parse_reply(reply: &[u8]) -> Result<ClamdReply, ClamdError> {
    let text = reply_text(reply);
    if text == "stream: OK" {
        return Ok(ClamdReply::Clean);
    }
    let found = text
        .strip_prefix("stream: ")
        .and_then(|rest| rest.strip_suffix(" FOUND"))
        .filter(|sig| !sig.is_empty());
    if let Some(signature) = found {
        return Ok(ClamdReply::Found {
            signature: signature.to_string(),
        });
    }
    if text.ends_with(" ERROR") {
        return Err(ClamdError::Scanner(text));
    }
    Err(ClamdError::Protocol(text))
}

/// The reply as text, without its NUL and trailing line end.
fn reply_text(reply: &[u8]) -> String {
    let reply = reply.strip_suffix(b"\0").unwrap_or(reply);
    String::from_utf8_lossy(reply).trim_end().to_string()
}

/// A clamd client. Cheap to clone; every request uses its own connection.
#[derive(Debug, Clone)]
pub struct Clamd {
    config: ClamdConfig,
}

impl Clamd {
    /// A client for clamd at `config.address`; connects only per request.
    pub fn new(config: ClamdConfig) -> Self {
        Self { config }
    }

    /// Scan `data` (a whole raw message) with `INSTREAM`.
    pub async fn scan(&self, data: &[u8]) -> Result<ClamdReply, ClamdError> {
        let reply = self.request("INSTREAM", Some(data)).await?;
        let outcome = parse_reply(&reply);
        tracing::debug!(bytes = data.len(), reply = %reply_text(&reply), "clamd scan");
        outcome
    }

    /// `PING`: `Ok` once clamd answers `PONG` (it listens only after loading
    /// its signatures).
    pub async fn ping(&self) -> Result<(), ClamdError> {
        match reply_text(&self.request("PING", None).await?).as_str() {
            "PONG" => Ok(()),
            other => Err(ClamdError::Protocol(other.to_string())),
        }
    }

    /// `VERSION`, e.g. `ClamAV 1.4.6` (with `/<daily version>/<date>` when
    /// the official databases are loaded).
    pub async fn version(&self) -> Result<String, ClamdError> {
        let text = reply_text(&self.request("VERSION", None).await?);
        if text.starts_with("ClamAV ") {
            Ok(text)
        } else {
            Err(ClamdError::Protocol(text))
        }
    }

    /// Connect, send `z<command>\0` (and `body` as an INSTREAM stream), and
    /// return the reply without its NUL.
    async fn request(
        &self,
        command: &'static str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClamdError> {
        let cfg = &self.config;
        let stream = timeout(
            Duration::from_millis(cfg.connect_timeout_ms),
            TcpStream::connect(&cfg.address),
        )
        .await
        .map_err(|_| ClamdError::Timeout {
            operation: "connect",
            after_ms: cfg.connect_timeout_ms,
        })?
        .map_err(|source| ClamdError::Connect {
            address: cfg.address.clone(),
            source,
        })?;
        timeout(
            Duration::from_millis(cfg.scan_timeout_ms),
            self.exchange(stream, command, body),
        )
        .await
        .map_err(|_| ClamdError::Timeout {
            operation: command,
            after_ms: cfg.scan_timeout_ms,
        })?
    }

    /// Send and receive at the same time: clamd may reply (with an error) and
    /// close before it has read everything.
    async fn exchange(
        &self,
        mut stream: TcpStream,
        command: &'static str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClamdError> {
        // Without it, the final 4-byte chunk may wait on a delayed ACK.
        let _ = stream.set_nodelay(true);
        let address = &self.config.address;
        let (mut rd, mut wr) = stream.split();
        let send = send_request(&mut wr, command, body, self.config.chunk_bytes);
        let recv = read_reply(&mut rd);
        tokio::pin!(send, recv);
        let sent = tokio::select! {
            sent = &mut send => sent,
            reply = &mut recv => return finish_reply(reply, address, command),
        };
        let reply = recv.await;
        match sent {
            Ok(()) => finish_reply(reply, address, command),
            // A reply sent before clamd closed (e.g. the size limit) says why.
            Err(source) => match reply {
                Ok(reply) => finish_reply(Ok(reply), address, command),
                Err(_) => Err(ClamdError::Send {
                    address: address.clone(),
                    command,
                    source,
                }),
            },
        }
    }
}

fn finish_reply(
    reply: io::Result<Vec<u8>>,
    address: &str,
    command: &'static str,
) -> Result<Vec<u8>, ClamdError> {
    let reply = reply.map_err(|source| ClamdError::Receive {
        address: address.to_string(),
        command,
        source,
    })?;
    if reply.len() > MAX_REPLY_BYTES {
        let head: String = reply_text(&reply).chars().take(200).collect();
        return Err(ClamdError::Protocol(format!("{head}…")));
    }
    Ok(reply)
}

/// `z<command>\0`, then for a body its chunks and the zero-length terminator.
async fn send_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    command: &str,
    body: Option<&[u8]>,
    chunk_bytes: usize,
) -> io::Result<()> {
    w.write_all(format!("z{command}\0").as_bytes()).await?;
    if let Some(body) = body {
        for chunk in body.chunks(chunk_bytes.max(1)) {
            let len = u32::try_from(chunk.len()).map_err(io::Error::other)?;
            w.write_all(&len.to_be_bytes()).await?;
            w.write_all(chunk).await?;
        }
        w.write_all(&0u32.to_be_bytes()).await?;
    }
    w.flush().await
}

/// Bytes up to the NUL (excluded), or up to EOF. Reading stops once more than
/// `MAX_REPLY_BYTES` came without a NUL; `finish_reply` rejects those.
async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            if reply.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "clamd closed the connection without a reply",
                ));
            }
            return Ok(reply);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            reply.extend_from_slice(&buf[..end]);
            return Ok(reply);
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.len() > MAX_REPLY_BYTES {
            return Ok(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_and_found_replies() {
        assert_eq!(parse_reply(b"stream: OK\0").unwrap(), ClamdReply::Clean);
        assert_eq!(parse_reply(b"stream: OK\n").unwrap(), ClamdReply::Clean);
        assert_eq!(
            parse_reply(b"stream: Mailfleet.Test.EICAR.UNOFFICIAL FOUND\0").unwrap(),
            ClamdReply::Found {
                signature: "Mailfleet.Test.EICAR.UNOFFICIAL".into()
            }
        );
    }

    #[test]
    fn size_limit_is_a_permanent_scanner_error() {
        let err = parse_reply(b"INSTREAM size limit exceeded. ERROR\0").unwrap_err();
        assert!(
            matches!(&err, ClamdError::Scanner(t) if t == "INSTREAM size limit exceeded. ERROR"),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn other_scanner_errors_are_transient() {
        let err = parse_reply(b"stream: Can't allocate memory ERROR").unwrap_err();
        assert!(matches!(err, ClamdError::Scanner(_)), "{err:?}");
        assert!(err.is_transient());
    }

    #[test]
    fn anything_else_is_a_protocol_error_quoting_the_reply() {
        for reply in [
            &b""[..],
            b"stream: FOUND",
            b"stream:  FOUND",
            b"UNKNOWN COMMAND\0",
            b"PONG",
        ] {
            let err = parse_reply(reply).unwrap_err();
            assert!(matches!(err, ClamdError::Protocol(_)), "{reply:?}: {err:?}");
        }
        let err = parse_reply(b"UNKNOWN COMMAND\0").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unexpected reply from clamd: "UNKNOWN COMMAND""#
        );
    }

    #[test]
    fn io_errors_are_transient() {
        let io = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let address = "127.0.0.1:1".to_string();
        assert!(ClamdError::Connect {
            address: address.clone(),
            source: io()
        }
        .is_transient());
        assert!(ClamdError::Send {
            address,
            command: "INSTREAM",
            source: io()
        }
        .is_transient());
        assert!(ClamdError::Timeout {
            operation: "INSTREAM",
            after_ms: 1
        }
        .is_transient());
    }

    #[tokio::test]
    async fn instream_is_framed_in_big_endian_chunks() {
        let mut out = Vec::new();
        send_request(&mut out, "INSTREAM", Some(b"abcde"), 2)
            .await
            .unwrap();
        let expected: &[u8] = b"zINSTREAM\0\0\0\0\x02ab\0\0\0\x02cd\0\0\0\x01e\0\0\0\0";
        assert_eq!(out, expected);
        let mut out = Vec::new();
        send_request(&mut out, "PING", None, 2).await.unwrap();
        assert_eq!(out, b"zPING\0");
    }

    #[tokio::test]
    async fn reply_ends_at_the_nul() {
        let mut r: &[u8] = b"stream: OK\0ignored";
        assert_eq!(read_reply(&mut r).await.unwrap(), b"stream: OK");
        let mut r: &[u8] = b"";
        let err = read_reply(&mut r).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let endless = vec![b'x'; 3 * MAX_REPLY_BYTES];
        let reply = read_reply(&mut endless.as_slice()).await.unwrap();
        assert!(finish_reply(Ok(reply), "a:1", "PING").is_err());
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(ClamdConfig::default().validate(), Ok(()));
    }

    #[test]
    fn every_config_problem_is_reported_at_once() {
        let cfg = ClamdConfig {
            address: "localhost".into(),
            connect_timeout_ms: 0,
            scan_timeout_ms: 0,
            chunk_bytes: 0,
        };
        let problems = cfg.validate().unwrap_err().join("\n");
        for key in [
            "address = \"localhost\"",
            "connect_timeout_ms = 0",
            "scan_timeout_ms = 0",
            "chunk_bytes = 0",
        ] {
            assert!(problems.contains(key), "{key} missing in:\n{problems}");
        }
    }

    #[test]
    fn config_rejects_unknown_keys_and_fills_defaults() {
        let cfg: ClamdConfig = serde_json::from_str(r#"{"address":"clamd:3310"}"#).unwrap();
        assert_eq!(cfg.address, "clamd:3310");
        assert_eq!(cfg.chunk_bytes, ClamdConfig::default().chunk_bytes);
        assert!(serde_json::from_str::<ClamdConfig>(r#"{"adress":"x:1"}"#).is_err());
    }
}
