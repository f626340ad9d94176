//! What the MTA sends: the `SMFIC_*` commands, decoded from one packet and
//! encoded back (the encoder is the MTA side, for tests and tools).

use super::codec::{put, put_cstr, text, Code, CodecError, Fields, Packet};

pub const SMFIC_ABORT: u8 = b'A';
pub const SMFIC_BODY: u8 = b'B';
pub const SMFIC_CONNECT: u8 = b'C';
pub const SMFIC_MACRO: u8 = b'D';
pub const SMFIC_BODYEOB: u8 = b'E';
pub const SMFIC_HELO: u8 = b'H';
pub const SMFIC_QUIT_NC: u8 = b'K';
pub const SMFIC_HEADER: u8 = b'L';
pub const SMFIC_MAIL: u8 = b'M';
pub const SMFIC_EOH: u8 = b'N';
pub const SMFIC_OPTNEG: u8 = b'O';
pub const SMFIC_QUIT: u8 = b'Q';
pub const SMFIC_RCPT: u8 = b'R';
pub const SMFIC_DATA: u8 = b'T';
pub const SMFIC_UNKNOWN: u8 = b'U';

/// The three words of an option negotiation (`SMFIC_OPTNEG` and the
/// milter's `SMFIR_OPTNEG`): protocol version, action flags (what the
/// milter may change) and protocol flags (which steps to skip or not to
/// answer; see `negotiate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
}

impl Options {
    /// Read the three words; bytes after them (a milter's macro lists) are
    /// ignored, as libmilter does.
    pub fn decode(packet: &'static str, data: &[u8]) -> Result<Self, CodecError> {
        let mut f = Fields::new(packet, data);
        Ok(Self {
            version: f.u32("version")?,
            actions: f.u32("actions")?,
            protocol: f.u32("protocol flags")?,
        })
    }

    fn encode(&self, code: u8, out: &mut Vec<u8>) {
        let mut data = Vec::with_capacity(12);
        for word in [self.version, self.actions, self.protocol] {
            data.extend_from_slice(&word.to_be_bytes());
        }
        put(code, &data, out);
    }

    /// Append as the milter's `SMFIR_OPTNEG` reply.
    pub fn encode_reply(&self, out: &mut Vec<u8>) {
        self.encode(super::reply::SMFIR_OPTNEG, out);
    }
}

/// The SMTP client's address, from `SMFIC_CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `'4'` or `'6'`: an IP address and port.
    Inet { ip: String, port: u16 },
    /// `'L'`: a UNIX socket path.
    Local(String),
    /// `'U'`: the MTA does not know.
    Unknown,
}

/// One command from the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    OptNeg(Options),
    /// Macros for the command with code `stage` (sent just before it).
    Macro {
        stage: u8,
        pairs: Vec<(String, String)>,
    },
    Connect {
        hostname: String,
        address: Address,
    },
    Helo(String),
    /// The sender (first, with its angle brackets) and ESMTP parameters.
    Mail(Vec<String>),
    /// The recipient (first) and ESMTP parameters.
    Rcpt(Vec<String>),
    Data,
    /// One header field; the value may hold LF-separated folded lines.
    Header {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    Eoh,
    Body(Vec<u8>),
    /// End of the message, with a last body chunk (usually empty).
    EndOfMessage(Vec<u8>),
    Abort,
    Quit,
    /// Quit this message's context but keep the connection for another.
    QuitNewConnection,
    /// An SMTP command the MTA did not know.
    Unknown(Vec<u8>),
}

impl Command {
    /// Decode one packet.
    pub fn decode(packet: Packet<'_>) -> Result<Command, CodecError> {
        let data = packet.data;
        Ok(match packet.code {
            SMFIC_OPTNEG => Command::OptNeg(Options::decode("SMFIC_OPTNEG", data)?),
            SMFIC_MACRO => decode_macro(data)?,
            SMFIC_CONNECT => decode_connect(data)?,
            SMFIC_HELO => {
                let mut f = Fields::new("SMFIC_HELO", data);
                let helo = text(f.cstr("hostname")?);
                f.end()?;
                Command::Helo(helo)
            }
            SMFIC_MAIL => Command::Mail(args("SMFIC_MAIL", data)?),
            SMFIC_RCPT => Command::Rcpt(args("SMFIC_RCPT", data)?),
            SMFIC_HEADER => {
                let mut f = Fields::new("SMFIC_HEADER", data);
                let name = f.cstr("name")?.to_vec();
                let value = f.cstr("value")?.to_vec();
                f.end()?;
                Command::Header { name, value }
            }
            SMFIC_BODY => Command::Body(data.to_vec()),
            SMFIC_BODYEOB => Command::EndOfMessage(data.to_vec()),
            SMFIC_UNKNOWN => Command::Unknown(data.strip_suffix(b"\0").unwrap_or(data).to_vec()),
            // No data is defined for these; any sent is ignored.
            SMFIC_DATA => Command::Data,
            SMFIC_EOH => Command::Eoh,
            SMFIC_ABORT => Command::Abort,
            SMFIC_QUIT => Command::Quit,
            SMFIC_QUIT_NC => Command::QuitNewConnection,
            other => return Err(CodecError::UnknownCommand(Code(other))),
        })
    }

