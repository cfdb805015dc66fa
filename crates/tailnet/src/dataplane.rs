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
//!
//! Paths: a peer with a disco key has a [`PeerPath`] (sans-IO, in
//! `tailnet_wire::path`) that picks, per packet, the trusted direct UDP
//! address alone, or a direct candidate and the relay together while no
//! disco pong vouches for a direct path. Disco packets (one socket with
//! WireGuard; `tailnet_wire::disco::classify_datagram`) and relay packets
//! are handled here too. The relay is a channel pair ([`RelayLink`]): what
//! we hand it goes to a peer by node key; what it hands us is treated like
//! a datagram whose source is that node key. A peer without a disco key is
//! plain WireGuard: one endpoint that roams to the last authenticated
//! source.

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
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet_netstack::Netstack;
use tailnet_wire::disco::{self, DatagramKind, DiscoBox, Message};
use tailnet_wire::filter::{Filter, Rules, Verdict};
use tailnet_wire::path::{Action, PeerPath, PongOutcome, Route};
use tailnet_wire::{classify, stun, IpPacket, PrefixTable, PrivateKey, PublicKey, WgKind};
use tokio::sync::{mpsc, oneshot};
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

/// The address magicsock gives the relay in pongs it answers over DERP
/// (`127.3.3.40:<region>`, Go's `tailcfg.DerpMagicIPAddr`).
const DERP_MAGIC_IP: Ipv4Addr = Ipv4Addr::new(127, 3, 3, 40);

/// A relay (DERP) connection as the data plane sees it: a channel pair
/// carrying `(peer node key, packet)`.
///
/// What the node puts on `outbound` is for the peer with that node key
/// (the relay client sends it, e.g. `DerpHandle::send(key, data)`); what
/// arrives on `inbound` came from the peer with that node key (a DERP
/// `RecvPacket`). Packets are whole WireGuard or disco datagrams. The node
/// never waits for the relay: when `outbound` is full the packet is
/// dropped and counted (`send_errors`).
///
/// Inbound packets come in batches: what one read from a relay connection
/// brought. The data plane handles a batch before its TCP stack answers,
/// so a bulk transfer gets one ACK per batch rather than one per packet or
/// two (the batching GRO gives a kernel).
#[derive(Debug)]
pub struct RelayLink {
    /// Packets to peers, by node key.
    pub outbound: mpsc::Sender<(PublicKey, Vec<u8>)>,
    /// Packets from peers, by node key, in batches.
    pub inbound: mpsc::Receiver<RelayBatch>,
}

/// Packets relayed to us, each with its sender's node key.
pub type RelayBatch = Vec<(PublicKey, Vec<u8>)>;

pub(crate) enum Command {
    SetPeers(Vec<PeerConfig>),
    /// Attach (or detach) the relay.
    SetRelay(Option<RelayLink>),
    /// Our UDP endpoints, which CallMeMaybe tells peers.
    SetEndpoints(Vec<SocketAddr>),
    /// Test hook: drop every datagram to or from these addresses.
    BlockUdp(HashSet<SocketAddr>),
    /// New packet-filter rules (`None`: accept everything). Flows already
    /// recorded are kept.
    SetFilter(Option<Arc<Rules>>),
    /// A disco ping to the peer routing this tailnet address (`tailscale
    /// ping`); the first pong answers `reply`.
    Ping {
        ip: IpAddr,
        reply: oneshot::Sender<Result<Pong, PingError>>,
    },
    /// A STUN binding request to `server` from our socket; the mapped
    /// address in its response answers `reply`.
    Stun {
        server: SocketAddr,
        reply: oneshot::Sender<SocketAddr>,
    },
    Shutdown,
}

/// The first pong to a [`Command::Ping`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pong {
    pub(crate) peer: PublicKey,
    /// The UDP address that answered (`None`: through the relay).
    pub(crate) addr: Option<SocketAddr>,
    /// The relay region that carried it (0: direct).
    pub(crate) region: i32,
    pub(crate) rtt: Duration,
}

/// Why a [`Command::Ping`] could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PingError {
    /// No peer's allowed IPs cover the address.
    UnknownPeer,
    /// The peer has no disco key (plain WireGuard).
    PlainWireGuard,
    /// Neither a direct address nor a relay to send it by.
    Unreachable,
}

