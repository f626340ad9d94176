//! Search filters (RFC 4515): escaping a value into one, and checking a
//! configured filter before anything starts.

use crate::DirectoryError;

/// Escape a value for a filter (RFC 4515 section 3): `*`, `(`, `)`, `\`
/// and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`, so an address such as
/// `a*)(uid=*` matches only itself.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// `(attr=value)` with the value escaped.
pub fn equals(attr: &str, value: &str) -> String {
    format!("({attr}={})", escape_value(value))
}

/// Check a configured filter: parenthesised (RFC 4515 requires it, though
/// some tools accept a bare `a=b`) and parsed by ldap3's RFC 4515 parser,
/// so a filter slapd would refuse is refused at load.
pub fn check(filter: &str) -> Result<(), DirectoryError> {
    if !(filter.starts_with('(') && filter.ends_with(')')) {
        return Err(DirectoryError::FilterParentheses);
    }
    let mut depth = 0i32;
    for c in filter.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            return Err(DirectoryError::FilterUnbalanced);
        }
    }
    if depth != 0 {
        return Err(DirectoryError::FilterUnbalanced);
    }
    ldap3::parse_filter(filter)
        .map(|_| ())
        .map_err(|()| DirectoryError::FilterSyntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_so_they_cannot_inject() {
        assert_eq!(equals("uid", "a*)(uid=*"), "(uid=a\\2a\\29\\28uid=\\2a)");
        assert_eq!(escape_value("back\\slash\0"), "back\\5cslash\\00");
        assert_eq!(escape_value("a,b@x.test"), "a,b@x.test");
        // Escaped, it is one equality item; unescaped, it is not a filter.
        assert!(check(&equals("uid", "a*)(uid=*")).is_ok());
        assert!(check("(uid=a*)(uid=*)").is_err());
    }

    #[test]
    fn configured_filters_are_checked() {
        for good in [
            "(objectClass=mailfleetAccount)",
            "(&(objectClass=inetOrgPerson)(objectClass=mailfleetAccount))",
            "(!(mailfleetStatus=deleted))",
            "(uid=*)",
        ] {
            assert!(check(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("objectClass=mailfleetAccount", "parentheses"),
            ("(objectClass=mailfleetAccount", "parentheses"),
            ("(&(a=b))(c=d)", "not an RFC 4515 filter"),
            ("(a=b))(c=d)", "unbalanced"),
            ("(=b)", "not an RFC 4515 filter"),
            ("(a~b)", "not an RFC 4515 filter"),
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
