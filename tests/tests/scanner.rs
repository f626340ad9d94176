//! The scanner consumer with the real clamd (`ops/clamav start`) over the
//! real broker, fed by a real `mailfleet lmtp`; and `mailfleet scan`.

use std::{process::Command, time::Duration};

use mailfleet_events::{
    accounts::AccountBlocked,
    admin::AdminAlert,
    mail::{MessageScanned, ScanVerdict},
};
use mailfleet_runtime::metrics::RETRIES;
use mailfleet_tests::{ingest::*, outage, *};

fn scanned(world: &MailWorld, want: usize) -> anyhow::Result<Vec<MessageScanned>> {
    decode_all(&read_topic(&world.scanned, want, Duration::from_secs(30))?)
}

/// Every record of `topic` up to its end now.
fn to_end(topic: &str) -> anyhow::Result<Vec<Consumed>> {
    Ok(
        mailfleet_runtime::read::read_to_end(&kafka(), topic, "scanner-test")?
            .into_iter()
            .map(|r| (r.key, r.payload))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_from_real_clamd_and_the_policy() -> anyhow::Result<()> {
    require_clamd()?;
    let world = MailWorld::new("scanner", kafka()).await?;
    let scanner_table = world.scanner_table(true, &["example.test"]);
    let metrics = free_port();
    let config = world.write_config("mail.toml", metrics, &scanner_table)?;
    let log = world.dir.join("children.log");
    let mut lmtp = spawn_mailfleet(&config, &["lmtp"], &log)?;
    let scanner_metrics = free_port();
    let cfg2 = world.write_config("scanner.toml", scanner_metrics, &scanner_table)?;
    let mut scanner = spawn_mailfleet(&cfg2, &["run", "scanner"], &log)?;
    wait_listening("the LMTP server", world.lmtp_port).await?;

    let (mut c, _) = LmtpClient::connect(world.lmtp_port)?;
    c.command("LHLO mx")?;
    let eicar = eicar();
    let mails = [
        (
            "remote@example.net",
            simple_message("clean", "nothing to see"),
        ),
        (
            "remote@example.net",
            message_with_attachment("virus", "report.txt", eicar.as_bytes()),
        ),
        (
            "alice@example.test",
            message_with_attachment("local-virus", "a.txt", eicar.as_bytes()),
        ),
        (
            "remote@example.net",
            message_with_attachment("banned", "invoice.pdf.exe", b"MZ\x90\x00"),
        ),
    ];
    for (from, mail) in &mails {
        let replies = c.deliver(from, &["bob@example.test"], mail)?;
        assert!(replies[0].starts_with("250"), "{replies:?}");
    }
    let verdicts = scanned(&world, mails.len())?;
    assert_eq!(verdicts.len(), mails.len(), "{verdicts:?}");
    let by_subject = |s: &str| {
        verdicts
            .iter()
            .find(|v| v.message_id.as_deref() == Some(&format!("{s}@example.net")))
            .unwrap_or_else(|| panic!("no verdict for {s}: {verdicts:?}"))
    };
    assert_eq!(by_subject("clean").verdict, ScanVerdict::Clean);
    let virus = by_subject("virus");
    assert_eq!(virus.verdict, ScanVerdict::Infected);
    let signature = virus.signature.as_deref().unwrap_or_default();
    assert!(signature.contains("Mailfleet.Test.EICAR"), "{signature}");
    assert!(virus.scanner.starts_with("ClamAV"), "{}", virus.scanner);
    let banned = by_subject("banned");
    assert_eq!(banned.verdict, ScanVerdict::Banned);
    assert_eq!(banned.file.as_deref(), Some("invoice.pdf.exe"));
    assert_eq!(banned.rule.as_deref(), Some("double-extension"));

    // A virus claiming a local sender is a verdict like any other: inbound
    // mail never blocks the account it claims (an envelope sender is not
    // proof), and raises no alert. The scanner commits a message only once
    // all its outputs are acknowledged: once it committed every message, a
    // block or an alert would be on the log as it is.
    assert_eq!(by_subject("local-virus").verdict, ScanVerdict::Infected);
    wait_applied(
        &world.dir.join("state/scanner"),
        std::slice::from_ref(&world.received),
    )
    .await?;
    let blocked: Vec<AccountBlocked> = decode_all(&to_end(&world.accounts)?)?;
    assert!(blocked.is_empty(), "inbound mail blocked: {blocked:?}");
    let alerts: Vec<AdminAlert> = decode_all(&to_end(&world.alerts)?)?;
    assert!(alerts.is_empty(), "{alerts:?}");
    let text = scrape(scanner_metrics).unwrap_or_default();
    for name in mailfleet_runtime::metrics::SCANNER_ALL {
        assert!(has_metric(&text, name), "{name} not emitted:\n{text}");
    }
    let verdicts_of = |v: &str| {
        let label = format!("verdict=\"{v}\"");
        metric_sum(&text, "mailfleet_scanner_verdicts_total", &[&label])
    };
    assert_eq!(
        (
            verdicts_of("clean"),
            verdicts_of("infected"),
            verdicts_of("banned")
        ),
        (1.0, 2.0, 1.0)
    );
    terminate(&mut scanner)?;
    terminate(&mut lmtp)
}

#[tokio::test(flavor = "multi_thread")]
async fn clamd_down_is_retried_and_never_becomes_a_verdict() -> anyhow::Result<()> {
    let world = MailWorld::new("scanner-down", kafka()).await?;
    let log = world.dir.join("children.log");
    let lmtp_cfg = world.write_config("lmtp.toml", free_port(), "")?;
    let mut lmtp = spawn_mailfleet(&lmtp_cfg, &["lmtp"], &log)?;
    // clamd "down": nothing listens on this port.
    let dead = free_port();
    let table = world
        .scanner_table(true, &[])
        .replace(&clamd_address(), &format!("127.0.0.1:{dead}"));
    let metrics = free_port();
    let down_cfg = world.write_config("down.toml", metrics, &table)?;
    let mut scanner = spawn_mailfleet(&down_cfg, &["run", "scanner"], &log)?;
    wait_listening("the LMTP server", world.lmtp_port).await?;
    let (mut c, _) = LmtpClient::connect(world.lmtp_port)?;
    c.command("LHLO mx")?;
    c.deliver(
        "a@example.net",
        &["b@example.test"],
        &simple_message("waits", "x"),
    )?;
    // Wait until the scanner is through with the message's first try,
    // whichever way it went: paused for a retry (counted once the batch is
    // committed, so any output of it is acknowledged by then), or committed
    // past it. Then the topic as it is holds every verdict there is.
    let store = world.dir.join("state/scanner");
    let ends = end_offsets(std::slice::from_ref(&world.received))?;
    wait_until("the scanner's first try", Duration::from_secs(30), || {
        let text = scrape(metrics).unwrap_or_default();
        metric_sum(&text, RETRIES, &["consumer=\"scanner\""]) >= 1.0
            || outage::caught_up(&outage::applied(&store), &ends)
    })
    .await?;
    let verdicts: Vec<MessageScanned> = decode_all(&to_end(&world.scanned)?)?;
    assert!(
        verdicts.is_empty(),
        "a verdict while clamd is down: {verdicts:?}"
    );
    let text = scrape(metrics).unwrap_or_default();
    let failures = metric_sum(
        &text,
        "mailfleet_scanner_failures_total",
        &["kind=\"clamd\""],
    );
    assert!(failures >= 1.0, "the clamd failure counted:\n{text}");
    let dead_letters = to_end(&world.deadletter)?;
    assert!(
        dead_letters.is_empty(),
        "a transient failure is not a dead letter"
    );
    terminate(&mut scanner)?;

    // clamd back (the real one): the same input now gets its verdict.
    require_clamd()?;
    let up_cfg = world.write_config("up.toml", free_port(), &world.scanner_table(true, &[]))?;
    let mut scanner = spawn_mailfleet(&up_cfg, &["run", "scanner"], &log)?;
    let verdicts = scanned(&world, 1)?;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].verdict, ScanVerdict::Clean);
    terminate(&mut scanner)?;
    terminate(&mut lmtp)
}

