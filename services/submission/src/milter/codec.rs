//! Packets: `len: u32` big-endian (the command byte plus the data), the
//! command byte, then `len - 1` bytes of data whose fields are NUL-terminated
//! strings and big-endian integers. [`split`] cuts one packet off a buffer,
//! refusing a length over the limit before a byte of it is read;
//! [`Fields`] reads the fields with an error that names the packet and field.

use std::fmt;

/// The largest packet accepted by default: Postfix sends body chunks of at
/// most 64 KiB (libmilter's `MILTER_CHUNK_SIZE`), and a header or an SMTP
/// command line is far smaller. 1 MiB also covers an MTA that negotiated
/// `SMFIP_MDS_1M` chunks, which we never ask for.
pub const MAX_PACKET_BYTES: usize = 1 << 20;

/// A command or reply byte, shown as `'X' (0x58)` in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub u8);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}' (0x{:02x})", self.0 as char, self.0)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// Why bytes are not a milter packet. Each names the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("packet length 0: a packet holds at least its command byte")]
    EmptyPacket,
    #[error("packet length {len} is over the limit of {max} bytes")]
    PacketTooLong { len: u32, max: usize },
    #[error("unknown command {0}")]
    UnknownCommand(Code),
    #[error("unknown reply {0}")]
    UnknownReply(Code),
    #[error("{packet}: the {field} is not NUL-terminated")]
    Unterminated {
        packet: &'static str,
        field: &'static str,
    },
    #[error("{packet}: {len} data bytes, at least {min} expected for the {field}")]
    TooShort {
        packet: &'static str,
        field: &'static str,
        len: usize,
        min: usize,
    },
    #[error("{packet}: {extra} unexpected bytes after the last field")]
    Trailing { packet: &'static str, extra: usize },
    #[error("SMFIC_CONNECT: unknown address family {0}")]
    UnknownFamily(Code),
    #[error("{packet}: no arguments (the first is the address)")]
    NoArguments { packet: &'static str },
    #[error("SMFIC_MACRO: macro {name:?} has no value")]
    MacroWithoutValue { name: String },
    #[error("SMFIR_REPLYCODE: {0:?} is not a 4xx or 5xx reply")]
    BadReplyCode(String),
}

/// One packet: its command (or reply) byte and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub code: u8,
    pub data: &'a [u8],
}

/// The first packet of `buf` and the bytes it takes, `None` while the
/// packet is incomplete. The length is checked as soon as its 4 bytes are
/// in: a length of 0 or over `max` is an error, never a wait.
pub fn split(buf: &[u8], max: usize) -> Result<Option<(Packet<'_>, usize)>, CodecError> {
    let Some(head) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*head);
    if len == 0 {
        return Err(CodecError::EmptyPacket);
    }
    if len as usize > max {
        return Err(CodecError::PacketTooLong { len, max });
    }
    let end = 4 + len as usize;
    let Some(body) = buf.get(4..end) else {
        return Ok(None);
    };
    let packet = Packet {
        code: body[0],
        data: &body[1..],
    };
    Ok(Some((packet, end)))
}

