//! STARTTLS on LMTP (`[lmtp.tls]`, `lmtp.require_tls`) against the real
//! `mailfleet lmtp` and the real broker, with a test CA of the test's own
//! (`ops/certs`):
//! - a private Postfix with TLS on (`MAILFLEET_POSTFIX_TLS=1`:
//!   `lmtp_tls_security_level = encrypt`, the test CA in `lmtp_tls_CAfile`)
//!   delivers over LMTP to a server that requires TLS; the mail arrives
//!   (`MessageReceived`) and Postfix's log shows the verified TLS session;
//! - after STARTTLS the session starts over (RFC 3207): LHLO and XFORWARD
//!   are forgotten, and commands the client pipelined behind STARTTLS, in
//!   the clear, are dropped, never run over TLS (the STARTTLS command
//!   injection of CVE-2011-0411);
//! - with `require_tls`, a plaintext client gets `530 5.7.0` at MAIL;
//! - a failed handshake (a client that trusts another CA; plaintext after
//!   `220`) closes the connection and is logged with the client and
//!   rustls's reason, and counted.

use std::{path::Path, process::Child, time::Duration};

use mailfleet_events::mail::MessageReceived;
use mailfleet_tests::{ingest::*, postfix_tls::*, *};
use mailfleet_tls::{server_name, ClientTls};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
};

const HANDSHAKES: &str = "mailfleet_lmtp_tls_handshakes_total";

/// A `mailfleet lmtp` offering STARTTLS with `certs`'s server certificate.
struct Lmtp {
    world: MailWorld,
    child: Child,
    metrics: u16,
    log: std::path::PathBuf,
}

async fn start(name: &str, certs: &Path, require_tls: bool) -> anyhow::Result<Lmtp> {
    let world = MailWorld::new(name, kafka()).await?;
    start_on(world, certs, require_tls).await
}

async fn start_on(world: MailWorld, certs: &Path, require_tls: bool) -> anyhow::Result<Lmtp> {
    let metrics = free_port();
    let config = world.write_config("lmtp.toml", metrics, &lmtp_tls_keys(certs, require_tls))?;
    let log = world.dir.join("lmtp.log");
    let child = spawn_mailfleet(&config, &["lmtp"], &log)?;
    wait_listening("the LMTP server", world.lmtp_port).await?;
    Ok(Lmtp {
        world,
        child,
        metrics,
        log,
    })
}

impl Lmtp {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The handshake counter with `result`, from the metrics endpoint.
    fn handshakes(&self, result: &str) -> f64 {
        let series = format!("{HANDSHAKES}{{result=\"{result}\"}} ");
        scrape(self.metrics)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child)
    }
}

/// A raw LMTP client over any stream: bytes out as given, replies in.
struct Client<S> {
    conn: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: &str) -> anyhow::Result<()> {
        self.conn.get_mut().write_all(bytes.as_bytes()).await?;
        self.conn.get_mut().flush().await?;
        Ok(())
    }

    /// One reply, all its lines.
    async fn reply(&mut self) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(30), self.conn.read_line(&mut line));
            anyhow::ensure!(read.await?? > 0, "connection closed; got {lines:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Ok(lines);
            }
        }
    }

    /// Send one command; the last line of its reply.
    async fn command(&mut self, line: &str) -> anyhow::Result<String> {
        self.send(&format!("{line}\r\n")).await?;
        Ok(self.reply().await?.pop().unwrap_or_default())
    }
}

/// Connect and read the greeting.
async fn connect(port: u16) -> anyhow::Result<Client<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut client = Client {
        conn: BufReader::new(tcp),
    };
    let greeting = client.reply().await?;
    anyhow::ensure!(greeting[0].starts_with("220 "), "{greeting:?}");
    Ok(client)
}

