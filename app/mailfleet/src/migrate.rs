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

use std::{
    collections::BTreeMap,
    fs::{self, File},
    os::unix::fs::chown,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use mailfleet_accounts::{
    directory::{DirectoryClient, Dn},
    notifier::Mailer,
    password,
};
use mailfleet_events::{
    accounts::{MigrationCompleted, MigrationStarted},
    Envelope,
};
use mailfleet_runtime::producer::EventProducer;
use mailfleet_storage::maildir::Maildirs;
use rand::{distr::Alphanumeric, Rng};

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

/// What was copied from the Maildir.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct MailCopy {
    /// Files in `new/` and `cur/` of every folder.
    messages: i64,
    /// Their bytes on disk.
    bytes: i64,
}

/// Run one migration.
pub async fn run(args: MigrateArgs, cfg: &Config) -> anyhow::Result<()> {
    let account = args.account.trim().to_lowercase();
    let storage = &cfg.consumers.storage;
    let maildirs = |root: &Path| Maildirs::new(root, &storage.hostname, Default::default(), false);
    let source_mail = maildirs(Path::new(&storage.mail_root)).mailbox(&account)?;
    let target_mail = target_mailbox(&args.to_mail_root, &storage.mail_root, &account, maildirs)?;
    let client = DirectoryClient::new(cfg.ldap.clone())
        .map_err(|p| anyhow::anyhow!("invalid [ldap] config:\n  - {}", p.join("\n  - ")))?;
    let target_people = client
        .layout()
        .target_people(&args.to_ldap_base)
        .map_err(anyhow::Error::msg)?;

    // Refuse an unknown account, or a relay config that cannot work,
    // before anything is recorded.
    client.account_entry(&account).await?;
    let mailer = match args.mail_token {
        true => Some(
            Mailer::new(&cfg.consumers.notifier)
                .context("--mail-token needs a valid [consumers.notifier]")?,
        ),
        false => None,
    };

    let topic = &cfg.consumers.directory.events_topic;
    let producer = EventProducer::new(&cfg.kafka, "mailfleet-migrate")?;
    let now = now_ms()?;
    let started = MigrationStarted {
        envelope: Envelope::new(format!("migrate:{account}:{now}:started"), now, "migrate"),
        account: account.clone(),
        target_mail_root: args.to_mail_root.display().to_string(),
        target_ldap_base: args.to_ldap_base.to_string(),
        by: args.by.clone(),
    };
    producer
        .send(topic, account.as_bytes(), &started)
        .await
        .with_context(|| format!("producing MigrationStarted to {topic}"))?;

    let token = one_time_password()?;
    let hash = password::hash(&token)?;
    let copied = client.copy_account(&account, &target_people, &hash).await?;
    let owner = (storage.mail_uid, storage.mail_gid);
    let (from, to) = (source_mail.clone(), target_mail.clone());
    let mail = tokio::task::spawn_blocking(move || copy_maildir(&from, &to, owner)).await??;

    println!(
        "migrated {account}: {} messages ({} bytes) {} -> {}; {} LDAP entries {} -> {}",
        mail.messages,
        mail.bytes,
        source_mail.display(),
        target_mail.display(),
        copied.entries,
        copied.source,
        copied.target
    );
    let delivery = match &mailer {
        Some(mailer) => {
            let params = BTreeMap::from([
                ("account".to_string(), account.clone()),
                ("token".to_string(), token.clone()),
                ("target".to_string(), copied.target.to_string()),
            ]);
            mailer
                .send(
                    &account,
                    "migration-token",
                    &params,
                    &started.envelope.event_id,
                )
                .await
                .with_context(|| {
                    format!(
                        "mailing the one-time password to {account} (the copy is done; \
                         run the migration again to reset and send a new one)"
                    )
                })?;
            println!(
                "mailed the one-time password for {account} at {} to {account}",
                copied.target
            );
            "mailed"
        }
        None => {
            println!(
                "one-time password for {account} at {}: {token}",
                copied.target
            );
            println!("This is a one-time password: hand it to the user, who changes it at the first login. It is not stored (only its hash) and not shown again.");
            "printed"
        }
    };

    let completed = MigrationCompleted {
        envelope: Envelope {
            event_id: format!("migrate:{account}:{now}:completed"),
            event_time: now_ms()?,
            ..Envelope::caused_by(&started.envelope, "migrate")
        },
        account: account.clone(),
        target_mail_root: started.target_mail_root.clone(),
        target_ldap_base: started.target_ldap_base.clone(),
        messages: mail.messages,
        bytes: mail.bytes,
        entries: copied.entries as i64,
        token_delivery: delivery.into(),
    };
    producer
        .send(topic, account.as_bytes(), &completed)
        .await
        .with_context(|| format!("producing MigrationCompleted to {topic}"))?;
    Ok(())
}

/// The account's Maildir below the target root, which must exist and not
/// be the source root.
fn target_mailbox(
    root: &Path,
    source_root: &str,
    account: &str,
    maildirs: impl Fn(&Path) -> Maildirs,
) -> anyhow::Result<PathBuf> {
    let canonical = fs::canonicalize(root)
        .with_context(|| format!("--to-mail-root {}: no such folder", root.display()))?;
    anyhow::ensure!(
        canonical.is_dir(),
        "--to-mail-root {}: not a folder",
        root.display()
    );
    if fs::canonicalize(source_root).is_ok_and(|s| s == canonical) {
        anyhow::bail!(
            "--to-mail-root {}: is the source mail root (consumers.storage.mail_root = {source_root:?})",
            root.display()
        );
    }
    Ok(maildirs(root).mailbox(account)?)
}

