//! Disco: pings, pongs and CallMeMaybe, the user's pings, and what a
//! path asks to send.

use crate::engine::{Engine, Event, PendingPing, PingError, Pong, RequestId, MAX_PENDING_PINGS};
use crate::limit::Src;
use crate::out::Outgoing;
use crate::peer::{relay_region, PeerDisco};
use rand_core::RngCore;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use tailnet_wire::disco::{self, Message};
use tailnet_wire::path::{Action, PongOutcome};
use tailnet_wire::PublicKey;

/// The address magicsock gives the relay in pongs it answers over DERP
/// (`127.3.3.40:<region>`, Go's `tailcfg.DerpMagicIPAddr`).
const DERP_MAGIC_IP: Ipv4Addr = Ipv4Addr::new(127, 3, 3, 40);

impl Engine {
    /// Sends a disco ping to the peer routing `ip`: to its trusted direct
    /// address, or else to every direct candidate and through the relay;
    /// the first pong is reported with the returned id.
    pub(crate) fn send_ping(&mut self, ip: IpAddr) -> Result<RequestId, PingError> {
        let index = self
            .routes
            .lookup(ip)
            .copied()
            .ok_or(PingError::UnknownPeer)?;
        let id = self.request_id();
        let now = self.now;
        let node_key = self.node_key;
        let peer = self.peers.get_mut(&index).ok_or(PingError::UnknownPeer)?;
        let d = peer.disco.as_deref_mut().ok_or(PingError::PlainWireGuard)?;
        let direct: Vec<SocketAddr> = match d.path.trusted_addr(now) {
            _ if self.always_relay => Vec::new(),
            Some(a) => vec![a],
            None => d.path.candidates().collect(),
        };
        let relay = d.path.has_relay() && d.path.trusted_addr(now).is_none();
        if direct.is_empty() && !relay {
            return Err(PingError::Unreachable);
        }
        let rng = &mut self.rng;
        let mut seal = |d: &mut PeerDisco| {
            let mut tx_id = [0u8; 12];
            rng.fill_bytes(&mut tx_id);
            let pkt = d.sealer.seal_random(&Message::Ping(disco::Ping {
                tx_id,
                node_key: Some(node_key),
                padding: 0,
            }));
            (tx_id, pkt)
        };
        let mut tx_ids = Vec::with_capacity(direct.len() + 1);
        for to in direct {
            let (tx_id, pkt) = seal(d);
            // Its pong updates the path like disco's own pings do.
            d.path.note_ping(to, tx_id, now);
            self.out.push(to, &pkt);
            tx_ids.push(tx_id);
        }
        if relay {
            let (tx_id, pkt) = seal(d);
            self.relay_out.push((peer.config.public_key, pkt));
            tx_ids.push(tx_id);
        }
        if self.pings.len() >= MAX_PENDING_PINGS {
            let old = self.pings.remove(0);
            self.events.push_back(Event::PingExpired(old.id));
        }
        self.pings.push(PendingPing {
            id,
            tx_ids,
            peer: peer.config.public_key,
            sent: now,
        });
        Ok(id)
    }

