//! The crate's one error type: LDAP failures, each naming the operation,
//! the DN and slapd's result code, and sorted into transient (retry),
//! set-up (TLS that cannot work: stop) and permanent (dead letter); a DN
//! that does not parse; and the failures of a migration (`mailfleet
//! account migrate`).

use std::{fmt, path::PathBuf};

use mailfleet_password::PasswordError;
use mailfleet_runtime::RuntimeError;

use crate::dn::Dn;

/// An error from outside this crate (the storage layout, the mailer the
/// binary wires into a migration), kept whole as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An LDAP operation, as the errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Connect,
    Bind,
    Search,
    Add,
    Modify,
    Delete,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Connect => "connect",
            Op::Bind => "bind",
            Op::Search => "search",
            Op::Add => "add",
            Op::Modify => "modify",
            Op::Delete => "delete",
        })
    }
}

/// LDAP result codes this crate reacts to (RFC 4511 appendix A).
pub mod rc {
    pub const NO_SUCH_ATTRIBUTE: u32 = 16;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const BUSY: u32 = 51;
    pub const UNAVAILABLE: u32 = 52;
    pub const NOT_ALLOWED_ON_NON_LEAF: u32 = 66;
    pub const ENTRY_ALREADY_EXISTS: u32 = 68;
}

