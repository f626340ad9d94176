//! `[ldap]` (how to reach slapd and where the accounts live) and
//! `[consumers.directory]` (the consumer's topics). Every DN and filter is
//! parsed at load ([`LdapConfig::layout`]), so a malformed one stops the
//! start with its key and value, never a search that fails days later.
//! So is the TLS set-up (`ldaps://`, `starttls`, `[ldap.tls]`); the files
//! it names are read when a client is made ([`LdapConfig::client_tls`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use mailfleet_tls::ClientTls;
use rustls::{pki_types::ServerName, ClientConfig};
use serde::Deserialize;

use super::{
    dn::{Dn, Rdn},
    filter, DirectoryError,
};

/// The placeholder of [`LdapConfig::account_rdn`].
pub const ACCOUNT_PLACEHOLDER: &str = "{account}";

/// `[ldap]`: the directory the accounts live in (`ops/ldap`'s slapd).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldap://host:port`, or `ldaps://host:port` for TLS from the first
    /// byte. Plain `ldap://` sends the bind password and the password
    /// hashes in clear: use it only on loopback, or with `starttls`.
    pub url: String,
    /// With an `ldap://` URL: upgrade the connection with StartTLS before
    /// the bind, and fail rather than go on in clear. Not with `ldaps://`.
    pub starttls: bool,
    /// `[ldap.tls]`: what slapd's certificate is verified against
    /// (`ca_file`, else the system's roots), and an optional client
    /// certificate (`cert_file`, `key_file`) for a server that asks for one.
    /// Used with `ldaps://` or `starttls`; the certificate is always
    /// verified, for the URL's host.
    pub tls: ClientTls,
    /// The suffix slapd serves; every other DN here is below it.
    pub base: String,
    /// Who mailfleet binds as: the least-privilege service DN, never the
    /// rootdn (it may only touch the account trees).
    pub bind_dn: String,
    /// The file holding the bind password (mode 0600; a trailing newline
    /// is ignored). Read at each connect, never logged nor in the config.
    pub bind_password_file: PathBuf,
    /// Where the accounts are, one entry per account directly below it.
    pub people_base: String,
    /// The account entry's RDN, `{account}` being the lower-cased address
    /// (escaped); its attribute is `uid` or `mail`, both of which hold it.
    pub account_rdn: String,
    /// The entries created below each account (`ou=...`
    /// organizationalUnits that hold its contacts, calendar and tasks).
    pub children: Vec<String>,
    /// What an account entry matches (checked before a migration copies it).
    pub account_filter: String,
    /// Connecting (TCP and bind) gives up after this long, ms.
    pub connect_timeout_ms: u64,
    /// One operation gives up after this long, ms.
    pub timeout_ms: u64,
}

impl Default for LdapConfig {
    fn default() -> Self {
        Self {
            url: "ldap://127.0.0.1:3389".into(),
            starttls: false,
            tls: ClientTls::default(),
            base: "dc=mailfleet,dc=test".into(),
            bind_dn: "cn=mailfleet,ou=services,dc=mailfleet,dc=test".into(),
            bind_password_file: "run/ldap/secrets/mailfleet.password".into(),
            people_base: "ou=people,dc=mailfleet,dc=test".into(),
            account_rdn: "uid={account}".into(),
            children: vec![
                "ou=contacts".into(),
                "ou=calendar".into(),
                "ou=tasks".into(),
            ],
            account_filter: "(&(objectClass=inetOrgPerson)(objectClass=mailfleetAccount))".into(),
            connect_timeout_ms: 3_000,
            timeout_ms: 10_000,
        }
    }
}

/// The DNs of [`LdapConfig`], parsed and checked.
#[derive(Debug, Clone)]
pub struct Layout {
    pub base: Dn,
    pub bind_dn: Dn,
    pub people: Dn,
    /// `uid` or `mail`.
    pub account_attr: String,
    pub children: Vec<Rdn>,
    pub account_filter: String,
}

/// The longest timeout allowed, ms.
const MAX_TIMEOUT_MS: u64 = 600_000;

