//! The directory consumer (`mailfleet run directory`) over TLS to the real
//! slapd of `ops/ldap`: over `ldaps://` and over StartTLS it keeps the
//! accounts in step, and slapd's own log shows the connection that wrote
//! them as TLS. A config that trusts `wrong-ca.pem` (a CA that signed
//! nothing) is refused naming the URL and rustls's reason, with nothing
//! written: at start when slapd is up, and at the first event when slapd
//! comes up later (a private slapd), where the consumer stops. The same
//! for `mailfleet account migrate`, which copies over `ldaps://` and
//! records nothing when the certificate does not verify.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::Context;
use mailfleet_events::{
    accounts::{
        AccountRegistered, AccountStatus, AccountStatusChanged, DeletionStep,
        DeletionStepCompleted, DeletionStepRequested,
    },
    runtime::DeadLetter,
    Envelope,
};
use mailfleet_tests::{directory::*, outage::Private, *};

const WAIT: Duration = Duration::from_secs(30);

fn env(id: &str) -> Envelope {
    Envelope::new(format!("{id}-{:08x}", rand::random::<u32>()), 1_000, "test")
}

fn registered(account: &str, hash: &str) -> AccountRegistered {
    AccountRegistered {
        envelope: env("reg"),
        account: account.into(),
        password_hash: hash.into(),
        plan: "free".into(),
        display_name: None,
    }
}

fn status(account: &str, from: AccountStatus, to: AccountStatus) -> AccountStatusChanged {
    AccountStatusChanged {
        envelope: env("status"),
        account: account.into(),
        from,
        to,
        reason: "test".into(),
        settings_hash: None,
    }
}

fn deletion_step(account: &str) -> DeletionStepRequested {
    DeletionStepRequested {
        envelope: env("step"),
        account: account.into(),
        step: DeletionStep::Directory,
        attempt: 1,
    }
}

/// `ops/certs make`'s folder (made if missing: `ops/ldap start` did).
fn certs_dir() -> anyhow::Result<PathBuf> {
    let out = Command::new(repo_root().join("ops/certs"))
        .arg("make")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ops/certs make: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// The shared slapd's `ldaps://` URL.
fn ldaps_url() -> String {
    let port = std::env::var("MAILFLEET_LDAP_TLS_PORT").unwrap_or_else(|_| "3636".into());
    format!("ldaps://127.0.0.1:{port}")
}

/// The shared slapd's log (`ops/ldap`: next to its secrets folder).
fn slapd_log() -> anyhow::Result<PathBuf> {
    let secrets = service_password_file();
    Ok(secrets
        .parent()
        .and_then(Path::parent)
        .context("the ldap run folder")?
        .join("slapd.log"))
}

/// The port of `url` (`scheme://host:port`).
fn port_of(url: &str) -> &str {
    url.rsplit(':').next().unwrap_or_default()
}

/// How the consumer reaches slapd.
struct Link<'a> {
    url: &'a str,
    starttls: bool,
    /// The CA it trusts.
    ca: &'a Path,
    /// The service DN's password file.
    password: &'a Path,
}

/// The world's config, reaching slapd by `link`.
fn write_config(world: &DirectoryWorld, file: &str, link: &Link<'_>) -> anyhow::Result<PathBuf> {
    let tls = format!(
        "starttls = {}\n[ldap.tls]\nca_file = {:?}\n",
        link.starttls,
        link.ca.display().to_string()
    );
    let path = world.write_config(file, &tls, "")?;
    let shown = |p: &Path| format!("bind_password_file = {:?}", p.display().to_string());
    let text = std::fs::read_to_string(&path)?;
    let text = text
        .replacen(
            &format!("url = {:?}", ldap_url()),
            &format!("url = {:?}", link.url),
            1,
        )
        .replacen(&shown(&service_password_file()), &shown(link.password), 1);
    anyhow::ensure!(
        text.contains(&format!("url = {:?}", link.url)) && text.contains(&shown(link.password)),
        "config not rewritten: {text}"
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

fn dead_letters(world: &DirectoryWorld, idle: Duration) -> anyhow::Result<Vec<DeadLetter>> {
    world.events(&world.deadletter, idle)
}

/// slapd's log from byte `from` on.
fn log_since(path: &Path, from: u64) -> anyhow::Result<String> {
    let bytes = std::fs::read(path)?;
    let from = usize::try_from(from)?.min(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[from..]).into_owned())
}

/// Every line slapd logged for the connection (`conn=N`) on which it
/// logged `needle`, in order.
fn connection_of<'a>(log: &'a str, needle: &str) -> anyhow::Result<Vec<&'a str>> {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .with_context(|| format!("slapd logged no {needle}"))?;
    let conn = line
        .split_whitespace()
        .find(|w| w.starts_with("conn="))
        .with_context(|| format!("no conn= in {line:?}"))?;
    let tag = format!("{conn} ");
    Ok(log.lines().filter(|l| l.contains(&tag)).collect())
}

