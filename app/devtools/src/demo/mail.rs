//! The mail part of `mailfleet demo`: a slice of a day's inbound mail
//! delivered over LMTP (as Postfix would) to an LMTP server in the demo
//! process (it accepts every recipient: the demo's mailboxes are not
//! accounts), scanned by the fleet's scanner with the real clamd, stored
//! into Maildirs (or the quarantine) by its storage writer and indexed;
//! then a tally of the verdicts, blocked accounts, admin alerts and one
//! mailbox.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use mailfleet_blob::BlobStore;
use mailfleet_events::{
    accounts::AccountBlocked,
    admin::AdminAlert,
    mail::{MessageScanned, ScanVerdict},
    Event,
};
use mailfleet_fleet::config::Config;
use mailfleet_ingest::lmtp::client::LmtpClient;
use mailfleet_runtime::{
    read::{decode, read_to_end},
    Shutdown, Store, Topology,
};
use mailfleet_storage::index;

use super::fleet::Fleet;

/// What a demo message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Ordinary mail, 1 to 3 recipients, some with attachments.
    Clean,
    /// A virus (the EICAR test file) from outside.
    Virus,
    /// A virus from outside that claims one of our own accounts as its
    /// sender: quarantined like any other, the account not blocked (an
    /// envelope sender is not proof).
    LocalVirus,
    /// An executable, `invoice.pdf.exe`, an RFC 2231 name, an exe in a zip.
    Banned,
}

pub async fn run(
    cfg: &Config,
    topology: &Topology,
    run_id: &str,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let route = topology.route("scanner")?;
    let received = route.reads[0].clone();
    let blobs = Arc::new(BlobStore::connect(&cfg.blobs).await?);
    let shutdown = Shutdown::new();
    let port = crate::bench::lmtp_in_process(cfg, &received, 0, blobs.clone(), &shutdown).await?;
    let address = format!("127.0.0.1:{port}");

    let local = local_domain(cfg);
    let mails = traffic(run_id, &local);
    let mut client = LmtpClient::connect(&address, "mx1.demo").await?;
    let mut recipients = 0;
    let mut sent: BTreeMap<Kind, u32> = BTreeMap::new();
    for (kind, from, to, raw) in &mails {
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let delivery = client.deliver(from, &to, raw).await?;
        anyhow::ensure!(
            delivery.accepted() == to.len(),
            "LMTP refused demo mail: {delivery:?}"
        );
        recipients += to.len() as u64;
        *sent.entry(*kind).or_default() += 1;
    }
    client.quit().await?;
    println!(
        "== mail: delivered {} messages to {recipients} recipients over LMTP ({}), blobs in {}",
        mails.len(),
        fmt_tally(&sent),
        blobs.shown()
    );

    // The fleet's scanner, storage writer and indexer take it from here.
    let took = fleet
        .settle(&["scanner", "storage", "index"], Duration::from_secs(300))
        .await
        .context("scanning and storing the demo mail (is clamd up? ops/clamav start)")?;
    shutdown.trigger();
    println!(
        "== the fleet's scanner, storage writer and indexer caught up in {:.1}s; Maildirs in {}",
        took.as_secs_f64(),
        cfg.consumers.storage.mail_root
    );
    print_results(cfg, run_id)?;
    show_mailbox(cfg)
}

/// One mailbox, as the index sees it.
fn show_mailbox(cfg: &Config) -> anyhow::Result<()> {
    let store = Store::open_read_only(&cfg.runtime.data_dir.join(index::NAME))?;
    let local = local_domain(cfg);
    let account = format!("user7@{local}");
    let idx = index::show(&store, &account)?;
    println!("== {account}'s mailbox (mailfleet index show {account}):");
    for (folder, t) in &idx.folders {
        println!(
            "  {folder:<8} {:>5} messages {:>10} bytes",
            t.count, t.bytes
        );
    }
    println!(
        "  quarantined {} messages, {} bytes",
        idx.quarantined.count, idx.quarantined.bytes
    );
    Ok(())
}

