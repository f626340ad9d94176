//! A small SMTP submission client for `mailfleet bench submission`: one
//! session with `AUTH PLAIN`, then many messages, one command at a time
//! (as a webmail front end that keeps its connection). smtp-source cannot
//! authenticate, and swaks starts a process per message.

use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    time::timeout,
};

/// How long one reply may take (the end of DATA waits for the milter).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// An authenticated SMTP session.
pub struct Session {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Session {
    /// Connect to `server`, EHLO, `AUTH PLAIN` as `login`.
    pub async fn open(server: &str, login: &str, password: &str) -> anyhow::Result<Session> {
        let stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to {server}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut session = Session {
            reader: BufReader::new(read),
            writer: write,
        };
        session.expect(220).await.context("the greeting")?;
        session.command("EHLO bench.mailfleet.test", 250).await?;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"));
        session
            .command(&format!("AUTH PLAIN {token}"), 235)
            .await
            .context("AUTH PLAIN")?;
        Ok(session)
    }

    /// One message from `from` to `to`; `data` is the message, dot-stuffed,
    /// with CRLF line ends. Returns the reply to the end of DATA.
    pub async fn send(&mut self, from: &str, to: &str, data: &[u8]) -> anyhow::Result<String> {
        self.command(&format!("MAIL FROM:<{from}>"), 250).await?;
        self.command(&format!("RCPT TO:<{to}>"), 250).await?;
        self.command("DATA", 354).await?;
        self.writer.write_all(data).await?;
        self.writer.write_all(b".\r\n").await?;
        self.reply().await
    }

    /// QUIT, not waiting for much.
    pub async fn quit(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n").await;
        let _ = timeout(Duration::from_secs(2), self.reply()).await;
    }

    async fn command(&mut self, line: &str, want: u16) -> anyhow::Result<String> {
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.write_all(b"\r\n").await?;
        let shown = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
        self.expect(want).await.with_context(|| shown)
    }

    async fn expect(&mut self, want: u16) -> anyhow::Result<String> {
        let reply = self.reply().await?;
        anyhow::ensure!(
            reply.starts_with(&want.to_string()),
            "expected {want}, got {reply:?}"
        );
        Ok(reply)
    }

    /// One reply, all its lines joined: the last line has a space after
    /// the code.
    async fn reply(&mut self) -> anyhow::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .context("no reply in time")??;
            anyhow::ensure!(n > 0, "the server closed the connection");
            all.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(all);
            }
            all.push(' ');
        }
    }
}

/// A unique message of about `bytes`: a short text and a base64 "photo",
/// with `batch` in a header the sink is counted by.
pub fn message(batch: &str, from: &str, to: &str, i: u64, bytes: usize) -> Vec<u8> {
    let mut out = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: bench {i}\r\nMessage-ID: <{batch}.{i}@bench.mailfleet.test>\r\n\
         X-Bench-Batch: {batch};\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nphoto {i} attached\r\n\
         --b\r\nContent-Type: image/jpeg; name=\"photo.jpg\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let seed = i ^ batch.len() as u64 ^ 0x5eed;
    out.extend(super::corpus::base64_noise(
        seed,
        bytes.saturating_sub(out.len() + 12),
    ));
    out.extend_from_slice(b"\r\n--b--\r\n");
    out
}
