//! `mailfleet spam learn` and `mailfleet spam relearn`: users' spam
//! judgements for rspamd's Bayes classifier (`docs/spam-learning.md`).
//!
//! `learn --spam|--ham <account> <folder>` teaches every message of the
//! folder's `cur/` and `new/` (in file-name order, zstd-compressed files
//! decompressed); `--message <file|->` teaches one message instead (what
//! an IMAPSieve pipe script runs). Each message is taught by
//! `mailfleet_scan::rspamd::learn::Teacher` (the API's learn route takes
//! the same step) and its `SpamLearned` goes to `[api.spam] topic`, keyed
//! by the account, each acknowledged (`acks=all`) before the next. The
//! settings are `[api.spam]`'s, the blob store `[blobs]`'s unless
//! `api.spam.blobs_dir` is set. rspamd's refusals (too few tokens) are
//! counted, not failures: the exit code is non-zero only when rspamd,
//! Kafka or the blob store failed.
//!
//! `relearn` teaches a controller again what the log says rspamd was
//! taught, for a new rspamd or one whose Redis was lost; see [`relearn`].

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Subcommand};
use mailfleet_blob::BlobStore;
use mailfleet_events::mail::{LearnOutcome, SpamClass, SpamLearned};
use mailfleet_runtime::{
    admin::{client_config, watermarks},
    producer::EventProducer,
    read,
    time::now_ms,
};
use mailfleet_scan::rspamd::learn::{
    class_name, default_folder, maildir_base, relearn_plan, unpack, LearnConfig, LearnError,
    Lesson, Teacher,
};
use mailfleet_storage::maildir::Maildirs;
use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer},
    Offset, TopicPartitionList,
};
use serde_json::json;

use crate::config::Config;

/// The events' `producer`.
const PRODUCER: &str = "mailfleet-spam";
/// How long one event may wait for Kafka's acknowledgement: an IMAPSieve
/// pipe holds the user's IMAP command meanwhile.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Kafka may take to answer about the relearn's offsets.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// `mailfleet spam <action>`.
#[derive(Args)]
pub struct SpamArgs {
    #[command(subcommand)]
    action: SpamAction,
}

#[derive(Subcommand)]
enum SpamAction {
    /// Teach rspamd a folder's messages (or one message) as spam or ham,
    /// one SpamLearned each on mail.learned.
    Learn(LearnArgs),
    /// Teach a controller again what mail.learned says rspamd was taught
    /// (a new rspamd, a lost Redis); produces nothing.
    Relearn(RelearnArgs),
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("class").required(true).args(["spam", "ham"]))]
struct LearnArgs {
    /// Teach the messages as spam.
    #[arg(long)]
    spam: bool,
    /// Teach the messages as ham (not spam).
    #[arg(long)]
    ham: bool,
    /// The account (address) whose folder it is.
    account: String,
    /// The IMAP folder (INBOX, Spam, Archive, ...). With --message, the
    /// folder the message was moved to, as recorded (default: Spam for
    /// --spam, INBOX for --ham).
    #[arg(required_unless_present = "message")]
    folder: Option<String>,
    /// Teach one message instead: a file, or `-` for stdin (an IMAPSieve
    /// pipe script).
    #[arg(long, value_name = "FILE|-")]
    message: Option<PathBuf>,
    /// Who asked, recorded in each event (default: cli:<$USER or uid>;
    /// the IMAPSieve scripts say imapsieve).
    #[arg(long, value_name = "WHO")]
    requested_by: Option<String>,
}

#[derive(Args)]
struct RelearnArgs {
    /// Teach everything on the topic, not only what came after this
    /// controller's last relearn (its Redis was lost or is new).
    #[arg(long)]
    from_beginning: bool,
    /// The controller to teach, host:port (default: [api.spam] controller).
    #[arg(long, value_name = "HOST:PORT")]
    controller: Option<String>,
}

pub async fn run(args: SpamArgs, cfg: &Config) -> anyhow::Result<()> {
    match args.action {
        SpamAction::Learn(args) => learn(args, cfg).await,
        SpamAction::Relearn(args) => relearn(args, cfg).await,
    }
}

/// `[api.spam]`, or its defaults.
fn settings(cfg: &Config) -> LearnConfig {
    cfg.api.spam.clone().unwrap_or_default()
}

/// A teacher with the blob store of `api.spam.blobs_dir`, else `[blobs]`
/// (a folder or a bucket).
async fn teacher(cfg: &Config, learn: &LearnConfig) -> anyhow::Result<Teacher> {
    let blobs = match &learn.blobs_dir {
        Some(dir) => {
            BlobStore::open(dir).with_context(|| format!("opening the blob store at {dir:?}"))?
        }
        None => BlobStore::connect(&cfg.blobs).await?,
    };
    Ok(Teacher::new(learn, Arc::new(blobs), PRODUCER))
}

