//! Zip archives: member names from the central directory, checked with the
//! same name rules as mail parts; nested zips opened up to
//! `max_archive_depth`.
//!
//! Every limit is enforced on what is actually read, never on a header's
//! word: a member is decompressed through a `Read::take` cap. Declared sizes
//! are only used to ban earlier (a liar can only make the verdict stricter).
//! Only members named as archives are decompressed; the others are listed.
//! An exceeded limit bans the archive (or member) with rule `archive-limits`,
//! as Amavis treats "exceeds limits" as unscannable.
//!
//! What cannot be looked into is undecipherable (see [`Scan::undecipherable`]):
//! any encrypted member, whatever its name, as Amavis flags every encrypted
//! member (`undecipherable-encrypted`); an archive whose central directory
//! does not parse, a member whose header does not, and an archive member
//! that fails to decompress (unsupported method, corrupt data, CRC
//! mismatch) (`undecipherable-unreadable`). Members not named as archives
//! are never decompressed, so only their headers can be unreadable.

use std::io::{Cursor, Read};

use zip::ZipArchive;

use super::names::{check_name, display, is_zip_name};
use super::walk::Scan;
use super::{Banned, RULE_ARCHIVE_LIMITS, RULE_ENCRYPTED, RULE_UNREADABLE};

/// The local file header signature every zip starts with.
pub(crate) const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Content-Types that declare a zip.
const ZIP_MIME_TYPES: &[&str] = &[
    "application/zip",
    "application/x-zip-compressed",
    "application/x-zip",
];

/// The end-of-central-directory signature. zip 2.6 retries every earlier
/// occurrence when one fails to parse, each retry scanning the buffer again:
/// a buffer stuffed with them costs quadratic time (0.7 s for 880 KB in
/// release), so more than this many is treated as exceeding the limits.
const END_RECORD_MAGIC: &[u8] = b"PK\x05\x06";
const MAX_END_RECORDS: usize = 16;

/// Below this many uncompressed bytes the ratio limit does not apply: small
/// members legitimately compress far better than any sane ratio (10 KiB of
/// zeros deflates to about 30 bytes).
const RATIO_FLOOR: u64 = 1 << 20;

/// Whether a declared Content-Type (`type/subtype`) means zip.
pub(crate) fn is_zip_mime(mime: &str) -> bool {
    ZIP_MIME_TYPES
        .iter()
        .any(|z| z.eq_ignore_ascii_case(mime.trim()))
}

/// How many uncompressed bytes a member of `compressed` bytes may yield.
fn ratio_allowance(compressed: u64, ratio: u64) -> u64 {
    compressed.saturating_mul(ratio).max(RATIO_FLOOR)
}

fn count_end_records(bytes: &[u8]) -> usize {
    bytes
        .windows(END_RECORD_MAGIC.len())
        .filter(|w| *w == END_RECORD_MAGIC)
        .count()
}

/// Where an archive is: its path in the report, its nesting depth and size.
struct Location<'p> {
    path: &'p str,
    depth: usize,
    len: u64,
}

/// What the central directory says about one member (nothing decompressed).
struct Member {
    name: String,
    compressed: u64,
    size: u64,
    encrypted: bool,
    is_dir: bool,
}

