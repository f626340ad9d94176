//! The password policy and password hashing, shared by the account API
//! (`mailfleet-api`: registrations, logins) and the directory's migration
//! (`mailfleet-directory`: the one-time password), which depend on this
//! library rather than on each other. Start at [`check`] and [`hash`];
//! every failure is a [`PasswordError`].
//!
//! The policy ([`check`]) is the product rule: at least 8 characters, an
//! upper-case letter, a lower-case letter and a digit. It reports every
//! failed [`Rule`] at once, so a user fixes the password in one go, and its
//! messages name the rule, never the password.
//!
//! [`hash`] produces the one form every reader of the directory verifies:
//! `{ARGON2}` followed by the argon2id PHC string
//! (`$argon2id$v=19$m=65536,t=2,p=1$<salt>$<hash>`). slapd's `argon2` module
//! verifies it as `userPassword`, and Dovecot verifies the same PHC string
//! under its `{ARGON2ID}` scheme. [`verify`] also accepts `{SSHA512}`, the
//! scheme `ldappasswd` and older exports write, for imported accounts.
//!
//! Hashing and verifying are slow on purpose (64 MiB and two passes): async
//! callers run them in `tokio::task::spawn_blocking`.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha512};

/// The scheme prefix of the hashes [`hash`] writes (slapd's name for it).
pub const ARGON2_SCHEME: &str = "{ARGON2}";
/// The salted SHA-512 scheme of `ldappasswd` (module pw-sha2).
pub const SSHA512_SCHEME: &str = "{SSHA512}";
/// The minimum length in characters (Unicode scalar values).
pub const MIN_LENGTH: usize = 8;

/// argon2id memory cost in KiB (64 MiB), as slapd's and Dovecot's
/// documentation suggest for interactive logins.
const M_COST_KIB: u32 = 65_536;
/// argon2id passes.
const T_COST: u32 = 2;
/// argon2id lanes: one, so a login uses one core.
const P_COST: u32 = 1;
/// Output length in bytes (argon2's and libsodium's default).
const OUTPUT_LEN: usize = 32;
/// Salt length in bytes (argon2's recommendation).
const SALT_LEN: usize = 16;
/// The most memory a stored hash may ask [`verify`] for (1 GiB): a hash
/// imported from elsewhere must not make one login allocate without bound.
const MAX_VERIFY_M_COST_KIB: u32 = 1_048_576;
/// Length of a SHA-512 digest, before the salt in a `{SSHA512}` value.
const SHA512_LEN: usize = 64;

/// One rule of the password policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// At least [`MIN_LENGTH`] characters.
    MinLength,
    /// At least one upper-case letter.
    UpperCase,
    /// At least one lower-case letter.
    LowerCase,
    /// At least one digit 0-9.
    Digit,
}

impl Rule {
    /// Every rule, in the order [`check`] reports them.
    pub const ALL: [Rule; 4] = [
        Rule::MinLength,
        Rule::UpperCase,
        Rule::LowerCase,
        Rule::Digit,
    ];

    /// A stable name for programs (the API's `rules` list).
    pub fn name(self) -> &'static str {
        match self {
            Rule::MinLength => "min-length",
            Rule::UpperCase => "upper-case",
            Rule::LowerCase => "lower-case",
            Rule::Digit => "digit",
        }
    }

    /// What the rule asks for, for people.
    pub fn message(self) -> &'static str {
        match self {
            Rule::MinLength => "the password must have at least 8 characters",
            Rule::UpperCase => "the password must contain an upper-case letter",
            Rule::LowerCase => "the password must contain a lower-case letter",
            Rule::Digit => "the password must contain a digit (0-9)",
        }
    }

    /// Whether `password` satisfies this rule.
    fn holds(self, password: &str) -> bool {
        match self {
            Rule::MinLength => password.chars().count() >= MIN_LENGTH,
            Rule::UpperCase => password.chars().any(char::is_uppercase),
            Rule::LowerCase => password.chars().any(char::is_lowercase),
            Rule::Digit => password.chars().any(|c| c.is_ascii_digit()),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.name())
    }
}

/// Checks `password` against every rule and reports all that fail
/// ([`PasswordError::Weak`]).
pub fn check(password: &str) -> Result<(), PasswordError> {
    let failed: Vec<Rule> = Rule::ALL
        .into_iter()
        .filter(|rule| !rule.holds(password))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(PasswordError::Weak { failed })
    }
}

