//! No plaintext password anywhere: an end-to-end flow that handles
//! passwords (register and logins through the real API, a password change
//! and a migration applied to the real slapd by the directory effector
//! and `mailfleet account migrate`), with every process logging at debug,
//! then a scan of every record of every topic the flow wrote (raw key,
//! value and headers, all partitions, to the end) and of every file the
//! processes wrote (the test's folder: logs, state, RocksDB; plus what
//! slapd, the broker, Dovecot and Postfix logged meanwhile) for each
//! password, plain or in
//! base64 (at any alignment). A hit fails naming the topic, partition and
//! offset, or the file and line. Passwords are made at run time.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use mailfleet_api::{
    wire::{Channel, LoginRequest, RegisterRequest, Secret},
    ApiClient,
};
use mailfleet_events::{accounts::AccountPasswordChanged, Envelope};
use mailfleet_runtime::time::now_ms;
use mailfleet_tests::{api::strong_password, directory::*, secrets::*, *};

const WAIT: Duration = Duration::from_secs(60);

/// `mailfleet` with every log line down to debug, into `log`.
fn spawn_debug(config: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    Ok(Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("MAILFLEET_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?)
}

/// `mailfleet account <args>` with `stdin`; its stderr goes to `log`.
fn cli(config: &Path, args: &[&str], stdin: &str, log: &Path) -> anyhow::Result<String> {
    let mut child = Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .arg("account")
        .args(args)
        .env("MAILFLEET_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?,
        )
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().expect("piped"), stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8(out.stdout)?;
    anyhow::ensure!(
        out.status.success(),
        "mailfleet account {args:?}: {:?}\n{stdout}",
        out.status
    );
    Ok(stdout)
}

#[test]
fn the_scan_finds_a_password_in_any_encoding() {
    let secret = strong_password();
    let needles = [Needle::new("planted", &secret)];
    for prefix in ["", "x", "xy", "xyz"] {
        let wrapped = base64(format!("{prefix}{secret}-and-more").as_bytes());
        let url = wrapped.replace('+', "-").replace('/', "_");
        for text in [format!("{prefix}{secret}"), wrapped, url] {
            assert!(
                needles[0].find(text.as_bytes()).is_some(),
                "{prefix:?}: {text}"
            );
        }
    }
    assert!(needles[0].find(b"nothing to see").is_none());
    assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_reaches_a_topic_or_a_log() -> anyhow::Result<()> {
    let _slapd = SLAPD.read().await;
    require_slapd()?;
    let shared = SharedLogs::mark()?;
    let world = DirectoryWorld::new("secrets").await?;
    let (alice, bob) = (world.address("alice"), world.address("bob"));
    let (alice_dn, bob_dn) = (account_dn(PEOPLE, &alice), account_dn(PEOPLE, &bob));
    let paid_dn = account_dn(PAID_PEOPLE, &alice);
    let _cleanup = Cleanup(vec![alice_dn.clone(), bob_dn.clone(), paid_dn.clone()]);
    let (mail_root, paid_root) = (world.dir.join("mail"), world.dir.join("paid-mail"));
    std::fs::create_dir_all(&paid_root)?;
    let api_port = free_port();
    let extra = format!(
        "[api]\nlisten = \"127.0.0.1:{api_port}\"\nevents_topic = {accounts:?}\n\
         [consumers.storage]\nmail_root = {mail:?}\n",
        accounts = world.accounts,
        mail = mail_root.display().to_string(),
    );
    let api_config = world.write_config("api.toml", "", &extra)?;
    let directory_config = world.write_config("directory.toml", "", &extra)?;
    let mut children = Children(vec![
        spawn_debug(&api_config, &["api"], &world.dir.join("api.log"))?,
        spawn_debug(
            &directory_config,
            &["run", "directory"],
            &world.dir.join("directory.log"),
        )?,
    ]);
    let client = ApiClient::new(&format!("http://127.0.0.1:{api_port}"), None)?;
    let ready = async {
        while !client.ready().await.is_ok_and(|r| r.ready) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(WAIT, ready).await?;

    let secrets = [
        ("alice's password", strong_password()),
        ("bob's password", strong_password()),
        ("a wrong password", strong_password()),
        ("bob's new password", random_password()),
        (
            "the service DN's password",
            std::fs::read_to_string(service_password_file())?,
        ),
    ];
    let [alice_pw, bob_pw, wrong_pw, bob_new, _] = secrets.clone().map(|(_, s)| s);
    let cli_log = world.dir.join("cli.log");

    // Register: alice by the CLI (password on stdin), bob through the API.
    cli(
        &api_config,
        &["register", &alice, "--password-stdin"],
        &alice_pw,
        &cli_log,
    )?;
    client
        .register(&RegisterRequest {
            account: bob.clone(),
            password: Secret::new(bob_pw.clone()),
            plan: None,
            display_name: None,
        })
        .await?;
    // Logins: right by the CLI, wrong through the API (401).
    cli(
        &api_config,
        &["login", &alice, "--channel", "webmail", "--password-stdin"],
        &alice_pw,
        &cli_log,
    )?;
    let login = |password: &str| LoginRequest {
        channel: Channel::Webmail,
        ip: Some("192.0.2.7".into()),
        password: Some(Secret::new(password.to_string())),
    };
    let refused = client.login(&bob, &login(&wrong_pw)).await.unwrap_err();
    assert_eq!(refused.answer_status(), Some(401), "{refused}");
    client.login(&bob, &login(&bob_pw)).await?;
    wait_until("both entries in slapd", WAIT, || {
        bind(&alice_dn, &alice_pw).is_ok_and(|c| c == SUCCESS)
            && bind(&bob_dn, &bob_pw).is_ok_and(|c| c == SUCCESS)
    })
    .await?;

    // A password change (the hash on the topic), applied by the effector.
    let now = now_ms();
    let changed = AccountPasswordChanged {
        envelope: Envelope::new(format!("secrets:{bob}:password"), now, "secrets-test"),
        account: bob.clone(),
        password_hash: argon2_hash(&bob_new)?,
        reason: "reset".into(),
    };
    world.produce(&bob, &changed).await?;
    wait_until("bob binds with the new password", WAIT, || {
        bind(&bob_dn, &bob_new).is_ok_and(|c| c == SUCCESS)
    })
    .await?;

    // A migration: its one-time password is printed on stdout, once, and nowhere else.
    let printed = cli(
        &directory_config,
        &[
            "migrate",
            &alice,
            "--to-mail-root",
            &paid_root.display().to_string(),
            "--to-ldap-base",
            PAID_BASE,
        ],
        "",
        &cli_log,
    )?;
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("one-time password for "))
        .and_then(|l| l.rsplit(": ").next())
        .ok_or_else(|| anyhow::anyhow!("no one-time password printed:\n{printed}"))?
        .to_string();
    assert_eq!(bind(&paid_dn, &token)?, SUCCESS);
    children.terminate()?;

    let mut needles: Vec<Needle> = secrets
        .iter()
        .map(|(what, s)| Needle::new(*what, s))
        .collect();
    needles.push(Needle::new("the migration's one-time password", &token));
    let mut hits = Vec::new();
    let mut records = 0;
    for topic in [&world.accounts, &world.alerts, &world.deadletter] {
        let (read, found) = scan_topic(&needles, topic)?;
        records += read;
        hits.extend(found);
    }
    // Registered x2, logins x3 (one failed), the change, the migration's two,
    // the directory's own: the scan read real traffic.
    assert!(records >= 8, "only {records} records on the topics");
    let files = files_below(&world.dir);
    for path in &files {
        hits.extend(scan_file(&needles, path, 0)?);
    }
    let (lines, found) = shared.scan(&needles)?;
    hits.extend(found);
    assert!(
        lines > 0,
        "the shared servers logged nothing during the flow"
    );
    let api_log = std::fs::read_to_string(world.dir.join("api.log"))?;
    assert!(
        api_log.contains("account registered"),
        "the API logged nothing:\n{api_log}"
    );
    assert!(api_log.contains("DEBUG"), "the API did not log at debug");
    assert!(hits.is_empty(), "passwords found:\n{}", hits.join("\n"));
    eprintln!(
        "scanned {records} records on 3 topics, {} files of the test and {lines} lines of {} shared logs: no password",
        files.len(),
        shared.len()
    );
    Ok(())
}
