//! The directory consumer (`mailfleet run directory`) against the real
//! broker and the real slapd of `ops/ldap`: what `ldapsearch` sees after
//! account events, deletion of the whole subtree, a malformed DN in the
//! config, and slapd down (transient: no dead letter, recovers).

use std::{process::Command, time::Duration};

use mailfleet_events::{
    accounts::{
        AccountPasswordChanged, AccountRegistered, AccountStatus, AccountStatusChanged,
        DeletionStep, DeletionStepCompleted, DeletionStepRequested, PlanChanged, QuotaChanged,
    },
    admin::AdminAlert,
    runtime::DeadLetter,
    Envelope,
};
use mailfleet_runtime::metrics as m;
use mailfleet_tests::{directory::*, outage, *};

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
        display_name: Some("Test User".into()),
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

/// Wait until `attr` of `dn` is exactly `expected`.
async fn wait_value(dn: &str, attr: &str, expected: &[&str]) -> anyhow::Result<()> {
    let what = format!("{attr} = {expected:?} on {dn}");
    wait_until(&what, WAIT, || {
        values(dn, attr).is_ok_and(|v| v.iter().map(String::as_str).eq(expected.iter().copied()))
    })
    .await
}

/// The `DeletionStepCompleted`s on the world's accounts topic.
fn completions(
    world: &DirectoryWorld,
    idle: Duration,
) -> anyhow::Result<Vec<DeletionStepCompleted>> {
    world.events(&world.accounts, idle)
}

fn dead_letters(world: &DirectoryWorld, idle: Duration) -> anyhow::Result<Vec<DeadLetter>> {
    world.events(&world.deadletter, idle)
}

/// Every record of `topic` up to its end now.
fn to_end(topic: &str) -> anyhow::Result<Vec<Consumed>> {
    Ok(
        mailfleet_runtime::read::read_to_end(&kafka(), topic, "directory-test")?
            .into_iter()
            .map(|r| (r.key, r.payload))
            .collect(),
    )
}

/// The metrics port a config written by `write_config` listens on.
fn metrics_port(config: &std::path::Path) -> anyhow::Result<u16> {
    let text = std::fs::read_to_string(config)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("listen = \"127.0.0.1:")?
                .strip_suffix('"')?
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no metrics listen address in {}", config.display()))
}