/// Why a password fails the policy, or why hashing or verifying failed.
/// No variant carries the password or a stored hash: these errors end up
/// in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The password fails the policy ([`check`]).
    #[error("weak password: {}", listed(.failed))]
    Weak {
        /// The rules it failed: never empty, in [`Rule::ALL`] order.
        failed: Vec<Rule>,
    },
    /// argon2 refused to hash (parameters or lengths out of range).
    #[error("hashing the password with argon2id failed: {0}")]
    Hash(argon2::password_hash::Error),
    /// A stored hash has a scheme this module does not verify.
    #[error("stored password hash has the unsupported scheme {scheme:?} (supported: {ARGON2_SCHEME}, {SSHA512_SCHEME})")]
    UnsupportedScheme {
        /// The `{...}` prefix, or what stands in its place.
        scheme: String,
    },
    /// A stored hash of a known scheme does not parse.
    #[error("stored {scheme} password hash is malformed: {problem}")]
    Malformed {
        scheme: &'static str,
        problem: String,
    },
}

impl PasswordError {
    /// The rules a [`PasswordError::Weak`] password failed; none for any
    /// other error.
    pub fn rules(&self) -> &[Rule] {
        match self {
            Self::Weak { failed } => failed,
            _ => &[],
        }
    }
}

/// The failed rules, `; `-separated.
fn listed(rules: &[Rule]) -> String {
    let shown: Vec<String> = rules.iter().map(Rule::to_string).collect();
    shown.join("; ")
}

/// Hashes `password` as `{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$...` with a
/// fresh random salt. It does not check the policy: callers that take a
/// password from a user call [`check`] first.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hash)?;
    let phc = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(PasswordError::Hash)?;
    Ok(format!("{ARGON2_SCHEME}{phc}"))
}

/// The argon2id context with this module's parameters.
fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN))
        .map_err(|e| PasswordError::Hash(e.into()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Whether `password` matches `stored` (`{ARGON2}$argon2...` or
/// `{SSHA512}<base64>`). `Ok(false)` is a wrong password; an error is a
/// stored value this module cannot read.
pub fn verify(password: &str, stored: &str) -> Result<bool, PasswordError> {
    if let Some(phc) = strip_scheme(stored, ARGON2_SCHEME) {
        verify_argon2(password, phc)
    } else if let Some(encoded) = strip_scheme(stored, SSHA512_SCHEME) {
        verify_ssha512(password, encoded)
    } else {
        Err(PasswordError::UnsupportedScheme {
            scheme: scheme_of(stored),
        })
    }
}

/// `stored` without its `{SCHEME}` prefix, compared case-insensitively as
/// slapd does.
fn strip_scheme<'a>(stored: &'a str, scheme: &str) -> Option<&'a str> {
    let head = stored.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &stored[scheme.len()..])
}

/// The `{...}` prefix of a stored value, or a placeholder: never the value.
fn scheme_of(stored: &str) -> String {
    match (stored.starts_with('{'), stored.find('}')) {
        (true, Some(end)) if end <= 32 => stored[..=end].to_owned(),
        _ => "(no {SCHEME} prefix)".to_owned(),
    }
}

fn verify_argon2(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let malformed = |problem: String| PasswordError::Malformed {
        scheme: ARGON2_SCHEME,
        problem,
    };
    let parsed = PasswordHash::new(phc).map_err(|e| malformed(e.to_string()))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        // argon2 would call this a wrong password; it is a broken record.
        return Err(malformed("no salt or no hash".into()));
    }
    let params = Params::try_from(&parsed).map_err(|e| malformed(e.to_string()))?;
    if params.m_cost() > MAX_VERIFY_M_COST_KIB {
        return Err(malformed(format!(
            "memory cost m={} KiB is above the {MAX_VERIFY_M_COST_KIB} KiB this service verifies",
            params.m_cost()
        )));
    }
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// `{SSHA512}` is base64(SHA-512(password ‖ salt) ‖ salt).
fn verify_ssha512(password: &str, encoded: &str) -> Result<bool, PasswordError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| PasswordError::Malformed {
            scheme: SSHA512_SCHEME,
            problem: format!("not base64: {e}"),
        })?;
    if raw.len() <= SHA512_LEN {
        return Err(PasswordError::Malformed {
            scheme: SSHA512_SCHEME,
            problem: format!(
                "{} bytes, expected a {SHA512_LEN}-byte digest and a salt",
                raw.len()
            ),
        });
    }
    let (digest, salt) = raw.split_at(SHA512_LEN);
    let mut sha = Sha512::new();
    sha.update(password.as_bytes());
    sha.update(salt);
    Ok(constant_time_eq(&sha.finalize(), digest))
}

