//! Distinguished names, strictly as RFC 4514 writes them, and the escaping
//! that builds them from account addresses.
//!
//! Why strict: slapd accepts `uid=x.ou=people,dc=mailfleet,dc=test` (a `.`
//! typed for a `,`) as a valid DN of an entry `uid=x.ou=people` directly
//! below the suffix, so the original cron script's searches failed with a
//! useless "no such object". RFC 4514 lets `=` stand unescaped inside a
//! value; this parser does not, because an unescaped `=` in a value is
//! that typo far more often than a real value, and our own escaper always
//! writes it as `\=` (as `ops/ldap` documents). It also refuses what RFC
//! 4514 refuses: an empty RDN, an RDN without `=`, spaces around `,`,
//! unescaped `"` `;` `<` `>` NUL, and a bad `\` escape.
//!
//! Comparison ([`Dn::is_within`], `==`) ignores the case of attribute
//! types and values: every attribute our DNs use (dc, ou, uid, cn, mail)
//! matches case-insensitively.

use std::fmt;

use super::error::DirectoryError;

/// One `type=value` of an RDN; the value is unescaped.
#[derive(Debug, Clone)]
pub struct Ava {
    pub attr: String,
    pub value: String,
}

/// A relative DN: one or more [`Ava`]s joined by `+`.
#[derive(Debug, Clone)]
pub struct Rdn(pub Vec<Ava>);

/// A parsed DN, leaf first (`uid=a,ou=people,dc=x` is `[uid=a, ou=people, dc=x]`).
#[derive(Debug, Clone)]
pub struct Dn {
    rdns: Vec<Rdn>,
}

impl Ava {
    pub fn new(attr: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            attr: attr.into(),
            value: value.into(),
        }
    }

    fn same(&self, other: &Ava) -> bool {
        self.attr.eq_ignore_ascii_case(&other.attr)
            && self.value.to_lowercase() == other.value.to_lowercase()
    }
}

impl Rdn {
    /// A single-valued RDN.
    pub fn single(attr: impl Into<String>, value: impl Into<String>) -> Self {
        Self(vec![Ava::new(attr, value)])
    }

    /// The one AVA of a single-valued RDN.
    pub fn only(&self) -> Option<&Ava> {
        match self.0.as_slice() {
            [ava] => Some(ava),
            _ => None,
        }
    }

    fn same(&self, other: &Rdn) -> bool {
        self.0.len() == other.0.len() && self.0.iter().all(|a| other.0.iter().any(|b| a.same(b)))
    }
}

impl PartialEq for Rdn {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl PartialEq for Dn {
    fn eq(&self, other: &Self) -> bool {
        self.rdns == other.rdns
    }
}

impl Dn {
    /// Parse `text` strictly (see the module doc). The empty DN (the root)
    /// is refused: no DN we configure or build is the root. The error is a
    /// [`DirectoryError::ParseDn`] naming the DN and what is wrong.
    pub fn parse(text: &str) -> Result<Dn, DirectoryError> {
        Self::parse_or_problem(text).map_err(|problem| DirectoryError::ParseDn {
            dn: text.to_string(),
            problem: Box::new(problem),
        })
    }

    /// [`Dn::parse`], failing with only what is wrong (naming the RDN and
    /// its value), for messages that name the key and the DN themselves.
    pub(crate) fn parse_or_problem(text: &str) -> Result<Dn, DirectoryError> {
        if text.is_empty() {
            return Err(DirectoryError::DnEmpty);
        }
        let mut rdns = Vec::new();
        for (index, raw) in split_unescaped(text, ',').into_iter().enumerate() {
            let n = index + 1;
            if raw.is_empty() {
                return Err(DirectoryError::RdnEmpty { n });
            }
            let mut avas = Vec::new();
            for part in split_unescaped(raw, '+') {
                avas.push(parse_ava(part).map_err(|p| DirectoryError::InRdn {
                    n,
                    rdn: raw.to_string(),
                    problem: Box::new(p),
                })?);
            }
            rdns.push(Rdn(avas));
        }
        Ok(Dn { rdns })
    }

    /// A DN from RDNs, leaf first.
    pub fn from_rdns(rdns: Vec<Rdn>) -> Dn {
        Dn { rdns }
    }

    /// The RDNs, leaf first.
    pub fn rdns(&self) -> &[Rdn] {
        &self.rdns
    }

    /// How many RDNs: deeper entries have more.
    pub fn depth(&self) -> usize {
        self.rdns.len()
    }

    /// Whether this DN is `base` or below it.
    pub fn is_within(&self, base: &Dn) -> bool {
        self.rdns.len() >= base.rdns.len()
            && self.rdns[self.rdns.len() - base.rdns.len()..] == base.rdns[..]
    }

    /// Whether this DN is strictly below `base`.
    pub fn is_below(&self, base: &Dn) -> bool {
        self.rdns.len() > base.rdns.len() && self.is_within(base)
    }

