//! Decoders for file names that mail-parser 0.11 leaves raw or decodes
//! differently from a mail client:
//!
//! - RFC 2047 encoded words anywhere in a value (`a=?UTF-8?Q?x=2Eexe?=`;
//!   mail-parser decodes them only at the start of a token), adjacent words
//!   joined without the whitespace between them (RFC 2047 §6.2; mail-parser
//!   keeps a space, turning `x.exe` into `x.e xe`) and base64 without its
//!   `=` padding (mail-parser drops the last partial group).
//! - RFC 2231 `charset'language'percent-encoded` values.
//!
//! Decoding is lenient: what does not decode is kept literally, as a mail
//! client would show it.

use mail_parser::decoders::charsets::map::charset_decoder;

/// Decodes the RFC 2047 encoded words in `value`; whitespace between two
/// adjacent encoded words is dropped.
pub(crate) fn decode_rfc2047(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match encoded_word(candidate) {
            Some((decoded, used)) => {
                if !(after_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &candidate[used..];
                after_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
                after_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses one `=?charset?E?text?=` at the start of `s`; returns the decoded
/// text and the number of bytes consumed.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, body) = body.split_once('?')?;
    let (encoding, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let text = &body[..end];
    if charset.is_empty() || text.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => base64_lenient(text.as_bytes()),
        "Q" | "q" => q_decode(text.as_bytes()),
        _ => return None,
    };
    let used = "=?".len() + charset.len() + 1 + encoding.len() + 1 + end + "?=".len();
    // RFC 2231 §5 allows `charset*language` in an encoded word.
    let charset = charset.split('*').next().unwrap_or(charset);
    Some((decode_charset(charset, &bytes), used))
}

/// Decodes an RFC 2231 extended value `charset'language'%xx...`. A value
/// without the two quotes is percent-decoded as UTF-8.
pub(crate) fn decode_rfc2231(value: &str) -> String {
    match split_charset(value) {
        Some((charset, encoded)) => decode_charset(charset, &percent_decode(encoded)),
        None => decode_charset("utf-8", &percent_decode(value)),
    }
}

/// Splits `charset'language'rest` into the charset and the rest.
pub(crate) fn split_charset(value: &str) -> Option<(&str, &str)> {
    let (charset, rest) = value.split_once('\'')?;
    let (_language, encoded) = rest.split_once('\'')?;
    Some((charset, encoded))
}

/// `%xx` to a byte; a `%` not followed by two hex digits stays literal.
pub(crate) fn percent_decode(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = (bytes[i] == b'%')
            .then(|| hex_pair(bytes.get(i + 1..i + 3)?))
            .flatten();
        match pair {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

/// RFC 2047 "Q": `_` is a space, `=xx` a byte.
fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let pair = (text[i] == b'=')
            .then(|| hex_pair(text.get(i + 1..i + 3)?))
            .flatten();
        match (text[i], pair) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'_', None) => out.push(b' '),
            (other, None) => out.push(other),
        }
        i += 1;
    }
    out
}

/// Base64 that skips anything outside the alphabet (line breaks, padding)
/// and keeps a trailing partial group, as mail clients do.
pub(crate) fn base64_lenient(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for sextet in text.iter().filter_map(|&b| base64_value(b)) {
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Bytes in `charset` to text; an unknown charset is read as UTF-8, lossily.
pub(crate) fn decode_charset(charset: &str, bytes: &[u8]) -> String {
    match charset_decoder(charset.trim().as_bytes()) {
        Some(decode) => decode(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2047_base64_and_q() {
        assert_eq!(decode_rfc2047("=?UTF-8?B?eC5leGU=?="), "x.exe");
        assert_eq!(decode_rfc2047("=?utf-8?q?x=2Eexe?="), "x.exe");
        assert_eq!(
            decode_rfc2047("=?iso-8859-1?Q?r=E9sum=E9_final.exe?="),
            "résumé final.exe"
        );
    }

    #[test]
    fn rfc2047_unpadded_base64_keeps_the_last_group() {
        assert_eq!(decode_rfc2047("=?utf-8?b?eC5leGU?="), "x.exe");
    }

    #[test]
    fn rfc2047_adjacent_words_drop_the_whitespace_between() {
        assert_eq!(decode_rfc2047("=?UTF-8?B?eC5l?= =?UTF-8?B?eGU=?="), "x.exe");
        assert_eq!(decode_rfc2047("=?UTF-8?Q?a?=\r\n =?UTF-8?Q?b?= c"), "ab c");
    }

    #[test]
    fn rfc2047_inside_a_token_and_with_language() {
        assert_eq!(decode_rfc2047("a=?UTF-8?Q?x=2Eexe?="), "ax.exe");
        assert_eq!(decode_rfc2047("=?UTF-8*en?Q?x.exe?="), "x.exe");
    }

    #[test]
    fn rfc2047_malformed_words_stay_literal() {
        for raw in [
            "=?",
            "=?utf-8?",
            "=?utf-8?X?abc?=",
            "=??B?eA==?=",
            "x=?utf-8?B?a b?=",
            "=?=?",
        ] {
            assert_eq!(decode_rfc2047(raw), raw);
        }
        assert_eq!(decode_rfc2047("=?x=?UTF-8?Q?y?="), "=?xy");
    }

    #[test]
    fn rfc2047_unknown_charset_reads_utf8() {
        assert_eq!(decode_rfc2047("=?x-unknown?B?eC5leGU=?="), "x.exe");
    }

    #[test]
    fn rfc2231_values() {
        assert_eq!(decode_rfc2231("utf-8''x%2Eexe"), "x.exe");
        assert_eq!(decode_rfc2231("UTF-8'en'x%2eexe"), "x.exe");
        assert_eq!(decode_rfc2231("iso-8859-1''r%E9sum%E9.exe"), "résumé.exe");
        assert_eq!(decode_rfc2231("x%2Eexe"), "x.exe");
        assert_eq!(decode_rfc2231("utf-8''x%ZZ.exe%"), "x%ZZ.exe%");
    }

    #[test]
    fn lenient_base64() {
        assert_eq!(base64_lenient(b"UEsD\r\nBA=="), b"PK\x03\x04");
        assert_eq!(base64_lenient(b"eC5leGU"), b"x.exe");
        assert_eq!(base64_lenient(b""), b"");
        assert_eq!(base64_lenient(b"!!!"), b"");
    }
}
