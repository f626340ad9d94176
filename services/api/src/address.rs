//! Account addresses as the API accepts them: `local@domain`, ASCII,
//! lower-cased. The lower-cased address is the record key of every account
//! event, the LDAP `uid` and the Maildir path, so it must be safe in all
//! three: a dot-atom local part (RFC 5322, without `/`, which would be a
//! path separator in the Maildir) and a domain of DNS labels with at least
//! one dot.

use super::errors::ApiError;

/// Longest local part (RFC 5321 4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// Longest domain (RFC 5321 4.5.3.1.2).
const MAX_DOMAIN: usize = 253;
/// Longest DNS label.
const MAX_LABEL: usize = 63;
/// The specials a dot-atom allows besides letters and digits, minus `/`.
const ATOM_SPECIALS: &str = "!#$%&'*+-=?^_`{|}~";

/// The account key for `address`: trimmed and lower-cased, or why not
/// ([`ApiError::BadAddress`], a 400 naming the address and the problem).
pub fn normalise(address: &str) -> Result<String, ApiError> {
    let bad = |problem| ApiError::BadAddress {
        address: address.to_string(),
        problem,
    };
    let trimmed = address.trim();
    if !trimmed.is_ascii() {
        return Err(bad("only ASCII addresses are supported"));
    }
    let lower = trimmed.to_ascii_lowercase();
    let (local, domain) = lower.rsplit_once('@').ok_or_else(|| bad("no '@'"))?;
    if let Some(problem) = local_problem(local).or_else(|| domain_problem(domain)) {
        return Err(bad(problem));
    }
    Ok(lower)
}

fn local_problem(local: &str) -> Option<&'static str> {
    if local.is_empty() {
        return Some("the part before '@' is empty");
    }
    if local.len() > MAX_LOCAL {
        return Some("the part before '@' is longer than 64 characters");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Some("the part before '@' has a leading, trailing or double dot");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '.' || ATOM_SPECIALS.contains(c);
    if !local.chars().all(allowed) {
        return Some(
            "the part before '@' may hold only letters, digits, dots and !#$%&'*+-=?^_`{|}~",
        );
    }
    None
}

fn domain_problem(domain: &str) -> Option<&'static str> {
    if domain.is_empty() {
        return Some("the domain is empty");
    }
    if domain.len() > MAX_DOMAIN {
        return Some("the domain is longer than 253 characters");
    }
    if !domain.contains('.') {
        return Some("the domain has no dot");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Some("a domain label is empty or longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a domain label starts or ends with '-'");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Some("the domain may hold only letters, digits, '-' and dots");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalise(" Bob.Smith+tag@Example.TEST ").unwrap(),
            "bob.smith+tag@example.test"
        );
        assert_eq!(
            normalise("o'neil@a-b.example.test").unwrap(),
            "o'neil@a-b.example.test"
        );
    }

    #[test]
    fn api_bad_addresses_name_the_address_and_the_problem() {
        for (address, problem) in [
            ("bob", "no '@'"),
            ("@example.test", "before '@' is empty"),
            ("bob@", "domain is empty"),
            ("bob@localhost", "no dot"),
            (".bob@example.test", "leading, trailing or double dot"),
            ("a..b@example.test", "leading, trailing or double dot"),
            ("a/b@example.test", "only letters, digits"),
            ("a b@example.test", "only letters, digits"),
            ("bob@exa_mple.test", "only letters, digits, '-'"),
            ("bob@-x.test", "starts or ends with '-'"),
            ("bob@x..test", "label is empty"),
            ("bób@example.test", "ASCII"),
        ] {
            let err = normalise(address).expect_err(address);
            let text = err.to_string();
            assert!(text.contains(&format!("{address:?}")), "{text}");
            assert!(text.contains(problem), "{address}: {text}");
        }
        let long = format!("{}@example.test", "a".repeat(65));
        match normalise(&long) {
            Err(ApiError::BadAddress { problem, .. }) => assert!(problem.contains("64")),
            other => panic!("{other:?}"),
        }
    }
}
