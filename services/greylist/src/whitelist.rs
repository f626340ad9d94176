//! Client and recipient whitelists in postgrey's file format, reloaded when
//! a file changes.
//!
//! Client files: one entry a line, `#` comments. `/regex/` matches the
//! client name; an IPv4 or IPv6 address, optionally `/bits`, matches the
//! address; `a.b.c` is a /24 and `a.b` a /16; anything else is a host or
//! domain name matching itself and its subdomains.
//!
//! Recipient files: `/regex/`; `user@domain` (also `user+ext@domain`);
//! `user@` (any domain); or a domain, matching it and its subdomains.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use mailfleet_events::greylist::triplet::mask;
use regex::{Regex, RegexBuilder};

use crate::GreylistError;

/// One whitelist file's text as recorded in a `ConfigChanged`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListText {
    /// The file it came from.
    pub name: String,
    pub text: String,
}

impl Whitelists {
    /// Lists from recorded texts; a bad line is an error naming it.
    pub fn from_texts(
        clients: &[ListText],
        recipients: &[ListText],
    ) -> Result<Self, GreylistError> {
        let mut w = Whitelists::default();
        for t in clients {
            w.add_clients(&t.name, &t.text)?;
        }
        for t in recipients {
            w.add_recipients(&t.name, &t.text)?;
        }
        Ok(w)
    }
}

/// The loaded whitelists.
#[derive(Debug, Default)]
pub struct Whitelists {
    client_names: HashSet<String>,
    client_regexes: Vec<Regex>,
    client_nets: Vec<(IpAddr, u8)>,
    recipient_users_at: HashSet<String>,
    recipient_addresses: HashSet<String>,
    recipient_domains: HashSet<String>,
    recipient_regexes: Vec<Regex>,
}

fn regex(text: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(text).case_insensitive(true).build()
}

fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let l = l.split('#').next().unwrap_or("").trim();
        (!l.is_empty()).then_some((i + 1, l))
    })
}

fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (s, None),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        return (bits <= max).then(|| (mask(ip, bits), bits));
    }
    // Partial IPv4: `a.b.c` is a /24, `a.b` a /16.
    let octets: Vec<u8> = addr
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    if bits.is_some() || !(2..=3).contains(&octets.len()) {
        return None;
    }
    let mut full = [0u8; 4];
    full[..octets.len()].copy_from_slice(&octets);
    Some((IpAddr::from(full), 8 * octets.len() as u8))
}

/// Whether `name` or one of its parent domains is in `set`.
fn domain_match(set: &HashSet<String>, name: &str) -> bool {
    let mut rest = name;
    loop {
        if set.contains(rest) {
            return true;
        }
        match rest.split_once('.') {
            Some((_, parent)) => rest = parent,
            None => return false,
        }
    }
}

/// Where a whitelist entry is: its file, line and text.
struct Entry<'a> {
    path: &'a str,
    line: usize,
    text: &'a str,
}

impl Entry<'_> {
    fn regex(&self, re: &str) -> Result<Regex, GreylistError> {
        regex(re).map_err(|source| GreylistError::Regex {
            path: self.path.to_string(),
            line: self.line,
            text: self.text.to_string(),
            source,
        })
    }

    fn not_a_client(&self) -> GreylistError {
        GreylistError::NotAClient {
            path: self.path.to_string(),
            line: self.line,
            text: self.text.to_string(),
        }
    }

    fn not_a_recipient(&self) -> GreylistError {
        GreylistError::NotARecipient {
            path: self.path.to_string(),
            line: self.line,
            text: self.text.to_string(),
        }
    }
}

impl Whitelists {
    /// Add the entries of a client whitelist file's text.
    pub fn add_clients(&mut self, path: &str, text: &str) -> Result<(), GreylistError> {
        for (line, entry) in entries(text) {
            let at = Entry {
                path,
                line,
                text: entry,
            };
            if let Some(re) = entry.strip_prefix('/').and_then(|e| e.strip_suffix('/')) {
                self.client_regexes.push(at.regex(re)?);
            } else if let Some(net) = parse_net(entry) {
                self.client_nets.push(net);
            } else if entry.contains(':')
                || entry.contains('/')
                || entry.contains(char::is_whitespace)
            {
                return Err(at.not_a_client());
            } else {
                self.client_names.insert(entry.to_ascii_lowercase());
            }
        }
        Ok(())
    }

