//! One LMTP session as a pure state machine: a command line in, the reply
//! (or "read the message now") out. The server does the I/O.

use mailfleet_events::mail::BodyType;

use super::command::{parse, valid_mailbox, Command, Refusal};

/// What the recipient check says of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptStatus {
    Accept,
    /// No such account.
    Unknown,
    /// The account exists but takes no mail (deactivated, deleted).
    Inactive,
    /// The account is blocked (abuse, a compromise): its mailbox is disabled.
    Disabled,
    /// The account is already over its quota.
    OverQuota,
    /// The projection cannot answer now.
    TryLater,
}

/// Decides RCPT TO from the account projection.
pub trait RecipientCheck: Send + Sync {
    /// `account` is the lower-cased address; `sender` the transaction's
    /// MAIL FROM, empty for the null sender `<>`.
    fn check(&self, sender: &str, account: &str) -> RcptStatus;
}

/// Accepts every well-formed recipient: the check until the accounts
/// projection exists.
pub struct AcceptAll;

impl RecipientCheck for AcceptAll {
    fn check(&self, _sender: &str, _account: &str) -> RcptStatus {
        RcptStatus::Accept
    }
}

/// Limits a session enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_recipients: usize,
    /// Bad commands before the server hangs up.
    pub max_errors: u32,
}

/// An accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// As given in RCPT TO.
    pub address: String,
    /// Lower-cased: the account and the record key.
    pub account: String,
}

/// One mail transaction: MAIL, its RCPTs, then DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub sender: String,
    pub body: BodyType,
    pub recipients: Vec<Recipient>,
}

/// What the server must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this reply (CRLF-terminated, maybe several lines).
    Reply(String),
    /// Send `354`, read the message, then answer once per recipient.
    Data(Transaction),
    /// Send this reply and close the connection.
    Close(String),
}

/// Format one reply line.
pub fn reply(code: u16, enhanced: &str, text: &str) -> String {
    format!("{code} {enhanced} {text}\r\n")
}

/// The session state.
pub struct Session {
    hostname: String,
    limits: Limits,
    lhlo: Option<String>,
    tx: Option<Transaction>,
    errors: u32,
}

impl Session {
    pub fn new(hostname: impl Into<String>, limits: Limits) -> Self {
        Self {
            hostname: hostname.into(),
            limits,
            lhlo: None,
            tx: None,
            errors: 0,
        }
    }

    /// The first line the server sends.
    pub fn greeting(&self) -> String {
        format!("220 {} LMTP mailfleet ready\r\n", self.hostname)
    }

    /// The client's LHLO name, once given.
    pub fn lhlo(&self) -> &str {
        self.lhlo.as_deref().unwrap_or("")
    }

    /// Handle one command line, without its line end.
    pub fn handle(&mut self, line: &[u8], check: &dyn RecipientCheck) -> Step {
        let step = match std::str::from_utf8(line) {
            Ok(text) => match parse(text) {
                Ok(command) => self.command(command, check),
                Err(refusal) => Err(refusal),
            },
            Err(_) => Err(Refusal {
                code: 500,
                enhanced: "5.5.2",
                text: "Command is not valid UTF-8".into(),
            }),
        };
        match step {
            Ok(step) => step,
            Err(r) => self.error(r),
        }
    }

    /// A command line longer than the limit.
    pub fn line_too_long(&mut self) -> Step {
        self.error(Refusal {
            code: 500,
            enhanced: "5.5.2",
            text: "Line too long".into(),
        })
    }

    fn error(&mut self, refusal: Refusal) -> Step {
        self.errors += 1;
        if self.errors >= self.limits.max_errors {
            return Step::Close(reply(421, "4.7.0", "Too many errors, closing connection"));
        }
        Step::Reply(reply(refusal.code, refusal.enhanced, &refusal.text))
    }