/// Append one packet to `out`. Callers keep `data` far below 4 GiB (a body
/// chunk is at most 64 KiB).
pub fn put(code: u8, data: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(data.len() + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(code);
    out.extend_from_slice(data);
}

/// Append `text` and its terminating NUL (a NUL inside ends it early, as
/// the reader would see it, so it is dropped here).
pub fn put_cstr(text: &[u8], out: &mut Vec<u8>) {
    out.extend(text.iter().copied().filter(|b| *b != 0));
    out.push(0);
}

/// A reader over one packet's data.
pub struct Fields<'a> {
    packet: &'static str,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Read the data of `packet` (its name, for errors).
    pub fn new(packet: &'static str, data: &'a [u8]) -> Self {
        Self { packet, rest: data }
    }

    /// A NUL-terminated string, without its NUL.
    pub fn cstr(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let Some(nul) = self.rest.iter().position(|b| *b == 0) else {
            return Err(CodecError::Unterminated {
                packet: self.packet,
                field,
            });
        };
        let (text, rest) = (&self.rest[..nul], &self.rest[nul + 1..]);
        self.rest = rest;
        Ok(text)
    }

    /// `N` raw bytes.
    pub fn bytes<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(CodecError::TooShort {
                packet: self.packet,
                field,
                len: self.rest.len(),
                min: N,
            });
        };
        self.rest = rest;
        Ok(*head)
    }

    /// One byte.
    pub fn byte(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.bytes::<1>(field)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.bytes(field)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.bytes(field)?))
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Every remaining byte.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// `Ok` if every byte was read, else how many are left over.
    pub fn end(self) -> Result<(), CodecError> {
        match self.rest.len() {
            0 => Ok(()),
            extra => Err(CodecError::Trailing {
                packet: self.packet,
                extra,
            }),
        }
    }
}

/// Bytes as text for the envelope and logs: UTF-8, or with U+FFFD for
/// what is not (Postfix passes SMTPUTF8 addresses as UTF-8).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_waits_for_whole_packets_and_returns_what_they_take() {
        let mut buf = Vec::new();
        put(b'c', b"", &mut buf);
        put(b'B', b"body", &mut buf);
        for cut in 0..5 {
            assert_eq!(split(&buf[..cut], 100), Ok(None), "cut at {cut}");
        }
        let (first, used) = split(&buf, 100).unwrap().unwrap();
        assert_eq!((first.code, first.data, used), (b'c', &b""[..], 5));
        assert_eq!(split(&buf[used..used + 8], 100), Ok(None));
        let (second, used2) = split(&buf[used..], 100).unwrap().unwrap();
        assert_eq!((second.code, second.data, used2), (b'B', &b"body"[..], 9));
    }

    #[test]
    fn a_bad_length_is_refused_before_its_bytes_arrive() {
        assert_eq!(split(&[0, 0, 0, 0], 100), Err(CodecError::EmptyPacket));
        let huge = u32::MAX.to_be_bytes();
        let err = split(&huge, MAX_PACKET_BYTES).unwrap_err();
        assert_eq!(
            err,
            CodecError::PacketTooLong {
                len: u32::MAX,
                max: MAX_PACKET_BYTES
            }
        );
        assert!(err.to_string().contains("4294967295"), "{err}");
        let just_over = 101u32.to_be_bytes();
        assert!(split(&just_over, 100).is_err());
        let at_limit = 100u32.to_be_bytes();
        assert_eq!(split(&at_limit, 100), Ok(None));
    }

    #[test]
    fn fields_name_the_packet_and_field_that_is_short() {
        let mut f = Fields::new("SMFIC_OPTNEG", &[0, 0, 0, 6, 0, 0]);
        assert_eq!(f.u32("version"), Ok(6));
        let err = f.u32("actions").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SMFIC_OPTNEG: 2 data bytes, at least 4 expected for the actions"
        );
        let mut f = Fields::new("SMFIC_HELO", b"mx.example");
        let err = f.cstr("hostname").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SMFIC_HELO: the hostname is not NUL-terminated"
        );
        let mut f = Fields::new("SMFIC_HEADER", b"a\0b\0c");
        assert_eq!(f.cstr("name"), Ok(&b"a"[..]));
        assert_eq!(f.cstr("value"), Ok(&b"b"[..]));
        assert_eq!(
            f.end(),
            Err(CodecError::Trailing {
                packet: "SMFIC_HEADER",
                extra: 1
            })
        );
    }

    #[test]
    fn codes_show_as_characters_when_printable() {
        assert_eq!(Code(b'X').to_string(), "'X' (0x58)");
        assert_eq!(Code(0).to_string(), "0x00");
        let mut out = Vec::new();
        put_cstr(b"a\0b", &mut out);
        assert_eq!(out, b"ab\0");
    }
}
