//! The spam headers a scored message is delivered with, as SpamAssassin
//! (and Amavis) wrote them, so Dovecot Sieve rules and mail clients that
//! look for `X-Spam-Flag: YES` keep working:
//!
//! ```text
//! X-Spam-Flag: YES
//! X-Spam-Score: 8.0
//! X-Spam-Status: Yes, score=8.0 required=15.0 action="add header"
//!  tests=MAILFLEET_TEST_SPAMMY,MIME_GOOD
//! ```
//!
//! A message rspamd did not score gets `X-Spam-Status: Unscored (<why>)`
//! instead. The headers are prepended (they come first, so the folder
//! rules see them before any a sender wrote), computed from the
//! `MessageScanned` alone: a replay writes the same bytes. The sender's own
//! `X-Spam-*` headers stay; they cannot undo a `YES`.

use std::borrow::Cow;
use std::fmt::Write;

use mailfleet_events::mail::MessageScanned;

/// Longest header line before folding (RFC 5322 recommends 78).
const FOLD_AT: usize = 78;

/// The headers for `s`, each line ending in CRLF, or `None` when rspamd
/// was not asked.
pub fn headers(s: &MessageScanned) -> Option<String> {
    if let Some(reason) = &s.spam_error {
        let why: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        return Some(fold(&format!("X-Spam-Status: Unscored ({why})")));
    }
    let spam = s.spam.as_ref()?;
    let yes = if spam.flagged { "Yes" } else { "No" };
    let mut out = String::new();
    let _ = write!(
        out,
        "X-Spam-Flag: {}\r\nX-Spam-Score: {:.1}\r\n",
        yes.to_ascii_uppercase(),
        spam.score
    );
    let tests: Vec<&str> = spam.symbols.iter().map(|t| t.name.as_str()).collect();
    let status = format!(
        "X-Spam-Status: {yes}, score={:.1} required={:.1} action=\"{}\" tests={}",
        spam.score,
        spam.required,
        spam.action.as_rspamd(),
        if tests.is_empty() {
            "none".to_string()
        } else {
            tests.join(",")
        }
    );
    out.push_str(&fold(&status));
    Some(out)
}

/// How many bytes [`prepend`] adds to the message.
pub fn added_bytes(s: &MessageScanned) -> i64 {
    headers(s).map_or(0, |h| h.len() as i64)
}

/// The message with the spam headers in front.
pub fn prepend<'a>(raw: &'a [u8], s: &MessageScanned) -> Cow<'a, [u8]> {
    match headers(s) {
        None => Cow::Borrowed(raw),
        Some(h) => {
            let mut out = Vec::with_capacity(h.len() + raw.len());
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(raw);
            Cow::Owned(out)
        }
    }
}

/// One header as lines of at most [`FOLD_AT`] characters where it has
/// spaces or commas to break at, continuation lines indented by a space.
fn fold(header: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in header.split_inclusive([' ', ',']) {
        if !line.is_empty() && line.len() + word.len() > FOLD_AT {
            out.push_str(line.trim_end());
            out.push_str("\r\n ");
            line.clear();
        }
        line.push_str(word);
    }
    out.push_str(line.trim_end());
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use mailfleet_events::{
        mail::{ScanVerdict, SpamAction, SpamResult, SpamSymbol},
        Envelope,
    };

    use super::*;

    fn scanned(spam: Option<SpamResult>, spam_error: Option<&str>) -> MessageScanned {
        MessageScanned {
            envelope: Envelope::new("scanner:x", 1, "scanner"),
            account: "bob@example.org".into(),
            recipient: "bob@example.org".into(),
            sender: "a@example.net".into(),
            blob_id: "ab".repeat(32),
            size: 10,
            received_at: 1,
            message_id: None,
            verdict: ScanVerdict::Clean,
            signature: None,
            file: None,
            rule: None,
            scanner: "t".into(),
            spam,
            spam_error: spam_error.map(Into::into),
        }
    }

    fn result(flagged: bool, symbols: usize) -> SpamResult {
        SpamResult {
            action: if flagged {
                SpamAction::AddHeader
            } else {
                SpamAction::NoAction
            },
            score: 8.04,
            required: 15.0,
            symbols: (0..symbols)
                .map(|i| SpamSymbol {
                    name: format!("SOME_LONGISH_SYMBOL_{i}"),
                    score: 1.0,
                })
                .collect(),
            flagged,
        }
    }

    #[test]
    fn flagged_mail_gets_spamassassin_style_headers() {
        let h = headers(&scanned(Some(result(true, 1)), None)).unwrap();
        assert_eq!(
            h,
            "X-Spam-Flag: YES\r\nX-Spam-Score: 8.0\r\nX-Spam-Status: Yes, score=8.0 \
             required=15.0 action=\"add header\"\r\n tests=SOME_LONGISH_SYMBOL_0\r\n"
        );
        let h = headers(&scanned(Some(result(false, 0)), None)).unwrap();
        assert!(h.starts_with("X-Spam-Flag: NO\r\n"), "{h}");
        assert!(h.contains("tests=none"), "{h}");
    }

    #[test]
    fn long_status_lines_fold_and_sizes_add_up() {
        let s = scanned(Some(result(true, 32)), None);
        let h = headers(&s).unwrap();
        for line in h.split("\r\n") {
            assert!(line.len() <= FOLD_AT, "{line:?}");
        }
        assert!(
            h.contains("\r\n SOME_LONGISH") || h.contains("\r\n tests="),
            "{h}"
        );
        let raw = b"Subject: x\r\n\r\nbody\r\n";
        let out = prepend(raw, &s);
        assert_eq!(out.len() as i64, raw.len() as i64 + added_bytes(&s));
        assert!(out.ends_with(raw));
    }

    #[test]
    fn unscored_mail_says_why_and_unasked_mail_is_untouched() {
        let s = scanned(None, Some("rspamd at 127.0.0.1:11333: refused\r\nx"));
        let h = headers(&s).unwrap();
        assert!(h.starts_with("X-Spam-Status: Unscored (rspamd at"), "{h}");
        assert!(!h.trim_end().contains('\n') || h.contains("\r\n "), "{h}");
        let plain = scanned(None, None);
        assert!(matches!(prepend(b"x", &plain), Cow::Borrowed(_)));
        assert_eq!(added_bytes(&plain), 0);
    }
}
