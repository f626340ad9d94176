//! The MTA side of the protocol, as Postfix speaks it to a before-queue
//! milter: for tests and tools that talk to `mailfleet submission` without
//! a Postfix in between.

use tokio::net::{TcpStream, ToSocketAddrs};

use super::{
    command::{Address, Command, Options, SMFIC_BODYEOB, SMFIC_MAIL},
    negotiate::{Negotiated, SMFIP_HDR_LEADSPC, VERSION},
    reply::Reply,
    wire::{Wire, WireError},
};

/// Postfix's largest body chunk.
const CHUNK_BYTES: usize = 65_535;

/// What Postfix 3 offers: every action and protocol flag of version 6.
pub const POSTFIX_OFFER: Options = Options {
    version: VERSION,
    actions: 0x1ff,
    protocol: 0x1f_ffff,
};

/// Why a client exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the milter")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the milter closed the connection")]
    Closed,
    #[error("the milter answered the option negotiation with {0:?}")]
    NotNegotiated(Reply),
}

/// One submission as Postfix would present it.
#[derive(Debug, Clone, Default)]
pub struct Envelope<'a> {
    /// `{auth_authen}`; `None` sends no login (a misconfigured listener).
    pub login: Option<&'a str>,
    /// The queue id macro `i`.
    pub queue_id: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [&'a str],
    pub client_ip: &'a str,
}

/// A connection to a milter, negotiated.
pub struct MtaClient {
    wire: Wire<TcpStream>,
    negotiated: Negotiated,
}

impl MtaClient {
    /// Connect and negotiate with `offer`.
    pub async fn connect(addr: impl ToSocketAddrs, offer: Options) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        let mut wire = Wire::new(stream);
        wire.send(|out| Command::OptNeg(offer).encode(out)).await?;
        let reply = wire.read(Reply::decode).await?.ok_or(ClientError::Closed)?;
        let Reply::OptNeg(agreed) = reply else {
            return Err(ClientError::NotNegotiated(reply));
        };
        let negotiated = Negotiated {
            version: agreed.version,
            protocol: agreed.protocol & offer.protocol,
        };
        Ok(Self { wire, negotiated })
    }

    /// Send one command and, if the milter answers that step, its reply.
    pub async fn command(&mut self, command: &Command) -> Result<Option<Reply>, ClientError> {
        self.wire.send(|out| command.encode(out)).await?;
        if !self.negotiated.expects_reply(command.code()) {
            return Ok(None);
        }
        let reply = self.wire.read(Reply::decode).await?;
        reply.map(Some).ok_or(ClientError::Closed)
    }

    /// A whole SMTP session's milter traffic for one message: connect,
    /// MAIL (with the login and queue id macros), RCPTs, headers, body and
    /// end of message. Returns the first reply that is not a pass, or the
    /// end of message's reply.
    pub async fn submit(&mut self, env: &Envelope<'_>, raw: &[u8]) -> Result<Reply, ClientError> {
        let mut mail_macros = vec![("i".to_string(), env.queue_id.to_string())];
        if let Some(login) = env.login {
            mail_macros.push(("{auth_authen}".into(), login.into()));
            mail_macros.push(("{auth_type}".into(), "PLAIN".into()));
        }
        let mut steps = vec![
            Command::Connect {
                hostname: "localhost".into(),
                address: Address::Inet {
                    ip: env.client_ip.into(),
                    port: 40000,
                },
            },
            Command::Macro {
                stage: SMFIC_MAIL,
                pairs: mail_macros,
            },
            Command::Mail(vec![format!("<{}>", env.sender)]),
        ];
        steps.extend(
            env.recipients
                .iter()
                .map(|r| Command::Rcpt(vec![format!("<{r}>")])),
        );
        steps.extend(self.content(raw));
        for step in &steps {
            if let Some(reply) = self.command(step).await? {
                if !reply.is_pass() || step.code() == SMFIC_BODYEOB {
                    return Ok(reply);
                }
            }
        }
        Err(ClientError::Closed)
    }

    /// Send SMFIC_QUIT and close.
    pub async fn quit(mut self) -> Result<(), ClientError> {
        self.wire.send(|out| Command::Quit.encode(out)).await?;
        Ok(())
    }

    /// The header, body and end-of-message packets of a raw message.
    fn content(&self, raw: &[u8]) -> Vec<Command> {
        let lead = self.negotiated.protocol & SMFIP_HDR_LEADSPC != 0;
        let (head, body) = split_message(raw);
        let mut out: Vec<Command> = headers(head)
            .into_iter()
            .map(|(name, value)| {
                let value = if lead { value } else { trim_start(value) };
                Command::Header { name, value }
            })
            .collect();
        out.push(Command::Eoh);
        out.extend(body.chunks(CHUNK_BYTES).map(|c| Command::Body(c.to_vec())));
        out.push(Command::EndOfMessage(Vec::new()));
        out
    }
}

/// The header section and the body (after the empty line).
fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    if raw.starts_with(b"\r\n") {
        return (&[], &raw[2..]);
    }
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&raw[..i + 2], &raw[i + 4..]),
        None => (raw, &[]),
    }
}

/// `(name, value)` per header field, folded lines joined by LF as the MTA
/// sends them; the value keeps its leading space.
fn headers(head: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some((_, value)) = out.last_mut() {
                value.push(b'\n');
                value.extend_from_slice(line);
            }
            continue;
        }
        let colon = line.iter().position(|b| *b == b':').unwrap_or(line.len());
        let value = line.get(colon + 1..).unwrap_or_default();
        out.push((line[..colon].to_vec(), value.to_vec()));
    }
    out
}

fn trim_start(value: Vec<u8>) -> Vec<u8> {
    let skip = value
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    value[skip..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_message_splits_into_the_packets_postfix_sends() {
        let raw = b"Subject: a\r\n long\r\nFrom:x@y\r\n\r\nbody\r\n";
        let (head, body) = split_message(raw);
        assert_eq!(body, b"body\r\n");
        assert_eq!(
            headers(head),
            vec![
                (b"Subject".to_vec(), b" a\n long".to_vec()),
                (b"From".to_vec(), b"x@y".to_vec())
            ]
        );
        assert_eq!(
            split_message(b"\r\nonly body"),
            (&b""[..], &b"only body"[..])
        );
        assert_eq!(trim_start(b" \tx ".to_vec()), b"x ");
    }
}