/// A ping of ours awaiting its pong.
struct PendingPing {
    /// One per destination (each direct address, the relay), as Go's
    /// `cliPing` sends a ping of its own to each.
    tx_ids: Vec<disco::TxId>,
    peer: PublicKey,
    sent: std::time::Instant,
    reply: oneshot::Sender<Result<Pong, PingError>>,
}

/// A STUN binding request of ours awaiting its response.
struct PendingStun {
    tx_id: stun::TxId,
    server: SocketAddr,
    sent: std::time::Instant,
    reply: oneshot::Sender<SocketAddr>,
}

/// STUN requests awaiting a response; the oldest is forgotten first.
const MAX_PENDING_STUN: usize = 8;
/// A STUN request unanswered this long is forgotten.
const STUN_EXPIRY: Duration = Duration::from_secs(5);

/// Pings awaiting a pong; the oldest is forgotten first.
const MAX_PENDING_PINGS: usize = 64;
/// A ping unanswered this long is forgotten (its caller has given up).
const PING_EXPIRY: Duration = Duration::from_secs(60);

/// Peer counters shared with the node handle.
pub(crate) type PeerTable = Arc<RwLock<Vec<Arc<PeerCounters>>>>;

/// A disco peer's box and path.
struct PeerDisco {
    key: PublicKey,
    sealer: DiscoBox,
    path: PeerPath,
}

/// Where a datagram came from: a UDP address, or a peer through the relay.
#[derive(Clone, Copy, Debug)]
enum Src {
    Udp(SocketAddr),
    Relay(PublicKey),
}

impl Src {
    /// The address boringtun's cookies are bound to. A relayed packet has
    /// none, and boringtun refuses every address-less handshake while it
    /// is under load, so one flooder cut every relay-only peer off
    /// (issue 16); a relayed source stands in as an address made from its
    /// node key (cookie replies go back through the relay to that key).
    fn ip(&self) -> Option<IpAddr> {
        match self {
            Src::Udp(a) => Some(a.ip()),
            Src::Relay(k) => Some(relay_cookie_addr(k)),
        }
    }
}

