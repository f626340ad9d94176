//! The LDAP client over ldap3 (async, tokio): one connection bound as the
//! service DN, opened when first needed and dropped after any transient
//! failure, so the next attempt reconnects (slapd restarted, say).
//!
//! With `ldaps://` or `ldap.starttls` the connection is TLS (rustls, the
//! config of `[ldap.tls]`) before the bind, and slapd's certificate is
//! verified for the URL's host; there is no way to turn that off. A
//! handshake that fails is [`DirectoryError::Tls`], with rustls's reason.
//!
//! Every operation has a deadline (`ldap.timeout_ms`) and every failure is
//! a [`DirectoryError`] naming the operation, the DN and the result code.
//! The composite operations ([`Conn::put`], [`Conn::delete_subtree`],
//! [`Conn::copy_subtree`]) are idempotent, so a retried effect converges.

use std::{future::Future, sync::Arc, time::Duration};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, Scope, SearchEntry};
use rustls::ClientConfig;
use tokio::sync::{Mutex, MutexGuard};

use super::{
    config::{Layout, LdapConfig},
    dn::Dn,
    entry::Attrs,
    error::{rc, DirectoryError, Op},
};

/// The directory: config, checked layout, and the connection.
pub struct DirectoryClient {
    cfg: LdapConfig,
    layout: Layout,
    /// The rustls config, when the connection is TLS.
    tls: Option<Arc<ClientConfig>>,
    conn: Mutex<Option<Ldap>>,
}

/// The connection, held for a sequence of operations.
pub struct Conn<'a> {
    slot: MutexGuard<'a, Option<Ldap>>,
    timeout: Duration,
}

/// Whether [`Conn::put`] made the entry or brought an existing one in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Added,
    Replaced,
}

impl DirectoryClient {
    /// A client for `cfg`; refuses a config with problems (each named),
    /// and TLS files it cannot use.
    pub fn new(cfg: LdapConfig) -> Result<Self, Vec<String>> {
        match (cfg.layout(), cfg.client_tls()) {
            (Ok(layout), Ok(tls)) => Ok(Self {
                cfg,
                layout,
                tls,
                conn: Mutex::new(None),
            }),
            (layout, tls) => Err(layout
                .err()
                .unwrap_or_default()
                .into_iter()
                .chain(tls.err())
                .collect()),
        }
    }

    /// The checked DNs.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The config.
    pub fn config(&self) -> &LdapConfig {
        &self.cfg
    }

    /// The connection, opened and bound if there is none.
    pub async fn conn(&self) -> Result<Conn<'_>, DirectoryError> {
        let mut slot = self.conn.lock().await;
        if slot.as_mut().is_none_or(|l| l.is_closed()) {
            *slot = Some(self.connect().await?);
        }
        Ok(Conn {
            slot,
            timeout: self.cfg.timeout(),
        })
    }

    /// Read the bind password (now, so a rotated file applies at the next
    /// connect). The file must exist; its content is never shown.
    pub fn bind_password(&self) -> Result<String, DirectoryError> {
        let path = &self.cfg.bind_password_file;
        std::fs::read_to_string(path)
            .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|source| DirectoryError::PasswordFile {
                path: path.clone(),
                source,
            })
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let password = self.bind_password()?;
        let url = &self.cfg.url;
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.cfg.connect_timeout());
        if let Some(tls) = &self.tls {
            // ldap3 ignores starttls for ldaps://; the config check refuses both.
            settings = settings
                .set_config(tls.clone())
                .set_starttls(self.cfg.starttls);
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|source| connect_error(&self.cfg, source))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "ldap connection ended");
            }
        });
        let bind_dn = self.layout.bind_dn.to_string();
        let bound = deadline(
            self.cfg.connect_timeout(),
            Op::Bind,
            &bind_dn,
            ldap.simple_bind(&bind_dn, &password),
        )
        .await?;
        checked(Op::Bind, &bind_dn, bound)?;
        tracing::debug!(%url, %bind_dn, tls = self.tls.is_some(), "ldap bound");
        Ok(ldap)
    }
}

/// A failed connect to `cfg.url` as ours: a TLS handshake that failed
/// (rustls's reason, inside ldap3's I/O error) or a refused StartTLS (the
/// only LDAP result of a connect) is a set-up error; the rest (refused,
/// reset, timed out) is a client error, transient.
fn connect_error(cfg: &LdapConfig, source: ldap3::LdapError) -> DirectoryError {
    let url = cfg.url.clone();
    match &source {
        ldap3::LdapError::Io { source: io } if cfg.uses_tls() => {
            let tls = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            if let Some(tls) = tls {
                return DirectoryError::Tls {
                    url,
                    trust: cfg.trust(),
                    source: Box::new(tls.clone()),
                };
            }
        }
        ldap3::LdapError::LdapResult { result } if cfg.starttls => {
            return DirectoryError::StartTls {
                url,
                rc: result.rc,
                text: result.text.clone(),
            };
        }
        _ => {}
    }
    DirectoryError::Client {
        op: Op::Connect,
        dn: url,
        source: Box::new(source),
    }
}

