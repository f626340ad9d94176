//! The forged-sender attack (G1 part 1), through the real Postfix on the MX
//! path: a stranger sends EICAR with `MAIL FROM:<victim@our-domain>` to
//! one of our users. The victim is an active account in a local domain
//! (`consumers.scanner.local_domains` names it). The mail goes swaks →
//! Postfix (127.0.0.1:2525, unauthenticated, as any MX client) →
//! `mailfleet lmtp` on 2424 → the scanner with the real clamd → the storage
//! writer, which quarantines it. The victim's account must stay active:
//! no `AccountBlocked`, no status change. Until G1 the scanner blocked the
//! envelope sender of any virus in a local domain, so this blocked any
//! account anyone named.

use std::time::Duration;

use mailfleet_events::{
    accounts::{AccountBlocked, AccountRegistered, AccountStatus, AccountStatusChanged},
    mail::{MessageQuarantined, MessageScanned, ScanVerdict},
    Envelope, Event, Registry,
};
use mailfleet_runtime::{producer::EventProducer, time::now_ms};
use mailfleet_tests::{ingest::*, *};

/// Where ops/postfix's virtual_transport delivers in the test setup.
const LMTP_PORT: u16 = 2424;

/// Every event of type `E` on `topic` that `keep` keeps.
fn events<E: Event>(topic: &str, keep: impl Fn(&E) -> bool) -> anyhow::Result<Vec<E>> {
    Ok(read_topic(topic, usize::MAX, Duration::from_secs(1))?
        .iter()
        .filter_map(|(_, b)| Registry::builtin().decode::<E>(b).ok())
        .filter(|e| keep(e))
        .collect())
}

/// Wait (up to 60 s) for an event of type `E` on `topic` that `keep` keeps.
async fn wait_for<E: Event>(
    topic: &str,
    what: &str,
    keep: impl Fn(&E) -> bool,
) -> anyhow::Result<E> {
    for _ in 0..60 {
        if let Some(e) = events::<E>(topic, &keep)?.into_iter().next() {
            return Ok(e);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("no {what} on {topic} within 60 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_local_sender_of_a_virus_blocks_nobody() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::net::TcpStream::connect("127.0.0.1:2525").is_ok(),
        "Postfix is not listening on 127.0.0.1:2525: run \
         `MAILFLEET_POSTFIX_TRANSPORT=lmtp:inet:127.0.0.1:2424 ops/postfix start` (ops/test does)"
    );
    require_clamd()?;
    let mut world = MailWorld::new("forged", kafka()).await?;
    world.lmtp_port = LMTP_PORT;
    let mail_root = world.dir.join("mail");
    let tables = world.scanner_table(true, &["example.test"])
        + &world.storage_table(&mail_root, None, "")
        + &format!(
            "[consumers.lifecycle]\nevents_topic = {a:?}\nnotify_topic = {n:?}\nstatus_topic = {s:?}\n",
            a = world.accounts,
            n = world.notify,
            s = world.status,
        );
    let log = world.dir.join("children.log");
    let lmtp_cfg = world.write_config("lmtp.toml", free_port(), &tables)?;
    let run_cfg = world.write_config("run.toml", free_port(), &tables)?;
    let mut children = Children(vec![
        spawn_mailfleet(&lmtp_cfg, &["lmtp"], &log)?,
        spawn_mailfleet(&run_cfg, &["run", "scanner", "storage", "lifecycle"], &log)?,
    ]);
    wait_until("the LMTP server on 2424", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", LMTP_PORT)).is_ok()
    })
    .await?;

    // The victim: an active account of ours.
    let tag = unique("forged");
    let victim = format!("{tag}-victim@example.test");
    let secret = format!("Aa1{:032x}", rand::random::<u128>());
    let registered = AccountRegistered {
        envelope: Envelope::new(format!("test:register:{victim}"), now_ms(), "test"),
        account: victim.clone(),
        password_hash: mailfleet_password::hash(&secret)?,
        plan: "free".into(),
        display_name: None,
    };
    let producer = EventProducer::new(&kafka(), "forged-test")?;
    producer
        .send(&world.accounts, victim.as_bytes(), &registered)
        .await?;
    wait_for::<AccountStatusChanged>(&world.status, "the victim active", |s| {
        s.account == victim && s.to == AccountStatus::Active
    })
    .await?;

    // The attack: EICAR "from" the victim, to another of our users.
    let subject = format!("{tag}-virus");
    let mail = message_with_attachment(&subject, "invoice.txt", eicar().as_bytes());
    let path = world.dir.join("virus.eml");
    std::fs::write(&path, mail)?;
    let to = format!("{tag}-rcpt@example.test");
    swaks_send(&victim, &to, &path)?;

    let message_id = format!("{subject}@example.net");
    let verdict = wait_for::<MessageScanned>(&world.scanned, "the virus's verdict", |s| {
        s.message_id.as_deref() == Some(message_id.as_str())
    })
    .await?;
    assert_eq!(verdict.verdict, ScanVerdict::Infected, "{verdict:?}");
    assert_eq!(
        verdict.sender, victim,
        "the forged envelope sender came through"
    );
    // Quarantined as today, by the writer downstream of the verdict.
    wait_for::<MessageQuarantined>(&world.stored, "the quarantine", |q| {
        q.message_id.as_deref() == Some(message_id.as_str())
    })
    .await?;

    // Positive marker: the lifecycle has applied everything on the accounts
    // topic up to now, which is after the verdict's batch (a block would be
    // written with its verdict).
    wait_applied(
        &world.dir.join("state/lifecycle"),
        std::slice::from_ref(&world.accounts),
    )
    .await?;
    let blocked = events::<AccountBlocked>(&world.accounts, |b| b.account == victim)?;
    assert!(
        blocked.is_empty(),
        "a forged sender blocked its victim: {blocked:?}"
    );
    let statuses = events::<AccountStatusChanged>(&world.status, |s| s.account == victim)?;
    assert_eq!(
        statuses.last().map(|s| s.to),
        Some(AccountStatus::Active),
        "the victim stays active: {statuses:?}"
    );
    children.terminate()
}