    /// The command byte this is sent as.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg(_) => SMFIC_OPTNEG,
            Command::Macro { .. } => SMFIC_MACRO,
            Command::Connect { .. } => SMFIC_CONNECT,
            Command::Helo(_) => SMFIC_HELO,
            Command::Mail(_) => SMFIC_MAIL,
            Command::Rcpt(_) => SMFIC_RCPT,
            Command::Data => SMFIC_DATA,
            Command::Header { .. } => SMFIC_HEADER,
            Command::Eoh => SMFIC_EOH,
            Command::Body(_) => SMFIC_BODY,
            Command::EndOfMessage(_) => SMFIC_BODYEOB,
            Command::Abort => SMFIC_ABORT,
            Command::Quit => SMFIC_QUIT,
            Command::QuitNewConnection => SMFIC_QUIT_NC,
            Command::Unknown(_) => SMFIC_UNKNOWN,
        }
    }

    /// Append as one packet (what an MTA sends).
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Command::OptNeg(options) = self {
            return options.encode(SMFIC_OPTNEG, out);
        }
        let mut data = Vec::new();
        match self {
            Command::Macro { stage, pairs } => {
                data.push(*stage);
                for (name, value) in pairs {
                    put_cstr(name.as_bytes(), &mut data);
                    put_cstr(value.as_bytes(), &mut data);
                }
            }
            Command::Connect { hostname, address } => encode_connect(hostname, address, &mut data),
            Command::Helo(helo) => put_cstr(helo.as_bytes(), &mut data),
            Command::Mail(args) | Command::Rcpt(args) => {
                args.iter().for_each(|a| put_cstr(a.as_bytes(), &mut data))
            }
            Command::Header { name, value } => {
                put_cstr(name, &mut data);
                put_cstr(value, &mut data);
            }
            Command::Body(bytes) | Command::EndOfMessage(bytes) => data.extend_from_slice(bytes),
            Command::Unknown(line) => put_cstr(line, &mut data),
            _ => {}
        }
        put(self.code(), &data, out);
    }
}

/// `SMFIC_MACRO`: the stage's command byte, then name/value pairs.
fn decode_macro(data: &[u8]) -> Result<Command, CodecError> {
    let mut f = Fields::new("SMFIC_MACRO", data);
    let stage = f.byte("command code")?;
    let mut pairs = Vec::new();
    while !f.is_empty() {
        let name = text(f.cstr("macro name")?);
        let value = f
            .cstr("macro value")
            .map_err(|_| CodecError::MacroWithoutValue { name: name.clone() })?;
        pairs.push((name, text(value)));
    }
    Ok(Command::Macro { stage, pairs })
}

/// `SMFIC_CONNECT`: hostname, family, then (unless unknown) port and address.
fn decode_connect(data: &[u8]) -> Result<Command, CodecError> {
    let mut f = Fields::new("SMFIC_CONNECT", data);
    let hostname = text(f.cstr("hostname")?);
    let family = f.byte("address family")?;
    let address = match family {
        b'U' => Address::Unknown,
        b'4' | b'6' | b'L' => {
            let port = f.u16("port")?;
            let addr = text(f.cstr("address")?);
            if family == b'L' {
                Address::Local(addr)
            } else {
                Address::Inet { ip: addr, port }
            }
        }
        other => return Err(CodecError::UnknownFamily(Code(other))),
    };
    f.end()?;
    Ok(Command::Connect { hostname, address })
}

fn encode_connect(hostname: &str, address: &Address, data: &mut Vec<u8>) {
    put_cstr(hostname.as_bytes(), data);
    let (family, port, addr) = match address {
        Address::Unknown => return data.push(b'U'),
        Address::Local(path) => (b'L', 0, path.as_str()),
        Address::Inet { ip, port } if ip.contains(':') => (b'6', *port, ip.as_str()),
        Address::Inet { ip, port } => (b'4', *port, ip.as_str()),
    };
    data.push(family);
    data.extend_from_slice(&port.to_be_bytes());
    put_cstr(addr.as_bytes(), data);
}

