//! Longest-prefix-match routing from IP prefixes to values.
//!
//! The data plane routes each outbound packet to the peer whose allowed IPs
//! hold the most specific prefix covering its destination. Tailscale peers
//! mostly own /32 and /128 prefixes, so the table keeps one hash map per
//! prefix length and probes lengths from longest to shortest: a lookup costs
//! one hash probe per distinct length present (usually one or two).

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// A map from IP prefixes to values with longest-prefix-match lookup.
#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    v4: Family<T>,
    v6: Family<T>,
}

#[derive(Debug, Clone)]
struct Family<T> {
    /// Prefix lengths present, longest first.
    lengths: Vec<u8>,
    by_len: HashMap<(u8, u128), T>,
}

impl<T> Default for Family<T> {
    fn default() -> Self {
        Family {
            lengths: Vec::new(),
            by_len: HashMap::new(),
        }
    }
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        PrefixTable {
            v4: Family::default(),
            v6: Family::default(),
        }
    }
}

fn key_bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn mask(bits: u128, width: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let shift = u32::from(width - len);
        (bits >> shift) << shift
    }
}

impl<T> Family<T> {
    fn insert(&mut self, bits: u128, width: u8, len: u8, value: T) -> Option<T> {
        if !self.lengths.contains(&len) {
            self.lengths.push(len);
            self.lengths.sort_unstable_by(|a, b| b.cmp(a));
        }
        self.by_len.insert((len, mask(bits, width, len)), value)
    }
    fn lookup(&self, bits: u128, width: u8) -> Option<&T> {
        self.lengths
            .iter()
            .find_map(|&len| self.by_len.get(&(len, mask(bits, width, len))))
    }
    fn retain(&mut self, mut f: impl FnMut(&T) -> bool) {
        self.by_len.retain(|_, v| f(v));
        let present: std::collections::HashSet<u8> = self.by_len.keys().map(|k| k.0).collect();
        self.lengths.retain(|l| present.contains(l));
    }
}

impl<T> PrefixTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the value for `prefix`, returning the old one.
    pub fn insert(&mut self, prefix: IpNet, value: T) -> Option<T> {
        let (bits, width) = key_bits(prefix.network());
        let len = prefix.prefix_len();
        match prefix {
            IpNet::V4(_) => self.v4.insert(bits, width, len, value),
            IpNet::V6(_) => self.v6.insert(bits, width, len, value),
        }
    }

    /// The value of the longest prefix covering `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        let (bits, width) = key_bits(addr);
        match addr {
            IpAddr::V4(_) => self.v4.lookup(bits, width),
            IpAddr::V6(_) => self.v6.lookup(bits, width),
        }
    }

    /// Keeps only entries whose value satisfies `f`.
    pub fn retain(&mut self, mut f: impl FnMut(&T) -> bool) {
        self.v4.retain(&mut f);
        self.v6.retain(&mut f);
    }

    /// Number of prefixes held.
    pub fn len(&self) -> usize {
        self.v4.by_len.len() + self.v6.by_len.len()
    }

    /// True when no prefix is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = PrefixTable::new();
        t.insert(net("0.0.0.0/0"), "default");
        t.insert(net("100.64.0.0/10"), "cgnat");
        t.insert(net("100.64.0.7/32"), "seven");
        t.insert(net("fd7a:115c:a1e0::/48"), "ula");
        assert_eq!(t.lookup(ip("100.64.0.7")), Some(&"seven"));
        assert_eq!(t.lookup(ip("100.64.0.8")), Some(&"cgnat"));
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(&"default"));
        assert_eq!(t.lookup(ip("fd7a:115c:a1e0::9")), Some(&"ula"));
        assert_eq!(t.lookup(ip("2001:db8::1")), None);
    }

    #[test]
    fn host_bits_in_prefix_are_ignored_and_retain_removes() {
        let mut t = PrefixTable::new();
        t.insert(net("10.1.2.3/8"), 1);
        assert_eq!(t.lookup(ip("10.200.0.1")), Some(&1));
        t.insert(net("10.0.0.0/24"), 2);
        t.retain(|v| *v != 2);
        assert_eq!(t.lookup(ip("10.0.0.1")), Some(&1));
        assert_eq!(t.len(), 1);
    }
}
