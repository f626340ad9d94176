//! Learning from users: teach rspamd one message as spam or ham, and say
//! so in a [`SpamLearned`] event.
//!
//! One step serves `mailfleet spam learn` (a folder, or one message from
//! an IMAPSieve pipe) and the API's learn route: [`Teacher::teach`] puts
//! the bytes in the blob store (with a reference for the account, before
//! the blob, as the LMTP server does), posts them to the controller
//! (`/learnspam`, `/learnham`) and returns the event; the caller produces
//! it. The event comes after rspamd's answer, so a message is never
//! recorded as learned when it was not; when the produce then fails, the
//! next run gets `ALREADY_LEARNED` (rspamd's 208) and records that.
//! Because the blob is stored first, every event names bytes the store
//! holds, and [`Teacher::reteach`] can teach a new rspamd from the log
//! (`mailfleet spam relearn`).
//!
//! The rest is pure: the event id ([`event_id`], the same on every run),
//! the event ([`learned`]), the Message-ID, a Maildir file's name
//! ([`maildir_base`]) and a zstd-compressed Maildir file ([`unpack`]).

use std::sync::Arc;

use mailfleet_blob::{BlobError, BlobStore};
use mailfleet_events::{
    mail::{LearnOutcome, SpamClass, SpamLearned},
    Envelope,
};
use serde::{Deserialize, Serialize};

use super::{reply::LearnReply, Rspamd, RspamdConfig, RspamdError};

/// The first bytes of a zstd frame: how a compressed Maildir file (the
/// storage writer's `compress = true`, Dovecot's zlib plugin) is told apart.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Longest Message-ID kept: the header is the sender's to fill.
const MAX_MESSAGE_ID: usize = 998;

/// `[api.spam]`: learning from users, for the API's learn route and
/// `mailfleet spam`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnConfig {
    /// rspamd's controller (`/learnspam`, `/learnham`, `/stat`), `host:port`.
    pub controller: String,
    /// All tries of one learn together, ms. Learning a large message
    /// takes rspamd longer than scoring it.
    pub timeout_ms: u64,
    /// Tries after the first, within `timeout_ms`.
    pub retries: u32,
    /// The topic of `SpamLearned` events, keyed by account.
    pub topic: String,
    /// Largest message taught, bytes (after decompression): the learn
    /// route's body limit (413 beyond it); larger files of a folder are
    /// skipped and counted.
    pub max_message_bytes: usize,
    /// The blob store's folder: the host's `[blobs] dir`. `mailfleet
    /// spam` uses `[blobs] dir` when unset; the API sees only `[api]`, so
    /// its learn route needs it set.
    pub blobs_dir: Option<String>,
}

impl Default for LearnConfig {
    fn default() -> Self {
        Self {
            controller: "127.0.0.1:11334".into(),
            timeout_ms: 10_000,
            retries: 1,
            topic: "mail.learned".into(),
            // Postfix's message_size_limit default is 10 MiB; sites raise it.
            max_message_bytes: 25 * 1024 * 1024,
            blobs_dir: None,
        }
    }
}

impl LearnConfig {
    /// The client settings: rspamd's own defaults for what learning does
    /// not use.
    pub fn rspamd(&self) -> RspamdConfig {
        RspamdConfig {
            enabled: true,
            controller: self.controller.clone(),
            timeout_ms: self.timeout_ms,
            retries: self.retries,
            ..RspamdConfig::default()
        }
    }

    /// Every problem, each naming its key under `table` (e.g. `api.spam`)
    /// and its value.
    pub fn problems(&self, table: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .rspamd()
            .problems()
            .into_iter()
            .map(|p| format!("{table}.{p}"))
            .collect();
        if self.topic.trim().is_empty() {
            out.push(format!("{table}.topic = {:?}: is empty", self.topic));
        }
        if self.blobs_dir.as_ref().is_some_and(|d| d.trim().is_empty()) {
            out.push(format!("{table}.blobs_dir = \"\": is empty"));
        }
        if self.max_message_bytes < 1024 {
            out.push(format!(
                "{table}.max_message_bytes = {}: must be >= 1024",
                self.max_message_bytes
            ));
        }
        out
    }
}