/// Deterministic traffic: mostly clean mail, some viruses and banned files.
fn traffic(run_id: &str, local: &str) -> Vec<(Kind, String, Vec<String>, Vec<u8>)> {
    let mut out = Vec::new();
    let eicar = format!(
        "{}{}",
        r"X5O!P%@AP[4\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    );
    for n in 0..240u32 {
        let (kind, attachment): (Kind, Option<(&str, Vec<u8>)>) = match n % 40 {
            0..=3 => (
                Kind::Virus,
                Some(("report.doc", eicar.clone().into_bytes())),
            ),
            4 => (
                Kind::LocalVirus,
                Some(("photo.jpg", eicar.clone().into_bytes())),
            ),
            5 => (
                Kind::Banned,
                Some(("setup.exe", b"MZ\x90\x00demo".to_vec())),
            ),
            6 => (
                Kind::Banned,
                Some(("invoice.pdf.exe", b"MZ\x90\x00demo".to_vec())),
            ),
            7 => (Kind::Banned, Some(("tools.zip", zip_with("tools/run.scr")))),
            8..=15 => (
                Kind::Clean,
                Some(("minutes.pdf", vec![b'%'; 20_000 + n as usize * 37])),
            ),
            _ => (Kind::Clean, None),
        };
        let from = match kind {
            Kind::LocalVirus => format!("user{}@{local}", n % 7),
            _ => format!("sender{}@example.net", n % 23),
        };
        let to: Vec<String> = (0..1 + n % 3)
            .map(|r| format!("user{}@{local}", (n + r * 11) % 50))
            .collect();
        let id = format!("{run_id}-{n}@demo.example.net");
        out.push((kind, from, to, message(&id, n, attachment)));
    }
    out
}

fn message(id: &str, n: u32, attachment: Option<(&str, Vec<u8>)>) -> Vec<u8> {
    // Some plain messages come flagged by the upstream spam filter: the
    // writer files them in Spam, and the monthly Spam purge empties it.
    let spam = if (16..=21).contains(&(n % 40)) {
        "X-Spam-Flag: YES\r\n"
    } else {
        ""
    };
    let head = format!(
        "From: sender@example.net\r\nTo: user@example.test\r\nSubject: demo message {n}\r\n\
         Message-ID: <{id}>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{spam}"
    );
    let text = "Hello,\r\n\r\nthe figures are attached.\r\n".repeat(1 + n as usize % 20);
    let Some((name, content)) = attachment else {
        return format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}").into_bytes();
    };
    format!(
        "{head}Content-Type: multipart/mixed; boundary=\"demo\"\r\n\r\n--demo\r\n\
         Content-Type: text/plain\r\n\r\n{text}\r\n--demo\r\n\
         Content-Type: application/octet-stream; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--demo--\r\n",
        base64(&content)
    )
    .into_bytes()
}

/// A zip holding one stored member named `name`.
fn zip_with(name: &str) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let written = zip
        .start_file(name, options)
        .and_then(|()| zip.write_all(b"demo").map_err(Into::into))
        .and_then(|()| zip.finish());
    written.map(std::io::Cursor::into_inner).unwrap_or_default()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 4);
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (k, &b)| n | u32::from(b) << (16 - 8 * k));
        for k in 0..4 {
            let c = if k <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * k)) as usize & 63]
            } else {
                b'='
            };
            out.push(c as char);
        }
    }
    out
}

fn fmt_tally<K: std::fmt::Debug>(tally: &BTreeMap<K, u32>) -> String {
    let parts: Vec<String> = tally.iter().map(|(k, n)| format!("{n} {k:?}")).collect();
    parts.join(", ")
}

/// This run's verdicts, blocks and alerts, read back from the topics.
fn print_results(cfg: &Config, run_id: &str) -> anyhow::Result<()> {
    let mine = |id: &Option<String>| id.as_deref().is_some_and(|m| m.starts_with(run_id));
    let scanned: Vec<MessageScanned> = read_all(cfg, &cfg.consumers.scanner.scanned_topic)?;
    let mut verdicts: BTreeMap<String, u32> = BTreeMap::new();
    let mut findings: BTreeMap<String, u32> = BTreeMap::new();
    for s in scanned.iter().filter(|s| mine(&s.message_id)) {
        *verdicts.entry(format!("{:?}", s.verdict)).or_default() += 1;
        match s.verdict {
            ScanVerdict::Infected => {
                *findings
                    .entry(format!("virus {}", s.signature.clone().unwrap_or_default()))
                    .or_default() += 1
            }
            ScanVerdict::Banned => {
                let what = format!(
                    "banned {} ({})",
                    s.file.clone().unwrap_or_default(),
                    s.rule.clone().unwrap_or_default()
                );
                *findings.entry(what).or_default() += 1;
            }
            _ => {}
        }
    }
    println!("== verdicts per recipient: {}", fmt_tally(&verdicts));
    for (what, n) in &findings {
        println!("  {n:>4} × {what}");
    }
    let blocked: Vec<AccountBlocked> = read_all(cfg, &cfg.consumers.lifecycle.events_topic)?;
    let blocked: Vec<_> = blocked.iter().filter(|b| mine(&b.message_id)).collect();
    println!(
        "== accounts blocked by this mail: {} (inbound mail never blocks the sender it claims)",
        blocked.len()
    );
    anyhow::ensure!(
        blocked.is_empty(),
        "inbound mail blocked {:?}: a forged sender must never block an account",
        blocked.iter().map(|b| &b.account).collect::<Vec<_>>()
    );
    let alerts: Vec<AdminAlert> = read_all(cfg, &cfg.consumers.directory.alerts_topic)?;
    let alerts = alerts
        .iter()
        .filter(|a| a.detail.as_deref().is_some_and(|d| d.contains(run_id)));
    for a in alerts.take(3) {
        println!("  alert [{:?}] {}", a.severity, a.summary);
    }
    Ok(())
}

/// Every event of type `E` in `topic`, from the beginning to its end now;
/// records of other types (a topic may mix them) are skipped.
pub(crate) fn read_all<E: Event>(cfg: &Config, topic: &str) -> anyhow::Result<Vec<E>> {
    Ok(read_to_end(&cfg.kafka, topic, "demo")?
        .iter()
        .filter_map(|r| decode(r).ok())
        .collect())
}

/// The first local domain: where the demo's accounts live.
fn local_domain(cfg: &Config) -> String {
    let domains = &cfg.consumers.scanner.local_domains;
    domains
        .first()
        .cloned()
        .unwrap_or_else(|| "example.test".into())
}