/// What one learn run came to.
#[derive(Debug, Default)]
struct Tally {
    learned: u64,
    already: u64,
    refused: u64,
    /// Not taught: too large, not decompressible, gone meanwhile.
    skipped: u64,
}

impl Tally {
    fn count(&mut self, outcome: LearnOutcome) {
        match outcome {
            LearnOutcome::Learned => self.learned += 1,
            LearnOutcome::AlreadyLearned => self.already += 1,
            LearnOutcome::Refused | LearnOutcome::Unknown => self.refused += 1,
        }
    }
}

async fn learn(args: LearnArgs, cfg: &Config) -> anyhow::Result<()> {
    let class = if args.spam {
        SpamClass::Spam
    } else {
        SpamClass::Ham
    };
    let account = args.account.trim().to_lowercase();
    let settings = settings(cfg);
    let folder = args
        .folder
        .clone()
        .unwrap_or_else(|| default_folder(class).to_string());
    let files = match &args.message {
        Some(path) => vec![path.clone()],
        None => folder_files(cfg, &account, &folder)?,
    };
    let teacher = teacher(cfg, &settings).await?;
    let before = teacher.learned_count().await?;
    let producer = EventProducer::with_delivery_timeout(&cfg.kafka, PRODUCER, ACK_TIMEOUT)?;
    let requested_by = args.requested_by.clone().unwrap_or_else(cli_user);
    let mut tally = Tally::default();
    for path in &files {
        let Some((raw, file)) = message(path, settings.max_message_bytes)? else {
            tally.skipped += 1;
            continue;
        };
        let lesson = Lesson {
            account: &account,
            folder: &folder,
            file: &file,
            class,
            requested_by: &requested_by,
        };
        let event = teacher.teach(&lesson, raw, now_ms()).await?;
        send(&producer, &settings.topic, &event).await?;
        tally.count(event.outcome);
    }
    let after = teacher.learned_count().await?;
    let what = format!(
        "{account} {folder}: {} taught as {}",
        files.len(),
        class_name(class)
    );
    print_summary(&what, &tally, before, after);
    Ok(())
}

/// The message files of a folder: `cur/` and `new/`, in file-name order
/// (the delivery time leads the name).
fn folder_files(cfg: &Config, account: &str, folder: &str) -> anyhow::Result<Vec<PathBuf>> {
    let storage = &cfg.consumers.storage;
    let maildirs = Maildirs::new(
        &storage.mail_root,
        &storage.hostname,
        Default::default(),
        false,
    );
    let dir = maildirs.folder(account, folder)?;
    anyhow::ensure!(
        dir.is_dir(),
        "{account} has no folder {folder} ({} is missing)",
        dir.display()
    );
    let mut files = Vec::new();
    for sub in ["cur", "new"] {
        let entries = match std::fs::read_dir(dir.join(sub)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("listing {}", dir.join(sub).display()))
            }
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// One message and its file's base name (empty for stdin); `None`, with
/// a note, for a file to skip: gone since the listing (Dovecot moved or
/// expunged it), too large, or not decompressible.
fn message(path: &Path, max: usize) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    let (bytes, file) = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
        (bytes, String::new())
    } else {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("note: {} is gone; skipped", path.display());
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        (bytes, maildir_base(&name).to_string())
    };
    match unpack(bytes, max) {
        Ok(raw) if raw.is_empty() => {
            eprintln!("note: {} is empty; skipped", path.display());
            Ok(None)
        }
        Ok(raw) => Ok(Some((raw, file))),
        Err(e @ (LearnError::TooLarge { .. } | LearnError::Unpack { .. })) => {
            eprintln!("note: {}: {e}; skipped", path.display());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

async fn send(producer: &EventProducer, topic: &str, event: &SpamLearned) -> anyhow::Result<()> {
    producer
        .send(topic, event.account.as_bytes(), event)
        .await
        .with_context(|| {
            format!(
                "producing SpamLearned {} to {topic}",
                event.envelope.event_id
            )
        })?;
    Ok(())
}

/// `cli:<$USER>`, or `cli:<uid>` without one.
fn cli_user() -> String {
    use std::os::unix::fs::MetadataExt;
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            // /proc/self belongs to the process's user.
            std::fs::metadata("/proc/self")
                .ok()
                .map(|m| m.uid().to_string())
        });
    format!("cli:{}", user.unwrap_or_else(|| "unknown".into()))
}

