//! The data plane: one task per node that moves packets between the UDP
//! socket, the peers' WireGuard tunnels and the netstack.
//!
//! Inbound: datagram → classify (type, receiver index) → peer (by index, or
//! by static key for initiations after a MAC1 check) → boringtun decrypts →
//! source checked against the peer's allowed IPs → packet filter (new
//! inbound flows need an ACL rule; `tailnet_wire::filter`) → netstack.
//! Outbound: netstack emits an IP packet (UDP flows are recorded for the
//! filter) → longest-prefix match on allowed IPs picks the peer → boringtun
//! encrypts straight into the send buffer (or queues it and starts a
//! handshake) → the peer's endpoint → GSO send.
//! Timers: every [`TICK`] each tunnel's timers run whether or not traffic
//! flows, so idle tunnels rekey, keep alive and expire on time.

use crate::config::PeerConfig;
use crate::stats::{DropCounters, PeerCounters};
use crate::udp::{Outgoing, Udp};
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
use tailnet_wire::filter::{Filter, Rules, Verdict};
use tailnet_wire::{classify, IpPacket, PrefixTable, PublicKey, WgKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// At most this many new peers with endpoints in one peer-set update
/// handshake at once; more stay lazy (see `Tunnels::set_peers`).
const EAGER_HANDSHAKE_MAX: usize = 16;

/// How often every tunnel's timers run (boringtun's own device uses 250 ms).
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Handshake messages counted per second before cookies are demanded. Each
/// initiation is counted twice (our peer lookup checks MAC1 and load, then
/// boringtun checks again through the same limiter), so this allows about
/// 100 initiations a second.
const HANDSHAKE_RATE_LIMIT: u64 = 200;
/// Decrypted packets gathered before the netstack gets a turn.
const INBOUND_BATCH: usize = 256;
/// Receive batches handled before other work gets a turn.
const RECV_ROUNDS: usize = 64;
/// Space boringtun needs around a packet: 32 bytes of header and tag and
/// up to 15 of padding.
const WG_OVERHEAD: usize = 48;
/// WireGuard message type of a cookie reply.
const COOKIE_REPLY: u8 = 3;
/// A handshake initiation, the largest message without payload.
const HANDSHAKE_INIT_LEN: usize = 148;

pub(crate) enum Command {
    SetPeers(Vec<PeerConfig>),
    /// New packet-filter rules (`None`: accept everything). Flows already
    /// recorded are kept.
    SetFilter(Option<Arc<Rules>>),
    Shutdown,
}

/// Peer counters shared with the node handle.
pub(crate) type PeerTable = Arc<RwLock<Vec<Arc<PeerCounters>>>>;

struct Peer {
    config: PeerConfig,
    /// Created on first use (a packet to send, a handshake to answer):
    /// a tunnel costs an X25519 and ~20 KiB, and most peers of a large
    /// netmap never exchange a packet with us.
    tunn: Option<Box<Tunn>>,
    index: u32,
    endpoint: Option<SocketAddr>,
    counters: Arc<PeerCounters>,
    last_handshake_age: Option<Duration>,
}

impl Peer {
    fn note_handshake(&mut self) {
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
            *self.counters.last_handshake.lock() = SystemTime::now().checked_sub(a);
        }
    }

    fn count_tx(&self, len: usize) {
        self.counters.tx_bytes.fetch_add(len as u64, Relaxed);
        self.counters.tx_packets.fetch_add(1, Relaxed);
    }
}

/// The peers and their tunnels: everything the packet paths touch except
/// the socket and the netstack, so a received batch can be processed in
/// place while the socket's buffers are borrowed.
struct Tunnels {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<PublicKey, u32>,
    routes: PrefixTable<u32>,
    next_index: u32,
    drops: Arc<DropCounters>,
    /// The ACL packet filter: checks decrypted packets before the netstack
    /// and records outbound UDP flows.
    filter: Filter,
    /// Decrypted packets for the netstack.
    inbound: Vec<Vec<u8>>,
    /// Encrypted datagrams for the socket.
    out: Outgoing,
}