    /// Add the entries of a recipient whitelist file's text.
    pub fn add_recipients(&mut self, path: &str, text: &str) -> Result<(), GreylistError> {
        for (line, entry) in entries(text) {
            let at = Entry {
                path,
                line,
                text: entry,
            };
            let lower = entry.to_ascii_lowercase();
            if let Some(re) = entry.strip_prefix('/').and_then(|e| e.strip_suffix('/')) {
                self.recipient_regexes.push(at.regex(re)?);
            } else if entry.contains(char::is_whitespace) {
                return Err(at.not_a_recipient());
            } else if let Some(user) = lower.strip_suffix('@') {
                self.recipient_users_at.insert(user.to_string());
            } else if lower.contains('@') {
                self.recipient_addresses.insert(lower);
            } else {
                self.recipient_domains.insert(lower);
            }
        }
        Ok(())
    }

    /// Whether the client (by name or address) is whitelisted.
    pub fn client(&self, ip: Option<IpAddr>, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if domain_match(&self.client_names, &name)
            || self.client_regexes.iter().any(|r| r.is_match(&name))
        {
            return true;
        }
        ip.is_some_and(|ip| {
            self.client_nets
                .iter()
                .any(|&(net, bits)| net.is_ipv4() == ip.is_ipv4() && mask(ip, bits) == net)
        })
    }

    /// Whether the recipient is whitelisted.
    pub fn recipient(&self, recipient: &str) -> bool {
        let lower = recipient.to_ascii_lowercase();
        if self.recipient_regexes.iter().any(|r| r.is_match(&lower)) {
            return true;
        }
        let Some((user, domain)) = lower.rsplit_once('@') else {
            return domain_match(&self.recipient_domains, &lower);
        };
        let base_user = user.split('+').next().unwrap_or(user);
        self.recipient_users_at.contains(base_user)
            || self
                .recipient_addresses
                .contains(&format!("{base_user}@{domain}"))
            || domain_match(&self.recipient_domains, domain)
    }
}

/// Whitelist files, reloaded when one changes.
pub struct WhitelistFiles {
    clients: Vec<PathBuf>,
    recipients: Vec<PathBuf>,
    current: RwLock<(Arc<Whitelists>, Vec<Option<SystemTime>>)>,
}

