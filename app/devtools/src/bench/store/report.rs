//! What the run measured: mailfleet's stages from the Kafka record
//! timestamps, and the report, one side at a time, ending with the
//! machine-readable line.

use std::collections::HashMap;

use anyhow::Context;
use mailfleet_events::{
    mail::{MessageScanned, MessageStored, ScanVerdict},
    Event,
};
use mailfleet_fleet::config::Config;
use mailfleet_runtime::read::{decode, read_to_end};

use super::{plan::BatchRun, Phase, Side, StoreLoad};
use crate::bench::cpu::Tally;

/// mailfleet's `250 → file` and the stages between, per message, from the
/// stored and scanned topics.
#[derive(Default)]
pub(super) struct Stages {
    lmtp_to_file: Vec<f64>,
    lmtp_to_scanned: Vec<f64>,
    scanned_to_file: Vec<f64>,
    file_to_stored: Vec<f64>,
}

/// The stages of the flat-out and of the paced batches; checks one clean
/// `MessageScanned` and one `MessageStored` per message, naming its file.
pub(super) fn mailfleet_stages(
    cfg: &Config,
    id: &str,
    runs: &[BatchRun],
) -> anyhow::Result<[Stages; 2]> {
    let stored = read_timed::<MessageStored>(cfg, &format!("{id}.stored"))?;
    let scanned = read_timed::<MessageScanned>(cfg, &format!("{id}.scanned"))?;
    let ours = || runs.iter().filter(|r| r.batch.side == Side::Mailfleet);
    let sent: usize = ours().map(|r| r.batch.messages).sum();
    anyhow::ensure!(
        stored.len() == sent && scanned.len() == sent,
        "{} MessageStored and {} MessageScanned for {sent} messages",
        stored.len(),
        scanned.len()
    );
    let mut scanned_at = HashMap::new();
    for (at, s) in &scanned {
        anyhow::ensure!(
            s.verdict == ScanVerdict::Clean,
            "{} is {:?}",
            s.blob_id,
            s.verdict
        );
        let received = s.envelope.causation_id.clone().unwrap_or_default();
        scanned_at.insert(received, at.unwrap_or_default() as f64);
    }
    let mut by_account = HashMap::new();
    for (at, s) in &stored {
        by_account
            .entry(s.account.as_str())
            .or_insert_with(Vec::new)
            .push((*at, s));
    }
    let mut out = [Stages::default(), Stages::default()];
    for run in ours() {
        let batch = &run.batch;
        // Warm-ups are checked, not timed: the first one waits for the group join.
        let mut st = match batch.phase {
            Phase::WarmUp => None,
            Phase::FlatOut => Some(&mut out[0]),
            Phase::Paced => Some(&mut out[1]),
        };
        let mine: Vec<_> = batch
            .users
            .iter()
            .flat_map(|u| by_account.remove(u.as_str()))
            .flatten()
            .collect();
        anyhow::ensure!(
            mine.len() == batch.messages,
            "{} MessageStored for the {} messages of round {} {}",
            mine.len(),
            batch.messages,
            batch.round,
            batch.phase.name()
        );
        for (at, s) in mine {
            let file = run.files.get(&s.file).with_context(|| {
                format!(
                    "MessageStored names {} of {}, which is not there",
                    s.file, s.account
                )
            })?;
            let scanned = scanned_at
                .get(&s.delivery_id)
                .with_context(|| format!("no MessageScanned for {}", s.delivery_id))?;
            let Some(st) = st.as_mut() else {
                continue;
            };
            let (received, stored) = (s.received_at as f64, at.unwrap_or_default() as f64);
            st.lmtp_to_file.push(file - received);
            st.lmtp_to_scanned.push(scanned - received);
            st.scanned_to_file.push(file - scanned);
            st.file_to_stored.push(stored - file);
        }
    }
    Ok(out)
}

/// Every event of `topic`, each with its record's timestamp (ms; the
/// producer's create time unless the topic says otherwise).
fn read_timed<E: Event>(cfg: &Config, topic: &str) -> anyhow::Result<Vec<(Option<i64>, E)>> {
    read_to_end(&cfg.kafka, topic, "bench")?
        .iter()
        .map(|r| Ok((r.timestamp, decode::<E>(r)?)))
        .collect()
}

