//! Counters readable through the node API (and, later, as metrics).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use tailnet_netstack::NetstackStats;

pub use tailnet_engine::stats::{DropCounters, DropStats, PeerCounters, PeerStats};

/// The node's DERP relay connection (its home region).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// The home region (0: no relay, e.g. a static node or no DERP map).
    pub region: u32,
    /// Whether the relay accepted us and the connection is up.
    pub connected: bool,
    /// Connections established (the first and every reconnect).
    pub connects: u64,
    /// Packets handed to the relay.
    pub tx_packets: u64,
    /// Packets the relay connection could not take (down, queue full).
    pub tx_dropped: u64,
    /// Packets received through the relay.
    pub rx_packets: u64,
    /// Relay connections open: the home region's and those to peers'
    /// home regions, opened on demand and closed after 60 s unused.
    pub regions_open: u32,
}

#[derive(Debug, Default)]
pub(crate) struct RelayCounters {
    pub(crate) region: AtomicU32,
    pub(crate) connected: AtomicBool,
    pub(crate) connects: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_dropped: AtomicU64,
    pub(crate) rx_packets: AtomicU64,
    pub(crate) regions_open: AtomicU32,
}

impl RelayCounters {
    pub(crate) fn snapshot(&self) -> RelayStats {
        RelayStats {
            region: self.region.load(Relaxed),
            connected: self.connected.load(Relaxed),
            connects: self.connects.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_dropped: self.tx_dropped.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            regions_open: self.regions_open.load(Relaxed),
        }
    }
}

/// A snapshot of the whole node.
#[derive(Debug, Clone)]
pub struct NodeStats {
    /// One entry per configured peer.
    pub peers: Vec<PeerStats>,
    /// Data-plane drops by reason.
    pub drops: DropStats,
    /// Netstack counters.
    pub netstack: NetstackStats,
    /// The DERP relay connection.
    pub relay: RelayStats,
}
