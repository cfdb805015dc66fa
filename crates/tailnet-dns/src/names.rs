//! Name text: the lowercase, dot-less-at-the-end keys the zone uses,
//! reverse names, and resolver addresses.

use std::net::{IpAddr, SocketAddr};

/// A name as the zone keys it: ASCII lowercase, no trailing dot, `""` for
/// the root. `None` when it is not a plausible DNS name (empty labels,
/// labels over 63 bytes, names over 253 bytes, bytes outside
/// `[a-z0-9_-]`).
pub(crate) fn key(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_suffix('.').unwrap_or(t);
    if t.is_empty() {
        return Some(String::new());
    }
    if t.len() > 253 {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    if lower.split('.').all(valid_label) {
        Some(lower)
    } else {
        None
    }
}

/// A label of letters, digits, `-` and `_`, 1 to 63 bytes.
pub(crate) fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `name` is `zone` or below it (both keys).
pub(crate) fn under(name: &str, zone: &str) -> bool {
    if zone.is_empty() {
        return true;
    }
    name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

/// The first label of a key.
pub(crate) fn first_label(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// The reverse name of an address as a key: `4.3.2.1.in-addr.arpa` or the
/// 32 nibbles under `ip6.arpa`.
pub(crate) fn reverse_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(72);
            for b in a.octets().iter().rev() {
                for n in [b & 0xf, b >> 4] {
                    s.push(char::from_digit(u32::from(n), 16).unwrap_or('0'));
                    s.push('.');
                }
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The reverse zones of the tailnet ranges: `64.100.in-addr.arpa` …
/// `127.100.in-addr.arpa` (100.64.0.0/10) and the zone of
/// fd7a:115c:a1e0::/48.
pub(crate) fn tailnet_reverse_zones() -> Vec<String> {
    let mut v: Vec<String> = (64..=127)
        .map(|n| format!("{n}.100.in-addr.arpa"))
        .collect();
    v.push("0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa".to_string());
    v
}

/// A resolver's `Addr` as a UDP address: `1.1.1.1` (port 53),
/// `1.1.1.1:5353`, `2001:db8::1`, `[2001:db8::1]:53`. DoH URLs and other
/// forms give `None` (not supported).
pub(crate) fn resolver_addr(text: &str) -> Option<SocketAddr> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    t.parse::<SocketAddr>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lowercase_without_the_dot() {
        assert_eq!(key("Foo.Example.").as_deref(), Some("foo.example"));
        assert_eq!(key(".").as_deref(), Some(""));
        assert_eq!(key("a..b"), None);
        assert_eq!(key("a b"), None);
        assert_eq!(key(&"a".repeat(64)), None);
    }

    #[test]
    fn under_is_by_label() {
        assert!(under("a.ts.net", "ts.net"));
        assert!(under("ts.net", "ts.net"));
        assert!(!under("ats.net", "ts.net"));
        assert!(under("x", ""));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_key("100.64.0.1".parse().unwrap()),
            "1.0.64.100.in-addr.arpa"
        );
        assert_eq!(
            reverse_key("fd7a:115c:a1e0::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa"
        );
        let r = reverse_key("fd7a:115c:a1e0::1".parse().unwrap());
        assert!(under(&r, tailnet_reverse_zones().last().unwrap()));
    }

    #[test]
    fn resolver_addresses() {
        assert_eq!(resolver_addr("1.1.1.1"), "1.1.1.1:53".parse().ok());
        assert_eq!(resolver_addr("1.1.1.1:5353"), "1.1.1.1:5353".parse().ok());
        assert_eq!(
            resolver_addr("2001:db8::1"),
            "[2001:db8::1]:53".parse().ok()
        );
        assert_eq!(resolver_addr("[::1]:5300"), "[::1]:5300".parse().ok());
        assert_eq!(resolver_addr("https://dns.example/dns-query"), None);
    }
}
