//! Counters the engine keeps, shared (atomics) with the shell that reports
//! them, and their snapshots.

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime};
use tailnet_wire::filter::DropReason;
use tailnet_wire::PublicKey;

/// A snapshot of one peer's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub public_key: PublicKey,
    /// WireGuard bytes received from it (datagram sizes).
    pub rx_bytes: u64,
    /// WireGuard bytes sent to it.
    pub tx_bytes: u64,
    /// Datagrams received from it.
    pub rx_packets: u64,
    /// Datagrams sent to it.
    pub tx_packets: u64,
    /// When the last handshake completed, if one has.
    pub last_handshake: Option<SystemTime>,
    /// Completed handshakes (the first one and every rekey).
    pub handshakes: u64,
    /// Where its packets go now (roams to the last authenticated source).
    pub endpoint: Option<SocketAddr>,
    /// The direct path in use: for a disco peer the best address while a
    /// pong keeps it trusted (`None` otherwise); for a plain WireGuard peer
    /// its endpoint.
    pub cur_addr: Option<SocketAddr>,
    /// The relay region carrying its packets (its home DERP region), 0
    /// when they go direct or there is no relay.
    pub relay_region: i32,
}

/// Datagrams and packets the data plane dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropStats {
    /// Datagrams that are not WireGuard messages (wrong type or length).
    pub malformed: u64,
    /// Well-formed messages for no peer we know (unknown index or key).
    pub unknown_peer: u64,
    /// Messages boringtun rejected: bad MAC or tag, replayed counter or
    /// timestamp, expired session. Includes the second copy of packets a
    /// disco peer sends both direct and through the relay while its
    /// direct path is unproven.
    pub rejected: u64,
    /// Decrypted packets whose source is outside the peer's allowed IPs.
    pub bad_source: u64,
    /// Outbound packets whose destination no peer's allowed IPs cover.
    pub no_route: u64,
    /// Outbound datagrams for a peer with no known endpoint yet.
    pub no_endpoint: u64,
    /// Datagrams the UDP socket refused to send, and packets the relay
    /// could not take (its queue full or gone).
    pub send_errors: u64,
    /// Disco packets dropped: from a disco key no peer has, a box that
    /// does not open, a message that does not parse, or a CallMeMaybe
    /// that did not come through the relay.
    pub disco_rejected: u64,
    /// Packet filter: new inbound flows no rule allows (also every new
    /// flow before control sent a filter, and under an empty one).
    pub filter_no_rule: u64,
    /// Packet filter: a rule admits the source and port, but not this
    /// protocol.
    pub filter_protocol: u64,
    /// Packet filter: the destination is not one of the node's addresses.
    pub filter_not_local: u64,
    /// Packet filter: multicast or link-local destination.
    pub filter_special_destination: u64,
    /// Packet filter: not parseable, or a transport header cut short.
    pub filter_malformed: u64,
    /// Handshake initiations through the relay from one source key beyond
    /// its rate (5 a second, burst 10), dropped before the shared
    /// handshake rate limiter so one key cannot starve the others.
    pub handshake_limited: u64,
}

impl DropStats {
    /// Every packet the packet filter dropped, whatever the reason.
    pub fn filtered(&self) -> u64 {
        self.filter_no_rule
            + self.filter_protocol
            + self.filter_not_local
            + self.filter_special_destination
            + self.filter_malformed
    }
}

/// The drop counters the engine bumps (shared with whoever reads them).
#[derive(Debug, Default)]
pub struct DropCounters {
    pub malformed: AtomicU64,
    pub unknown_peer: AtomicU64,
    pub rejected: AtomicU64,
    pub bad_source: AtomicU64,
    pub no_route: AtomicU64,
    pub no_endpoint: AtomicU64,
    pub send_errors: AtomicU64,
    pub disco_rejected: AtomicU64,
    pub filter_no_rule: AtomicU64,
    pub filter_protocol: AtomicU64,
    pub filter_not_local: AtomicU64,
    pub filter_special_destination: AtomicU64,
    pub filter_malformed: AtomicU64,
    pub handshake_limited: AtomicU64,
}

impl DropCounters {
    pub fn snapshot(&self) -> DropStats {
        DropStats {
            malformed: self.malformed.load(Relaxed),
            unknown_peer: self.unknown_peer.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            bad_source: self.bad_source.load(Relaxed),
            no_route: self.no_route.load(Relaxed),
            no_endpoint: self.no_endpoint.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            disco_rejected: self.disco_rejected.load(Relaxed),
            filter_no_rule: self.filter_no_rule.load(Relaxed),
            filter_protocol: self.filter_protocol.load(Relaxed),
            filter_not_local: self.filter_not_local.load(Relaxed),
            filter_special_destination: self.filter_special_destination.load(Relaxed),
            filter_malformed: self.filter_malformed.load(Relaxed),
            handshake_limited: self.handshake_limited.load(Relaxed),
        }
    }

    /// Counts one packet the filter dropped.
    pub(crate) fn filtered(&self, reason: DropReason) {
        let c = match reason {
            DropReason::NoRule => &self.filter_no_rule,
            DropReason::Protocol => &self.filter_protocol,
            DropReason::NotLocal => &self.filter_not_local,
            DropReason::SpecialDestination => &self.filter_special_destination,
            // Malformed, and any reason added later.
            _ => &self.filter_malformed,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// One peer's counters, shared with whoever reads them.
#[derive(Debug)]
pub struct PeerCounters {
    pub key: PublicKey,
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    pub handshakes: AtomicU64,
    /// When the last handshake completed, on the engine's clock.
    pub last_handshake: Mutex<Option<Instant>>,
    pub endpoint: Mutex<Option<SocketAddr>>,
    /// The path as status shows it: trusted direct address, relay region.
    pub path: Mutex<(Option<SocketAddr>, i32)>,
}

impl PeerCounters {
    pub fn new(key: PublicKey, endpoint: Option<SocketAddr>) -> Self {
        PeerCounters {
            key,
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            last_handshake: Mutex::new(None),
            endpoint: Mutex::new(endpoint),
            path: Mutex::new((endpoint, 0)),
        }
    }
    /// A snapshot. `anchor` and `anchor_wall` are one moment on the
    /// engine's clock and on the wall clock, to date the last handshake;
    /// a fixed pair dates it the same in every snapshot.
    pub fn snapshot(&self, anchor: Instant, anchor_wall: SystemTime) -> PeerStats {
        let (cur_addr, relay_region) = *self.path.lock();
        let last_handshake = self.last_handshake.lock().and_then(|at| {
            if at >= anchor {
                anchor_wall.checked_add(at - anchor)
            } else {
                anchor_wall.checked_sub(anchor - at)
            }
        });
        PeerStats {
            public_key: self.key,
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            last_handshake,
            handshakes: self.handshakes.load(Relaxed),
            endpoint: *self.endpoint.lock(),
            cur_addr,
            relay_region,
        }
    }
}
