//! The account lifecycle end to end, over the real broker and the real
//! slapd: registration opens the mailbox and creates the LDAP entry;
//! inactivity closes it (LMTP `550 5.1.1`, LDAP status, the notice);
//! the grace period's end deletes the account everywhere (Maildir, index,
//! LDAP subtree, blob references) and leaves the tombstone; a fleet killed
//! in the middle of a deletion finishes it when it comes back.

use std::{collections::HashSet, process::Command, time::Duration};

use mailfleet_blob::BlobStore;
use mailfleet_events::{
    accounts::{
        AccountDeleted, AccountRegistered, AccountStatus, AccountStatusChanged, DeletionStep,
        DeletionStepCompleted, LoginChannel, LoginRecorded,
    },
    clock::ClockTicked,
    mail::{MailboxDeleted, MessageStored},
    notify::NotificationRequested,
    Envelope,
};
use mailfleet_lifecycle::LifecycleConfig;
use mailfleet_runtime::{producer::EventProducer, time::now_ms};
use mailfleet_tests::{fleet::*, *};

const DAY_MS: i64 = 86_400_000;

/// The consumer tables for the lifecycle, the saga and the directory.
fn account_tables(fleet_world: &mailfleet_tests::ingest::MailWorld) -> String {
    format!(
        "[consumers.lifecycle]\nevents_topic = {a:?}\nnotify_topic = {n:?}\nstatus_topic = {s:?}\n\
         [consumers.deleter]\nevents_topic = {a:?}\n\
         [consumers.directory]\nevents_topic = {a:?}\nalerts_topic = {al:?}\n\
         [ldap]\nbind_password_file = {secret:?}\n",
        a = fleet_world.accounts,
        n = fleet_world.notify,
        s = fleet_world.status,
        al = fleet_world.alerts,
        secret = ldap_secret().display().to_string(),
    )
}

async fn launch(name: &str, consumers: &'static [&'static str]) -> anyhow::Result<Fleet> {
    // The tables need the world's topic names, which exist only once the
    // world does: start without them, then write the full config.
    let mut fleet = Fleet::launch(
        name,
        FleetOptions {
            clamd: false,
            check_accounts: true,
            consumers: &["scanner"],
            ..FleetOptions::default()
        },
    )
    .await?;
    let tables = fleet.tables.clone() + &account_tables(&fleet.world);
    let config = fleet
        .world
        .write_config("accounts.toml", free_port(), &tables)?;
    let mut run = vec!["run"];
    run.extend(consumers);
    let log = fleet.world.dir.join("accounts.log");
    fleet.children.0.push(spawn_mailfleet(&config, &run, &log)?);
    fleet.config = config;
    fleet.tables = tables;
    Ok(fleet)
}

fn address(who: &str) -> String {
    format!("{who}-{:08x}@lifecycle.test", rand::random::<u32>())
}

async fn register(fleet: &Fleet, account: &str, at: i64) -> anyhow::Result<()> {
    let secret = format!("Aa1{:032x}", rand::random::<u128>());
    let event = AccountRegistered {
        envelope: Envelope::new(format!("test:register:{account}"), at, "test"),
        account: account.into(),
        password_hash: mailfleet_password::hash(&secret)?,
        plan: "free".into(),
        display_name: Some("Test User".into()),
    };
    fleet.produce(&fleet.world.accounts, account, &event).await
}

/// A clock tick at `at` into every partition of the accounts topic.
async fn tick(fleet: &Fleet, at: i64) -> anyhow::Result<()> {
    let producer = EventProducer::new(&kafka(), "lifecycle-test-clock")?;
    for partition in 0..3 {
        let tick = ClockTicked {
            envelope: Envelope::new(format!("test:tick:{partition}:{at}"), at, "test-clock"),
            clock: "test".into(),
            period_ms: 3_600_000,
        };
        let bytes = mailfleet_events::encode(&tick)?;
        producer
            .send_to_partition(&fleet.world.accounts, partition, &bytes)
            .await?;
    }
    Ok(())
}

