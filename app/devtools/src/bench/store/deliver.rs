//! Delivering the batches: injecting them into Postfix over SMTP, waiting
//! for their Maildir files and checking them.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    net::{IpAddr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpSocket,
};

use super::{
    fleet::Fleet,
    ops::Ops,
    plan::{Batch, BatchRun, Plan},
    report::spread,
    Phase, Side, StoreLoad, POLL, STALL,
};
use crate::bench::cpu::{clamd_pid, kafka_pid, Cpu};

pub(super) async fn deliver_all(
    load: &StoreLoad,
    ops: &Ops,
    fleet: &Fleet,
    plan: Plan,
) -> anyhow::Result<Vec<BatchRun>> {
    let mut runs = Vec::new();
    let mut transport = String::new();
    for batch in plan.0 {
        let (wanted, root) = match batch.side {
            Side::Dovecot => (format!("lmtp:inet:{}", load.dovecot_lmtp), &ops.mail_root),
            Side::Mailfleet => (
                format!("lmtp:inet:127.0.0.1:{}", fleet.port),
                &fleet.mail_root,
            ),
        };
        if wanted != transport {
            ops.set_transport(&wanted).await?;
            transport = wanted;
        }
        let what = format!(
            "round {} {} {}",
            batch.round,
            batch.side.name(),
            batch.phase.name()
        );
        let run = deliver(load, ops, root, batch)
            .await
            .context(what.clone())?;
        let n = run.batch.messages as f64;
        match run.batch.phase {
            Phase::WarmUp => {}
            Phase::FlatOut => println!(
                "{what}: {:.0} msgs/s ({:.2} s to the last file; Postfix accepted all in {:.2} s)",
                n / run.secs,
                run.secs,
                run.inject_secs
            ),
            Phase::Paced => println!(
                "{what}: {:.0} msgs/s offered, {:.0} stored; Postfix 250 → file {}",
                n / run.inject_secs,
                n / run.secs,
                spread(&mut run.e2e_ms.clone())
            ),
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Inject one batch, wait for its files and check them.
async fn deliver(
    load: &StoreLoad,
    ops: &Ops,
    root: &Path,
    batch: Batch,
) -> anyhow::Result<BatchRun> {
    let log_from = std::fs::metadata(&ops.maillog).map_or(0, |m| m.len());
    let (before, clock) = (Cpu::now(clamd_pid(), kafka_pid()), Instant::now());
    let started = epoch_ms(SystemTime::now());
    let queued = inject(load, &batch).await?;
    let inject_secs = clock.elapsed().as_secs_f64();
    let inboxes = batch.inboxes(root);
    wait_files(&inboxes, batch.messages).await?;
    let cpu = Cpu::now(clamd_pid(), kafka_pid()).minus(before);
    let cpu_secs = clock.elapsed().as_secs_f64();
    let (mut files, mut e2e_ms, mut seen) = (HashMap::new(), Vec::new(), HashSet::new());
    for (name, at, message_id) in read_files(&inboxes)? {
        let id = message_id.with_context(|| format!("no Message-ID in {name}"))?;
        let sent = queued
            .get(&id)
            .with_context(|| format!("{name} holds <{id}>, which this batch did not send"))?;
        anyhow::ensure!(seen.insert(id.clone()), "<{id}> was delivered twice");
        e2e_ms.push(at - sent);
        files.insert(name, at);
    }
    let newest = files.values().copied().fold(started, f64::max);
    Ok(BatchRun {
        secs: (newest - started) / 1000.0,
        inject_secs,
        cpu,
        cpu_secs,
        e2e_ms,
        delays: ops.delays(log_from, &batch).await,
        files,
        batch,
    })
}

/// Send the batch over `load.sessions` SMTP sessions; Postfix's `250`
/// after DATA per Message-ID (ms since the epoch).
async fn inject(load: &StoreLoad, batch: &Batch) -> anyhow::Result<HashMap<String, f64>> {
    let (next, start) = (AtomicUsize::new(0), tokio::time::Instant::now());
    let sessions =
        (0..load.sessions.clamp(1, batch.messages)).map(|_| session(load, batch, &next, start));
    let queued: HashMap<String, f64> = futures::future::try_join_all(sessions)
        .await?
        .into_iter()
        .flatten()
        .collect();
    anyhow::ensure!(
        queued.len() == batch.messages,
        "Postfix queued {} of {} messages",
        queued.len(),
        batch.messages
    );
    Ok(queued)
}

/// One SMTP session: messages from the shared counter until none are left,
/// each at its time when the batch is paced.
async fn session(
    load: &StoreLoad,
    batch: &Batch,
    next: &AtomicUsize,
    start: tokio::time::Instant,
) -> anyhow::Result<Vec<(String, f64)>> {
    let socket = match load.source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket
        .bind(SocketAddr::new(load.source, 0))
        .with_context(|| format!("binding {}", load.source))?;
    let stream = socket.connect(load.smtp).await.with_context(|| {
        format!(
            "connecting to Postfix at {}: run `ops/postfix start`",
            load.smtp
        )
    })?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, "220").await?;
    write.write_all(b"EHLO bench.example.net\r\n").await?;
    expect(&mut read, "250").await?;
    let mut queued = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= batch.messages {
            break;
        }
        if let Some(rate) = batch.rate {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        }
        let (id, raw) = batch.message(i, load.bytes);
        let envelope = [
            ("MAIL FROM:<bench@example.net>".to_string(), "250"),
            (format!("RCPT TO:<{}>", batch.recipient(i)), "250"),
            ("DATA".to_string(), "354"),
        ];
        for (command, code) in envelope {
            write.write_all(format!("{command}\r\n").as_bytes()).await?;
            expect(&mut read, code).await.context(command)?;
        }
        write.write_all(&raw).await?;
        write.write_all(b".\r\n").await?;
        expect(&mut read, "250").await?;
        queued.push((id, epoch_ms(SystemTime::now())));
    }
    write.write_all(b"QUIT\r\n").await?;
    Ok(queued)
}

/// Read one reply (all its lines); it must have `code`.
async fn expect<R: AsyncBufRead + Unpin>(read: &mut R, code: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(
            read.read_line(&mut line).await? > 0,
            "Postfix closed the connection"
        );
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    anyhow::ensure!(
        line.starts_with(code),
        "Postfix answered {:?}, expected {code}",
        line.trim_end()
    );
    Ok(())
}

/// Wait until the inboxes hold `n` files in all; fail on more, or when
/// their number stops growing for [`STALL`].
async fn wait_files(inboxes: &[PathBuf], n: usize) -> anyhow::Result<()> {
    let (mut most, mut progress) = (0, Instant::now());
    loop {
        let count: usize = inboxes
            .iter()
            .map(|d| std::fs::read_dir(d).map_or(0, Iterator::count))
            .sum();
        anyhow::ensure!(count <= n, "{count} files for {n} messages");
        if count == n {
            return Ok(());
        }
        if count > most {
            (most, progress) = (count, Instant::now());
        }
        anyhow::ensure!(
            progress.elapsed() < STALL,
            "{count} of {n} files after {} s without a new one (see `ops/postfix log`)",
            STALL.as_secs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// (name, ctime in ms since the epoch, Message-ID) of every file.
fn read_files(inboxes: &[PathBuf]) -> anyhow::Result<Vec<(String, f64, Option<String>)>> {
    let mut out = Vec::new();
    for dir in inboxes {
        for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            let meta = std::fs::metadata(&path)?;
            let at = meta.ctime() as f64 * 1000.0 + meta.ctime_nsec() as f64 / 1e6;
            // The header is in the first few KB (Dovecot and Postfix add ~600 bytes).
            let mut head = Vec::with_capacity(8192);
            std::fs::File::open(&path)?
                .take(8192)
                .read_to_end(&mut head)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            out.push((name.into_owned(), at, message_id(&head)));
        }
    }
    Ok(out)
}

/// The Message-ID of a header section that starts with another field.
pub(super) fn message_id(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let field = "\nmessage-id: <";
    let at = text.to_ascii_lowercase().find(field)? + field.len();
    let rest = &text[at..];
    Some(rest[..rest.find('>')?].to_string())
}

fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
