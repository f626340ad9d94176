//! `mailfleet account migrate`: the command line and the wiring. The
//! migration itself is `mailfleet_directory::migration`; this file hands
//! it the storage writer's Maildir layout and, with `--mail-token`, the
//! notifier's mailer.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use mailfleet_directory::{
    migration::{Migration, Setup, TokenMailer},
    BoxError, Dn,
};
use mailfleet_notifier::Mailer;
use mailfleet_storage::maildir::Maildirs;

use crate::config::Config;

/// `mailfleet account migrate <account> --to-mail-root DIR --to-ldap-base DN`.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The account (address) to migrate.
    pub account: String,
    /// The target mail root (it must exist): the mails go to
    /// <DIR>/<domain>/<user>/Maildir.
    #[arg(long, value_name = "DIR")]
    pub to_mail_root: PathBuf,
    /// The target LDAP base: the account goes to
    /// uid=<account>,ou=people,<DN> (e.g. ou=paid,dc=mailfleet,dc=test).
    #[arg(long, value_name = "DN", value_parser = parse_dn)]
    pub to_ldap_base: Dn,
    /// Mail the one-time password to the account (the `migration-token`
    /// template, through `[consumers.notifier]`'s relay) instead of
    /// printing it.
    #[arg(long)]
    pub mail_token: bool,
    /// Who runs the migration, recorded in `MigrationStarted`.
    #[arg(long, default_value = "cli")]
    pub by: String,
}

/// A DN given on the command line, strictly parsed (RFC 4514).
fn parse_dn(text: &str) -> Result<Dn, String> {
    Dn::parse(text).map_err(|e| e.to_string())
}

/// Run one migration.
pub async fn run(args: MigrateArgs, cfg: &Config) -> anyhow::Result<()> {
    let storage = &cfg.consumers.storage;
    let mailbox = |root: &Path, account: &str| -> Result<PathBuf, BoxError> {
        let maildirs = Maildirs::new(root, &storage.hostname, Default::default(), false);
        Ok(maildirs.mailbox(account)?)
    };
    let setup = Setup {
        ldap: &cfg.ldap,
        kafka: &cfg.kafka,
        events_topic: &cfg.consumers.directory.events_topic,
        mail_root: &storage.mail_root,
        mail_owner: (storage.mail_uid, storage.mail_gid),
        mailbox: &mailbox,
    };
    let migration = Migration {
        account: args.account,
        to_mail_root: args.to_mail_root,
        to_ldap_base: args.to_ldap_base,
        by: args.by,
    };
    let checked = migration.check(&setup).await?;
    // Refuse a relay config that cannot work before anything is recorded.
    let mailer = match args.mail_token {
        true => Some(ByMail(
            Mailer::new(&cfg.consumers.notifier)
                .context("--mail-token needs a valid [consumers.notifier]")?,
        )),
        false => None,
    };
    Ok(checked.run(mailer.as_ref()).await?)
}

/// The notifier's mailer, sending the one-time password.
struct ByMail(Mailer);

impl TokenMailer for ByMail {
    async fn send(
        &self,
        to: &str,
        template: &str,
        params: &BTreeMap<String, String>,
        message_id: &str,
    ) -> Result<(), BoxError> {
        Ok(self.0.send(to, template, params, message_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ldap_base_is_parsed_strictly_at_the_command_line() {
        let e = parse_dn("ou=paid.dc=mailfleet,dc=test").unwrap_err();
        assert!(e.contains("\"ou=paid.dc=mailfleet,dc=test\""), "{e}");
        assert!(parse_dn("ou=paid,dc=mailfleet,dc=test").is_ok());
    }
}
