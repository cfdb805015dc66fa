//! The data plane: one task per node that moves packets between the UDP
//! socket, the peers' WireGuard tunnels and the netstack.
//!
//! Inbound: datagram → classify (type, receiver index) → peer (by index, or
//! by static key for initiations after a MAC1 check) → boringtun decrypts →
//! source checked against the peer's allowed IPs → netstack.
//! Outbound: netstack emits an IP packet → longest-prefix match on allowed
//! IPs picks the peer → boringtun encrypts (or queues it and starts a
//! handshake) → the peer's endpoint → batched UDP send.
//! Timers: every [`TICK`] each tunnel's timers run whether or not traffic
//! flows, so idle tunnels rekey, keep alive and expire on time.

use crate::config::PeerConfig;
use crate::stats::{DropCounters, PeerCounters};
use crate::udp::Udp;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use ipnet::IpNet;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet_netstack::Netstack;
use tailnet_wire::{classify, IpPacket, PrefixTable, PublicKey, WgKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often every tunnel's timers run (boringtun's own device uses 250 ms).
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Handshake initiations per second before cookies are demanded.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Datagrams processed before the netstack gets a turn.
const INBOUND_BATCH: usize = 256;
/// Space boringtun needs around a packet: 32 bytes of header and tag, up to
/// 15 of padding, and at least a handshake initiation (148 bytes).
const WG_OVERHEAD: usize = 48;

pub(crate) enum Command {
    SetPeers(Vec<PeerConfig>),
    Shutdown,
}

/// Peer counters shared with the node handle.
pub(crate) type PeerTable = Arc<RwLock<Vec<Arc<PeerCounters>>>>;

struct Peer {
    config: PeerConfig,
    tunn: Tunn,
    index: u32,
    endpoint: Option<SocketAddr>,
    counters: Arc<PeerCounters>,
    last_handshake_age: Option<Duration>,
}

pub(crate) struct DataPlane {
    udp: Udp,
    netstack: Netstack,
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<PublicKey, u32>,
    routes: PrefixTable<u32>,
    next_index: u32,
    commands: mpsc::Receiver<Command>,
    drops: Arc<DropCounters>,
    peer_table: PeerTable,
    inbound: Vec<Vec<u8>>,
    outbound: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    /// Datagrams to send, gathered while `self` is borrowed elsewhere.
    sends: Vec<(SocketAddr, Vec<u8>)>,
    netstack_deadline: Option<Instant>,
    next_tick: Instant,
    next_limiter_reset: Instant,
}

impl DataPlane {
    pub(crate) fn new(
        udp: Udp,
        netstack: Netstack,
        secret: [u8; 32],
        peers: Vec<PeerConfig>,
        commands: mpsc::Receiver<Command>,
        drops: Arc<DropCounters>,
        peer_table: PeerTable,
    ) -> DataPlane {
        let secret = x25519::StaticSecret::from(secret);
        let public = x25519::PublicKey::from(&secret);
        let now = Instant::now();
        let mut dp = DataPlane {
            udp,
            netstack,
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: PrefixTable::new(),
            next_index: 1,
            commands,
            drops,
            peer_table,
            inbound: Vec::new(),
            outbound: Vec::new(),
            scratch: vec![0u8; 65536],
            sends: Vec::new(),
            netstack_deadline: Some(now),
            next_tick: now + TICK,
            next_limiter_reset: now + Duration::from_secs(1),
        };
        dp.set_peers(peers);
        dp
    }