pub(super) fn report(load: &StoreLoad, runs: &[BatchRun], stages: &[Stages; 2]) {
    let (dovecot, dovecot_p99) = side_report(load, runs, Side::Dovecot);
    let (mailfleet, mailfleet_p99) = side_report(load, runs, Side::Mailfleet);
    let at = ["flat out".to_string(), format!("at {} msgs/s", load.rate)];
    for (st, at) in stages.iter().zip(at) {
        println!(
            "mailfleet {at}: LMTP 250 → Maildir file {}",
            spread(&mut st.lmtp_to_file.clone())
        );
        println!(
            "mailfleet {at}: 250 → MessageScanned produced {}; → file {}; file → MessageStored produced {}",
            spread(&mut st.lmtp_to_scanned.clone()),
            spread(&mut st.scanned_to_file.clone()),
            spread(&mut st.file_to_stored.clone())
        );
    }
    let files = |side: Option<Side>| -> usize {
        let runs = runs
            .iter()
            .filter(|r| side.is_none_or(|s| r.batch.side == s));
        runs.map(|r| r.files.len()).sum()
    };
    println!(
        "checked: {} files, each Message-ID once; mailfleet: {} MessageStored naming theirs, \
         all scanned clean, 0 dead letters",
        files(None),
        files(Some(Side::Mailfleet))
    );
    let mut paced = stages[1].lmtp_to_file.clone();
    println!(
        "dovecot_mps={dovecot:.0} mailfleet_mps={mailfleet:.0} ratio={:.2} dovecot_p99_ms={dovecot_p99:.0} \
         mailfleet_p99_ms={mailfleet_p99:.0} mailfleet_250_to_file_p50_ms={:.0} mailfleet_250_to_file_p99_ms={:.0}",
        mailfleet / dovecot,
        pct(&mut paced, 0.5),
        pct(&mut paced, 0.99)
    );
}

/// One side's lines: flat-out rate (median) and CPU, and per phase the
/// latency from Postfix's `250` to the file and Postfix's own delays.
/// Returns the rate and the paced p99.
fn side_report(load: &StoreLoad, runs: &[BatchRun], side: Side) -> (f64, f64) {
    let of = |phase| {
        runs.iter()
            .filter(move |r| r.batch.side == side && r.batch.phase == phase)
    };
    let name = side.name();
    let mut tally = Tally::default();
    for r in of(Phase::FlatOut) {
        tally.add(r.secs, r.cpu);
    }
    let rate = tally.rate(load.messages as u64);
    let cpu = cpu_line(&tally, of(Phase::FlatOut), load.messages);
    let rounds = tally.secs.len();
    println!("{name} flat out: {rate:.0} msgs/s (median of {rounds}); {cpu}");
    let mut p99 = f64::NAN;
    for phase in [Phase::FlatOut, Phase::Paced] {
        let mut e2e: Vec<f64> = of(phase).flat_map(|r| r.e2e_ms.clone()).collect();
        let delays: Vec<[f64; 5]> = of(phase).flat_map(|r| r.delays.clone()).collect();
        let mut total: Vec<f64> = delays.iter().map(|d| d[0] * 1000.0).collect();
        let mean = |k: usize| {
            delays.iter().map(|d| d[k] * 1000.0).sum::<f64>() / delays.len().max(1) as f64
        };
        let at = match phase {
            Phase::Paced => format!("at {} msgs/s", load.rate),
            _ => "flat out".into(),
        };
        println!("{name} {at}: Postfix 250 → file {}", spread(&mut e2e));
        println!(
            "{name} {at}: Postfix delay= (arrival → LMTP 250; 10 ms steps; {} messages) {}; \
             mean delays= before qmgr {:.0}, in qmgr {:.0}, connect {:.0}, LMTP {:.0} ms",
            delays.len(),
            spread(&mut total),
            mean(1),
            mean(2),
            mean(3),
            mean(4)
        );
        p99 = pct(&mut e2e, 0.99);
    }
    (rate, p99)
}

/// CPU per message of this process (injector; for mailfleet also LMTP and
/// consumers), Kafka, clamd and the rest of the machine (Postfix, Dovecot).
fn cpu_line<'a>(tally: &Tally, runs: impl Iterator<Item = &'a BatchRun>, n: usize) -> String {
    let cpu = tally.ms_per_message(n as u64);
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get()) as f64;
    let wall: f64 = runs.map(|r| r.cpu_secs).sum();
    let busy = cpu.busy() / 100.0 * wall * cores * 1000.0 / (n * tally.secs.len()) as f64;
    format!(
        "CPU ms/msg: this process {:.2}, kafka {:.2}, clamd {:.2}, the rest (Postfix, Dovecot) {:.2} (machine {:.0}% busy)",
        cpu.own,
        cpu.kafka,
        cpu.peer,
        busy - cpu.own - cpu.kafka - cpu.peer,
        cpu.busy()
    )
}

/// The `q` quantile (nearest rank) of `xs`, which it sorts.
fn pct(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1]
}

pub(super) fn spread(xs: &mut [f64]) -> String {
    let (p50, p99, max) = (pct(xs, 0.5), pct(xs, 0.99), pct(xs, 1.0));
    format!("p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms")
}