/// The summary lines; the last is one JSON object.
fn print_summary(what: &str, tally: &Tally, before: u64, after: u64) {
    println!("{what}");
    println!(
        "  {} learned, {} already learned, {} refused, {} skipped",
        tally.learned, tally.already, tally.refused, tally.skipped
    );
    println!("  rspamd /stat learned: {before} before, {after} after");
    let line = json!({
        "learned": tally.learned,
        "already_learned": tally.already,
        "refused": tally.refused,
        "skipped": tally.skipped,
        "stat_before": before,
        "stat_after": after,
    });
    println!("{line}");
}

/// `mailfleet spam relearn`: read `[api.spam] topic` from the offsets
/// this controller's relearn group committed last (from the beginning
/// with `--from-beginning`, or when it never ran) to the end the topic
/// has now, and teach each blob once, as the class of its last learned
/// or already-learned event ([`relearn_plan`]). Nothing is produced.
///
/// Guarantee: once a run exits 0, the controller has been taught every
/// such event up to the end the topic had when the run started, and the
/// group (`mailfleet-spam-relearn-<controller>`) holds that end, so the
/// next run starts after it. A failed run (rspamd or Kafka) commits
/// nothing and the next run teaches the same again: rspamd answers 208
/// for what it already holds, so teaching twice is harmless. Blobs the
/// store no longer holds (their account was deleted) are counted as
/// missing, not taught.
async fn relearn(args: RelearnArgs, cfg: &Config) -> anyhow::Result<()> {
    let mut settings = settings(cfg);
    if let Some(controller) = args.controller {
        settings.controller = controller;
    }
    let problems = settings.problems("api.spam");
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    let topic = settings.topic.clone();
    let teacher = teacher(cfg, &settings).await?;
    let before = teacher.learned_count().await?;
    let group = format!("mailfleet-spam-relearn-{}", settings.controller);
    let positions = Positions::open(cfg, &group, &topic)?;
    let start = positions.committed(args.from_beginning)?;
    let (kafka, t) = (cfg.kafka.clone(), topic.clone());
    let records =
        tokio::task::spawn_blocking(move || read::read_to_end(&kafka, &t, "spam-relearn"))
            .await??;
    let mut ends = BTreeMap::new();
    let mut events = Vec::new();
    for record in records
        .iter()
        .filter(|r| r.offset >= start.get(&r.partition).copied().unwrap_or(0))
    {
        ends.insert(record.partition, record.offset + 1);
        match read::decode::<SpamLearned>(record) {
            Ok(event) => events.push(event),
            Err(e) => eprintln!("note: {e}; skipped"),
        }
    }
    let (mut tally, mut missing) = (Tally::default(), 0u64);
    let plan = relearn_plan(events);
    for (blob_id, class) in &plan {
        match teacher.reteach(*class, blob_id).await? {
            Some(reply) => tally.count(reply.outcome),
            None => missing += 1,
        }
    }
    positions.commit(&ends)?;
    let after = teacher.learned_count().await?;
    let what = format!(
        "{topic} -> {}: {} blobs taught again, {missing} missing from the blob store",
        settings.controller,
        plan.len()
    );
    print_summary(&what, &tally, before, after);
    Ok(())
}

/// The relearn group's committed offsets on the topic.
struct Positions {
    consumer: BaseConsumer,
    topic: String,
}

impl Positions {
    fn open(cfg: &Config, group: &str, topic: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = client_config(&cfg.kafka)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the relearn group's client")?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Each partition's first offset to read: the committed one, or 0
    /// (the low watermark is at least that) when none or `from_beginning`.
    fn committed(&self, from_beginning: bool) -> anyhow::Result<BTreeMap<i32, i64>> {
        let partitions = watermarks(&self.consumer, &self.topic, KAFKA_TIMEOUT)?;
        if from_beginning || partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut tpl = TopicPartitionList::new();
        for (id, _, _) in &partitions {
            tpl.add_partition(&self.topic, *id);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, KAFKA_TIMEOUT)
            .context("reading the relearn group's offsets")?;
        Ok(committed
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(at) => Some((e.partition(), at)),
                _ => None,
            })
            .collect())
    }

    /// Commit the next offset of each partition read.
    fn commit(&self, ends: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        if ends.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (id, next) in ends {
            tpl.add_partition_offset(&self.topic, *id, Offset::Offset(*next))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .context("committing the relearn group's offsets")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spam_tally_counts_each_outcome() {
        let mut t = Tally::default();
        for o in [
            LearnOutcome::Learned,
            LearnOutcome::Learned,
            LearnOutcome::AlreadyLearned,
            LearnOutcome::Refused,
        ] {
            t.count(o);
        }
        assert_eq!((t.learned, t.already, t.refused), (2, 1, 1));
        assert!(cli_user().starts_with("cli:"));
    }
}
