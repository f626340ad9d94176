//! One milter connection as a pure state machine: commands in, steps out.
//! No I/O: the server reads packets, hands each command to
//! [`Session::handle`] and does what the [`Step`] says.
//!
//! The session keeps what the end of a message needs: the client address
//! (SMFIC_CONNECT), the macros (`{auth_authen}`, `i`), the envelope (MAIL,
//! RCPT) and the message rebuilt from the header and body packets
//! ([`crate::message`]). At the end of a message it hands over a
//! [`Submission`]; the scan and the event are the server's.

use crate::{
    decide,
    message::{Built, Message, MessageBuilder},
    milter::{
        command::{Address, Command},
        macros::Macros,
        negotiate::{Negotiated, TooOld},
        reply::Reply,
    },
};

/// The SASL login macro: Postfix sets it once the client authenticated.
pub const AUTH_MACRO: &str = "{auth_authen}";
/// The queue id macro.
pub const QUEUE_ID_MACRO: &str = "i";
/// Recipients one message may have here; Postfix's own
/// `smtpd_recipient_limit` is 1000 by default.
pub const MAX_RECIPIENTS: usize = 10_000;

/// What the server does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this reply.
    Reply(Reply),
    /// Send nothing (macros, abort, or a step negotiated without reply).
    Silent,
    /// The MTA ended the message early (SMFIC_ABORT); send nothing.
    Aborted,
    /// Refuse with this reply and log the reason with the message's
    /// queue id and account.
    Refuse {
        reply: Reply,
        reason: Refusal,
        queue_id: Option<String>,
        account: Option<String>,
    },
    /// Scan this message and answer with the verdict.
    Scan(Box<Submission>),
    /// SMFIC_QUIT: close the connection.
    Close,
}

/// Why a message was refused without a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The macro was not sent at the end of the message: Postfix is not
    /// configured to send it, or the milter is on a listener that lets a
    /// client without SMTP AUTH send.
    MissingMacro { name: &'static str },
    /// Larger than `submission.max_message_bytes`.
    TooBig { size: u64, max: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::MissingMacro { name } => write!(
                f,
                "no {name} macro at the end of the message: add it to Postfix's \
                 milter_end_of_data_macros, and use this milter only on a listener that requires \
                 SMTP AUTH (smtpd_client_restrictions = permit_sasl_authenticated, reject)"
            ),
            Refusal::TooBig { size, max } => write!(
                f,
                "message of {size} bytes is over submission.max_message_bytes = {max}"
            ),
        }
    }
}

