//! SIGTERM drains the servers Postfix talks to (`mailfleet lmtp`,
//! `mailfleet policy`), real binaries on the real broker: what is in
//! flight at the signal is finished and answered, idle connections close
//! at once, and the process exits 0 within its drain timeout.
//!
//! What it caught: both servers stopped accepting on SIGTERM and then
//! returned at once, so the process exited under its sessions: an LMTP
//! transaction in DATA lost its connection (Postfix redid it, and logged
//! an error, on every deploy), and a policy request waiting for its
//! decision got no answer.

use std::{
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use mailfleet_blob::BlobStore;
use mailfleet_events::mail::MessageReceived;
use mailfleet_runtime::read;
use mailfleet_tests::{faults::FaultWorld, ingest::*, *};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// SIGTERM `child`; when it was sent.
fn sigterm(child: &Child) -> anyhow::Result<Instant> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM: {status}");
    Ok(Instant::now())
}

/// Wait for `child`, signalled at `since`, to exit 0 within `within`;
/// returns how long it took.
fn exits_cleanly(child: &mut Child, since: Instant, within: Duration) -> anyhow::Result<Duration> {
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "exited with {status}");
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < within,
            "still running {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// `mailfleet lmtp` on a fresh mail world, with `lmtp.drain_timeout_s`.
async fn lmtp(
    name: &str,
    drain_s: u64,
) -> anyhow::Result<(MailWorld, Children, std::path::PathBuf)> {
    let world = MailWorld::new(name, kafka()).await?;
    let extra = format!("drain_timeout_s = {drain_s}\n");
    let config = world.write_config("lmtp.toml", free_port(), &extra)?;
    let log = world.dir.join("lmtp.log");
    let child = Children(vec![spawn_mailfleet(&config, &["lmtp"], &log)?]);
    wait_listening("the LMTP server", world.lmtp_port).await?;
    Ok((world, child, log))
}

/// A client in DATA: the envelope accepted, `354` read.
fn in_data(port: u16) -> anyhow::Result<LmtpClient> {
    let (mut c, _) = LmtpClient::connect(port)?;
    c.command("LHLO mx.test")?;
    anyhow::ensure!(c.command("MAIL FROM:<a@example.net>")?.starts_with("250"));
    anyhow::ensure!(c.command("RCPT TO:<b@example.test>")?.starts_with("250"));
    let go = c.command("DATA")?;
    anyhow::ensure!(go.starts_with("354"), "DATA: {go}");
    Ok(c)
}

#[tokio::test(flavor = "multi_thread")]
async fn lmtp_finishes_the_transaction_in_data_and_closes_idle_sessions() -> anyhow::Result<()> {
    let (world, mut child, log) = lmtp("drain-lmtp", 20).await?;
    let port = world.lmtp_port;
    let message = simple_message("drained", &"a line of the body\r\n".repeat(50));
    let bytes = dot_stuff(message.as_bytes());
    let (head, tail) = bytes.split_at(bytes.len() / 3);
    let mut busy = in_data(port)?;
    busy.send(head)?;
    let (mut idle, _) = LmtpClient::connect(port)?;
    idle.command("LHLO idle.test")?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = sigterm(&child.0[0])?;
    // The idle session: 421 at once (or closed at once), then closed.
    if let Ok(said) = idle.reply() {
        assert!(said[0].starts_with("421 4.3.2 "), "{said:?}");
        assert!(idle.reply().is_err(), "the idle session stayed open");
    }
    let waited = signalled.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");

    // The rest of the message, slowly, well after the signal.
    for chunk in tail.chunks(tail.len() / 5 + 1) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        busy.send(chunk)?;
    }
    let answer = busy.reply()?;
    assert!(
        answer[0].starts_with("250 2.0.0 <b@example.test>"),
        "{answer:?}"
    );
    // Then the transaction is over: 421, and closed.
    let said = busy.reply()?;
    assert!(said[0].starts_with("421 4.3.2 "), "{said:?}");
    assert!(busy.reply().is_err(), "the session stayed open");
    let took = tokio::task::block_in_place(|| {
        exits_cleanly(&mut child.0[0], signalled, Duration::from_secs(20))
    })?;
    eprintln!("lmtp exited {took:?} after SIGTERM");

    let events: Vec<MessageReceived> = read::read_events(&kafka(), &world.received, "drain")?;
    let subjects: Vec<_> = events.iter().map(|e| e.subject.clone()).collect();
    assert_eq!(subjects, [Some("drained".to_string())]);
    let blobs = BlobStore::open(world.blob_dir())?;
    assert_eq!(blobs.get(&events[0].blob_id)?, message.as_bytes());
    let text = read_log(&log);
    assert!(text.contains("draining the sessions in flight"), "{text}");
    assert!(text.contains("drained: every session ended"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lmtp_cuts_a_stalled_transaction_at_the_drain_timeout() -> anyhow::Result<()> {
    let (world, mut child, log) = lmtp("drain-lmtp-cut", 2).await?;
    let mut stalled = in_data(world.lmtp_port)?;
    stalled.send(b"Subject: stalled\r\n\r\nand nothing more\r\n")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = sigterm(&child.0[0])?;
    let took = tokio::task::block_in_place(|| {
        exits_cleanly(&mut child.0[0], signalled, Duration::from_secs(10))
    })?;
    // It waited for the transaction, up to the limit, not longer.
    assert!(took >= Duration::from_secs(2), "exited after {took:?}");
    assert!(stalled.reply().is_err(), "a cut transaction got an answer");
    let events: Vec<MessageReceived> = read::read_events(&kafka(), &world.received, "drain")?;
    assert!(events.is_empty(), "announced: {events:?}");
    let text = read_log(&log);
    assert!(
        text.contains("drain timeout") && text.contains("cut=1"),
        "{text}"
    );
    Ok(())
}

/// A greylisting RCPT request (a new triplet: the decision is a deferral).
fn rcpt_request(n: u32) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.{n}\n\
         client_name=mx{n}.sender.test\nhelo_name=mx{n}.sender.test\n\
         sender=s{n}@sender.test\nrecipient=rcpt@drain.test\ninstance=drain-{n}\n\n"
    )
}

