//! One LMTP session as a pure state machine: a command line in, the reply
//! (or "read the message now", or "start TLS now") out. The server does
//! the I/O.
//!
//! STARTTLS (RFC 3207 §4.2): once the session answers `220`, it forgets
//! everything the client said before (LHLO, XFORWARD, a transaction), as
//! the server must forget any bytes the client pipelined after the
//! command: nothing said in the clear may carry over into the encrypted
//! session, where a man in the middle could have injected it.

use mailfleet_events::mail::BodyType;

use super::command::{
    parse, valid_mailbox,
    xforward::{self, Forwarded},
    Command, Refusal,
};

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
    /// What XFORWARD said before this transaction's MAIL.
    pub forwarded: Forwarded,
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
    /// Send this reply (`220`), drop whatever the client sent after the
    /// command, then do the TLS handshake; on failure, close. The session
    /// has already started over: it expects LHLO.
    StartTls(String),
}

/// STARTTLS as the session sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// No TLS configured: STARTTLS is neither advertised nor accepted.
    Unavailable,
    /// Advertised after LHLO; with `required`, mail commands before it are
    /// refused with `530 5.7.0`.
    Offered { required: bool },
    /// The handshake is done: not advertised again, STARTTLS is `503`.
    Active,
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
    /// XFORWARD's attributes for the next MAIL, which takes them: Postfix
    /// sends them per transaction, so each transaction starts without.
    forwarded: Forwarded,
    tx: Option<Transaction>,
    errors: u32,
    tls: Tls,
}

impl Session {
    pub fn new(hostname: impl Into<String>, limits: Limits) -> Self {
        Self {
            hostname: hostname.into(),
            limits,
            lhlo: None,
            forwarded: Forwarded::default(),
            tx: None,
            errors: 0,
            tls: Tls::Unavailable,
        }
    }

    /// Offer STARTTLS; with `required`, insist on it before any mail
    /// command.
    pub fn with_starttls(mut self, required: bool) -> Self {
        self.tls = Tls::Offered { required };
        self
    }

