//! A peer: its configuration, disco state and WireGuard session.

use crate::config::PeerConfig;
use crate::stats::PeerCounters;
use boringtun::noise::Tunn;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tailnet_wire::disco::DiscoBox;
use tailnet_wire::path::PeerPath;
use tailnet_wire::PublicKey;

/// A handshake initiation, the largest message without payload.
pub(crate) const HANDSHAKE_INIT_LEN: usize = 148;

/// A disco peer's box and path.
pub(crate) struct PeerDisco {
    pub(crate) key: PublicKey,
    pub(crate) sealer: DiscoBox,
    pub(crate) path: PeerPath,
}

pub(crate) struct Peer {
    pub(crate) config: PeerConfig,
    /// Path selection, for a peer with a disco key.
    pub(crate) disco: Option<Box<PeerDisco>>,
    /// Created on first use (a packet to send, a handshake to answer):
    /// a tunnel costs an X25519 and ~20 KiB, and most peers of a large
    /// netmap never exchange a packet with us.
    pub(crate) tunn: Option<Box<Tunn>>,
    pub(crate) index: u32,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) counters: Arc<PeerCounters>,
    pub(crate) last_handshake_age: Option<Duration>,
}

impl Peer {
    pub(crate) fn note_handshake(&mut self, now: Instant) {
        let age = self
            .tunn
            .as_ref()
            .and_then(|t| t.time_since_last_handshake());
        let fresh = match (age, self.last_handshake_age) {
            (Some(a), Some(prev)) => a < prev,
            (Some(_), None) => true,
            _ => false,
        };
        self.last_handshake_age = age;
        if let (true, Some(a)) = (fresh, age) {
            self.counters.handshakes.fetch_add(1, Relaxed);
            *self.counters.last_handshake.lock() = now.checked_sub(a);
        }
    }

    pub(crate) fn count_tx(&self, len: usize) {
        self.counters.tx_bytes.fetch_add(len as u64, Relaxed);
        self.counters.tx_packets.fetch_add(1, Relaxed);
    }
}

/// The relay region a disco peer's packets go through at `now` (0: direct
/// or no relay).
pub(crate) fn relay_region(path: &PeerPath, home: i32, now: Instant) -> i32 {
    if path.trusted_addr(now).is_none() && path.has_relay() {
        home
    } else {
        0
    }
}
