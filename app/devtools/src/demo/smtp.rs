//! The demo's SMTP clients: the internet's MTAs talking to Postfix's
//! inbound smtpd (`ops/postfix`, 127.0.0.1:$MAILFLEET_POSTFIX_PORT, default
//! 2525). Each session poses as a remote MTA with XCLIENT (Postfix allows
//! it from 127.0.0.0/8), so Postfix asks the policy server (`mailfleet
//! policy`) about each RCPT as it would for that client, and delivers what
//! it accepts over LMTP to `mailfleet lmtp`.

use std::time::Duration;

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// Postfix's inbound smtpd.
pub fn postfix_addr() -> String {
    let port = std::env::var("MAILFLEET_POSTFIX_PORT").unwrap_or_else(|_| "2525".into());
    format!("127.0.0.1:{port}")
}

/// The client a session poses as.
pub struct Client<'a> {
    pub addr: &'a str,
    pub name: &'a str,
}

/// One SMTP session.
pub struct Session {
    stream: BufReader<TcpStream>,
}

impl Session {
    /// Connect to `server` and pose as `client` (XCLIENT, then EHLO).
    pub async fn open(server: &str, client: &Client<'_>) -> anyhow::Result<Session> {
        let stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting Postfix at {server} (ops/postfix start)"))?;
        let mut s = Session {
            stream: BufReader::new(stream),
        };
        s.expect(None, 220).await?;
        s.expect(Some("EHLO demo.invalid"), 250).await?;
        let xclient = format!("XCLIENT ADDR={} NAME={}", client.addr, client.name);
        s.expect(Some(&xclient), 220).await?;
        s.expect(Some(&format!("EHLO {}", client.name)), 250)
            .await?;
        Ok(s)
    }

    /// Send `line` (if any) and read the whole reply: (code, its last line).
    pub async fn command(&mut self, line: Option<&str>) -> anyhow::Result<(u16, String)> {
        if let Some(line) = line {
            let stream = self.stream.get_mut();
            stream.write_all(format!("{line}\r\n").as_bytes()).await?;
        }
        loop {
            let mut reply = String::new();
            let read = self.stream.read_line(&mut reply);
            let n = tokio::time::timeout(Duration::from_secs(120), read)
                .await
                .context("SMTP: no reply in 120 s")??;
            anyhow::ensure!(n > 0, "SMTP: Postfix closed the connection");
            let reply = reply.trim_end().to_string();
            let code = reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            // `250-...` continues, `250 ...` ends a reply.
            if reply.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, reply));
            }
        }
    }

    /// Send `line` and require `code`.
    pub async fn expect(&mut self, line: Option<&str>, code: u16) -> anyhow::Result<String> {
        let (got, reply) = self.command(line).await?;
        anyhow::ensure!(
            got == code,
            "Postfix answered {:?} with {reply} (expected {code})",
            line.unwrap_or("the connection")
        );
        Ok(reply)
    }

    /// MAIL FROM and one RCPT per recipient; returns each RCPT's code.
    pub async fn envelope(&mut self, from: &str, to: &[&str]) -> anyhow::Result<Vec<u16>> {
        self.expect(Some(&format!("MAIL FROM:<{from}>")), 250)
            .await?;
        let mut codes = Vec::new();
        for rcpt in to {
            codes.push(self.command(Some(&format!("RCPT TO:<{rcpt}>"))).await?.0);
        }
        Ok(codes)
    }

    /// DATA: the message, dot-stuffed; Postfix's 250 means it is queued.
    pub async fn data(&mut self, raw: &[u8]) -> anyhow::Result<()> {
        self.expect(Some("DATA"), 354).await?;
        let mut body = Vec::with_capacity(raw.len() + 64);
        for line in raw.split_inclusive(|b| *b == b'\n') {
            if line.starts_with(b".") {
                body.push(b'.');
            }
            body.extend_from_slice(line);
        }
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
        self.stream.get_mut().write_all(&body).await?;
        self.expect(None, 250).await?;
        Ok(())
    }

    /// QUIT (its answer does not matter).
    pub async fn quit(mut self) {
        let _ = self.command(Some("QUIT")).await;
    }
}
