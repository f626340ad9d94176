//! The few header fields a `MessageReceived` carries, read from the
//! message's header section only.

use mail_parser::MessageParser;

/// Longest value kept per field: headers are the sender's to fill.
const MAX_FIELD: usize = 998;

/// Message-ID, From, Subject and Date of a raw message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
}

/// Read the summary fields; absent or unreadable fields stay `None`.
pub fn summarize(raw: &[u8]) -> Summary {
    let Some(message) = MessageParser::new().parse_headers(raw) else {
        return Summary::default();
    };
    let from = message.from().and_then(|a| a.first()).map(|addr| {
        match (addr.name.as_deref(), addr.address.as_deref()) {
            (Some(name), Some(address)) => format!("{name} <{address}>"),
            (None, Some(address)) => address.to_string(),
            (Some(name), None) => name.to_string(),
            (None, None) => String::new(),
        }
    });
    Summary {
        message_id: message.message_id().map(clip),
        from: from.filter(|f| !f.is_empty()).map(|f| clip(&f)),
        subject: message.subject().map(clip),
        date: message.header_raw("Date").map(|d| clip(d.trim())),
    }
}

fn clip(value: &str) -> String {
    let mut end = value.len().min(MAX_FIELD);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_four_fields() {
        let raw =
            b"Message-ID: <abc@example.net>\r\nFrom: =?UTF-8?B?Wm/Dqw==?= <zoe@example.net>\r\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n";
        assert_eq!(
            summarize(raw),
            Summary {
                message_id: Some("abc@example.net".into()),
                from: Some("Zoë <zoe@example.net>".into()),
                subject: Some("Grüße".into()),
                date: Some("Sat, 28 Nov 2026 10:00:00 +0000".into()),
            }
        );
    }

    #[test]
    fn garbage_gives_nothing_and_no_panic() {
        assert_eq!(summarize(b""), Summary::default());
        let s = summarize(&[0xff, 0x00, b':', b'\r', b'\n']);
        assert_eq!(s.message_id, None);
    }

    #[test]
    fn long_values_are_clipped_on_a_char_boundary() {
        let subject = "é".repeat(1000);
        let raw = format!("Subject: {subject}\r\n\r\n");
        let got = summarize(raw.as_bytes()).subject.unwrap();
        assert!(got.len() <= MAX_FIELD && got.chars().all(|c| c == 'é'));
    }
}