fn now_ms() -> anyhow::Result<i64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64)
}

/// 24 random letters and digits that pass the password policy.
fn one_time_password() -> anyhow::Result<String> {
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
    anyhow::bail!("could not draw a one-time password that passes the password policy")
}

/// Copy a Maildir tree, without Dovecot's `dovecot*` index, cache and uid
/// list files and without `tmp/` contents (unfinished deliveries). A file
/// already at the target with the same size is kept. Each file goes in
/// under a dot name (which Dovecot skips), is synced, then renamed.
fn copy_maildir(
    from: &Path,
    to: &Path,
    owner: (Option<u32>, Option<u32>),
) -> anyhow::Result<MailCopy> {
    let mut copy = MailCopy::default();
    if !from.is_dir() {
        eprintln!("note: no Maildir at {}: no mail to copy", from.display());
        return Ok(copy);
    }
    copy_dir(from, to, owner, &mut copy)?;
    Ok(copy)
}

fn copy_dir(
    from: &Path,
    to: &Path,
    owner: (Option<u32>, Option<u32>),
    copy: &mut MailCopy,
) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    own(to, owner)?;
    if from.file_name().is_some_and(|n| n == "tmp") {
        return Ok(());
    }
    let is_mail = from.file_name().is_some_and(|n| n == "new" || n == "cur");
    let entries = fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("dovecot") {
            continue;
        }
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_dir(&entry.path(), &target, owner, copy)?;
        } else if kind.is_file() {
            let bytes = copy_file(&entry.path(), &target, owner)?;
            if is_mail {
                copy.messages += 1;
                copy.bytes += bytes as i64;
            }
        }
    }
    File::open(to)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", to.display()))
}

/// Copy one file (unless the target has it at the same size); its size.
fn copy_file(from: &Path, to: &Path, owner: (Option<u32>, Option<u32>)) -> anyhow::Result<u64> {
    let size = fs::metadata(from)
        .with_context(|| format!("reading {}", from.display()))?
        .len();
    if fs::metadata(to).is_ok_and(|m| m.len() == size) {
        return Ok(size);
    }
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = to.with_file_name(format!(".{name}.migrating"));
    let context = || format!("copying {} to {}", from.display(), to.display());
    fs::copy(from, &partial).with_context(context)?;
    File::open(&partial)
        .and_then(|f| f.sync_all())
        .with_context(context)?;
    own(&partial, owner)?;
    fs::rename(&partial, to).with_context(context)?;
    Ok(size)
}

/// Give a path to the mail user (Dovecot must be able to index it).
fn own(path: &Path, (uid, gid): (Option<u32>, Option<u32>)) -> anyhow::Result<()> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    chown(path, uid, gid).with_context(|| format!("chown {}", path.display()))
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

    #[test]
    fn one_time_passwords_pass_the_policy_and_differ() {
        let (a, b) = (one_time_password().unwrap(), one_time_password().unwrap());
        assert_ne!(a, b);
        assert!(password::check(&a).is_ok() && a.len() == 24);
    }

    #[test]
    fn a_maildir_copies_without_dovecot_files_or_tmp() {
        // Under the repo's run/ folder, never /tmp.
        let dir = Path::new(&crate::manifest_dir())
            .join("../../run/tests")
            .join(format!("migrate-unit-{:08x}", rand::random::<u32>()));
        let (from, to) = (dir.join("a/Maildir"), dir.join("b/Maildir"));
        for sub in ["new", "cur", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"] {
            fs::create_dir_all(from.join(sub)).unwrap();
        }
        fs::write(from.join("new/1.M1.h,S=5"), b"hello").unwrap();
        fs::write(from.join("cur/2.M2.h,S=3:2,S"), b"abc").unwrap();
        fs::write(from.join(".Sent/cur/3.M3.h"), b"sent!!").unwrap();
        fs::write(from.join("tmp/4.M4.h"), b"partial").unwrap();
        for f in [
            "dovecot.index",
            "dovecot.index.cache",
            "dovecot-uidlist",
            ".Sent/dovecot.index.log",
        ] {
            fs::write(from.join(f), b"index").unwrap();
        }
        fs::write(from.join("subscriptions"), b"Sent\n").unwrap();
        let copy = copy_maildir(&from, &to, (None, None)).unwrap();
        assert_eq!(
            copy,
            MailCopy {
                messages: 3,
                bytes: 14
            }
        );
        assert!(to.join(".Sent/cur/3.M3.h").is_file() && to.join("subscriptions").is_file());
        assert!(to.join("tmp").is_dir() && !to.join("tmp/4.M4.h").exists());
        assert!(!to.join("dovecot.index").exists() && !to.join("dovecot-uidlist").exists());
        assert!(!to.join(".Sent/dovecot.index.log").exists());
        // Again: the same counts, nothing doubled.
        assert_eq!(copy_maildir(&from, &to, (None, None)).unwrap(), copy);
        let missing = copy_maildir(&dir.join("none"), &to, (None, None)).unwrap();
        assert_eq!(missing, MailCopy::default());
        fs::remove_dir_all(&dir).unwrap();
    }
}
