//! Sending over SMTP with lettre's tokio transport, one connection per
//! mail (notices are rare; a pool would only hold idle connections).
//!
//! lettre's `AsyncSmtpConnection` is driven step by step, rather than
//! through `AsyncSmtpTransport`, for two reasons: it can bind the source
//! address (Postfix trusts clients by address: `mynetworks`), and each
//! failure is known to have happened before or after the message was
//! handed over, which is what the notifier's at-most-once rule hangs on
//! ([`SendError::outcome_known`]).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::AsyncSmtpConnection,
        commands::{Data, Mail, Rcpt},
        extension::{ClientId, Extension, MailBodyParameter, MailParameter},
        response::Response,
        Error as SmtpError,
    },
    Message,
};

use super::{
    compose::{recipient, ComposeError, Composer, Letter},
    config::NotifierConfig,
    templates::{TemplateError, Templates},
};

/// A notifier or mailer that cannot be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid notifier config: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error(transparent)]
    Templates(#[from] TemplateError),
    #[error("reading consumers.notifier.password_file {path}: {source}")]
    Password {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    SentLog(#[from] super::sent_log::SentLogError),
}

/// Where a transaction stood when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Auth,
    MailFrom,
    RcptTo(String),
    Data,
    /// The message was written and the final dot sent: the reply decides.
    EndOfData,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Connect => f.write_str("connect/EHLO"),
            Stage::Auth => f.write_str("AUTH"),
            Stage::MailFrom => f.write_str("MAIL FROM"),
            Stage::RcptTo(to) => write!(f, "RCPT TO:<{to}>"),
            Stage::Data => f.write_str("DATA"),
            Stage::EndOfData => f.write_str("the end of DATA"),
        }
    }
}

/// Why a mail was not sent. The text names the relay, the step and the
/// reply, never a template parameter (they may hold a secret).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The notice cannot be made: nothing was sent, and never will be.
    #[error(transparent)]
    Compose(#[from] ComposeError),
    /// The relay answered this negative reply.
    #[error("relay {relay} answered {code} at {stage}: {reply}")]
    Reply {
        relay: String,
        stage: Stage,
        code: u16,
        reply: String,
    },
    /// The connection failed or timed out before the message was handed
    /// over: nothing was sent.
    #[error("relay {relay}: {stage} failed: {reason}")]
    Broken {
        relay: String,
        stage: Stage,
        reason: String,
    },
    /// The connection failed or timed out after the message was handed
    /// over, before the relay's reply: the mail may have been sent.
    #[error("relay {relay}: no reply to the end of DATA ({reason}): the mail may have been sent")]
    Unknown { relay: String, reason: String },
}

impl SendError {
    /// Whether the failure can never pass by retrying: a notice that cannot
    /// be composed, or a 5xx reply once the transaction began (a 5xx to
    /// the greeting, EHLO or AUTH is the relay's setup, which an operator
    /// fixes: retried).
    pub fn is_permanent(&self) -> bool {
        match self {
            SendError::Compose(_) => true,
            SendError::Reply { stage, code, .. } => {
                *code >= 500 && !matches!(stage, Stage::Connect | Stage::Auth)
            }
            SendError::Broken { .. } | SendError::Unknown { .. } => false,
        }
    }

    /// Whether it is certain that the relay did not take the mail.
    pub fn outcome_known(&self) -> bool {
        !matches!(self, SendError::Unknown { .. })
    }
}

/// The SMTP relay and how to reach it.
#[derive(Debug, Clone)]
pub struct Relay {
    host: String,
    port: u16,
    source: Option<IpAddr>,
    hello: ClientId,
    timeout: Duration,
    credentials: Option<Credentials>,
}

/// Templates and a relay: what sends a notice. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailer {
    composer: Arc<Composer>,
    relay: Arc<Relay>,
}

impl Mailer {
    /// Check the config, load the templates and the AUTH password.
    pub fn new(cfg: &NotifierConfig) -> Result<Mailer, SetupError> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            return Err(SetupError::Config(problems));
        }
        let addresses = cfg.addresses().map_err(SetupError::Config)?;
        let templates = Templates::load(cfg.templates_dir.as_deref())?;
        let relay = Relay {
            host: cfg.relay_host.clone(),
            port: cfg.relay_port,
            source: cfg.source_ip().map_err(|e| SetupError::Config(vec![e]))?,
            hello: ClientId::Domain(cfg.helo_name.clone()),
            timeout: cfg.timeout(),
            credentials: credentials(cfg)?,
        };
        Ok(Mailer {
            composer: Arc::new(Composer::new(templates, &addresses)),
            relay: Arc::new(relay),
        })
    }

    /// What renders the templates.
    pub fn composer(&self) -> &Composer {
        &self.composer
    }

    /// Render `template` with `params` and send it to `to` now. The
    /// Message-ID is derived from `message_id` (any stable string, e.g. an
    /// event id), so a resend is recognisable; `Date:` is now. No
    /// sent-log: the caller decides about resends.
    pub async fn send(
        &self,
        to: &str,
        template: &str,
        params: &BTreeMap<String, String>,
        message_id: &str,
    ) -> Result<(), SendError> {
        let to = [recipient(to)?];
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let letter = Letter {
            to: &to,
            template,
            seed: message_id,
            date_ms: now_ms,
        };
        let message = self.composer.compose(&letter, params)?;
        self.deliver(&message).await.map(drop)
    }

    /// Send a composed message: one SMTP transaction to its envelope.
    /// Returns the relay's reply to the message (with its queue id).
    pub async fn deliver(&self, message: &Message) -> Result<String, SendError> {
        self.relay.deliver(message).await
    }
}

