//! Postfix's XFORWARD extension (<http://www.postfix.org/XFORWARD_README.html>):
//! the MTA passes on what it knows of its own SMTP client (address,
//! reverse-DNS name, HELO) and its queue id, so that the scanner can give
//! rspamd what the MX saw and `audit mail` can find the MTA's log lines.
//! Parsing only; the session (`session.rs`) keeps the values for the next
//! transaction.
//!
//! ```text
//! xforward-command = XFORWARD 1*( SP attribute-name"="attribute-value )
//! attribute-value  = xtext (RFC 1891) | "[UNAVAILABLE]" | "[TEMPUNAVAIL]"
//! ```
//!
//! Whom to believe: Postfix's smtpd takes XFORWARD only from
//! `smtpd_authorized_xforward_hosts`. Here every client that got past the
//! greeting is believed, because only the clients in `lmtp.allow` (the MTA)
//! get that far (`LmtpConfig::allow` in `lmtp/mod.rs`).

use super::{printable, Refusal};

/// The LHLO keyword and the attributes this server takes. Postfix sends
/// only the attributes named here (not PORT, which nothing here uses).
pub const KEYWORD: &str = "XFORWARD NAME ADDR PROTO HELO IDENT SOURCE";

/// Longest value, bytes after decoding: the README's bound ("must not be
/// longer than 255 characters"); DNS names fit.
pub const MAX_VALUE: usize = 255;

/// One XFORWARD attribute name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    Name,
    Addr,
    Proto,
    Helo,
    Ident,
    Source,
}

impl Attribute {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "NAME" => Self::Name,
            "ADDR" => Self::Addr,
            "PROTO" => Self::Proto,
            "HELO" => Self::Helo,
            "IDENT" => Self::Ident,
            "SOURCE" => Self::Source,
            _ => return None,
        })
    }
}

/// One XFORWARD command's attributes: `None` for a value the MTA does
/// not know.
pub type Attributes = Vec<(Attribute, Option<String>)>;

/// What the MTA said of its SMTP client for one transaction; `None` where
/// it said nothing or that it does not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// NAME: the client's reverse-DNS name.
    pub name: Option<String>,
    /// ADDR: the client's IP address (without Postfix's `IPv6:` prefix).
    pub addr: Option<String>,
    /// PROTO: `SMTP` or `ESMTP`.
    pub proto: Option<String>,
    /// HELO: the name the client gave in HELO or EHLO.
    pub helo: Option<String>,
    /// IDENT: the MTA's queue id of the message.
    pub ident: Option<String>,
    /// SOURCE: `LOCAL` or `REMOTE`.
    pub source: Option<String>,
}

impl Forwarded {
    /// Apply one XFORWARD command: the attributes it names change, the
    /// others keep what an earlier command of the transaction said
    /// (Postfix splits the attributes over two commands).
    pub fn update(&mut self, attributes: Attributes) {
        for (attribute, value) in attributes {
            let slot = match attribute {
                Attribute::Name => &mut self.name,
                Attribute::Addr => &mut self.addr,
                Attribute::Proto => &mut self.proto,
                Attribute::Helo => &mut self.helo,
                Attribute::Ident => &mut self.ident,
                Attribute::Source => &mut self.source,
            };
            *slot = value;
        }
    }
}

/// The `attr=value ...` after the verb. A bad attribute refuses the whole
/// command, so that none of it applies.
pub fn parse(rest: &str) -> Result<Attributes, Refusal> {
    let mut out = Vec::new();
    for word in rest.split_ascii_whitespace() {
        let (name, raw) = word.split_once('=').ok_or_else(|| {
            Refusal::syntax(format!(
                "Bad XFORWARD attribute syntax: {} (want name=value)",
                printable(word, 64)
            ))
        })?;
        let attribute = Attribute::from_name(name).ok_or_else(|| {
            Refusal::syntax(format!(
                "Bad XFORWARD attribute name: {}",
                printable(name, 32)
            ))
        })?;
        out.push((attribute, value(attribute, name, raw)?));
    }
    if out.is_empty() {
        return Err(Refusal::syntax("Syntax: XFORWARD attribute=value ..."));
    }
    Ok(out)
}

/// One value, decoded; `None` for "unknown".
fn value(attribute: Attribute, name: &str, raw: &str) -> Result<Option<String>, Refusal> {
    if ["[UNAVAILABLE]", "[TEMPUNAVAIL]"]
        .iter()
        .any(|u| raw.eq_ignore_ascii_case(u))
    {
        return Ok(None);
    }
    let name = printable(name, 32);
    let bytes = xtext_decode(raw).ok_or_else(|| {
        Refusal::syntax(format!(
            "Bad XFORWARD attribute value: {name}={}",
            printable(raw, 64)
        ))
    })?;
    if bytes.len() > MAX_VALUE {
        return Err(Refusal::syntax(format!(
            "XFORWARD {name}: value longer than {MAX_VALUE} bytes"
        )));
    }
    // The values become rspamd's HTTP headers and log fields: a control
    // character becomes '?', as Postfix's own printable() does.
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let text = match attribute {
        Attribute::Addr => strip_prefix_ignore_case(&text, "IPv6:").to_string(),
        _ => text,
    };
    // "unknown" is Postfix's name and address for what it could not find
    // (a client without reverse DNS).
    let unknown = matches!(attribute, Attribute::Name | Attribute::Addr)
        && text.eq_ignore_ascii_case("unknown");
    Ok((!text.is_empty() && !unknown).then_some(text))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> &'a str {
    match text.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => &text[prefix.len()..],
        _ => text,
    }
}

