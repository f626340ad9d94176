//! The Postfix recipient map (`virtual_mailbox_maps`), rendered from the
//! account statuses, so Postfix refuses mail for a closed or unknown
//! account with `550` itself instead of asking anyone per mail.
//!
//! The source is the account status projection (the compacted
//! `accounts.status` topic), not LDAP: it is the same record the LMTP
//! server checks at RCPT (`mailfleet_lifecycle::status`), so Postfix and LMTP
//! cannot disagree, and LDAP is itself only a copy the directory consumer
//! writes from the same events, later. The rule is the LMTP one
//! ([`AccountStatus::takes_mail`]): pending and active accounts take mail;
//! blocked, inactive, deleting, deleted and unknown ones do not.
//!
//! The text is one `address OK` line per open account, lower-cased and
//! sorted, so the same statuses always give the same bytes and
//! [`PostfixMap::digest`] tells whether the installed map must be rewritten.
//! Addresses that would corrupt the map (empty, whitespace, control
//! characters, a leading `#`, no `@`) are left out and reported.

use std::{collections::BTreeMap, fmt};

use mailfleet_events::accounts::AccountStatus;
use sha2::{Digest, Sha256};

/// A rendered map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostfixMap {
    /// The map file's contents, for `postmap`.
    pub text: String,
    /// SHA-256 of `text`, hex: equal digests, equal maps.
    pub digest: String,
    /// Lines in `text`.
    pub entries: usize,
    /// Open accounts left out because their address would corrupt the map.
    pub rejected: Vec<Rejected>,
}

/// An address left out of the map, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub address: String,
    pub reason: &'static str,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug-quoted: the address may hold the very characters at fault.
        write!(f, "{:?}: {}", self.address, self.reason)
    }
}

/// Whether an account in `status` takes mail: [`AccountStatus::takes_mail`],
/// the LMTP RCPT rule.
pub fn takes_mail(status: AccountStatus) -> bool {
    status.takes_mail()
}

/// Render the map from `(account, status)` pairs; an account listed twice
/// takes its last status, as the compacted topic would.
pub fn render<'a>(accounts: impl IntoIterator<Item = (&'a str, AccountStatus)>) -> PostfixMap {
    let mut latest: BTreeMap<String, (&str, AccountStatus)> = BTreeMap::new();
    for (address, status) in accounts {
        latest.insert(address.to_ascii_lowercase(), (address, status));
    }
    let mut text = String::new();
    let (mut entries, mut rejected) = (0, Vec::new());
    for (key, (address, status)) in latest {
        if !takes_mail(status) {
            continue;
        }
        match corruption(&key) {
            Some(reason) => rejected.push(Rejected {
                address: address.to_string(),
                reason,
            }),
            None => {
                text.push_str(&key);
                text.push_str(" OK\n");
                entries += 1;
            }
        }
    }
    PostfixMap {
        digest: hex::encode(Sha256::digest(text.as_bytes())),
        text,
        entries,
        rejected,
    }
}

impl PostfixMap {
    /// Whether this map differs from the installed one, known by its
    /// digest (`None`: nothing installed yet).
    pub fn differs_from(&self, installed_digest: Option<&str>) -> bool {
        installed_digest != Some(self.digest.as_str())
    }
}

/// Why `address` cannot be a map key, if it cannot.
fn corruption(address: &str) -> Option<&'static str> {
    if address.is_empty() {
        Some("empty")
    } else if address.chars().any(char::is_whitespace) {
        Some("whitespace would split the line")
    } else if address.chars().any(char::is_control) {
        Some("control character")
    } else if address.starts_with('#') {
        Some("a leading # makes a comment")
    } else if !address.contains('@') {
        Some("no @: not an address")
    } else {
        None
    }
}

#[cfg(test)]
mod scheduler_tests {
    use AccountStatus::*;

    use super::*;

    #[test]
    fn postfix_map_lists_exactly_the_accounts_that_take_mail() {
        let statuses = [
            ("carol@x.test", Active),
            ("Bob@X.test", Pending),
            ("dave@x.test", Blocked),
            ("erin@x.test", Inactive),
            ("frank@x.test", Deleting),
            ("grace@x.test", Deleted),
            ("heidi@x.test", Unknown),
        ];
        let map = render(statuses);
        assert_eq!(map.text, "bob@x.test OK\ncarol@x.test OK\n");
        assert_eq!((map.entries, map.rejected.len()), (2, 0));
        for (address, status) in statuses {
            let line = format!("{} OK\n", address.to_ascii_lowercase());
            assert_eq!(
                map.text.contains(&line),
                takes_mail(status),
                "{address} {status:?}"
            );
        }
    }

    #[test]
    fn postfix_map_digest_decides_whether_to_rewrite() {
        let a = render([("a@x.test", Active), ("b@x.test", Active)]);
        let same = render([("B@x.test", Active), ("a@x.test", Active)]);
        assert_eq!(a, same, "order and case do not matter");
        assert!(!same.differs_from(Some(&a.digest)));
        assert!(a.differs_from(None), "nothing installed yet");
        let closed = render([
            ("a@x.test", Active),
            ("b@x.test", Active),
            ("b@x.test", Inactive),
        ]);
        assert_eq!(closed.text, "a@x.test OK\n", "the last status wins");
        assert!(closed.differs_from(Some(&a.digest)));
        assert_eq!(a.digest.len(), 64);
        assert_eq!(render([]).text, "");
    }

    #[test]
    fn postfix_map_rejects_and_reports_addresses_that_would_corrupt_it() {
        let map = render([
            ("", Active),
            ("eve @x.test", Active),
            ("mallory@x.test\nroot@x.test", Active),
            ("nul\0@x.test", Active),
            ("#x@x.test", Active),
            ("postmaster", Active),
            ("ok@x.test", Active),
            ("bad body@x.test", Deleted),
        ]);
        assert_eq!(map.text, "ok@x.test OK\n");
        let reasons: Vec<String> = map.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "\"\": empty",
                "\"#x@x.test\": a leading # makes a comment",
                "\"eve @x.test\": whitespace would split the line",
                "\"mallory@x.test\\nroot@x.test\": whitespace would split the line",
                "\"nul\\0@x.test\": control character",
                "\"postmaster\": no @: not an address",
            ],
            "only open accounts are checked"
        );
    }
}
