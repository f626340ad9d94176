//! The attachment policy: Amavis's banned-files semantics over one raw
//! message, with no I/O.
//!
//! Start at [`check`]. It parses the message with mail-parser and walks every
//! part ([`walk`]), into multiparts and attached messages. Each part's file
//! names (Content-Disposition `filename`, Content-Type `name`, decoded from
//! RFC 2231 and RFC 2047: [`params`], [`encoded`]) and declared type go
//! through the rules ([`names`]), first match wins:
//!
//! 1. `double-extension`: an innocuous extension hides a banned one
//!    (`invoice.pdf.exe`);
//! 2. `banned-extension`: the last extension is banned (`x.exe`);
//! 3. `banned-mime-type`: the declared Content-Type is banned;
//! 4. zip archives ([`archive`]): members' names through 1–2, nested zips
//!    opened, and `archive-limits` when a bound on depth, entries, bytes or
//!    compression ratio is exceeded;
//! 5. `undecipherable-*`, what could not be inspected, as Amavis's banned
//!    `UNDECIPHERABLE` rule: an encrypted archive member
//!    (`undecipherable-encrypted`), an archive that cannot be opened or a
//!    member that cannot be read, such as a corrupt central directory or an
//!    unsupported compression method (`undecipherable-unreadable`), parts
//!    nested deeper than `max_mime_depth` (`undecipherable-mime-depth`).
//!
//! Rules 1–4 stop the walk at the first match. Rule 5 does not: the first
//! undecipherable finding is kept and the walk goes on, so a ban by 1–4
//! anywhere in the message, before or after it, is the reported one (the
//! stronger finding: it names what is banned, not only what was hidden).
//! The walk is the one `undecipherable = "note"` does, bounded by the same
//! limits. With `"note"` nothing is banned by rule 5. Either way every
//! finding is listed in [`PolicyReport::notes`]: the mode changes
//! [`PolicyReport::banned`] and nothing else.
//!
//! Malformed input never panics. Oddities that hide no content are only
//! noted, never banned: a message without any header (plain text, parsed
//! as nothing), an attached message with an empty body, a part that lists
//! an earlier part as its child (a guard against a parser bug). A transfer
//! encoding mail-parser cannot decode is not a finding of its own either:
//! mail-parser keeps such a body as raw text, which goes through the rules
//! as any body does (a zip among them cannot be opened:
//! `undecipherable-unreadable`).

mod archive;
mod config;
mod encoded;
mod names;
mod params;
mod walk;

use mail_parser::MessageParser;
use serde::Serialize;

pub use config::{PolicyConfig, Undecipherable};

/// Rule: an innocuous extension followed by a banned one.
pub const RULE_DOUBLE_EXTENSION: &str = "double-extension";
/// Rule: the last extension is in `banned_extensions`.
pub const RULE_BANNED_EXTENSION: &str = "banned-extension";
/// Rule: the declared Content-Type is in `banned_mime_types`.
pub const RULE_BANNED_MIME_TYPE: &str = "banned-mime-type";
/// Rule: an archive exceeds a limit (depth, entries, bytes, ratio).
pub const RULE_ARCHIVE_LIMITS: &str = "archive-limits";
/// Rule: an encrypted archive member, under `undecipherable = "ban"`.
pub const RULE_ENCRYPTED: &str = "undecipherable-encrypted";
/// Rule: an archive that cannot be opened or a member that cannot be read,
/// under `undecipherable = "ban"`.
pub const RULE_UNREADABLE: &str = "undecipherable-unreadable";
/// Rule: parts nested deeper than `max_mime_depth`, under
/// `undecipherable = "ban"`.
pub const RULE_MIME_DEPTH: &str = "undecipherable-mime-depth";

/// What the policy found in one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyReport {
    /// The banned file, if any: the first match of rules 1–4, else the
    /// first undecipherable finding (under `undecipherable = "ban"`).
    pub banned: Option<Banned>,
    /// MIME parts visited.
    pub parts: usize,
    /// Parts that carry a file name or a non-text body.
    pub attachments: usize,
    /// Archive members listed, all archives together.
    pub archive_entries: usize,
    /// What could not be inspected, e.g. "mime depth limit reached" or
    /// "archive member unreadable: a.zip/b.zip: ...", whether or not it
    /// banned the message.
    pub notes: Vec<String>,
}

/// A banned file and the rule that banned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Banned {
    /// The decoded file name; `outer.zip/inner.exe` for an archive member;
    /// `(unnamed part N)` for a part without a name; `(part beyond mime
    /// depth N)` for rule `undecipherable-mime-depth`.
    pub file: String,
    /// One of the `RULE_*` names.
    pub rule: String,
}

impl From<Banned> for crate::Verdict {
    fn from(banned: Banned) -> Self {
        crate::Verdict::Banned {
            file: banned.file,
            rule: banned.rule,
        }
    }
}

/// Applies the attachment policy to one raw RFC 5322 message.
pub fn check(raw: &[u8], config: &PolicyConfig) -> PolicyReport {
    let mut scan = walk::Scan::new(config);
    let banned = match MessageParser::default().parse(raw) {
        Some(message) => scan.message(&message, raw, 0),
        None => {
            scan.note("no message headers found".to_owned());
            None
        }
    };
    scan.finish(banned)
}
