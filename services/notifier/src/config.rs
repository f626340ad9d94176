//! `[consumers.notifier]`: the relay, the addresses, the templates and the
//! sent-log. Every address is parsed at load, so a typo is an error naming
//! its key, not a dead letter per notice.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use lettre::{message::Mailbox, Address};
use mailfleet_tls::ClientTls;
use serde::Deserialize;

use super::{error::NotifierError, templates::Templates};

/// `[consumers.notifier]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierConfig {
    /// The SMTP relay's host name or IP address. With TLS, the relay's
    /// certificate must name it.
    pub relay_host: String,
    /// The relay's port.
    pub relay_port: u16,
    /// How the link to the relay is protected; see [`RelaySecurity`].
    /// Anything but `none` when `username` is set.
    pub relay_security: RelaySecurity,
    /// `[consumers.notifier.tls]`: what the client trusts (`ca_file`,
    /// default the system's roots) and shows (`cert_file`, `key_file`) when
    /// `relay_security` is `starttls` or `smtps`.
    pub tls: Option<ClientTls>,
    /// The local IP address to connect from, e.g. one in Postfix's
    /// `mynetworks`, so that notices skip the policy (greylisting) check;
    /// unset: the system picks.
    pub source_address: Option<String>,
    /// The name this client gives in EHLO.
    pub helo_name: String,
    /// Seconds allowed for the connection and for each SMTP reply.
    pub timeout_s: u64,
    /// SMTP AUTH user (PLAIN or LOGIN); unset: no AUTH (a loopback relay
    /// needs none). Only over TLS: refused with `relay_security = "none"`,
    /// which would send the password in the clear.
    pub username: Option<String>,
    /// A file holding the AUTH password (never the config itself); needed
    /// with `username`.
    pub password_file: Option<PathBuf>,
    /// The `From:` of every notice: `Name <address>` or `address`.
    pub from: String,
    /// The envelope sender (`MAIL FROM`). Empty: the null reverse-path
    /// `<>`, as RFC 3834 asks of automatic mail, so that no bounce or
    /// automatic reply to a notice can start a mail loop.
    pub return_path: String,
    /// Who receives admin alerts; empty: alerts are not mailed.
    pub admins: Vec<String>,
    /// The least severe alert that is mailed: `info`, `warning` or `critical`.
    pub min_alert_severity: Severity,
    /// A folder of `<template>.txt` files that replace or add to the
    /// built-in templates (`services/notifier/templates/`).
    pub templates_dir: Option<PathBuf>,
    /// Where the sent-log keeps one marker per event id; unset:
    /// `<runtime.data_dir>/notifier-sent`, beside (not inside) the
    /// consumer's state, so that resetting the state keeps it. A fleet of
    /// notifiers must share it.
    pub sent_log_dir: Option<PathBuf>,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            relay_host: "127.0.0.1".into(),
            relay_port: 2525,
            relay_security: RelaySecurity::None,
            tls: None,
            source_address: None,
            helo_name: "localhost".into(),
            timeout_s: 30,
            username: None,
            password_file: None,
            from: "mailfleet <postmaster@example.test>".into(),
            return_path: String::new(),
            admins: vec!["postmaster@example.test".into()],
            min_alert_severity: Severity::Warning,
            templates_dir: None,
            sent_log_dir: None,
        }
    }
}

/// `relay_security`: how the notifier protects its SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelaySecurity {
    /// Plain SMTP: only for a relay on loopback or a trusted network, and
    /// never with AUTH.
    #[default]
    None,
    /// Plain connect, then STARTTLS (RFC 3207) before anything else; a
    /// relay that does not offer it, or whose certificate does not verify,
    /// gets nothing (ports 25 and 587).
    StartTls,
    /// TLS from the first byte (RFC 8314 implicit TLS, port 465; Postfix's
    /// `smtpd_tls_wrappermode`).
    Smtps,
}

/// Alert severities, least to most urgent (the order is the threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[serde(alias = "INFO")]
    Info,
    #[serde(alias = "WARNING")]
    Warning,
    #[serde(alias = "CRITICAL")]
    Critical,
}

/// The config's addresses, parsed.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub from: Mailbox,
    /// `None`: the null reverse-path.
    pub return_path: Option<Address>,
    pub admins: Vec<Mailbox>,
}

/// Longest accepted `timeout_s`: an hour is already far past any relay's own.
const MAX_TIMEOUT_S: u64 = 3600;

