//! The attachment policy's configuration: the lists the rules match against
//! and the limits that bound the work spent on one message.
//!
//! Defaults live here and only here ([`PolicyConfig::default`]); they follow
//! Amavis's `$banned_filename_re` and its "long list" of banned extensions.

use serde::{Deserialize, Serialize};

/// Amavis's classic "long list" of banned extensions (executables, scripts,
/// shortcuts, installers, help files that run code), the brief's additions
/// `ps1` and `jar`, and the Windows scripting extensions from Outlook's
/// Level 1 list. Amavis's `grp`, `ini` and `lib` are left out: they are not
/// executable on their own and ban harmless files.
const BANNED_EXTENSIONS: &[&str] = &[
    "ade", "adp", "app", "asd", "asf", "asx", "bas", "bat", "chm", "cmd", "com", "cpl", "crt",
    "dll", "emf", "exe", "fxp", "hlp", "hta", "inf", "ins", "isp", "jar", "js", "jse", "lnk",
    "mda", "mdb", "mde", "mdt", "mdw", "mdz", "msc", "msh", "msh1", "msh1xml", "msh2", "msh2xml",
    "mshxml", "msi", "msp", "mst", "ocx", "ops", "pcd", "pif", "prg", "ps1", "ps1xml", "ps2",
    "ps2xml", "psc1", "psc2", "reg", "scf", "scr", "sct", "shb", "shs", "sys", "vb", "vbe", "vbs",
    "vxd", "wmf", "ws", "wsc", "wsf", "wsh",
];

/// Extensions a recipient takes for a document, a picture or an archive:
/// `invoice.pdf.exe` hides the `.exe` behind one of these.
const INNOCUOUS_EXTENSIONS: &[&str] = &[
    "7z", "avi", "bmp", "csv", "doc", "docx", "eml", "gif", "htm", "html", "jpeg", "jpg", "mov",
    "mp3", "mp4", "odp", "ods", "odt", "pdf", "png", "ppt", "pptx", "rar", "rtf", "tif", "tiff",
    "txt", "wav", "xls", "xlsx", "xml", "zip",
];

/// The MIME types Amavis's default `$banned_filename_re` blocks outright.
const BANNED_MIME_TYPES: &[&str] = &[
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/hta",
];

/// Upper bounds `validate` accepts for the depth limits: the walk recurses
/// once per level, so the stack must stay small whatever the file says.
pub(crate) const MAX_MIME_DEPTH_CEILING: usize = 100;
/// See [`MAX_MIME_DEPTH_CEILING`].
pub(crate) const MAX_ARCHIVE_DEPTH_CEILING: usize = 16;

/// What the attachment policy bans and how much work it may spend per message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// File extensions (without the dot, case-insensitive) whose last
    /// extension bans a file: rule `banned-extension`. Replaces the default
    /// list; copy it to extend it.
    pub banned_extensions: Vec<String>,
    /// Extensions that look harmless; one of them followed by a banned
    /// extension (`invoice.pdf.exe`) is rule `double-extension`.
    pub innocuous_extensions: Vec<String>,
    /// Declared Content-Types (`type/subtype`, case-insensitive) banned
    /// whatever the file name: rule `banned-mime-type`.
    pub banned_mime_types: Vec<String>,
    /// How deep to follow multiparts and attached messages; deeper parts are
    /// skipped with the note "mime depth limit reached". At most 100.
    pub max_mime_depth: usize,
    /// How many archive levels to open below the mail part (1 = only the
    /// attached zip itself). A deeper archive is rule `archive-limits`. At most 16.
    pub max_archive_depth: usize,
    /// Total uncompressed bytes read from archive members per message.
    pub max_archive_bytes: u64,
    /// Total archive members listed per message.
    pub max_archive_entries: usize,
    /// Largest compression ratio (uncompressed / compressed) of a member,
    /// declared or actually read, once it exceeds 1 MiB.
    pub max_archive_ratio: u64,
    /// What to do with what cannot be inspected: an encrypted archive
    /// member (rule `undecipherable-encrypted`), an archive that cannot be
    /// opened or a member that cannot be read (`undecipherable-unreadable`),
    /// parts nested deeper than `max_mime_depth`
    /// (`undecipherable-mime-depth`). `"ban"` (the default, as Amavis's
    /// banned `UNDECIPHERABLE` rule) bans the message unless a stronger rule
    /// bans it; `"note"` only lists it in the report's notes.
    pub undecipherable: Undecipherable,
}

/// The `undecipherable` key: fail closed (`"ban"`) or open (`"note"`) on
/// what the policy cannot see into. An attacker hides a payload exactly
/// there (an encrypted zip, a corrupt one, MIME nested past the limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Undecipherable {
    /// Ban the message with the `undecipherable-*` rule of the first such
    /// finding, and note it.
    #[default]
    Ban,
    /// Note it only; the message passes unless another rule bans it.
    Note,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            banned_extensions: to_strings(BANNED_EXTENSIONS),
            innocuous_extensions: to_strings(INNOCUOUS_EXTENSIONS),
            banned_mime_types: to_strings(BANNED_MIME_TYPES),
            max_mime_depth: 20,
            max_archive_depth: 2,
            max_archive_bytes: 64 * 1024 * 1024,
            max_archive_entries: 10_000,
            max_archive_ratio: 100,
            undecipherable: Undecipherable::Ban,
        }
    }
}

