//! Outbound: the netstack's packets to peers, and every tunnel's timers.

use crate::disco::send_actions;
use crate::engine::Engine;
use crate::peer::relay_region;
use crate::peer::HANDSHAKE_INIT_LEN;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::TunnResult;
use std::sync::atomic::Ordering::Relaxed;
use tailnet_wire::path::Route;
use tailnet_wire::IpPacket;

/// Space boringtun needs around a packet: 32 bytes of header and tag and
/// up to 15 of padding.
const WG_OVERHEAD: usize = 48;

impl Engine {
    pub(crate) fn encapsulate(&mut self, pkt: &[u8]) {
        let now = self.now;
        let Some(dst) = IpPacket::destination(pkt) else {
            return;
        };
        // Never filtered; UDP flows are recorded so their replies pass.
        self.filter.outbound(pkt);
        let Some(index) = self.routes.lookup(dst).copied() else {
            self.drops.no_route.fetch_add(1, Relaxed);
            return;
        };
        self.ensure_tunnel(index);
        let Some(peer) = self.peers.get_mut(&index) else {
            return;
        };
        let route = match peer.disco.as_mut() {
            Some(d) if self.always_relay => Route {
                udp: None,
                relay: d.path.has_relay(),
                discover: false,
            },
            Some(d) => {
                let r = d.path.route(now);
                if r.discover {
                    d.path.discover(now, &mut self.actions);
                }
                r
            }
            None => Route {
                udp: peer.endpoint,
                relay: false,
                discover: false,
            },
        };
        let Some(tunn) = peer.tunn.as_mut() else {
            return;
        };
        let max = (pkt.len() + WG_OVERHEAD).max(HANDSHAKE_INIT_LEN);
        match route {
            Route {
                udp: Some(ep),
                relay,
                ..
            } => {
                // The hot path: sealed straight into the send buffer.
                let mut sent = None;
                self.out
                    .push_with(ep, max, |buf| match tunn.encapsulate(pkt, buf) {
                        TunnResult::WriteToNetwork(d) => {
                            sent = Some(d.len());
                            sent
                        }
                        // Done: queued in the tunnel until the handshake completes.
                        _ => None,
                    });
                if let Some(n) = sent {
                    peer.count_tx(n);
                    if relay {
                        if let Some(copy) = self.out.last() {
                            self.relay_out.push((peer.config.public_key, copy.to_vec()));
                        }
                    }
                }
            }
            Route {
                udp: None,
                relay: true,
                ..
            } => {
                let mut b = vec![0u8; max];
                if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(pkt, &mut b) {
                    let n = d.len();
                    b.truncate(n);
                    peer.count_tx(n);
                    self.relay_out.push((peer.config.public_key, b));
                }
            }
            Route {
                udp: None,
                relay: false,
                ..
            } => {
                // Still encapsulate, so the packet waits in the tunnel's
                // queue for a handshake the peer may start.
                let mut scratch = vec![0u8; max];
                if let TunnResult::WriteToNetwork(_) = tunn.encapsulate(pkt, &mut scratch) {
                    self.drops.no_endpoint.fetch_add(1, Relaxed);
                }
            }
        }
        if !self.actions.is_empty() {
            if let Some(d) = peer.disco.as_deref() {
                send_actions(
                    &mut self.actions,
                    d,
                    peer.config.public_key,
                    self.node_key,
                    &self.endpoints,
                    &mut self.out,
                    &mut self.relay_out,
                );
            }
        }
    }

    pub(crate) fn run_timers(&mut self) {
        let now = self.now;
        for peer in self.peers.values_mut() {
            let route = match peer.disco.as_deref_mut() {
                Some(d) => {
                    d.path.on_timer(now, &mut self.actions);
                    if self.always_relay {
                        // No direct path is wanted: no pings, no CallMeMaybe.
                        self.actions.clear();
                    }
                    send_actions(
                        &mut self.actions,
                        d,
                        peer.config.public_key,
                        self.node_key,
                        &self.endpoints,
                        &mut self.out,
                        &mut self.relay_out,
                    );
                    let path = (
                        d.path.trusted_addr(now),
                        relay_region(&d.path, peer.config.home_derp, now),
                    );
                    *peer.counters.path.lock() = path;
                    if self.always_relay {
                        Route {
                            udp: None,
                            relay: d.path.has_relay(),
                            discover: false,
                        }
                    } else {
                        d.path.peek_route(now)
                    }
                }
                None => Route {
                    udp: peer.endpoint,
                    relay: false,
                    discover: false,
                },
            };
            let Some(tunn) = peer.tunn.as_mut() else {
                continue;
            };
            let mut buf = [0u8; 256];
            match tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(d) => {
                    if route.udp.is_none() && !route.relay {
                        self.drops.no_endpoint.fetch_add(1, Relaxed);
                    } else {
                        peer.count_tx(d.len());
                    }
                    if let Some(ep) = route.udp {
                        self.out.push(ep, d);
                    }
                    if route.relay {
                        self.relay_out.push((peer.config.public_key, d.to_vec()));
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    tracing::debug!(peer = %peer.config.public_key.short(), "session expired; next packet starts a handshake");
                }
                _ => {}
            }
            peer.note_handshake(now);
        }
    }
}
