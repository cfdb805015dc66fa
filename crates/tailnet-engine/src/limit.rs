//! Handshake initiations held to per-source budgets before they reach
//! boringtun's shared rate limiter, and the address a relayed source
//! stands in with for cookies.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tailnet_wire::PublicKey;

/// Where a datagram came from: a UDP address, or a peer through the relay.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Src {
    Udp(SocketAddr),
    Relay(PublicKey),
}

impl Src {
    /// The address boringtun's cookies are bound to. A relayed packet has
    /// none, and boringtun refuses every address-less handshake while it
    /// is under load, so one flooder cut every relay-only peer off
    /// (issue 16); a relayed source stands in as an address made from its
    /// node key (cookie replies go back through the relay to that key).
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match self {
            Src::Udp(a) => Some(a.ip()),
            Src::Relay(k) => Some(relay_cookie_addr(k)),
        }
    }
}

/// The stand-in address of a relayed source for cookies: the first 16
/// bytes of its node key as an IPv6 address (never dialled).
pub(crate) fn relay_cookie_addr(key: &PublicKey) -> IpAddr {
    let mut b = [0u8; 16];
    b.copy_from_slice(&key.as_bytes()[..16]);
    IpAddr::V6(std::net::Ipv6Addr::from(b))
}

/// Handshake initiations accepted from one relayed source key: a steady
/// rate and a burst. A legitimate peer sends one every few seconds at
/// most; beyond this they are dropped before the shared rate limiter, so
/// one key cannot push it under load for everyone.
const RELAY_HANDSHAKES_PER_SEC: f64 = 5.0;
const RELAY_HANDSHAKE_BURST: f64 = 10.0;
/// Handshake initiations accepted from one UDP source address (an IPv6
/// one by its /64) while the node is under load: wireguard-go's
/// `ratelimiter` numbers (20 a second, burst 5). Unlike a relayed key, an
/// address can be shared by many peers behind one NAT, so it is only
/// limited under load, as wireguard-go does.
const UDP_HANDSHAKES_PER_SEC: f64 = 20.0;
const UDP_HANDSHAKE_BURST: f64 = 5.0;
/// UDP initiations a second (all sources) past which the node is under
/// load and each source is held to its budget: half of what the shared
/// limiter takes before it demands cookies, so one source is held back
/// before everyone must do a cookie round trip (~5 s for a peer).
const UDP_HANDSHAKE_LOAD: u32 = 50;
/// Sources tracked at once; past it the table starts over.
const HANDSHAKE_SOURCES: usize = 4096;

/// Where a handshake initiation came from, for its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum HandshakeSource {
    /// Through the relay, from this node key.
    Relay(PublicKey),
    /// Over UDP from this address (an IPv6 address's last 64 bits zeroed).
    Udp(IpAddr),
}

impl HandshakeSource {
    fn udp(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut b = v6.octets();
                    b[8..].fill(0);
                    IpAddr::V6(b.into())
                }
            },
            ip => ip,
        };
        HandshakeSource::Udp(ip)
    }

    fn budget(&self) -> (f64, f64) {
        match self {
            HandshakeSource::Relay(_) => (RELAY_HANDSHAKES_PER_SEC, RELAY_HANDSHAKE_BURST),
            HandshakeSource::Udp(_) => (UDP_HANDSHAKES_PER_SEC, UDP_HANDSHAKE_BURST),
        }
    }
}

/// Per-source token buckets for handshake initiations.
#[derive(Default)]
pub(crate) struct HandshakeLimit {
    buckets: HashMap<HandshakeSource, (f64, Instant)>,
    /// UDP initiations seen since the last [`HandshakeLimit::new_second`].
    udp_this_second: u32,
}

impl HandshakeLimit {
    /// A relayed initiation: always held to its key's budget.
    pub(crate) fn allow_relayed(&mut self, key: PublicKey, now: Instant) -> bool {
        self.allow(HandshakeSource::Relay(key), now)
    }

