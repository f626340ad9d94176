//! A policy client speaking the same protocol as Postfix's smtpd: for the
//! benchmark and the tests.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// One persistent connection to a policy server.
pub struct PolicyClient {
    stream: BufReader<TcpStream>,
    buf: String,
}

impl PolicyClient {
    /// Connect to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> std::io::Result<PolicyClient> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(PolicyClient {
            stream: BufReader::new(stream),
            buf: String::new(),
        })
    }

    /// Send one request (`request=smtpd_access_policy` is added) and return
    /// the action, without the `action=` prefix.
    pub async fn ask(
        &mut self,
        attrs: &[(&str, &str)],
        limit: Duration,
    ) -> std::io::Result<String> {
        let mut req = String::from("request=smtpd_access_policy\n");
        for (k, v) in attrs {
            req.push_str(k);
            req.push('=');
            req.push_str(v);
            req.push('\n');
        }
        req.push('\n');
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let read = async {
            self.buf.clear();
            self.stream.read_line(&mut self.buf).await?;
            let mut blank = String::new();
            self.stream.read_line(&mut blank).await?;
            if self.buf.is_empty() || blank != "\n" {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed without a reply",
                ));
            }
            Ok(self
                .buf
                .trim_end()
                .trim_start_matches("action=")
                .to_string())
        };
        tokio::time::timeout(limit, read)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply in time"))?
    }
}