async fn connect(addr: &str) -> anyhow::Result<BufReader<TcpStream>> {
    Ok(BufReader::new(TcpStream::connect(addr).await?))
}

/// One answer (`action=...`), or `None` if the server closed first.
async fn answer(conn: &mut BufReader<TcpStream>) -> anyhow::Result<Option<String>> {
    let read = async {
        let (mut action, mut blank) = (String::new(), String::new());
        conn.read_line(&mut action).await?;
        conn.read_line(&mut blank).await?;
        anyhow::Ok((!action.is_empty() && blank == "\n").then(|| action.trim_end().to_string()))
    };
    tokio::time::timeout(Duration::from_secs(60), read).await?
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_answers_the_requests_in_flight_and_closes_idle_connections() -> anyhow::Result<()> {
    let world = FaultWorld::new("drain-policy", kafka()).await?;
    let port = free_port();
    // No greylist consumer yet: the requests wait for their decisions.
    let policy = format!(
        "listen = \"127.0.0.1:{port}\"\nhost = \"mx-drain\"\ntimeout_ms = 40000\n\
         fail_mode = \"dunno\"\ndrain_timeout_s = 50\ncheck_submitters = false\n"
    );
    let config = world.grey_config("grey.toml", free_port(), &policy)?;
    let log = world.mail.dir.join("children.log");
    let mut children = Children(vec![spawn_mailfleet(&config, &["policy"], &log)?]);
    wait_listening("the policy server", port).await?;
    let addr = format!("127.0.0.1:{port}");
    // Idle, after an answer.
    let mut idle = connect(&addr).await?;
    let connect_state = "request=smtpd_access_policy\nprotocol_state=CONNECT\n\n";
    idle.get_mut().write_all(connect_state.as_bytes()).await?;
    assert_eq!(answer(&mut idle).await?.as_deref(), Some("action=DUNNO"));
    // Whole, waiting for its decision; half sent.
    let mut waiting = connect(&addr).await?;
    waiting
        .get_mut()
        .write_all(rcpt_request(1).as_bytes())
        .await?;
    let mut half = connect(&addr).await?;
    let second = rcpt_request(2);
    let (head, tail) = second.split_at(second.len() / 2);
    half.get_mut().write_all(head.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = sigterm(&children.0[0])?;
    assert_eq!(
        answer(&mut idle).await?,
        None,
        "the idle connection answered"
    );
    let waited = signalled.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "idle closed after {waited:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    half.get_mut().write_all(tail.as_bytes()).await?;
    // The decisions come once the greylist consumer runs.
    let greylist = world.grey_config("greylist.toml", free_port(), &policy)?;
    children
        .0
        .push(spawn_mailfleet(&greylist, &["run", "greylist"], &log)?);
    for (what, conn) in [("waiting", &mut waiting), ("half", &mut half)] {
        let Some(action) = answer(conn).await? else {
            anyhow::bail!("{what}: closed unanswered");
        };
        assert!(action.contains("Greylisted"), "{what}: {action}");
        assert_eq!(
            answer(conn).await?,
            None,
            "{what}: not closed after its answer"
        );
    }
    let took = tokio::task::block_in_place(|| {
        exits_cleanly(&mut children.0[0], signalled, Duration::from_secs(50))
    })?;
    eprintln!("policy exited {took:?} after SIGTERM");
    // (How many sessions the first line counts depends on whether the idle
    // one closed before the count.)
    let text = read_log(&log);
    assert!(text.contains("draining the sessions in flight"), "{text}");
    assert!(text.contains("drained: every session ended"), "{text}");
    let mut consumer = children.0.remove(1);
    terminate(&mut consumer)
}

#[test]
fn a_drain_timeout_of_zero_is_named_at_start() -> anyhow::Result<()> {
    let dir = scratch_dir("drain-config");
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[metrics]\nlisten = \"\"\n[lmtp]\ndrain_timeout_s = 0\n[policy]\ndrain_timeout_s = 0\n",
    )?;
    for command in ["lmtp", "policy"] {
        let out = Command::new(mailfleet_bin())
            .arg("--config")
            .arg(&config)
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains("lmtp.drain_timeout_s = 0: must be > 0"),
            "{err}"
        );
        assert!(
            err.contains("policy.drain_timeout_s = 0: must be > 0"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    Ok(())
}