    /// A UDP initiation: held to its address's budget under load.
    pub(crate) fn allow_udp(&mut self, from: SocketAddr, now: Instant) -> bool {
        self.udp_this_second = self.udp_this_second.saturating_add(1);
        let src = HandshakeSource::udp(from);
        if self.udp_this_second <= UDP_HANDSHAKE_LOAD {
            // Not under load: the source's bucket still fills and drains,
            // so a flooder starts the loaded second with its debt.
            self.allow(src, now);
            return true;
        }
        self.allow(src, now)
    }

    /// The shared limiter's second turned over.
    pub(crate) fn new_second(&mut self) {
        self.udp_this_second = 0;
    }

    fn allow(&mut self, src: HandshakeSource, now: Instant) -> bool {
        if self.buckets.len() >= HANDSHAKE_SOURCES && !self.buckets.contains_key(&src) {
            self.buckets.clear();
        }
        let (rate, burst) = src.budget();
        let (tokens, at) = self.buckets.entry(src).or_insert((burst, now));
        let dt = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + dt * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One flooding key is held to its budget while another key, and the
    /// flooder after a pause, still get through.
    #[test]
    fn relayed_initiations_are_limited_per_source_key() {
        let mut lim = HandshakeLimit::default();
        let flooder = PublicKey::from_bytes([1; 32]);
        let peer = PublicKey::from_bytes([2; 32]);
        let t0 = crate::test_epoch();
        // 1,000 initiations in one second from the flooder.
        let passed = (0..1000)
            .filter(|i| lim.allow_relayed(flooder, t0 + Duration::from_millis(*i)))
            .count();
        assert!(passed <= 16, "{passed} of 1,000 passed");
        assert!(lim.allow_relayed(peer, t0 + Duration::from_millis(999)));
        assert!(lim.allow_relayed(flooder, t0 + Duration::from_secs(3)));
    }

    /// UDP sources: nothing is held back while the node sees few
    /// initiations (peers behind one NAT share an address); under load a
    /// flooding address is held to 20 a second while another address,
    /// and an IPv6 flooder's whole /64, are told apart.
    #[test]
    fn udp_initiations_are_limited_per_source_address_under_load() {
        let mut lim = HandshakeLimit::default();
        let t0 = crate::test_epoch();
        let nat: SocketAddr = "198.51.100.7:1000".parse().expect("addr");
        // 40 from one address in a second: not under load, all pass.
        assert!((0..40).all(|i| lim.allow_udp(nat, t0 + Duration::from_millis(i * 25))));
        lim.new_second();
        // 5,000 in the next second from a flooder: it gets its budget.
        let flooder: SocketAddr = "203.0.113.9:4000".parse().expect("addr");
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..5000u64)
            .filter(|i| lim.allow_udp(flooder, t1 + Duration::from_micros(i * 200)))
            .count();
        assert!(passed <= 80, "{passed} of 5,000 passed");
        // Another address is served under the same load.
        let peer: SocketAddr = "192.0.2.1:41641".parse().expect("addr");
        assert!(lim.allow_udp(peer, t1 + Duration::from_millis(999)));
        // Addresses of one /64 share a budget; another /64 does not.
        let v6 = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let t2 = t1 + Duration::from_secs(1);
        let same = (0..200u16)
            .filter(|i| lim.allow_udp(v6(&format!("[2001:db8:1:2::{i:x}]:{}", 1000 + i)), t2))
            .count();
        assert!(same <= 5, "{same} of one /64 passed");
        assert!(lim.allow_udp(v6("[2001:db8:1:3::1]:1"), t2));
    }

    #[test]
    fn relayed_sources_get_distinct_cookie_addresses() {
        let a = Src::Relay(PublicKey::from_bytes([1; 32])).ip();
        let b = Src::Relay(PublicKey::from_bytes([2; 32])).ip();
        assert!(a.is_some() && b.is_some());
        assert_ne!(a, b);
    }
}
