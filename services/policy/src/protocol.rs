//! The Postfix SMTP access policy delegation protocol (policy(8)):
//! `name=value` lines ended by an empty line; the answer is `action=...`
//! and an empty line. Connections carry many requests.
//!
//! Reading is bounded: a line, a request and the number of attributes have
//! limits, so a hostile or broken client cannot make the server buffer
//! without end. A malformed request gets no answer: the connection is
//! closed, as Postfix expects.

use std::collections::HashMap;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Limits on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line, bytes, newline included.
    pub max_line: usize,
    /// Largest request, bytes.
    pub max_request: usize,
    /// Most attributes in one request.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Postfix's own attributes are short; certificate fields are the
        // longest, well under 4 KiB.
        Self {
            max_line: 16 * 1024,
            max_request: 64 * 1024,
            max_attributes: 128,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("request larger than {0} bytes")]
    RequestTooLarge(usize),
    #[error("more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("line without '=': {0:?}")]
    NoEquals(String),
    #[error("attribute name is empty")]
    EmptyName,
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("reading: {0}")]
    Io(String),
}

/// One policy request's attributes. The first value of a repeated name wins.
/// Names are hashed with FxHash, not the default SipHash, which was a
/// quarter of the server's own work per request (some 25 attributes each).
/// Flooding one bucket gains a client nothing: a request holds at most
/// `max_attributes` names, and the client is an allowed Postfix.
pub type Request = HashMap<String, String, rustc_hash::FxBuildHasher>;

/// Read one request. `Ok(None)` is a clean end of the connection between
/// requests.
pub async fn read_request<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limits: Limits,
) -> Result<Option<Request>, ProtocolError> {
    let mut request = Request::default();
    let mut size = 0usize;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = read_line(reader, &mut line, limits.max_line).await?;
        if n == 0 {
            return if request.is_empty() && size == 0 {
                Ok(None)
            } else {
                Err(ProtocolError::Truncated)
            };
        }
        size += n;
        if size > limits.max_request {
            return Err(ProtocolError::RequestTooLarge(limits.max_request));
        }
        let text = std::str::from_utf8(&line).map_err(|_| ProtocolError::NotUtf8)?;
        let text = text.trim_end_matches('\n').trim_end_matches('\r');
        if text.is_empty() {
            return Ok(Some(request));
        }
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| ProtocolError::NoEquals(text.chars().take(80).collect()))?;
        if name.is_empty() {
            return Err(ProtocolError::EmptyName);
        }
        if request.len() >= limits.max_attributes {
            return Err(ProtocolError::TooManyAttributes(limits.max_attributes));
        }
        request
            .entry(name.to_string())
            .or_insert_with(|| value.to_string());
    }
}

/// Read up to and including `\n`, at most `max` bytes, without buffering more.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<usize, ProtocolError> {
    loop {
        let available = reader
            .fill_buf()
            .await
            .map_err(|e| ProtocolError::Io(e.to_string()))?;
        if available.is_empty() {
            return if out.is_empty() {
                Ok(0)
            } else {
                Err(ProtocolError::Truncated)
            };
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if out.len() + take > max {
            return Err(ProtocolError::LineTooLong(max));
        }
        out.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(out.len());
        }
    }
}

/// The reply for an action.
pub fn reply(action: &str) -> String {
    format!("action={action}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], limits: Limits) -> Vec<Result<Option<Request>, ProtocolError>> {
        let mut reader = tokio::io::BufReader::with_capacity(7, input); // tiny buffer: lines span fills
        let mut out = Vec::new();
        loop {
            let r = read_request(&mut reader, limits).await;
            let stop = !matches!(r, Ok(Some(_)));
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn reads_several_requests_on_one_connection_in_any_order() {
        let input = b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=b@example.org\nfuture_attr=x\n\nsender=a@example.net\nprotocol_state=DATA\n\n";
        let got = read_all(input, Limits::default()).await;
        assert_eq!(got.len(), 3);
        let first = got[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(first["protocol_state"], "RCPT");
        assert_eq!(first["recipient"], "b@example.org");
        assert_eq!(
            first["future_attr"], "x",
            "unknown attributes are kept, not refused"
        );
        let second = got[1].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(second["protocol_state"], "DATA");
        assert_eq!(got[2], Ok(None));
    }

    #[tokio::test]
    async fn empty_values_and_crlf_are_accepted() {
        let got = read_all(b"sender=\r\nrecipient=b@x\r\n\r\n", Limits::default()).await;
        let r = got[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!((r["sender"].as_str(), r["recipient"].as_str()), ("", "b@x"));
    }

    #[tokio::test]
    async fn each_limit_and_malformation_is_an_error() {
        let limits = Limits {
            max_line: 32,
            max_request: 64,
            max_attributes: 3,
        };
        let long_line = format!("sender={}\n\n", "a".repeat(1_000_000));
        assert_eq!(
            read_all(long_line.as_bytes(), limits).await[0],
            Err(ProtocolError::LineTooLong(32))
        );
        let big = "a=1234567890123456789\n".repeat(4);
        assert_eq!(
            read_all(big.as_bytes(), limits).await[0],
            Err(ProtocolError::RequestTooLarge(64))
        );
        assert_eq!(
            read_all(b"a=1\nb=2\nc=3\nd=4\n\n", limits).await[0],
            Err(ProtocolError::TooManyAttributes(3))
        );
        assert!(matches!(
            read_all(b"garbage\n\n", limits).await[0],
            Err(ProtocolError::NoEquals(_))
        ));
        assert_eq!(
            read_all(b"=x\n\n", limits).await[0],
            Err(ProtocolError::EmptyName)
        );
        assert_eq!(
            read_all(b"a=\xff\n\n", limits).await[0],
            Err(ProtocolError::NotUtf8)
        );
        assert_eq!(
            read_all(b"a=1\nb=2", limits).await[0],
            Err(ProtocolError::Truncated)
        );
        assert_eq!(
            read_all(b"a=1\n", limits).await[0],
            Err(ProtocolError::Truncated)
        );
    }

    #[test]
    fn replies_end_with_an_empty_line() {
        assert_eq!(reply("DUNNO"), "action=DUNNO\n\n");
    }
}