impl Relay {
    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn deliver(&self, message: &Message) -> Result<String, SendError> {
        let mut conn = self.connect().await?;
        let result = self
            .transaction(&mut conn, message.envelope(), &message.formatted())
            .await;
        // The mail's fate is settled; a failed QUIT changes nothing.
        let _ = tokio::time::timeout(self.timeout, conn.quit()).await;
        result
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let connect = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            None,
            self.source,
        );
        let mut conn = self.step(Stage::Connect, connect).await?;
        if let Some(credentials) = &self.credentials {
            let auth = conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials);
            self.step(Stage::Auth, auth).await?;
        }
        Ok(conn)
    }

    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<String, SendError> {
        let params = self.mail_parameters(conn, envelope, bytes)?;
        let from = envelope.from().cloned();
        self.step(Stage::MailFrom, conn.command(Mail::new(from, params)))
            .await?;
        for to in envelope.to() {
            let rcpt = conn.command(Rcpt::new(to.clone(), vec![]));
            self.step(Stage::RcptTo(to.to_string()), rcpt).await?;
        }
        self.step(Stage::Data, conn.command(Data)).await?;
        let reply = self.step(Stage::EndOfData, conn.message(bytes)).await?;
        Ok(first_line(&reply))
    }

    /// SMTPUTF8 and 8BITMIME when needed, as lettre's own transport does.
    fn mail_parameters(
        &self,
        conn: &AsyncSmtpConnection,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<Vec<MailParameter>, SendError> {
        let mut params = Vec::new();
        let needs = |what: &str| SendError::Broken {
            relay: self.name(),
            stage: Stage::MailFrom,
            reason: format!("the mail needs {what}, which the relay does not offer"),
        };
        let info = conn.server_info();
        let addresses = envelope.from().into_iter().chain(envelope.to());
        if addresses.map(AsRef::<str>::as_ref).any(|a| !a.is_ascii()) {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(needs("SMTPUTF8"));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !bytes.is_ascii() {
            if !info.supports_feature(Extension::EightBitMime) {
                return Err(needs("8BITMIME"));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        Ok(params)
    }

    /// Await one step within the timeout and classify its failure.
    async fn step<T>(
        &self,
        stage: Stage,
        step: impl std::future::Future<Output = Result<T, SmtpError>>,
    ) -> Result<T, SendError> {
        let failed = |reason: String| match stage {
            Stage::EndOfData => SendError::Unknown {
                relay: self.name(),
                reason,
            },
            _ => SendError::Broken {
                relay: self.name(),
                stage: stage.clone(),
                reason,
            },
        };
        match tokio::time::timeout(self.timeout, step).await {
            Ok(Ok(value)) => Ok(value),
            Err(_) => Err(failed(format!("no reply within {:?}", self.timeout))),
            Ok(Err(e)) => match e.status() {
                Some(code) => Err(SendError::Reply {
                    relay: self.name(),
                    stage: stage.clone(),
                    code: u16::from(code),
                    reply: e.to_string(),
                }),
                None => Err(failed(e.to_string())),
            },
        }
    }
}

fn credentials(cfg: &NotifierConfig) -> Result<Option<Credentials>, SetupError> {
    let (Some(user), Some(file)) = (&cfg.username, &cfg.password_file) else {
        return Ok(None);
    };
    let password = std::fs::read_to_string(file).map_err(|source| SetupError::Password {
        path: file.display().to_string(),
        source,
    })?;
    Ok(Some(Credentials::new(
        user.clone(),
        password.trim_end_matches(['\r', '\n']).to_string(),
    )))
}

/// A reply's code and first line, for logs.
fn first_line(r: &Response) -> String {
    format!("{} {}", r.code(), r.first_line().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_send_errors_are_classed_by_stage_and_reply() {
        let reply = |stage: Stage, code: u16| SendError::Reply {
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
        let broken = SendError::Broken {
            relay: "r".into(),
            stage: Stage::Data,
            reason: "reset".into(),
        };
        assert!(!broken.is_permanent() && broken.outcome_known());
        let unknown = SendError::Unknown {
            relay: "r".into(),
            reason: "reset".into(),
        };
        assert!(!unknown.is_permanent() && !unknown.outcome_known());
    }
}