fn scan_cli(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(mailfleet_bin())
        .arg("scan")
        .args(args)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or_default().to_string();
    Ok((
        out.status.success(),
        last + &String::from_utf8_lossy(&out.stderr),
    ))
}

#[test]
fn the_scan_tool_prints_one_json_verdict() -> anyhow::Result<()> {
    require_clamd()?;
    let dir = scratch_dir("scan-cli");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map(|_| path.display().to_string())
    };
    let banned = write(
        "banned.eml",
        message_with_attachment("b", "invoice.pdf.exe", b"MZ"),
    )?;
    let virus = write(
        "virus.eml",
        message_with_attachment("v", "a.txt", eicar().as_bytes()),
    )?;
    let clean = write("clean.eml", simple_message("c", "hello"))?;
    let clamd = clamd_address();

    assert_eq!(
        scan_cli(&["--no-clamd", &banned])?,
        (
            true,
            r#"{"verdict":"banned","file":"invoice.pdf.exe","rule":"double-extension"}"#.into()
        )
    );
    assert_eq!(
        scan_cli(&["--clamd", &clamd, &clean])?,
        (true, r#"{"verdict":"clean"}"#.into())
    );
    let (ok, line) = scan_cli(&["--clamd", &clamd, &virus])?;
    assert!(ok, "{line}");
    let json: serde_json::Value = serde_json::from_str(line.trim())?;
    assert_eq!(json["verdict"], "infected");
    assert!(json["signature"]
        .as_str()
        .unwrap_or_default()
        .contains("Mailfleet.Test.EICAR"));

    // A scan that cannot be done fails, naming why; it never says clean.
    let (ok, out) = scan_cli(&["--clamd", &format!("127.0.0.1:{}", free_port()), &clean])?;
    assert!(!ok && out.contains("127.0.0.1"), "{out}");
    let (ok, out) = scan_cli(&["--no-clamd", "/no/such/file.eml"])?;
    assert!(!ok && out.contains("/no/such/file.eml"), "{out}");
    Ok(())
}
