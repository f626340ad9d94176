//! Spam scoring with the real rspamd (`ops/rspamd start`), the real clamd
//! and Dovecot: `mailfleet lmtp` → Kafka → `mailfleet run scanner` (clamd,
//! the policy, then rspamd) → `mailfleet run storage` → Maildir → IMAP.
//!
//! - GTUBE is rspamd's `reject`: quarantined with the score and symbol,
//!   never in a folder;
//! - a plain message is `no action`: INBOX, with `X-Spam-Flag: NO`;
//! - a message carrying `X-Mailfleet-Test: spammy` (the test symbol
//!   `MAILFLEET_TEST_SPAMMY` in `ops/rspamd.d`, 8 points) is `add header`:
//!   the Spam folder, with the SpamAssassin-style headers, as IMAP shows;
//! - rspamd stopped: mail is delivered unscored, saying so, within the
//!   timeout, and counted; started again, scoring resumes.

use std::{process::Command, time::Duration};

use mailfleet_events::mail::{
    MessageQuarantined, MessageScanned, MessageStored, QuarantineReason, ScanVerdict, SpamAction,
};
use mailfleet_tests::{ingest::*, *};

/// rspamd as `ops/rspamd start` runs it.
const RSPAMD: &str = "127.0.0.1:11333";

fn require_rspamd() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::net::TcpStream::connect(RSPAMD).is_ok(),
        "rspamd is not listening on {RSPAMD}: run `ops/rspamd start` (ops/test does)"
    );
    Ok(())
}

/// The scanner's `[consumers.scanner.spam]` table, rspamd at `address`.
fn spam_table(address: &str) -> String {
    format!(
        "[consumers.scanner.spam]\nenabled = true\naddress = {address:?}\n\
         timeout_ms = 3000\nretries = 1\n"
    )
}

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A message with `extra` headers, Message-ID `<subject>@example.net`.
fn message(subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: Sender <sender@example.net>\r\nTo: someone@example.test\r\n\
         Subject: {subject}\r\nMessage-ID: <{subject}@example.net>\r\n\
         Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n{extra}\r\n{body}\r\n"
    )
}

/// This world's events of type `E` on `topic`, waiting for `want` of
/// them (the storage writer records its settings on its input topic too).
fn events<E: mailfleet_events::Event>(topic: &str, want: usize) -> anyhow::Result<Vec<E>> {
    for _ in 0..60 {
        let found: Vec<E> = decode_some(&read_topic(topic, usize::MAX, Duration::from_secs(1))?);
        if found.len() >= want {
            return Ok(found);
        }
    }
    anyhow::bail!("fewer than {want} {} on {topic} after a minute", E::NAME)
}

/// The event whose Message-ID is `<subject>@example.net`.
fn by_message_id<'a, E>(
    events: &'a [E],
    id: impl Fn(&E) -> Option<String>,
    subject: &str,
) -> &'a E {
    let want = format!("{subject}@example.net");
    events
        .iter()
        .find(|e| id(e).as_deref() == Some(want.as_str()))
        .unwrap_or_else(|| panic!("no event for {subject}"))
}

/// The records of `records` that are `E`s (a topic carries several types).
fn decode_some<E: mailfleet_events::Event>(records: &[Consumed]) -> Vec<E> {
    records
        .iter()
        .filter_map(|(_, bytes)| {
            mailfleet_events::Registry::builtin()
                .decode::<E>(bytes)
                .ok()
        })
        .collect()
}

