//! `mailfleet lmtp`: the LMTP server (RFC 2033) Postfix delivers to.
//!
//! A message is acknowledged per recipient only once it is durable: the raw
//! bytes in the [`mailfleet_blob::BlobStore`] (fsynced) and that recipient's
//! `MessageReceived` acknowledged by Kafka (`acks=all`). A failure of
//! either answers `452 4.3.1` (disk) or `451 4.3.0` (Kafka), so Postfix
//! keeps the mail and retries. A connection lost during DATA announces
//! nothing. SIGTERM drains: no new connection, each transaction in DATA
//! finishes, the rest get `421 4.3.2`, within `lmtp.drain_timeout_s`
//! ([`server`]). Read [`session`] for the protocol, [`server`] for the I/O,
//! [`command::xforward`] for what Postfix says of its SMTP client.
//! [`command`], [`line`], [`data`] and [`session`] are pure over the
//! client's bytes (no Kafka, no disk): `fuzz/` builds them on their own.

pub mod client;
pub mod command;
pub mod data;
pub mod line;
mod server;
pub mod session;

use mailfleet_tls::ServerTls;
use serde::Deserialize;

pub use server::serve;
pub use session::{AcceptAll, RcptStatus, RecipientCheck};

/// `[lmtp]`: the LMTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmtpConfig {
    /// `host:port` to listen on (Postfix: `virtual_transport = lmtp:inet:127.0.0.1:2424`).
    pub listen: String,
    /// Client networks (CIDRs) that may connect; any other client gets
    /// `421 4.7.0` and is closed. Default: loopback only. List only the
    /// MTA here: a client that may connect is also believed when it sends
    /// XFORWARD (the SMTP client's address, HELO and the MTA's queue id,
    /// which rspamd scores with), as Postfix believes it only from
    /// `smtpd_authorized_xforward_hosts`. There is no second list, since
    /// nothing but the MTA has reason to connect.
    pub allow: Vec<String>,
    /// This server's name in its greeting and LHLO reply.
    pub hostname: String,
    /// Largest message accepted, bytes; larger gets `552 5.3.4`.
    pub max_message_bytes: u64,
    /// Most recipients per transaction; more get `452 4.5.3` and Postfix
    /// sends them in another transaction.
    pub max_recipients: usize,
    /// Most simultaneous connections; more are answered `421` and closed.
    pub max_connections: usize,
    /// Bad commands before the server hangs up.
    pub max_errors: u32,
    /// Seconds a connection may wait between commands (Postfix's
    /// `lmtp_*_timeout` are 300 s).
    pub idle_timeout_s: u64,
    /// Seconds the DATA phase may take in all.
    pub data_timeout_s: u64,
    /// Seconds a SIGTERM waits for the transactions in flight: one whose
    /// DATA has started is read to its end and answered per recipient;
    /// a session between transactions gets `421 4.3.2` at once. What is
    /// still running then is cut unanswered (Postfix retries it). The
    /// unit's `TimeoutStopSec=` must exceed it.
    pub drain_timeout_s: u64,
    /// How long to wait for Kafka's acknowledgement, ms, before answering
    /// `451 4.3.0` (also librdkafka's `message.timeout.ms` for this producer).
    pub ack_timeout_ms: u64,
    /// Topic the `MessageReceived` events go to.
    pub topic: String,
    /// Refuse recipients that are not accounts, or whose account is
    /// inactive, being deleted or deleted (`550 5.1.1`), from the status
    /// projection. `false` accepts every well-formed recipient (a relay
    /// that checks elsewhere, or a test bed without accounts).
    pub check_accounts: bool,
    /// The compacted topic of account statuses the check follows.
    pub status_topic: String,
    /// Let an inactive account (in its grace period) receive mail from the
    /// null sender `<>`: the deactivation notice and delivery reports.
    pub inactive_accepts_null_sender: bool,
    /// `[lmtp.tls]`: this server's certificate and key. Set, LHLO offers
    /// STARTTLS (RFC 3207) and Postfix can encrypt the link
    /// (`lmtp_tls_security_level = encrypt`); unset, STARTTLS is `502`.
    /// The files are read when the server starts: a bad one stops it,
    /// naming the file.
    pub tls: Option<ServerTls>,
    /// Refuse mail commands (MAIL, RCPT, DATA, XFORWARD) before STARTTLS
    /// with `530 5.7.0`, so that no mail or client data crosses the link in
    /// the clear even from a misconfigured MTA. Needs `[lmtp.tls]`.
    pub require_tls: bool,
}

impl Default for LmtpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2424".into(),
            allow: mailfleet_runtime::allow::loopback(),
            hostname: "localhost".into(),
            max_message_bytes: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_connections: 200,
            max_errors: 20,
            idle_timeout_s: 300,
            data_timeout_s: 600,
            drain_timeout_s: 30,
            ack_timeout_ms: 30_000,
            topic: "mail.received".into(),
            check_accounts: true,
            status_topic: "accounts.status".into(),
            inactive_accepts_null_sender: true,
            tls: None,
            require_tls: false,
        }
    }
}

impl LmtpConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            out.push(format!("lmtp.listen = {:?}: not an ip:port", self.listen));
        }
        out.extend(mailfleet_runtime::allow::AllowList::problems(
            "lmtp.allow",
            &self.allow,
        ));
        let positive = [
            ("max_message_bytes", self.max_message_bytes),
            ("max_recipients", self.max_recipients as u64),
            ("max_connections", self.max_connections as u64),
            ("max_errors", u64::from(self.max_errors)),
            ("idle_timeout_s", self.idle_timeout_s),
            ("data_timeout_s", self.data_timeout_s),
            ("drain_timeout_s", self.drain_timeout_s),
            ("ack_timeout_ms", self.ack_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                out.push(format!("lmtp.{key} = 0: must be > 0"));
            }
        }
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            out.push(format!(
                "lmtp.hostname = {:?}: must be one word",
                self.hostname
            ));
        }
        if self.topic.is_empty() {
            out.push("lmtp.topic is empty".into());
        }
        if self.check_accounts && self.status_topic.is_empty() {
            out.push("lmtp.status_topic is empty while lmtp.check_accounts = true".into());
        }
        if self.require_tls && self.tls.is_none() {
            out.push("lmtp.require_tls = true but [lmtp.tls] is not set: there is no STARTTLS to require".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_problems_name_the_key() {
        assert!(LmtpConfig::default().problems().is_empty());
        let bad = LmtpConfig {
            listen: "localhost".into(),
            max_recipients: 0,
            drain_timeout_s: 0,
            ..LmtpConfig::default()
        };
        let problems = bad.problems().join("\n");
        assert!(problems.contains("lmtp.drain_timeout_s = 0"), "{problems}");
        assert!(
            problems.contains("lmtp.listen = \"localhost\""),
            "{problems}"
        );
        assert!(problems.contains("lmtp.max_recipients = 0"), "{problems}");
    }

    #[test]
    fn tls_is_a_table_and_require_tls_needs_it() {
        let cfg: LmtpConfig = toml::from_str(
            "require_tls = true\n[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n",
        )
        .expect("parses");
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        assert_eq!(cfg.tls.map(|t| t.key_file), Some("server.key".into()));
        let bare = LmtpConfig {
            require_tls: true,
            ..LmtpConfig::default()
        };
        let problems = bare.problems().join("\n");
        assert!(
            problems.contains("lmtp.require_tls = true but [lmtp.tls] is not set"),
            "{problems}"
        );
    }
}