impl Conn<'_> {
    /// Add an entry.
    pub async fn add(&mut self, dn: &Dn, attrs: &Attrs) -> Result<(), DirectoryError> {
        let text = dn.to_string();
        let (timeout, ldap) = self.ldap(Op::Add, &text)?;
        let r = deadline(timeout, Op::Add, &text, ldap.add(&text, attrs.for_add())).await;
        self.settle(Op::Add, &text, r).map(drop)
    }

    /// Replace the given attributes of an entry (no values: remove it).
    pub async fn replace(&mut self, dn: &Dn, attrs: &Attrs) -> Result<(), DirectoryError> {
        let text = dn.to_string();
        let (timeout, ldap) = self.ldap(Op::Modify, &text)?;
        let r = deadline(
            timeout,
            Op::Modify,
            &text,
            ldap.modify(&text, attrs.for_replace()),
        )
        .await;
        self.settle(Op::Modify, &text, r).map(drop)
    }

    /// Delete one entry (by the DN text slapd gave, to delete exactly it).
    pub async fn delete(&mut self, dn: &str) -> Result<(), DirectoryError> {
        let (timeout, ldap) = self.ldap(Op::Delete, dn)?;
        let r = deadline(timeout, Op::Delete, dn, ldap.delete(dn)).await;
        self.settle(Op::Delete, dn, r).map(drop)
    }

    /// Search; a missing base is an error (`rc` 32).
    pub async fn search(
        &mut self,
        base: &Dn,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let text = base.to_string();
        let (timeout, ldap) = self.ldap(Op::Search, &text)?;
        let found = deadline(
            timeout,
            Op::Search,
            &text,
            ldap.search(&text, scope, filter, attrs.to_vec()),
        )
        .await;
        match found {
            Ok(Ok(ldap3::SearchResult(entries, result))) => {
                self.settle(Op::Search, &text, Ok(Ok(result)))?;
                Ok(entries.into_iter().map(SearchEntry::construct).collect())
            }
            Ok(Err(e)) => self
                .settle(Op::Search, &text, Ok(Err(e)))
                .map(|_| Vec::new()),
            Err(e) => Err(self.dropped_after(e)),
        }
    }

    /// Add the entry, or replace every attribute of an existing one
    /// (`entryAlreadyExists`, 68): a retried add converges to `attrs`.
    pub async fn put(&mut self, dn: &Dn, attrs: &Attrs) -> Result<Put, DirectoryError> {
        match self.add(dn, attrs).await {
            Ok(()) => Ok(Put::Added),
            Err(e) if e.rc() == Some(rc::ENTRY_ALREADY_EXISTS) => {
                self.replace(dn, attrs).await.map(|()| Put::Replaced)
            }
            Err(e) => Err(e),
        }
    }

    /// Delete `dn` and everything below it, deepest first. Returns how many
    /// entries this call removed; a missing entry is already gone (0).
    pub async fn delete_subtree(&mut self, dn: &Dn) -> Result<usize, DirectoryError> {
        let mut removed = 0;
        // A child added while we delete makes the parent's delete fail with
        // notAllowedOnNonLeaf (66): look again, a few times.
        for round in 1..=3 {
            let mut found = match self
                .search(dn, Scope::Subtree, "(objectClass=*)", &["1.1"])
                .await
            {
                Ok(found) => found,
                Err(e) if e.rc() == Some(rc::NO_SUCH_OBJECT) => return Ok(removed),
                Err(e) => return Err(e),
            };
            found.sort_by_key(|e| std::cmp::Reverse(depth_of(&e.dn)));
            let mut again = false;
            for entry in found {
                match self.delete(&entry.dn).await {
                    Ok(()) => removed += 1,
                    Err(e) if e.rc() == Some(rc::NO_SUCH_OBJECT) => {}
                    Err(e) if e.rc() == Some(rc::NOT_ALLOWED_ON_NON_LEAF) && round < 3 => {
                        again = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !again {
                break;
            }
        }
        Ok(removed)
    }

    /// Copy the subtree at `from` to `to` (parents first), `root` setting
    /// or overriding attributes of the copied top entry. Existing target
    /// entries are replaced, so a repeated copy converges. Returns the
    /// number of entries copied.
    pub async fn copy_subtree(
        &mut self,
        from: &Dn,
        to: &Dn,
        root: &Attrs,
    ) -> Result<usize, DirectoryError> {
        let found = self
            .search(from, Scope::Subtree, "(objectClass=*)", &["*"])
            .await?;
        let mut entries = Vec::with_capacity(found.len());
        for entry in found {
            let dn = Dn::parse(&entry.dn).map_err(|source| DirectoryError::BadDn {
                op: Op::Search,
                source: Box::new(source),
            })?;
            entries.push((dn, Attrs::from_search(entry)));
        }
        entries.sort_by_key(|(dn, _)| dn.depth());
        for (dn, mut attrs) in entries.iter().cloned() {
            let Some(target) = dn.rebase(from, to) else {
                continue;
            };
            if dn == *from {
                attrs.merge(root);
            }
            self.put(&target, &attrs).await?;
        }
        Ok(entries.len())
    }

    /// The open connection (and the deadline), or `Dropped`.
    fn ldap(&mut self, op: Op, dn: &str) -> Result<(Duration, &mut Ldap), DirectoryError> {
        let timeout = self.timeout;
        match self.slot.as_mut() {
            Some(ldap) => Ok((timeout, ldap)),
            None => Err(DirectoryError::Dropped {
                op,
                dn: dn.to_string(),
            }),
        }
    }

    /// An operation's result as ours; a transient failure drops the
    /// connection so that the next attempt opens a new one.
    fn settle(
        &mut self,
        op: Op,
        dn: &str,
        result: Result<Result<LdapResult, ldap3::LdapError>, DirectoryError>,
    ) -> Result<LdapResult, DirectoryError> {
        let outcome = result.and_then(|r| checked(op, dn, r));
        match outcome {
            Err(e) if e.is_transient() => Err(self.dropped_after(e)),
            other => other,
        }
    }

    fn dropped_after(&mut self, e: DirectoryError) -> DirectoryError {
        *self.slot = None;
        e
    }
}

/// `fut`, or a timeout error naming the operation and DN.
async fn deadline<T>(
    limit: Duration,
    op: Op,
    dn: &str,
    fut: impl Future<Output = Result<T, ldap3::LdapError>>,
) -> Result<Result<T, ldap3::LdapError>, DirectoryError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| DirectoryError::Timeout {
            op,
            dn: dn.to_string(),
            ms: limit.as_millis() as u64,
        })
}