/// Why a message could not be taught.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// Only spam and ham are taught.
    #[error("class {0:?}: only spam or ham can be taught")]
    Class(SpamClass),
    #[error("storing the message of {account} in the blob store")]
    Store {
        account: String,
        #[source]
        source: BlobError,
    },
    #[error("reading blob {blob_id} to teach it again")]
    Load {
        blob_id: String,
        #[source]
        source: BlobError,
    },
    #[error("the blob store's thread failed: {0}")]
    Thread(String),
    /// rspamd's controller gave no usable answer (its error names it).
    #[error(transparent)]
    Teach(RspamdError),
    #[error("decompressing a zstd-compressed message: {reason}")]
    Unpack { reason: String },
    #[error("the message is larger than max_message_bytes = {max}")]
    TooLarge { max: usize },
}

/// Where a message to teach comes from and who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lesson<'a> {
    /// Whose folder (lower-cased address): the record key.
    pub account: &'a str,
    /// The IMAP folder, e.g. `Spam` or `INBOX`.
    pub folder: &'a str,
    /// The Maildir file's base name ([`maildir_base`]); empty for a
    /// message that came without a file (stdin, the API).
    pub file: &'a str,
    pub class: SpamClass,
    /// `cli:<user>`, `api` or `imapsieve`.
    pub requested_by: &'a str,
}

/// Teaches rspamd and keeps what it taught in the blob store.
pub struct Teacher {
    rspamd: Rspamd,
    blobs: Arc<BlobStore>,
    /// The events' `producer`.
    producer: String,
}

impl Teacher {
    pub fn new(cfg: &LearnConfig, blobs: Arc<BlobStore>, producer: &str) -> Self {
        Self {
            rspamd: Rspamd::new(cfg.rspamd()),
            blobs,
            producer: producer.to_string(),
        }
    }

    /// The controller's learned count (`GET /stat`).
    pub async fn learned_count(&self) -> Result<u64, LearnError> {
        self.rspamd.learned().await.map_err(LearnError::Teach)
    }

    /// Store `raw`, teach it, and return the event for the caller to
    /// produce, with event time `now_ms`. rspamd not answering is an
    /// error and nothing is recorded; a refusal (too few tokens) is an
    /// event with outcome `REFUSED`.
    pub async fn teach(
        &self,
        lesson: &Lesson<'_>,
        raw: Vec<u8>,
        now_ms: i64,
    ) -> Result<SpamLearned, LearnError> {
        if !matches!(lesson.class, SpamClass::Spam | SpamClass::Ham) {
            return Err(LearnError::Class(lesson.class));
        }
        let raw = Arc::new(raw);
        let (blobs, bytes) = (self.blobs.clone(), raw.clone());
        let account = lesson.account.to_string();
        let blob_id = blocking(move || {
            let id = mailfleet_blob::blob_id(&bytes);
            // The reference first: the account deleter then never removes
            // a blob an event is about to name while the account lives.
            blobs.add_refs(&id, [account.as_str()])?;
            blobs.put_with_id(&id, &bytes)?;
            Ok(id)
        })
        .await?
        .map_err(|source| LearnError::Store {
            account: lesson.account.to_string(),
            source,
        })?;
        let reply = self
            .rspamd
            .learn(lesson.class, &raw)
            .await
            .map_err(LearnError::Teach)?;
        let envelope = Envelope::new(
            event_id(lesson.class, lesson.account, lesson.folder, &blob_id),
            now_ms,
            &self.producer,
        );
        Ok(learned(lesson, envelope, &blob_id, &raw, reply))
    }

    /// Teach the stored blob `blob_id` as `class` again; `None` when the
    /// store no longer holds it (its account was deleted).
    pub async fn reteach(
        &self,
        class: SpamClass,
        blob_id: &str,
    ) -> Result<Option<LearnReply>, LearnError> {
        if !matches!(class, SpamClass::Spam | SpamClass::Ham) {
            return Err(LearnError::Class(class));
        }
        let (blobs, id) = (self.blobs.clone(), blob_id.to_string());
        let raw = match blocking(move || blobs.get(&id)).await? {
            Ok(raw) => raw,
            Err(BlobError::NotFound { .. }) => return Ok(None),
            Err(source) => {
                return Err(LearnError::Load {
                    blob_id: blob_id.to_string(),
                    source,
                })
            }
        };
        let reply = self
            .rspamd
            .learn(class, &raw)
            .await
            .map_err(LearnError::Teach)?;
        Ok(Some(reply))
    }
}

/// Run blocking blob-store work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LearnError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LearnError::Thread(e.to_string()))
}

