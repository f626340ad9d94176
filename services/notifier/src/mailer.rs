//! Sending over SMTP with lettre's tokio transport, one connection per
//! mail (notices are rare; a pool would only hold idle connections).
//!
//! lettre's `AsyncSmtpConnection` is driven step by step, rather than
//! through `AsyncSmtpTransport`, for two reasons: it can bind the source
//! address (Postfix trusts clients by address: `mynetworks`), and each
//! failure is known to have happened before or after the message was
//! handed over, which is what the notifier's at-most-once rule hangs on
//! ([`NotifierError::outcome_known`]).
//!
//! TLS (`relay_security`): STARTTLS right after the first EHLO, or TLS
//! from the first byte (`smtps`), in both cases before AUTH, so that the
//! password never crosses the link in the clear; the relay's certificate
//! is verified against `[consumers.notifier.tls] ca_file` and
//! `relay_host`. A relay that does not offer STARTTLS is not sent to.

use std::{collections::BTreeMap, fs, net::IpAddr, sync::Arc, time::Duration};

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, Certificate, CertificateStore, Identity, TlsParameters},
        commands::{Data, Mail, Rcpt},
        extension::{ClientId, Extension, MailBodyParameter, MailParameter},
        response::Response,
        Error as SmtpError,
    },
    Message,
};

use mailfleet_tls::{ClientTls, TlsError};

use super::{
    compose::{recipient, Composer, Letter},
    config::{NotifierConfig, RelaySecurity},
    error::NotifierError,
    templates::Templates,
};

/// Where a transaction stood when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Connect,
    StartTls,
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
            Stage::StartTls => f.write_str("STARTTLS"),
            Stage::Auth => f.write_str("AUTH"),
            Stage::MailFrom => f.write_str("MAIL FROM"),
            Stage::RcptTo(to) => write!(f, "RCPT TO:<{to}>"),
            Stage::Data => f.write_str("DATA"),
            Stage::EndOfData => f.write_str("the end of DATA"),
        }
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
    security: Security,
}

/// `relay_security` with its TLS settings.
#[derive(Clone)]
enum Security {
    None,
    StartTls(TlsParameters),
    Smtps(TlsParameters),
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Security::None => "none",
            Security::StartTls(_) => "starttls",
            Security::Smtps(_) => "smtps",
        })
    }
}

/// Templates and a relay: what sends a notice. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailer {
    composer: Arc<Composer>,
    relay: Arc<Relay>,
}

impl Mailer {
    /// Check the config, load the templates and the AUTH password.
    pub fn new(cfg: &NotifierConfig) -> Result<Mailer, NotifierError> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            return Err(NotifierError::Config(problems));
        }
        let addresses = cfg.addresses().map_err(NotifierError::Config)?;
        let templates = Templates::load(cfg.templates_dir.as_deref())?;
        let relay = Relay {
            host: cfg.relay_host.clone(),
            port: cfg.relay_port,
            source: cfg
                .source_ip()
                .map_err(|e| NotifierError::Config(vec![e.to_string()]))?,
            hello: ClientId::Domain(cfg.helo_name.clone()),
            timeout: cfg.timeout(),
            credentials: credentials(cfg)?,
            security: security(cfg)?,
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
    ) -> Result<(), NotifierError> {
        let to = [recipient(to)?];
        let letter = Letter {
            to: &to,
            template,
            seed: message_id,
            date_ms: mailfleet_runtime::time::now_ms(),
        };
        let message = self.composer.compose(&letter, params)?;
        self.deliver(&message).await.map(drop)
    }

    /// Send a composed message: one SMTP transaction to its envelope.
    /// Returns the relay's reply to the message (with its queue id).
    pub async fn deliver(&self, message: &Message) -> Result<String, NotifierError> {
        self.relay.deliver(message).await
    }
}