impl Scan<'_> {
    /// Checks the zip `bytes` found at `path`; `depth` 1 is a zip attached
    /// to the mail, 2 a zip inside it.
    pub(super) fn scan_zip(&mut self, bytes: &[u8], path: &str, depth: usize) -> Option<Banned> {
        if depth > self.config.max_archive_depth {
            return self.limits(path, "archive nesting depth");
        }
        if count_end_records(bytes) > MAX_END_RECORDS {
            return self.limits(path, "too many end-of-central-directory records");
        }
        let mut archive = match ZipArchive::new(Cursor::new(bytes)) {
            Ok(archive) => archive,
            Err(err) => {
                let note = format!("archive unreadable: {path}: {err}");
                self.undecipherable(RULE_UNREADABLE, path, note);
                return None;
            }
        };
        self.report.archive_entries += archive.len();
        if self.report.archive_entries > self.config.max_archive_entries {
            return self.limits(path, "number of archive entries");
        }
        if let Some(banned) = self.check_member_names(&archive, path) {
            return Some(banned);
        }
        let at = Location {
            path,
            depth,
            len: bytes.len() as u64,
        };
        (0..archive.len()).find_map(|index| self.inspect_member(&mut archive, index, &at))
    }

    /// The name rules on every member. Names come from the central
    /// directory: nothing is decompressed.
    fn check_member_names(
        &self,
        archive: &ZipArchive<Cursor<&[u8]>>,
        path: &str,
    ) -> Option<Banned> {
        archive.file_names().find_map(|name| {
            let rule = check_name(name, self.config)?;
            Some(Banned {
                file: format!("{path}/{}", display(name)),
                rule: rule.to_owned(),
            })
        })
    }

    /// Size checks on one member, and a nested zip opened.
    fn inspect_member(
        &mut self,
        archive: &mut ZipArchive<Cursor<&[u8]>>,
        index: usize,
        at: &Location<'_>,
    ) -> Option<Banned> {
        let member = self.member(archive, index, at)?;
        let member_path = format!("{}/{}", at.path, display(&member.name));
        let allowance = ratio_allowance(member.compressed, self.config.max_archive_ratio);
        if member.size > allowance {
            return self.limits(&member_path, "declared compression ratio");
        }
        if member.is_dir {
            return None;
        }
        if member.encrypted {
            let note = format!("archive member encrypted: {member_path}");
            self.undecipherable(RULE_ENCRYPTED, &member_path, note);
            return None;
        }
        if !is_zip_name(&member.name) {
            return None;
        }
        if at.depth + 1 > self.config.max_archive_depth {
            return self.limits(&member_path, "archive nesting depth");
        }
        let data = self.read_member(archive, index, allowance, &member_path)?;
        match data {
            Ok(data) => self.scan_zip(&data, &member_path, at.depth + 1),
            Err(banned) => Some(banned),
        }
    }

    fn member(
        &mut self,
        archive: &mut ZipArchive<Cursor<&[u8]>>,
        index: usize,
        at: &Location<'_>,
    ) -> Option<Member> {
        let name = archive
            .name_for_index(index)
            .map(display)
            .unwrap_or_default();
        match archive.by_index_raw(index) {
            Ok(file) => Some(Member {
                name: file.name().to_owned(),
                // The reader cannot consume more than the buffer holds.
                compressed: file.compressed_size().min(at.len),
                size: file.size(),
                encrypted: file.encrypted(),
                is_dir: file.is_dir(),
            }),
            Err(err) => {
                let member_path = format!("{}/{name}", at.path);
                let note = format!("archive member unreadable: {member_path}: {err}");
                self.undecipherable(RULE_UNREADABLE, &member_path, note);
                None
            }
        }
    }

    /// Decompresses one member through a cap of `allowance` and what is
    /// left of the message's budget. `None`: unreadable (undecipherable);
    /// `Some(Err(_))`: a limit was exceeded.
    fn read_member(
        &mut self,
        archive: &mut ZipArchive<Cursor<&[u8]>>,
        index: usize,
        allowance: u64,
        member_path: &str,
    ) -> Option<Result<Vec<u8>, Banned>> {
        let cap = allowance.min(self.archive_bytes_left);
        let mut data = Vec::new();
        let read = match archive.by_index(index) {
            Ok(file) => file.take(cap.saturating_add(1)).read_to_end(&mut data),
            Err(err) => {
                let note = format!("archive member unreadable: {member_path}: {err}");
                self.undecipherable(RULE_UNREADABLE, member_path, note);
                return None;
            }
        };
        let got = data.len() as u64;
        self.archive_bytes_left = self.archive_bytes_left.saturating_sub(got);
        if got > cap {
            let which = if cap == allowance {
                "compression ratio"
            } else {
                "total uncompressed bytes"
            };
            return self.limits(member_path, which).map(Err);
        }
        if let Err(err) = read {
            // What was read before the error (often a CRC mismatch at the
            // end) is still worth listing: a banned name in it outranks
            // this finding.
            let note = format!("archive member unreadable: {member_path}: {err}");
            self.undecipherable(RULE_UNREADABLE, member_path, note);
        }
        Some(Ok(data))
    }

    fn limits(&mut self, path: &str, what: &str) -> Option<Banned> {
        self.note(format!("archive limit exceeded: {path}: {what}"));
        Some(Banned {
            file: path.to_owned(),
            rule: RULE_ARCHIVE_LIMITS.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_allowance_has_a_floor_and_saturates() {
        assert_eq!(ratio_allowance(0, 100), RATIO_FLOOR);
        assert_eq!(ratio_allowance(1 << 20, 100), 100 << 20);
        assert_eq!(ratio_allowance(u64::MAX, 100), u64::MAX);
    }

    #[test]
    fn zip_mime_types() {
        assert!(is_zip_mime("Application/Zip"));
        assert!(is_zip_mime("application/x-zip-compressed"));
        assert!(!is_zip_mime("application/zipx"));
    }

    #[test]
    fn end_records_are_counted() {
        assert_eq!(count_end_records(b""), 0);
        assert_eq!(count_end_records(b"PK\x05\x06xxPK\x05\x06"), 2);
    }
}