/// The header block of a raw message, unfolded lines.
fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.split("\r\n\r\n").next()?.split("\r\n").find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn rspamd_scores_and_the_writer_files_by_action() -> anyhow::Result<()> {
    require_clamd()?;
    require_rspamd()?;
    let (mail_root, owner) = dovecot()?;
    let world = MailWorld::new("spam", kafka()).await?;
    let tables = world.scanner_table(true, &[])
        + &spam_table(RSPAMD)
        + &world.storage_table(&mail_root, Some(owner), "");
    let log = world.dir.join("children.log");
    let mut children = Children::default();
    let roles: [(&str, &[&str]); 3] = [
        ("lmtp", &["lmtp"]),
        ("scanner", &["run", "scanner"]),
        ("storage", &["run", "storage"]),
    ];
    for (name, args) in roles {
        let cfg = world.write_config(&format!("{name}.toml"), free_port(), &tables)?;
        children.0.push(spawn_mailfleet(&cfg, args, &log)?);
    }
    wait_listening("the LMTP server", world.lmtp_port).await?;

    let tag = unique("sp");
    let user = format!("{tag}@example.test");
    let password = dovecot_user(&user)?;
    let (gtube, clean, spammy) = (
        format!("{tag}-gtube"),
        format!("{tag}-clean"),
        format!("{tag}-spammy"),
    );
    let text = "Hello, the minutes of Tuesday's meeting are below. Regards, Sam";
    let mails = [
        message(&gtube, "", &format!("{text}\r\n{GTUBE}")),
        message(&clean, "", text),
        message(&spammy, "X-Mailfleet-Test: spammy\r\n", text),
    ];
    let (mut c, _) = LmtpClient::connect(world.lmtp_port)?;
    c.command("LHLO mx")?;
    for mail in &mails {
        let replies = c.deliver("sender@example.net", &[&user], mail)?;
        assert!(replies[0].starts_with("250"), "{replies:?}");
    }

    let verdicts: Vec<MessageScanned> = events(&world.scanned, 3)?;
    let verdict = |s: &str| by_message_id(&verdicts, |e| e.message_id.clone(), s);
    let g = verdict(&gtube);
    assert_eq!(g.verdict, ScanVerdict::Spam, "{g:?}");
    let g_spam = g.spam.as_ref().expect("GTUBE scored");
    assert_eq!(g_spam.action, SpamAction::Reject);
    assert!(
        g_spam.symbols.iter().any(|s| s.name == "GTUBE"),
        "{g_spam:?}"
    );
    assert_eq!(g_spam.required, 15.0);
    let c_spam = verdict(&clean).spam.as_ref().expect("clean scored");
    assert_eq!(c_spam.action, SpamAction::NoAction, "{c_spam:?}");
    assert!(!c_spam.flagged);
    let s_spam = verdict(&spammy).spam.as_ref().expect("spammy scored");
    assert_eq!(s_spam.action, SpamAction::AddHeader, "{s_spam:?}");
    assert!(s_spam.flagged);
    assert!(
        s_spam
            .symbols
            .iter()
            .any(|s| s.name == "MAILFLEET_TEST_SPAMMY"),
        "{s_spam:?}"
    );

    // The writer's answers: two stored, one quarantined with its score.
    let stored: Vec<MessageStored> = events(&world.stored, 2)?;
    let quarantined: Vec<MessageQuarantined> = events(&world.stored, 1)?;
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].reason, QuarantineReason::Spam);
    assert!(
        quarantined[0].detail.contains("reject") && quarantined[0].detail.contains("GTUBE"),
        "{}",
        quarantined[0].detail
    );
    let folder = |s: &str| &by_message_id(&stored, |e| e.message_id.clone(), s).folder;
    assert_eq!(folder(&clean), "INBOX");
    assert_eq!(folder(&spammy), "Spam");

    // Dovecot serves them where mail clients and Sieve look.
    let inbox = imap_fetch(&user, &password, "INBOX")?;
    assert_eq!(inbox.len(), 1, "only the clean message in INBOX");
    let inbox = String::from_utf8_lossy(&inbox[0]);
    assert_eq!(header(&inbox, "X-Spam-Flag"), Some("NO"), "{inbox}");
    let spam = imap_fetch(&user, &password, "Spam")?;
    assert_eq!(spam.len(), 1, "the spammy message in Spam");
    let spam = String::from_utf8_lossy(&spam[0]);
    assert_eq!(header(&spam, "X-Spam-Flag"), Some("YES"), "{spam}");
    let score: f64 = header(&spam, "X-Spam-Score").unwrap_or("x").parse()?;
    assert!((6.0..15.0).contains(&score), "{spam}");
    let status = header(&spam, "X-Spam-Status").unwrap_or_default();
    assert!(status.starts_with("Yes, score="), "{spam}");
    assert!(spam.contains("MAILFLEET_TEST_SPAMMY"), "{spam}");
    assert!(spam.contains(&format!("Subject: {spammy}")), "{spam}");
    Ok(())
}