/// The event for one taught message: pure.
pub fn learned(
    lesson: &Lesson<'_>,
    envelope: Envelope,
    blob_id: &str,
    raw: &[u8],
    reply: LearnReply,
) -> SpamLearned {
    SpamLearned {
        envelope,
        account: lesson.account.to_string(),
        folder: lesson.folder.to_string(),
        file: lesson.file.to_string(),
        blob_id: blob_id.to_string(),
        size: i64::try_from(raw.len()).unwrap_or(i64::MAX),
        message_id: message_id(raw),
        class: lesson.class,
        outcome: reply.outcome,
        detail: reply.detail,
        requested_by: lesson.requested_by.to_string(),
    }
}

/// The event id of teaching `blob_id` from `account`'s `folder` as
/// `class`: the same on every run, so a re-run's event has the id of the
/// first (`learned:spam:<blob>:<account>/<folder>`).
pub fn event_id(class: SpamClass, account: &str, folder: &str, blob_id: &str) -> String {
    format!("learned:{}:{blob_id}:{account}/{folder}", class_name(class))
}

/// `spam`, `ham` or `unknown`: the class as commands and routes name it.
pub fn class_name(class: SpamClass) -> &'static str {
    match class {
        SpamClass::Spam => "spam",
        SpamClass::Ham => "ham",
        SpamClass::Unknown => "unknown",
    }
}

/// The class named `spam` or `ham` (any case); `None` for anything else.
pub fn parse_class(name: &str) -> Option<SpamClass> {
    match name.to_ascii_lowercase().as_str() {
        "spam" => Some(SpamClass::Spam),
        "ham" => Some(SpamClass::Ham),
        _ => None,
    }
}

/// The folder recorded for a message that came without one (stdin, the
/// API): where moving it made the user's judgement, `Spam` for spam and
/// `INBOX` for ham.
pub fn default_folder(class: SpamClass) -> &'static str {
    match class {
        SpamClass::Ham => "INBOX",
        _ => "Spam",
    }
}

/// Longest folder name recorded, characters.
const MAX_FOLDER: usize = 255;

/// What is wrong with a folder name given by a client, if anything: it is
/// recorded in the event, so no control characters and not too long.
pub fn folder_problem(folder: &str) -> Option<String> {
    if folder.trim().is_empty() {
        return Some("folder is empty".into());
    }
    if folder.chars().any(char::is_control) || folder.chars().count() > MAX_FOLDER {
        return Some(format!(
            "folder {folder:?}: at most {MAX_FOLDER} characters, no control characters"
        ));
    }
    None
}

/// Whether an outcome means rspamd holds the message as its class: what
/// a relearn teaches again.
pub fn was_taught(outcome: LearnOutcome) -> bool {
    matches!(
        outcome,
        LearnOutcome::Learned | LearnOutcome::AlreadyLearned
    )
}

/// What a relearn teaches, from `SpamLearned` events in log order: each
/// blob once, as the class of its last event rspamd took (learned or
/// already learned; a refusal changed nothing), in the order of those
/// events' times. A message moved into Spam and out again is taught as
/// ham, as the user's last word says.
pub fn relearn_plan(events: impl IntoIterator<Item = SpamLearned>) -> Vec<(String, SpamClass)> {
    let mut last: std::collections::HashMap<String, (i64, usize, SpamClass)> =
        std::collections::HashMap::new();
    for (i, e) in events.into_iter().enumerate() {
        if !was_taught(e.outcome) || !matches!(e.class, SpamClass::Spam | SpamClass::Ham) {
            continue;
        }
        let at = (e.envelope.event_time, i);
        let newer = last.get(&e.blob_id).is_none_or(|(t, j, _)| (*t, *j) <= at);
        if newer {
            last.insert(e.blob_id, (at.0, at.1, e.class));
        }
    }
    let mut plan: Vec<_> = last.into_iter().collect();
    plan.sort_by_key(|(blob, (t, i, _))| (*t, *i, blob.clone()));
    plan.into_iter()
        .map(|(blob, (_, _, c))| (blob, c))
        .collect()
}

/// The Message-ID of the header section, without the angle brackets, as
/// `MessageReceived` carries it.
pub fn message_id(raw: &[u8]) -> Option<String> {
    let message = mail_parser::MessageParser::new().parse_headers(raw)?;
    let id = message.message_id()?.trim();
    if id.is_empty() {
        return None;
    }
    let mut end = id.len().min(MAX_MESSAGE_ID);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    Some(id[..end].to_string())
}

