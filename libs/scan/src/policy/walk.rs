//! The walk over one parsed message: every part, depth first, into
//! multiparts and attached messages, bounded by `max_mime_depth`.
//!
//! Header offsets from mail-parser are relative to the raw bytes its parser
//! ran on: the top-level input for parts of inline `message/rfc822` parts,
//! the decoded body for base64/quoted-printable encoded ones. `raw` follows
//! that, and every slice taken from it is checked (see [`raw_value`]).

use std::borrow::Cow;

use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Encoding, Header, HeaderName, Message, MessageParser, MessagePart, PartType};

use super::archive::{is_zip_mime, ZIP_MAGIC};
use super::config::{PolicyConfig, Undecipherable, MAX_MIME_DEPTH_CEILING};
use super::encoded::base64_lenient;
use super::names::{check_name, display, is_banned_mime_type, is_zip_name};
use super::{params, Banned, PolicyReport, RULE_BANNED_MIME_TYPE, RULE_MIME_DEPTH};

/// Notes kept per report; the rest are counted in one last note.
const MAX_NOTES: usize = 32;

/// The state of one `check`: the report being filled, the archive budget
/// and the first undecipherable finding.
pub(super) struct Scan<'c> {
    pub(super) config: &'c PolicyConfig,
    pub(super) report: PolicyReport,
    /// Uncompressed archive bytes this message may still read.
    pub(super) archive_bytes_left: u64,
    /// The ban rule 5 gives if rules 1–4 find nothing (`undecipherable =
    /// "ban"` only). Kept aside, not returned: the walk goes on.
    undecipherable: Option<Banned>,
    depth_noted: bool,
    notes_dropped: usize,
}

impl<'c> Scan<'c> {
    pub(super) fn new(config: &'c PolicyConfig) -> Self {
        Self {
            config,
            report: PolicyReport::default(),
            archive_bytes_left: config.max_archive_bytes,
            undecipherable: None,
            depth_noted: false,
            notes_dropped: 0,
        }
    }

    pub(super) fn note(&mut self, note: String) {
        if self.report.notes.len() < MAX_NOTES {
            self.report.notes.push(note);
        } else {
            self.notes_dropped += 1;
        }
    }

    /// What could not be inspected: always noted; under `undecipherable =
    /// "ban"` the first one is kept as the ban of last resort, under `rule`.
    pub(super) fn undecipherable(&mut self, rule: &str, file: &str, note: String) {
        self.note(note);
        if self.config.undecipherable == Undecipherable::Ban && self.undecipherable.is_none() {
            self.undecipherable = Some(Banned {
                file: file.to_owned(),
                rule: rule.to_owned(),
            });
        }
    }

    /// The report, banned by the walk's own finding (rules 1–4) if any,
    /// else by the first undecipherable one.
    pub(super) fn finish(mut self, banned: Option<Banned>) -> PolicyReport {
        if self.notes_dropped > 0 {
            let dropped = self.notes_dropped;
            self.report
                .notes
                .push(format!("{dropped} more notes left out"));
        }
        self.report.banned = banned.or(self.undecipherable);
        self.report
    }

    /// Walks a message from its root part.
    pub(super) fn message(
        &mut self,
        message: &Message<'_>,
        raw: &[u8],
        depth: usize,
    ) -> Option<Banned> {
        self.part(message, 0, raw, depth)
    }

    fn part(&mut self, message: &Message<'_>, id: u32, raw: &[u8], depth: usize) -> Option<Banned> {
        let part = message.part(id)?;
        // The hard ceiling keeps the recursion bounded even for a config
        // that skipped `validate`.
        let limit = self.config.max_mime_depth.min(MAX_MIME_DEPTH_CEILING);
        if depth > limit {
            if !std::mem::replace(&mut self.depth_noted, true) {
                let file = format!("(part beyond mime depth {limit})");
                let note = "mime depth limit reached".to_owned();
                self.undecipherable(RULE_MIME_DEPTH, &file, note);
            }
            return None;
        }
        self.report.parts += 1;
        let info = PartInfo::of(part, raw);
        let label = info.label(self.report.parts);
        if let Some(banned) = self.check_part(&info, &label) {
            return Some(banned);
        }
        match &part.body {
            PartType::Multipart(children) => self.children(message, id, children, raw, depth),
            PartType::Message(nested) => {
                self.report.attachments += 1;
                let nested_raw = if part.encoding == Encoding::None {
                    raw
                } else {
                    nested.raw_message()
                };
                self.message(nested, nested_raw, depth + 1)
            }
            _ => self.leaf(part, &info, &label, raw, depth),
        }
    }

    fn children(
        &mut self,
        message: &Message<'_>,
        id: u32,
        children: &[u32],
        raw: &[u8],
        depth: usize,
    ) -> Option<Banned> {
        for &child in children {
            // Children are stored after their parent; anything else would
            // be a cycle.
            if child <= id {
                self.note(format!(
                    "mime part {id} lists part {child} as its child; skipped"
                ));
                continue;
            }
            if let Some(banned) = self.part(message, child, raw, depth + 1) {
                return Some(banned);
            }
        }
        None
    }

