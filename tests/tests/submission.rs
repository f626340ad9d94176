//! The submission milter (`mailfleet submission`) with the real clamd
//! (`ops/clamav start`) and the real broker, spoken to as Postfix does
//! (`mailfleet_submission::milter::client`): verdicts and their events,
//! clamd or Kafka down, a misconfigured listener, a `kill -9` in the middle
//! of a message; and the same through the real Postfix submission
//! listener (127.0.0.1:1587) with SMTP AUTH against slapd, relaying to
//! `ops/smtp-sink`.

use std::{collections::BTreeMap, time::Duration};

use mailfleet_events::{
    mail::ScanVerdict,
    submission::{MessageSubmitted, SubmitAction},
};
use mailfleet_submission::milter::{
    client::{Envelope, MtaClient, POSTFIX_OFFER},
    reply::Reply,
};
use mailfleet_tests::{ingest::*, submission::*, *};

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_replies_and_events() -> anyhow::Result<()> {
    require_clamd()?;
    let milter = Milter::new("submission", 0, "", &kafka().brokers, &clamd_address()).await?;
    let mut children = Children(vec![milter.spawn(&[]).await?]);
    let login = Some("Alice@Example.test");

    let clean = milter
        .submit(login, "Q1", &simple_message("clean", "hello"))
        .await?;
    assert_eq!(clean, Reply::Continue);
    let eicar = message_with_attachment("virus", "report.txt", eicar().as_bytes());
    let virus = milter.submit(login, "Q2", &eicar).await?;
    let line = reply_line(&virus);
    assert!(
        line.starts_with("554 5.7.1 Virus Mailfleet.Test.EICAR")
            && line.ends_with("found; message not sent"),
        "{virus:?}"
    );
    let exe = message_with_attachment("exe", "setup.exe", b"MZ\x90\x00");
    let banned = milter.submit(login, "Q3", &exe).await?;
    assert_eq!(
        reply_line(&banned),
        "554 5.7.1 Attachment setup.exe refused (banned-extension); message not sent"
    );
    let anonymous = milter
        .submit(None, "Q4", &simple_message("anon", "x"))
        .await?;
    assert!(
        reply_line(&anonymous).starts_with("451 4.7.1 "),
        "{anonymous:?}"
    );

    let events = milter.events(3, Duration::from_secs(20))?;
    let by_queue: BTreeMap<&str, &MessageSubmitted> =
        events.iter().map(|e| (e.queue_id.as_str(), e)).collect();
    assert_eq!(
        by_queue.keys().copied().collect::<Vec<_>>(),
        ["Q1", "Q2", "Q3"]
    );
    let (c, v, b) = (by_queue["Q1"], by_queue["Q2"], by_queue["Q3"]);
    assert_eq!(
        (c.verdict, c.action),
        (ScanVerdict::Clean, SubmitAction::Accepted)
    );
    assert_eq!(
        (v.verdict, v.action),
        (ScanVerdict::Infected, SubmitAction::Rejected)
    );
    assert_eq!(
        (b.verdict, b.action),
        (ScanVerdict::Banned, SubmitAction::Rejected)
    );
    assert!(
        v.signature.as_deref().unwrap_or("").contains("EICAR"),
        "{v:?}"
    );
    assert_eq!(b.file.as_deref(), Some("setup.exe"));
    assert_eq!(b.rule.as_deref(), Some("banned-extension"));
    for e in &events {
        assert_eq!(e.account, "alice@example.test");
        assert_eq!(e.sasl_username, "Alice@Example.test");
        assert_eq!(e.recipients, ["bob@example.net", "carol@example.net"]);
        assert_eq!(e.client_address, "127.0.0.1");
        assert!(e
            .envelope
            .event_id
            .starts_with("submission:alice@example.test:"));
        assert!(e.scanner.starts_with("ClamAV"), "{}", e.scanner);
    }
    assert_eq!(c.message_id.as_deref(), Some("<clean@example.net>"));
    let log = milter.log_text();
    assert!(
        log.contains("{auth_authen}"),
        "the log names the missing macro:\n{log}"
    );

    let text = scrape(milter.metrics_port).unwrap_or_default();
    for name in mailfleet_submission::metrics::ALL {
        assert!(has_metric(&text, name), "{name} not served:\n{text}");
    }
    for (result, n) in [
        ("accepted", 1.0),
        ("infected", 1.0),
        ("banned", 1.0),
        ("no_auth", 1.0),
    ] {
        let label = format!("result=\"{result}\"");
        let got = metric_sum(&text, mailfleet_submission::metrics::MESSAGES, &[&label]);
        assert_eq!(got, n, "{result}");
    }
    children.terminate()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn clamd_or_kafka_down_is_a_temporary_failure() -> anyhow::Result<()> {
    require_clamd()?;
    let nowhere = format!("127.0.0.1:{}", free_port());
    let no_clamd = Milter::new("submission-noclamd", 0, "", &kafka().brokers, &nowhere).await?;
    let no_kafka = Milter::new(
        "submission-nokafka",
        0,
        "ack_timeout_ms = 2000",
        &nowhere,
        &clamd_address(),
    )
    .await?;
    let mut children = Children(vec![no_clamd.spawn(&[]).await?, no_kafka.spawn(&[]).await?]);
    let login = Some("alice@example.test");
    let mail = simple_message("down", "hello");

    let reply = no_clamd.submit(login, "Q1", &mail).await?;
    assert_eq!(
        reply_line(&reply),
        "451 4.7.1 Virus scanner unavailable; message not sent, try again later"
    );
    assert!(
        no_clamd.events(1, Duration::from_secs(3))?.is_empty(),
        "no verdict invented"
    );

    let started = std::time::Instant::now();
    let reply = no_kafka.submit(login, "Q2", &mail).await?;
    assert_eq!(
        reply_line(&reply),
        "451 4.7.1 Submission could not be recorded; message not sent, try again later"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    children.terminate()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_a_message_records_nothing_and_the_retry_records_it_once(
) -> anyhow::Result<()> {
    require_clamd()?;
    let milter = Milter::new("submission-kill", 0, "", &kafka().brokers, &clamd_address()).await?;
    let hold = [(mailfleet_submission::HOLD_ENV, "30000")];
    let mut children = Children(vec![milter.spawn(&hold).await?]);
    let mail = simple_message("kill", "sent once");
    let login = Some("alice@example.test");
    let pending = submit_in_background(milter.port, mail.clone());
    milter.wait_log("holding the message").await?;
    let held = children.0.last_mut().expect("the held milter");
    held.kill()?; // SIGKILL
    held.wait()?;
    children.0.pop();
    let cut = pending.await?;
    assert!(
        cut.is_err(),
        "Postfix sees the connection lost (and answers 4xx): {cut:?}"
    );
    assert!(milter.events(1, Duration::from_secs(3))?.is_empty());

    children.0.push(milter.spawn(&[]).await?);
    // Postfix gives the retry a new queue id; the message is the same.
    let reply = milter.submit(login, "Q2", &mail).await?;
    assert_eq!(reply, Reply::Continue);
    let events = milter.events(2, Duration::from_secs(5))?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].queue_id, "Q2");
    children.terminate()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cuts_a_scan_still_running_at_the_drain_timeout() -> anyhow::Result<()> {
    require_clamd()?;
    let keys = "drain_timeout_s = 2";
    let milter = Milter::new(
        "submission-drain",
        0,
        keys,
        &kafka().brokers,
        &clamd_address(),
    )
    .await?;
    // Each message is held 60 s at its end: far past the 2 s drain.
    let hold = [(mailfleet_submission::HOLD_ENV, "60000")];
    let mut children = Children(vec![milter.spawn(&hold).await?]);
    let mail = simple_message("drain", "cut at the drain");
    let pending = submit_in_background(milter.port, mail);
    milter.wait_log("holding the message").await?;
    let started = std::time::Instant::now();
    let mut held = children.0.pop().expect("the held milter");
    terminate(&mut held)?; // SIGTERM, and a clean exit
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the milter stopped after {took:?}, not at its 2 s drain"
    );
    let cut = pending.await?;
    assert!(
        cut.is_err(),
        "Postfix sees the connection cut (and tempfails): {cut:?}"
    );
    let log = milter.log_text();
    assert!(
        log.contains("drain timeout: closing the sessions still in flight unanswered"),
        "the cut is logged: {log}"
    );
    assert!(milter.events(1, Duration::from_secs(3))?.is_empty());
    Ok(())
}

/// Alice's message `mail` (queue id Q1) submitted to the milter on `port`
/// as Postfix does, on a task of its own: the reply, or how it was cut.
fn submit_in_background(
    port: u16,
    mail: String,
) -> tokio::task::JoinHandle<Result<Reply, mailfleet_submission::milter::client::ClientError>> {
    tokio::spawn(async move {
        let mut mta = MtaClient::connect(("127.0.0.1", port), POSTFIX_OFFER).await?;
        let env = Envelope {
            login: Some("alice@example.test"),
            queue_id: "Q1",
            sender: "alice@example.test",
            recipients: &["bob@example.net"],
            client_ip: "127.0.0.1",
        };
        mta.submit(&env, mail.as_bytes()).await
    })
}

/// The submitted events for the message whose subject is `subject`.
fn events_for(milter: &Milter, subject: &str) -> anyhow::Result<Vec<MessageSubmitted>> {
    let id = format!("<{subject}@example.net>");
    let all = milter.events(usize::MAX, Duration::from_secs(2))?;
    Ok(all
        .into_iter()
        .filter(|e| e.message_id.as_deref() == Some(id.as_str()))
        .collect())
}

/// swaks at the submission listener with the message in a file; the reply
/// to the end of DATA and the whole transcript.
fn submit_file(
    login: &str,
    password: &str,
    to: &str,
    raw: &str,
) -> anyhow::Result<(String, String)> {
    let file = scratch_dir("submission-mail").join("message.eml");
    std::fs::write(&file, raw)?;
    let transcript = swaks_submit(login, password, to, &file)?;
    Ok((data_reply(&transcript), transcript))
}

async fn wait_sink(subject: &str, n: usize) -> anyhow::Result<()> {
    wait_until(
        &format!("{n} message(s) {subject:?} at the sink"),
        Duration::from_secs(60),
        || sink_count(subject).is_ok_and(|c| c == n),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn milter_through_postfix_submission_nothing_unscanned_leaves_and_a_kill_loses_nothing(
) -> anyhow::Result<()> {
    require_clamd()?;
    directory::require_slapd()?;
    require_submission_postfix()?;
    let milter = Milter::new(
        "submission-postfix",
        MILTER_PORT,
        "",
        &kafka().brokers,
        &clamd_address(),
    )
    .await?;
    let policy = dunno_policy(POLICY_PORT).await?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let login = format!("sub-{tag}@example.test");
    let (password, _account) = account(&login)?;
    let to = format!("rcpt-{tag}@remote.test");
    let mut children = Children(vec![milter.spawn(&[]).await?]);

    // Clean: queued, relayed once, recorded as accepted.
    let clean = format!("clean-{tag}");
    let (reply, transcript) =
        submit_file(&login, &password, &to, &simple_message(&clean, "hello"))?;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{transcript}");
    wait_sink(&clean, 1).await?;
    // A virus: refused inline, naming the signature; nothing relayed.
    let virus = format!("virus-{tag}");
    let raw = message_with_attachment(&virus, "report.txt", eicar().as_bytes());
    let (reply, transcript) = submit_file(&login, &password, &to, &raw)?;
    assert!(
        reply.starts_with("554 5.7.1 Virus Mailfleet.Test.EICAR")
            && reply.contains("message not sent"),
        "{transcript}"
    );
    // An executable: refused, naming the file and the rule.
    let exe = format!("exe-{tag}");
    let raw = message_with_attachment(&exe, "setup.exe", b"MZ\x90\x00");
    let (reply, transcript) = submit_file(&login, &password, &to, &raw)?;
    assert_eq!(
        reply, "554 5.7.1 Attachment setup.exe refused (banned-extension); message not sent",
        "{transcript}"
    );
    for (subject, verdict, action) in [
        (&clean, ScanVerdict::Clean, SubmitAction::Accepted),
        (&virus, ScanVerdict::Infected, SubmitAction::Rejected),
        (&exe, ScanVerdict::Banned, SubmitAction::Rejected),
    ] {
        let events = events_for(&milter, subject)?;
        assert_eq!(events.len(), 1, "{subject}: {events:?}");
        let e = &events[0];
        assert_eq!((e.verdict, e.action), (verdict, action), "{subject}");
        assert_eq!(
            (e.account.as_str(), e.sasl_username.as_str()),
            (login.as_str(), login.as_str())
        );
        assert_eq!(e.sender, login);
        assert_eq!(e.recipients, std::slice::from_ref(&to));
        assert!(!e.queue_id.is_empty(), "Postfix's queue id: {e:?}");
        assert_eq!(e.client_address, "127.0.0.1");
    }
    assert_eq!(
        sink_count(&virus)? + sink_count(&exe)?,
        0,
        "nothing refused was relayed"
    );

    // kill -9 while Postfix waits for the verdict: the client gets 4xx,
    // nothing is relayed or recorded; after a restart the resubmission is
    // relayed once and recorded once.
    children.terminate()?;
    let held = milter
        .spawn(&[(mailfleet_submission::HOLD_ENV, "60000")])
        .await?;
    children.0.push(held);
    let kill = format!("kill-{tag}");
    let raw = simple_message(&kill, "sent exactly once");
    let first = {
        let (login, password, to, raw) = (login.clone(), password.clone(), to.clone(), raw.clone());
        std::thread::spawn(move || submit_file(&login, &password, &to, &raw))
    };
    milter.wait_log("holding the message").await?;
    let held = children.0.last_mut().expect("the held milter");
    held.kill()?; // SIGKILL
    held.wait()?;
    children.0.pop();
    let (reply, transcript) = first.join().expect("swaks thread")?;
    assert!(reply.starts_with('4'), "a temporary failure: {transcript}");
    children.0.push(milter.spawn(&[]).await?);
    assert_eq!(sink_count(&kill)?, 0);
    assert!(events_for(&milter, &kill)?.is_empty());
    let (reply, transcript) = submit_file(&login, &password, &to, &raw)?;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{transcript}");
    wait_sink(&kill, 1).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink_count(&kill)?, 1, "relayed exactly once");
    let events = events_for(&milter, &kill)?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, SubmitAction::Accepted);
    children.terminate()?;
    policy.abort();
    Ok(())
}
