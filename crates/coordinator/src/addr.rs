//! Tailnet address allocation.
//!
//! **IPv4**: the lowest free address of `100.64.0.0/10`, skipping
//! - addresses whose last octet is 0 or 255 (they look like network and
//!   broadcast addresses to software that assumes /24s),
//! - `100.100.100.100`, the MagicDNS resolver (quad-100),
//! - `100.115.92.0/23`, the ChromeOS VM range that Tailscale's `*` in a packet
//!   filter leaves out (`../shared/protocol/filter.md`): a node there would
//!   not be matched by allow-all rules.
//!
//! The order is deterministic (lowest free first), so the first node is
//! `100.64.0.1` and a removed node's address is reused by the next new node.
//!
//! **IPv6**: derived from the IPv4 address exactly as Tailscale does
//! (`tsaddr.Tailscale4To6`): the prefix `fd7a:115c:a1e0:ab12:4843:cd96:62::/104`
//! followed by the low three octets of the IPv4 address, so `100.64.0.1`
//! gets `fd7a:115c:a1e0:ab12:4843:cd96:6240:1`. The mapping is one-to-one
//! inside `100.64.0.0/10`, so IPv6 addresses are unique whenever IPv4
//! addresses are, and clients map them back to the IPv4 name for PTR
//! lookups (`Tailscale6to4`, `../shared/protocol/magicdns.md` §3), which
//! sequential Headscale-style IPv6 addresses do not get.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The tailnet's IPv4 range, `100.64.0.0/10`, as (network, prefix length).
pub const TAILNET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(100, 64, 0, 0), 10);

/// The tailnet's IPv6 range, `fd7a:115c:a1e0::/48`, as (network, prefix length).
pub const TAILNET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0), 48);

/// The MagicDNS resolver's IPv4 address, never given to a node.
pub const MAGICDNS_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);

/// The first 13 bytes of every node's IPv6 address (`Tailscale4To6`'s /104).
const V6_PREFIX: [u8; 13] = [
    0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0xab, 0x12, 0x48, 0x43, 0xcd, 0x96, 0x62,
];

const V4_FIRST: u32 = 0x6440_0000; // 100.64.0.0
const V4_LAST: u32 = 0x647f_ffff; // 100.127.255.255
const CHROMEOS_FIRST: u32 = 0x6473_5c00; // 100.115.92.0
const CHROMEOS_LAST: u32 = 0x6473_5dff; // 100.115.93.255

/// Whether `addr` may be given to a node (see the module docs for the rules).
pub fn is_assignable_v4(addr: Ipv4Addr) -> bool {
    let n = u32::from(addr);
    let last = addr.octets()[3];
    (V4_FIRST..=V4_LAST).contains(&n)
        && last != 0
        && last != 255
        && addr != MAGICDNS_V4
        && !(CHROMEOS_FIRST..=CHROMEOS_LAST).contains(&n)
}

/// The node IPv6 address that goes with `v4` (Tailscale's `Tailscale4To6`).
pub fn v6_for_v4(v4: Ipv4Addr) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[..13].copy_from_slice(&V6_PREFIX);
    b[13..].copy_from_slice(&v4.octets()[1..]);
    Ipv6Addr::from(b)
}

/// The lowest assignable IPv4 address not in `used`, or `None` when the
/// range is full. `used` must be sorted ascending (as `u32`); addresses in
/// it outside the range are ignored.
pub fn lowest_free_v4(used: impl IntoIterator<Item = u32>) -> Option<Ipv4Addr> {
    let mut used = used.into_iter().peekable();
    let mut candidate = V4_FIRST;
    loop {
        if is_assignable_v4(Ipv4Addr::from(candidate)) {
            // Skip used addresses below the candidate.
            while used.next_if(|&u| u < candidate).is_some() {}
            if used.peek() != Some(&candidate) {
                return Some(Ipv4Addr::from(candidate));
            }
        }
        if candidate == V4_LAST {
            return None;
        }
        candidate += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().expect("test address"))
    }

    #[test]
    fn first_addresses() {
        assert_eq!(lowest_free_v4([]), Some(Ipv4Addr::new(100, 64, 0, 1)));
        assert_eq!(
            lowest_free_v4([v4("100.64.0.1"), v4("100.64.0.2")]),
            Some(Ipv4Addr::new(100, 64, 0, 3))
        );
        // A hole is filled first.
        assert_eq!(
            lowest_free_v4([v4("100.64.0.1"), v4("100.64.0.3")]),
            Some(Ipv4Addr::new(100, 64, 0, 2))
        );
    }

    #[test]
    fn skips_network_broadcast_quad100_and_chromeos() {
        let below =
            |last: &str| (v4("100.64.0.1")..=v4(last)).filter(|&n| is_assignable_v4(n.into()));
        assert_eq!(
            lowest_free_v4(below("100.64.0.254")),
            Some(Ipv4Addr::new(100, 64, 1, 1))
        );
        assert_eq!(
            lowest_free_v4(below("100.100.100.99")),
            Some(Ipv4Addr::new(100, 100, 100, 101))
        );
        assert_eq!(
            lowest_free_v4(below("100.115.91.254")),
            Some(Ipv4Addr::new(100, 115, 94, 1))
        );
        assert!(!is_assignable_v4(MAGICDNS_V4));
        assert!(!is_assignable_v4(Ipv4Addr::new(100, 115, 93, 7)));
        assert!(!is_assignable_v4(Ipv4Addr::new(100, 128, 0, 1)));
        assert!(!is_assignable_v4(Ipv4Addr::new(100, 63, 255, 254)));
        assert!(is_assignable_v4(Ipv4Addr::new(100, 127, 255, 254)));
    }

    #[test]
    fn full_range_is_none() {
        let all = (V4_FIRST..=V4_LAST).filter(|&n| is_assignable_v4(n.into()));
        assert_eq!(lowest_free_v4(all), None);
        // Out-of-range entries in `used` change nothing.
        assert_eq!(
            lowest_free_v4([1, 2, v4("100.64.0.1")]),
            Some(Ipv4Addr::new(100, 64, 0, 2))
        );
    }

    #[test]
    fn v6_matches_tailscale_4to6() {
        // The example in ../shared/protocol/control.md §8 and magicdns.md.
        assert_eq!(
            v6_for_v4(Ipv4Addr::new(100, 64, 0, 1)).to_string(),
            "fd7a:115c:a1e0:ab12:4843:cd96:6240:1"
        );
        assert_eq!(
            v6_for_v4(Ipv4Addr::new(100, 127, 255, 254)).to_string(),
            "fd7a:115c:a1e0:ab12:4843:cd96:627f:fffe"
        );
        let v6 = u128::from(v6_for_v4(Ipv4Addr::new(100, 99, 1, 2)));
        let net = u128::from(TAILNET_V6.0);
        assert_eq!(
            v6 >> (128 - 48),
            net >> (128 - 48),
            "inside fd7a:115c:a1e0::/48"
        );
    }
}