impl LdapConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        self.layout().err().unwrap_or_default()
    }

    /// The checked layout, or every problem (each naming key and value).
    pub fn layout(&self) -> Result<Layout, Vec<String>> {
        let mut out = Vec::new();
        self.check_url(&mut out);
        for (key, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if ms == 0 || ms > MAX_TIMEOUT_MS {
                out.push(format!("ldap.{key} = {ms}: must be 1..={MAX_TIMEOUT_MS}"));
            }
        }
        if self.bind_password_file.as_os_str().is_empty() {
            out.push("ldap.bind_password_file is empty".into());
        }
        let mut dn = |key: &str, text: &str| match Dn::parse_or_problem(text) {
            Ok(dn) => check_dc_labels(key, text, &dn, &mut out).then_some(dn),
            Err(problem) => {
                out.push(format!("ldap.{key} = {text:?}: {problem}"));
                None
            }
        };
        let base = dn("base", &self.base);
        let bind_dn = dn("bind_dn", &self.bind_dn);
        let people = dn("people_base", &self.people_base);
        let children = self.children(&mut out);
        let account_attr = self.account_attr(&mut out);
        if let Err(e) = filter::check(&self.account_filter) {
            out.push(format!(
                "ldap.account_filter = {:?}: {e}",
                self.account_filter
            ));
        }
        if let (Some(base), Some(people)) = (&base, &people) {
            if !people.is_below(base) {
                out.push(format!(
                    "ldap.people_base = {:?}: is not below ldap.base = {:?}",
                    self.people_base, self.base
                ));
            }
        }
        if let (Some(base), Some(bind), Some(people)) = (&base, &bind_dn, &people) {
            self.check_bind_dn(base, bind, people, &mut out);
        }
        match (base, bind_dn, people, account_attr) {
            (Some(base), Some(bind_dn), Some(people), Some(account_attr)) if out.is_empty() => {
                Ok(Layout {
                    base,
                    bind_dn,
                    people,
                    account_attr,
                    children,
                    account_filter: self.account_filter.clone(),
                })
            }
            _ => Err(out),
        }
    }

    /// Connecting gives up after this.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// One operation gives up after this.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Whether the connection is TLS: `ldaps://`, or `ldap://` with StartTLS.
    pub fn uses_tls(&self) -> bool {
        self.starttls || self.url.starts_with("ldaps://")
    }

    /// The rustls config of `[ldap.tls]` (its files read now, so that a
    /// missing or bad one stops the start naming it), when the connection
    /// is TLS; `None` for plain `ldap://`.
    pub fn client_tls(&self) -> Result<Option<Arc<ClientConfig>>, String> {
        if !self.uses_tls() {
            return Ok(None);
        }
        self.tls
            .config()
            .map(Some)
            .map_err(|e| format!("ldap.tls: {e}"))
    }

    /// What slapd's certificate is verified against, for error messages.
    pub fn trust(&self) -> String {
        match &self.tls.ca_file {
            Some(ca) => format!("ldap.tls.ca_file = {:?}", ca.display().to_string()),
            None => "the system's roots: ldap.tls.ca_file is unset".into(),
        }
    }

    fn check_url(&self, out: &mut Vec<String>) {
        let url = &self.url;
        let authority = url
            .strip_prefix("ldap://")
            .or_else(|| url.strip_prefix("ldaps://"))
            .map(|rest| rest.strip_suffix('/').unwrap_or(rest))
            .filter(|host| !host.is_empty() && !host.contains(['/', '?']));
        let Some(authority) = authority else {
            out.push(format!(
                "ldap.url = {url:?}: must be ldap://host:port or ldaps://host:port"
            ));
            return;
        };
        if self.starttls && url.starts_with("ldaps://") {
            out.push(format!(
                "ldap.starttls = true with ldap.url = {url:?}: ldaps:// is TLS from the start; StartTLS upgrades an ldap:// connection (drop starttls, or use ldap://)"
            ));
        }
        if self.uses_tls() {
            // The name the certificate must carry, as ldap3 gives it to rustls
            // (a bracketed IPv6 address is not one).
            let host = host_of(authority);
            if ServerName::try_from(host).is_err() {
                out.push(format!(
                    "ldap.url = {url:?}: {host:?} is not a host name or IPv4 address to verify slapd's certificate against"
                ));
            }
        } else if self.tls != ClientTls::default() {
            out.push(format!(
                "ldap.tls is set, but ldap.url = {url:?} without ldap.starttls = true is not TLS: use ldaps://, or set starttls = true"
            ));
        }
    }

    fn check_bind_dn(&self, base: &Dn, bind: &Dn, people: &Dn, out: &mut Vec<String>) {
        // ops/ldap's (and Debian's) rootdn: it bypasses every ACL.
        let rootdn = base.child(Rdn::single("cn", "admin"));
        if *bind == rootdn {
            out.push(format!(
                "ldap.bind_dn = {:?}: is the rootdn; bind as the least-privilege service DN (cn=mailfleet,ou=services,{})",
                self.bind_dn, self.base
            ));
        } else if bind.is_within(people) {
            out.push(format!(
                "ldap.bind_dn = {:?}: is an account below ldap.people_base, not a service DN",
                self.bind_dn
            ));
        }
    }

    fn children(&self, out: &mut Vec<String>) -> Vec<Rdn> {
        let mut rdns: Vec<Rdn> = Vec::new();
        for text in &self.children {
            let parsed = Dn::parse_or_problem(text).and_then(|dn| {
                match (dn.rdns(), dn.rdns().first().and_then(Rdn::only)) {
                    ([rdn], Some(ava)) if ava.attr.eq_ignore_ascii_case("ou") => Ok(rdn.clone()),
                    _ => Err(DirectoryError::ChildNotOu),
                }
            });
            match parsed {
                Ok(rdn) if rdns.contains(&rdn) => {
                    out.push(format!("ldap.children: {text:?} is listed twice"))
                }
                Ok(rdn) => rdns.push(rdn),
                Err(problem) => out.push(format!("ldap.children: {text:?}: {problem}")),
            }
        }
        rdns
    }

    fn account_attr(&self, out: &mut Vec<String>) -> Option<String> {
        let text = &self.account_rdn;
        let attr = text
            .strip_suffix(&format!("={ACCOUNT_PLACEHOLDER}"))
            .filter(|attr| ["uid", "mail"].iter().any(|a| attr.eq_ignore_ascii_case(a)));
        if attr.is_none() {
            out.push(format!(
                "ldap.account_rdn = {text:?}: must be uid={ACCOUNT_PLACEHOLDER} or mail={ACCOUNT_PLACEHOLDER}"
            ));
        }
        attr.map(str::to_ascii_lowercase)
    }
}