/// Compares two secrets in time that depends only on their lengths, so a
/// caller cannot learn a matching prefix by timing (hash digests, bearer
/// tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password generated per run, so no fixture holds one.
    fn strong() -> String {
        let mut bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut bytes);
        let tail = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!("Aa1{tail}")
    }

    #[test]
    fn password_policy_accepts_a_strong_password() {
        assert_eq!(check(&strong()), Ok(()));
    }

    #[test]
    fn password_policy_reports_each_rule_alone() {
        let cases = [
            ("Ab1defg", Rule::MinLength),
            ("abcdefg1", Rule::UpperCase),
            ("ABCDEFG1", Rule::LowerCase),
            ("Abcdefgh", Rule::Digit),
        ];
        for (weak, rule) in cases {
            let err = check(weak).expect_err(rule.name());
            assert_eq!(err.rules(), &[rule], "{weak:?}");
            let text = err.to_string();
            assert!(text.contains(rule.name()), "{text}");
            assert!(!text.contains(weak), "message must not echo the password");
        }
    }

    #[test]
    fn password_policy_reports_all_failed_rules() {
        let err = check("").expect_err("empty");
        assert_eq!(err.rules(), &Rule::ALL);
        let err = check("abc").expect_err("short lower");
        assert_eq!(
            err.rules(),
            &[Rule::MinLength, Rule::UpperCase, Rule::Digit]
        );
    }

    #[test]
    fn password_policy_counts_characters_not_bytes() {
        // 7 characters in 10 bytes: too short.
        let err = check("Äöü1abc").expect_err("7 chars");
        assert_eq!(err.rules(), &[Rule::MinLength]);
        assert_eq!(check("Äöü1abcd"), Ok(()));
    }

    #[test]
    fn password_hash_is_argon2id_phc_and_verifies() {
        let password = strong();
        let stored = hash(&password).expect("hash");
        assert!(
            stored.starts_with("{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains(&password));
        assert!(verify(&password, &stored).expect("verify"));
        assert!(!verify(&format!("{password}x"), &stored).expect("verify"));
        // A fresh salt each time.
        assert_ne!(hash(&password).expect("hash"), stored);
    }

    #[test]
    fn password_verify_reads_ssha512() {
        let password = strong();
        let salt = [7u8, 1, 2, 3, 4, 5, 6, 8];
        let mut raw = Sha512::digest([password.as_bytes(), &salt].concat()).to_vec();
        raw.extend_from_slice(&salt);
        let stored = format!(
            "{{ssha512}}{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        assert!(verify(&password, &stored).expect("verify"));
        assert!(!verify("Wrong123", &stored).expect("verify"));
    }

    #[test]
    fn password_verify_names_bad_stored_values_without_echoing_them() {
        let err = verify("x", "{MD5}c2VjcmV0").expect_err("md5");
        let text = err.to_string();
        assert!(
            text.contains("{MD5}") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        let err = verify("x", "plaintext-secret").expect_err("no scheme");
        assert!(!err.to_string().contains("plaintext-secret"));
        let err = verify("x", "{SSHA512}AAAA").expect_err("short");
        assert!(err.to_string().contains("{SSHA512}"), "{err}");
        let err = verify("x", "{ARGON2}$argon2id$nonsense").expect_err("phc");
        assert!(err.to_string().contains("{ARGON2}"), "{err}");
    }

    #[test]
    fn password_verify_refuses_unbounded_memory_cost() {
        let err = verify(
            "x",
            "{ARGON2}$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHQ$AAAAAAAAAAAAAAAAAAAAAA",
        )
        .expect_err("4 GiB");
        assert!(err.to_string().contains("m=4194304"), "{err}");
    }

    #[test]
    fn password_constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