/// RFC 1891 xtext: `!`..`~` except `+` and `=` stand for themselves, `+XX`
/// (hex) for any byte. `None` if `raw` is not xtext. Lower-case hex is taken
/// too (the RFC asks for upper case; being strict would gain nothing).
fn xtext_decode(raw: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => {
                let hi = hex(bytes.next()?)?;
                let lo = hex(bytes.next()?)?;
                out.push(hi << 4 | lo);
            }
            b'=' => return None,
            b'!'..=b'~' => out.push(b),
            _ => return None,
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(rest: &str) -> Option<String> {
        let mut attributes = parse(rest).unwrap();
        assert_eq!(attributes.len(), 1, "{attributes:?}");
        attributes.remove(0).1
    }

    #[test]
    fn attributes_and_xtext() {
        assert_eq!(
            parse("NAME=mx.example.net ADDR=192.0.2.7 proto=ESMTP").unwrap(),
            [
                (Attribute::Name, Some("mx.example.net".into())),
                (Attribute::Addr, Some("192.0.2.7".into())),
                (Attribute::Proto, Some("ESMTP".into())),
            ]
        );
        assert_eq!(one("HELO=a+2Bb+3Dc+20d").as_deref(), Some("a+b=c d"));
        assert_eq!(one("HELO=caf+C3+A9").as_deref(), Some("café"));
        assert_eq!(one("helo=x+2b").as_deref(), Some("x+"), "lower-case hex");
        assert_eq!(one("IDENT=4XyZ1Q2").as_deref(), Some("4XyZ1Q2"));
        assert_eq!(one("HELO=a+0D+0Ab").as_deref(), Some("a??b"), "no CR LF");
    }

    #[test]
    fn unknown_values_are_none() {
        assert_eq!(one("NAME=[UNAVAILABLE]"), None);
        assert_eq!(one("HELO=[TEMPUNAVAIL]"), None);
        assert_eq!(one("NAME=unknown"), None);
        assert_eq!(one("ADDR=unknown"), None);
        assert_eq!(one("HELO=unknown").as_deref(), Some("unknown"));
        assert_eq!(one("IDENT="), None);
    }

    #[test]
    fn ipv6_prefix_is_stripped() {
        assert_eq!(one("ADDR=IPv6:2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(one("ADDR=ipv6:::1").as_deref(), Some("::1"));
        assert_eq!(one("HELO=IPv6:x").as_deref(), Some("IPv6:x"), "only ADDR");
    }

    #[test]
    fn refusals_name_the_bad_part() {
        let text = |rest: &str| {
            let e = parse(rest).unwrap_err();
            assert_eq!((e.code, e.enhanced), (501, "5.5.4"), "{rest}");
            e.text
        };
        assert_eq!(text("NAME=a PORT=25"), "Bad XFORWARD attribute name: PORT");
        assert_eq!(
            text("NAME=a HELO"),
            "Bad XFORWARD attribute syntax: HELO (want name=value)"
        );
        assert_eq!(text("HELO=a+4"), "Bad XFORWARD attribute value: HELO=a+4");
        assert_eq!(text("HELO=a+ZZ"), "Bad XFORWARD attribute value: HELO=a+ZZ");
        assert_eq!(text("HELO=a=b"), "Bad XFORWARD attribute value: HELO=a=b");
        assert_eq!(text("HELO=é"), "Bad XFORWARD attribute value: HELO=é");
        assert_eq!(text(""), "Syntax: XFORWARD attribute=value ...");
        let long = format!("NAME={}", "a".repeat(MAX_VALUE + 1));
        assert_eq!(text(&long), "XFORWARD NAME: value longer than 255 bytes");
        assert!(parse(&format!("NAME={}", "a".repeat(MAX_VALUE))).is_ok());
        assert_eq!(text("X\u{1b}=1"), "Bad XFORWARD attribute name: X\\u{1b}");
    }

    #[test]
    fn an_update_keeps_what_it_does_not_name() {
        let mut f = Forwarded::default();
        f.update(parse("NAME=mx.example ADDR=192.0.2.1").unwrap());
        f.update(parse("HELO=client.example IDENT=4AB NAME=[UNAVAILABLE]").unwrap());
        assert_eq!(
            f,
            Forwarded {
                name: None,
                addr: Some("192.0.2.1".into()),
                helo: Some("client.example".into()),
                ident: Some("4AB".into()),
                ..Forwarded::default()
            }
        );
    }
}