/// A Maildir file name without its `:2,<flags>` info: the name stays the
/// same when a client reads or flags the message.
pub fn maildir_base(name: &str) -> &str {
    name.split_once(':').map_or(name, |(base, _)| base)
}

/// The message a Maildir file holds: zstd frames (by [`ZSTD_MAGIC`])
/// decompressed, anything else as it is; at most `max` bytes either way.
pub fn unpack(bytes: Vec<u8>, max: usize) -> Result<Vec<u8>, LearnError> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return match bytes.len() > max {
            true => Err(LearnError::TooLarge { max }),
            false => Ok(bytes),
        };
    }
    let fail = |reason: String| LearnError::Unpack { reason };
    let mut ctx = zstd_safe::DCtx::create();
    let mut input = zstd_safe::InBuffer::around(&bytes);
    let mut chunk = vec![0u8; zstd_safe::DCtx::out_size()];
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(3).min(max));
    loop {
        let mut output = zstd_safe::OutBuffer::around(&mut chunk[..]);
        let hint = ctx
            .decompress_stream(&mut output, &mut input)
            .map_err(|code| fail(zstd_safe::get_error_name(code).to_string()))?;
        let written = output.pos();
        out.extend_from_slice(&chunk[..written]);
        if out.len() > max {
            return Err(LearnError::TooLarge { max });
        }
        let consumed = input.pos() == bytes.len();
        if consumed && hint == 0 {
            return Ok(out); // the last frame is complete
        }
        if consumed && written == 0 {
            return Err(fail("the file ends inside a zstd frame".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Message-ID: <abc.123@example.net>\r\n\
        Subject: cheap watches\r\n\r\nBuy cheap watches today, the best prices.\r\n";

    fn lesson() -> Lesson<'static> {
        Lesson {
            account: "bob@example.org",
            folder: "Spam",
            file: "1700000000.M1P2.mx1,S=99,W=101",
            class: SpamClass::Spam,
            requested_by: "cli:bob",
        }
    }

    #[test]
    fn learn_event_ids_repeat_and_tell_class_folder_and_account_apart() {
        let id = event_id(SpamClass::Spam, "bob@example.org", "Spam", "ab12");
        assert_eq!(id, "learned:spam:ab12:bob@example.org/Spam");
        assert_eq!(
            id,
            event_id(SpamClass::Spam, "bob@example.org", "Spam", "ab12")
        );
        let others = [
            event_id(SpamClass::Ham, "bob@example.org", "Spam", "ab12"),
            event_id(SpamClass::Spam, "eve@example.org", "Spam", "ab12"),
            event_id(SpamClass::Spam, "bob@example.org", "Junk", "ab12"),
            event_id(SpamClass::Spam, "bob@example.org", "Spam", "cd34"),
        ];
        assert!(others.iter().all(|o| *o != id), "{others:?}");
    }

    #[test]
    fn learn_event_carries_the_lesson_and_rspamds_answer() {
        let envelope = Envelope::new("learned:x", 1_700_000_000_000, "mailfleet-spam");
        let reply = LearnReply {
            outcome: LearnOutcome::AlreadyLearned,
            detail: Some("already learned".into()),
        };
        let e = learned(&lesson(), envelope.clone(), "ab12", MESSAGE, reply);
        assert_eq!(e.envelope, envelope);
        assert_eq!(e.account, "bob@example.org");
        assert_eq!(
            (e.folder.as_str(), e.file.as_str()),
            ("Spam", lesson().file)
        );
        assert_eq!(e.blob_id, "ab12");
        assert_eq!(e.size, MESSAGE.len() as i64);
        assert_eq!(e.message_id.as_deref(), Some("abc.123@example.net"));
        assert_eq!(
            (e.class, e.outcome),
            (SpamClass::Spam, LearnOutcome::AlreadyLearned)
        );
        assert_eq!(e.detail.as_deref(), Some("already learned"));
        assert_eq!(e.requested_by, "cli:bob");
    }

    #[test]
    fn learn_message_id_is_read_unfolded_and_may_be_missing() {
        assert_eq!(
            message_id(b"Message-Id:\r\n <x@y>\r\n\r\nbody").as_deref(),
            Some("x@y")
        );
        assert_eq!(message_id(b"Subject: none\r\n\r\nbody"), None);
        assert_eq!(message_id(b""), None);
        let long = format!("Message-ID: <{}@x>\r\n\r\n", "a".repeat(1200));
        let id = message_id(long.as_bytes()).unwrap();
        assert!(id.len() <= MAX_MESSAGE_ID, "{}", id.len());
    }

    #[test]
    fn learn_maildir_base_drops_only_the_flags() {
        assert_eq!(maildir_base("1.M2.mx1,S=9,W=10:2,RS"), "1.M2.mx1,S=9,W=10");
        assert_eq!(maildir_base("1.M2.mx1,S=9"), "1.M2.mx1,S=9");
    }

    #[test]
    fn learn_classes_parse_by_name() {
        assert_eq!(parse_class("SPAM"), Some(SpamClass::Spam));
        assert_eq!(parse_class("ham"), Some(SpamClass::Ham));
        assert_eq!(parse_class("unknown"), None);
        assert_eq!(class_name(SpamClass::Ham), "ham");
        assert!(was_taught(LearnOutcome::AlreadyLearned));
        assert_eq!(default_folder(SpamClass::Ham), "INBOX");
        assert_eq!(folder_problem("Spam"), None);
        assert!(folder_problem("a\nb").unwrap().contains("\"a\\nb\""));
        assert!(folder_problem(" ").is_some());
        assert!(!was_taught(LearnOutcome::Refused));
    }

    fn event(blob: &str, time: i64, class: SpamClass, outcome: LearnOutcome) -> SpamLearned {
        let reply = LearnReply {
            outcome,
            detail: None,
        };
        let lesson = Lesson { class, ..lesson() };
        learned(&lesson, Envelope::new("x", time, "t"), blob, MESSAGE, reply)
    }

    #[test]
    fn learn_relearn_plan_keeps_each_blobs_last_taught_class() {
        use LearnOutcome::*;
        use SpamClass::*;
        let plan = relearn_plan([
            event("a", 1, Spam, Learned),
            event("b", 2, Spam, Refused),
            event("c", 3, Ham, AlreadyLearned),
            event("a", 4, Ham, Learned),
            event("c", 5, Spam, Refused),
            event("d", 5, Spam, Learned),
        ]);
        let want = [("c", Ham), ("a", Ham), ("d", Spam)].map(|(b, c)| (b.to_string(), c));
        assert_eq!(plan, want);
        // Across partitions the event time decides, not the read order.
        let plan = relearn_plan([event("e", 9, Ham, Learned), event("e", 8, Spam, Learned)]);
        assert_eq!(plan, [("e".to_string(), Ham)]);
    }

    fn zstd(raw: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; zstd_safe::compress_bound(raw.len())];
        let n = zstd_safe::compress(&mut out[..], raw, 3).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn learn_unpack_reads_zstd_files_and_passes_plain_ones() {
        let big = MESSAGE.repeat(5_000);
        assert_eq!(unpack(zstd(&big), 1 << 20).unwrap(), big);
        assert_eq!(unpack(MESSAGE.to_vec(), 1 << 20).unwrap(), MESSAGE);
        let mut two = zstd(b"first ");
        two.extend(zstd(b"second"));
        assert_eq!(unpack(two, 100).unwrap(), b"first second");
    }

    #[test]
    fn learn_unpack_refuses_bombs_truncation_and_garbage() {
        let big = vec![b'a'; 1 << 20];
        assert!(matches!(
            unpack(zstd(&big), 4096),
            Err(LearnError::TooLarge { max: 4096 })
        ));
        assert!(matches!(
            unpack(big, 4096),
            Err(LearnError::TooLarge { .. })
        ));
        let whole = zstd(&MESSAGE.repeat(100));
        let cut = whole[..whole.len() / 2].to_vec();
        assert!(matches!(
            unpack(cut, 1 << 20),
            Err(LearnError::Unpack { .. })
        ));
        let mut garbage = ZSTD_MAGIC.to_vec();
        garbage.extend([0xff; 32]);
        let e = unpack(garbage, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("decompressing"), "{e}");
    }

    #[test]
    fn learn_config_problems_name_the_table() {
        assert!(LearnConfig::default().problems("api.spam").is_empty());
        let bad = LearnConfig {
            controller: "nowhere".into(),
            timeout_ms: 0,
            topic: " ".into(),
            max_message_bytes: 10,
            ..LearnConfig::default()
        };
        let p = bad.problems("api.spam").join("\n");
        for want in [
            "api.spam.controller = \"nowhere\"",
            "api.spam.timeout_ms = 0",
            "api.spam.topic = \" \"",
            "api.spam.max_message_bytes = 10",
        ] {
            assert!(p.contains(want), "{want} not in\n{p}");
        }
    }
}