/// The TLS handshake after `220`, trusting `ca` for `localhost`.
async fn handshake(
    client: Client<TcpStream>,
    ca: &Path,
) -> std::io::Result<Client<mailfleet_tls::ClientStream<TcpStream>>> {
    assert!(
        client.conn.buffer().is_empty(),
        "the server said more after 220: {:?}",
        String::from_utf8_lossy(client.conn.buffer())
    );
    let tls = ClientTls {
        ca_file: Some(ca.to_path_buf()),
        ..ClientTls::default()
    };
    let connector = tls.connector().map_err(std::io::Error::other)?;
    let name = server_name("localhost").map_err(std::io::Error::other)?;
    let stream = connector.connect(name, client.conn.into_inner()).await?;
    Ok(Client {
        conn: BufReader::new(stream),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_starts_over_and_drops_what_was_pipelined_in_the_clear() -> anyhow::Result<()> {
    let certs = test_ca("lmtp-starttls")?;
    let lmtp = start("lmtp-starttls", &certs, false).await?;
    let mut c = connect(lmtp.world.lmtp_port).await?;
    // One write: LHLO, XFORWARD, STARTTLS and, behind it in the clear, what
    // a man in the middle would inject into the encrypted session.
    c.send(
        "LHLO mx.example.test\r\nXFORWARD ADDR=192.0.2.66\r\nSTARTTLS\r\n\
         LHLO injected.example\r\nMAIL FROM:<injected@example.net>\r\n",
    )
    .await?;
    let lhlo = c.reply().await?;
    assert!(lhlo.contains(&"250-STARTTLS".to_string()), "{lhlo:?}");
    assert_eq!(c.reply().await?, ["250 2.0.0 Ok"]);
    assert_eq!(c.reply().await?, ["220 2.0.0 Ready to start TLS"]);
    let mut tls = handshake(c, &certs.join("ca.pem")).await?;

    // The first reply over TLS is to the first command sent over TLS: the
    // injected LHLO and MAIL were not run, and the plaintext LHLO is gone.
    assert_eq!(tls.command("NOOP").await?, "250 2.0.0 Ok");
    assert_eq!(
        tls.command("MAIL FROM:<a@example.net>").await?,
        "503 5.5.1 Send LHLO first"
    );
    tls.send("LHLO mx.example.test\r\n").await?;
    let lhlo = tls.reply().await?;
    assert!(!lhlo.iter().any(|l| l.contains("STARTTLS")), "{lhlo:?}");
    assert_eq!(
        tls.command("STARTTLS").await?,
        "503 5.5.1 TLS already active"
    );
    let tag = unique("tls");
    let message = simple_message(&tag, "over STARTTLS");
    for (command, want) in [
        ("MAIL FROM:<a@example.net>", "250"),
        ("RCPT TO:<b@example.test>", "250"),
        ("DATA", "354"),
    ] {
        let answer = tls.command(command).await?;
        assert!(answer.starts_with(want), "{command}: {answer}");
    }
    tls.send(&String::from_utf8(dot_stuff(message.as_bytes()))?)
        .await?;
    let done = tls.reply().await?;
    assert!(
        done[0].starts_with("250 2.0.0 <b@example.test>"),
        "{done:?}"
    );
    assert_eq!(tls.command("QUIT").await?, "221 2.0.0 Bye");

    let records = read_topic(&lmtp.world.received, 1, Duration::from_secs(10))?;
    let events: Vec<MessageReceived> = decode_all(&records)?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].message_id.as_deref(),
        Some(&*format!("{tag}@example.net"))
    );
    assert_eq!(events[0].lhlo, "mx.example.test");
    assert_eq!(
        events[0].client_address, None,
        "XFORWARD from before STARTTLS carried over"
    );
    assert_eq!(lmtp.handshakes("ok"), 1.0);
    lmtp.stop()
}

#[tokio::test(flavor = "multi_thread")]
async fn required_tls_refuses_plaintext_mail_and_failed_handshakes_are_logged() -> anyhow::Result<()>
{
    let certs = test_ca("lmtp-require-tls")?;
    let lmtp = start("lmtp-require-tls", &certs, true).await?;
    let port = lmtp.world.lmtp_port;

    let mut plain = connect(port).await?;
    plain.send("LHLO mx\r\n").await?;
    assert!(plain.reply().await?.contains(&"250-STARTTLS".to_string()));
    assert_eq!(
        plain.command("MAIL FROM:<a@example.net>").await?,
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(
        plain.command("XFORWARD ADDR=192.0.2.1").await?,
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(plain.command("QUIT").await?, "221 2.0.0 Bye");

    // A client that trusts another CA: the handshake fails on both sides.
    let mut stranger = connect(port).await?;
    stranger.send("LHLO mx\r\n").await?;
    stranger.reply().await?;
    assert_eq!(
        stranger.command("STARTTLS").await?,
        "220 2.0.0 Ready to start TLS"
    );
    let refused = handshake(stranger, &certs.join("wrong-ca.pem")).await;
    let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("UnknownIssuer"),
        "the client's error: {error:?}"
    );

    // Plaintext after 220 is no handshake: closed, nothing answered.
    let mut careless = connect(port).await?;
    careless.send("LHLO mx\r\n").await?;
    careless.reply().await?;
    assert_eq!(
        careless.command("STARTTLS").await?,
        "220 2.0.0 Ready to start TLS"
    );
    careless.send("MAIL FROM:<a@example.net>\r\n").await?;
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut careless.conn, &mut rest);
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await?;
    assert!(
        !String::from_utf8_lossy(&rest).contains("250"),
        "answered in the clear after STARTTLS: {rest:?}"
    );

    wait_until(
        "two failed handshakes counted",
        Duration::from_secs(10),
        || lmtp.handshakes("failed") >= 2.0,
    )
    .await?;
    let log = lmtp.log_text();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("LMTP STARTTLS handshake failed"))
        .collect();
    assert_eq!(failures.len(), 2, "{log}");
    assert!(
        failures.iter().all(|l| l.contains("peer=127.0.0.1:")),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|l| l.contains("UnknownCA") || l.contains("BadCertificate")),
        "rustls's reason (the client's alert) is logged: {failures:?}"
    );
    assert_eq!(lmtp.handshakes("ok"), 0.0);
    assert!(read_topic(&lmtp.world.received, 1, Duration::from_secs(2))?.is_empty());
    lmtp.stop()
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_delivers_over_lmtp_with_tls_required() -> anyhow::Result<()> {
    let world = MailWorld::new("postfix-lmtp-tls", kafka()).await?;
    let postfix = TlsPostfix::start("postfix-lmtp-tls", world.lmtp_port)?;
    let lmtp = start_on(world, &postfix.certs, true).await?;

    let tag = unique("lmtp-tls");
    let to = format!("{tag}@example.test");
    let path = lmtp.world.dir.join("mail.eml");
    std::fs::write(
        &path,
        simple_message(&tag, "through Postfix over LMTP with TLS"),
    )?;
    postfix.swaks("sender@example.net", &to, &path)?;

    let message_id = format!("{tag}@example.net");
    let mut received = Vec::new();
    for _ in 0..30 {
        let records = read_topic(&lmtp.world.received, 1, Duration::from_secs(2))?;
        received = decode_all::<MessageReceived>(&records)?;
        if !received.is_empty() {
            break;
        }
    }
    assert_eq!(received.len(), 1, "{received:?}\n{}", postfix.log()?);
    assert_eq!(received[0].message_id.as_deref(), Some(message_id.as_str()));
    assert_eq!(received[0].account, to);
    // Postfix's lmtp checked the server's chain against the test CA.
    let port = lmtp.world.lmtp_port;
    let trusted = format!("Trusted TLS connection established to 127.0.0.1[127.0.0.1]:{port}");
    let log = postfix.log()?;
    assert!(
        log.contains(&trusted),
        "no {trusted:?} in Postfix's log:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("postfix/lmtp") && l.contains(&to) && l.contains("status=sent")),
        "{log}"
    );
    assert!(lmtp.handshakes("ok") >= 1.0);
    assert!(
        !lmtp.log_text().contains("handshake failed"),
        "{}",
        lmtp.log_text()
    );
    lmtp.stop()
}