/// The host of `host[:port]`.
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A `dc` holds one domain label: `dc=mailfleet.test` is a `.` typed for
/// `,dc=` (a valid DN that names an entry no one made).
fn check_dc_labels(key: &str, text: &str, dn: &Dn, out: &mut Vec<String>) -> bool {
    let dotted = dn
        .rdns()
        .iter()
        .flat_map(|r| &r.0)
        .find(|a| a.attr.eq_ignore_ascii_case("dc") && a.value.contains('.'));
    if let Some(ava) = dotted {
        out.push(format!(
            "ldap.{key} = {text:?}: dc={} holds a '.': a dc is one domain label ('.' typed where ',dc=' belongs?)",
            ava.value
        ));
    }
    dotted.is_none()
}

impl Layout {
    /// The account's entry below `people` (the configured people base, or
    /// a migration's target).
    pub fn account_dn_in(&self, people: &Dn, account: &str) -> Dn {
        people.child(Rdn::single(&self.account_attr, account.to_lowercase()))
    }

    /// The account's entry.
    pub fn account_dn(&self, account: &str) -> Dn {
        self.account_dn_in(&self.people, account)
    }

    /// The people base a migration copies to: the configured people base's
    /// own RDN (`ou=people`) below `target_base`. Refused: a target outside
    /// `base` (slapd serves nothing there), or one within the source people
    /// base (a copy into itself).
    pub fn target_people(&self, target_base: &Dn) -> Result<Dn, DirectoryError> {
        let Some(people_rdn) = self.people.rdns().first() else {
            return Err(DirectoryError::PeopleBaseRoot);
        };
        if !target_base.is_within(&self.base) {
            return Err(DirectoryError::TargetOutsideBase {
                target_base: target_base.clone(),
                base: self.base.clone(),
            });
        }
        let target = target_base.child(people_rdn.clone());
        if target.is_within(&self.people) {
            return Err(DirectoryError::TargetWithinSource {
                target_base: target_base.clone(),
                target,
                people: self.people.clone(),
            });
        }
        Ok(target)
    }

