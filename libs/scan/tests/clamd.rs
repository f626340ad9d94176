//! The clamd client against the real clamd that `ops/clamav start` runs
//! (127.0.0.1:3310, or `MAILFLEET_CLAMD`), with the repo's test signatures
//! from ops/clamav.d/. Without a reachable clamd every test that needs it
//! fails. The last two need no clamd: a closed port, and a fake clamd that
//! replies and closes early.

use std::path::Path;

use mailfleet_scan::clamd::{Clamd, ClamdConfig, ClamdError, ClamdReply};

/// The standard EICAR test file in two halves, so that no source file holds
/// it whole (ops/clamav.d/mailfleet.ndb matches only all 68 bytes).
const EICAR_HEAD: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTI";
const EICAR_TAIL: &str = "VIRUS-TEST-FILE!$H+H*";

fn eicar() -> Vec<u8> {
    [EICAR_HEAD, EICAR_TAIL].concat().into_bytes()
}

fn address() -> String {
    std::env::var("MAILFLEET_CLAMD").unwrap_or_else(|_| "127.0.0.1:3310".into())
}

/// A client for the clamd under test; panics if it does not answer.
async fn clamd() -> Clamd {
    let client = Clamd::new(ClamdConfig {
        address: address(),
        ..ClamdConfig::default()
    });
    if let Err(e) = client.ping().await {
        let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
        panic!(
            "clamd is not reachable at {} ({e}{cause}); run `ops/clamav start` first",
            address()
        );
    }
    client
}

fn found(reply: ClamdReply, name: &str) {
    match reply {
        ClamdReply::Found { signature } => {
            assert!(
                signature.contains(name),
                "found {signature}, expected {name}"
            )
        }
        ClamdReply::Clean => panic!("clean, expected {name}"),
    }
}

#[tokio::test]
async fn ping_answers() {
    clamd().await.ping().await.expect("ping");
}

#[tokio::test]
async fn version_names_clamav() {
    let version = clamd().await.version().await.expect("version");
    assert!(version.starts_with("ClamAV 1."), "{version}");
}

#[tokio::test]
async fn eicar_is_found() {
    let reply = clamd().await.scan(&eicar()).await.expect("scan");
    found(reply, "Mailfleet.Test.EICAR");
}

#[tokio::test]
async fn eicar_in_a_base64_attachment_is_found() {
    let b64 = base64(&eicar());
    let mail = format!(
        "From: <a@example.test>\r\nTo: <b@example.test>\r\nSubject: invoice\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"invoice.com\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"invoice.com\"\r\n\r\n{b64}\r\n--b1--\r\n"
    );
    // Only the decoded attachment matches: clamd must have parsed the mail.
    assert!(!mail.contains(EICAR_TAIL));
    let reply = clamd().await.scan(mail.as_bytes()).await.expect("scan");
    found(reply, "Mailfleet.Test.EICAR");
}

#[tokio::test]
async fn hash_sample_is_found() {
    // Cargo sets it when it runs the test; the compile-time value can name
    // another clone that shared the target folder.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let path = Path::new(&manifest).join("../../ops/clamav.d/test-malware.bin");
    let sample = std::fs::read(&path).expect("read ops/clamav.d/test-malware.bin");
    let reply = clamd().await.scan(&sample).await.expect("scan");
    found(reply, "Mailfleet.Test.HashSample");
}

#[tokio::test]
async fn clean_text_is_clean() {
    let mail = b"From: <a@example.test>\r\nSubject: hello\r\n\r\nNothing to see here.\r\n";
    let reply = clamd().await.scan(mail).await.expect("scan");
    assert_eq!(reply, ClamdReply::Clean);
}

/// ops/clamav sets StreamMaxLength 64M.
#[tokio::test]
async fn a_stream_over_the_limit_is_a_permanent_scanner_error() {
    let big = vec![b'a'; 65 << 20];
    let err = clamd().await.scan(&big).await.expect_err("over the limit");
    assert!(
        matches!(&err, ClamdError::Scanner(t) if t.contains("size limit exceeded")),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_closed_port_is_a_transient_connect_error() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let client = Clamd::new(ClamdConfig {
        address: format!("127.0.0.1:{port}"),
        ..ClamdConfig::default()
    });
    let err = client.scan(b"hello").await.expect_err("nothing listens");
    assert!(matches!(err, ClamdError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
}

/// clamd replies to an oversized stream and closes while the client is still
/// sending; the client gets a send error (reset) and must report the reply.
#[tokio::test]
async fn a_reply_before_an_early_close_wins_over_the_send_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("local addr").to_string();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut head = [0u8; 1024];
        conn.read_exact(&mut head).await.expect("read some");
        conn.write_all(b"INSTREAM size limit exceeded. ERROR\0")
            .await
            .expect("reply");
        // Closing with unread data makes the kernel send a reset.
    });
    let client = Clamd::new(ClamdConfig {
        address,
        ..ClamdConfig::default()
    });
    let err = client
        .scan(&vec![b'a'; 32 << 20])
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ClamdError::Scanner(t) if t.contains("size limit exceeded")),
        "{err:?}"
    );
    server.await.expect("server");
}

/// RFC 2045 base64 with 76-character lines (no dev-dependency for it).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in data.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let lines: Vec<&str> = out
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap_or_default())
        .collect();
    lines.join("\r\n")
}