pub(crate) struct DataPlane {
    udp: Udp,
    netstack: Netstack,
    tunnels: Tunnels,
    commands: mpsc::Receiver<Command>,
    peer_table: PeerTable,
    /// Packets the netstack emitted; handed back to it for reuse.
    outbound: Vec<Vec<u8>>,
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
            tunnels: Tunnels {
                rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
                secret,
                public,
                peers: HashMap::new(),
                by_key: HashMap::new(),
                routes: PrefixTable::new(),
                next_index: 1,
                drops,
                filter: Filter::allow_all(),
                inbound: Vec::new(),
                out: Outgoing::default(),
            },
            commands,
            peer_table,
            outbound: Vec::new(),
            netstack_deadline: Some(now),
            next_tick: now + TICK,
            next_limiter_reset: now + Duration::from_secs(1),
        };
        dp.set_peers(peers);
        dp
    }

    /// The packet filter in force from the first packet (default: accept
    /// everything).
    pub(crate) fn with_filter(mut self, filter: Filter) -> DataPlane {
        self.tunnels.filter = filter;
        self
    }

    /// Runs until shut down or the node handle is dropped.
    pub(crate) async fn run(mut self) {
        self.flush().await;
        loop {
            let wake = match self.netstack_deadline {
                Some(d) => d.min(self.next_tick),
                None => self.next_tick,
            };
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::SetPeers(p)) => self.set_peers(p),
                    Some(Command::SetFilter(rules)) => self.tunnels.filter.set_rules(rules),
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
                self.on_tick(now);
            }
            self.pump().await;
        }
        self.flush().await;
        tracing::debug!("data plane stopped");
    }

    async fn flush(&mut self) {
        if self.tunnels.out.is_empty() {
            return;
        }
        let failed = self.udp.send_all(&mut self.tunnels.out).await;
        if failed > 0 {
            self.tunnels.drops.send_errors.fetch_add(failed, Relaxed);
        }
    }

    /// Applies a new peer list: new peers get a tunnel, removed ones go,
    /// kept ones keep their sessions (flows through them are untouched).
    fn set_peers(&mut self, peers: Vec<PeerConfig>) {
        self.tunnels.set_peers(peers);
        let mut table: Vec<Arc<PeerCounters>> = self
            .tunnels
            .peers
            .values()
            .map(|p| p.counters.clone())
            .collect();
        table.sort_by_key(|c| c.key);
        *self.peer_table.write() = table;
    }

    /// Drains the socket in batches, decrypting in place and handing
    /// packets to the netstack every [`INBOUND_BATCH`] packets.
    async fn receive(&mut self) {
        for _ in 0..RECV_ROUNDS {
            let tunnels = &mut self.tunnels;
            match self
                .udp
                .try_recv(|from, data| tunnels.on_datagram(from, data))
            {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error");
                    break;
                }
            }
            self.flush().await;
            if self.tunnels.inbound.len() >= INBOUND_BATCH {
                self.pump().await;
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
                .process(now, &mut self.tunnels.inbound, &mut self.outbound);
            for pkt in &self.outbound {
                self.tunnels.encapsulate(pkt);
            }
            self.flush().await;
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
    }

    fn on_tick(&mut self, now: Instant) {
        self.next_tick = now + TICK;
        if now >= self.next_limiter_reset {
            self.tunnels.rate_limiter.reset_count();
            self.next_limiter_reset = now + Duration::from_secs(1);
        }
        self.tunnels.run_timers();
    }
}

impl Tunnels {
    fn alloc_index(&mut self) -> u32 {
        loop {
            let i = self.next_index & 0x00ff_ffff;
            self.next_index = self.next_index.wrapping_add(1);
            if i != 0 && !self.peers.contains_key(&i) {
                return i;
            }
        }
    }

    fn new_tunn(&self, key: &PublicKey, keepalive: Option<u16>, index: u32) -> Box<Tunn> {
        Box::new(Tunn::new(
            self.secret.clone(),
            x25519::PublicKey::from(*key.as_bytes()),
            None,
            keepalive,
            index,
            Some(self.rate_limiter.clone()),
        ))
    }

    /// Creates the tunnel of the peer at `index` if it has none.
    fn ensure_tunnel(&mut self, index: u32) {
        let Some(p) = self.peers.get(&index) else {
            return;
        };
        if p.tunn.is_some() {
            return;
        }
        let (key, keepalive) = (p.config.public_key, p.config.persistent_keepalive);
        let tunn = self.new_tunn(&key, keepalive, index);
        if let Some(p) = self.peers.get_mut(&index) {
            p.tunn = Some(tunn);
        }
    }