/// What went wrong talking to slapd, parsing a DN, or migrating an
/// account.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// slapd answered with an error result.
    #[error("ldap {op} {dn}: result {rc} {}{}", rc_name(*rc), text_part(text))]
    Result {
        op: Op,
        dn: String,
        rc: u32,
        /// slapd's diagnostic text.
        text: String,
    },
    /// No answer: connection refused, closed, broken; or a client-side
    /// failure (`source` says which).
    #[error("ldap {op} {dn}: {source}")]
    Client {
        op: Op,
        dn: String,
        #[source]
        source: Box<ldap3::LdapError>,
    },
    /// The TLS handshake with slapd failed: its certificate does not
    /// verify against what `[ldap.tls]` trusts (`UnknownIssuer`,
    /// `NotValidForName`, expired...), or the two sides agree on nothing.
    /// A set-up error ([`DirectoryError::is_setup`]): no retry fixes it.
    #[error("ldap connect {url}: TLS handshake failed: {source} (trusting {trust})")]
    Tls {
        url: String,
        /// What was trusted ([`crate::LdapConfig::trust`]).
        trust: String,
        /// rustls's reason.
        #[source]
        source: Box<rustls::Error>,
    },
    /// slapd refused StartTLS (`ldap.starttls = true`): it has no TLS set
    /// up. A set-up error, like [`DirectoryError::Tls`].
    #[error("ldap connect {url}: StartTLS refused: result {rc} {}{}", rc_name(*rc), text_part(text))]
    StartTls { url: String, rc: u32, text: String },
    /// No answer in time.
    #[error("ldap {op} {dn}: no answer within {ms} ms")]
    Timeout { op: Op, dn: String, ms: u64 },
    /// The connection was dropped after an earlier failure in this session.
    #[error("ldap {op} {dn}: the connection was dropped after an earlier failure")]
    Dropped { op: Op, dn: String },
    /// The bind password file cannot be read.
    #[error("reading the LDAP bind password from {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The entry exists but is not an account (does not match the filter).
    #[error("ldap {op} {dn}: not an account entry (does not match {filter})")]
    NotAnAccount { op: Op, dn: String, filter: String },
    /// A DN that does not parse ([`super::dn`]: RFC 4514, strictly).
    #[error("DN {dn:?}: {problem}")]
    ParseDn {
        /// The text as given.
        dn: String,
        /// What is wrong, naming the RDN and its value (one of the DN
        /// syntax variants below).
        #[source]
        problem: Box<DirectoryError>,
    },
    /// DN syntax: the empty DN.
    #[error("is empty")]
    DnEmpty,
    /// DN syntax: an empty RDN.
    #[error("RDN {n} is empty (a doubled, leading or trailing ',')")]
    RdnEmpty {
        /// 1 for the leaf.
        n: usize,
    },
    /// DN syntax: what is wrong inside one RDN.
    #[error("RDN {n} {rdn:?}: {problem}")]
    InRdn {
        /// 1 for the leaf.
        n: usize,
        rdn: String,
        #[source]
        problem: Box<DirectoryError>,
    },
    /// DN syntax: an AVA without `=`.
    #[error("{ava:?} has no '=' between attribute type and value")]
    AvaWithoutEquals { ava: String },
    /// DN syntax: an AVA starting with `=`.
    #[error("the attribute type before '=' is missing")]
    AttrMissing,
    /// DN syntax: an attribute type that is neither a name nor an OID.
    #[error("{attr:?} is not an attribute type{}", spaces_hint(*.spaced))]
    NotAnAttr {
        attr: String,
        /// It has spaces around it.
        spaced: bool,
    },
    /// DN syntax: an empty value.
    #[error("the value is empty")]
    ValueEmpty,
    /// DN syntax: a `#...` (BER, hex-encoded) value.
    #[error(
        "value {value:?}: hex-encoded (#...) values are not supported; escape a leading '#' as \\#"
    )]
    ValueHex { value: String },
    /// DN syntax: a value starting with an unescaped space.
    #[error("value {value:?} starts with an unescaped space (RFC 4514 allows no spaces around ',', '+' and '=')")]
    ValueLeadingSpace { value: String },
    /// DN syntax: a value ending with an unescaped space.
    #[error("value {value:?} ends with an unescaped space (write '\\ ')")]
    ValueTrailingSpace { value: String },
    /// DN syntax: an unescaped `=` in a value (see [`super::dn`]).
    #[error("value {value:?} holds an unescaped '=': a '.' typed where a ',' belongs? (write \\= if the value really holds '=')")]
    ValueEquals { value: String },
    /// DN syntax: an unescaped `"`, `;`, `<`, `>` or NUL in a value.
    #[error("value {value:?} holds an unescaped {c:?} (write \\{c})")]
    ValueUnescaped { value: String, c: char },
    /// DN syntax: a `\` escape that is neither a special character nor
    /// two hex digits.
    #[error("value {value:?} has a bad '\\' escape (RFC 4514: \\ then a special character or two hex digits)")]
    ValueEscape { value: String },
    /// DN syntax: `\XX` escapes that do not make UTF-8.
    #[error("value {value:?}: its \\XX escapes are not UTF-8")]
    ValueUtf8 { value: String },
    /// An `ldap.children` entry that is not one `ou=<name>` RDN.
    #[error("must be one RDN ou=<name> (an organizationalUnit)")]
    ChildNotOu,
    /// An `ldap.account_filter` not enclosed in parentheses.
    #[error("a filter is enclosed in parentheses, e.g. (objectClass=mailfleetAccount)")]
    FilterParentheses,
    /// An `ldap.account_filter` whose parentheses do not balance.
    #[error("unbalanced parentheses")]
    FilterUnbalanced,
    /// An `ldap.account_filter` ldap3's RFC 4515 parser refuses.
    #[error("not an RFC 4515 filter")]
    FilterSyntax,
    /// An account event whose password is not a `{SCHEME}value` hash.
    #[error("password_hash is not a {{SCHEME}}... hash (value not shown)")]
    PasswordHash,
    /// A DN slapd returned does not parse (so it cannot be copied).
    #[error("ldap {op}: {source}")]
    BadDn {
        op: Op,
        /// The [`DirectoryError::ParseDn`].
        #[source]
        source: Box<DirectoryError>,
    },
    /// Migration: `[ldap]` has problems (each naming key and value).
    #[error("invalid [ldap] config:\n  - {}", .0.join("\n  - "))]
    LdapConfig(Vec<String>),
    /// Migration: the configured people base is the root.
    #[error("ldap.people_base has no RDN")]
    PeopleBaseRoot,
    /// Migration: a target LDAP base outside the suffix slapd serves.
    #[error("target LDAP base {target_base}: is not within ldap.base = {base} (the suffix slapd serves)")]
    TargetOutsideBase { target_base: Dn, base: Dn },
    /// Migration: a target LDAP base whose accounts would land within the
    /// source people base (a copy into itself).
    #[error("target LDAP base {target_base}: its accounts would go to {target}, within the source {people}")]
    TargetWithinSource {
        target_base: Dn,
        target: Dn,
        people: Dn,
    },
    /// Migration: the target mail root does not exist, is no folder, or
    /// is the source's.
    #[error("--to-mail-root {}: {problem}", .root.display())]
    TargetMailRoot {
        root: PathBuf,
        problem: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// Migration: an account's Maildir (the storage layout) cannot be named.
    #[error(transparent)]
    Mailbox(BoxError),
    /// Migration: no one-time password passed the policy.
    #[error("could not draw a one-time password that passes the password policy")]
    OneTimePassword,
    /// Migration: hashing the one-time password.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Migration: a file or folder of the Maildir copy.
    #[error("{op} {}", .path.display())]
    MaildirIo {
        /// `creating`, `reading`, `syncing` or `chown`.
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Migration: copying one mail file.
    #[error("copying {} to {}", .from.display(), .to.display())]
    CopyFile {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Migration: the thread that copies the Maildir failed.
    #[error(transparent)]
    CopyThread(#[from] tokio::task::JoinError),
    /// Migration: mailing the one-time password (`--mail-token`).
    #[error("mailing the one-time password to {account} (the copy is done; run the migration again to reset and send a new one)")]
    MailToken {
        account: String,
        #[source]
        source: BoxError,
    },
    /// Migration: the Kafka producer cannot be made.
    #[error(transparent)]
    Producer(Box<RuntimeError>),
    /// Migration: producing `MigrationStarted` or `MigrationCompleted`.
    #[error("producing {event} to {topic}")]
    Produce {
        event: &'static str,
        topic: String,
        #[source]
        source: Box<RuntimeError>,
    },
}

impl DirectoryError {
    /// Whether trying again later may succeed: slapd down, slow, busy
    /// (51) or unavailable (52), and a failed bind (our own credentials or
    /// config, never the input's fault: the input must not be
    /// dead-lettered for it). Everything else is permanent.
    pub fn is_transient(&self) -> bool {
        use ldap3::LdapError as E;
        match self {
            Self::Result { op: Op::Bind, .. } => true,
            Self::Result { rc, .. } => matches!(*rc, rc::BUSY | rc::UNAVAILABLE),
            Self::Client { source, .. } => matches!(
                **source,
                E::Io { .. }
                    | E::OpSend { .. }
                    | E::ResultRecv { .. }
                    | E::IdScrubSend { .. }
                    | E::MiscSend { .. }
                    | E::Timeout { .. }
                    | E::EndOfStream
            ),
            Self::Timeout { .. } | Self::Dropped { .. } | Self::PasswordFile { .. } => true,
            // Set-up errors: see is_setup.
            Self::Tls { .. } | Self::StartTls { .. } => false,
            Self::BadDn { .. } | Self::NotAnAccount { .. } | Self::ParseDn { .. } => false,
            // What is wrong with a DN, a filter, a hash: the input's or the
            // config's, never better on a retry.
            Self::DnEmpty
            | Self::RdnEmpty { .. }
            | Self::InRdn { .. }
            | Self::AvaWithoutEquals { .. }
            | Self::AttrMissing
            | Self::NotAnAttr { .. }
            | Self::ValueEmpty
            | Self::ValueHex { .. }
            | Self::ValueLeadingSpace { .. }
            | Self::ValueTrailingSpace { .. }
            | Self::ValueEquals { .. }
            | Self::ValueUnescaped { .. }
            | Self::ValueEscape { .. }
            | Self::ValueUtf8 { .. }
            | Self::ChildNotOu
            | Self::FilterParentheses
            | Self::FilterUnbalanced
            | Self::FilterSyntax
            | Self::PasswordHash => false,
            // A migration's own failures: it runs once, from the command line.
            Self::LdapConfig(_)
            | Self::PeopleBaseRoot
            | Self::TargetOutsideBase { .. }
            | Self::TargetWithinSource { .. }
            | Self::TargetMailRoot { .. }
            | Self::Mailbox(_)
            | Self::OneTimePassword
            | Self::Password(_)
            | Self::MaildirIo { .. }
            | Self::CopyFile { .. }
            | Self::CopyThread(_)
            | Self::MailToken { .. }
            | Self::Producer(_)
            | Self::Produce { .. } => false,
        }
    }

    /// Whether the link to slapd cannot work as configured: its
    /// certificate does not verify, or it refuses StartTLS. Neither an
    /// outage (a retry gives the same answer) nor the input's fault (it
    /// must not be dead-lettered): the consumer stops, saying why.
    pub fn is_setup(&self) -> bool {
        matches!(self, Self::Tls { .. } | Self::StartTls { .. })
    }

    /// The LDAP result code, if slapd answered.
    pub fn rc(&self) -> Option<u32> {
        match self {
            Self::Result { rc, .. } => Some(*rc),
            _ => None,
        }
    }
}

/// Why an attribute type with spaces around it is refused.
fn spaces_hint(spaced: bool) -> &'static str {
    if spaced {
        " (RFC 4514 allows no spaces around ',', '+' and '=')"
    } else {
        ""
    }
}

fn text_part(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// The RFC 4511 name of a result code.
pub fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        33 => "aliasProblem",
        34 => "invalidDNSyntax",
        36 => "aliasDereferencingProblem",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        71 => "affectsMultipleDSAs",
        80 => "other",
        _ => "unknownResult",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(op: Op, rc: u32) -> DirectoryError {
        DirectoryError::Result {
            op,
            dn: "uid=a@b,ou=people,dc=mailfleet,dc=test".into(),
            rc,
            text: String::new(),
        }
    }

    #[test]
    fn errors_name_the_operation_dn_and_result_code() {
        assert_eq!(
            result(Op::Modify, 32).to_string(),
            "ldap modify uid=a@b,ou=people,dc=mailfleet,dc=test: result 32 noSuchObject"
        );
        let e = DirectoryError::Result {
            op: Op::Add,
            dn: "uid=x".into(),
            rc: 19,
            text: "mailfleetStatus: value #0 violates regex".into(),
        };
        assert_eq!(
            e.to_string(),
            "ldap add uid=x: result 19 constraintViolation (mailfleetStatus: value #0 violates regex)"
        );
    }

    #[test]
    fn down_busy_unavailable_and_bind_are_transient_the_rest_permanent() {
        for rc in [rc::BUSY, rc::UNAVAILABLE] {
            assert!(result(Op::Modify, rc).is_transient(), "{rc}");
        }
        assert!(
            result(Op::Bind, 49).is_transient(),
            "our credentials, not the input"
        );
        for rc in [19, 21, 32, 34, 50, 64, 65, 68, 80] {
            assert!(!result(Op::Modify, rc).is_transient(), "{rc}");
        }
        let refused = DirectoryError::Client {
            op: Op::Connect,
            dn: "ldap://127.0.0.1:1".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()),
        };
        assert!(refused.is_transient());
        assert!(refused
            .to_string()
            .starts_with("ldap connect ldap://127.0.0.1:1: I/O error"));
        let parse = DirectoryError::Client {
            op: Op::Search,
            dn: "x".into(),
            source: Box::new(ldap3::LdapError::FilterParsing),
        };
        assert!(!parse.is_transient());
        let slow = DirectoryError::Timeout {
            op: Op::Add,
            dn: "uid=x".into(),
            ms: 10,
        };
        assert!(slow.is_transient());
        assert_eq!(slow.to_string(), "ldap add uid=x: no answer within 10 ms");
    }

    #[test]
    fn tls_failures_are_set_up_errors_naming_the_url_and_reason() {
        let untrusted = DirectoryError::Tls {
            url: "ldaps://127.0.0.1:3636".into(),
            trust: "ldap.tls.ca_file = \"wrong-ca.pem\"".into(),
            source: Box::new(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        assert_eq!(
            untrusted.to_string(),
            "ldap connect ldaps://127.0.0.1:3636: TLS handshake failed: invalid peer certificate: UnknownIssuer (trusting ldap.tls.ca_file = \"wrong-ca.pem\")"
        );
        let refused = DirectoryError::StartTls {
            url: "ldap://127.0.0.1:3389".into(),
            rc: 52,
            text: "Could not initialize TLS".into(),
        };
        assert_eq!(
            refused.to_string(),
            "ldap connect ldap://127.0.0.1:3389: StartTLS refused: result 52 unavailable (Could not initialize TLS)"
        );
        for e in [&untrusted, &refused] {
            assert!(e.is_setup() && !e.is_transient(), "{e}");
        }
        assert!(!result(Op::Bind, 49).is_setup());
    }
}