    /// The DN of the child `rdn` of this entry.
    pub fn child(&self, rdn: Rdn) -> Dn {
        let mut rdns = Vec::with_capacity(self.rdns.len() + 1);
        rdns.push(rdn);
        rdns.extend(self.rdns.iter().cloned());
        Dn { rdns }
    }

    /// This DN moved from below `from` to below `to` (`None` if it is not
    /// within `from`): how a subtree is copied to another base.
    pub fn rebase(&self, from: &Dn, to: &Dn) -> Option<Dn> {
        if !self.is_within(from) {
            return None;
        }
        let keep = self.rdns.len() - from.rdns.len();
        let mut rdns = self.rdns[..keep].to_vec();
        rdns.extend(to.rdns.iter().cloned());
        Some(Dn { rdns })
    }
}

impl fmt::Display for Ava {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.attr, escape_value(&self.value))
    }
}

impl fmt::Display for Rdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ava) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{ava}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{rdn}")?;
        }
        Ok(())
    }
}

/// Escape an attribute value for a DN (RFC 4514 section 2.4, plus `=`
/// anywhere, as `ops/ldap` documents): `\ , + " < > ; =` anywhere, `#` or
/// a space first, a space last, NUL as `\00`.
pub fn escape_value(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len() + 4);
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' | ',' | '+' | '"' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// Split at every `sep` not escaped by a backslash.
fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == sep => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// One `type=value`, the value unescaped.
fn parse_ava(text: &str) -> Result<Ava, DirectoryError> {
    let Some((attr, raw)) = text.split_once('=') else {
        return Err(DirectoryError::AvaWithoutEquals {
            ava: text.to_string(),
        });
    };
    check_attr(attr)?;
    Ok(Ava::new(attr, unescape(raw)?))
}

/// An attribute type: a name (`ALPHA *(ALPHA / DIGIT / "-")`) or an OID.
fn check_attr(attr: &str) -> Result<(), DirectoryError> {
    let name = attr.starts_with(|c: char| c.is_ascii_alphabetic())
        && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !attr.is_empty()
        && attr
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if name || oid {
        return Ok(());
    }
    if attr.is_empty() {
        return Err(DirectoryError::AttrMissing);
    }
    Err(DirectoryError::NotAnAttr {
        attr: attr.to_string(),
        spaced: attr.trim() != attr,
    })
}