/// The MTA broke the protocol; the connection is closed (Postfix then
/// applies `milter_default_action`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{0} before SMFIC_OPTNEG")]
    NotNegotiated(&'static str),
    #[error("SMFIC_OPTNEG a second time")]
    NegotiatedTwice,
    #[error(transparent)]
    TooOld(#[from] TooOld),
    #[error("{0} outside a message (no SMFIC_MAIL before it)")]
    NoMessage(&'static str),
    #[error("more than {MAX_RECIPIENTS} recipients in one message")]
    TooManyRecipients,
}

/// A message at its end, with everything the event needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The account: the SASL login, lower-cased.
    pub account: String,
    /// `{auth_authen}` as Postfix sent it.
    pub sasl_username: String,
    /// MAIL FROM, without angle brackets (`""` for `<>`).
    pub sender: String,
    pub recipients: Vec<String>,
    /// Postfix's queue id (`i`), when sent.
    pub queue_id: Option<String>,
    /// The client's IP address (or socket path).
    pub client_address: Option<String>,
    pub message: Message,
}

/// The message in progress.
struct Transaction {
    sender: String,
    recipients: Vec<String>,
    message: MessageBuilder,
}

/// One milter connection.
pub struct Session {
    max_message_bytes: u64,
    negotiated: Option<Negotiated>,
    client_address: Option<String>,
    macros: Macros,
    tx: Option<Transaction>,
}

impl Session {
    /// A session that rebuilds messages of at most `max_message_bytes`.
    pub fn new(max_message_bytes: u64) -> Self {
        Self {
            max_message_bytes,
            negotiated: None,
            client_address: None,
            macros: Macros::default(),
            tx: None,
        }
    }

    /// The queue id of the message in progress, when known (for logs).
    pub fn queue_id(&self) -> Option<&str> {
        self.macros.get(QUEUE_ID_MACRO)
    }

    /// The account of the message in progress, when known (for logs).
    pub fn account(&self) -> Option<String> {
        self.macros.get(AUTH_MACRO).map(account_of)
    }

    /// Whether a message is in progress (MAIL accepted, no end yet).
    pub fn in_message(&self) -> bool {
        self.tx.is_some()
    }

    /// Handle one command.
    pub fn handle(&mut self, command: Command) -> Result<Step, ProtocolError> {
        let Some(negotiated) = self.negotiated else {
            return self.negotiate(command);
        };
        let code = command.code();
        let next = || match negotiated.expects_reply(code) {
            true => Step::Reply(Reply::Continue),
            false => Step::Silent,
        };
        match command {
            Command::OptNeg(_) => Err(ProtocolError::NegotiatedTwice),
            Command::Macro { stage, pairs } => {
                self.macros.set(stage, pairs);
                Ok(Step::Silent)
            }
            Command::Connect { address, .. } => {
                self.client_address = match address {
                    Address::Inet { ip, .. } => Some(ip),
                    Address::Local(path) => Some(path),
                    Address::Unknown => None,
                };
                Ok(next())
            }
            Command::Mail(args) => {
                self.mail(first(&args));
                Ok(next())
            }
            Command::Rcpt(args) => {
                let tx = self
                    .tx
                    .as_mut()
                    .ok_or(ProtocolError::NoMessage("SMFIC_RCPT"))?;
                if tx.recipients.len() >= MAX_RECIPIENTS {
                    return Err(ProtocolError::TooManyRecipients);
                }
                tx.recipients.push(unbracket(first(&args)));
                Ok(next())
            }
            Command::Header { name, value } => {
                let tx = self
                    .tx
                    .as_mut()
                    .ok_or(ProtocolError::NoMessage("SMFIC_HEADER"))?;
                tx.message.header(&name, &value, negotiated.leading_space());
                Ok(next())
            }
            Command::Body(chunk) => {
                let tx = self
                    .tx
                    .as_mut()
                    .ok_or(ProtocolError::NoMessage("SMFIC_BODY"))?;
                tx.message.body(&chunk);
                Ok(next())
            }
            Command::EndOfMessage(chunk) => self.end_of_message(&chunk),
            Command::Abort => Ok(self.abort()),
            Command::QuitNewConnection => {
                self.tx = None;
                self.macros = Macros::default();
                self.client_address = None;
                Ok(Step::Silent)
            }
            Command::Quit => Ok(Step::Close),
            Command::Helo(_) | Command::Data | Command::Eoh | Command::Unknown(_) => Ok(next()),
        }
    }

    /// The first command must be the option negotiation.
    fn negotiate(&mut self, command: Command) -> Result<Step, ProtocolError> {
        match command {
            Command::OptNeg(offer) => {
                let negotiated = Negotiated::from_offer(&offer)?;
                self.negotiated = Some(negotiated);
                Ok(Step::Reply(Reply::OptNeg(negotiated.reply())))
            }
            Command::Quit => Ok(Step::Close),
            other => Err(ProtocolError::NotNegotiated(command_name(&other))),
        }
    }

    /// MAIL: a new message. Without a login it goes on: the submission
    /// listener refuses an unauthenticated client itself, at RCPT (`554
    /// 5.7.1 ... Access denied`), and a message that still reaches its end
    /// without `{auth_authen}` is refused there.
    fn mail(&mut self, sender: &str) {
        self.tx = Some(Transaction {
            sender: unbracket(sender),
            recipients: Vec::new(),
            message: MessageBuilder::new(self.max_message_bytes),
        });
    }

    /// The end of the message: a refusal, or the submission to scan.
    fn end_of_message(&mut self, chunk: &[u8]) -> Result<Step, ProtocolError> {
        let mut tx = self
            .tx
            .take()
            .ok_or(ProtocolError::NoMessage("SMFIC_BODYEOB"))?;
        tx.message.body(chunk);
        let step = self.finish(tx);
        self.macros.end_message();
        Ok(step)
    }

    fn finish(&self, tx: Transaction) -> Step {
        let Some(login) = self.macros.get(AUTH_MACRO) else {
            return self.refuse(
                decide::no_auth_reply(),
                Refusal::MissingMacro { name: AUTH_MACRO },
            );
        };
        let message = match tx.message.finish() {
            Built::Message(message) => message,
            Built::TooBig { size } => {
                let max = self.max_message_bytes;
                return self.refuse(decide::too_big_reply(max), Refusal::TooBig { size, max });
            }
        };
        Step::Scan(Box::new(Submission {
            account: account_of(login),
            sasl_username: login.to_string(),
            sender: tx.sender,
            recipients: tx.recipients,
            queue_id: self.macros.get(QUEUE_ID_MACRO).map(str::to_string),
            client_address: self.client_address.clone(),
            message,
        }))
    }

    fn refuse(&self, reply: Reply, reason: Refusal) -> Step {
        Step::Refuse {
            reply,
            reason,
            queue_id: self.queue_id().map(str::to_string),
            account: self.account(),
        }
    }

    fn abort(&mut self) -> Step {
        let had_message = self.tx.take().is_some();
        self.macros.end_message();
        if had_message {
            Step::Aborted
        } else {
            Step::Silent
        }
    }
}

/// The account a login names: trimmed and lower-cased.
pub fn account_of(login: &str) -> String {
    login.trim().to_lowercase()
}

/// The address argument of MAIL or RCPT (the decoder ensures there is one).
fn first(args: &[String]) -> &str {
    args.first().map_or("", String::as_str)
}

/// `<a@x>` → `a@x`, `<>` → ``; anything else as it is.
fn unbracket(address: &str) -> String {
    let a = address.trim();
    a.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a)
        .to_string()
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::OptNeg(_) => "SMFIC_OPTNEG",
        Command::Macro { .. } => "SMFIC_MACRO",
        Command::Connect { .. } => "SMFIC_CONNECT",
        Command::Helo(_) => "SMFIC_HELO",
        Command::Mail(_) => "SMFIC_MAIL",
        Command::Rcpt(_) => "SMFIC_RCPT",
        Command::Data => "SMFIC_DATA",
        Command::Header { .. } => "SMFIC_HEADER",
        Command::Eoh => "SMFIC_EOH",
        Command::Body(_) => "SMFIC_BODY",
        Command::EndOfMessage(_) => "SMFIC_BODYEOB",
        Command::Abort => "SMFIC_ABORT",
        Command::Quit => "SMFIC_QUIT",
        Command::QuitNewConnection => "SMFIC_QUIT_NC",
        Command::Unknown(_) => "SMFIC_UNKNOWN",
    }
}

#[cfg(test)]
mod tests;
