//! LMTP command lines (RFC 2033, which borrows ESMTP's from RFC 5321):
//! parsing only, no state.

use mailfleet_events::mail::BodyType;

// A child of `command` rather than of `lmtp`, so that `fuzz/`, which builds
// this file on its own, gets it too; the path keeps it beside this file.
#[path = "xforward.rs"]
pub mod xforward;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Lhlo(String),
    /// HELO or EHLO: SMTP, not LMTP.
    SmtpGreeting,
    Mail {
        /// The reverse path without angle brackets; empty for `<>`.
        from: String,
        /// The `SIZE=` parameter.
        size: Option<u64>,
        body: BodyType,
    },
    Rcpt {
        to: String,
    },
    /// Postfix's XFORWARD: what the MTA knows of its SMTP client.
    Xforward(xforward::Attributes),
    /// RFC 3207: switch to TLS.
    StartTls,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Unknown(String),
}

/// Why a command line could not be read; the reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

impl Refusal {
    fn syntax(text: impl Into<String>) -> Self {
        Self {
            code: 501,
            enhanced: "5.5.4",
            text: text.into(),
        }
    }
}

/// Parse one command line (without its CRLF).
pub fn parse(line: &str) -> Result<Command, Refusal> {
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    Ok(match verb.to_ascii_uppercase().as_str() {
        "LHLO" if rest.is_empty() => return Err(Refusal::syntax("Syntax: LHLO hostname")),
        "LHLO" => Command::Lhlo(rest.to_string()),
        "HELO" | "EHLO" => Command::SmtpGreeting,
        "MAIL" => mail(rest)?,
        "RCPT" => rcpt(rest)?,
        "XFORWARD" => Command::Xforward(xforward::parse(rest)?),
        "STARTTLS" if rest.is_empty() => Command::StartTls,
        "STARTTLS" => return Err(Refusal::syntax("Syntax: STARTTLS takes no parameters")),
        "DATA" if rest.is_empty() => Command::Data,
        "DATA" => return Err(Refusal::syntax("Syntax: DATA takes no parameters")),
        "RSET" => Command::Rset,
        "NOOP" => Command::Noop,
        "QUIT" => Command::Quit,
        "VRFY" => Command::Vrfy,
        _ => Command::Unknown(printable(verb, 32)),
    })
}

fn mail(rest: &str) -> Result<Command, Refusal> {
    let args = strip_keyword(rest, "FROM:").ok_or_else(|| {
        Refusal::syntax("Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]")
    })?;
    let (from, params) = path(args)?;
    let mut size = None;
    let mut body = BodyType::SevenBit;
    for (key, value) in params {
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => {
                let n = v.parse::<u64>().map_err(|_| {
                    Refusal::syntax(format!("SIZE={}: not a number", printable(v, 64)))
                })?;
                size = Some(n);
            }
            ("BODY", Some(v)) => {
                body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyType::SevenBit,
                    "8BITMIME" => BodyType::EightBitMime,
                    _ => {
                        let v = printable(v, 64);
                        return Err(Refusal::syntax(format!("BODY={v}: use 7BIT or 8BITMIME")));
                    }
                }
            }
            _ => return Err(unsupported(key)),
        }
    }
    Ok(Command::Mail { from, size, body })
}

fn rcpt(rest: &str) -> Result<Command, Refusal> {
    let args =
        strip_keyword(rest, "TO:").ok_or_else(|| Refusal::syntax("Syntax: RCPT TO:<address>"))?;
    let (to, params) = path(args)?;
    if let Some((key, _)) = params.into_iter().next() {
        return Err(unsupported(key));
    }
    Ok(Command::Rcpt { to })
}

fn unsupported(key: &str) -> Refusal {
    Refusal {
        code: 555,
        enhanced: "5.5.4",
        text: format!("Unsupported parameter {}", printable(key, 32)),
    }
}

/// Client text fit to echo in a reply: at most `max` characters, control
/// characters as escapes (`\r`, `\u{8}`), so that a reply line stays one
/// printable line whatever the client sent (found by `fuzz/`).
fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `FROM:` / `TO:`, case-insensitive, tolerating a space after the colon.
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| rest[keyword.len()..].trim_start())
}

type Params<'a> = Vec<(&'a str, Option<&'a str>)>;

