//! `mailfleet account migrate` against the real slapd and broker: a
//! Maildir with Dovecot index files and an LDAP entry with contacts,
//! calendar and tasks are copied to a paid cluster's mail root and LDAP
//! base; the copy's password is reset to the printed one-time password.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use mailfleet_events::accounts::{MigrationCompleted, MigrationStarted};
use mailfleet_tests::{directory::*, *};

/// Files below `dir`, relative, sorted.
fn files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = notify::files_below(dir)
        .iter()
        .map(|p| Ok(p.strip_prefix(dir)?.display().to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

/// `migrate <account> --to-mail-root <root> --to-ldap-base <base>`.
fn migrate_to(config: &Path, account: &str, root: &str, base: &str) -> anyhow::Result<Output> {
    migrate(
        config,
        &[account, "--to-mail-root", root, "--to-ldap-base", base],
    )
}

fn migrate(config: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(["account", "migrate"])
        .args(args)
        .stdin(Stdio::null())
        .output()?)
}

/// A source Maildir: 3 messages in INBOX, 1 in Sent, Dovecot's files.
fn make_maildir(maildir: &Path) -> anyhow::Result<u64> {
    let messages: [(&str, &[u8]); 4] = [
        ("new/1700000000.M1.mx,S=20", b"Subject: one\r\n\r\nhi\r\n"),
        ("new/1700000001.M2.mx,S=21", b"Subject: two\r\n\r\nhey\r\n"),
        (
            "cur/1700000002.M3.mx,S=22:2,S",
            b"Subject: three\r\n\r\nyo\r\n",
        ),
        (
            ".Sent/cur/1700000003.M4.mx,S=23:2,S",
            b"Subject: sent\r\n\r\nbye\r\n",
        ),
    ];
    for sub in ["new", "cur", "tmp", ".Sent/new", ".Sent/cur", ".Sent/tmp"] {
        std::fs::create_dir_all(maildir.join(sub))?;
    }
    let mut bytes = 0;
    for (name, body) in messages {
        std::fs::write(maildir.join(name), body)?;
        bytes += body.len() as u64;
    }
    for name in [
        "dovecot.index",
        "dovecot.index.cache",
        "dovecot.index.log",
        "dovecot-uidlist",
        "dovecot-uidvalidity",
        ".Sent/dovecot.index.log",
        ".Sent/dovecot-uidlist",
    ] {
        std::fs::write(maildir.join(name), b"index data")?;
    }
    std::fs::write(maildir.join("subscriptions"), b"Sent\n")?;
    std::fs::write(maildir.join("tmp/1700000004.M5.mx"), b"half a delivery")?;
    Ok(bytes)
}

/// The stored userPassword of `dn`, read as the rootdn (nobody else may).
fn stored_password(dn: &str) -> anyhow::Result<String> {
    let out = ldap_tool(
        "ldapsearch",
        Bind::Root,
        &[
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-b",
            dn,
            "-s",
            "base",
            "userPassword",
        ],
        "",
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let encoded = text
        .lines()
        .find_map(|l| l.strip_prefix("userPassword:: "))
        .ok_or_else(|| anyhow::anyhow!("no userPassword in {text}"))?;
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().expect("piped"), encoded.as_bytes())?;
    Ok(String::from_utf8(child.wait_with_output()?.stdout)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_copies_mail_and_entries_and_resets_the_password() -> anyhow::Result<()> {
    require_slapd()?;
    let world = DirectoryWorld::new("migrate").await?;
    let account = world.address("frank");
    let (source_dn, target_dn) = (
        account_dn(PEOPLE, &account),
        account_dn(PAID_PEOPLE, &account),
    );
    let _cleanup = Cleanup(vec![source_dn.clone(), target_dn.clone()]);
    let (mail_root, paid_root): (PathBuf, PathBuf) =
        (world.dir.join("mail"), world.dir.join("paid-mail"));
    std::fs::create_dir_all(&paid_root)?;
    let source_maildir = mail_root.join(&world.domain).join("frank").join("Maildir");
    let bytes = make_maildir(&source_maildir)?;

    let old_password = random_password();
    add(&format!(
        "{}\n\
         dn: ou=contacts,{source_dn}\nobjectClass: organizationalUnit\nou: contacts\n\n\
         dn: cn=grace,ou=contacts,{source_dn}\nobjectClass: inetOrgPerson\ncn: grace\nsn: Hopper\nmail: grace@example.test\n\n\
         dn: ou=calendar,{source_dn}\nobjectClass: organizationalUnit\nou: calendar\n\n\
         dn: cn=standup,ou=calendar,{source_dn}\nobjectClass: organizationalRole\ncn: standup\ndescription: daily 09:00\n\n\
         dn: ou=tasks,{source_dn}\nobjectClass: organizationalUnit\nou: tasks\n\n\
         dn: cn=task-1,ou=tasks,{source_dn}\nobjectClass: organizationalRole\ncn: task-1\ndescription: renew passport\n",
        account_ldif(&source_dn, &account, &argon2_hash(&old_password)?, "active")
    ))?;
    let config = world.write_config(
        "migrate.toml",
        "",
        &format!(
            "[consumers.storage]\nmail_root = {:?}\n",
            mail_root.display().to_string()
        ),
    )?;

    let out = migrate_to(
        &config,
        &account,
        &paid_root.display().to_string(),
        PAID_BASE,
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("one-time password for "))
        .and_then(|l| l.rsplit(": ").next())
        .ok_or_else(|| anyhow::anyhow!("no one-time password printed:\n{stdout}"))?
        .to_string();
    assert!(stdout.contains("This is a one-time password"), "{stdout}");
    assert_eq!(stdout.matches(&token).count(), 1, "printed once: {stdout}");

    // Mail: every message, no Dovecot index, no half delivery.
    let target_maildir = paid_root.join(&world.domain).join("frank").join("Maildir");
    assert_eq!(
        files(&target_maildir)?,
        [
            ".Sent/cur/1700000003.M4.mx,S=23:2,S",
            "cur/1700000002.M3.mx,S=22:2,S",
            "new/1700000000.M1.mx,S=20",
            "new/1700000001.M2.mx,S=21",
            "subscriptions",
        ]
    );
    assert!(target_maildir.join("tmp").is_dir() && target_maildir.join(".Sent/tmp").is_dir());

    // Directory: the entry and its contacts, calendar and tasks.
    let mut expected: Vec<String> = [
        "",
        "ou=contacts,",
        "cn=grace,ou=contacts,",
        "ou=calendar,",
        "cn=standup,ou=calendar,",
        "ou=tasks,",
        "cn=task-1,ou=tasks,",
    ]
    .iter()
    .map(|p| format!("{p}{target_dn}").to_lowercase())
    .collect();
    expected.sort();
    assert_eq!(subtree(&target_dn)?, expected);
    assert_eq!(values(&target_dn, "mailfleetStatus")?, ["active"]);
    assert_eq!(values(&target_dn, "mailfleetQuota")?, ["1073741824"]);
    assert_eq!(
        values(&format!("cn=grace,ou=contacts,{target_dn}"), "sn")?,
        ["Hopper"]
    );
    assert_eq!(subtree(&source_dn)?.len(), 7, "the source stays");

    // The password: a fresh {ARGON2} hash that binds with the token only.
    let stored = stored_password(&target_dn)?;
    assert!(stored.starts_with("{ARGON2}$argon2id$"), "{stored}");
    assert_eq!(bind(&target_dn, &token)?, SUCCESS);
    assert_eq!(bind(&target_dn, &old_password)?, INVALID_CREDENTIALS);
    assert_eq!(bind(&source_dn, &old_password)?, SUCCESS);

    // The events, keyed by the account, never with the token.
    let records = read_topic(&world.accounts, 2, std::time::Duration::from_secs(10))?;
    for (key, value) in &records {
        assert_eq!(key.as_deref(), Some(account.as_bytes()));
        assert!(
            !String::from_utf8_lossy(value).contains(&token),
            "the token leaked into an event"
        );
    }
    let started: Vec<MigrationStarted> = events_of(&records)?;
    let completed: Vec<MigrationCompleted> = events_of(&records)?;
    assert_eq!((started.len(), completed.len()), (1, 1), "{records:?}");
    assert_eq!(started[0].target_ldap_base, PAID_BASE);
    assert_eq!(started[0].target_mail_root, paid_root.display().to_string());
    let done = &completed[0];
    assert_eq!(
        (done.messages, done.bytes, done.entries),
        (4, bytes as i64, 7)
    );
    assert_eq!(done.token_delivery, "printed");
    assert_eq!(
        done.envelope.causation_id.as_deref(),
        Some(started[0].envelope.event_id.as_str())
    );

    // Again: it converges (same files and entries, a new password).
    let again = migrate_to(
        &config,
        &account,
        &paid_root.display().to_string(),
        PAID_BASE,
    )?;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(files(&target_maildir)?.len(), 5);
    assert_eq!(subtree(&target_dn)?, expected);
    assert_eq!(
        bind(&target_dn, &token)?,
        INVALID_CREDENTIALS,
        "reset again"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_refuses_bad_targets_naming_them() -> anyhow::Result<()> {
    require_slapd()?;
    let world = DirectoryWorld::new("migrate-bad").await?;
    let account = world.address("gina");
    let paid_root = world.dir.join("paid-mail");
    std::fs::create_dir_all(&paid_root)?;
    let root = paid_root.display().to_string();
    let config = world.write_config("migrate.toml", "", "")?;
    for (base, expected) in [
        (
            "ou=paid.dc=mailfleet,dc=test",
            "\"ou=paid.dc=mailfleet,dc=test\"",
        ),
        ("ou=paid,dc=mailfleet.test", "is not within ldap.base"),
        ("ou=x,ou=people,dc=mailfleet,dc=test", "within the source"),
    ] {
        let out = migrate(
            &config,
            &[&account, "--to-mail-root", &root, "--to-ldap-base", base],
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{base}: accepted");
        assert!(stderr.contains(expected), "{base}: {stderr}");
    }
    let missing = world.dir.join("no-such-root").display().to_string();
    let out = migrate_to(&config, &account, &missing, PAID_BASE)?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&missing));
    // An account with no entry: named, with slapd's answer.
    let out = migrate_to(&config, &account, &root, PAID_BASE)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let dn = account_dn(PEOPLE, &account);
    assert!(
        stderr.contains(&format!("ldap search {dn}: result 32 noSuchObject")),
        "{stderr}"
    );
    // Nothing was produced for refused runs.
    let records = read_topic(&world.accounts, 1, std::time::Duration::from_secs(2))?;
    assert!(records.is_empty(), "{records:?}");
    Ok(())
}
