//! Target `mime_policy`: the attachment policy
//! (`mailfleet_scan::policy::check`) over one raw message, with the
//! default configuration (the one the scanner runs).
//!
//! Properties: no panic, whatever the MIME structure, encodings or zip
//! members; the same bytes give the same report; a ban names a file and
//! one of the rules (the undecipherable ones included, as the default
//! config bans), and a name rule's file does have a banned last
//! extension (behind an innocuous one for `double-extension`), so the
//! verdict an operator reads can be checked by hand; the notes are bounded.

use mailfleet_scan::policy::{
    check as policy, PolicyConfig, RULE_ARCHIVE_LIMITS, RULE_BANNED_EXTENSION,
    RULE_BANNED_MIME_TYPE, RULE_DOUBLE_EXTENSION, RULE_ENCRYPTED, RULE_MIME_DEPTH, RULE_UNREADABLE,
};

/// Input: the raw RFC 5322 message.
pub fn check(data: &[u8]) {
    let config = PolicyConfig::default();
    let report = policy(data, &config);
    assert_eq!(report, policy(data, &config), "two checks disagree");
    // 32 kept, plus one that counts the rest.
    assert!(report.notes.len() <= 33, "{} notes", report.notes.len());
    let Some(banned) = report.banned else {
        return;
    };
    assert!(!banned.file.is_empty(), "a ban without a file name");
    let rules = [
        RULE_DOUBLE_EXTENSION,
        RULE_BANNED_EXTENSION,
        RULE_BANNED_MIME_TYPE,
        RULE_ARCHIVE_LIMITS,
        RULE_ENCRYPTED,
        RULE_UNREADABLE,
        RULE_MIME_DEPTH,
    ];
    assert!(rules.contains(&banned.rule.as_str()), "{banned:?}");
    if banned.rule == RULE_BANNED_EXTENSION || banned.rule == RULE_DOUBLE_EXTENSION {
        let name = base_name(&banned.file);
        let (stem, ext) = name
            .rsplit_once('.')
            .unwrap_or_else(|| panic!("{banned:?}"));
        assert!(listed(&config.banned_extensions, ext), "{banned:?}");
        if banned.rule == RULE_DOUBLE_EXTENSION {
            let stem = stem.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
            let inner = stem.rsplit_once('.').map(|(_, inner)| inner);
            let inner = inner.unwrap_or_else(|| panic!("{banned:?}"));
            assert!(listed(&config.innocuous_extensions, inner), "{banned:?}");
        }
    }
}

/// What Windows would call the file: the last path component, without a
/// drive, trailing dots or whitespace (the policy's own rule, restated).
fn base_name(file: &str) -> &str {
    let base = file.rsplit(['/', '\\']).next().unwrap_or_default();
    let base = match base.as_bytes() {
        [d, b':', ..] if d.is_ascii_alphabetic() => &base[2..],
        _ => base,
    };
    base.trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_start()
}

fn listed(list: &[String], ext: &str) -> bool {
    list.iter().any(|e| e.eq_ignore_ascii_case(ext))
}