    /// `(&<account_filter>(<attr>=<account>))`, the account escaped.
    pub fn account_search_filter(&self, account: &str) -> String {
        format!(
            "(&{}{})",
            self.account_filter,
            filter::equals(&self.account_attr, &account.to_lowercase())
        )
    }
}

/// `[consumers.directory]`: the LDAP directory effector's topics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// Where `DeletionStepCompleted` (and a migration's events) go; also
    /// the topic this consumer reads.
    pub events_topic: String,
    /// Where an alert goes when an account's entry is missing.
    pub alerts_topic: String,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            events_topic: "accounts.events".into(),
            alerts_topic: "admin.alerts".into(),
        }
    }
}

impl DirectoryConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        [
            ("events_topic", &self.events_topic),
            ("alerts_topic", &self.alerts_topic),
        ]
        .into_iter()
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(k, v)| format!("consumers.directory.{k} = {v:?}: is empty"))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(change: impl FnOnce(&mut LdapConfig)) -> String {
        let mut cfg = LdapConfig::default();
        change(&mut cfg);
        cfg.problems().join("\n")
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(LdapConfig::default().problems(), Vec::<String>::new());
        assert_eq!(DirectoryConfig::default().problems(), Vec::<String>::new());
        let layout = LdapConfig::default().layout().unwrap();
        assert_eq!(
            layout.account_dn("A,b@X.test").to_string(),
            "uid=a\\,b@x.test,ou=people,dc=mailfleet,dc=test"
        );
        assert_eq!(layout.children.len(), 3);
    }

    #[test]
    fn a_dot_for_a_comma_in_any_dn_is_refused_naming_key_and_value() {
        for (key, bad) in [
            ("people_base", "uid=x.ou=people,dc=mailfleet,dc=test"),
            ("people_base", "ou=people.dc=mailfleet,dc=test"),
            ("bind_dn", "cn=mailfleet.ou=services,dc=mailfleet,dc=test"),
            ("base", "dc=mailfleet.dc=test"),
            ("base", "dc=mailfleet.test"),
            ("people_base", "ou=people,dc=mailfleet.test"),
        ] {
            let p = problems_of(|c| match key {
                "people_base" => c.people_base = bad.into(),
                "bind_dn" => c.bind_dn = bad.into(),
                _ => c.base = bad.into(),
            });
            assert!(p.contains(&format!("ldap.{key} = {bad:?}")), "{bad}: {p}");
        }
    }

    #[test]
    fn structure_is_checked() {
        let p = problems_of(|c| c.people_base = "ou=people,dc=other,dc=test".into());
        assert!(p.contains("is not below ldap.base"), "{p}");
        let p = problems_of(|c| c.bind_dn = "cn=admin,dc=mailfleet,dc=test".into());
        assert!(p.contains("is the rootdn"), "{p}");
        let p = problems_of(|c| c.bind_dn = "uid=x,ou=people,dc=mailfleet,dc=test".into());
        assert!(p.contains("not a service DN"), "{p}");
        let p = problems_of(|c| c.account_rdn = "cn={account}".into());
        assert!(p.contains("ldap.account_rdn = \"cn={account}\""), "{p}");
        let p = problems_of(|c| {
            c.children = vec![
                "ou=contacts".into(),
                "ou=Contacts".into(),
                "cn=x".into(),
                "ou=a,ou=b".into(),
            ]
        });
        assert!(p.contains("\"ou=Contacts\" is listed twice"), "{p}");
        assert!(p.contains("\"cn=x\": must be one RDN"), "{p}");
        assert!(p.contains("\"ou=a,ou=b\": must be one RDN"), "{p}");
        let p = problems_of(|c| c.account_filter = "objectClass=x".into());
        assert!(p.contains("ldap.account_filter = \"objectClass=x\""), "{p}");
        let p = problems_of(|c| c.url = "127.0.0.1:3389".into());
        assert!(p.contains("ldap.url = \"127.0.0.1:3389\""), "{p}");
        let p = problems_of(|c| c.timeout_ms = 0);
        assert!(p.contains("ldap.timeout_ms = 0"), "{p}");
    }

    #[test]
    fn tls_settings_are_checked_naming_the_bad_value() {
        let ok = |change: fn(&mut LdapConfig)| assert_eq!(problems_of(change), "");
        ok(|c| c.url = "ldaps://127.0.0.1:3636".into());
        ok(|c| c.url = "ldaps://ldap.example.org".into());
        ok(|c| c.starttls = true);
        ok(|c| {
            c.url = "ldaps://localhost:3636/".into();
            c.tls.ca_file = Some("run/certs/ca.pem".into());
        });

        let p = problems_of(|c| {
            c.url = "ldaps://127.0.0.1:3636".into();
            c.starttls = true;
        });
        assert!(
            p.contains("ldap.starttls = true with ldap.url = \"ldaps://127.0.0.1:3636\""),
            "{p}"
        );
        let p = problems_of(|c| c.tls.ca_file = Some("ca.pem".into()));
        assert!(
            p.contains("ldap.tls is set, but ldap.url = \"ldap://127.0.0.1:3389\""),
            "{p}"
        );
        let p = problems_of(|c| c.url = "ldaps://[::1]:3636".into());
        assert!(p.contains("\"[::1]\" is not a host name"), "{p}");
        let p = problems_of(|c| c.url = "ldapi://%2Frun%2Fslapd".into());
        assert!(
            p.contains("must be ldap://host:port or ldaps://host:port"),
            "{p}"
        );
        let p = problems_of(|c| c.url = "ldaps://".into());
        assert!(p.contains("ldap.url = \"ldaps://\""), "{p}");
    }

    #[test]
    fn tls_files_are_read_when_a_client_is_made_naming_them() {
        let plain = LdapConfig {
            tls: ClientTls::default(),
            ..LdapConfig::default()
        };
        assert!(plain.client_tls().unwrap().is_none(), "no TLS, no files");
        let missing = LdapConfig {
            url: "ldaps://127.0.0.1:3636".into(),
            tls: ClientTls {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..ClientTls::default()
            },
            ..LdapConfig::default()
        };
        let e = missing.client_tls().unwrap_err();
        assert!(
            e.starts_with("ldap.tls: /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
        assert_eq!(
            missing.trust(),
            "ldap.tls.ca_file = \"/nonexistent/ca.pem\""
        );
    }

    #[test]
    fn ldap_tls_parses_as_a_table_and_refuses_unknown_keys() {
        let cfg: LdapConfig = toml::from_str(
            "url = \"ldap://127.0.0.1:3389\"\nstarttls = true\n[tls]\nca_file = \"ca.pem\"\n",
        )
        .unwrap();
        assert!(cfg.starttls && cfg.uses_tls());
        assert_eq!(cfg.tls.ca_file, Some(PathBuf::from("ca.pem")));
        let e = toml::from_str::<LdapConfig>("[tls]\nno_tls_verify = true\n").unwrap_err();
        assert!(e.to_string().contains("no_tls_verify"), "{e}");
    }

    #[test]
    fn migration_targets_are_checked() {
        let layout = LdapConfig::default().layout().unwrap();
        let dn = |t: &str| Dn::parse(t).unwrap();
        assert_eq!(
            layout
                .target_people(&dn("ou=paid,dc=mailfleet,dc=test"))
                .unwrap()
                .to_string(),
            "ou=people,ou=paid,dc=mailfleet,dc=test"
        );
        let e = layout
            .target_people(&dn("ou=paid,dc=elsewhere,dc=test"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not within ldap.base"), "{e}");
        let e = layout
            .target_people(&dn("dc=mailfleet,dc=test"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("within the source"), "{e}");
        let e = layout
            .target_people(&dn("ou=x,ou=people,dc=mailfleet,dc=test"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("within the source"), "{e}");
    }

    #[test]
    fn the_account_filter_escapes_the_account() {
        let layout = LdapConfig::default().layout().unwrap();
        assert_eq!(
            layout.account_search_filter("A*)(uid=*"),
            "(&(&(objectClass=inetOrgPerson)(objectClass=mailfleetAccount))(uid=a\\2a\\29\\28uid=\\2a))"
        );
    }
}