    fn set_peers(&mut self, peers: Vec<PeerConfig>) {
        let wanted: HashMap<PublicKey, PeerConfig> =
            peers.into_iter().map(|p| (p.public_key, p)).collect();
        // A small set of new peers with endpoints (a static configuration,
        // a few nodes joining) handshakes at once, so a node that restarted
        // on a new port is found without waiting for traffic. A large one
        // (a netmap of hundreds) stays lazy: tunnels appear with traffic.
        let new_with_endpoint = wanted
            .iter()
            .filter(|(k, c)| c.endpoint.is_some() && !self.by_key.contains_key(*k))
            .count();
        let eager = new_with_endpoint <= EAGER_HANDSHAKE_MAX;
        self.peers
            .retain(|_, p| wanted.contains_key(&p.config.public_key));
        self.by_key.retain(|k, _| wanted.contains_key(k));
        for (key, cfg) in wanted {
            if let Some(p) = self.by_key.get(&key).and_then(|i| self.peers.get_mut(i)) {
                if cfg.endpoint.is_some() && cfg.endpoint != p.config.endpoint {
                    p.endpoint = cfg.endpoint;
                    *p.counters.endpoint.lock() = cfg.endpoint;
                }
                p.config = cfg;
                continue;
            }
            let index = self.alloc_index();
            let mut tunn = None;
            if let (Some(ep), true) = (cfg.endpoint, eager) {
                // Handshake at once rather than on the first packet: a node
                // that restarted on a new port is found by peers that hold
                // a session to its old one, without waiting for traffic.
                let mut t = self.new_tunn(&key, cfg.persistent_keepalive, index);
                self.out.push_with(ep, HANDSHAKE_INIT_LEN, |buf| {
                    match t.format_handshake_initiation(buf, false) {
                        TunnResult::WriteToNetwork(d) => Some(d.len()),
                        _ => None,
                    }
                });
                tunn = Some(t);
            }
            let counters = Arc::new(PeerCounters::new(key, cfg.endpoint));
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
        let authenticated = match tunn.decapsulate(Some(from.ip()), data, &mut buf) {
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
                self.out.push(from, reply);
                false
            }
            TunnResult::WriteToNetwork(reply) => {
                self.out.push(from, reply);
                // Packets queued while the handshake ran go out now.
                let mut more = true;
                while more {
                    more = false;
                    self.out
                        .push_with(from, 65_535, |b| match tunn.decapsulate(None, &[], b) {
                            TunnResult::WriteToNetwork(p) => {
                                more = true;
                                Some(p.len())
                            }
                            _ => None,
                        });
                }
                msg.kind != WgKind::CookieReply
            }
            TunnResult::WriteToTunnelV4(pkt, src) => {
                let n = pkt.len();
                deliver(
                    peer,
                    IpAddr::V4(src),
                    n,
                    buf,
                    &mut self.inbound,
                    &mut self.filter,
                    &self.drops,
                );
                true
            }
            TunnResult::WriteToTunnelV6(pkt, src) => {
                let n = pkt.len();
                deliver(
                    peer,
                    IpAddr::V6(src),
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
            if peer.endpoint != Some(from) {
                // Roaming: answer where the peer last spoke from.
                peer.endpoint = Some(from);
                *peer.counters.endpoint.lock() = Some(from);
            }
            if msg.kind != WgKind::Data {
                peer.note_handshake();
            }
        }
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
                self.out.push(from, reply);
                None
            }
            _ => {
                self.drops.rejected.fetch_add(1, Relaxed);
                None
            }
        }
    }

    fn encapsulate(&mut self, pkt: &[u8]) {
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
        let Some(tunn) = peer.tunn.as_mut() else {
            return;
        };
        let max = (pkt.len() + WG_OVERHEAD).max(HANDSHAKE_INIT_LEN);
        match peer.endpoint {
            Some(ep) => {
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
                }
            }
            None => {
                // Still encapsulate, so the packet waits in the tunnel's
                // queue for a handshake the peer may start.
                let mut scratch = vec![0u8; max];
                if let TunnResult::WriteToNetwork(_) = tunn.encapsulate(pkt, &mut scratch) {
                    self.drops.no_endpoint.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn run_timers(&mut self) {
        for peer in self.peers.values_mut() {
            let Some(tunn) = peer.tunn.as_mut() else {
                continue;
            };
            let mut buf = [0u8; 256];
            match tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(d) => match peer.endpoint {
                    Some(ep) => {
                        peer.count_tx(d.len());
                        self.out.push(ep, d);
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
            peer.note_handshake();
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
