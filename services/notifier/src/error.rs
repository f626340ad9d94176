//! The notifier's one error type: a config it cannot start with, a
//! template that cannot be loaded, a notice that cannot be rendered or
//! composed, a mail not sent, a sent-log failure. The texts name files,
//! keys, relays and replies, never a template parameter (they may hold a
//! secret such as a migration token).

use std::path::PathBuf;

use super::mailer::Stage;

/// Everything that can go wrong in the notifier.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// Setup: the config has problems (each naming key and value).
    #[error("invalid notifier config: {}", .0.join("; "))]
    Config(Vec<String>),
    /// Setup: the AUTH password file cannot be read.
    #[error("reading consumers.notifier.password_file {path}: {source}")]
    Password {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A template file (or the folder) cannot be read.
    #[error("reading {path}: {source}")]
    TemplateRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A template does not parse, naming the file and the fault.
    #[error("template {path}: {reason}")]
    TemplateParse { path: String, reason: &'static str },
    /// A template's subject or body does not parse.
    #[error("template {path}: {part}: {problem}")]
    TemplatePart {
        path: String,
        /// `subject` or `body`.
        part: &'static str,
        /// [`NotifierError::PlaceholderOpen`] or
        /// [`NotifierError::PlaceholderName`].
        #[source]
        problem: Box<NotifierError>,
    },
    /// A template's `{{` without its `}}`.
    #[error("`{{{{` without `}}}}` before {excerpt:?}")]
    PlaceholderOpen {
        /// What follows, cut to 30 characters.
        excerpt: String,
    },
    /// A template's placeholder whose name is not a parameter name.
    #[error("placeholder {{{{{excerpt}}}}}: a name is letters, digits and _")]
    PlaceholderName {
        /// The name, cut to 30 characters.
        excerpt: String,
    },
    /// Setup: `[consumers.notifier.tls]` names a file that cannot be used.
    #[error("consumers.notifier.tls: {0}")]
    Tls(#[from] mailfleet_tls::TlsError),
    /// Setup: lettre refused the TLS settings.
    #[error("consumers.notifier.tls: {0}")]
    TlsParameters(String),
    /// Setup: `source_address` is not an IP address.
    #[error("consumers.notifier.source_address = {value:?}: not an IP address ({source})")]
    SourceAddress {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    /// Rendering: no template of this name.
    #[error("unknown template {name:?} (known: {known})")]
    UnknownTemplate { name: String, known: String },
    /// Rendering: parameters the template needs and the event lacks.
    #[error("template {template:?} needs parameter(s) {missing} that the event does not carry")]
    MissingParams { template: String, missing: String },
    /// Composing: a recipient that is not a mail address.
    #[error("recipient {value:?} is not a mail address ({reason})")]
    Recipient { value: String, reason: String },
    /// Composing: no recipient at all.
    #[error("no recipient")]
    NoRecipient,
    /// Deciding: an event without the id the sent-log and the Message-ID
    /// hang on.
    #[error("the event has no event_id: it cannot be sent at most once")]
    NoEventId,
    /// Deciding: a requested notice that cannot be composed.
    #[error("notice {id} to {to:?}: {source}")]
    Notice {
        id: String,
        to: String,
        #[source]
        source: Box<NotifierError>,
    },
    /// Deciding: an admin alert that cannot be composed.
    #[error("alert {id} ({kind}): {source}")]
    Alert {
        id: String,
        kind: String,
        #[source]
        source: Box<NotifierError>,
    },
    /// Composing: an event time lettre cannot date the mail with.
    #[error("event time {0} ms is before 1970")]
    Time(i64),
    /// Composing: lettre refused to build the message.
    #[error("building the message: {0}")]
    Build(String),
    /// Sending: the relay answered this negative reply.
    #[error("relay {relay} answered {code} at {stage}: {reply}")]
    Reply {
        relay: String,
        stage: Stage,
        code: u16,
        reply: String,
    },
    /// Sending: the connection failed or timed out before the message was
    /// handed over: nothing was sent.
    #[error("relay {relay}: {stage} failed: {reason}")]
    Broken {
        relay: String,
        stage: Stage,
        reason: String,
    },
    /// Sending: the connection failed or timed out after the message was
    /// handed over, before the relay's reply: the mail may have been sent.
    #[error("relay {relay}: no reply to the end of DATA ({reason}): the mail may have been sent")]
    OutcomeUnknown { relay: String, reason: String },
    /// A sent-log marker file cannot be read or written.
    #[error("sent-log {op} {path}: {source}")]
    SentLog {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl NotifierError {
    /// Whether a failed send can never pass by retrying: a notice that
    /// cannot be rendered or composed, or a 5xx reply once the transaction
    /// began (a 5xx to the greeting, EHLO, STARTTLS or AUTH is the relay's setup,
    /// which an operator fixes: retried). Setup and sent-log failures are
    /// not about one mail: not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::UnknownTemplate { .. }
            | Self::MissingParams { .. }
            | Self::Recipient { .. }
            | Self::NoRecipient
            | Self::NoEventId
            | Self::Time(_)
            | Self::Build(_) => true,
            Self::Notice { source, .. } | Self::Alert { source, .. } => source.is_permanent(),
            Self::Reply { stage, code, .. } => {
                *code >= 500 && !matches!(stage, Stage::Connect | Stage::StartTls | Stage::Auth)
            }
            Self::Broken { .. }
            | Self::OutcomeUnknown { .. }
            | Self::Config(_)
            | Self::Password { .. }
            | Self::TemplateRead { .. }
            | Self::TemplateParse { .. }
            | Self::TemplatePart { .. }
            | Self::PlaceholderOpen { .. }
            | Self::PlaceholderName { .. }
            | Self::SourceAddress { .. }
            | Self::Tls(_)
            | Self::TlsParameters(_)
            | Self::SentLog { .. } => false,
        }
    }

    /// Whether it is certain that the relay did not take the mail.
    pub fn outcome_known(&self) -> bool {
        !matches!(self, Self::OutcomeUnknown { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_send_errors_are_classed_by_stage_and_reply() {
        let reply = |stage: Stage, code: u16| NotifierError::Reply {
            relay: "r".into(),
            stage,
            code,
            reply: "x".into(),
        };
        assert!(reply(Stage::RcptTo("a@b.test".into()), 550).is_permanent());
        assert!(reply(Stage::EndOfData, 554).is_permanent());
        assert!(!reply(Stage::RcptTo("a@b.test".into()), 450).is_permanent());
        assert!(
            !reply(Stage::Connect, 554).is_permanent(),
            "relay setup: retried"
        );
        assert!(
            !reply(Stage::Auth, 535).is_permanent(),
            "relay setup: retried"
        );
        let text = reply(Stage::RcptTo("a@b.test".into()), 550).to_string();
        assert!(
            text.contains("RCPT TO:<a@b.test>") && text.contains("550"),
            "{text}"
        );
        let broken = NotifierError::Broken {
            relay: "r".into(),
            stage: Stage::Data,
            reason: "reset".into(),
        };
        assert!(!broken.is_permanent() && broken.outcome_known());
        let unknown = NotifierError::OutcomeUnknown {
            relay: "r".into(),
            reason: "reset".into(),
        };
        assert!(!unknown.is_permanent() && !unknown.outcome_known());
    }
}
