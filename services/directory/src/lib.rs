//! The LDAP directory effector: keeps slapd (`ops/ldap`) in step with
//! `accounts.events`, so that Postfix's recipient map and Dovecot's
//! logins see each account's status, quota, plan and password.
//!
//! Start at [`decide`] (event → [`Intent`], pure) and [`effects`] (the
//! intent against slapd → `Outcome`). The LDAP side: [`client`] (ldap3,
//! one bound connection), [`entry`] (what the entries hold), [`dn`] and
//! [`filter`] (strict parsing and escaping), [`config`] (`[ldap]`, checked
//! at load). [`migration`] is `mailfleet account migrate`: it copies an
//! account's subtree and its Maildir to another cluster. Every failure is
//! a [`DirectoryError`] ([`error`]).
//!
//! The link to slapd is `ldap://` on loopback, or TLS (`ldaps://`, or
//! StartTLS) with slapd's certificate verified ([`client`]). A certificate
//! that does not verify is a set-up error, never retried and never the
//! input's fault: the start is refused when slapd is up ([`build`]), and a
//! running consumer stops at it with nothing written ([`effects`]).
//!
//! Directory layout (`ops/ldap`): `uid=<address>,ou=people,dc=mailfleet,dc=test`
//! (inetOrgPerson + mailfleetAccount), with `ou=contacts`, `ou=calendar`
//! and `ou=tasks` below it. It binds as the least-privilege service DN.
//!
//! Outputs: `DeletionStepCompleted { DIRECTORY }` to the events topic
//! after a subtree is removed; an `AdminAlert` when a change finds no
//! entry for an account that is not being deleted.

pub mod client;
pub mod config;
pub mod decide;
pub mod dn;
mod effects;
pub mod entry;
pub mod error;
pub mod filter;
pub mod migration;

use std::future::Future;

use mailfleet_runtime::{
    Consumer, Decision, Input, Outcome, RuntimeError, Shutdown, StateError, StateView, Wiring,
};

pub use client::{Conn, DirectoryClient, Put};
pub use config::{DirectoryConfig, Layout, LdapConfig};
pub use decide::{DirectoryInput, Intent};
pub use dn::{Dn, Rdn};
pub use error::{BoxError, DirectoryError, Op};

/// The consumer's name.
pub const NAME: &str = "directory";

/// The directory consumer.
pub struct Directory {
    cfg: DirectoryConfig,
    client: DirectoryClient,
    /// Triggered when the link to slapd cannot work as configured
    /// ([`DirectoryError::is_setup`]): the consumer (and its process) stops.
    shutdown: Shutdown,
}

impl Directory {
    /// A directory consumer. Refuses, naming each problem, a config with
    /// a bad DN or filter, and a bind password file it cannot read (a
    /// missing secret is a set-up error, not something to retry forever).
    /// slapd itself may be down: the first effect connects. `shutdown` is
    /// triggered by a set-up error found later (an untrusted certificate).
    pub fn new(
        cfg: DirectoryConfig,
        ldap: LdapConfig,
        shutdown: Shutdown,
    ) -> Result<Self, Vec<String>> {
        let mut problems = cfg.problems();
        let client = match DirectoryClient::new(ldap) {
            Ok(client) => Some(client),
            Err(more) => {
                problems.extend(more);
                None
            }
        };
        if let Some(Err(e)) = client.as_ref().map(DirectoryClient::bind_password) {
            problems.push(format!("ldap.bind_password_file: {e}"));
        }
        match client {
            Some(client) if problems.is_empty() => Ok(Self {
                cfg,
                client,
                shutdown,
            }),
            _ => Err(problems),
        }
    }
}

impl Consumer for Directory {
    type Event = DirectoryInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<DirectoryInput>,
    ) -> Result<Decision, StateError> {
        decide::decide(state, &input.event)
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn effect(
        &self,
        input: &Input<DirectoryInput>,
        decision: &Decision,
    ) -> impl Future<Output = Outcome> + Send {
        self.carry_out(Self::work(input, decision))
    }
}

/// The directory effector as `mailfleet run directory` runs it, against
/// the LDAP server of `ldap`. A live run over TLS connects once first, so
/// that a certificate that does not verify stops the start, naming the URL
/// and rustls's reason; slapd down (or a failed bind) only warns, and the
/// first effect tries again, as without TLS.
pub async fn build(
    cfg: &DirectoryConfig,
    ldap: &LdapConfig,
    wiring: &Wiring,
) -> Result<Directory, RuntimeError> {
    let directory = Directory::new(cfg.clone(), ldap.clone(), wiring.shutdown.clone())
        .map_err(RuntimeError::InvalidConfig)?;
    if wiring.produce && ldap.uses_tls() {
        match directory.client.conn().await {
            Ok(_) => tracing::info!(url = %ldap.url, "ldap: TLS connection verified and bound"),
            Err(e) if e.is_setup() => return Err(RuntimeError::InvalidConfig(vec![e.to_string()])),
            Err(e) => {
                tracing::warn!(error = %e, "ldap: not connected at start; the first event tries again")
            }
        }
    }
    Ok(directory)
}
