//! The demo's scheduled clean-up. First some users delete mail: their mail
//! client moves it to Trash (what Dovecot does for an IMAP MOVE: a rename
//! of the file into `.Trash/cur`, which no event records). Then each
//! configured purge job (Trash daily,
//! Spam monthly) runs once, as `mailfleet scheduler` writes a run, in
//! compressed time. The run goes into every partition of the purge topic;
//! the purger plans each account's slot over the job's window; one clock
//! tick past the window releases them all; the storage writer carries the
//! `PurgeRequested` out and reports `MessagesPurged`.

use mailfleet_events::{clock::ClockTicked, mail::MessagesPurged, Envelope};
use mailfleet_fleet::config::Config;
use std::{path::Path, time::Duration};

use anyhow::Context;
use mailfleet_runtime::{producer::EventProducer, time::now_ms, Topology};
use mailfleet_scheduler::{schedule::run_id, JobKind};

use mailfleet_scheduler::emitter::job_due;

use super::{fleet::Fleet, mail::read_all};

pub async fn run(
    cfg: &Config,
    topology: &Topology,
    run: &str,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let sec = &cfg.scheduler;
    let jobs: Vec<(&String, i64)> = sec
        .core
        .jobs
        .iter()
        .filter(|(_, j)| j.kind == JobKind::Purge)
        .map(|(name, j)| (name, j.window_ms()))
        .collect();
    if jobs.is_empty() {
        println!("== purges: no purge job configured");
        return Ok(());
    }
    let moved = move_to_trash(&cfg.consumers.storage.mail_root)?;
    println!(
        "== users of {moved} mailboxes deleted a message each: moved to Trash as an IMAP MOVE does (a rename into .Trash/cur)"
    );
    let topic = &sec.purge_topic;
    let partitions = topology.topics.get(topic).map_or(1, |t| t.partitions);
    let producer = EventProducer::new(&cfg.kafka, &format!("{run}-purges"))?;
    let due = now_ms();
    let mut last_slot = due;
    let mut runs = Vec::new();
    for (job, window_ms) in &jobs {
        let id = run_id(job, due)?;
        runs.push(id.clone());
        let event = job_due(&sec.core.jobs, run, job, due, id)?;
        let bytes = mailfleet_events::encode(&event)?;
        for partition in 0..partitions {
            producer.send_to_partition(topic, partition, &bytes).await?;
        }
        last_slot = last_slot.max(due + window_ms);
    }
    // The clock, compressed: one tick past the longest window.
    let at = last_slot + 60_000;
    for partition in 0..partitions {
        let tick = ClockTicked {
            envelope: Envelope::new(format!("clock:{topic}:{partition}:{at}"), at, run),
            clock: "demo".into(),
            period_ms: at - due,
        };
        let bytes = mailfleet_events::encode(&tick)?;
        producer.send_to_partition(topic, partition, &bytes).await?;
    }
    let names: Vec<&str> = jobs.iter().map(|(j, _)| j.as_str()).collect();
    println!(
        "== purges: {} due now into {partitions} partitions of {topic}, a tick at +{} min",
        names.join(", "),
        (at - due) / 60_000
    );
    let took = fleet
        .settle(&["purger", "storage", "index"], Duration::from_secs(180))
        .await
        .context("the purges")?;
    println!(
        "== the fleet's purger, storage writer and indexer caught up in {:.1}s",
        took.as_secs_f64()
    );
    print_purged(cfg, &runs)
}

/// What the storage writer purged in `runs`, per folder.
fn print_purged(cfg: &Config, runs: &[String]) -> anyhow::Result<()> {
    let stored = &cfg.consumers.storage.stored_topic;
    let purged: Vec<MessagesPurged> = read_all::<MessagesPurged>(cfg, stored)?
        .into_iter()
        .filter(|p| runs.contains(&p.job))
        .collect();
    let mut by_folder: std::collections::BTreeMap<&str, (usize, i64, i64)> = Default::default();
    for p in &purged {
        let e = by_folder.entry(p.folder.as_str()).or_default();
        *e = (e.0 + 1, e.1 + p.count, e.2 + p.bytes);
    }
    for (folder, (accounts, count, bytes)) in by_folder {
        println!(
            "  {folder:<6} {accounts:>4} mailboxes purged, {count:>5} messages, {bytes:>9} bytes"
        );
    }
    Ok(())
}

/// Move the oldest message of every third mailbox under `root`
/// (`<domain>/<user>/Maildir`) into its Trash; returns how many moved.
fn move_to_trash(root: &str) -> anyhow::Result<usize> {
    let mut mailboxes: Vec<std::path::PathBuf> = Vec::new();
    for domain in read_dir_sorted(Path::new(root))? {
        for user in read_dir_sorted(&domain)? {
            let maildir = user.join("Maildir");
            if maildir.join("new").is_dir() || maildir.join("cur").is_dir() {
                mailboxes.push(maildir);
            }
        }
    }
    let mut moved = 0;
    for maildir in mailboxes.iter().step_by(3) {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            files.extend(read_dir_sorted(&maildir.join(sub))?);
        }
        let Some(file) = files.into_iter().find(|f| f.is_file()) else {
            continue;
        };
        let trash = maildir.join(".Trash");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(trash.join(sub))?;
        }
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Seen, as a client marks what it moves: `<base>:2,S`.
        let base = name.split(':').next().unwrap_or(name);
        let to = trash.join("cur").join(format!("{base}:2,S"));
        std::fs::rename(&file, &to)
            .with_context(|| format!("moving {} to {}", file.display(), to.display()))?;
        moved += 1;
    }
    Ok(moved)
}

fn read_dir_sorted(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    out.sort();
    Ok(out)
}