    /// The rules on a part's names and declared types, first match wins.
    fn check_part(&self, info: &PartInfo, label: &str) -> Option<Banned> {
        for name in &info.names {
            if let Some(rule) = check_name(name, self.config) {
                return Some(Banned {
                    file: display(name),
                    rule: rule.to_owned(),
                });
            }
        }
        let banned_type = info
            .mime_types
            .iter()
            .any(|mime| is_banned_mime_type(mime, self.config));
        banned_type.then(|| Banned {
            file: label.to_owned(),
            rule: RULE_BANNED_MIME_TYPE.to_owned(),
        })
    }

    /// A body part: an attached message mail-parser left undecoded, or a zip.
    fn leaf(
        &mut self,
        part: &MessagePart<'_>,
        info: &PartInfo,
        label: &str,
        raw: &[u8],
        depth: usize,
    ) -> Option<Banned> {
        if !info.names.is_empty() || !part.is_text() {
            self.report.attachments += 1;
        }
        let body = part.contents();
        if info.mime_types.iter().any(|m| is_message_type(m)) && !part.is_text() {
            // mail-parser stops decoding encoded attached messages after 3
            // levels and hands the rest over as binary.
            let nested = MessageParser::default().parse(body)?;
            return self.message(&nested, body, depth + 1);
        }
        let zip = info.names.iter().any(|n| is_zip_name(n))
            || info.mime_types.iter().any(|m| is_zip_mime(m))
            || body.starts_with(ZIP_MAGIC);
        if !zip {
            return None;
        }
        let bytes = binary_body(part, raw);
        self.scan_zip(&bytes, label, 1)
    }
}

fn is_message_type(mime: &str) -> bool {
    mime.eq_ignore_ascii_case("message/rfc822") || mime.eq_ignore_ascii_case("message/global")
}

/// The decoded bytes of a part. mail-parser turns text parts into UTF-8
/// (lossily), which breaks a zip sent as `text/plain` or without a
/// Content-Type; those are decoded again from the raw body.
fn binary_body<'a>(part: &'a MessagePart<'_>, raw: &[u8]) -> Cow<'a, [u8]> {
    let recovered = match &part.body {
        PartType::Text(_) | PartType::Html(_) => raw_body(part, raw),
        _ => None,
    };
    recovered.map_or(Cow::Borrowed(part.contents()), Cow::Owned)
}

fn raw_body(part: &MessagePart<'_>, raw: &[u8]) -> Option<Vec<u8>> {
    let encoded = raw.get(part.offset_body as usize..part.offset_end as usize)?;
    match part.encoding {
        Encoding::Base64 => Some(base64_lenient(encoded)),
        Encoding::QuotedPrintable => quoted_printable_decode(encoded),
        Encoding::None => Some(encoded.to_vec()),
    }
}

/// The names and declared types of one part, from every Content-Type and
/// Content-Disposition header, as parsed by mail-parser and by
/// [`params::parse`] on the raw header.
#[derive(Debug, Default)]
struct PartInfo {
    names: Vec<String>,
    mime_types: Vec<String>,
}

impl PartInfo {
    fn of(part: &MessagePart<'_>, raw: &[u8]) -> Self {
        let mut info = Self::default();
        for header in &part.headers {
            let (field, is_type) = match header.name {
                HeaderName::ContentType => ("content-type", true),
                HeaderName::ContentDisposition => ("content-disposition", false),
                _ => continue,
            };
            info.add_parsed(header, is_type);
            if let Some(value) = raw_value(header, raw, field) {
                info.add_raw(value, is_type);
            }
        }
        info.names.retain(|name| !name.trim().is_empty());
        info
    }

    fn add_parsed(&mut self, header: &Header<'_>, is_type: bool) {
        let Some(content_type) = header.value.as_content_type() else {
            return;
        };
        if is_type {
            let mime = match content_type.subtype() {
                Some(subtype) => format!("{}/{subtype}", content_type.ctype()),
                None => content_type.ctype().to_owned(),
            };
            push_unique(&mut self.mime_types, mime);
        }
        for attribute in content_type.attributes().unwrap_or_default() {
            if attribute.name == "filename" || attribute.name == "name" {
                push_unique(&mut self.names, attribute.value.to_string());
            }
        }
    }

    fn add_raw(&mut self, value: &[u8], is_type: bool) {
        let parsed = params::parse(value);
        if is_type && !parsed.value.is_empty() {
            push_unique(&mut self.mime_types, parsed.value);
        }
        for name in parsed.names {
            push_unique(&mut self.names, name);
        }
    }

    /// What a report calls this part: its first name, else its position.
    fn label(&self, position: usize) -> String {
        match self.names.first() {
            Some(name) => display(name),
            None => format!("(unnamed part {position})"),
        }
    }
}

fn push_unique(list: &mut Vec<String>, value: String) {
    if !list.contains(&value) {
        list.push(value);
    }
}

/// The raw value of `header`, if its offsets point at a field named `field`
/// in `raw` (they would not if `raw` were the wrong buffer).
fn raw_value<'r>(header: &Header<'_>, raw: &'r [u8], field: &str) -> Option<&'r [u8]> {
    let name = raw.get(header.offset_field as usize..header.offset_start as usize)?;
    let name = name.strip_suffix(b":")?;
    let name = std::str::from_utf8(name).ok()?.trim();
    if !name.eq_ignore_ascii_case(field) {
        return None;
    }
    raw.get(header.offset_start as usize..header.offset_end as usize)
}
