//! The RFC 5322 message rebuilt from the milter's header and body packets,
//! for the scan, bounded by a maximum size, with the digest the event id is
//! made from.
//!
//! Headers come one per packet, folded lines separated by a bare LF; they
//! are written back as `Name: value` with CRLF line ends. Body chunks
//! already have CRLF line ends (the MTA sends the message as on the wire,
//! without dot-stuffing).
//!
//! The digest covers every header but `Received`, and the body: Postfix
//! adds its own `Received` header with the queue id and the time, so the
//! same message submitted again (a client retrying after a 4xx) has the
//! same digest under a new queue id.

use sha2::{Digest, Sha256};

/// A message being rebuilt.
pub struct MessageBuilder {
    max_bytes: u64,
    bytes: Vec<u8>,
    /// Every byte seen, also past the limit.
    size: u64,
    in_body: bool,
    digest: Sha256,
    message_id: Option<String>,
}

/// What was rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    Message(Message),
    /// Larger than the limit: only its size was kept.
    TooBig {
        size: u64,
    },
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub bytes: Vec<u8>,
    /// sha256 (hex) of the headers but `Received`, and the body.
    pub digest: String,
    /// The first `Message-ID` header's value, trimmed and unfolded.
    pub message_id: Option<String>,
}

impl MessageBuilder {
    /// A builder that keeps at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            bytes: Vec::new(),
            size: 0,
            in_body: false,
            digest: Sha256::new(),
            message_id: None,
        }
    }

    /// One header. `leading_space`: the value keeps the space after the
    /// colon (`SMFIP_HDR_LEADSPC`); otherwise one space is put back.
    pub fn header(&mut self, name: &[u8], value: &[u8], leading_space: bool) {
        let mut line = Vec::with_capacity(name.len() + value.len() + 4);
        line.extend_from_slice(name);
        line.push(b':');
        if !leading_space {
            line.push(b' ');
        }
        push_crlf_lines(value, &mut line);
        line.extend_from_slice(b"\r\n");
        if !name.eq_ignore_ascii_case(b"received") {
            self.digest.update(&line);
        }
        if self.message_id.is_none() && name.eq_ignore_ascii_case(b"message-id") {
            let id = String::from_utf8_lossy(value).replace(['\r', '\n'], "");
            self.message_id = Some(id.trim().to_string()).filter(|id| !id.is_empty());
        }
        self.push(&line);
    }

    /// One body chunk (the first one starts the body).
    pub fn body(&mut self, chunk: &[u8]) {
        self.start_body();
        if !chunk.is_empty() {
            self.digest.update(chunk);
            self.push(chunk);
        }
    }

    /// Bytes seen so far, also past the limit.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The message, or its size when it was too big.
    pub fn finish(mut self) -> Built {
        self.start_body();
        if self.size > self.max_bytes {
            return Built::TooBig { size: self.size };
        }
        Built::Message(Message {
            bytes: self.bytes,
            digest: hex::encode(self.digest.finalize()),
            message_id: self.message_id,
        })
    }

    /// The empty line between header and body, once.
    fn start_body(&mut self) {
        if !self.in_body {
            self.in_body = true;
            self.digest.update(b"\r\n");
            self.push(b"\r\n");
        }
    }

    /// Keep `data` while under the limit; past it, drop everything kept.
    fn push(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        if self.size > self.max_bytes {
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(data);
        }
    }
}

/// `value` with each bare LF as CRLF.
fn push_crlf_lines(value: &[u8], out: &mut Vec<u8>) {
    let mut previous = 0u8;
    for &b in value {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(received: &str, leading_space: bool) -> Message {
        let mut m = MessageBuilder::new(1 << 20);
        let value = |v: &str| {
            if leading_space {
                format!(" {v}")
            } else {
                v.to_string()
            }
        };
        m.header(b"Received", value(received).as_bytes(), leading_space);
        m.header(b"Subject", value("two\n\tlines").as_bytes(), leading_space);
        m.header(b"Message-ID", value("<a@b>").as_bytes(), leading_space);
        m.body(b"hello\r\n");
        m.body(b"");
        m.body(b"world\r\n");
        match m.finish() {
            Built::Message(message) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn headers_and_body_are_rebuilt_with_crlf() {
        let m = build("from x by y id 1", true);
        let text = String::from_utf8(m.bytes.clone()).unwrap();
        assert_eq!(
            text,
            "Received: from x by y id 1\r\nSubject: two\r\n\tlines\r\nMessage-ID: <a@b>\r\n\r\nhello\r\nworld\r\n"
        );
        assert_eq!(m.message_id.as_deref(), Some("<a@b>"));
        // Without HDR_LEADSPC the space is put back: the same bytes.
        assert_eq!(build("from x by y id 1", false).bytes, m.bytes);
    }

    #[test]
    fn the_digest_ignores_received_only() {
        let a = build("from x by y id 1", true);
        let b = build("from x by y id 2", true);
        assert_ne!(a.bytes, b.bytes);
        assert_eq!(a.digest, b.digest, "a new queue id, the same message");
        let mut other = MessageBuilder::new(1 << 20);
        other.header(b"Subject", b" other", true);
        let Built::Message(other) = other.finish() else {
            panic!()
        };
        assert_ne!(other.digest, a.digest);
        assert_eq!(other.bytes, b"Subject: other\r\n\r\n");
    }

    #[test]
    fn past_the_limit_only_the_size_is_kept() {
        let mut m = MessageBuilder::new(20);
        m.header(b"Subject", b" x", true);
        m.body(&[b'a'; 100]);
        assert_eq!(m.size(), 12 + 2 + 100);
        assert!(m.bytes.is_empty());
        assert_eq!(m.finish(), Built::TooBig { size: 114 });
        let mut exact = MessageBuilder::new(14);
        exact.header(b"Subject", b" x", true);
        assert!(matches!(exact.finish(), Built::Message(_)));
    }
}