/// `SMFIC_MAIL` / `SMFIC_RCPT`: NUL-terminated arguments, at least one.
fn args(packet: &'static str, data: &[u8]) -> Result<Vec<String>, CodecError> {
    let mut f = Fields::new(packet, data);
    let mut out = Vec::new();
    while !f.is_empty() {
        out.push(text(f.cstr("argument")?));
    }
    if out.is_empty() {
        return Err(CodecError::NoArguments { packet });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::codec::split;
    use super::*;

    fn round_trip(cmd: Command) {
        let mut wire = Vec::new();
        cmd.encode(&mut wire);
        let (packet, used) = split(&wire, 1 << 20).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(Command::decode(packet).unwrap(), cmd);
    }

    fn decode(code: u8, data: &[u8]) -> Result<Command, CodecError> {
        Command::decode(Packet { code, data })
    }

    #[test]
    fn every_command_round_trips() {
        let s = |v: &str| v.to_string();
        for cmd in [
            Command::OptNeg(Options {
                version: 6,
                actions: 0x1ff,
                protocol: 0x1f_ffff,
            }),
            Command::Macro {
                stage: SMFIC_MAIL,
                pairs: vec![(s("{auth_authen}"), s("Alice@x")), (s("i"), s("4Xq1"))],
            },
            Command::Macro {
                stage: SMFIC_CONNECT,
                pairs: vec![],
            },
            Command::Connect {
                hostname: s("localhost"),
                address: Address::Inet {
                    ip: s("127.0.0.1"),
                    port: 40222,
                },
            },
            Command::Connect {
                hostname: s("h"),
                address: Address::Inet {
                    ip: s("::1"),
                    port: 1,
                },
            },
            Command::Connect {
                hostname: s("h"),
                address: Address::Local(s("/run/s")),
            },
            Command::Connect {
                hostname: s("unknown"),
                address: Address::Unknown,
            },
            Command::Helo(s("client.example")),
            Command::Mail(vec![s("<a@x>"), s("SIZE=10"), s("BODY=8BITMIME")]),
            Command::Rcpt(vec![s("<b@y>")]),
            Command::Data,
            Command::Header {
                name: b"Subject".to_vec(),
                value: b" two\n\tlines".to_vec(),
            },
            Command::Eoh,
            Command::Body(b"line\r\n".to_vec()),
            Command::EndOfMessage(Vec::new()),
            Command::Abort,
            Command::Quit,
            Command::QuitNewConnection,
            Command::Unknown(b"XFOO bar".to_vec()),
        ] {
            round_trip(cmd);
        }
    }

    #[test]
    fn malformed_commands_name_what_is_wrong() {
        let err = |code, data: &[u8]| decode(code, data).unwrap_err().to_string();
        assert_eq!(err(b'z', b""), "unknown command 'z' (0x7a)");
        assert_eq!(
            err(SMFIC_OPTNEG, &[0, 0, 0, 6]),
            "SMFIC_OPTNEG: 0 data bytes, at least 4 expected for the actions"
        );
        assert_eq!(
            err(SMFIC_CONNECT, b"host\0X"),
            "SMFIC_CONNECT: unknown address family 'X' (0x58)"
        );
        assert_eq!(
            err(SMFIC_CONNECT, b"host\x004\x01"),
            "SMFIC_CONNECT: 1 data bytes, at least 2 expected for the port"
        );
        assert_eq!(
            err(SMFIC_CONNECT, b"host\x004\x01\x02127.0.0.1"),
            "SMFIC_CONNECT: the address is not NUL-terminated"
        );
        assert_eq!(
            err(SMFIC_CONNECT, b"host"),
            "SMFIC_CONNECT: the hostname is not NUL-terminated"
        );
        assert_eq!(
            err(SMFIC_MAIL, b""),
            "SMFIC_MAIL: no arguments (the first is the address)"
        );
        assert_eq!(
            err(SMFIC_RCPT, b"<a@x>\0SIZE"),
            "SMFIC_RCPT: the argument is not NUL-terminated"
        );
        assert_eq!(
            err(SMFIC_MACRO, b""),
            "SMFIC_MACRO: 0 data bytes, at least 1 expected for the command code"
        );
        assert_eq!(
            err(SMFIC_MACRO, b"Mi\0"),
            "SMFIC_MACRO: macro \"i\" has no value"
        );
        assert_eq!(
            err(SMFIC_HEADER, b"Subject\0x"),
            "SMFIC_HEADER: the value is not NUL-terminated"
        );
        assert_eq!(
            err(SMFIC_HELO, b"a\0b\0"),
            "SMFIC_HELO: 2 unexpected bytes after the last field"
        );
    }

    #[test]
    fn lenient_where_nothing_can_go_wrong() {
        // Extra words after OPTNEG's three are a later extension: ignored.
        let mut data = vec![0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2];
        data.extend_from_slice(&[9; 7]);
        assert_eq!(
            decode(SMFIC_OPTNEG, &data).unwrap(),
            Command::OptNeg(Options {
                version: 6,
                actions: 1,
                protocol: 2
            })
        );
        assert_eq!(decode(SMFIC_EOH, b"junk").unwrap(), Command::Eoh);
        // Not UTF-8: kept, with U+FFFD, never an error.
        let Command::Mail(args) = decode(SMFIC_MAIL, b"<\xff@x>\0").unwrap() else {
            panic!("not MAIL");
        };
        assert_eq!(args, vec!["<\u{fffd}@x>".to_string()]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every command code over every prefix of a mixed buffer.
        let junk: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for code in 0..=255u8 {
            for end in 0..junk.len() {
                let _ = decode(code, &junk[..end]);
                let _ = decode(code, &b"a\0\x004\0\0"[..end.min(6)]);
            }
        }
    }
}