    fn command(&mut self, command: Command, check: &dyn RecipientCheck) -> Result<Step, Refusal> {
        match command {
            Command::Lhlo(name) => Ok(self.on_lhlo(name)),
            Command::SmtpGreeting => Err(refuse(500, "5.5.1", "This is LMTP: use LHLO")),
            Command::Mail { from, size, body } => self.on_mail(from, size, body),
            Command::Rcpt { to } => self.on_rcpt(to, check),
            Command::Data => self.on_data(),
            Command::Rset => {
                self.tx = None;
                Ok(Step::Reply(reply(250, "2.0.0", "Ok")))
            }
            Command::Noop => Ok(Step::Reply(reply(250, "2.0.0", "Ok"))),
            Command::Quit => Ok(Step::Close(reply(221, "2.0.0", "Bye"))),
            Command::Vrfy => Ok(Step::Reply(reply(
                252,
                "2.5.2",
                "Cannot VRFY, send some mail",
            ))),
            Command::Unknown(verb) => Err(refuse(
                500,
                "5.5.2",
                &format!("Command {verb} not recognized"),
            )),
        }
    }

    fn on_lhlo(&mut self, name: String) -> Step {
        self.lhlo = Some(name);
        self.tx = None;
        let h = &self.hostname;
        let max = self.limits.max_message_bytes;
        Step::Reply(format!(
            "250-{h}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {max}\r\n"
        ))
    }

    fn on_mail(
        &mut self,
        from: String,
        size: Option<u64>,
        body: BodyType,
    ) -> Result<Step, Refusal> {
        if self.lhlo.is_none() {
            return Err(refuse(503, "5.5.1", "Send LHLO first"));
        }
        if self.tx.is_some() {
            return Err(refuse(503, "5.5.1", "Nested MAIL command"));
        }
        if !from.is_empty() && !valid_mailbox(&from) {
            return Err(refuse(
                501,
                "5.1.7",
                &format!("Bad sender address syntax: <{from}>"),
            ));
        }
        if let Some(size) = size.filter(|&s| s > self.limits.max_message_bytes) {
            return Err(refuse(
                552,
                "5.3.4",
                &format!(
                    "Message size {size} exceeds fixed limit {}",
                    self.limits.max_message_bytes
                ),
            ));
        }
        self.tx = Some(Transaction {
            sender: from,
            body,
            recipients: Vec::new(),
        });
        Ok(Step::Reply(reply(250, "2.1.0", "Ok")))
    }

    fn on_rcpt(&mut self, to: String, check: &dyn RecipientCheck) -> Result<Step, Refusal> {
        let max = self.limits.max_recipients;
        let tx = self
            .tx
            .as_mut()
            .ok_or_else(|| refuse(503, "5.5.1", "Need MAIL before RCPT"))?;
        if !valid_mailbox(&to) {
            return Err(refuse(
                501,
                "5.1.3",
                &format!("Bad recipient address syntax: <{to}>"),
            ));
        }
        if tx.recipients.len() >= max {
            // 452, not 5xx: the client sends the rest in another transaction.
            return Ok(Step::Reply(reply(452, "4.5.3", "Too many recipients")));
        }
        let account = to.to_lowercase();
        let answer = match check.check(&tx.sender, &account) {
            RcptStatus::Accept => {
                tx.recipients.push(Recipient {
                    address: to,
                    account,
                });
                reply(250, "2.1.5", "Ok")
            }
            RcptStatus::Unknown => reply(550, "5.1.1", &format!("<{to}>: no such user")),
            RcptStatus::Inactive => reply(550, "5.1.1", &format!("<{to}>: account disabled")),
            RcptStatus::Disabled => reply(550, "5.2.1", &format!("<{to}>: mailbox disabled")),
            RcptStatus::OverQuota => reply(552, "5.2.2", &format!("<{to}>: mailbox full")),
            RcptStatus::TryLater => reply(451, "4.3.0", &format!("<{to}>: try again later")),
        };
        Ok(Step::Reply(answer))
    }

    fn on_data(&mut self) -> Result<Step, Refusal> {
        match self.tx.take() {
            None => Err(refuse(503, "5.5.1", "Need MAIL command")),
            Some(tx) if tx.recipients.is_empty() => {
                self.tx = Some(tx);
                Err(refuse(503, "5.5.1", "No valid recipients"))
            }
            Some(tx) => Ok(Step::Data(tx)),
        }
    }
}

