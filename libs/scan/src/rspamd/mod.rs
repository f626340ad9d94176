//! The rspamd client: spam scores over HTTP, and learning from users.
//!
//! A scan is `POST /checkv2` on the normal worker with the raw message as
//! the body and the envelope as headers (`From`, `Rcpt`, `Ip`, `Helo`,
//! `Hostname`, `Queue-Id`, and `User` for an authenticated submission), as
//! rspamc and rspamd's milter proxy send it. Learning is `POST /learnspam`
//! or `/learnham` on the controller, and `GET /stat` tells how many
//! messages it has learned.
//!
//! A failed try (refused, timed out, a 5xx, an answer that is not rspamd's
//! JSON) is tried again while [`RspamdConfig::timeout_ms`] lasts; then it
//! is an error, and the caller's [`FailMode`] decides. [`reply`] reads the
//! answers with no I/O; start there.

mod config;
pub mod learn;
pub mod reply;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::{
    body::Bytes,
    header::{HeaderName, HeaderValue},
    Method, Request,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use mailfleet_events::mail::{SpamClass, SpamResult};

pub use config::{Actions, Disposition, FailMode, RspamdConfig};
pub use reply::LearnReply;

/// The envelope rspamd is told about one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckEnvelope {
    /// MAIL FROM; empty for the null sender.
    pub from: String,
    pub rcpts: Vec<String>,
    /// The SMTP client's address.
    pub ip: Option<String>,
    pub helo: Option<String>,
    /// The SMTP client's reverse-DNS name.
    pub hostname: Option<String>,
    pub queue_id: Option<String>,
    /// The SMTP AUTH login of a submission.
    pub user: Option<String>,
}

impl CheckEnvelope {
    /// The request headers. A value that is not a valid header (a control
    /// character in a forged HELO) is left out rather than sent garbled.
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        let mut add = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                out.push((HeaderName::from_static(name), v));
            }
        };
        // rspamd reads `From: <>`-less empty senders as the null sender.
        add("from", &self.from);
        for rcpt in &self.rcpts {
            add("rcpt", rcpt);
        }
        let optional = [
            ("ip", &self.ip),
            ("helo", &self.helo),
            ("hostname", &self.hostname),
            ("queue-id", &self.queue_id),
            ("user", &self.user),
        ];
        for (name, value) in optional {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                add(name, value);
            }
        }
        out
    }
}

/// Why rspamd gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RspamdError {
    #[error("rspamd at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("rspamd at {address} did not answer within {after_ms} ms ({tries} tries)")]
    Timeout {
        address: String,
        after_ms: u64,
        tries: u32,
    },
    #[error("rspamd answered HTTP {status}: {body:?}")]
    Status { status: u16, body: String },
    #[error("rspamd's {what} answer is not usable: {reason}")]
    BadReply { what: &'static str, reason: String },
}

/// A client of one rspamd (its worker and its controller).
pub struct Rspamd {
    cfg: RspamdConfig,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Rspamd {
    pub fn new(cfg: RspamdConfig) -> Self {
        let http = Client::builder(TokioExecutor::new()).build_http();
        Self { cfg, http }
    }

    pub fn config(&self) -> &RspamdConfig {
        &self.cfg
    }

    /// Score one message, trying again while `timeout_ms` lasts.
    pub async fn check(
        &self,
        raw: &[u8],
        envelope: &CheckEnvelope,
    ) -> Result<SpamResult, RspamdError> {
        let body = Bytes::copy_from_slice(raw);
        let headers = envelope.headers();
        let actions = &self.cfg.actions;
        self.with_retries(&self.cfg.address, |remaining| {
            let request = self.request(&self.cfg.address, "/checkv2", &headers, body.clone());
            async move {
                let (status, body) = self.send(&self.cfg.address, request, remaining).await?;
                if status != 200 {
                    return Err(RspamdError::Status {
                        status,
                        body: reply::preview(&body),
                    });
                }
                reply::parse_check(&body, self.cfg.max_symbols, |a| {
                    actions.of(a) == Disposition::SpamFolder
                })
            }
        })
        .await
    }

    /// Teach the controller one message as spam or ham.
    pub async fn learn(&self, class: SpamClass, raw: &[u8]) -> Result<LearnReply, RspamdError> {
        let path = match class {
            SpamClass::Ham => "/learnham",
            _ => "/learnspam",
        };
        let body = Bytes::copy_from_slice(raw);
        let address = &self.cfg.controller;
        self.with_retries(address, |remaining| {
            let request = self.request(address, path, &[], body.clone());
            async move {
                let (status, body) = self.send(address, request, remaining).await?;
                reply::parse_learn(status, &body)
            }
        })
        .await
    }

    /// How many messages the controller has learned, all classes together.
    pub async fn learned(&self) -> Result<u64, RspamdError> {
        let address = &self.cfg.controller;
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{address}/stat"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| connect_error(address, e))?;
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let (status, body) = self.send(address, Ok(request), timeout).await?;
        if status != 200 {
            return Err(RspamdError::Status {
                status,
                body: reply::preview(&body),
            });
        }
        reply::parse_learned(&body)
    }

    fn request(
        &self,
        address: &str,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, RspamdError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{address}{path}"));
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(body))
            .map_err(|e| connect_error(address, e))
    }