/// `<address> key=value ...`: the address inside the brackets (quotes
/// respected), then the parameters.
fn path(args: &str) -> Result<(String, Params<'_>), Refusal> {
    let inner = args
        .strip_prefix('<')
        .ok_or_else(|| Refusal::syntax("Address must be in angle brackets"))?;
    let end = closing_bracket(inner).ok_or_else(|| Refusal::syntax("Missing closing '>'"))?;
    let address = &inner[..end];
    if address.chars().any(|c| c.is_control()) {
        return Err(Refusal::syntax("Control characters in address"));
    }
    let params = inner[end + 1..]
        .split_ascii_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
        .collect();
    Ok((strip_source_route(address).to_string(), params))
}

fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// `@relay1,@relay2:user@domain` → `user@domain` (RFC 5321 4.1.2: accept
/// and ignore source routes).
fn strip_source_route(address: &str) -> &str {
    if address.starts_with('@') {
        if let Some((_, rest)) = address.split_once(':') {
            return rest;
        }
    }
    address
}

/// A mailbox is `local@domain` with both parts non-empty.
pub fn valid_mailbox(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains(char::is_whitespace)
                && !domain.starts_with('.')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_with_parameters() {
        assert_eq!(
            parse("MAIL FROM:<a@example.net> SIZE=1234 BODY=8BITMIME").unwrap(),
            Command::Mail {
                from: "a@example.net".into(),
                size: Some(1234),
                body: BodyType::EightBitMime
            }
        );
        assert_eq!(
            parse("mail from: <>").unwrap(),
            Command::Mail {
                from: String::new(),
                size: None,
                body: BodyType::SevenBit
            }
        );
    }

    #[test]
    fn quoted_local_parts_and_source_routes() {
        assert_eq!(
            parse("RCPT TO:<\"a>b\"@example.org>").unwrap(),
            Command::Rcpt {
                to: "\"a>b\"@example.org".into()
            }
        );
        assert_eq!(
            parse("RCPT TO:<@relay.example:bob@example.org>").unwrap(),
            Command::Rcpt {
                to: "bob@example.org".into()
            }
        );
    }

    #[test]
    fn refusals_name_the_bad_value() {
        assert_eq!(
            parse("MAIL FROM:<a@b> SIZE=lots").unwrap_err().text,
            "SIZE=lots: not a number"
        );
        let e = parse("RCPT TO:<b@c> NOTIFY=NEVER").unwrap_err();
        assert_eq!(
            (e.code, e.text.as_str()),
            (555, "Unsupported parameter NOTIFY")
        );
        assert_eq!(parse("RCPT TO:b@c").unwrap_err().code, 501);
        assert_eq!(
            parse("MAIL FROM:<a@b").unwrap_err().text,
            "Missing closing '>'"
        );
        assert_eq!(parse("LHLO").unwrap_err().code, 501);
    }

    #[test]
    fn echoed_client_text_has_no_control_characters() {
        assert_eq!(
            parse("\u{8}DATA\r<>").unwrap(),
            Command::Unknown("\\u{8}DATA\\r<>".into())
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> SIZE=1\u{b}2").unwrap_err().text,
            "SIZE=1\\u{b}2: not a number"
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> BODY=\0").unwrap_err().text,
            "BODY=\\u{0}: use 7BIT or 8BITMIME"
        );
        assert_eq!(
            parse("RCPT TO:<b@c> X\u{1b}=1").unwrap_err().text,
            "Unsupported parameter X\\u{1b}"
        );
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            parse("lhlo mx.example").unwrap(),
            Command::Lhlo("mx.example".into())
        );
        assert_eq!(parse("data").unwrap(), Command::Data);
        assert_eq!(
            parse("xforward ident=4AB").unwrap(),
            Command::Xforward(vec![(xforward::Attribute::Ident, Some("4AB".into()))])
        );
        assert_eq!(parse("EHLO x").unwrap(), Command::SmtpGreeting);
        assert_eq!(parse("StartTLS").unwrap(), Command::StartTls);
        assert_eq!(parse("STARTTLS now").unwrap_err().code, 501);
    }

    #[test]
    fn mailboxes() {
        assert!(valid_mailbox("bob@example.org"));
        assert!(!valid_mailbox("bob"));
        assert!(!valid_mailbox("@example.org"));
        assert!(!valid_mailbox("bob@"));
    }
}
