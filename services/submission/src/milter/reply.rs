//! What the milter answers: the `SMFIR_*` replies it uses, encoded, and
//! decoded for the MTA side of tests and tools.

use super::{
    codec::{put, put_cstr, text, Code, CodecError, Fields, Packet},
    command::Options,
};

pub const SMFIR_ACCEPT: u8 = b'a';
pub const SMFIR_CONTINUE: u8 = b'c';
pub const SMFIR_DISCARD: u8 = b'd';
pub const SMFIR_OPTNEG: u8 = b'O';
pub const SMFIR_PROGRESS: u8 = b'p';
pub const SMFIR_REJECT: u8 = b'r';
pub const SMFIR_TEMPFAIL: u8 = b't';
pub const SMFIR_REPLYCODE: u8 = b'y';

/// The longest reply text built by [`Reply::code`]; longer is cut (a
/// signature or file name is shown whole far below it).
const MAX_TEXT_CHARS: usize = 400;

/// One reply to the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    OptNeg(Options),
    /// Go on with this message (the next step, or at the end: accept).
    Continue,
    Accept,
    Reject,
    Tempfail,
    Discard,
    /// An SMTP reply for the client, e.g. `554 5.7.1 Virus X found`.
    ReplyCode(String),
    /// Still working: resets the MTA's timeout.
    Progress,
    /// A reply this milter never sends (header or recipient changes),
    /// decoded by the MTA side only.
    Other(u8, Vec<u8>),
}

impl Reply {
    /// `<smtp> <enhanced> <text>` with `text` made safe for the wire: one
    /// line of printable ASCII (anything else, and `%`, which libmilter
    /// treats as a format character, becomes `?`), at most 400 characters.
    /// `smtp` must be a 4xx or 5xx code; the MTA refuses anything else.
    pub fn code(smtp: u16, enhanced: &str, text: &str) -> Reply {
        let safe: String = text
            .chars()
            .take(MAX_TEXT_CHARS)
            .map(|c| match c {
                ' '..='~' if c != '%' => c,
                _ => '?',
            })
            .collect();
        Reply::ReplyCode(format!("{smtp} {enhanced} {safe}"))
    }

    /// The reply byte.
    pub fn wire_code(&self) -> u8 {
        match self {
            Reply::OptNeg(_) => SMFIR_OPTNEG,
            Reply::Continue => SMFIR_CONTINUE,
            Reply::Accept => SMFIR_ACCEPT,
            Reply::Reject => SMFIR_REJECT,
            Reply::Tempfail => SMFIR_TEMPFAIL,
            Reply::Discard => SMFIR_DISCARD,
            Reply::ReplyCode(_) => SMFIR_REPLYCODE,
            Reply::Progress => SMFIR_PROGRESS,
            Reply::Other(code, _) => *code,
        }
    }

    /// Append as one packet.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::OptNeg(options) => options.encode_reply(out),
            Reply::ReplyCode(line) => {
                let mut data = Vec::with_capacity(line.len() + 1);
                put_cstr(line.as_bytes(), &mut data);
                put(SMFIR_REPLYCODE, &data, out);
            }
            Reply::Other(code, data) => put(*code, data, out),
            simple => put(simple.wire_code(), &[], out),
        }
    }

    /// Decode one packet from a milter.
    pub fn decode(packet: Packet<'_>) -> Result<Reply, CodecError> {
        Ok(match packet.code {
            SMFIR_OPTNEG => Reply::OptNeg(Options::decode("SMFIR_OPTNEG", packet.data)?),
            SMFIR_CONTINUE => Reply::Continue,
            SMFIR_ACCEPT => Reply::Accept,
            SMFIR_REJECT => Reply::Reject,
            SMFIR_TEMPFAIL => Reply::Tempfail,
            SMFIR_DISCARD => Reply::Discard,
            SMFIR_PROGRESS => Reply::Progress,
            SMFIR_REPLYCODE => {
                let mut f = Fields::new("SMFIR_REPLYCODE", packet.data);
                let line = text(f.cstr("reply")?);
                f.end()?;
                if !is_error_reply(&line) {
                    return Err(CodecError::BadReplyCode(line));
                }
                Reply::ReplyCode(line)
            }
            // Header, recipient, body and quarantine changes.
            code @ (b'+' | b'-' | b'2' | b'b' | b'e' | b'h' | b'i' | b'm' | b'q' | b'l' | b'f') => {
                Reply::Other(code, packet.data.to_vec())
            }
            other => return Err(CodecError::UnknownReply(Code(other))),
        })
    }

    /// Whether the MTA would go on with the message (not refuse it).
    pub fn is_pass(&self) -> bool {
        matches!(self, Reply::Continue | Reply::Accept)
    }
}

/// `4xx` or `5xx`, then a space, a hyphen or the end.
fn is_error_reply(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() >= 3
        && matches!(b[0], b'4' | b'5')
        && b[1..3].iter().all(u8::is_ascii_digit)
        && matches!(b.get(3), None | Some(b' ' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::super::codec::split;
    use super::*;

    fn round_trip(reply: Reply) {
        let mut wire = Vec::new();
        reply.encode(&mut wire);
        let (packet, used) = split(&wire, 1 << 20).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(Reply::decode(packet).unwrap(), reply);
    }

    #[test]
    fn every_reply_round_trips() {
        for reply in [
            Reply::OptNeg(Options {
                version: 6,
                actions: 0,
                protocol: 0x10_0000,
            }),
            Reply::Continue,
            Reply::Accept,
            Reply::Reject,
            Reply::Tempfail,
            Reply::Discard,
            Reply::Progress,
            Reply::code(554, "5.7.1", "Virus Eicar found; message not sent"),
            Reply::Other(b'h', b"X-A\0b\0".to_vec()),
        ] {
            round_trip(reply);
        }
    }

    #[test]
    fn reply_codes_are_one_safe_line() {
        let r = Reply::code(554, "5.7.1", "Attachment a%b\r\n.exe\u{e9} refused");
        assert_eq!(
            r,
            Reply::ReplyCode("554 5.7.1 Attachment a?b??.exe? refused".into())
        );
        let long = Reply::code(451, "4.7.1", &"x".repeat(5000));
        let Reply::ReplyCode(line) = long else {
            unreachable!()
        };
        assert_eq!(line.len(), "451 4.7.1 ".len() + MAX_TEXT_CHARS);
        let mut wire = Vec::new();
        Reply::Continue.encode(&mut wire);
        assert_eq!(wire, [0, 0, 0, 1, b'c']);
    }

    #[test]
    fn a_bad_reply_is_named() {
        let decode = |code, data: &[u8]| Reply::decode(Packet { code, data });
        assert_eq!(
            decode(SMFIR_REPLYCODE, b"250 ok\0")
                .unwrap_err()
                .to_string(),
            "SMFIR_REPLYCODE: \"250 ok\" is not a 4xx or 5xx reply"
        );
        assert!(decode(SMFIR_REPLYCODE, b"554 5.7.1 x").is_err());
        assert_eq!(
            decode(b'Z', b"").unwrap_err().to_string(),
            "unknown reply 'Z' (0x5a)"
        );
        assert!(is_error_reply("421"));
        assert!(is_error_reply("550-first line"));
        assert!(!is_error_reply("55x 5.0.0"));
        assert!(!is_error_reply("5500"));
    }
}