    /// One try: the status and the whole body, within `timeout`.
    async fn send(
        &self,
        address: &str,
        request: Result<Request<Full<Bytes>>, RspamdError>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), RspamdError> {
        let request = request?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| connect_error(address, e))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| connect_error(address, e))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RspamdError::Timeout {
                address: address.to_string(),
                after_ms: timeout.as_millis() as u64,
                tries: 1,
            }),
        }
    }

    /// Run `attempt` (given the time left) until it succeeds, the retries
    /// are spent or `timeout_ms` has passed; the last error names the
    /// tries.
    async fn with_retries<T, F, Fut>(&self, address: &str, attempt: F) -> Result<T, RspamdError>
    where
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, RspamdError>>,
    {
        let budget = Duration::from_millis(self.cfg.timeout_ms);
        let started = Instant::now();
        let mut tries = 0;
        loop {
            let remaining = budget.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(RspamdError::Timeout {
                    address: address.to_string(),
                    after_ms: self.cfg.timeout_ms,
                    tries,
                });
            }
            tries += 1;
            let error = match attempt(remaining).await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if tries > self.cfg.retries {
                return Err(match error {
                    RspamdError::Timeout { .. } => RspamdError::Timeout {
                        address: address.to_string(),
                        after_ms: started.elapsed().as_millis() as u64,
                        tries,
                    },
                    other => other,
                });
            }
            tracing::debug!(%address, tries, error = %error, "rspamd: trying again");
            let pause = Duration::from_millis(100 * u64::from(tries));
            tokio::time::sleep(pause.min(budget.saturating_sub(started.elapsed()))).await;
        }
    }
}

/// The error with its causes (hyper's own says only "client error
/// (Connect)"; the cause says "Connection refused").
fn connect_error(address: &str, e: impl std::error::Error) -> RspamdError {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    RspamdError::Connect {
        address: address.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_headers_skip_empty_and_invalid_values() {
        let env = CheckEnvelope {
            from: "a@example.net".into(),
            rcpts: vec!["b@example.org".into(), "c@example.org".into()],
            ip: Some("192.0.2.1".into()),
            helo: Some("bad\r\nhelo".into()),
            hostname: Some(String::new()),
            queue_id: Some("4XyZ1".into()),
            user: None,
        };
        let names: Vec<_> = env
            .headers()
            .into_iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                "from=a@example.net",
                "rcpt=b@example.org",
                "rcpt=c@example.org",
                "ip=192.0.2.1",
                "queue-id=4XyZ1",
            ]
        );
    }

    /// A port nothing listens on: every try is refused, then the error
    /// says so, well within the budget.
    #[tokio::test]
    async fn a_refused_connection_is_an_error_after_the_retries() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let rspamd = Rspamd::new(RspamdConfig {
            enabled: true,
            address: address.clone(),
            timeout_ms: 2_000,
            retries: 2,
            ..RspamdConfig::default()
        });
        let started = Instant::now();
        let e = rspamd
            .check(b"Subject: x\r\n\r\nhi\r\n", &CheckEnvelope::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&address), "{e}");
        assert!(started.elapsed() < Duration::from_millis(2_000));
    }

    /// A stand-in HTTP server on loopback that answers each connection
    /// with the next of `answers` (`None`: accept and say nothing).
    async fn answering(answers: Vec<Option<String>>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            for answer in answers {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                match answer {
                    Some(text) => {
                        let _ = socket.write_all(text.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    }
                    None => held.push(socket),
                }
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        address
    }

    fn http(status: &str, body: &str) -> Option<String> {
        Some(format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    }

    fn client(address: String, timeout_ms: u64, retries: u32) -> Rspamd {
        Rspamd::new(RspamdConfig {
            enabled: true,
            address,
            timeout_ms,
            retries,
            ..RspamdConfig::default()
        })
    }

    const GOOD: &str = r#"{"action":"no action","score":1.2,"required_score":15,"symbols":{}}"#;

    #[tokio::test]
    async fn a_500_then_an_answer_is_scored_on_the_retry() {
        let address = answering(vec![
            http("500 Internal Server Error", "oops"),
            http("200 OK", GOOD),
        ])
        .await;
        let result = client(address, 3_000, 1)
            .check(b"Subject: x\r\n\r\nhi\r\n", &CheckEnvelope::default())
            .await
            .unwrap();
        assert_eq!(result.score, 1.2);
    }

    #[tokio::test]
    async fn garbage_every_time_is_an_error_naming_it() {
        let address = answering(vec![
            http("200 OK", "<html>garbage</html>"),
            http("200 OK", "<html>garbage</html>"),
        ])
        .await;
        let e = client(address, 3_000, 1)
            .check(b"Subject: x\r\n\r\nhi\r\n", &CheckEnvelope::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("garbage"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_rspamd_times_out_within_the_budget() {
        let address = answering(vec![None, None, None]).await;
        let started = Instant::now();
        let e = client(address.clone(), 600, 2)
            .check(b"Subject: x\r\n\r\nhi\r\n", &CheckEnvelope::default())
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, RspamdError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains(&address), "{e}");
        assert!(took >= Duration::from_millis(550), "{took:?}");
        assert!(took < Duration::from_millis(1_500), "{took:?}");
    }
}
