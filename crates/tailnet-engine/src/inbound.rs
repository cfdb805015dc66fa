//! Inbound: datagrams from the socket and packets from the relay, to
//! WireGuard, disco or STUN.

use crate::engine::{Engine, Event};
use crate::limit::Src;
use crate::peer::{Peer, HANDSHAKE_INIT_LEN};
use crate::stats::DropCounters;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, TunnResult};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use tailnet_wire::disco::{self, DatagramKind};
use tailnet_wire::filter::{Filter, Verdict};
use tailnet_wire::{classify, stun, PublicKey, WgKind};

/// WireGuard message type of a cookie reply.
const COOKIE_REPLY: u8 = 3;

impl Engine {
    pub(crate) fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        match disco::classify_datagram(data) {
            DatagramKind::WireGuard => {
                // An initiation from an address over its budget while the
                // node is under load never reaches the shared limiter.
                if data.len() == HANDSHAKE_INIT_LEN
                    && data.first() == Some(&1)
                    && !self.handshakes.allow_udp(from, self.now)
                {
                    self.drops.handshake_limited.fetch_add(1, Relaxed);
                    return;
                }
                self.on_wireguard(Src::Udp(from), data)
            }
            DatagramKind::Disco => self.on_disco(Src::Udp(from), data),
            DatagramKind::Stun => self.on_stun(from, data),
            // We speak no Geneve (peer relays).
            DatagramKind::Geneve => {
                self.drops.malformed.fetch_add(1, Relaxed);
            }
        }
    }

    /// A packet the relay delivered from the peer with node key `src`.
    pub(crate) fn on_relay(&mut self, src: PublicKey, data: &[u8]) {
        if disco::looks_like_disco(data) {
            self.on_disco(Src::Relay(src), data);
        } else {
            // A handshake initiation (type 1, 148 bytes) from a key over
            // its budget never reaches the shared limiter.
            if data.len() == HANDSHAKE_INIT_LEN
                && data.first() == Some(&1)
                && !self.handshakes.allow_relayed(src, self.now)
            {
                self.drops.handshake_limited.fetch_add(1, Relaxed);
                return;
            }
            self.on_wireguard(Src::Relay(src), data);
        }
    }

    /// Sends `data` back where `src` is.
    pub(crate) fn emit(&mut self, src: Src, data: &[u8]) {
        match src {
            Src::Udp(a) => self.out.push(a, data),
            Src::Relay(k) => self.relay_out.push((k, data.to_vec())),
        }
    }

    pub(crate) fn on_wireguard(&mut self, src: Src, data: &[u8]) {
        let now = self.now;
        let Some(msg) = classify(data) else {
            self.drops.malformed.fetch_add(1, Relaxed);
            return;
        };
        let index = match msg.kind {
            WgKind::HandshakeInitiation => match self.initiator_index(src, data) {
                Some(i) => i,
                None => return,
            },
            _ => {
                let idx = msg.receiver_index.unwrap_or(0) >> 8;
                if !self.peers.contains_key(&idx) {
                    self.drops.unknown_peer.fetch_add(1, Relaxed);
                    return;
                }
                idx
            }
        };
        if msg.kind == WgKind::HandshakeInitiation {
            self.ensure_tunnel(index);
        }
        let Some(peer) = self.peers.get_mut(&index) else {
            return;
        };
        let Some(tunn) = peer.tunn.as_mut() else {
            // Our index, but we never started a session with this peer.
            self.drops.unknown_peer.fetch_add(1, Relaxed);
            return;
        };
        let mut buf = vec![0u8; data.len().max(256)];
        let authenticated = match tunn.decapsulate(src.ip(), data, &mut buf) {
            // A keep-alive (authenticated) or a cookie reply (not).
            TunnResult::Done => msg.kind == WgKind::Data,
            TunnResult::Err(e) => {
                self.drops.rejected.fetch_add(1, Relaxed);
                tracing::trace!(peer = %peer.config.public_key.short(), error = ?e, "datagram rejected");
                return;
            }
            TunnResult::WriteToNetwork(reply) if reply.first() == Some(&COOKIE_REPLY) => {
                // Under load boringtun answers a handshake message with a
                // cookie reply without checking it: nothing authenticated
                // it, so it must not move the endpoint.
                match src {
                    Src::Udp(a) => self.out.push(a, reply),
                    Src::Relay(k) => self.relay_out.push((k, reply.to_vec())),
                }
                false
            }
            TunnResult::WriteToNetwork(reply) => {
                match src {
                    Src::Udp(a) => self.out.push(a, reply),
                    Src::Relay(k) => self.relay_out.push((k, reply.to_vec())),
                }
                // Packets queued while the handshake ran go out now.
                loop {
                    let mut more = false;
                    match src {
                        Src::Udp(from) => {
                            self.out.push_with(from, 65_535, |b| {
                                match tunn.decapsulate(None, &[], b) {
                                    TunnResult::WriteToNetwork(p) => {
                                        more = true;
                                        Some(p.len())
                                    }
                                    _ => None,
                                }
                            });
                        }
                        Src::Relay(k) => {
                            let mut b = vec![0u8; 65_535];
                            if let TunnResult::WriteToNetwork(p) =
                                tunn.decapsulate(None, &[], &mut b)
                            {
                                let n = p.len();
                                b.truncate(n);
                                self.relay_out.push((k, b));
                                more = true;
                            }
                        }
                    }
                    if !more {
                        break;
                    }
                }
                msg.kind != WgKind::CookieReply
            }
            TunnResult::WriteToTunnelV4(pkt, ip) => {
                let n = pkt.len();
                deliver(
                    peer,
                    IpAddr::V4(ip),
                    n,
                    buf,
                    &mut self.inbound,
                    &mut self.filter,
                    &self.drops,
                );
                true
            }
            TunnResult::WriteToTunnelV6(pkt, ip) => {
                let n = pkt.len();
                deliver(
                    peer,
                    IpAddr::V6(ip),
                    n,
                    buf,
                    &mut self.inbound,
                    &mut self.filter,
                    &self.drops,
                );
                true
            }
        };
        if authenticated {
            peer.counters.rx_bytes.fetch_add(data.len() as u64, Relaxed);
            peer.counters.rx_packets.fetch_add(1, Relaxed);
            if let (Src::Udp(from), None) = (src, &peer.disco) {
                if peer.endpoint != Some(from) {
                    // Roaming (plain WireGuard peers; disco peers move only
                    // on pongs): answer where the peer last spoke from.
                    peer.endpoint = Some(from);
                    *peer.counters.endpoint.lock() = Some(from);
                    *peer.counters.path.lock() = (Some(from), 0);
                }
            }
            if msg.kind != WgKind::Data {
                peer.note_handshake(now);
            }
        }
    }

    /// Finds the peer of a handshake initiation: MAC1 (and, under load, the
    /// cookie) first, so garbage never costs a Diffie-Hellman.
    pub(crate) fn initiator_index(&mut self, src: Src, data: &[u8]) -> Option<u32> {
        let mut cookie = [0u8; 64];
        match self.rate_limiter.verify_packet(src.ip(), data, &mut cookie) {
            Ok(Packet::HandshakeInit(init)) => {
                match parse_handshake_anon(&self.secret, &self.public, &init) {
                    Ok(half) => {
                        let key = PublicKey::from_bytes(half.peer_static_public);
                        let found = self.by_key.get(&key).copied();
                        if found.is_none() {
                            self.drops.unknown_peer.fetch_add(1, Relaxed);
                        }
                        found
                    }
                    Err(_) => {
                        self.drops.rejected.fetch_add(1, Relaxed);
                        None
                    }
                }
            }
            Err(TunnResult::WriteToNetwork(reply)) => {
                // Under load: the initiator must prove its address first.
                let reply = reply.to_vec();
                self.emit(src, &reply);
                None
            }
            _ => {
                self.drops.rejected.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// A STUN datagram: the response to one of our requests (from the
    /// server we asked, with its transaction ID), else dropped and counted
    /// as malformed.
    pub(crate) fn on_stun(&mut self, from: SocketAddr, data: &[u8]) {
        let found = self.stuns.iter().enumerate().find_map(|(i, p)| {
            if p.server != from {
                return None;
            }
            stun::parse_binding_response(data, &p.tx_id).map(|mapped| (i, mapped))
        });
        match found {
            Some((i, mapped)) => {
                let p = self.stuns.swap_remove(i);
                self.events.push_back(Event::StunMapped {
                    id: p.id,
                    addr: mapped,
                });
            }
            None => {
                self.drops.malformed.fetch_add(1, Relaxed);
            }
        }
    }
}

fn deliver(
    peer: &Peer,
    src: IpAddr,
    len: usize,
    mut buf: Vec<u8>,
    inbound: &mut Vec<Vec<u8>>,
    filter: &mut Filter,
    drops: &DropCounters,
) {
    // Cryptokey routing: a peer may only send from its allowed IPs.
    if !peer
        .config
        .allowed_ips
        .iter()
        .any(|n: &IpNet| n.contains(&src))
    {
        drops.bad_source.fetch_add(1, Relaxed);
        return;
    }
    buf.truncate(len);
    // The ACL packet filter: new inbound flows only where a rule allows.
    if let Verdict::Drop(reason) = filter.inbound(&buf) {
        drops.filtered(reason);
        tracing::trace!(peer = %peer.config.public_key.short(), %src, %reason, "packet filtered");
        return;
    }
    inbound.push(buf);
}
