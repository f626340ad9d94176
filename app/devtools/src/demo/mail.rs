//! The mail part of `mailfleet demo`: a slice of a day's inbound mail to
//! the run's accounts, sent by the internet's MTAs (posed with XCLIENT)
//! to Postfix on the MX path (`ops/postfix`, [`super::smtp`]). Postfix
//! asks the fleet's policy server at each RCPT (a new triplet is
//! greylisted: the MTA retries once the delay has passed, on the policy
//! server's compressed clock) and delivers over LMTP to the fleet's
//! `mailfleet lmtp`; the fleet's scanner (real clamd) scans it, its
//! storage writer files it into the Maildirs Dovecot serves (or the
//! quarantine) and its indexer counts it. Then a tally of the verdicts,
//! blocked accounts, admin alerts and one mailbox.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use mailfleet_events::{
    accounts::AccountBlocked,
    admin::AdminAlert,
    mail::{MessageScanned, ScanVerdict},
    Event,
};
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{
    read::{decode, read_to_end},
    time::now_ms,
    Store,
};
use mailfleet_storage::index;

use super::{
    fleet::Fleet,
    smtp::{postfix_addr, Client, Session},
};

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

/// One demo message: what it is, its envelope and its bytes.
type Mail = (Kind, String, Vec<String>, Vec<u8>);

/// What the mail part sent, for the final check against the report.
#[derive(Debug, Default)]
pub struct Sent {
    pub messages: usize,
    pub recipients: usize,
    /// RCPTs Postfix deferred (greylisted) and accepted, retries included.
    pub rcpt_deferred: usize,
    pub rcpt_accepted: usize,
    /// Recipients of a virus, and of a banned attachment.
    pub infected: usize,
    pub banned: usize,
}

/// Send the day's mail through Postfix and wait until the fleet has
/// scanned, stored and indexed every recipient's copy.
pub async fn run(
    cfg: &Config,
    run_id: &str,
    accounts: &[String],
    fleet: &mut Fleet,
) -> anyhow::Result<Sent> {
    let mails = traffic(run_id, accounts);
    let (deferred, accepted, rounds) = send_all(cfg, &mails, fleet).await?;
    let recipients: usize = mails.iter().map(|m| m.2.len()).sum();
    let mut sent: BTreeMap<Kind, u32> = BTreeMap::new();
    for m in &mails {
        *sent.entry(m.0).or_default() += 1;
    }
    println!(
        "== mail: {} messages to {recipients} recipients through Postfix ({}) on the MX path ({}); {deferred} RCPTs greylisted first, all accepted after {rounds} rounds",
        mails.len(),
        postfix_addr(),
        fmt_tally(&sent),
    );
    // Postfix delivers over LMTP to the fleet's `mailfleet lmtp`; the
    // scanner, storage writer and indexer take it from there.
    wait_scanned(cfg, run_id, recipients).await?;
    let took = fleet
        .settle(&["scanner", "storage", "index"], Duration::from_secs(300))
        .await
        .context("scanning and storing the demo mail (is clamd up? ops/clamav start)")?;
    println!(
        "== Postfix delivered them over LMTP to mailfleet lmtp; the fleet's scanner, storage writer and indexer caught up in {:.1}s; Maildirs in {}",
        took.as_secs_f64(),
        cfg.consumers.storage.mail_root
    );
    print_results(cfg, run_id)?;
    show_mailbox(cfg, &accounts[7])?;
    let recipients_of = |kinds: &[Kind]| -> usize {
        let of_kind = mails.iter().filter(|m| kinds.contains(&m.0));
        of_kind.map(|m| m.2.len()).sum()
    };
    Ok(Sent {
        messages: mails.len(),
        recipients,
        rcpt_deferred: deferred,
        rcpt_accepted: accepted,
        infected: recipients_of(&[Kind::Virus, Kind::LocalVirus]),
        banned: recipients_of(&[Kind::Banned]),
    })
}