/// The index of the first line holding `what`, or an error showing them all.
fn position(lines: &[&str], what: &str) -> anyhow::Result<usize> {
    lines
        .iter()
        .position(|l| l.contains(what))
        .with_context(|| format!("no {what:?} on the connection:\n{}", lines.join("\n")))
}

/// The connection that added `dn` came in on `port`, was TLS (after
/// STARTTLS when `starttls`) and bound as the service DN after the
/// handshake.
fn assert_tls_connection(log: &str, dn: &str, port: &str, starttls: bool) -> anyhow::Result<()> {
    let lines = connection_of(log, &format!("ADD dn=\"{dn}\""))?;
    let accept = position(&lines, "ACCEPT from IP=127.0.0.1:")?;
    assert!(
        lines[accept].ends_with(&format!("(IP=127.0.0.1:{port})")),
        "came in on another port: {}",
        lines[accept]
    );
    let tls = position(&lines, "TLS established tls_ssf=")?;
    let bind = position(&lines, &format!("BIND dn=\"{SERVICE_DN}\""))?;
    assert!(accept < tls && tls < bind, "{}", lines.join("\n"));
    let upgrade = lines.iter().position(|l| l.contains(" STARTTLS"));
    match (starttls, upgrade) {
        (true, Some(at)) => assert!(at < tls, "{}", lines.join("\n")),
        (false, None) => {}
        _ => panic!("STARTTLS expected: {starttls}:\n{}", lines.join("\n")),
    }
    Ok(())
}