fn refuse(code: u16, enhanced: &'static str, text: &str) -> Refusal {
    Refusal {
        code,
        enhanced,
        text: text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Directory;
    impl RecipientCheck for Directory {
        fn check(&self, _sender: &str, account: &str) -> RcptStatus {
            match account {
                "gone@example.org" => RcptStatus::Inactive,
                "locked@example.org" => RcptStatus::Disabled,
                "full@example.org" => RcptStatus::OverQuota,
                a if a.ends_with("@example.org") => RcptStatus::Accept,
                _ => RcptStatus::Unknown,
            }
        }
    }

    fn session() -> Session {
        Session::new(
            "mx.test",
            Limits {
                max_message_bytes: 1000,
                max_recipients: 2,
                max_errors: 3,
            },
        )
    }

    fn text(step: Step) -> String {
        match step {
            Step::Reply(r) | Step::Close(r) => r,
            Step::Data(tx) => format!("DATA {tx:?}"),
        }
    }

    #[test]
    fn a_whole_transaction() {
        let mut s = session();
        let d = &Directory;
        assert!(text(s.handle(b"LHLO client", d)).contains("250-PIPELINING\r\n"));
        assert_eq!(
            text(s.handle(b"MAIL FROM:<a@example.net>", d)),
            "250 2.1.0 Ok\r\n"
        );
        assert_eq!(
            text(s.handle(b"RCPT TO:<Bob@Example.org>", d)),
            "250 2.1.5 Ok\r\n"
        );
        assert!(text(s.handle(b"RCPT TO:<x@elsewhere.net>", d)).starts_with("550 5.1.1"));
        assert!(text(s.handle(b"RCPT TO:<gone@example.org>", d)).starts_with("550 5.1.1"));
        assert!(text(s.handle(b"RCPT TO:<locked@example.org>", d)).starts_with("550 5.2.1"));
        assert!(text(s.handle(b"RCPT TO:<full@example.org>", d)).starts_with("552 5.2.2"));
        let Step::Data(tx) = s.handle(b"DATA", d) else {
            panic!("expected DATA")
        };
        assert_eq!(tx.recipients.len(), 1);
        assert_eq!(tx.recipients[0].account, "bob@example.org");
        assert_eq!(tx.recipients[0].address, "Bob@Example.org");
        assert!(
            text(s.handle(b"DATA", d)).starts_with("503"),
            "transaction was consumed"
        );
    }

    #[test]
    fn order_is_enforced() {
        let mut s = session();
        s.limits.max_errors = 100;
        let d = &Directory;
        assert!(text(s.handle(b"MAIL FROM:<a@example.net>", d)).starts_with("503 5.5.1 Send LHLO"));
        assert!(text(s.handle(b"EHLO x", d)).starts_with("500 5.5.1"));
        assert!(text(s.handle(b"LHLO x", d)).starts_with("250"));
        assert!(text(s.handle(b"RCPT TO:<b@example.org>", d)).starts_with("503"));
        s.handle(b"MAIL FROM:<a@example.net>", d);
        assert!(text(s.handle(b"MAIL FROM:<a@example.net>", d)).contains("Nested"));
        assert!(text(s.handle(b"DATA", d)).contains("No valid recipients"));
        assert_eq!(text(s.handle(b"RSET", d)), "250 2.0.0 Ok\r\n");
        assert!(text(s.handle(b"RCPT TO:<b@example.org>", d)).starts_with("503"));
    }

    #[test]
    fn size_and_recipient_limits() {
        let mut s = session();
        let d = &Directory;
        s.handle(b"LHLO x", d);
        assert_eq!(
            text(s.handle(b"MAIL FROM:<a@example.net> SIZE=1001", d)),
            "552 5.3.4 Message size 1001 exceeds fixed limit 1000\r\n"
        );
        s.handle(b"MAIL FROM:<> SIZE=1000", d);
        s.handle(b"RCPT TO:<a@example.org>", d);
        s.handle(b"RCPT TO:<b@example.org>", d);
        assert!(text(s.handle(b"RCPT TO:<c@example.org>", d)).starts_with("452 4.5.3"));
    }

    #[test]
    fn too_many_errors_closes() {
        let mut s = session();
        let d = &Directory;
        assert!(matches!(s.handle(b"BOGUS", d), Step::Reply(_)));
        assert!(matches!(s.line_too_long(), Step::Reply(_)));
        assert!(matches!(s.handle(&[0xff, 0xfe], d), Step::Close(r) if r.starts_with("421")));
    }

    #[test]
    fn quit_closes() {
        assert_eq!(
            session().handle(b"QUIT", &AcceptAll),
            Step::Close("221 2.0.0 Bye\r\n".into())
        );
    }
}