/// A non-success result code (or a client error) as a [`DirectoryError`].
fn checked(
    op: Op,
    dn: &str,
    result: Result<LdapResult, ldap3::LdapError>,
) -> Result<LdapResult, DirectoryError> {
    match result {
        Ok(r) if r.rc == 0 => Ok(r),
        Ok(r) => Err(DirectoryError::Result {
            op,
            dn: dn.to_string(),
            rc: r.rc,
            text: r.text,
        }),
        Err(ldap3::LdapError::LdapResult { result }) => Err(DirectoryError::Result {
            op,
            dn: dn.to_string(),
            rc: result.rc,
            text: result.text,
        }),
        Err(source) => Err(DirectoryError::Client {
            op,
            dn: dn.to_string(),
            source: Box::new(source),
        }),
    }
}

/// The number of RDNs of a DN as slapd writes it (unescaped commas + 1),
/// to delete children before parents.
fn depth_of(dn: &str) -> usize {
    let (mut depth, mut escaped) = (1, false);
    for c in dn.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => depth += 1,
            _ => {}
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_only_unescaped_commas() {
        assert_eq!(depth_of("uid=a\\,b@x,ou=people,dc=t"), 3);
        assert_eq!(depth_of("ou=contacts,uid=a\\2Cb@x,ou=people,dc=t"), 4);
        assert_eq!(depth_of("uid=a\\\\,dc=t"), 2);
    }

    #[test]
    fn a_failed_handshake_is_a_tls_error_and_a_refused_connect_is_not() {
        let cfg = LdapConfig {
            url: "ldaps://127.0.0.1:3636".into(),
            ..LdapConfig::default()
        };
        let handshake = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        );
        let e = connect_error(&cfg, handshake.into());
        assert!(e.is_setup(), "{e}");
        assert!(
            e.to_string().starts_with(
                "ldap connect ldaps://127.0.0.1:3636: TLS handshake failed: invalid peer certificate: NotValidForName (trusting the system's roots"
            ),
            "{e}"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = connect_error(&cfg, refused.into());
        assert!(!e.is_setup() && e.is_transient(), "{e}");
        let plain = LdapConfig::default();
        let e = connect_error(&plain, ldap3::LdapError::EndOfStream);
        assert!(!e.is_setup() && e.is_transient(), "{e}");
        let starttls = LdapConfig {
            starttls: true,
            ..LdapConfig::default()
        };
        let refused = ldap3::LdapResult {
            rc: 52,
            matched: String::new(),
            text: "Could not initialize TLS".into(),
            refs: vec![],
            ctrls: vec![],
        };
        let e = connect_error(&starttls, ldap3::LdapError::LdapResult { result: refused });
        assert!(e.is_setup(), "{e}");
        assert!(e.to_string().contains("StartTLS refused: result 52"), "{e}");
    }

    #[test]
    fn a_client_refuses_a_bad_config_naming_the_dn() {
        let cfg = LdapConfig {
            people_base: "uid=x.ou=people,dc=mailfleet,dc=test".into(),
            ..LdapConfig::default()
        };
        let problems = DirectoryClient::new(cfg)
            .err()
            .unwrap_or_default()
            .join("\n");
        assert!(
            problems.contains("ldap.people_base = \"uid=x.ou=people,dc=mailfleet,dc=test\""),
            "{problems}"
        );
    }
}