/// Wait for `account`'s status change to `to` on the status topic.
async fn wait_status(fleet: &Fleet, account: &str, to: AccountStatus) -> anyhow::Result<()> {
    fleet
        .wait_for_where::<AccountStatusChanged>(&fleet.world.status, 1, |s| {
            s.account == account && s.to == to
        })
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{account} never became {to:?}: {e}"))
}

/// The service DN's password file, as `ops/ldap` writes it.
fn ldap_secret() -> std::path::PathBuf {
    repo_root().join("run/ldap/secrets/mailfleet.password")
}

/// The LDAP entries under an account's DN, with their mailfleetStatus
/// (the service DN's view, as an operator's ldapsearch shows it).
fn ldap_subtree(account: &str) -> anyhow::Result<Vec<String>> {
    let secret = ldap_secret();
    let out = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-H", "ldap://127.0.0.1:3389", "-D"])
        .arg("cn=mailfleet,ou=services,dc=mailfleet,dc=test")
        .arg("-y")
        .arg(&secret)
        .arg("-b")
        .arg(format!("uid={account},ou=people,dc=mailfleet,dc=test"))
        .args(["-s", "sub", "(objectClass=*)", "dn", "mailfleetStatus"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => Ok(text
            .lines()
            .filter(|l| l.starts_with("dn: ") || l.starts_with("mailfleetStatus: "))
            .map(str::to_string)
            .collect()),
        Some(32) => Ok(Vec::new()), // noSuchObject: the whole subtree is gone
        _ => anyhow::bail!(
            "ldapsearch for {account}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

async fn wait_ldap(
    account: &str,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> anyhow::Result<()> {
    let mut last = Vec::new();
    for _ in 0..60 {
        last = ldap_subtree(account)?;
        if ok(&last) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("LDAP for {account}: {what} never held; last saw {last:?}")
}

fn mailbox(fleet: &Fleet, account: &str) -> std::path::PathBuf {
    let (user, domain) = account.split_once('@').unwrap_or((account, ""));
    fleet.mail_root.join(domain).join(user).join("Maildir")
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_inactive_accounts_are_refused_notified_then_deleted_everywhere(
) -> anyhow::Result<()> {
    let mut fleet = launch(
        "lifecycle",
        &["lifecycle", "deleter", "directory", "storage", "index"],
    )
    .await?;
    let (alice, bob) = (address("alice"), address("bob"));
    let t0 = now_ms();
    register(&fleet, &alice, t0).await?;
    register(&fleet, &bob, t0).await?;
    wait_status(&fleet, &alice, AccountStatus::Active).await?;
    wait_status(&fleet, &bob, AccountStatus::Active).await?;
    wait_ldap(&alice, "an active entry with children", |l| {
        l.iter().any(|x| x == "mailfleetStatus: active")
            && l.iter().filter(|x| x.starts_with("dn: ")).count() >= 3
    })
    .await?;

    // Open mailboxes take mail; an address that is no account does not.
    let port = fleet.world.lmtp_port;
    let stranger = address("nobody");
    wait_until(
        "the LMTP server to know alice",
        Duration::from_secs(30),
        || deliver(port, &alice, "hello", "first").is_ok_and(|r| r.starts_with("250")),
    )
    .await?;
    assert!(deliver(port, &bob, "hello", "first")?.starts_with("250"));
    let refused = deliver(port, &stranger, "hello", "x")?;
    assert!(refused.starts_with("550 5.1.1"), "{refused}");
    let stored = fleet
        .wait_for_where::<MessageStored>(&fleet.world.stored, 2, |s| {
            s.account == alice || s.account == bob
        })
        .await?;
    let blobs = BlobStore::open(fleet.world.blob_dir())?;
    let alice_blobs = blobs.refs_of(&alice)?;
    assert!(
        !alice_blobs.is_empty(),
        "the LMTP server records alice's references"
    );
    assert!(stored.iter().all(|s| blobs.contains(&s.blob_id)));

    // Bob logs in; alice never does. The tick at the threshold deactivates her.
    let login = LoginRecorded {
        envelope: Envelope::new(format!("test:login:{bob}"), t0 + 80 * DAY_MS, "test"),
        account: bob.clone(),
        channel: LoginChannel::Webmail,
        ip: Some("192.0.2.7".into()),
    };
    fleet.produce(&fleet.world.accounts, &bob, &login).await?;
    let cfg = LifecycleConfig::default();
    let inactive_at = cfg.inactive_at(t0);
    tick(&fleet, inactive_at - 1000).await?;
    tick(&fleet, inactive_at).await?;
    wait_status(&fleet, &alice, AccountStatus::Inactive).await?;
    wait_ldap(&alice, "status inactive", |l| {
        l.iter().any(|x| x == "mailfleetStatus: inactive")
    })
    .await?;
    let notices = fleet
        .wait_for_where::<NotificationRequested>(&fleet.world.notify, 1, |n| n.to == alice)
        .await?;
    assert_eq!(notices[0].template, "deactivated");
    assert_eq!(
        notices[0]
            .params
            .get("respond_within_hours")
            .map(String::as_str),
        Some("24")
    );
    wait_until("alice refused at RCPT", Duration::from_secs(30), || {
        deliver(port, &alice, "late", "x").is_ok_and(|r| r.starts_with("550 5.1.1"))
    })
    .await?;
    assert!(
        deliver(port, &bob, "still", "here")?.starts_with("250"),
        "bob logged in"
    );
    let notice = deliver_from(port, "", &alice, "Your account is inactive", "log in")?;
    assert!(
        notice.starts_with("250"),
        "a notice from <> reaches the inactive mailbox: {notice}"
    );

    // The grace period ends: the saga removes every trace of alice.
    tick(&fleet, cfg.deleting_at(inactive_at) + 1000).await?;
    let gone = fleet
        .wait_for_where::<AccountDeleted>(&fleet.world.accounts, 1, |d| d.account == alice)
        .await?;
    assert_eq!(gone[0].reason, "grace-expired");
    let steps = fleet.events::<DeletionStepCompleted>(&fleet.world.accounts)?;
    for step in [
        DeletionStep::Maildir,
        DeletionStep::Index,
        DeletionStep::Directory,
        DeletionStep::Blobs,
    ] {
        assert!(
            steps.iter().any(|s| s.account == alice && s.step == step),
            "no {step:?} step for {alice}: {steps:?}"
        );
    }
    assert!(!mailbox(&fleet, &alice).exists(), "alice's Maildir is gone");
    assert!(
        !files(&mailbox(&fleet, &bob), "INBOX").is_empty(),
        "bob's mail stays"
    );
    assert!(
        ldap_subtree(&alice)?.is_empty(),
        "the whole LDAP subtree is gone"
    );
    assert!(!ldap_subtree(&bob)?.is_empty());
    assert!(blobs.refs_of(&alice)?.is_empty());
    for s in &stored {
        assert!(blobs.contains(&s.blob_id), "bob still holds {}", s.blob_id);
    }
    let deleted = fleet.events::<MailboxDeleted>(&fleet.world.stored)?;
    assert!(deleted.iter().any(|m| m.account == alice && m.files >= 1));
    wait_status(&fleet, &alice, AccountStatus::Deleted).await?;
    let refused = deliver(port, &alice, "after", "x")?;
    assert!(refused.starts_with("550 5.1.1"), "{refused}");
    // The index's `Index` step is an output, acknowledged before the
    // indexer commits the deletion with its offsets (runner/mod.rs), and
    // `index show` reads the store from outside the process: the rows go
    // a moment after the step is seen, so look until they are gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let index = Command::new(mailfleet_bin())
            .args(["--config"])
            .arg(&fleet.config)
            .args(["index", "show", &alice])
            .output()?;
        let shown = String::from_utf8_lossy(&index.stdout).into_owned();
        if !shown.contains("INBOX") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the index forgot alice: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    fleet.stop()
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_a_deletion_cut_by_a_crash_resumes_and_completes() -> anyhow::Result<()> {
    // The directory runs in a process of its own, stopped once it has
    // created the entry: the saga then stops at the LDAP step.
    let mut fleet = launch(
        "deletion-crash",
        &["lifecycle", "deleter", "storage", "index"],
    )
    .await?;
    let log = fleet.world.dir.join("directory.log");
    let own = fleet
        .world
        .write_config("directory.toml", free_port(), &fleet.tables)?;
    let mut directory = spawn_mailfleet(&own, &["run", "directory"], &log)?;
    let carol = address("carol");
    let t0 = now_ms();
    register(&fleet, &carol, t0).await?;
    wait_status(&fleet, &carol, AccountStatus::Active).await?;
    wait_ldap(&carol, "an active entry", |l| {
        l.iter().any(|x| x == "mailfleetStatus: active")
    })
    .await?;
    terminate(&mut directory)?;
    let port = fleet.world.lmtp_port;
    wait_until(
        "the LMTP server to know carol",
        Duration::from_secs(30),
        || deliver(port, &carol, "hello", "x").is_ok_and(|r| r.starts_with("250")),
    )
    .await?;
    fleet
        .wait_for_where::<MessageStored>(&fleet.world.stored, 1, |s| s.account == carol)
        .await?;
    let cfg = LifecycleConfig::default();
    let inactive_at = cfg.inactive_at(t0);
    tick(&fleet, inactive_at).await?;
    wait_status(&fleet, &carol, AccountStatus::Inactive).await?;
    tick(&fleet, cfg.deleting_at(inactive_at)).await?;
    fleet
        .wait_for_where::<DeletionStepCompleted>(&fleet.world.accounts, 2, |s| {
            s.account == carol && matches!(s.step, DeletionStep::Maildir | DeletionStep::Index)
        })
        .await?;
    assert!(!mailbox(&fleet, &carol).exists());
    assert!(
        !ldap_subtree(&carol)?.is_empty(),
        "the directory step has not run"
    );

    // Kill everything hard in the middle of the saga, then bring it back
    // with the directory consumer.
    for mut child in fleet.children.0.drain(..) {
        child.kill()?;
        child.wait()?;
    }
    let log = fleet.world.dir.join("accounts-2.log");
    let config = fleet.config.clone();
    fleet.children.0.push(spawn_mailfleet(
        &config,
        &[
            "run",
            "lifecycle",
            "deleter",
            "directory",
            "storage",
            "index",
        ],
        &log,
    )?);
    let gone = fleet
        .wait_for_where::<AccountDeleted>(&fleet.world.accounts, 1, |d| d.account == carol)
        .await?;
    let ids: HashSet<_> = gone.iter().map(|d| d.envelope.event_id.clone()).collect();
    assert_eq!(
        ids.len(),
        1,
        "one tombstone (a resend keeps its id): {gone:?}"
    );
    assert!(ldap_subtree(&carol)?.is_empty());
    wait_status(&fleet, &carol, AccountStatus::Deleted).await?;
    let completions = fleet.events::<DeletionStepCompleted>(&fleet.world.accounts)?;
    let blob_steps: HashSet<_> = completions
        .iter()
        .filter(|s| s.account == carol && s.step == DeletionStep::Blobs)
        .map(|s| s.envelope.event_id.clone())
        .collect();
    assert_eq!(
        blob_steps.len(),
        1,
        "the blob step ran once: {completions:?}"
    );
    fleet.stop()
}