/// Starts rspamd again when the test ends, however it ends.
struct RestartRspamd;

impl Drop for RestartRspamd {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("ops/rspamd"))
            .arg("start")
            .status();
    }
}

fn ops_rspamd(action: &str) -> anyhow::Result<()> {
    let status = Command::new(repo_root().join("ops/rspamd"))
        .arg(action)
        .status()?;
    anyhow::ensure!(status.success(), "ops/rspamd {action} failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rspamd_down_delivers_unscored_then_scoring_resumes() -> anyhow::Result<()> {
    require_rspamd()?;
    let world = MailWorld::new("spam-down", kafka()).await?;
    let mail_root = world.dir.join("mail");
    let tables = world.scanner_table(false, &[])
        + &spam_table(RSPAMD)
        + &world.storage_table(&mail_root, None, "");
    let log = world.dir.join("children.log");
    let metrics = free_port();
    let mut children = Children::default();
    let lmtp_cfg = world.write_config("lmtp.toml", free_port(), &tables)?;
    children
        .0
        .push(spawn_mailfleet(&lmtp_cfg, &["lmtp"], &log)?);
    let scanner_cfg = world.write_config("scanner.toml", metrics, &tables)?;
    children.0.push(spawn_mailfleet(
        &scanner_cfg,
        &["run", "scanner", "storage"],
        &log,
    )?);
    wait_listening("the LMTP server", world.lmtp_port).await?;

    let _restart = RestartRspamd;
    ops_rspamd("stop")?;
    let tag = unique("down");
    let user = format!("{tag}@example.test");
    let body = "Hello, the minutes of Tuesday's meeting are below. Regards, Sam";
    let (mut c, _) = LmtpClient::connect(world.lmtp_port)?;
    c.command("LHLO mx")?;
    let down = format!("{tag}-down");
    let replies = c.deliver("sender@example.net", &[&user], &message(&down, "", body))?;
    assert!(replies[0].starts_with("250"), "{replies:?}");
    let verdicts: Vec<MessageScanned> = events(&world.scanned, 1)?;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].verdict, ScanVerdict::Clean);
    assert_eq!(verdicts[0].spam, None);
    let why = verdicts[0].spam_error.as_deref().unwrap_or_default();
    assert!(why.contains(RSPAMD), "{why}");
    let stored: Vec<MessageStored> = events(&world.stored, 1)?;
    assert_eq!(stored.len(), 1, "delivered, not lost");
    let file = mail_root
        .join("example.test")
        .join(&tag)
        .join("Maildir/new")
        .join(&stored[0].file);
    let raw = std::fs::read_to_string(&file)?;
    let status = header(&raw, "X-Spam-Status").unwrap_or_default();
    assert!(status.starts_with("Unscored (rspamd at"), "{raw}");
    let text = scrape(metrics).unwrap_or_default();
    assert_eq!(
        metric_sum(
            &text,
            "mailfleet_scanner_spam_unscored_total",
            &["reason=\"rspamd\""]
        ),
        1.0,
        "{text}"
    );

    ops_rspamd("start")?;
    let up = format!("{tag}-up");
    let spammy = message(&up, "X-Mailfleet-Test: spammy\r\n", body);
    let replies = c.deliver("sender@example.net", &[&user], &spammy)?;
    assert!(replies[0].starts_with("250"), "{replies:?}");
    let verdicts: Vec<MessageScanned> = events(&world.scanned, 2)?;
    let after = by_message_id(&verdicts, |e| e.message_id.clone(), &up);
    let spam = after
        .spam
        .as_ref()
        .expect("scored again once rspamd is back");
    assert_eq!(spam.action, SpamAction::AddHeader);
    assert_eq!(after.spam_error, None);
    Ok(())
}
