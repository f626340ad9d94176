//! `mailfleet account migrate`: copy an account to a paid cluster. The
//! mails (the Maildir, without Dovecot's index, cache and uid list, so
//! the target rebuilds them), and the LDAP entry with its contacts,
//! calendar and tasks; the copy's password is a fresh random one, printed
//! once (only its `{ARGON2}` hash is stored). `MigrationStarted` and
//! `MigrationCompleted` go to the accounts topic, keyed by the account.
//!
//! The source stays as it is (moving users off it is another step). A
//! repeated run converges: files already copied are kept, entries already
//! copied are replaced, and the password is reset again.
//!
//! Start at [`Migration::check`], which refuses what cannot work before
//! anything is recorded, then [`Checked::run`]. The directory half is in
//! `ldap.rs`, the mail half in `maildir.rs`. What this crate does not own
//! the binary wires in: where an account's Maildir is ([`Setup::mailbox`],
//! the storage writer's layout) and how the password is mailed
//! ([`TokenMailer`], the notifier's mailer).

mod ldap;
mod maildir;

use std::{
    collections::BTreeMap,
    fs,
    future::Future,
    path::{Path, PathBuf},
};

use mailfleet_events::{
    accounts::{MigrationCompleted, MigrationStarted},
    Envelope, Event,
};
use mailfleet_password as password;
use mailfleet_runtime::{config::KafkaConfig, producer::EventProducer, time::now_ms};
use rand::{distr::Alphanumeric, Rng};

pub use ldap::Copied;
use maildir::{copy_maildir, MailCopy};

use crate::{
    client::DirectoryClient,
    config::LdapConfig,
    dn::Dn,
    error::{BoxError, DirectoryError},
};

/// One migration, as `mailfleet account migrate` asks for it.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The account (address) to migrate.
    pub account: String,
    /// The target mail root (it must exist): the mails go to
    /// `<DIR>/<domain>/<user>/Maildir`.
    pub to_mail_root: PathBuf,
    /// The target LDAP base: the account goes to
    /// `uid=<account>,ou=people,<DN>` (e.g. `ou=paid,dc=mailfleet,dc=test`).
    pub to_ldap_base: Dn,
    /// Who runs the migration, recorded in `MigrationStarted`.
    pub by: String,
}

/// What a migration works with besides the request: the config's tables
/// and the storage layout, which the binary wires in.
pub struct Setup<'a> {
    /// `[ldap]`.
    pub ldap: &'a LdapConfig,
    /// `[kafka]`, for `MigrationStarted` and `MigrationCompleted`.
    pub kafka: &'a KafkaConfig,
    /// Where those go (`consumers.directory.events_topic`).
    pub events_topic: &'a str,
    /// The source mail root (`consumers.storage.mail_root`).
    pub mail_root: &'a str,
    /// Who gets the copied files (`consumers.storage.mail_uid`, `mail_gid`).
    pub mail_owner: (Option<u32>, Option<u32>),
    /// The Maildir of an account (lower-cased) below a mail root: the
    /// storage writer's layout.
    pub mailbox: &'a (dyn Fn(&Path, &str) -> Result<PathBuf, BoxError> + Sync),
}

/// Mails the one-time password (`--mail-token`): the notifier's mailer,
/// wired in by the binary.
pub trait TokenMailer {
    /// Render `template` with `params` and send it to `to` now, with a
    /// Message-ID derived from `message_id`.
    fn send(
        &self,
        to: &str,
        template: &str,
        params: &BTreeMap<String, String>,
        message_id: &str,
    ) -> impl Future<Output = Result<(), BoxError>>;
}

/// A migration whose account, targets and `[ldap]` config were checked:
/// nothing is recorded yet.
pub struct Checked<'a> {
    setup: &'a Setup<'a>,
    request: Migration,
    /// The account, trimmed and lower-cased.
    account: String,
    source_mail: PathBuf,
    target_mail: PathBuf,
    client: DirectoryClient,
    target_people: Dn,
}

/// What the copy did.
struct Done {
    /// The one-time password: handed over once, never stored.
    token: String,
    copied: Copied,
    mail: MailCopy,
}

impl Migration {
    /// Check the Maildirs, the `[ldap]` config, the target base and that
    /// the account exists, so that an unknown account is refused before
    /// anything is recorded.
    pub async fn check<'a>(self, setup: &'a Setup<'a>) -> Result<Checked<'a>, DirectoryError> {
        let account = self.account.trim().to_lowercase();
        let source_mail = (setup.mailbox)(Path::new(setup.mail_root), &account)
            .map_err(DirectoryError::Mailbox)?;
        let target_mail = target_mailbox(&self.to_mail_root, setup, &account)?;
        let client =
            DirectoryClient::new(setup.ldap.clone()).map_err(DirectoryError::LdapConfig)?;
        let target_people = client.layout().target_people(&self.to_ldap_base)?;
        client.account_entry(&account).await?;
        Ok(Checked {
            setup,
            request: self,
            account,
            source_mail,
            target_mail,
            client,
            target_people,
        })
    }
}