/// Offer every mail to Postfix; a greylisted one is offered again once the
/// greylisting delay has passed on the policy server's clock. Returns the
/// RCPTs deferred and accepted, and the rounds it took.
async fn send_all(
    cfg: &Config,
    mails: &[Mail],
    fleet: &Fleet,
) -> anyhow::Result<(usize, usize, u32)> {
    let server = postfix_addr();
    let clock = fleet.policy_clock();
    let delay_ms = cfg.consumers.greylist.delay_s * 1000;
    let mut pending: Vec<usize> = (0..mails.len()).collect();
    let (mut deferred, mut accepted, mut rounds) = (0, 0, 0);
    while !pending.is_empty() {
        rounds += 1;
        anyhow::ensure!(
            rounds <= 5,
            "Postfix still defers {} demo mails after 4 retries",
            pending.len()
        );
        let started = clock.now_ms();
        let mut later = Vec::new();
        for &n in &pending {
            let (refused, passed) = offer(&server, n, &mails[n]).await?;
            accepted += passed;
            if refused > 0 {
                deferred += refused;
                later.push(n);
            }
        }
        pending = later;
        // The retry, as an MTA's queue runs it: after the delay (and a
        // minute more) on the policy server's clock.
        let wait = clock.wall_at(started + delay_ms + 60_000) - now_ms();
        if !pending.is_empty() && wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }
    Ok((deferred, accepted, rounds))
}

/// One SMTP transaction for mail `n` from its MTA; returns how many RCPTs
/// were deferred (4xx: then nothing was sent, to try again later) and
/// accepted.
async fn offer(
    server: &str,
    n: usize,
    (_, from, to, raw): &Mail,
) -> anyhow::Result<(usize, usize)> {
    let (addr, name) = (
        format!("198.51.100.{}", n % 23 + 1),
        format!("mx{}.example.net", n % 23),
    );
    let client = Client {
        addr: &addr,
        name: &name,
    };
    let mut session = Session::open(server, &client).await?;
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let codes = session.envelope(from, &to).await?;
    let refused = codes.iter().filter(|c| (400..500).contains(*c)).count();
    anyhow::ensure!(
        codes.iter().all(|c| *c == 250 || (400..500).contains(c)),
        "Postfix refused demo mail {n} to {to:?}: {codes:?}"
    );
    if refused == 0 {
        session.data(raw).await?;
    } else {
        session.expect(Some("RSET"), 250).await?;
    }
    session.quit().await;
    Ok((refused, codes.len() - refused))
}

/// Wait until the fleet's scanner has scanned `expected` recipients' copies
/// of this run's mail.
async fn wait_scanned(cfg: &Config, run_id: &str, expected: usize) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let scanned: Vec<MessageScanned> = read_all(cfg, &cfg.consumers.scanner.scanned_topic)?;
        let mine = scanned
            .iter()
            .filter(|s| {
                s.message_id
                    .as_deref()
                    .is_some_and(|m| m.starts_with(run_id))
            })
            .count();
        if mine >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{mine} of {expected} recipients' copies scanned after 300 s (Postfix's queue: ops/postfix log; is mailfleet lmtp on Postfix's transport, MAILFLEET_POSTFIX_TRANSPORT=lmtp:inet:127.0.0.1:2424?)"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One mailbox, as the index sees it.
fn show_mailbox(cfg: &Config, account: &str) -> anyhow::Result<()> {
    let store = Store::open_read_only(&cfg.runtime.data_dir.join(index::NAME))?;
    let idx = index::show(&store, account)?;
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

/// Deterministic traffic to `accounts`: mostly clean mail, some viruses
/// and banned files.
fn traffic(run_id: &str, accounts: &[String]) -> Vec<Mail> {
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
            Kind::LocalVirus => accounts[n as usize % 7].clone(),
            _ => format!("sender{}@example.net", n % 23),
        };
        let to: Vec<String> = (0..1 + n as usize % 3)
            .map(|r| accounts[(n as usize + r * 11) % accounts.len()].clone())
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
pub(crate) fn local_domain(cfg: &Config) -> String {
    let domains = &cfg.consumers.scanner.local_domains;
    domains
        .first()
        .cloned()
        .unwrap_or_else(|| "example.test".into())
}
