//! Client networks an edge server (LMTP, policy) accepts connections from:
//! `lmtp.allow` / `policy.allow`, a list of CIDRs (`127.0.0.0/8`, `::1/128`;
//! a bare address is one host). Checked on accept, before a byte is read.
//!
//! An IPv4 client of a dual-stack listener (`[::]`) shows up as
//! `::ffff:a.b.c.d`; it is matched as the IPv4 address, so `127.0.0.0/8`
//! covers it there too. A CIDR with host bits set (`10.0.0.1/8`) is refused
//! at load rather than silently masked: it is usually a typo.

use std::net::IpAddr;

use crate::RuntimeError;

/// The default of every allow list: loopback only.
pub const LOOPBACK: &[&str] = &["127.0.0.0/8", "::1/128"];

/// [`LOOPBACK`] as config values.
pub fn loopback() -> Vec<String> {
    LOOPBACK.iter().map(|s| s.to_string()).collect()
}

/// One network: an address with its host bits zero and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `x::y/n`, or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Result<Cidr, RuntimeError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| RuntimeError::CidrAddress {
            addr: addr.to_string(),
        })?;
        let bits = bits_of(net);
        let prefix = match prefix {
            None => bits,
            Some(p) => p.parse::<u8>().ok().filter(|n| *n <= bits).ok_or_else(|| {
                RuntimeError::CidrPrefix {
                    prefix: p.to_string(),
                    bits,
                }
            })?,
        };
        let cidr = Cidr { net, prefix };
        if mask(net, prefix) != net {
            return Err(RuntimeError::CidrHostBits {
                network: mask(net, prefix),
                prefix,
            });
        }
        Ok(cidr)
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

fn bits_of(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// `ip` with all but its first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & keep).into())
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & keep).into())
        }
    }
}

/// The networks a server accepts clients from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Vec<Cidr>);

impl AllowList {
    /// Every bad entry of `key` (e.g. `lmtp.allow`), naming it and its value.
    pub fn problems(key: &str, entries: &[String]) -> Vec<String> {
        let mut out: Vec<String> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                Cidr::parse(e.trim())
                    .err()
                    .map(|why| format!("{key}[{i}] = {e:?}: {why}"))
            })
            .collect();
        if entries.is_empty() {
            out.push(format!(
                "{key} = []: no client could connect (every address: [\"0.0.0.0/0\", \"::/0\"])"
            ));
        }
        out
    }

    /// The list of `key`, or every problem with it.
    pub fn parse(key: &str, entries: &[String]) -> Result<AllowList, RuntimeError> {
        let problems = Self::problems(key, entries);
        if !problems.is_empty() {
            return Err(RuntimeError::InvalidConfig(problems));
        }
        let nets = entries.iter().filter_map(|e| Cidr::parse(e.trim()).ok());
        Ok(AllowList(nets.collect()))
    }

    /// Whether a client at `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowList::parse("x.allow", &entries).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_lists_match_by_prefix() {
        let l = list(&["127.0.0.0/8", "::1/128", "192.0.2.0/25", "2001:db8::/32"]);
        for yes in [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "192.0.2.127",
            "2001:db8:1::5",
        ] {
            assert!(l.allows(ip(yes)), "{yes}");
        }
        for no in ["128.0.0.1", "192.0.2.128", "::2", "2001:db9::1", "10.0.0.1"] {
            assert!(!l.allows(ip(no)), "{no}");
        }
        // An IPv4 client of a dual-stack listener.
        assert!(l.allows(ip("::ffff:127.0.0.1")));
        assert!(!l.allows(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn allow_list_edges_single_hosts_and_everything() {
        let one = list(&["127.0.0.1/32"]);
        assert!(one.allows(ip("127.0.0.1")));
        assert!(!one.allows(ip("127.0.0.2")));
        let bare = list(&["127.0.0.1", "fe80::1"]);
        assert!(bare.allows(ip("127.0.0.1")) && bare.allows(ip("fe80::1")));
        assert!(!bare.allows(ip("fe80::2")));
        let all = list(&["0.0.0.0/0", "::/0"]);
        assert!(all.allows(ip("203.0.113.7")) && all.allows(ip("2001:db8::1")));
        // An IPv4 network never matches an IPv6 address, and back.
        assert!(!list(&["0.0.0.0/0"]).allows(ip("::1")));
        assert!(!list(&["::/0"]).allows(ip("127.0.0.1")));
        assert!(list(LOOPBACK).allows(ip("127.0.0.1")));
    }

    #[test]
    fn allow_list_problems_name_the_key_index_and_value() {
        let bad: Vec<String> = [
            "127.0.0.0/8",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "mx.example",
            "::1/x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let problems = AllowList::problems("lmtp.allow", &bad).join("\n");
        assert!(
            problems.contains("lmtp.allow[1] = \"10.0.0.0/33\""),
            "{problems}"
        );
        assert!(problems.contains("0..=32"), "{problems}");
        assert!(
            problems.contains("lmtp.allow[2] = \"10.0.0.1/8\""),
            "{problems}"
        );
        assert!(problems.contains("10.0.0.0/8"), "{problems}");
        assert!(
            problems.contains("lmtp.allow[3] = \"mx.example\""),
            "{problems}"
        );
        assert!(problems.contains("lmtp.allow[4] = \"::1/x\""), "{problems}");
        assert!(!problems.contains("[0]"), "{problems}");
        let err = AllowList::parse("policy.allow", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy.allow = []"), "{err}");
    }
}
