//! Target `lmtp_session`: one LMTP connection as the server runs it
//! (`services/ingest/src/lmtp/`): command lines ([`line`]), the session
//! state machine and command parser ([`session`], [`command`]) and, after
//! `354`, the message reader ([`data`]). Only the blob store and Kafka are
//! left out, and TLS: a transcript ends at the `220` to STARTTLS, where
//! the server would drop its read buffer and start the handshake.
//!
//! Properties: the transcript does not depend on how the bytes arrive (a
//! 1–16 byte buffer gives what a 64 KiB one gives); every reply is
//! well-formed (`NNN-`... then `NNN `, CRLF, no other control characters,
//! whatever the client sent); a DATA transaction has 1..=max recipients,
//! each a mailbox whose account is its lower-cased address; a message read
//! is within the size limit, is empty or ends in CRLF, and dot-stuffed and
//! terminated again it reads back the same, leaving a pipelined command
//! unread; a MAIL or RCPT command that parses renders back to a line that
//! parses the same.
//!
//! [`line`]: crate::lmtp::line
//! [`session`]: crate::lmtp::session
//! [`command`]: crate::lmtp::command
//! [`data`]: crate::lmtp::data

use mailfleet_events::mail::BodyType;
use tokio::io::{AsyncReadExt, BufReader};

use crate::lmtp::{
    command::{parse, valid_mailbox, Command},
    data::{read_data, DataEnd},
    line::{read_line, trim_eol, Line},
    session::{Limits, RcptStatus, RecipientCheck, Session, Step, Tls},
};

/// STARTTLS by the top two bits of the limits byte: none, offered, required.
fn tls(which: u8) -> Option<bool> {
    match which >> 6 {
        0 => None,
        1 => Some(false),
        _ => Some(true),
    }
}

/// Input: a buffer-size byte, a limits byte, then what the client sends.
pub fn check(data: &[u8]) {
    let [cap, which, input @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_message_bytes: if which & 1 == 0 { 64 } else { 50 * 1024 * 1024 },
        max_recipients: usize::from(which >> 1 & 3) + 1,
        max_errors: u32::from(which >> 3 & 7) + 1,
    };
    let tls = tls(*which);
    let small = session(input, super::capacity(*cap), &limits, tls);
    let large = session(input, 64 * 1024, &limits, tls);
    assert_eq!(
        small, large,
        "the transcript depends on the read buffer size"
    );
    for line in input.split(|&b| b == b'\n') {
        if let Ok(text) = std::str::from_utf8(trim_eol(line)) {
            check_round_trip(text);
        }
    }
}

/// What the server would send, and the messages it would store.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Reply(String),
    Message(Vec<u8>),
}

fn session(input: &[u8], capacity: usize, limits: &Limits, tls: Option<bool>) -> Vec<Event> {
    let mut reader = BufReader::with_capacity(capacity, input);
    let mut session = Session::new("mx.fuzz", limits.clone());
    if let Some(required) = tls {
        session = session.with_starttls(required);
    }
    let mut out = vec![Event::Reply(session.greeting())];
    let mut line = Vec::new();
    loop {
        line.clear();
        let step = match super::ready(read_line(&mut reader, &mut line)).expect("in memory") {
            Line::Eof => return out,
            Line::TooLong => session.line_too_long(),
            Line::Command => session.handle(trim_eol(&line), &Directory),
        };
        match step {
            Step::Reply(text) => out.push(Event::Reply(check_reply(text))),
            Step::Close(text) => {
                out.push(Event::Reply(check_reply(text)));
                return out;
            }
            Step::StartTls(text) => {
                assert!(tls.is_some(), "STARTTLS accepted without TLS");
                assert_eq!(session.tls(), Tls::Active);
                out.push(Event::Reply(check_reply(text)));
                return out;
            }
            Step::Data(tx) => {
                assert!((1..=limits.max_recipients).contains(&tx.recipients.len()));
                for r in &tx.recipients {
                    assert!(valid_mailbox(&r.address), "{r:?}");
                    assert_eq!(r.account, r.address.to_lowercase());
                }
                let max = limits.max_message_bytes;
                match super::ready(read_data(&mut reader, max)).expect("in memory") {
                    DataEnd::Eof => return out,
                    DataEnd::TooBig { size } => assert!(size > max, "{size} <= {max}"),
                    DataEnd::Complete(body) => {
                        check_body(&body, max);
                        out.push(Event::Message(body));
                    }
                }
            }
        }
    }
}

