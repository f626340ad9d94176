//! The account API (`mailfleet api`) and CLI (`mailfleet account`) against
//! the real broker: registration, logins, quota and plan as events on the
//! accounts topic; weak passwords (one per rule), duplicates, unknown and
//! malformed accounts; the projection rebuilt after a restart; the bearer
//! token; and the password hash verified by the real slapd and Dovecot.

use std::process::Command;

use mailfleet_api::{
    wire::{Channel, LoginRequest, RegisterRequest, Secret},
    ApiError,
};
use mailfleet_events::accounts::{
    AccountRegistered, LoginChannel, LoginFailed, LoginRecorded, PlanChanged, QuotaChanged,
};
use mailfleet_password as password;
use mailfleet_tests::{api::*, directory, *};

fn register(account: &str, password: &str) -> RegisterRequest {
    RegisterRequest {
        account: account.into(),
        password: Secret::new(password),
        plan: None,
        display_name: Some("Api Test".into()),
    }
}

fn login(channel: Channel, password: Option<&str>) -> LoginRequest {
    LoginRequest {
        channel,
        ip: Some("192.0.2.7".into()),
        password: password.map(Secret::new),
    }
}

/// The status of a refused call, and its message.
fn refused<T: std::fmt::Debug>(result: Result<T, ApiError>) -> (u16, String) {
    match result {
        Err(e @ ApiError::Refused { .. }) => (e.answer_status().unwrap_or(0), e.to_string()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_register_login_quota_plan_and_rebuild_after_restart() -> anyhow::Result<()> {
    let world = ApiWorld::new("api-flow", "").await?;
    let mut children = Children(vec![world.spawn()?]);
    world.wait_ready().await?;
    let api = world.client()?;
    let (secret, wrong) = (strong_password(), strong_password());
    let bob = world.address("bob");
    let shouted = bob.to_uppercase();

    // Registration: 201, lower-cased, an {ARGON2} hash on the topic.
    let view = api.register(&register(&shouted, &secret)).await?;
    assert_eq!(
        (view.account.as_str(), view.status.as_str()),
        (bob.as_str(), "active")
    );
    assert_eq!(view.plan, "free");
    let registered = world.events::<AccountRegistered>(1).await?;
    assert_eq!(registered.len(), 1);
    let hash = &registered[0].password_hash;
    assert!(
        hash.starts_with("{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(&secret));
    assert_eq!(registered[0].account, bob);
    assert!(password::verify(&secret, hash)?);

    // A duplicate: 409 from the API, exit 2 naming the account from the CLI.
    let (status, message) = refused(api.register(&register(&bob, &secret)).await);
    assert_eq!(status, 409, "{message}");
    assert!(message.contains(&bob), "{message}");
    let out = world.cli(
        &["register", &shouted, "--password-stdin"],
        &format!("{secret}\n"),
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&bob),
        "{}",
        text(&out)
    );

    // Logins: the right password records one, a wrong one fails with 401.
    let seen = api
        .login(&bob, &login(Channel::Syncml, Some(&secret)))
        .await?;
    assert_eq!(seen.last_login_channel.as_deref(), Some("syncml"));
    let (status, message) = refused(
        api.login(&bob, &login(Channel::Webmail, Some(&wrong)))
            .await,
    );
    assert_eq!(status, 401, "{message}");
    let out = world.cli(
        &["login", &bob, "--channel", "activesync", "--password-stdin"],
        &format!("{wrong}\n"),
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong password"),
        "{}",
        text(&out)
    );
    let out = world.cli(&["login", &bob, "--channel", "imap"], "")?;
    assert!(out.status.success(), "{}", text(&out));
    let recorded = world.events::<LoginRecorded>(2).await?;
    let mut channels: Vec<_> = recorded.iter().map(|e| e.channel).collect();
    channels.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(channels, [LoginChannel::Imap, LoginChannel::Syncml]);
    assert!(recorded.iter().all(|e| e.account == bob));
    let syncml = recorded.iter().find(|e| e.channel == LoginChannel::Syncml);
    assert_eq!(syncml.and_then(|e| e.ip.as_deref()), Some("192.0.2.7"));
    let failed = world.events::<LoginFailed>(2).await?;
    assert!(
        failed
            .iter()
            .all(|e| e.reason == "bad-password" && e.account == bob),
        "{failed:?}"
    );

    // Quota and plan, by the CLI and the API.
    let out = world.cli(&["quota", &bob, "5G"], "")?;
    assert!(out.status.success(), "{}", text(&out));
    let quota = world.events::<QuotaChanged>(1).await?;
    assert_eq!(quota[0].quota_bytes, Some(5 << 30));
    assert_eq!(api.set_plan(&bob, "pro").await?.plan, "pro");
    let (status, message) = refused(api.set_plan(&bob, "gold").await);
    assert_eq!(status, 422);
    assert!(message.contains("\"gold\""), "{message}");
    let plans = world.events::<PlanChanged>(1).await?;
    assert_eq!((plans.len(), plans[0].plan.as_str()), (1, "pro"));
    let out = world.cli(&["show", &bob], "")?;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("pro") && shown.contains("5368709120"),
        "{}",
        text(&out)
    );

    // A restart rebuilds the projection from the topic.
    children.terminate()?;
    children.0.push(world.spawn()?);
    world.wait_ready().await?;
    let api = world.client()?;
    let view = api.show(&bob).await?;
    assert_eq!(
        (view.plan.as_str(), view.quota_bytes),
        ("pro", Some(5 << 30))
    );
    assert!(view.last_login_at.is_some());
    let (status, _) = refused(api.register(&register(&bob, &secret)).await);
    assert_eq!(status, 409);
    api.login(&bob, &login(Channel::Webmail, Some(&secret)))
        .await?;
    children.terminate()?;

    // No password or hash in the log.
    let log = world.log_text();
    assert!(log.contains("account API listening"), "{log}");
    for leaked in [secret.as_str(), wrong.as_str(), "$argon2id$"] {
        assert!(!log.contains(leaked), "the log holds {leaked:?}:\n{log}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn api_refuses_weak_passwords_duplicates_and_unknown_or_malformed_accounts(
) -> anyhow::Result<()> {
    let world = ApiWorld::new("api-bad", "").await?;
    let mut children = Children(vec![world.spawn()?]);
    world.wait_ready().await?;
    let api = world.client()?;
    let strong = strong_password();

    // One weak password per rule: 422 naming the rule, the CLI exits 2.
    let n = rand::random::<u32>() % 1000;
    let weak = [
        (format!("Ab{n}x"), "min-length"),
        (format!("lower{n}case"), "upper-case"),
        (format!("UPPER{n}CASE"), "lower-case"),
        ("NoDigitsHere".to_string(), "digit"),
    ];
    for (i, (weak, rule)) in weak.iter().enumerate() {
        let account = world.address(&format!("weak{i}"));
        match api.register(&register(&account, weak)).await {
            Err(ApiError::Refused {
                status,
                message,
                rules,
            }) => {
                assert_eq!(
                    (status, rules.as_slice()),
                    (422, [rule.to_string()].as_slice()),
                    "{message}"
                );
                assert!(
                    message.contains(rule) && !message.contains(weak.as_str()),
                    "{message}"
                );
            }
            other => panic!("{weak:?}: expected 422, got {other:?}"),
        }
        let out = world.cli(
            &["register", &account, "--password-stdin"],
            &format!("{weak}\n"),
        )?;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(rule) && !stderr.contains(weak.as_str()),
            "{}",
            text(&out)
        );
        let (status, _) = refused(api.show(&account).await);
        assert_eq!(status, 404, "{account} must not exist");
    }

    // Unknown accounts: 404 naming them, for show, login and quota.
    let ghost = world.address("ghost");
    let (status, message) = refused(api.show(&ghost).await);
    assert_eq!((status, message.contains(&ghost)), (404, true), "{message}");
    let (status, message) = refused(
        api.login(&ghost, &login(Channel::Webmail, Some(&strong)))
            .await,
    );
    assert_eq!((status, message.contains(&ghost)), (404, true), "{message}");
    let (status, message) = refused(api.set_quota(&ghost, Some(1)).await);
    assert_eq!((status, message.contains(&ghost)), (404, true), "{message}");
    for args in [
        vec!["show", ghost.as_str()],
        vec!["quota", ghost.as_str(), "plan"],
        vec!["login", ghost.as_str(), "--channel", "webmail"],
    ] {
        let out = world.cli(&args, "")?;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&ghost),
            "{}",
            text(&out)
        );
    }

    // A malformed address is a 400 naming it.
    let (status, message) = refused(api.register(&register("no-at-sign.test", &strong)).await);
    assert_eq!(status, 400);
    assert!(message.contains("\"no-at-sign.test\""), "{message}");

    // Two registrations of one address at once: exactly one wins.
    let twin = world.address("twin");
    let request = register(&twin, &strong);
    let (a, b) = tokio::join!(api.register(&request), api.register(&request));
    let statuses = [&a, &b].map(|r| {
        r.as_ref()
            .map_or_else(|e| e.answer_status().unwrap_or(0), |_| 201)
    });
    let mut sorted = statuses.to_vec();
    sorted.sort();
    assert_eq!(sorted, [201, 409], "{a:?} {b:?}");
    let twins = world.events::<AccountRegistered>(1).await?;
    assert_eq!(twins.iter().filter(|e| e.account == twin).count(), 1);

    // Reactivating an active account is a conflict naming its status.
    let (status, message) = refused(api.reactivate(&twin, &Default::default()).await);
    assert_eq!(status, 409);
    assert!(message.contains("is active"), "{message}");
    children.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn api_requires_the_bearer_token_when_configured() -> anyhow::Result<()> {
    let dir = scratch_dir("api-token");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{:032x}\n", rand::random::<u128>()))?;
    let extra = format!("token_file = {:?}", token_file.display().to_string());
    let world = ApiWorld::new("api-token", &extra).await?;
    let mut children = Children(vec![world.spawn()?]);
    world.wait_ready().await?;
    let (status, message) = refused(world.client()?.show(&world.address("x")).await);
    assert_eq!(status, 401, "{message}");
    // The CLI takes the token file from the config.
    let out = world.cli(&["show", &world.address("x")], "")?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no account"),
        "{}",
        text(&out)
    );
    children.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn password_hash_verifies_in_slapd_and_dovecot() -> anyhow::Result<()> {
    let secret = strong_password();
    let hash = password::hash(&secret)?;
    let phc = hash.strip_prefix("{ARGON2}").expect("the {ARGON2} scheme");

    // Dovecot: the same PHC string under its {ARGON2ID} scheme.
    let doveadm = |candidate: &str| {
        Command::new("doveadm")
            .args(["pw", "-t", &format!("{{ARGON2ID}}{phc}"), "-p", candidate])
            .output()
    };
    let ok = doveadm(&secret)?;
    assert!(
        ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("verified"),
        "doveadm: {}",
        text(&ok)
    );
    assert!(!doveadm(&strong_password())?.status.success());

    // slapd: an entry whose userPassword is the hash binds with the password.
    let _slapd = directory::SLAPD.read().await;
    directory::require_slapd()?;
    let address = format!("pw@{}.test", unique("api-pw"));
    let dn = directory::account_dn(directory::PEOPLE, &address);
    directory::add(&directory::account_ldif(&dn, &address, &hash, "active"))?;
    let right = directory::bind(&dn, &secret);
    let wrong = directory::bind(&dn, &strong_password());
    directory::remove(&dn);
    assert_eq!(
        right?,
        directory::SUCCESS,
        "slapd refused the argon2id hash"
    );
    assert_eq!(wrong?, directory::INVALID_CREDENTIALS);
    Ok(())
}
