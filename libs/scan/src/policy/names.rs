//! The name and type rules, on names that are already decoded.
//!
//! A name is normalised the way Windows would see the file before matching:
//! control characters (NUL included) removed, directories stripped
//! (`../x.exe`, `C:\x\y.exe`, `C:y.exe`), trailing dots and whitespace
//! trimmed (`x.exe.` and `x.exe ` are `x.exe` to Windows).

use super::config::PolicyConfig;
use super::{RULE_BANNED_EXTENSION, RULE_DOUBLE_EXTENSION};

/// Extensions that mark a zip archive (by name).
const ZIP_EXTENSIONS: &[&str] = &["zip"];

/// The last path component of `name`, without control characters and
/// without trailing dots or whitespace.
pub(crate) fn normalize(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let base = clean.rsplit(['/', '\\']).next().unwrap_or_default();
    let base = strip_drive(base);
    base.trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_start()
        .to_owned()
}

/// `C:name` is `name` in the current directory of drive C.
fn strip_drive(name: &str) -> &str {
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        &name[2..]
    } else {
        name
    }
}

/// The text after the last dot of a normalised name, if any.
fn last_extension(name: &str) -> Option<(&str, &str)> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!ext.is_empty()).then_some((stem, ext))
}

fn listed(list: &[String], ext: &str) -> bool {
    list.iter().any(|entry| entry.eq_ignore_ascii_case(ext))
}

/// The name rule `name` breaks, if any: `double-extension` before
/// `banned-extension`, so `invoice.pdf.exe` reports the former.
pub(crate) fn check_name(name: &str, config: &PolicyConfig) -> Option<&'static str> {
    let name = normalize(name);
    let (stem, ext) = last_extension(&name)?;
    if !listed(&config.banned_extensions, ext) {
        return None;
    }
    // `invoice.pdf      .exe` and `invoice.pdf...exe` pad the gap.
    let stem = stem.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    let hidden_behind = last_extension(stem).map(|(_, inner)| inner);
    if hidden_behind.is_some_and(|inner| listed(&config.innocuous_extensions, inner)) {
        Some(RULE_DOUBLE_EXTENSION)
    } else {
        Some(RULE_BANNED_EXTENSION)
    }
}

/// Whether the declared `type/subtype` is banned (parameters ignored).
pub(crate) fn is_banned_mime_type(mime: &str, config: &PolicyConfig) -> bool {
    let bare = mime.split(';').next().unwrap_or_default().trim();
    config
        .banned_mime_types
        .iter()
        .any(|banned| banned.eq_ignore_ascii_case(bare))
}

/// Whether the name says "zip archive".
pub(crate) fn is_zip_name(name: &str) -> bool {
    let name = normalize(name);
    last_extension(&name)
        .is_some_and(|(_, ext)| ZIP_EXTENSIONS.iter().any(|z| z.eq_ignore_ascii_case(ext)))
}

/// A name fit for a report or a log line: control characters removed.
pub(crate) fn display(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> Option<&'static str> {
        check_name(name, &PolicyConfig::default())
    }

    #[test]
    fn normalize_strips_directories_controls_and_trailing_padding() {
        assert_eq!(normalize("../x.exe"), "x.exe");
        assert_eq!(normalize("C:\\x\\y.exe"), "y.exe");
        assert_eq!(normalize("C:y.exe"), "y.exe");
        assert_eq!(normalize("x\0.exe"), "x.exe");
        assert_eq!(normalize("  x.exe. . \t"), "x.exe");
        assert_eq!(normalize("dir/"), "");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn banned_extension_is_case_insensitive() {
        assert_eq!(rule("x.exe"), Some("banned-extension"));
        assert_eq!(rule("X.EXE"), Some("banned-extension"));
        assert_eq!(rule("x.Exe."), Some("banned-extension"));
        assert_eq!(rule(".exe"), Some("banned-extension"));
        assert_eq!(rule("a/b\\c.scr"), Some("banned-extension"));
    }

    #[test]
    fn harmless_names_pass() {
        for name in [
            "x.pdf",
            "exe",
            "x.exe.pdf",
            "x.",
            "",
            "x.tar.gz",
            "résumé.docx",
            "x.exe/",
        ] {
            assert_eq!(rule(name), None, "{name}");
        }
    }

    #[test]
    fn double_extension_wins_over_banned_extension() {
        assert_eq!(rule("invoice.pdf.exe"), Some("double-extension"));
        assert_eq!(rule("INVOICE.PDF.EXE"), Some("double-extension"));
        assert_eq!(rule("invoice.pdf      .exe"), Some("double-extension"));
        assert_eq!(rule("invoice.pdf. . ..scr"), Some("double-extension"));
        assert_eq!(rule("archive.tar.exe"), Some("banned-extension"));
        assert_eq!(rule("x.exe.exe"), Some("banned-extension"));
    }

    #[test]
    fn mime_types_match_without_parameters() {
        let config = PolicyConfig::default();
        assert!(is_banned_mime_type("Application/X-MSDownload", &config));
        assert!(is_banned_mime_type("application/hta; charset=x", &config));
        assert!(!is_banned_mime_type("application/pdf", &config));
    }

    #[test]
    fn zip_names() {
        assert!(is_zip_name("a.ZIP"));
        assert!(is_zip_name("dir/a.zip "));
        assert!(!is_zip_name("a.zipx"));
    }
}