    /// A disco packet from `src`: only from a peer's disco key, only if
    /// its box opens.
    pub(crate) fn on_disco(&mut self, src: Src, data: &[u8]) {
        let index = disco::sender_key(data).and_then(|k| self.by_disco.get(&k).copied());
        let Some(peer) = index.and_then(|i| self.peers.get_mut(&i)) else {
            self.drops.disco_rejected.fetch_add(1, Relaxed);
            return;
        };
        let peer_key = peer.config.public_key;
        let home = peer.config.home_derp;
        let Some(d) = peer.disco.as_mut() else {
            self.drops.disco_rejected.fetch_add(1, Relaxed);
            return;
        };
        if let Src::Relay(k) = src {
            // Over the relay the sender's node key must be the peer's whose
            // disco key this is.
            if k != peer_key {
                self.drops.disco_rejected.fetch_add(1, Relaxed);
                return;
            }
        }
        let msg = match d.sealer.open(data) {
            Ok(m) => m,
            Err(e) => {
                self.drops.disco_rejected.fetch_add(1, Relaxed);
                tracing::trace!(peer = %peer_key.short(), error = %e, "disco packet dropped");
                return;
            }
        };
        let now = self.now;
        match msg {
            Message::Ping(ping) => {
                let observed = match src {
                    Src::Udp(from) => {
                        if !d.path.on_ping(from, ping.tx_id) {
                            return; // a repeat: Go answers it once
                        }
                        from
                    }
                    Src::Relay(_) => {
                        SocketAddr::new(IpAddr::V4(DERP_MAGIC_IP), u16::try_from(home).unwrap_or(0))
                    }
                };
                let pong = d.sealer.seal_random(&Message::Pong(disco::Pong {
                    tx_id: ping.tx_id,
                    src: observed,
                }));
                tracing::trace!(peer = %peer_key.short(), ?src, "disco ping; pong sent");
                self.emit(src, &pong);
            }
            Message::Pong(pong) => {
                // Every pong of ours moves the path first, the user's
                // pings' too, so `status` shows the path `ping` reported.
                let outcome = d.path.on_pong(now, pong.tx_id, matches!(src, Src::Udp(_)));
                if let PongOutcome::Direct {
                    addr,
                    latency,
                    best_changed: true,
                } = outcome
                {
                    tracing::debug!(peer = %peer_key.short(), %addr, ?latency, "disco: direct path");
                }
                let path = (d.path.trusted_addr(now), relay_region(&d.path, home, now));
                *peer.counters.path.lock() = path;
                if let Some(i) = self
                    .pings
                    .iter()
                    .position(|p| p.peer == peer_key && p.tx_ids.contains(&pong.tx_id))
                {
                    let p = self.pings.swap_remove(i);
                    let (addr, region) = match src {
                        Src::Udp(a) => (Some(a), 0),
                        Src::Relay(_) => (None, home),
                    };
                    self.events.push_back(Event::Pong {
                        id: p.id,
                        pong: Pong {
                            peer: peer_key,
                            addr,
                            region,
                            rtt: now.saturating_duration_since(p.sent),
                        },
                    });
                }
            }
            Message::CallMeMaybe(cmm) => {
                // Only over the relay, as Go accepts it.
                if !matches!(src, Src::Relay(_)) {
                    self.drops.disco_rejected.fetch_add(1, Relaxed);
                    return;
                }
                d.path
                    .on_call_me_maybe(now, &cmm.endpoints, &mut self.actions);
                send_actions(
                    &mut self.actions,
                    d,
                    peer_key,
                    self.node_key,
                    &self.endpoints,
                    &mut self.out,
                    &mut self.relay_out,
                );
            }
        }
    }
}

/// Sends what a peer's path asked for (drained from `actions`): disco
/// pings over UDP, CallMeMaybe with our endpoints over the relay.
pub(crate) fn send_actions(
    actions: &mut Vec<Action>,
    d: &PeerDisco,
    peer_key: PublicKey,
    node_key: PublicKey,
    endpoints: &[SocketAddr],
    out: &mut Outgoing,
    relay_out: &mut Vec<(PublicKey, Vec<u8>)>,
) {
    for a in actions.drain(..) {
        match a {
            Action::Ping { to, tx_id } => {
                let pkt = d.sealer.seal_random(&Message::Ping(disco::Ping {
                    tx_id,
                    node_key: Some(node_key),
                    padding: 0,
                }));
                out.push(to, &pkt);
            }
            Action::CallMeMaybe => {
                let pkt = d
                    .sealer
                    .seal_random(&Message::CallMeMaybe(disco::CallMeMaybe {
                        endpoints: endpoints.to_vec(),
                    }));
                relay_out.push((peer_key, pkt));
            }
        }
    }
}