/// Registration, a status change and the deletion step over `link`, seen
/// by ldapsearch; the writes on a TLS connection in slapd's log.
async fn keeps_accounts_in_step(name: &str, url: &str, starttls: bool) -> anyhow::Result<()> {
    let _slapd = SLAPD.read().await;
    require_slapd()?;
    let world = DirectoryWorld::new(name).await?;
    let alice = world.address("alice");
    let dn = account_dn(PEOPLE, &alice);
    let _cleanup = Cleanup(vec![dn.clone()]);
    let ca = certs_dir()?.join("ca.pem");
    let link = Link {
        url,
        starttls,
        ca: &ca,
        password: &service_password_file(),
    };
    let config = write_config(&world, "tls.toml", &link)?;
    let log = slapd_log()?;
    let from = std::fs::metadata(&log)?.len();
    let consumer_log = world.dir.join("directory.log");
    let mut children = Children(vec![spawn_mailfleet(
        &config,
        &["run", "directory"],
        &consumer_log,
    )?]);

    let password = random_password();
    world
        .produce(&alice, &registered(&alice, &argon2_hash(&password)?))
        .await?;
    wait_until("alice's entry and its children", WAIT, || {
        subtree(&dn).is_ok_and(|t| t.len() == 4)
    })
    .await?;
    assert_eq!(bind(&dn, &password)?, SUCCESS, "binds with its password");
    use AccountStatus::*;
    world
        .produce(&alice, &status(&alice, Pending, Active))
        .await?;
    wait_until("mailfleetStatus active", WAIT, || {
        values(&dn, "mailfleetStatus").is_ok_and(|v| v == ["active"])
    })
    .await?;
    world
        .produce(&alice, &status(&alice, Active, Deleting))
        .await?;
    world.produce(&alice, &deletion_step(&alice)).await?;
    let completed = || -> anyhow::Result<Vec<DeletionStepCompleted>> {
        world.events(&world.accounts, Duration::from_secs(1))
    };
    wait_until("DeletionStepCompleted", WAIT, || {
        completed().is_ok_and(|c| !c.is_empty())
    })
    .await?;
    assert_eq!(
        completed()?[0].detail,
        format!("removed 4 entries under {dn}")
    );
    assert!(subtree(&dn)?.is_empty());
    assert!(dead_letters(&world, Duration::from_secs(1))?.is_empty());

    let port = port_of(url);
    assert_tls_connection(&log_since(&log, from)?, &dn, port, starttls)?;
    let text = std::fs::read_to_string(&consumer_log)?;
    assert!(text.contains("TLS connection verified and bound"), "{text}");
    children.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_over_ldaps_keeps_accounts_in_step() -> anyhow::Result<()> {
    keeps_accounts_in_step("directory-ldaps", &ldaps_url(), false).await
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_over_starttls_keeps_accounts_in_step() -> anyhow::Result<()> {
    keeps_accounts_in_step("directory-starttls", &ldap_url(), true).await
}

/// Wait (up to `limit`) for the only child to exit.
async fn exit_of(children: &mut Children, limit: Duration) -> anyhow::Result<ExitStatus> {
    let mut exited = None;
    wait_until("the consumer to stop", limit, || {
        exited = children.0[0].try_wait().ok().flatten();
        exited.is_some()
    })
    .await?;
    children.0.clear();
    exited.context("exited")
}

/// The entries of this world's domain below ou=people, with their status.
fn domain_entries(world: &DirectoryWorld) -> anyhow::Result<String> {
    let filter = format!("(mail=*@{})", world.domain);
    let (code, out) = search(PEOPLE, "sub", &filter, &["mailfleetStatus"])?;
    anyhow::ensure!(code == SUCCESS, "ldapsearch: exit {code}");
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_untrusted_certificate_is_refused_naming_the_host_and_reason(
) -> anyhow::Result<()> {
    let _slapd = SLAPD.read().await;
    require_slapd()?;
    let world = DirectoryWorld::new("directory-untrusted").await?;
    let (alice, bob) = (world.address("alice"), world.address("bob"));
    let (alice_dn, bob_dn) = (account_dn(PEOPLE, &alice), account_dn(PEOPLE, &bob));
    let _cleanup = Cleanup(vec![alice_dn.clone(), bob_dn.clone()]);
    add(&account_ldif(
        &bob_dn,
        &bob,
        &argon2_hash(&random_password())?,
        "active",
    ))?;
    // Each would write: an add, a modify, a delete.
    world
        .produce(
            &alice,
            &registered(&alice, &argon2_hash(&random_password())?),
        )
        .await?;
    use AccountStatus::*;
    world.produce(&bob, &status(&bob, Active, Blocked)).await?;
    world.produce(&bob, &deletion_step(&bob)).await?;
    let before = domain_entries(&world)?;
    assert_eq!(dns(&before), [bob_dn.to_lowercase()]);
    assert!(before.contains("mailfleetStatus: active"), "{before}");

    let wrong_ca = certs_dir()?.join("wrong-ca.pem");
    for (url, starttls) in [(ldaps_url(), false), (ldap_url(), true)] {
        let link = Link {
            url: &url,
            starttls,
            ca: &wrong_ca,
            password: &service_password_file(),
        };
        let config = write_config(&world, "untrusted.toml", &link)?;
        let log = world.dir.join(format!("untrusted-{starttls}.log"));
        let mut children = Children(vec![spawn_mailfleet(&config, &["run", "directory"], &log)?]);
        let exit = exit_of(&mut children, WAIT).await?;
        let text = std::fs::read_to_string(&log)?;
        assert!(!exit.success(), "{url}: started anyway:\n{text}");
        let expected = format!(
            "ldap connect {url}: TLS handshake failed: invalid peer certificate: UnknownIssuer (trusting ldap.tls.ca_file = {:?})",
            wrong_ca.display().to_string()
        );
        assert!(text.contains(&expected), "{url}: {text}");
    }
    assert_eq!(domain_entries(&world)?, before, "nothing written");
    assert!(dead_letters(&world, Duration::from_secs(1))?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_untrusted_certificate_found_at_an_event_stops_it_with_nothing_written(
) -> anyhow::Result<()> {
    let slapd = Private::slapd("directory-tls-late");
    let world = DirectoryWorld::new("directory-tls-late").await?;
    let url = slapd.ldaps_url().context("the private ldaps port")?;
    // The private slapd's secrets, before it runs (the consumer reads the
    // password file at start).
    let out = slapd.command().arg("secret-path").output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong_ca = certs_dir()?.join("wrong-ca.pem");
    let link = Link {
        url: &url,
        starttls: false,
        ca: &wrong_ca,
        password: &slapd.ldap_password_file(),
    };
    let config = write_config(&world, "late.toml", &link)?;
    let log = world.dir.join("directory.log");
    let mut children = Children(vec![spawn_mailfleet(&config, &["run", "directory"], &log)?]);

    // slapd down at start: a warning, and the event is retried.
    let alice = world.address("alice");
    world
        .produce(
            &alice,
            &registered(&alice, &argon2_hash(&random_password())?),
        )
        .await?;
    wait_until("a retried connect", WAIT, || {
        std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("transient failure") && t.contains("ldap connect"))
    })
    .await?;
    assert!(
        children.0[0].try_wait()?.is_none(),
        "stopped while slapd was down"
    );
    slapd.start()?;

    let exit = exit_of(&mut children, WAIT).await?;
    let text = std::fs::read_to_string(&log)?;
    let expected = format!(
        "ldap connect {url}: TLS handshake failed: invalid peer certificate: UnknownIssuer"
    );
    assert!(
        text.contains(&expected) && text.contains("stopping (nothing written)"),
        "{exit}: {text}"
    );
    // Only ou=people itself: the registration was not written.
    assert_eq!(slapd.ldap_count(PEOPLE)?, 1);
    assert!(dead_letters(&world, Duration::from_secs(1))?.is_empty());
    let done: Vec<DeletionStepCompleted> = world.events(&world.accounts, Duration::from_secs(1))?;
    assert!(done.is_empty(), "{done:?}");
    Ok(())
}

/// `mailfleet account migrate` with `config`: (success, stdout + stderr).
fn migrate(config: &Path, account: &str, root: &Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(["account", "migrate", account, "--to-mail-root"])
        .arg(root)
        .args(["--to-ldap-base", PAID_BASE])
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_over_ldaps_copies_the_account_and_refuses_an_untrusted_certificate(
) -> anyhow::Result<()> {
    let _slapd = SLAPD.read().await;
    require_slapd()?;
    let world = DirectoryWorld::new("migrate-tls").await?;
    let account = world.address("hana");
    let (source_dn, target_dn) = (
        account_dn(PEOPLE, &account),
        account_dn(PAID_PEOPLE, &account),
    );
    let _cleanup = Cleanup(vec![source_dn.clone(), target_dn.clone()]);
    add(&account_ldif(
        &source_dn,
        &account,
        &argon2_hash(&random_password())?,
        "active",
    ))?;
    let (mail_root, paid_root) = (world.dir.join("mail"), world.dir.join("paid-mail"));
    let maildir = mail_root.join(&world.domain).join("hana").join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub))?;
    }
    std::fs::write(
        maildir.join("new/1700000000.M1.mx,S=20"),
        "Subject: one\r\n\r\nhi\r\n",
    )?;
    std::fs::create_dir_all(&paid_root)?;
    let storage = format!(
        "[consumers.storage]\nmail_root = {:?}\n",
        mail_root.display().to_string()
    );
    let certs = certs_dir()?;
    let url = ldaps_url();
    let config = |file: &str, ca: &Path| -> anyhow::Result<PathBuf> {
        let link = Link {
            url: &url,
            starttls: false,
            ca,
            password: &service_password_file(),
        };
        let path = write_config(&world, file, &link)?;
        let mut text = std::fs::read_to_string(&path)?;
        text.push_str(&storage);
        std::fs::write(&path, text)?;
        Ok(path)
    };

    // Untrusted: refused before anything is recorded or copied.
    let wrong_ca = certs.join("wrong-ca.pem");
    let (ok, text) = migrate(&config("untrusted.toml", &wrong_ca)?, &account, &paid_root)?;
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "ldap connect {url}: TLS handshake failed: invalid peer certificate: UnknownIssuer"
        )),
        "{text}"
    );
    assert!(subtree(&target_dn)?.is_empty(), "nothing copied");
    let records = read_topic(&world.accounts, 1, Duration::from_secs(2))?;
    assert!(records.is_empty(), "nothing recorded: {records:?}");

    // Trusted: copied, on a TLS connection.
    let log = slapd_log()?;
    let from = std::fs::metadata(&log)?.len();
    let (ok, text) = migrate(
        &config("trusted.toml", &certs.join("ca.pem"))?,
        &account,
        &paid_root,
    )?;
    assert!(ok, "{text}");
    assert_eq!(subtree(&target_dn)?, [target_dn.to_lowercase()]);
    assert_tls_connection(&log_since(&log, from)?, &target_dn, port_of(&url), false)
}
