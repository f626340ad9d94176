//! Folder routing: the first rule whose header matches picks the folder.

use regex::Regex;

use super::config::FolderRule;

/// Compiled folder rules.
pub struct FolderRules(Vec<(String, Regex, String)>);

impl FolderRules {
    /// Compile; the config's `problems()` already named bad patterns, so a
    /// bad one here is skipped.
    pub fn new(rules: &[FolderRule]) -> Self {
        Self(
            rules
                .iter()
                .filter_map(|r| {
                    Some((
                        r.header.to_ascii_lowercase(),
                        Regex::new(&r.pattern).ok()?,
                        r.folder.clone(),
                    ))
                })
                .collect(),
        )
    }

    /// The folder for a raw message: a rule's, or INBOX.
    pub fn route(&self, raw: &[u8]) -> String {
        for (name, value) in headers(raw) {
            for (header, pattern, folder) in &self.0 {
                if name.eq_ignore_ascii_case(header) && pattern.is_match(value.trim()) {
                    return folder.clone();
                }
            }
        }
        "INBOX".into()
    }
}

/// The header fields (name, unfolded value) up to the first empty line.
fn headers(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> FolderRules {
        FolderRules::new(&[FolderRule {
            header: "X-Spam-Flag".into(),
            pattern: "(?i)^yes".into(),
            folder: "Spam".into(),
        }])
    }

    #[test]
    fn a_matching_header_routes_to_its_folder() {
        assert_eq!(
            rules().route(b"Subject: x\r\nx-spam-flag: YES\r\n\r\nbody"),
            "Spam"
        );
        assert_eq!(rules().route(b"X-Spam-Flag: NO\r\n\r\n"), "INBOX");
    }

    #[test]
    fn only_the_header_section_counts_and_folding_is_undone() {
        assert_eq!(
            rules().route(b"Subject: x\r\n\r\nX-Spam-Flag: YES\r\n"),
            "INBOX"
        );
        assert_eq!(rules().route(b"X-Spam-Flag:\r\n  yes\r\n\r\n"), "Spam");
        assert_eq!(rules().route(b""), "INBOX");
    }
}