fn mtimes(paths: impl Iterator<Item = PathBuf>) -> Vec<Option<SystemTime>> {
    paths
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn read(path: &Path) -> Result<String, GreylistError> {
    std::fs::read_to_string(path).map_err(|source| GreylistError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl WhitelistFiles {
    /// Load the files; any bad file or line is an error naming it.
    pub fn load(
        clients: Vec<PathBuf>,
        recipients: Vec<PathBuf>,
    ) -> Result<Arc<Self>, GreylistError> {
        let files = WhitelistFiles {
            clients,
            recipients,
            current: RwLock::default(),
        };
        let loaded = files.read_all()?;
        *files.current.write().unwrap_or_else(|p| p.into_inner()) =
            (Arc::new(loaded), files.stamps());
        Ok(Arc::new(files))
    }

    /// Fixed lists with no files behind them (tests, tools).
    pub fn fixed(lists: Whitelists) -> Arc<Self> {
        Arc::new(WhitelistFiles {
            clients: vec![],
            recipients: vec![],
            current: RwLock::new((Arc::new(lists), vec![])),
        })
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        mtimes(self.clients.iter().chain(&self.recipients).cloned())
    }

    fn read_all(&self) -> Result<Whitelists, GreylistError> {
        let mut w = Whitelists::default();
        for p in &self.clients {
            w.add_clients(&p.display().to_string(), &read(p)?)?;
        }
        for p in &self.recipients {
            w.add_recipients(&p.display().to_string(), &read(p)?)?;
        }
        Ok(w)
    }

    /// The files' current texts, as (path, text): clients, then recipients
    /// (what a `ConfigChanged` records).
    pub fn texts(&self) -> Result<(Vec<ListText>, Vec<ListText>), GreylistError> {
        let texts = |paths: &[PathBuf]| -> Result<Vec<ListText>, GreylistError> {
            paths
                .iter()
                .map(|p| {
                    Ok(ListText {
                        name: p.display().to_string(),
                        text: read(p)?,
                    })
                })
                .collect()
        };
        Ok((texts(&self.clients)?, texts(&self.recipients)?))
    }

    /// The whitelists in force.
    pub fn get(&self) -> Arc<Whitelists> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Reload if a file changed. A bad edit keeps the previous lists and is
    /// reported, so a typo never opens or closes the gate.
    pub fn refresh(&self) -> Result<bool, GreylistError> {
        let stamps = self.stamps();
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == stamps {
            return Ok(false);
        }
        let loaded = self.read_all();
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        current.1 = stamps;
        current.0 = Arc::new(loaded?);
        Ok(true)
    }

    /// Check for changes every `every` on a background thread.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let files = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("whitelist-watch".into())
            .spawn(move || {
                while let Some(files) = files.upgrade() {
                    match files.refresh() {
                        Ok(true) => tracing::info!("greylist whitelists reloaded"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "whitelist reload failed; keeping the previous lists"),
                    }
                    drop(files);
                    std::thread::sleep(every);
                }
            })
            .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(clients: &str, recipients: &str) -> Whitelists {
        let mut w = Whitelists::default();
        w.add_clients("clients", clients).unwrap();
        w.add_recipients("recipients", recipients).unwrap();
        w
    }

    #[test]
    fn client_entries_match_names_domains_regexes_and_networks() {
        let w = lists(
            "# big providers\ngoogle.com\n/^mail-.*\\.example\\.net$/\n192.0.2.0/24\n198.51.100\n203.0\n2001:db8::/32\n10.1.2.3 # one host\n",
            "",
        );
        assert!(w.client(None, "mail-yw1-f41.google.com"));
        assert!(w.client(None, "Google.COM"));
        assert!(!w.client(None, "notgoogle.com"));
        assert!(w.client(None, "mail-7.example.net"));
        assert!(w.client("192.0.2.9".parse().ok(), "unknown"));
        assert!(w.client("198.51.100.200".parse().ok(), "unknown"));
        assert!(w.client("203.0.77.1".parse().ok(), "unknown"));
        assert!(w.client("2001:db8:ffff::1".parse().ok(), "unknown"));
        assert!(w.client("10.1.2.3".parse().ok(), "unknown"));
        assert!(!w.client("10.1.2.4".parse().ok(), "unknown"));
        assert!(!w.client("192.0.3.1".parse().ok(), "unknown"));
    }

    #[test]
    fn recipient_entries_follow_postfix_access_syntax() {
        let w = lists(
            "",
            "postmaster@\nabuse@example.org\nexample.net\n/^noc-[0-9]+@/\n",
        );
        assert!(w.recipient("postmaster@anything.test"));
        assert!(w.recipient("Postmaster+tag@anything.test"));
        assert!(w.recipient("abuse@example.org"));
        assert!(w.recipient("abuse+x@example.org"));
        assert!(!w.recipient("abuse@example.com"));
        assert!(w.recipient("anyone@example.net"));
        assert!(w.recipient("anyone@sub.example.net"));
        assert!(!w.recipient("anyone@badexample.net"));
        assert!(w.recipient("noc-42@x.test"));
        assert!(!w.recipient("carol@x.test"));
    }

    #[test]
    fn bad_lines_name_file_line_and_text() {
        let mut w = Whitelists::default();
        let err = w
            .add_clients("clients.local", "ok.example\n/[unclosed/\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clients.local line 2") && err.contains("[unclosed"),
            "{err}"
        );
        let err = w
            .add_clients("c", "bad host name\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn an_edited_file_is_reloaded_and_a_broken_edit_keeps_the_old_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients");
        std::fs::write(&path, "one.example\n").unwrap();
        let files = WhitelistFiles::load(vec![path.clone()], vec![]).unwrap();
        assert!(files.get().client(None, "one.example"));
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "two.example\n").unwrap();
        let t = SystemTime::now() + Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap();
        assert!(files.refresh().unwrap());
        assert!(
            files.get().client(None, "two.example") && !files.get().client(None, "one.example")
        );
        std::fs::write(&path, "/[broken/\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t + Duration::from_secs(2))
            .unwrap();
        assert!(files.refresh().is_err());
        assert!(
            files.get().client(None, "two.example"),
            "previous lists stay in force"
        );
    }
}