impl PolicyConfig {
    /// Checks every key and returns all problems, each naming the key and
    /// the offending value.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        check_extensions("banned_extensions", &self.banned_extensions, &mut problems);
        check_extensions(
            "innocuous_extensions",
            &self.innocuous_extensions,
            &mut problems,
        );
        check_mime_types(&self.banned_mime_types, &mut problems);
        check_range(
            "max_mime_depth",
            self.max_mime_depth,
            MAX_MIME_DEPTH_CEILING,
            &mut problems,
        );
        let archive_depth = self.max_archive_depth;
        check_range(
            "max_archive_depth",
            archive_depth,
            MAX_ARCHIVE_DEPTH_CEILING,
            &mut problems,
        );
        check_positive("max_archive_bytes", self.max_archive_bytes, &mut problems);
        check_positive(
            "max_archive_entries",
            self.max_archive_entries as u64,
            &mut problems,
        );
        check_positive("max_archive_ratio", self.max_archive_ratio, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn to_strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// An extension is a bare token: ASCII letters, digits, `-` or `_`, no dot.
fn check_extensions(key: &str, list: &[String], problems: &mut Vec<String>) {
    for (index, ext) in list.iter().enumerate() {
        let bare = ext
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ext.is_empty() || !bare {
            problems.push(format!(
                "{key}[{index}] = {ext:?}: an extension must be non-empty, without dots, \
                 letters, digits, '-' or '_' only (e.g. \"exe\")"
            ));
        }
    }
}

fn check_mime_types(list: &[String], problems: &mut Vec<String>) {
    for (index, mime) in list.iter().enumerate() {
        let well_formed = mime.split_once('/').is_some_and(|(t, s)| {
            let token = |p: &str| {
                !p.is_empty() && !p.contains(|c: char| c.is_whitespace() || c == ';' || c == '/')
            };
            token(t) && token(s)
        });
        if !well_formed {
            problems.push(format!(
                "banned_mime_types[{index}] = {mime:?}: expected \"type/subtype\" without parameters"
            ));
        }
    }
}

fn check_range(key: &str, value: usize, ceiling: usize, problems: &mut Vec<String>) {
    if value == 0 || value > ceiling {
        problems.push(format!("{key} = {value}: must be between 1 and {ceiling}"));
    }
}

fn check_positive(key: &str, value: u64, problems: &mut Vec<String>) {
    if value == 0 {
        problems.push(format!("{key} = 0: must be at least 1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(PolicyConfig::default().validate(), Ok(()));
    }

    #[test]
    fn default_lists_are_sorted_and_unique() {
        for list in [BANNED_EXTENSIONS, INNOCUOUS_EXTENSIONS] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
    }

    #[test]
    fn innocuous_and_banned_do_not_overlap() {
        assert!(INNOCUOUS_EXTENSIONS
            .iter()
            .all(|e| !BANNED_EXTENSIONS.contains(e)));
    }

    #[test]
    fn validate_names_every_bad_key() {
        let config = PolicyConfig {
            banned_extensions: vec!["exe".into(), "".into(), ".scr".into()],
            banned_mime_types: vec!["application".into()],
            max_mime_depth: 0,
            max_archive_depth: 17,
            max_archive_ratio: 0,
            ..PolicyConfig::default()
        };
        let problems = config.validate().expect_err("invalid");
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].starts_with("banned_extensions[1] = \"\""));
        assert!(problems[1].starts_with("banned_extensions[2] = \".scr\""));
        assert!(problems[2].starts_with("banned_mime_types[0] = \"application\""));
        assert!(problems[3].starts_with("max_mime_depth = 0"));
        assert!(problems[4].starts_with("max_archive_depth = 17"));
        assert!(problems[5].starts_with("max_archive_ratio = 0"));
    }

    #[test]
    fn undecipherable_is_ban_or_note_and_defaults_to_ban() {
        assert_eq!(PolicyConfig::default().undecipherable, Undecipherable::Ban);
        let config: PolicyConfig = serde_json::from_str("{}").expect("ok");
        assert_eq!(config.undecipherable, Undecipherable::Ban);
        for (value, mode) in [("ban", Undecipherable::Ban), ("note", Undecipherable::Note)] {
            let json = format!(r#"{{"undecipherable": "{value}"}}"#);
            let config: PolicyConfig = serde_json::from_str(&json).expect(value);
            assert_eq!(config.undecipherable, mode);
        }
        let err = serde_json::from_str::<PolicyConfig>(r#"{"undecipherable": "maybe"}"#)
            .expect_err("not a mode")
            .to_string();
        assert!(err.contains("`maybe`"), "{err}");
        assert!(err.contains("`ban`") && err.contains("`note`"), "{err}");
        let err = serde_json::from_str::<PolicyConfig>(r#"{"undecipherable": "Ban"}"#);
        assert!(err.is_err(), "modes are lower case");
    }

    #[test]
    fn unknown_keys_are_rejected_and_missing_keys_default() {
        let err = serde_json::from_str::<PolicyConfig>(r#"{"banned_extension": []}"#);
        assert!(err.is_err());
        let config: PolicyConfig = serde_json::from_str(r#"{"max_archive_depth": 3}"#).expect("ok");
        assert_eq!(config.max_archive_depth, 3);
        assert_eq!(
            config.banned_extensions,
            PolicyConfig::default().banned_extensions
        );
    }
}