impl Checked<'_> {
    /// Record `MigrationStarted`, copy the entries and the mails, hand the
    /// one-time password over (mailed by `mailer`, else printed) and record
    /// `MigrationCompleted`.
    pub async fn run<M: TokenMailer>(self, mailer: Option<&M>) -> Result<(), DirectoryError> {
        let producer = EventProducer::new(self.setup.kafka, "mailfleet-migrate")
            .map_err(|e| DirectoryError::Producer(Box::new(e)))?;
        let now = now_ms();
        let started = self.started(now);
        self.produce(&producer, "MigrationStarted", &started)
            .await?;
        let done = self.copy().await?;
        let delivery = self.hand_over(mailer, &done, &started).await?;
        let completed = self.completed(&started, now, &done, delivery)?;
        self.produce(&producer, "MigrationCompleted", &completed)
            .await
    }

    fn started(&self, now: i64) -> MigrationStarted {
        let account = &self.account;
        MigrationStarted {
            envelope: Envelope::new(format!("migrate:{account}:{now}:started"), now, "migrate"),
            account: account.clone(),
            target_mail_root: self.request.to_mail_root.display().to_string(),
            target_ldap_base: self.request.to_ldap_base.to_string(),
            by: self.request.by.clone(),
        }
    }

    /// Draw the one-time password, copy the entries with its hash, copy
    /// the Maildir, and say what was copied.
    async fn copy(&self) -> Result<Done, DirectoryError> {
        let account = &self.account;
        let token = one_time_password()?;
        let hash = password::hash(&token)?;
        let copied = self
            .client
            .copy_account(account, &self.target_people, &hash)
            .await?;
        let owner = self.setup.mail_owner;
        let (from, to) = (self.source_mail.clone(), self.target_mail.clone());
        let mail = tokio::task::spawn_blocking(move || copy_maildir(&from, &to, owner)).await??;
        println!(
            "migrated {account}: {} messages ({} bytes) {} -> {}; {} LDAP entries {} -> {}",
            mail.messages,
            mail.bytes,
            self.source_mail.display(),
            self.target_mail.display(),
            copied.entries,
            copied.source,
            copied.target
        );
        Ok(Done {
            token,
            copied,
            mail,
        })
    }

    /// Mail the one-time password, or print it: how it went out, for
    /// `MigrationCompleted`.
    async fn hand_over<M: TokenMailer>(
        &self,
        mailer: Option<&M>,
        done: &Done,
        started: &MigrationStarted,
    ) -> Result<&'static str, DirectoryError> {
        let (account, token) = (&self.account, &done.token);
        let Some(mailer) = mailer else {
            println!(
                "one-time password for {account} at {}: {token}",
                done.copied.target
            );
            println!("This is a one-time password: hand it to the user, who changes it at the first login. It is not stored (only its hash) and not shown again.");
            return Ok("printed");
        };
        let params = BTreeMap::from([
            ("account".to_string(), account.clone()),
            ("token".to_string(), token.clone()),
            ("target".to_string(), done.copied.target.to_string()),
        ]);
        mailer
            .send(
                account,
                "migration-token",
                &params,
                &started.envelope.event_id,
            )
            .await
            .map_err(|source| DirectoryError::MailToken {
                account: account.clone(),
                source,
            })?;
        println!(
            "mailed the one-time password for {account} at {} to {account}",
            done.copied.target
        );
        Ok("mailed")
    }

    fn completed(
        &self,
        started: &MigrationStarted,
        now: i64,
        done: &Done,
        delivery: &str,
    ) -> Result<MigrationCompleted, DirectoryError> {
        let account = &self.account;
        Ok(MigrationCompleted {
            envelope: Envelope {
                event_id: format!("migrate:{account}:{now}:completed"),
                event_time: now_ms(),
                ..Envelope::caused_by(&started.envelope, "migrate")
            },
            account: account.clone(),
            target_mail_root: started.target_mail_root.clone(),
            target_ldap_base: started.target_ldap_base.clone(),
            messages: done.mail.messages,
            bytes: done.mail.bytes,
            entries: done.copied.entries as i64,
            token_delivery: delivery.into(),
        })
    }

    /// Produce `event` (named `name`) to the events topic, keyed by the
    /// account.
    async fn produce<E: Event>(
        &self,
        producer: &EventProducer,
        name: &'static str,
        event: &E,
    ) -> Result<(), DirectoryError> {
        let topic = self.setup.events_topic;
        producer
            .send(topic, self.account.as_bytes(), event)
            .await
            .map_err(|source| DirectoryError::Produce {
                event: name,
                topic: topic.to_string(),
                source: Box::new(source),
            })?;
        Ok(())
    }
}

/// The account's Maildir below the target root, which must exist and not
/// be the source root.
fn target_mailbox(
    root: &Path,
    setup: &Setup<'_>,
    account: &str,
) -> Result<PathBuf, DirectoryError> {
    let refused = |problem: String, source| DirectoryError::TargetMailRoot {
        root: root.to_path_buf(),
        problem,
        source,
    };
    let canonical =
        fs::canonicalize(root).map_err(|e| refused("no such folder".into(), Some(e)))?;
    if !canonical.is_dir() {
        return Err(refused("not a folder".into(), None));
    }
    let source_root = setup.mail_root;
    if fs::canonicalize(source_root).is_ok_and(|s| s == canonical) {
        return Err(refused(
            format!("is the source mail root (consumers.storage.mail_root = {source_root:?})"),
            None,
        ));
    }
    (setup.mailbox)(root, account).map_err(DirectoryError::Mailbox)
}

/// 24 random letters and digits that pass the password policy.
fn one_time_password() -> Result<String, DirectoryError> {
    for _ in 0..100 {
        let token: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        if password::check(&token).is_ok() {
            return Ok(token);
        }
    }
    Err(DirectoryError::OneTimePassword)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_time_passwords_pass_the_policy_and_differ() {
        let (a, b) = (one_time_password().unwrap(), one_time_password().unwrap());
        assert_ne!(a, b);
        assert!(password::check(&a).is_ok() && a.len() == 24);
    }
}