impl Relay {
    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn deliver(&self, message: &Message) -> Result<String, NotifierError> {
        let mut conn = self.connect().await?;
        let result = self
            .transaction(&mut conn, message.envelope(), &message.formatted())
            .await;
        // The mail's fate is settled; a failed QUIT changes nothing.
        let _ = tokio::time::timeout(self.timeout, conn.quit()).await;
        result
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, NotifierError> {
        let wrapped = match &self.security {
            Security::Smtps(tls) => Some(tls.clone()),
            Security::None | Security::StartTls(_) => None,
        };
        let connect = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            wrapped,
            self.source,
        );
        let mut conn = self.step(Stage::Connect, connect).await?;
        if let Security::StartTls(tls) = &self.security {
            if !conn.can_starttls() {
                let _ = tokio::time::timeout(self.timeout, conn.quit()).await;
                return Err(NotifierError::Broken {
                    relay: self.name(),
                    stage: Stage::StartTls,
                    reason: "the relay does not offer STARTTLS (relay_security = \"starttls\")"
                        .into(),
                });
            }
            // lettre says EHLO again over TLS, as RFC 3207 asks.
            let starttls = conn.starttls(tls.clone(), &self.hello);
            self.step(Stage::StartTls, starttls).await?;
        }
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
    ) -> Result<String, NotifierError> {
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
    ) -> Result<Vec<MailParameter>, NotifierError> {
        let mut params = Vec::new();
        let needs = |what: &str| NotifierError::Broken {
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
    ) -> Result<T, NotifierError> {
        let failed = |reason: String| match stage {
            Stage::EndOfData => NotifierError::OutcomeUnknown {
                relay: self.name(),
                reason,
            },
            _ => NotifierError::Broken {
                relay: self.name(),
                stage: stage.clone(),
                reason,
            },
        };
        match tokio::time::timeout(self.timeout, step).await {
            Ok(Ok(value)) => Ok(value),
            Err(_) => Err(failed(format!("no reply within {:?}", self.timeout))),
            Ok(Err(e)) => match e.status() {
                Some(code) => Err(NotifierError::Reply {
                    relay: self.name(),
                    stage: stage.clone(),
                    code: u16::from(code),
                    reply: e.to_string(),
                }),
                None => Err(failed(squeeze(&e.to_string()))),
            },
        }
    }
}

fn credentials(cfg: &NotifierConfig) -> Result<Option<Credentials>, NotifierError> {
    let (Some(user), Some(file)) = (&cfg.username, &cfg.password_file) else {
        return Ok(None);
    };
    let password = std::fs::read_to_string(file).map_err(|source| NotifierError::Password {
        path: file.display().to_string(),
        source,
    })?;
    Ok(Some(Credentials::new(
        user.clone(),
        password.trim_end_matches(['\r', '\n']).to_string(),
    )))
}

/// lettre's TLS settings for `relay_security`, every file read and checked
/// now.
fn security(cfg: &NotifierConfig) -> Result<Security, NotifierError> {
    let tls = cfg.tls.clone().unwrap_or_default();
    Ok(match cfg.relay_security {
        RelaySecurity::None => Security::None,
        RelaySecurity::StartTls => Security::StartTls(tls_parameters(&cfg.relay_host, &tls)?),
        RelaySecurity::Smtps => Security::Smtps(tls_parameters(&cfg.relay_host, &tls)?),
    })
}

/// lettre builds its own rustls config (it takes no `ClientConfig`), so
/// the files are first checked by `mailfleet-tls`, whose errors name the
/// file and the reason, and then given to lettre: `ca_file`'s CAs replace
/// the system's roots; the certificate must name `host`.
fn tls_parameters(host: &str, tls: &ClientTls) -> Result<TlsParameters, NotifierError> {
    tls.config()?;
    let refused = |e: SmtpError| NotifierError::TlsParameters(e.to_string());
    let mut builder = TlsParameters::builder(host.to_string());
    if let Some(ca) = &tls.ca_file {
        builder = builder.certificate_store(CertificateStore::None);
        for cert in mailfleet_tls::certificates(ca)? {
            builder = builder
                .add_root_certificate(Certificate::from_der(cert.to_vec()).map_err(refused)?);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let leaf = mailfleet_tls::certificates(cert)?.swap_remove(0);
        let key_pem = fs::read(key).map_err(|source| TlsError::Read {
            path: key.clone(),
            source,
        })?;
        // lettre 0.11 with rustls takes the certificate of `from_pem` as
        // DER, whatever its name says, and only that one: the leaf, which
        // the relay must verify without intermediates.
        builder = builder.identify_with(Identity::from_pem(&leaf, &key_pem).map_err(refused)?);
    }
    builder.build_rustls().map_err(refused)
}

/// lettre repeats itself when it wraps its own error ("Connection error:
/// Connection error: invalid peer certificate: UnknownIssuer"): once is
/// enough.
fn squeeze(text: &str) -> String {
    let mut parts: Vec<&str> = text.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

/// A reply's code and first line, for logs.
fn first_line(r: &Response) -> String {
    format!("{} {}", r.code(), r.first_line().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_error_prefixes_are_squeezed() {
        assert_eq!(
            super::squeeze(
                "Connection error: Connection error: invalid peer certificate: UnknownIssuer"
            ),
            "Connection error: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            super::squeeze("network error: reset"),
            "network error: reset"
        );
    }
}