/// The stand-in address of a relayed source for cookies: the first 16
/// bytes of its node key as an IPv6 address (never dialled).
fn relay_cookie_addr(key: &PublicKey) -> IpAddr {
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
struct HandshakeLimit {
    buckets: HashMap<HandshakeSource, (f64, Instant)>,
    /// UDP initiations seen since the last [`HandshakeLimit::new_second`].
    udp_this_second: u32,
}

impl HandshakeLimit {
    /// A relayed initiation: always held to its key's budget.
    fn allow_relayed(&mut self, key: PublicKey, now: Instant) -> bool {
        self.allow(HandshakeSource::Relay(key), now)
    }

    /// A UDP initiation: held to its address's budget under load.
    fn allow_udp(&mut self, from: SocketAddr, now: Instant) -> bool {
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
    fn new_second(&mut self) {
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

struct Peer {
    config: PeerConfig,
    /// Path selection, for a peer with a disco key.
    disco: Option<Box<PeerDisco>>,
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
    /// Our node key (in disco pings).
    node_key: PublicKey,
    disco_private: PrivateKey,
    /// Peers by disco public key.
    by_disco: HashMap<PublicKey, u32>,
    /// A relay is attached.
    relay_attached: bool,
    /// Packets for the relay, sent at the next flush.
    relay_out: Vec<(PublicKey, Vec<u8>)>,
    /// Our UDP endpoints (CallMeMaybe).
    endpoints: Vec<SocketAddr>,
    /// Test hook: datagrams to or from these addresses are dropped.
    blocked: HashSet<SocketAddr>,
    /// Scratch for path actions.
    actions: Vec<Action>,
    /// `tailscale ping`s awaiting their pong.
    pings: Vec<PendingPing>,
    /// STUN requests awaiting their response.
    stuns: Vec<PendingStun>,
    rate_limiter: Arc<RateLimiter>,
    handshakes: HandshakeLimit,
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
    relay: Option<RelayLink>,
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        udp: Udp,
        netstack: Netstack,
        secret: [u8; 32],
        disco_private: PrivateKey,
        endpoints: Vec<SocketAddr>,
        peers: Vec<PeerConfig>,
        commands: mpsc::Receiver<Command>,
        drops: Arc<DropCounters>,
        peer_table: PeerTable,
    ) -> DataPlane {
        let now = Instant::now();
        let mut dp = DataPlane {
            udp,
            relay: None,
            netstack,
            tunnels: Tunnels::new(secret, disco_private, endpoints, drops),
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
                    Some(Command::SetRelay(link)) => {
                        self.tunnels.set_relay_attached(link.is_some());
                        self.relay = link;
                    }
                    Some(Command::SetEndpoints(eps)) => self.tunnels.endpoints = eps,
                    Some(Command::BlockUdp(addrs)) => self.tunnels.blocked = addrs,
                    Some(Command::Ping { ip, reply }) => {
                        self.tunnels.ping(ip, reply);
                        self.flush().await;
                    }
                    Some(Command::Stun { server, reply }) => {
                        self.tunnels.stun(server, reply);
                        self.flush().await;
                    }
                    Some(Command::Shutdown) | None => break,
                },
                batch = recv_relay(&mut self.relay) => match batch {
                    Some(batch) => {
                        let mut n = batch.len();
                        for (src, data) in batch {
                            self.tunnels.on_relay(src, &data);
                        }
                        // Drain what else is queued, a bounded batch.
                        while n < INBOUND_BATCH {
                            let Some(link) = self.relay.as_mut() else { break };
                            match link.inbound.try_recv() {
                                Ok(batch) => {
                                    n += batch.len();
                                    for (src, data) in batch {
                                        self.tunnels.on_relay(src, &data);
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        self.flush().await;
                    }
                    None => {
                        // The relay stopped: the node is shutting down or
                        // moved home (a new link follows). Its connection
                        // problems are the DERP client's to report.
                        tracing::info!("relay link closed");
                        self.relay = None;
                        self.tunnels.set_relay_attached(false);
                    }
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
        if !self.tunnels.relay_out.is_empty() {
            let mut failed = 0u64;
            for (dst, data) in self.tunnels.relay_out.drain(..) {
                let sent = match &self.relay {
                    Some(link) => link.outbound.try_send((dst, data)).is_ok(),
                    None => false,
                };
                if !sent {
                    failed += 1;
                }
            }
            if failed > 0 {
                self.tunnels.drops.send_errors.fetch_add(failed, Relaxed);
            }
        }
        if self.tunnels.out.is_empty() {
            return;
        }
        if !self.tunnels.blocked.is_empty() {
            let blocked = &self.tunnels.blocked;
            self.tunnels.out.retain(|dest| !blocked.contains(dest));
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
            let std_now = now.into_std();
            for pkt in &self.outbound {
                self.tunnels.encapsulate(pkt, std_now);
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
            self.tunnels.handshakes.new_second();
            self.next_limiter_reset = now + Duration::from_secs(1);
        }
        let now = now.into_std();
        self.tunnels.pings.retain(|p| {
            now.saturating_duration_since(p.sent) < PING_EXPIRY && !p.reply.is_closed()
        });
        self.tunnels.stuns.retain(|p| {
            now.saturating_duration_since(p.sent) < STUN_EXPIRY && !p.reply.is_closed()
        });
        self.tunnels.run_timers(now);
    }
}

/// The next packet from the relay; never ready without one.
async fn recv_relay(relay: &mut Option<RelayLink>) -> Option<RelayBatch> {
    match relay {
        Some(link) => link.inbound.recv().await,
        None => std::future::pending().await,
    }
}

/// 8 random bytes for a path's ping transaction IDs.
fn tx_seed() -> [u8; 8] {
    let mut b = [0u8; 8];
    // Without an OS random source, a fixed seed still gives unique IDs
    // (a counter follows it); pongs are authenticated by the box anyway.
    let _ = getrandom::fill(&mut b);
    b
}

impl Tunnels {
    fn new(
        secret: [u8; 32],
        disco_private: PrivateKey,
        endpoints: Vec<SocketAddr>,
        drops: Arc<DropCounters>,
    ) -> Tunnels {
        let secret = x25519::StaticSecret::from(secret);
        let public = x25519::PublicKey::from(&secret);
        Tunnels {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            handshakes: HandshakeLimit::default(),
            node_key: PublicKey::from_bytes(public.to_bytes()),
            disco_private,
            by_disco: HashMap::new(),
            relay_attached: false,
            relay_out: Vec::new(),
            endpoints,
            blocked: HashSet::new(),
            actions: Vec::new(),
            pings: Vec::new(),
            stuns: Vec::new(),
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
        }
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

    fn set_relay_attached(&mut self, attached: bool) {
        self.relay_attached = attached;
        let now = std::time::Instant::now();
        for p in self.peers.values_mut() {
            let home = p.config.home_derp;
            if let Some(d) = p.disco.as_mut() {
                d.path.set_relay(attached && home != 0);
                *p.counters.path.lock() =
                    (d.path.trusted_addr(now), relay_region(&d.path, home, now));
            }
        }
    }

    /// The disco state a peer config asks for, reusing `old` when the
    /// disco key is unchanged (a new key means the peer restarted: its
    /// paths start over).
    fn disco_for(&self, cfg: &PeerConfig, old: Option<Box<PeerDisco>>) -> Option<Box<PeerDisco>> {
        let key = cfg.disco_key?;
        let mut d = match old {
            Some(d) if d.key == key => d,
            _ => Box::new(PeerDisco {
                key,
                sealer: DiscoBox::new(&self.disco_private, &key),
                path: PeerPath::new(tx_seed()),
            }),
        };
        let mut eps = cfg.endpoints.clone();
        eps.extend(cfg.endpoint);
        d.path.set_netmap_endpoints(&eps);
        d.path.set_relay(self.relay_attached && cfg.home_derp != 0);
        Some(d)
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
            if let Some(index) = self.by_key.get(&key).copied() {
                let Some(p) = self.peers.get_mut(&index) else {
                    continue;
                };
                if cfg.endpoint.is_some() && cfg.endpoint != p.config.endpoint {
                    p.endpoint = cfg.endpoint;
                    *p.counters.endpoint.lock() = cfg.endpoint;
                    if cfg.disco_key.is_none() {
                        *p.counters.path.lock() = (cfg.endpoint, 0);
                    }
                }
                let old = p.disco.take();
                if let (Some(was), Some(now)) = (old.as_ref().map(|d| d.key), cfg.disco_key) {
                    if was != now {
                        // A new disco key means the peer restarted (Go's
                        // wgengine `maybeReconfigWireguardLocked`): its
                        // WireGuard session went with it. Drop ours so the
                        // next packet handshakes again, instead of sealing
                        // with keys the peer no longer has until
                        // REKEY_AFTER_TIME or a rejected reply.
                        tracing::debug!(peer = %key.short(), "disco key changed: peer restarted; WireGuard session reset");
                        p.tunn = None;
                        p.last_handshake_age = None;
                    }
                }
                let disco = self.disco_for(&cfg, old);
                if let Some(p) = self.peers.get_mut(&index) {
                    p.disco = disco;
                    p.config = cfg;
                }
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
            if cfg.disco_key.is_some() {
                // A disco peer has no trusted direct path yet.
                *counters.path.lock() = (None, 0);
            }
            let disco = self.disco_for(&cfg, None);
            self.by_key.insert(key, index);
            self.peers.insert(
                index,
                Peer {
                    endpoint: cfg.endpoint,
                    config: cfg,
                    disco,
                    tunn,
                    index,
                    counters,
                    last_handshake_age: None,
                },
            );
        }
        self.routes = PrefixTable::new();
        self.by_disco.clear();
        for p in self.peers.values() {
            for net in &p.config.allowed_ips {
                self.routes.insert(*net, p.index);
            }
            if let Some(d) = &p.disco {
                self.by_disco.insert(d.key, p.index);
            }
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        if !self.blocked.is_empty() && self.blocked.contains(&from) {
            return;
        }
        match disco::classify_datagram(data) {
            DatagramKind::WireGuard => {
                // An initiation from an address over its budget while the
                // node is under load never reaches the shared limiter.
                if data.len() == HANDSHAKE_INIT_LEN
                    && data.first() == Some(&1)
                    && !self.handshakes.allow_udp(from, Instant::now())
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
    fn on_relay(&mut self, src: PublicKey, data: &[u8]) {
        if disco::looks_like_disco(data) {
            self.on_disco(Src::Relay(src), data);
        } else {
            // A handshake initiation (type 1, 148 bytes) from a key over
            // its budget never reaches the shared limiter.
            if data.len() == HANDSHAKE_INIT_LEN
                && data.first() == Some(&1)
                && !self.handshakes.allow_relayed(src, Instant::now())
            {
                self.drops.handshake_limited.fetch_add(1, Relaxed);
                return;
            }
            self.on_wireguard(Src::Relay(src), data);
        }
    }

    /// Sends `data` back where `src` is.
    fn emit(&mut self, src: Src, data: &[u8]) {
        match src {
            Src::Udp(a) => self.out.push(a, data),
            Src::Relay(k) => self.relay_out.push((k, data.to_vec())),
        }
    }

    fn on_wireguard(&mut self, src: Src, data: &[u8]) {
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
                peer.note_handshake();
            }
        }
    }

    /// Finds the peer of a handshake initiation: MAC1 (and, under load, the
    /// cookie) first, so garbage never costs a Diffie-Hellman.
    fn initiator_index(&mut self, src: Src, data: &[u8]) -> Option<u32> {
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

    /// Sends a disco ping to the peer routing `ip`: to its trusted direct
    /// address, or else to every direct candidate and through the relay;
    /// the first pong answers `reply`.
    fn ping(&mut self, ip: IpAddr, reply: oneshot::Sender<Result<Pong, PingError>>) {
        let Some(index) = self.routes.lookup(ip).copied() else {
            let _ = reply.send(Err(PingError::UnknownPeer));
            return;
        };
        let Some(peer) = self.peers.get_mut(&index) else {
            let _ = reply.send(Err(PingError::UnknownPeer));
            return;
        };
        let Some(d) = peer.disco.as_deref_mut() else {
            let _ = reply.send(Err(PingError::PlainWireGuard));
            return;
        };
        let now = std::time::Instant::now();
        let direct: Vec<SocketAddr> = match d.path.trusted_addr(now) {
            Some(a) => vec![a],
            None => d.path.candidates().collect(),
        };
        let relay = d.path.has_relay() && d.path.trusted_addr(now).is_none();
        if direct.is_empty() && !relay {
            let _ = reply.send(Err(PingError::Unreachable));
            return;
        }
        let node_key = self.node_key;
        let seal = |d: &mut PeerDisco| {
            let mut tx_id = [0u8; 12];
            let _ = getrandom::fill(&mut tx_id);
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
            self.pings.remove(0);
        }
        self.pings.push(PendingPing {
            tx_ids,
            peer: peer.config.public_key,
            sent: now,
            reply,
        });
    }

    /// Sends a STUN binding request to `server`; its response answers
    /// `reply` with the address the server saw us at.
    fn stun(&mut self, server: SocketAddr, reply: oneshot::Sender<SocketAddr>) {
        let mut tx_id = [0u8; 12];
        let _ = getrandom::fill(&mut tx_id);
        self.out.push(server, &stun::binding_request(tx_id));
        if self.stuns.len() >= MAX_PENDING_STUN {
            self.stuns.remove(0);
        }
        self.stuns.push(PendingStun {
            tx_id,
            server,
            sent: std::time::Instant::now(),
            reply,
        });
    }

    /// A STUN datagram: the response to one of our requests (from the
    /// server we asked, with its transaction ID), else dropped and counted
    /// as malformed.
    fn on_stun(&mut self, from: SocketAddr, data: &[u8]) {
        let found = self.stuns.iter().enumerate().find_map(|(i, p)| {
            if p.server != from {
                return None;
            }
            stun::parse_binding_response(data, &p.tx_id).map(|mapped| (i, mapped))
        });
        match found {
            Some((i, mapped)) => {
                let p = self.stuns.swap_remove(i);
                let _ = p.reply.send(mapped);
            }
            None => {
                self.drops.malformed.fetch_add(1, Relaxed);
            }
        }
    }

    /// A disco packet from `src`: only from a peer's disco key, only if
    /// its box opens.
    fn on_disco(&mut self, src: Src, data: &[u8]) {
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
        let now = std::time::Instant::now();
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
                    let _ = p.reply.send(Ok(Pong {
                        peer: peer_key,
                        addr,
                        region,
                        rtt: now.saturating_duration_since(p.sent),
                    }));
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

    fn encapsulate(&mut self, pkt: &[u8], now: std::time::Instant) {
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

    fn run_timers(&mut self, now: std::time::Instant) {
        for peer in self.peers.values_mut() {
            let route = match peer.disco.as_deref_mut() {
                Some(d) => {
                    d.path.on_timer(now, &mut self.actions);
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
                    d.path.peek_route(now)
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
            peer.note_handshake();
        }
    }
}

/// Sends what a peer's path asked for (drained from `actions`): disco
/// pings over UDP, CallMeMaybe with our endpoints over the relay.
fn send_actions(
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

/// The relay region a disco peer's packets go through at `now` (0: direct
/// or no relay).
fn relay_region(path: &PeerPath, home: i32, now: std::time::Instant) -> i32 {
    if path.trusted_addr(now).is_none() && path.has_relay() {
        home
    } else {
        0
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

#[cfg(test)]
mod relay_handshake_tests {
    use super::*;

    /// One flooding key is held to its budget while another key, and the
    /// flooder after a pause, still get through.
    #[test]
    fn relayed_initiations_are_limited_per_source_key() {
        let mut lim = HandshakeLimit::default();
        let flooder = PublicKey::from_bytes([1; 32]);
        let peer = PublicKey::from_bytes([2; 32]);
        let t0 = Instant::now();
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
        let t0 = Instant::now();
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

    /// A peer that restarted comes back with a new disco key (it makes one
    /// per process) but the same node key: its old WireGuard session is
    /// gone, so ours is dropped and the next packet handshakes at once.
    /// An update that keeps the disco key keeps the session.
    #[test]
    fn a_peer_whose_disco_key_changed_gets_a_new_session() {
        let mut t = Tunnels::new(
            [7; 32],
            PrivateKey::generate(),
            Vec::new(),
            Arc::new(DropCounters::default()),
        );
        let peer_key = crate::config::public_of(&PrivateKey::generate());
        let ep: SocketAddr = "192.0.2.5:41641".parse().expect("addr");
        let cfg = |disco: PrivateKey| {
            let mut c = PeerConfig::new(
                peer_key,
                Some(ep),
                vec!["100.64.0.2/32".parse().expect("net")],
            );
            c.disco_key = Some(crate::config::public_of(&disco));
            c
        };
        let (d1, d2) = (PrivateKey::generate(), PrivateKey::generate());
        t.set_peers(vec![cfg(d1.clone())]);
        let index = t.by_key[&peer_key];
        assert!(
            t.peers[&index].tunn.is_some(),
            "a new peer handshakes eagerly"
        );
        // Same disco key, e.g. a new endpoint list: the session stays.
        t.set_peers(vec![cfg(d1)]);
        assert!(
            t.peers[&index].tunn.is_some(),
            "unchanged disco key keeps the session"
        );
        // The peer restarted: new disco key, same node key.
        t.set_peers(vec![cfg(d2.clone())]);
        assert_eq!(t.by_key[&peer_key], index, "same peer");
        assert!(
            t.peers[&index].tunn.is_none(),
            "restarted peer's session dropped"
        );
        // The next packet to it starts a handshake (an initiation goes out).
        t.out = Outgoing::default();
        let pkt = ipv4_udp([100, 64, 0, 1], [100, 64, 0, 2]);
        t.encapsulate(&pkt, std::time::Instant::now());
        assert!(t.peers[&index].tunn.is_some());
        let initiations = t
            .out
            .datagrams()
            .filter(|(to, d)| *to == ep && d.len() == HANDSHAKE_INIT_LEN && d[0] == 1)
            .count();
        assert_eq!(initiations, 1, "one handshake initiation to the peer");
        // Still the same key on the next update: kept.
        t.set_peers(vec![cfg(d2)]);
        assert!(t.peers[&index].tunn.is_some());
    }

    fn ipv4_udp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[3] = 28;
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn relayed_sources_get_distinct_cookie_addresses() {
        let a = Src::Relay(PublicKey::from_bytes([1; 32])).ip();
        let b = Src::Relay(PublicKey::from_bytes([2; 32])).ip();
        assert!(a.is_some() && b.is_some());
        assert_ne!(a, b);
    }
}
