//! The greylist key: client network / normalised sender / recipient,
//! lower-cased, as postgrey 1.37 builds it.
//!
//! Part of the `smtp.attempts` contract: the policy server keys its
//! `DeliveryAttempted` events by [`client_net`] and the greylist consumer
//! keeps its state by [`triplet`], so both read the same code.

use std::net::IpAddr;

/// How client addresses are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// IPv4 prefix length of the client network (postgrey `--ipv4cidr`, 24).
    pub ipv4_prefix: u8,
    /// IPv6 prefix length (postgrey `--ipv6cidr`, 64).
    pub ipv6_prefix: u8,
    /// Use the full address instead of the network (postgrey `--lookup-by-host`).
    pub by_host: bool,
}

/// The client network (or host) an address belongs to, as text: `192.0.2.0`,
/// `2001:db8::` or, by host, the address itself.
pub fn client_net(ip: IpAddr, g: Grouping) -> String {
    if g.by_host {
        return ip.to_string();
    }
    mask(
        ip,
        match ip {
            IpAddr::V4(_) => g.ipv4_prefix,
            IpAddr::V6(_) => g.ipv6_prefix,
        },
    )
    .to_string()
}

/// `ip` with all bits past `prefix` cleared.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((bits & keep).into())
        }
    }
}

/// Normalise a sender the way postgrey does, so that per-message sender
/// variants share one triplet: a BATV `prvs=` local part is reduced to the
/// user, a `+extension` is dropped, and digit runs become `#` (VERP).
pub fn normalise_sender(sender: &str) -> String {
    let Some((user, domain)) = sender.split_once('@') else {
        return sender.to_string();
    };
    let user = strip_batv(user);
    let user = user.split('+').next().unwrap_or(user);
    format!("{}@{domain}", hash_digit_words(user))
}

/// BATV is `prvs=tag=user` but is seen as `prvs=user=tag` too: keep the
/// part that does not look like a 10-character tag.
fn strip_batv(user: &str) -> &str {
    // Most senders are not BATV: no need to split them.
    if !user
        .as_bytes()
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"prvs="))
    {
        return user;
    }
    let parts: Vec<&str> = user.split('=').collect();
    if parts.len() != 3 || !parts[0].eq_ignore_ascii_case("prvs") {
        return user;
    }
    let tag = |s: &str| {
        s.len() >= 10
            && s[..10]
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    match (tag(parts[1]), tag(parts[2])) {
        (false, true) => parts[1],
        _ => parts[2],
    }
}

/// Replace every run of digits that forms a whole word (`\b\d+\b`) by `#`.
fn hash_digit_words(s: &str) -> String {
    if s.is_ascii() {
        hash_digit_words_ascii(s.as_bytes())
    } else {
        hash_digit_words_chars(s)
    }
}

/// [`hash_digit_words`] over ASCII, byte by byte (where a character is a
/// byte and Unicode's alphanumerics are ASCII's), without the `Vec<char>`
/// of [`hash_digit_words_chars`]: it runs for every attempt.
fn hash_digit_words_ascii(s: &[u8]) -> String {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let starts_word = i == 0 || !word(s[i - 1]);
        if s[i].is_ascii_digit() && starts_word {
            let end = (i..s.len())
                .find(|&j| !s[j].is_ascii_digit())
                .unwrap_or(s.len());
            if end == s.len() || !word(s[end]) {
                out.push('#');
                i = end;
                continue;
            }
        }
        out.push(char::from(s[i]));
        i += 1;
    }
    out
}

/// [`hash_digit_words`] for any text, character by character.
fn hash_digit_words_chars(s: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !word(chars[i - 1]);
        if chars[i].is_ascii_digit() && starts_word {
            let end = (i..chars.len())
                .find(|&j| !chars[j].is_ascii_digit())
                .unwrap_or(chars.len());
            if end == chars.len() || !word(chars[end]) {
                out.push('#');
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The triplet key, lower-cased.
pub fn triplet(client_net: &str, sender: &str, recipient: &str) -> String {
    format!("{client_net}/{}/{recipient}", normalise_sender(sender)).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Grouping = Grouping {
        ipv4_prefix: 24,
        ipv6_prefix: 64,
        by_host: false,
    };

    #[test]
    fn ipv4_groups_by_24_and_ipv6_by_64() {
        assert_eq!(
            client_net("192.0.2.77".parse().unwrap(), DEFAULT),
            "192.0.2.0"
        );
        assert_eq!(
            client_net("2001:db8:1:2:3:4:5:6".parse().unwrap(), DEFAULT),
            "2001:db8:1:2::"
        );
        let by_host = Grouping {
            by_host: true,
            ..DEFAULT
        };
        assert_eq!(
            client_net("192.0.2.77".parse().unwrap(), by_host),
            "192.0.2.77"
        );
        let wide = Grouping {
            ipv4_prefix: 16,
            ipv6_prefix: 48,
            ..DEFAULT
        };
        assert_eq!(client_net("192.0.2.77".parse().unwrap(), wide), "192.0.0.0");
        assert_eq!(
            client_net("2001:db8:1:2::9".parse().unwrap(), wide),
            "2001:db8:1::"
        );
    }

    #[test]
    fn batv_extensions_and_verp_numbers_are_normalised() {
        assert_eq!(
            normalise_sender("prvs=0123456789=alice@example.net"),
            "alice@example.net"
        );
        assert_eq!(
            normalise_sender("prvs=alice=0123abcdef@example.net"),
            "alice@example.net"
        );
        assert_eq!(
            normalise_sender("bob+list-123@example.net"),
            "bob@example.net"
        );
        assert_eq!(
            normalise_sender("bounce-1234-5678@lists.example.net"),
            "bounce-#-#@lists.example.net"
        );
        assert_eq!(
            normalise_sender("user42@example.net"),
            "user42@example.net",
            "digits inside a word stay"
        );
        assert_eq!(normalise_sender(""), "", "the null sender stays empty");
        assert_eq!(
            triplet("192.0.2.0", "Bob+x@Example.NET", "Carol@Example.ORG"),
            "192.0.2.0/bob@example.net/carol@example.org"
        );
        assert_eq!(normalise_sender("PRVS=0123456789=a@x"), "a@x");
        assert_eq!(normalise_sender("prvs@x"), "prvs@x");
        assert_eq!(normalise_sender("prvsé=0123456789=a@x"), "prvsé=#=a@x");
        assert_eq!(
            normalise_sender("ü12-34@x"),
            "ü12-#@x",
            "non-ASCII: by character"
        );
    }

    #[test]
    fn the_ascii_digit_words_match_the_character_version() {
        // Every string of up to 5 characters over a small alphabet that has
        // digits, word and non-word characters.
        let alphabet = ['1', '2', 'a', 'Z', '_', '-', '.', '='];
        let mut words = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            words.extend(longer);
            words.dedup();
        }
        words.sort();
        words.dedup();
        assert!(words.len() > 30_000);
        for w in &words {
            assert_eq!(
                hash_digit_words_ascii(w.as_bytes()),
                hash_digit_words_chars(w),
                "{w:?}"
            );
        }
    }
}