impl NotifierConfig {
    /// The sent-log folder, given the runtime's data folder.
    pub fn sent_log_dir(&self, data_dir: &Path) -> PathBuf {
        self.sent_log_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("notifier-sent"))
    }

    /// The SMTP timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    /// The source address, parsed.
    pub fn source_ip(&self) -> Result<Option<IpAddr>, NotifierError> {
        self.source_address
            .as_deref()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|source| NotifierError::SourceAddress {
                        value: s.to_string(),
                        source,
                    })
            })
            .transpose()
    }

    /// Parse `from`, `return_path` and `admins`, naming every bad one.
    pub fn addresses(&self) -> Result<Addresses, Vec<String>> {
        let mut bad = Vec::new();
        let from = mailbox(&mut bad, "from", &self.from);
        let return_path = if self.return_path.is_empty() {
            None
        } else {
            match self.return_path.parse::<Address>() {
                Ok(a) => Some(a),
                Err(e) => {
                    let value = &self.return_path;
                    bad.push(format!("{} = {value:?}: {e}", key("return_path")));
                    None
                }
            }
        };
        let admins: Vec<Option<Mailbox>> = self
            .admins
            .iter()
            .enumerate()
            .map(|(i, a)| mailbox(&mut bad, &format!("admins[{i}]"), a))
            .collect();
        match from {
            Some(from) if bad.is_empty() => Ok(Addresses {
                from,
                return_path,
                admins: admins.into_iter().flatten().collect(),
            }),
            _ => Err(bad),
        }
    }

    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.addresses().err().unwrap_or_default();
        if self.relay_host.trim().is_empty() {
            out.push(format!("{} is empty", key("relay_host")));
        }
        if self.relay_port == 0 {
            out.push(format!("{} = 0: must be a port number", key("relay_port")));
        }
        if let Err(e) = self.source_ip() {
            out.push(e.to_string());
        }
        if self.helo_name.is_empty() || self.helo_name.contains(char::is_whitespace) {
            out.push(format!(
                "{} = {:?}: must be one word (a host name)",
                key("helo_name"),
                self.helo_name
            ));
        }
        if self.timeout_s == 0 || self.timeout_s > MAX_TIMEOUT_S {
            out.push(format!(
                "{} = {}: must be 1..={MAX_TIMEOUT_S}",
                key("timeout_s"),
                self.timeout_s
            ));
        }
        out.extend(self.auth_problems());
        out.extend(self.tls_problems());
        if let Some(dir) = &self.templates_dir {
            if let Err(e) = Templates::load(Some(dir)) {
                out.push(format!("{}: {e}", key("templates_dir")));
            }
        }
        if self
            .sent_log_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            out.push(format!("{} is empty", key("sent_log_dir")));
        }
        out
    }

    fn auth_problems(&self) -> Vec<String> {
        match (&self.username, &self.password_file) {
            (None, None) => vec![],
            (Some(_), Some(file)) if file.is_file() => vec![],
            (Some(_), Some(file)) => vec![format!(
                "{} = {:?}: no such file",
                key("password_file"),
                file.display().to_string()
            )],
            (Some(_), None) => vec![format!(
                "{} is set but {} is not",
                key("username"),
                key("password_file")
            )],
            (None, Some(_)) => vec![format!(
                "{} is set but {} is not",
                key("password_file"),
                key("username")
            )],
        }
    }
}

impl NotifierConfig {
    /// AUTH only over TLS; a `[tls]` table only where it is used.
    fn tls_problems(&self) -> Vec<String> {
        if self.relay_security != RelaySecurity::None {
            return vec![];
        }
        let security = format!("{} = \"none\"", key("relay_security"));
        let mut out = Vec::new();
        if self.username.is_some() {
            out.push(format!(
                "{} is set but {security}: SMTP AUTH would send the password in the clear; \
                 set relay_security = \"starttls\" or \"smtps\"",
                key("username")
            ));
        }
        if self.tls.is_some() {
            out.push(format!(
                "[consumers.notifier.tls] is set but {security}: it would not be used; \
                 set relay_security = \"starttls\" or \"smtps\""
            ));
        }
        out
    }
}

fn key(k: &str) -> String {
    format!("consumers.notifier.{k}")
}

fn mailbox(bad: &mut Vec<String>, name: &str, value: &str) -> Option<Mailbox> {
    match value.parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            bad.push(format!(
                "{} = {value:?}: not a mail address ({e})",
                key(name)
            ));
            None
        }
    }
}