    /// Runs until shut down or the node handle is dropped.
    pub(crate) async fn run(mut self) {
        self.send_pending().await;
        loop {
            let wake = match self.netstack_deadline {
                Some(d) => d.min(self.next_tick),
                None => self.next_tick,
            };
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::SetPeers(p)) => {
                    self.set_peers(p);
                    self.send_pending().await;
                }
                    Some(Command::Shutdown) | None => break,
                },
                r = self.udp.readable() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "UDP socket failed; data plane stops");
                        break;
                    }
                    self.receive().await;
                }
                _ = self.netstack.wait_for_work() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.on_tick(now).await;
            }
            self.pump().await;
        }
        let _ = self.udp.flush().await;
        tracing::debug!("data plane stopped");
    }

    fn alloc_index(&mut self) -> u32 {
        loop {
            let i = self.next_index & 0x00ff_ffff;
            self.next_index = self.next_index.wrapping_add(1);
            if i != 0 && !self.peers.contains_key(&i) {
                return i;
            }
        }
    }

    /// Applies a new peer list: new peers get a tunnel, removed ones go,
    /// kept ones keep their sessions (flows through them are untouched).
    fn set_peers(&mut self, peers: Vec<PeerConfig>) {
        let wanted: HashMap<PublicKey, PeerConfig> =
            peers.into_iter().map(|p| (p.public_key, p)).collect();
        let gone: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| !wanted.contains_key(&p.config.public_key))
            .map(|(i, _)| *i)
            .collect();
        for i in gone {
            if let Some(p) = self.peers.remove(&i) {
                self.by_key.remove(&p.config.public_key);
            }
        }
        for (key, cfg) in wanted {
            if let Some(idx) = self.by_key.get(&key).copied() {
                if let Some(p) = self.peers.get_mut(&idx) {
                    if cfg.endpoint.is_some() && cfg.endpoint != p.config.endpoint {
                        p.endpoint = cfg.endpoint;
                        *p.counters.endpoint.lock() = cfg.endpoint;
                    }
                    p.config = cfg;
                }
                continue;
            }
            let index = self.alloc_index();
            let tunn = Tunn::new(
                self.secret.clone(),
                x25519::PublicKey::from(*key.as_bytes()),
                None,
                cfg.persistent_keepalive,
                index,
                Some(self.rate_limiter.clone()),
            );
            let counters = Arc::new(PeerCounters::new(key, cfg.endpoint));
            let mut tunn = tunn;
            if let Some(ep) = cfg.endpoint {
                // Handshake at once rather than on the first packet: a node
                // that restarted on a new port is found by peers that hold
                // a session to its old one, without waiting for traffic.
                let mut buf = vec![0u8; 256];
                if let TunnResult::WriteToNetwork(init) =
                    tunn.format_handshake_initiation(&mut buf, false)
                {
                    self.sends.push((ep, init.to_vec()));
                }
            }
            self.by_key.insert(key, index);
            self.peers.insert(
                index,
                Peer {
                    endpoint: cfg.endpoint,
                    config: cfg,
                    tunn,
                    index,
                    counters,
                    last_handshake_age: None,
                },
            );
        }
        self.routes = PrefixTable::new();
        for p in self.peers.values() {
            for net in &p.config.allowed_ips {
                self.routes.insert(*net, p.index);
            }
        }
        let mut table: Vec<Arc<PeerCounters>> =
            self.peers.values().map(|p| p.counters.clone()).collect();
        table.sort_by_key(|c| c.key);
        *self.peer_table.write() = table;
    }

    /// Drains the socket in batches, handing decrypted packets to the
    /// netstack every [`INBOUND_BATCH`] datagrams.
    async fn receive(&mut self) {
        let mut handled = 0usize;
        loop {
            let mut batch: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
            let r = self
                .udp
                .try_recv(|from, data| batch.push((from, data.to_vec())));
            match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error");
                    break;
                }
            }
            for (from, data) in batch {
                self.on_datagram(from, &data);
            }
            self.send_pending().await;
            handled += 1;
            if self.inbound.len() >= INBOUND_BATCH {
                self.pump().await;
            }
            if handled >= 64 {
                // Let the rest of the runtime breathe under a flood.
                break;
            }
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let Some(msg) = classify(data) else {
            self.drops.malformed.fetch_add(1, Relaxed);
            return;
        };
        let index = match msg.kind {
            WgKind::HandshakeInitiation => match self.initiator_index(from, data) {
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
        let Some(peer) = self.peers.get_mut(&index) else {
            return;
        };
        let mut buf = vec![0u8; data.len().max(256)];
        let authenticated;
        match peer.tunn.decapsulate(Some(from.ip()), data, &mut buf) {
            TunnResult::Done => {
                // A keep-alive (authenticated) or a cookie reply (not).
                authenticated = msg.kind == WgKind::Data;
            }
            TunnResult::Err(e) => {
                self.drops.rejected.fetch_add(1, Relaxed);
                tracing::trace!(peer = %peer.config.public_key.short(), error = ?e, "datagram rejected");
                return;
            }
            TunnResult::WriteToNetwork(reply) => {
                authenticated = msg.kind != WgKind::CookieReply;
                self.sends.push((from, reply.to_vec()));
                // Packets queued while the handshake ran go out now.
                loop {
                    let mut out = vec![0u8; 65536];
                    match peer.tunn.decapsulate(None, &[], &mut out) {
                        TunnResult::WriteToNetwork(p) => {
                            let n = p.len();
                            out.truncate(n);
                            self.sends.push((from, out));
                        }
                        _ => break,
                    }
                }
            }
            TunnResult::WriteToTunnelV4(pkt, src) => {
                let n = pkt.len();
                authenticated = true;
                Self::deliver(
                    peer,
                    IpAddr::V4(src),
                    n,
                    buf,
                    &mut self.inbound,
                    &self.drops,
                );
            }
            TunnResult::WriteToTunnelV6(pkt, src) => {
                let n = pkt.len();
                authenticated = true;
                Self::deliver(
                    peer,
                    IpAddr::V6(src),
                    n,
                    buf,
                    &mut self.inbound,
                    &self.drops,
                );
            }
        }
        if authenticated {
            peer.counters.rx_bytes.fetch_add(data.len() as u64, Relaxed);
            peer.counters.rx_packets.fetch_add(1, Relaxed);
            if peer.endpoint != Some(from) {
                // Roaming: answer where the peer last spoke from.
                peer.endpoint = Some(from);
                *peer.counters.endpoint.lock() = Some(from);
            }
            if msg.kind != WgKind::Data {
                Self::note_handshake(peer);
            }
        }
    }

    fn deliver(
        peer: &Peer,
        src: IpAddr,
        len: usize,
        mut buf: Vec<u8>,
        inbound: &mut Vec<Vec<u8>>,
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
        inbound.push(buf);
    }

    /// Finds the peer of a handshake initiation: MAC1 (and, under load, the
    /// cookie) first, so garbage never costs a Diffie-Hellman.
    fn initiator_index(&mut self, from: SocketAddr, data: &[u8]) -> Option<u32> {
        let mut cookie = [0u8; 64];
        match self
            .rate_limiter
            .verify_packet(Some(from.ip()), data, &mut cookie)
        {
            Ok(Packet::HandshakeInit(init)) => {
                match parse_handshake_anon(&self.secret, &self.public, &init) {
                    Ok(half) => {
                        let key = PublicKey::from_bytes(half.peer_static_public);
                        match self.by_key.get(&key) {
                            Some(i) => Some(*i),
                            None => {
                                self.drops.unknown_peer.fetch_add(1, Relaxed);
                                None
                            }
                        }
                    }
                    Err(_) => {
                        self.drops.rejected.fetch_add(1, Relaxed);
                        None
                    }
                }
            }
            Err(TunnResult::WriteToNetwork(reply)) => {
                // Under load: the initiator must prove its address first.
                self.sends.push((from, reply.to_vec()));
                None
            }
            _ => {
                self.drops.rejected.fetch_add(1, Relaxed);
                None
            }
        }
    }

    fn note_handshake(peer: &mut Peer) {
        let age = peer.tunn.time_since_last_handshake();
        let fresh = match (age, peer.last_handshake_age) {
            (Some(a), Some(prev)) => a < prev,
            (Some(_), None) => true,
            _ => false,
        };
        peer.last_handshake_age = age;
        if fresh {
            if let Some(a) = age {
                peer.counters.handshakes.fetch_add(1, Relaxed);
                *peer.counters.last_handshake.lock() = SystemTime::now().checked_sub(a);
            }
        }
    }

    /// Runs the netstack until it has nothing more to send right now, and
    /// encrypts and sends what it produced.
    async fn pump(&mut self) {
        loop {
            let now = Instant::now();
            let delay = self
                .netstack
                .process(now, &mut self.inbound, &mut self.outbound);
            let packets = std::mem::take(&mut self.outbound);
            for pkt in &packets {
                self.encapsulate(pkt);
            }
            self.outbound = packets;
            self.outbound.clear();
            self.send_pending().await;
            match delay {
                Some(d) if d.is_zero() => continue,
                Some(d) => {
                    self.netstack_deadline = Some(now + d);
                    break;
                }
                None => {
                    self.netstack_deadline = None;
                    break;
                }
            }
        }
        if let Err(e) = self.udp.flush().await {
            self.drops.send_errors.fetch_add(1, Relaxed);
            tracing::debug!(error = %e, "UDP send failed");
        }
    }

    fn encapsulate(&mut self, pkt: &[u8]) {
        let Some(dst) = IpPacket::destination(pkt) else {
            return;
        };
        let Some(index) = self.routes.lookup(dst).copied() else {
            self.drops.no_route.fetch_add(1, Relaxed);
            return;
        };
        let Some(peer) = self.peers.get_mut(&index) else {
            return;
        };
        let need = pkt.len() + WG_OVERHEAD;
        if self.scratch.len() < need.max(148) {
            self.scratch.resize(need.max(148), 0);
        }
        match peer.tunn.encapsulate(pkt, &mut self.scratch) {
            TunnResult::WriteToNetwork(d) => match peer.endpoint {
                Some(ep) => {
                    peer.counters.tx_bytes.fetch_add(d.len() as u64, Relaxed);
                    peer.counters.tx_packets.fetch_add(1, Relaxed);
                    self.sends.push((ep, d.to_vec()));
                }
                None => {
                    self.drops.no_endpoint.fetch_add(1, Relaxed);
                }
            },
            TunnResult::Done => {} // queued until the handshake completes
            TunnResult::Err(e) => {
                tracing::trace!(error = ?e, "encapsulate failed");
            }
            _ => {}
        }
    }

    async fn send_pending(&mut self) {
        for (dest, data) in std::mem::take(&mut self.sends) {
            if let Err(e) = self.udp.send(dest, &data).await {
                self.drops.send_errors.fetch_add(1, Relaxed);
                tracing::debug!(%dest, error = %e, "UDP send failed");
            }
        }
    }

    async fn on_tick(&mut self, now: Instant) {
        self.next_tick = now + TICK;
        if now >= self.next_limiter_reset {
            self.rate_limiter.reset_count();
            self.next_limiter_reset = now + Duration::from_secs(1);
        }
        let mut buf = vec![0u8; 256];
        for peer in self.peers.values_mut() {
            match peer.tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(d) => match peer.endpoint {
                    Some(ep) => {
                        peer.counters.tx_bytes.fetch_add(d.len() as u64, Relaxed);
                        peer.counters.tx_packets.fetch_add(1, Relaxed);
                        self.sends.push((ep, d.to_vec()));
                    }
                    None => {
                        self.drops.no_endpoint.fetch_add(1, Relaxed);
                    }
                },
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    tracing::debug!(peer = %peer.config.public_key.short(), "session expired; next packet starts a handshake");
                }
                _ => {}
            }
            Self::note_handshake(peer);
        }
        self.send_pending().await;
    }
}