    /// Where STARTTLS stands.
    pub fn tls(&self) -> Tls {
        self.tls
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
        if self.tls == (Tls::Offered { required: true }) && needs_tls(&command) {
            return Err(refuse(530, "5.7.0", "Must issue a STARTTLS command first"));
        }
        match command {
            Command::Lhlo(name) => Ok(self.on_lhlo(name)),
            Command::SmtpGreeting => Err(refuse(500, "5.5.1", "This is LMTP: use LHLO")),
            Command::Mail { from, size, body } => self.on_mail(from, size, body),
            Command::Rcpt { to } => self.on_rcpt(to, check),
            Command::Xforward(attributes) => self.on_xforward(attributes),
            Command::StartTls => self.on_starttls(),
            Command::Data => self.on_data(),
            Command::Rset => {
                self.reset();
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

    /// RSET and LHLO: no transaction, nothing forwarded.
    fn reset(&mut self) {
        self.tx = None;
        self.forwarded = Forwarded::default();
    }

    fn on_lhlo(&mut self, name: String) -> Step {
        self.lhlo = Some(name);
        self.reset();
        let h = &self.hostname;
        let max = self.limits.max_message_bytes;
        let xforward = xforward::KEYWORD;
        let starttls = match self.tls {
            Tls::Offered { .. } => "250-STARTTLS\r\n",
            Tls::Unavailable | Tls::Active => "",
        };
        Step::Reply(format!(
            "250-{h}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n\
             {starttls}250-{xforward}\r\n250 SIZE {max}\r\n"
        ))
    }

    /// RFC 3207: `220`, then the session starts over (see the module doc).
    fn on_starttls(&mut self) -> Result<Step, Refusal> {
        match self.tls {
            Tls::Unavailable => return Err(refuse(502, "5.5.1", "STARTTLS not available")),
            Tls::Active => return Err(refuse(503, "5.5.1", "TLS already active")),
            Tls::Offered { .. } => {}
        }
        if self.lhlo.is_none() {
            return Err(refuse(503, "5.5.1", "Send LHLO first"));
        }
        if self.tx.is_some() {
            return Err(refuse(503, "5.5.1", "Mail transaction in progress"));
        }
        self.lhlo = None;
        self.reset();
        self.tls = Tls::Active;
        Ok(Step::StartTls(reply(220, "2.0.0", "Ready to start TLS")))
    }

    /// Believed from any client: only `lmtp.allow` gets this far (see
    /// `xforward.rs`).
    fn on_xforward(&mut self, attributes: xforward::Attributes) -> Result<Step, Refusal> {
        if self.lhlo.is_none() {
            return Err(refuse(503, "5.5.1", "Send LHLO first"));
        }
        if self.tx.is_some() {
            return Err(refuse(503, "5.5.1", "Mail transaction in progress"));
        }
        self.forwarded.update(attributes);
        Ok(Step::Reply(reply(250, "2.0.0", "Ok")))
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
            forwarded: std::mem::take(&mut self.forwarded),
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

/// The commands RFC 3207 refuses with `530` until TLS is active when it is
/// required: all but LHLO, STARTTLS, NOOP, RSET and QUIT (and unknown or
/// SMTP verbs, which get their own error).
fn needs_tls(command: &Command) -> bool {
    matches!(
        command,
        Command::Mail { .. }
            | Command::Rcpt { .. }
            | Command::Xforward(_)
            | Command::Data
            | Command::Vrfy
    )
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
            Step::Reply(r) | Step::Close(r) | Step::StartTls(r) => r,
            Step::Data(tx) => format!("DATA {tx:?}"),
        }
    }

    #[test]
    fn a_whole_transaction() {
        let mut s = session();
        let d = &Directory;
        assert_eq!(
            text(s.handle(b"LHLO client", d)),
            "250-mx.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n\
             250-XFORWARD NAME ADDR PROTO HELO IDENT SOURCE\r\n250 SIZE 1000\r\n"
        );
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

    /// LHLO, then the commands, then DATA: the transaction.
    fn transaction(s: &mut Session, commands: &[&str]) -> Transaction {
        let d = &Directory;
        for command in commands {
            let answer = text(s.handle(command.as_bytes(), d));
            assert!(answer.starts_with("250 "), "{command}: {answer}");
        }
        match s.handle(b"DATA", d) {
            Step::Data(tx) => tx,
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    #[test]
    fn xforward_applies_to_the_next_transaction_only() {
        let mut s = session();
        s.handle(b"LHLO mx", &Directory);
        let tx = transaction(
            &mut s,
            &[
                "XFORWARD NAME=mail.example.net ADDR=IPv6:2001:db8::25 PROTO=ESMTP",
                "XFORWARD HELO=[192.0.2.1] IDENT=4XyZ1 SOURCE=REMOTE",
                "MAIL FROM:<a@example.net>",
                "RCPT TO:<b@example.org>",
            ],
        );
        assert_eq!(
            tx.forwarded,
            Forwarded {
                name: Some("mail.example.net".into()),
                addr: Some("2001:db8::25".into()),
                proto: Some("ESMTP".into()),
                helo: Some("[192.0.2.1]".into()),
                ident: Some("4XyZ1".into()),
                source: Some("REMOTE".into()),
            }
        );
        let plain = ["MAIL FROM:<a@example.net>", "RCPT TO:<b@example.org>"];
        let next = transaction(&mut s, &plain);
        assert_eq!(next.forwarded, Forwarded::default(), "reset after DATA");
        assert_eq!(
            text(s.handle(b"XFORWARD IDENT=5AB", &Directory)),
            "250 2.0.0 Ok\r\n"
        );
        assert_eq!(text(s.handle(b"RSET", &Directory)), "250 2.0.0 Ok\r\n");
        let after_rset = transaction(&mut s, &plain);
        assert_eq!(after_rset.forwarded, Forwarded::default(), "reset by RSET");
    }

    #[test]
    fn xforward_only_between_lhlo_and_mail() {
        let mut s = session();
        s.limits.max_errors = 100;
        let d = &Directory;
        assert!(text(s.handle(b"XFORWARD ADDR=192.0.2.1", d)).starts_with("503 5.5.1 Send LHLO"));
        s.handle(b"LHLO x", d);
        assert_eq!(
            text(s.handle(b"XFORWARD ADDR=192.0.2.1 PORT=25", d)),
            "501 5.5.4 Bad XFORWARD attribute name: PORT\r\n"
        );
        s.handle(b"MAIL FROM:<a@example.net>", d);
        assert_eq!(
            text(s.handle(b"XFORWARD ADDR=192.0.2.1", d)),
            "503 5.5.1 Mail transaction in progress\r\n"
        );
        s.handle(b"RCPT TO:<b@example.org>", d);
        let Step::Data(tx) = s.handle(b"DATA", d) else {
            panic!("expected DATA")
        };
        assert_eq!(
            tx.forwarded,
            Forwarded::default(),
            "refused: nothing applied"
        );
    }

    #[test]
    fn starttls_is_advertised_and_starts_the_session_over() {
        let mut s = session().with_starttls(false);
        s.limits.max_errors = 100;
        let d = &Directory;
        assert_eq!(
            text(s.handle(b"LHLO mx", d)),
            "250-mx.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n\
             250-STARTTLS\r\n250-XFORWARD NAME ADDR PROTO HELO IDENT SOURCE\r\n250 SIZE 1000\r\n"
        );
        assert!(text(s.handle(b"XFORWARD ADDR=192.0.2.66", d)).starts_with("250"));
        assert_eq!(
            s.handle(b"STARTTLS", d),
            Step::StartTls("220 2.0.0 Ready to start TLS\r\n".into())
        );
        assert_eq!(s.tls(), Tls::Active);
        // RFC 3207: LHLO is forgotten, and so is what XFORWARD said.
        assert!(text(s.handle(b"MAIL FROM:<a@example.net>", d)).starts_with("503 5.5.1 Send LHLO"));
        let lhlo = text(s.handle(b"LHLO mx", d));
        assert!(!lhlo.contains("STARTTLS"), "advertised again: {lhlo}");
        assert_eq!(
            text(s.handle(b"STARTTLS", d)),
            "503 5.5.1 TLS already active\r\n"
        );
        let tx = transaction(
            &mut s,
            &["MAIL FROM:<a@example.net>", "RCPT TO:<b@example.org>"],
        );
        assert_eq!(tx.forwarded, Forwarded::default(), "XFORWARD carried over");
    }

    #[test]
    fn starttls_only_between_lhlo_and_mail() {
        let mut s = session().with_starttls(false);
        s.limits.max_errors = 100;
        let d = &Directory;
        assert_eq!(
            text(s.handle(b"STARTTLS", d)),
            "503 5.5.1 Send LHLO first\r\n"
        );
        s.handle(b"LHLO mx", d);
        s.handle(b"MAIL FROM:<a@example.net>", d);
        assert_eq!(
            text(s.handle(b"STARTTLS", d)),
            "503 5.5.1 Mail transaction in progress\r\n"
        );
        assert_eq!(s.tls(), Tls::Offered { required: false });
        s.handle(b"RSET", d);
        assert!(matches!(s.handle(b"STARTTLS", d), Step::StartTls(_)));
    }

    #[test]
    fn required_tls_refuses_mail_commands_before_starttls() {
        let mut s = session().with_starttls(true);
        s.limits.max_errors = 100;
        let d = &Directory;
        s.handle(b"LHLO mx", d);
        let must = "530 5.7.0 Must issue a STARTTLS command first\r\n";
        for command in [
            "MAIL FROM:<a@example.net>",
            "RCPT TO:<b@example.org>",
            "XFORWARD ADDR=192.0.2.1",
            "DATA",
            "VRFY b",
        ] {
            assert_eq!(text(s.handle(command.as_bytes(), d)), must, "{command}");
        }
        for (command, answer) in [("NOOP", "250"), ("RSET", "250"), ("BOGUS", "500")] {
            assert!(
                text(s.handle(command.as_bytes(), d)).starts_with(answer),
                "{command}"
            );
        }
        assert!(matches!(s.handle(b"STARTTLS", d), Step::StartTls(_)));
        s.handle(b"LHLO mx", d);
        transaction(
            &mut s,
            &["MAIL FROM:<a@example.net>", "RCPT TO:<b@example.org>"],
        );
    }

    #[test]
    fn without_tls_starttls_is_not_offered() {
        let mut s = session();
        let d = &Directory;
        assert!(!text(s.handle(b"LHLO mx", d)).contains("STARTTLS"));
        assert_eq!(
            text(s.handle(b"STARTTLS", d)),
            "502 5.5.1 STARTTLS not available\r\n"
        );
        assert_eq!(s.tls(), Tls::Unavailable);
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