/// The value of an AVA, unescaped; refuses what RFC 4514 requires to be
/// escaped, and `=` (see the module doc).
fn unescape(raw: &str) -> Result<String, DirectoryError> {
    let value = || raw.to_string();
    if raw.is_empty() {
        return Err(DirectoryError::ValueEmpty);
    }
    if raw.starts_with('#') {
        return Err(DirectoryError::ValueHex { value: value() });
    }
    if raw.starts_with(' ') {
        return Err(DirectoryError::ValueLeadingSpace { value: value() });
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    let mut trailing_space = false;
    while let Some(c) = chars.next() {
        trailing_space = c == ' ';
        match c {
            '\\' => bytes.push(escaped(raw, &mut chars)?),
            '=' => return Err(DirectoryError::ValueEquals { value: value() }),
            '"' | ';' | '<' | '>' | '\0' => {
                return Err(DirectoryError::ValueUnescaped { value: value(), c })
            }
            _ => {
                let mut buf = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if trailing_space {
        return Err(DirectoryError::ValueTrailingSpace { value: value() });
    }
    String::from_utf8(bytes).map_err(|_| DirectoryError::ValueUtf8 { value: value() })
}

/// The byte a `\` escape stands for: `\` + a special character, or two hex digits.
fn escaped(
    raw: &str,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<u8, DirectoryError> {
    let bad = || DirectoryError::ValueEscape {
        value: raw.to_string(),
    };
    let first = chars.next().ok_or_else(bad)?;
    if matches!(
        first,
        '\\' | ',' | '+' | '"' | '<' | '>' | ';' | '=' | '#' | ' '
    ) {
        return Ok(first as u8);
    }
    let second = chars.next().ok_or_else(bad)?;
    match (first.to_digit(16), second.to_digit(16)) {
        (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Dn {
        Dn::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problem(text: &str) -> String {
        match Dn::parse(text) {
            Ok(dn) => panic!("{text:?} parsed as {dn:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_dot_typed_for_a_comma_is_refused_naming_the_dn_and_value() {
        let e = problem("uid=x.ou=people,dc=mailfleet,dc=test");
        assert!(
            e.contains("\"uid=x.ou=people,dc=mailfleet,dc=test\""),
            "{e}"
        );
        assert!(e.contains("RDN 1"), "{e}");
        assert!(e.contains("\"x.ou=people\""), "{e}");
        assert!(e.contains("'.' typed where a ',' belongs"), "{e}");
        let e = problem("ou=people,dc=mailfleet.dc=test");
        assert!(
            e.contains("RDN 2") && e.contains("\"mailfleet.dc=test\""),
            "{e}"
        );
    }

    #[test]
    fn what_rfc_4514_refuses_is_refused() {
        for (dn, expected) in [
            ("", "is empty"),
            ("uid=x,,dc=test", "RDN 2 is empty"),
            (",dc=test", "RDN 1 is empty"),
            ("dc=test,", "RDN 2 is empty"),
            ("uidx,dc=test", "has no '='"),
            ("=x,dc=test", "attribute type before '=' is missing"),
            ("ou=people, dc=test", "RFC 4514 allows no spaces"),
            ("ou =people,dc=test", "\"ou \" is not an attribute type"),
            ("ou= people,dc=test", "starts with an unescaped space"),
            ("ou=people ,dc=test", "ends with an unescaped space"),
            ("ou=,dc=test", "the value is empty"),
            ("cn=a\"b,dc=test", "unescaped '\"'"),
            ("cn=a;b,dc=test", "unescaped ';'"),
            ("cn=a<b,dc=test", "unescaped '<'"),
            ("cn=a\\zz,dc=test", "bad '\\' escape"),
            ("cn=a\\q,dc=test", "bad '\\' escape"),
            ("cn=a\\", "bad '\\' escape"),
            ("cn=#04,dc=test", "hex-encoded"),
            ("cn=\\c3,dc=test", "not UTF-8"),
            ("1x=a,dc=test", "\"1x\" is not an attribute type"),
        ] {
            let e = problem(dn);
            assert!(e.contains(expected), "{dn:?}: {e:?} lacks {expected:?}");
        }
    }

    #[test]
    fn escapes_parse_into_values() {
        let dn = parsed("uid=a\\+b\\=c\\,d@x.test,ou=people,dc=mailfleet,dc=test");
        assert_eq!(dn.depth(), 4);
        let leaf = dn.rdns()[0].only().unwrap();
        assert_eq!(
            (leaf.attr.as_str(), leaf.value.as_str()),
            ("uid", "a+b=c,d@x.test")
        );
        // slapd answers with hex escapes: the same DN.
        assert_eq!(
            dn,
            parsed("UID=a\\2Bb\\3Dc\\2cd@X.test,ou=People,dc=mailfleet,dc=test")
        );
        let multi = parsed("cn=a+sn=b,dc=test");
        assert_eq!(multi.rdns()[0].0.len(), 2);
        assert_eq!(multi, parsed("sn=b+cn=a,dc=test"));
        assert_eq!(
            parsed("cn=\\c3\\a9t\\c3\\a9,dc=test").rdns()[0].0[0].value,
            "été"
        );
        assert_eq!(parsed("2.5.4.3=x,dc=test").rdns()[0].0[0].attr, "2.5.4.3");
        assert_eq!(parsed("cn=\\ a\\ ,dc=test").rdns()[0].0[0].value, " a ");
    }

    #[test]
    fn escaping_round_trips_and_cannot_inject() {
        for value in [
            "a,b@x.test",
            "uid=evil,ou=people",
            "a+b=c@x",
            "#hash",
            " lead",
            "trail ",
            "back\\slash",
            "q\"<>;",
            "nul\0x",
            "plain@example.test",
        ] {
            let base = parsed("ou=people,dc=mailfleet,dc=test");
            let dn_text = format!("uid={},{base}", escape_value(value));
            let dn = parsed(&dn_text);
            assert_eq!(dn.depth(), 4, "{value:?} became {dn_text:?}");
            assert_eq!(dn.rdns()[0].only().unwrap().value, value);
            assert!(dn.is_below(&base));
            assert_eq!(dn.to_string(), dn_text);
        }
        assert_eq!(escape_value("a,b@x"), "a\\,b@x");
        assert_eq!(escape_value("a+b=c@x"), "a\\+b\\=c@x");
    }

    #[test]
    fn within_below_child_and_rebase() {
        let base = parsed("dc=mailfleet,dc=test");
        let people = parsed("ou=people,dc=mailfleet,dc=test");
        let account = people.child(Rdn::single("uid", "a@x.test"));
        assert!(people.is_below(&base) && people.is_within(&people));
        assert!(!people.is_below(&people) && !base.is_within(&people));
        assert!(!parsed("ou=people,dc=other,dc=test").is_within(&base));
        let contacts = account.child(Rdn::single("ou", "contacts"));
        let paid = parsed("ou=people,ou=paid,dc=mailfleet,dc=test");
        assert_eq!(
            contacts.rebase(&people, &paid).unwrap().to_string(),
            "ou=contacts,uid=a@x.test,ou=people,ou=paid,dc=mailfleet,dc=test"
        );
        assert!(base.rebase(&people, &paid).is_none());
    }
}
