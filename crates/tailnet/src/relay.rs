//! The node's relay: a DERP client to its home region, bridged to the data
//! plane's [`RelayLink`].
//!
//! ```text
//! netmap DERPMap ─▶ home_region() ─▶ spawn_derp ─▶ DerpHandle
//!   data plane ─RelayLink.outbound─▶ bridge ─▶ DerpHandle::send (SendPacket)
//!   DerpEvent::Packet ─▶ bridge ─RelayLink.inbound─▶ data plane
//! ```
//!
//! The home region is the lowest-numbered region with a node we can dial
//! (our coordinator sends one region; Go picks by STUN latency, and falls
//! back to a fixed choice when it cannot measure). It is reported to
//! control as `Hostinfo.NetInfo.PreferredDERP`, which peers see as our
//! `HomeDERP`. We keep one connection, to the home region: a peer whose
//! home is another region is reached through ours only if that relay
//! knows it (Go connects to the peer's region on demand; not yet here).

use crate::dataplane::RelayLink;
use crate::derp::{spawn_derp, DerpEvent, DerpHandle, DerpTarget};
use crate::stats::RelayCounters;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tailnet_wire::control::{DerpMap, DerpNode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Packets buffered between the data plane and the DERP client, each way.
const LINK_QUEUE: usize = 1024;

/// The home region of `map`: its ID and the first node of it we can dial.
pub(crate) fn home_region(map: &DerpMap, tls: bool) -> Option<(u16, DerpNode)> {
    map.regions.as_ref()?.iter().find_map(|(id, region)| {
        let id = u16::try_from(*id).ok().filter(|i| *i > 0)?;
        let node = region
            .nodes
            .iter()
            .find(|n| DerpTarget::from_node(n, tls).is_some())?;
        Some((id, node.clone()))
    })
}

/// A running relay: the DERP client and the task that bridges it to the
/// data plane.
pub(crate) struct Relay {
    region: u16,
    node: DerpNode,
    handle: DerpHandle,
    bridge: JoinHandle<()>,
}

impl Relay {
    /// Connects to `node` of `region` and returns the link to hand the data
    /// plane. `None` if the node has nothing to dial.
    pub(crate) fn start(
        region: u16,
        node: &DerpNode,
        tls: bool,
        node_private: [u8; 32],
        counters: Arc<RelayCounters>,
    ) -> Option<(Relay, RelayLink)> {
        let target = DerpTarget::from_node(node, tls)?;
        let (events_tx, mut events) = mpsc::channel(LINK_QUEUE);
        let handle = spawn_derp(region, &target, node_private, events_tx);
        let (out_tx, mut out_rx) = mpsc::channel::<(tailnet_wire::PublicKey, Vec<u8>)>(LINK_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(LINK_QUEUE);
        let h = handle.clone();
        counters.region.store(u32::from(region), Relaxed);
        let bridge = tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = out_rx.recv() => match out {
                        Some((dst, data)) => {
                            if h.send(dst, data) {
                                counters.tx_packets.fetch_add(1, Relaxed);
                            } else {
                                counters.tx_dropped.fetch_add(1, Relaxed);
                            }
                        }
                        // The data plane stopped.
                        None => break,
                    },
                    ev = events.recv() => match ev {
                        Some(DerpEvent::Packet { src, data }) => {
                            counters.rx_packets.fetch_add(1, Relaxed);
                            if in_tx.send((src, data)).await.is_err() {
                                break;
                            }
                        }
                        Some(DerpEvent::Connected { region }) => {
                            counters.connected.store(true, Relaxed);
                            counters.connects.fetch_add(1, Relaxed);
                            tracing::info!(region, "DERP relay connected");
                        }
                        Some(DerpEvent::Disconnected { region, error }) => {
                            counters.connected.store(false, Relaxed);
                            tracing::warn!(region, %error, "DERP relay connection lost; reconnecting");
                        }
                        Some(DerpEvent::PeerGone { key, not_here }) => {
                            tracing::debug!(peer = %key.short(), not_here, "relay says peer is gone");
                        }
                        None => break,
                    },
                }
            }
            counters.connected.store(false, Relaxed);
        });
        Some((
            Relay {
                region,
                node: node.clone(),
                handle,
                bridge,
            },
            RelayLink {
                outbound: out_tx,
                inbound: in_rx,
            },
        ))
    }

    /// Whether this relay already serves `region` through `node`.
    pub(crate) fn serves(&self, region: u16, node: &DerpNode) -> bool {
        self.region == region && self.node == *node
    }

    /// Closes the DERP connection and stops the bridge.
    pub(crate) async fn shutdown(self) {
        self.bridge.abort();
        self.handle.shutdown().await;
    }
}