/// Answers every status by the address's length, so all are reached.
struct Directory;

impl RecipientCheck for Directory {
    fn check(&self, _sender: &str, account: &str) -> RcptStatus {
        match account.len() % 8 {
            0 => RcptStatus::Unknown,
            1 => RcptStatus::Inactive,
            2 => RcptStatus::Disabled,
            3 => RcptStatus::OverQuota,
            4 => RcptStatus::TryLater,
            _ => RcptStatus::Accept,
        }
    }
}

/// `NNN-text` lines, then one `NNN text`, each ended by CRLF.
fn check_reply(text: String) -> String {
    let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
    assert!(!lines.is_empty(), "an empty reply");
    for (i, line) in lines.iter().enumerate() {
        let body = line.strip_suffix("\r\n");
        let body = body.unwrap_or_else(|| panic!("reply line {line:?} does not end in CRLF"));
        let last = i + 1 == lines.len();
        let (code, rest) = body.split_at_checked(3).unwrap_or((body, ""));
        assert!(
            code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()),
            "reply line {line:?} does not start with a code"
        );
        let sep = if last { ' ' } else { '-' };
        assert!(
            rest.starts_with(sep),
            "reply line {line:?}: expected {sep:?}"
        );
        assert!(
            !body.contains(|c: char| c.is_control()),
            "reply line {line:?} has a control character"
        );
    }
    text
}

fn check_body(body: &[u8], max: u64) {
    assert!(body.len() as u64 <= max, "{} > {max}", body.len());
    assert!(
        body.is_empty() || body.ends_with(b"\r\n"),
        "a message that does not end in CRLF"
    );
    // Stuff, terminate, pipeline a command: the same message, the command unread.
    let mut wire = Vec::with_capacity(body.len() + 16);
    for (i, &b) in body.iter().enumerate() {
        if b == b'.' && (i == 0 || body[..i].ends_with(b"\r\n")) {
            wire.push(b'.');
        }
        wire.push(b);
    }
    wire.extend_from_slice(b".\r\nQUIT\r\n");
    let mut reader = BufReader::with_capacity(7, wire.as_slice());
    let again = super::ready(read_data(&mut reader, max)).expect("in memory");
    assert_eq!(again, DataEnd::Complete(body.to_vec()), "{wire:?}");
    let mut rest = Vec::new();
    super::ready(reader.read_to_end(&mut rest)).expect("in memory");
    assert_eq!(rest, b"QUIT\r\n");
}

/// A MAIL or RCPT that parses, rendered and parsed again, is the same.
fn check_round_trip(line: &str) {
    let rendered = match parse(line) {
        Ok(Command::Mail { from, size, body }) => {
            let mut s = format!("MAIL FROM:<{from}>");
            if let Some(size) = size {
                s.push_str(&format!(" SIZE={size}"));
            }
            s.push_str(match body {
                BodyType::SevenBit => " BODY=7BIT",
                BodyType::EightBitMime => " BODY=8BITMIME",
                other => panic!("{line:?} parsed as BODY {other:?}"),
            });
            s
        }
        Ok(Command::Rcpt { to }) => format!("RCPT TO:<{to}>"),
        _ => return,
    };
    let first = parse(line).expect("parsed above");
    assert_eq!(
        parse(&rendered),
        Ok(first),
        "{line:?} rendered as {rendered:?}"
    );
}
