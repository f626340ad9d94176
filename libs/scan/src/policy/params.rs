//! A lenient parser for the raw value of a Content-Type or
//! Content-Disposition header: the media type and every `name` / `filename`
//! parameter, decoded from RFC 2231 (`filename*=`, continuations
//! `filename*0*=`, `filename*1=`) and RFC 2047.
//!
//! mail-parser parses these headers too; the walk checks the names from both
//! parsers, so a name either of them (or a mail client) would show is checked.
//! This one exists for what mail-parser leaves raw or decodes otherwise (see
//! [`super::encoded`]) and for a second `filename` parameter in one header.

use super::encoded::{
    decode_charset, decode_rfc2047, decode_rfc2231, percent_decode, split_charset,
};

/// The parameters that name a file. `name` belongs in Content-Type and
/// `filename` in Content-Disposition; senders mix them up, so both count.
const NAME_KEYS: [&str; 2] = ["filename", "name"];

/// What one raw header value says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RawParams {
    /// The value before the first `;`, trimmed and lowercased
    /// (`application/zip`, `attachment`).
    pub value: String,
    /// Every file name parameter, decoded, in header order.
    pub names: Vec<String>,
}

/// One RFC 2231 section of a continued parameter: `filename*<section>[*]=`.
struct Section {
    key: String,
    number: u32,
    extended: bool,
    value: String,
}

/// Parses a raw header value (after the colon, possibly folded).
pub(crate) fn parse(raw: &[u8]) -> RawParams {
    let unfolded: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    let mut segments = split_segments(&unfolded).into_iter();
    let value = segments
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut names = Vec::new();
    let mut sections = Vec::new();
    for segment in segments {
        let Some((key, raw_value)) = segment.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = unquote(raw_value.trim());
        match classify(&key) {
            Some(Key::Plain) => names.push(decode_rfc2047(&value)),
            Some(Key::Extended) => names.push(decode_rfc2231(&value)),
            Some(Key::Section(base, number, extended)) => {
                sections.push(Section {
                    key: base.to_owned(),
                    number,
                    extended,
                    value,
                });
            }
            None => {}
        }
    }
    names.extend(join_sections(sections));
    RawParams { value, names }
}

enum Key<'k> {
    /// `filename=`
    Plain,
    /// `filename*=`
    Extended,
    /// `filename*3=` or `filename*3*=`
    Section(&'k str, u32, bool),
}

fn classify(key: &str) -> Option<Key<'_>> {
    let (stem, extended) = match key.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (key, false),
    };
    if NAME_KEYS.contains(&stem) {
        return Some(if extended { Key::Extended } else { Key::Plain });
    }
    let (base, number) = stem.split_once('*')?;
    let number = number.parse().ok()?;
    NAME_KEYS
        .contains(&base)
        .then_some(Key::Section(base, number, extended))
}

/// Joins RFC 2231 continuations per key, in section order. The charset is
/// taken from the first extended section; percent-decoding applies to
/// extended sections only.
fn join_sections(mut sections: Vec<Section>) -> Vec<String> {
    sections.sort_by(|a, b| (&a.key, a.number).cmp(&(&b.key, b.number)));
    let mut names = Vec::new();
    for key in NAME_KEYS {
        let parts: Vec<&Section> = sections.iter().filter(|s| s.key == key).collect();
        if !parts.is_empty() {
            names.push(join_one(&parts));
        }
    }
    names
}

fn join_one(parts: &[&Section]) -> String {
    let mut charset = "utf-8";
    let mut bytes = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let mut value = part.value.as_str();
        if index == 0 && part.extended {
            if let Some((declared, rest)) = split_charset(value) {
                charset = declared;
                value = rest;
            }
        }
        if part.extended {
            bytes.extend(percent_decode(value));
        } else {
            bytes.extend_from_slice(value.as_bytes());
        }
    }
    decode_charset(charset, &bytes)
}

/// Splits on `;` outside quoted strings, dropping `(comments)`.
fn split_segments(text: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut escaped, mut comment) = (false, false, 0usize);
    for c in text.chars() {
        if quoted {
            current.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '(' => comment += 1,
            ')' if comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '"' => {
                quoted = true;
                current.push(c);
            }
            ';' => segments.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    segments.push(current);
    segments
}

/// The content of a quoted string (up to its closing quote, `\x` → `x`),
/// or the value itself when it is not quoted.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        match (escaped, c) {
            (true, _) => {
                out.push(c);
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, '"') => break,
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(raw: &str) -> Vec<String> {
        parse(raw.as_bytes()).names
    }

    #[test]
    fn media_type_is_lowercased() {
        assert_eq!(
            parse(b" Application/X-MSDownload; name=a.txt\r\n").value,
            "application/x-msdownload"
        );
        assert_eq!(parse(b"").value, "");
    }

    #[test]
    fn plain_quoted_and_escaped_names() {
        assert_eq!(names(" attachment; filename=x.exe"), ["x.exe"]);
        assert_eq!(
            names(" attachment; FILENAME = \"a;b.exe\" ; size=3"),
            ["a;b.exe"]
        );
        assert_eq!(names(" attachment; filename=\"a\\\".exe\""), ["a\".exe"]);
        assert_eq!(
            names(" text/plain (comment; name=y.exe); name=x.txt"),
            ["x.txt"]
        );
    }

    #[test]
    fn every_name_parameter_is_kept() {
        assert_eq!(
            names(" attachment; filename=a.txt; filename*=utf-8''b.exe; name=c.doc"),
            ["a.txt", "b.exe", "c.doc"]
        );
    }

    #[test]
    fn rfc2231_extended_and_continuations() {
        assert_eq!(names(" attachment; filename*=utf-8''x%2Eexe"), ["x.exe"]);
        assert_eq!(
            names(" attachment;\r\n filename*0*=utf-8''x;\r\n filename*1*=%2Eexe"),
            ["x.exe"]
        );
        assert_eq!(
            names(" attachment; filename*1=\".exe\"; filename*0=\"x\""),
            ["x.exe"]
        );
        assert_eq!(
            names(" attachment; filename*0*=iso-8859-1''r%E9; filename*1=sum.exe"),
            ["résum.exe"]
        );
        assert_eq!(
            names(" x; filename=x.exe; filename*0*=utf-8''y; filename*1*=.exe"),
            ["x.exe", "y.exe"]
        );
    }

    #[test]
    fn rfc2047_in_plain_values() {
        assert_eq!(
            names(" a; filename=\"=?UTF-8?B?eC5l?= =?UTF-8?B?eGU=?=\""),
            ["x.exe"]
        );
        assert_eq!(names(" a; name==?utf-8?b?eC5leGU?="), ["x.exe"]);
    }

    #[test]
    fn garbage_does_not_panic() {
        for raw in [
            &b"\"unterminated; name=x"[..],
            b";;;==;",
            b"(((",
            b"name*99999999999=x",
            b"\xff\xfe; name=\xff.exe",
            b"x; name*0*=utf-8'",
        ] {
            let _ = parse(raw);
        }
        assert_eq!(names("x; name*0*=utf-8'"), ["utf-8'"]);
    }
}