/// Start `mailfleet run directory` for the world.
fn spawn_directory(world: &DirectoryWorld) -> anyhow::Result<Children> {
    let config = world.write_config("directory.toml", "", "")?;
    let log = world.dir.join("directory.log");
    Ok(Children(vec![spawn_mailfleet(
        &config,
        &["run", "directory"],
        &log,
    )?]))
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_registration_creates_the_entry_and_its_children() -> anyhow::Result<()> {
    let _slapd = SLAPD.read().await;
    require_slapd()?;
    let world = DirectoryWorld::new("directory-reg").await?;
    // Needs escaping in a DN: '+' and '='.
    let (alice, tagged) = (world.address("alice"), world.address("x+tag=1"));
    let (alice_dn, tagged_dn) = (account_dn(PEOPLE, &alice), account_dn(PEOPLE, &tagged));
    let _cleanup = Cleanup(vec![alice_dn.clone(), tagged_dn.clone()]);
    // An entry that is already there (a retried add): the event's values win.
    let stale = random_password();
    add(&account_ldif(
        &tagged_dn,
        &tagged,
        &argon2_hash(&stale)?,
        "active",
    ))?;
    let mut children = spawn_directory(&world)?;

    let password = random_password();
    world
        .produce(&alice, &registered(&alice, &argon2_hash(&password)?))
        .await?;
    let tagged_password = random_password();
    world
        .produce(
            &tagged,
            &registered(&tagged, &argon2_hash(&tagged_password)?),
        )
        .await?;
    let mut expected: Vec<String> = ["", "ou=calendar,", "ou=contacts,", "ou=tasks,"]
        .iter()
        .map(|c| format!("{c}{alice_dn}").to_lowercase())
        .collect();
    expected.sort();
    wait_until("alice's entry and its children", WAIT, || {
        subtree(&alice_dn).is_ok_and(|found| found == expected)
    })
    .await?;
    assert_eq!(values(&alice_dn, "mailfleetStatus")?, ["pending"]);
    assert_eq!(values(&alice_dn, "mailfleetPlan")?, ["free"]);
    assert_eq!(values(&alice_dn, "cn")?, ["Test User"]);
    assert_eq!(values(&alice_dn, "mail")?, std::slice::from_ref(&alice));
    assert_eq!(
        bind(&alice_dn, &password)?,
        SUCCESS,
        "binds with its password"
    );
    assert_eq!(bind(&alice_dn, "Wrong-password-1")?, INVALID_CREDENTIALS);

    wait_value(&tagged_dn, "mailfleetStatus", &["pending"]).await?;
    let (code, out) = search(PEOPLE, "one", &format!("(uid={tagged})"), &["uid"])?;
    assert_eq!(code, SUCCESS);
    assert!(out.contains(&format!("uid: {tagged}")), "{out}");
    assert_eq!(
        bind(&tagged_dn, &tagged_password)?,
        SUCCESS,
        "converged to the event's hash"
    );
    assert_eq!(bind(&tagged_dn, &stale)?, INVALID_CREDENTIALS);
    assert_eq!(subtree(&tagged_dn)?.len(), 4);
    assert!(dead_letters(&world, Duration::from_secs(2))?.is_empty());

    children.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_status_quota_plan_and_password_changes_are_seen_by_ldapsearch(
) -> anyhow::Result<()> {
    let _slapd = SLAPD.read().await;
    require_slapd()?;
    let world = DirectoryWorld::new("directory-status").await?;
    let bob = world.address("bob");
    let bob_dn = account_dn(PEOPLE, &bob);
    let odd = world.address("odd");
    let odd_dn = account_dn(PEOPLE, &odd);
    let _cleanup = Cleanup(vec![bob_dn.clone(), odd_dn.clone()]);
    let mut children = spawn_directory(&world)?;
    world
        .produce(&bob, &registered(&bob, &argon2_hash(&random_password())?))
        .await?;
    wait_value(&bob_dn, "mailfleetStatus", &["pending"]).await?;

    use AccountStatus::*;
    for (from, to, seen) in [
        (Pending, Active, "active"),
        (Active, Inactive, "inactive"),
        (Inactive, Active, "active"),
        (Active, Blocked, "blocked"),
    ] {
        world.produce(&bob, &status(&bob, from, to)).await?;
        wait_value(&bob_dn, "mailfleetStatus", &[seen]).await?;
    }
    let quota = |q| QuotaChanged {
        envelope: env("quota"),
        account: bob.clone(),
        quota_bytes: q,
    };
    world.produce(&bob, &quota(Some(53_687_091_200))).await?;
    wait_value(&bob_dn, "mailfleetQuota", &["53687091200"]).await?;
    world.produce(&bob, &quota(None)).await?;
    wait_value(&bob_dn, "mailfleetQuota", &[]).await?;
    let plan = PlanChanged {
        envelope: env("plan"),
        account: bob.clone(),
        plan: "pro".into(),
    };
    world.produce(&bob, &plan).await?;
    wait_value(&bob_dn, "mailfleetPlan", &["pro"]).await?;
    let new_password = random_password();
    let changed = AccountPasswordChanged {
        envelope: env("password"),
        account: bob.clone(),
        password_hash: argon2_hash(&new_password)?,
        reason: "reset".into(),
    };
    world.produce(&bob, &changed).await?;
    wait_until("bob binds with the new password", WAIT, || {
        bind(&bob_dn, &new_password).is_ok_and(|code| code == SUCCESS)
    })
    .await?;

    // A change for an account with no entry, not being deleted: an alert.
    let ghost = world.address("ghost");
    world
        .produce(&ghost, &status(&ghost, Pending, Active))
        .await?;
    wait_until("the missing-entry alert", WAIT, || {
        world
            .events::<AdminAlert>(&world.alerts, Duration::from_secs(1))
            .is_ok_and(|a| !a.is_empty())
    })
    .await?;
    let alerts: Vec<AdminAlert> = world.events(&world.alerts, Duration::from_secs(1))?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "directory-entry-missing");
    assert_eq!(alerts[0].account.as_deref(), Some(ghost.as_str()));
    let detail = alerts[0].detail.clone().unwrap_or_default();
    assert!(
        detail.contains("ldap modify uid=ghost@") && detail.contains("result 32 noSuchObject"),
        "{detail}"
    );

    // An entry that is no mailfleetAccount: a permanent failure, dead-lettered
    // with the DN, the operation and the result code.
    add(&format!(
        "dn: {odd_dn}\nobjectClass: inetOrgPerson\nuid: {odd}\ncn: odd\nsn: odd\n"
    ))?;
    world.produce(&odd, &status(&odd, Pending, Active)).await?;
    wait_until("a dead letter", WAIT, || {
        dead_letters(&world, Duration::from_secs(1)).is_ok_and(|d| !d.is_empty())
    })
    .await?;
    let dead = dead_letters(&world, Duration::from_secs(1))?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = &dead[0].reason;
    assert!(
        reason.contains(&format!("ldap modify {odd_dn}")),
        "{reason}"
    );
    assert!(
        reason.contains("result 65 objectClassViolation"),
        "{reason}"
    );

    children.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_deletion_removes_the_whole_subtree_and_reports_it() -> anyhow::Result<()> {
    let _slapd = SLAPD.read().await;
    require_slapd()?;
    let world = DirectoryWorld::new("directory-delete").await?;
    let carol = world.address("carol");
    let carol_dn = account_dn(PEOPLE, &carol);
    let _cleanup = Cleanup(vec![carol_dn.clone()]);
    let mut children = spawn_directory(&world)?;
    world
        .produce(
            &carol,
            &registered(&carol, &argon2_hash(&random_password())?),
        )
        .await?;
    wait_until("carol's entry", WAIT, || {
        subtree(&carol_dn).is_ok_and(|t| t.len() == 4)
    })
    .await?;
    add(&format!(
        "dn: cn=dave,ou=contacts,{carol_dn}\nobjectClass: inetOrgPerson\ncn: dave\nsn: D\nmail: dave@example.test\n\n\
         dn: cn=standup,ou=calendar,{carol_dn}\nobjectClass: organizationalRole\ncn: standup\ndescription: daily 09:00\n"
    ))?;
    assert_eq!(subtree(&carol_dn)?.len(), 6);

    world
        .produce(
            &carol,
            &status(&carol, AccountStatus::Inactive, AccountStatus::Deleting),
        )
        .await?;
    world.produce(&carol, &deletion_step(&carol)).await?;
    wait_until("DeletionStepCompleted", WAIT, || {
        completions(&world, Duration::from_secs(1)).is_ok_and(|c| !c.is_empty())
    })
    .await?;
    let done = completions(&world, Duration::from_secs(1))?;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].account, carol);
    assert_eq!(done[0].step, DeletionStep::Directory);
    assert_eq!(
        done[0].detail,
        format!("removed 6 entries under {carol_dn}")
    );
    assert_eq!(subtree(&carol_dn)?, Vec::<String>::new());

    // Afterwards: a change finds no entry (fine: being deleted), and a
    // repeated step removes nothing and still completes.
    let late = QuotaChanged {
        envelope: env("late"),
        account: carol.clone(),
        quota_bytes: Some(1),
    };
    world.produce(&carol, &late).await?;
    world.produce(&carol, &deletion_step(&carol)).await?;
    wait_until("the second DeletionStepCompleted", WAIT, || {
        completions(&world, Duration::from_secs(1)).is_ok_and(|c| c.len() == 2)
    })
    .await?;
    let done = completions(&world, Duration::from_secs(1))?;
    assert_eq!(
        done[1].detail,
        format!("removed 0 entries under {carol_dn}")
    );
    assert!(dead_letters(&world, Duration::from_secs(1))?.is_empty());
    let alerts: Vec<AdminAlert> = world.events(&world.alerts, Duration::from_secs(1))?;
    assert!(alerts.is_empty(), "{alerts:?}");
    children.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_malformed_dn_in_the_config_stops_the_start_naming_it() -> anyhow::Result<()> {
    let world = DirectoryWorld::new("directory-baddn").await?;
    for (key, bad) in [
        ("people_base", "uid=x.ou=people,dc=mailfleet,dc=test"),
        ("bind_dn", "cn=mailfleet.ou=services,dc=mailfleet,dc=test"),
        ("people_base", "ou=people,dc=mailfleet.test"),
    ] {
        let config = world.write_config("bad.toml", &format!("{key} = {bad:?}"), "")?;
        let out = Command::new(mailfleet_bin())
            .arg("--config")
            .arg(&config)
            .args(["run", "directory"])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key} = {bad}: started anyway");
        assert!(
            stderr.contains(&format!("ldap.{key} = {bad:?}")),
            "{stderr}"
        );
    }
    // A bind password file that is not there: named, before any event.
    let missing = world.dir.join("no-such.password");
    let text = std::fs::read_to_string(world.write_config("pw.toml", "", "")?)?.replace(
        &format!(
            "bind_password_file = {:?}",
            service_password_file().display().to_string()
        ),
        &format!("bind_password_file = {:?}", missing.display().to_string()),
    );
    let path = world.dir.join("pw.toml");
    std::fs::write(&path, text)?;
    let out = Command::new(mailfleet_bin())
        .arg("--config")
        .arg(&path)
        .args(["run", "directory"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ldap.bind_password_file") && stderr.contains("no-such.password"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_slapd_down_is_transient_and_recovers() -> anyhow::Result<()> {
    // Alone: the other tests here need slapd up.
    let _alone = SLAPD.write().await;
    require_slapd()?;
    let world = DirectoryWorld::new("directory-down").await?;
    let erin = world.address("erin");
    let erin_dn = account_dn(PEOPLE, &erin);
    let _cleanup = Cleanup(vec![erin_dn.clone()]);
    let mut children = spawn_directory(&world)?;
    world
        .produce(&erin, &registered(&erin, &argon2_hash(&random_password())?))
        .await?;
    wait_until("erin's entry", WAIT, || {
        subtree(&erin_dn).is_ok_and(|t| t.len() == 4)
    })
    .await?;

    let stopped = SlapdStopped::stop()?;
    world.produce(&erin, &deletion_step(&erin)).await?;
    // Retried, never dead-lettered, never reported done. Wait until the
    // consumer is through with the step's first try, whichever way it
    // went: paused for a retry (counted once the batch is committed, so its
    // outputs are acknowledged by then), or committed past the step. Then
    // the topics as they are hold every output there is.
    let ends = end_offsets(std::slice::from_ref(&world.accounts))?;
    let store = world.dir.join("state/directory");
    let metrics = metrics_port(&world.dir.join("directory.toml"))?;
    wait_until("the step's first try", WAIT, || {
        let text = scrape(metrics).unwrap_or_default();
        metric_sum(&text, m::RETRIES, &["consumer=\"directory\""]) >= 1.0
            || outage::caught_up(&outage::applied(&store), &ends)
    })
    .await?;
    let early: Vec<DeletionStepCompleted> = events_of(&to_end(&world.accounts)?)?;
    let dead: Vec<DeadLetter> = events_of(&to_end(&world.deadletter)?)?;
    stopped.start()?;
    assert!(
        early.is_empty(),
        "completed while slapd was down: {early:?}"
    );
    assert!(
        dead.is_empty(),
        "dead-lettered while slapd was down: {dead:?}"
    );

    wait_until("DeletionStepCompleted after slapd came back", WAIT, || {
        completions(&world, Duration::from_secs(1)).is_ok_and(|c| !c.is_empty())
    })
    .await?;
    let done = completions(&world, Duration::from_secs(1))?;
    assert_eq!(done[0].detail, format!("removed 4 entries under {erin_dn}"));
    assert!(subtree(&erin_dn)?.is_empty());
    assert!(dead_letters(&world, Duration::from_secs(1))?.is_empty());
    let log = std::fs::read_to_string(world.dir.join("directory.log"))?;
    assert!(
        log.contains("transient failure") && log.contains("ldap connect"),
        "{log}"
    );
    children.terminate()
}
