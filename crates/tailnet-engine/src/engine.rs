//! The engine's state and its entry points: what the shell feeds it
//! (`handle_*`), what it asks of the shell (`poll_*`).

use crate::config::PeerConfig;
use crate::limit::HandshakeLimit;
use crate::out::Outgoing;
use crate::peer::Peer;
use crate::stats::{DropCounters, PeerCounters};
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tailnet_wire::disco;
use tailnet_wire::filter::{Filter, Rules};
use tailnet_wire::path::Action;
use tailnet_wire::{stun, PrefixTable, PrivateKey, PublicKey};

/// How often every tunnel's timers run (boringtun's own device uses 250 ms).
pub const TICK: Duration = Duration::from_millis(250);
/// Handshake messages counted per second before cookies are demanded. Each
/// initiation is counted twice (our peer lookup checks MAC1 and load, then
/// boringtun checks again through the same limiter), so this allows about
/// 100 initiations a second.
const HANDSHAKE_RATE_LIMIT: u64 = 200;
/// STUN requests awaiting a response; the oldest is forgotten first.
const MAX_PENDING_STUN: usize = 8;
/// A STUN request unanswered this long is forgotten.
pub(crate) const STUN_EXPIRY: Duration = Duration::from_secs(5);
/// Pings awaiting a pong; the oldest is forgotten first.
pub(crate) const MAX_PENDING_PINGS: usize = 64;
/// A ping unanswered this long is forgotten (its caller has given up).
pub(crate) const PING_EXPIRY: Duration = Duration::from_secs(60);

/// What the engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The node's WireGuard static key.
    pub private_key: PrivateKey,
    /// The disco key (fresh every start, see `tailnet::NodeKeys::disco`).
    pub disco_key: PrivateKey,
    /// Our UDP endpoints (CallMeMaybe tells peers).
    pub endpoints: Vec<SocketAddr>,
    /// Seeds the engine's random numbers (disco and STUN transaction IDs,
    /// the paths' ping IDs): the shell draws it from the OS, a test fixes
    /// it.
    pub seed: [u8; 32],
    /// Reach disco peers through the relay only: no direct UDP path, no
    /// disco pings to find one (Go's `TS_DEBUG_ALWAYS_USE_DERP`,
    /// `wgengine/magicsock/debugknobs.go`). A debugging and measuring
    /// knob: relayed paths are slower.
    pub always_use_derp: bool,
}

/// Something for the shell to send or deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A datagram for the UDP socket.
    Udp {
        /// Where to.
        dst: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A packet for the relay (DERP) to deliver to the peer with this node
    /// key; the relay client picks the region (the peer's home).
    Derp {
        /// The peer's node key.
        dst_key: PublicKey,
        /// The WireGuard or disco datagram.
        bytes: Vec<u8>,
    },
    /// A decrypted IP packet that passed cryptokey routing and the packet
    /// filter, for the netstack.
    ToNetstack(Vec<u8>),
}

/// Identifies a [`Engine::ping`] or [`Engine::stun`] request in its
/// [`Event`].
pub type RequestId = u64;

/// Something the engine reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first pong to a [`Engine::ping`].
    Pong {
        /// The request.
        id: RequestId,
        /// What answered.
        pong: Pong,
    },
    /// A ping got no pong in time (or was pushed out by newer ones).
    PingExpired(RequestId),
    /// The response to a [`Engine::stun`]: where the server saw us.
    StunMapped {
        /// The request.
        id: RequestId,
        /// Our address as the server saw it.
        addr: SocketAddr,
    },
    /// A STUN request got no response in time.
    StunExpired(RequestId),
}

/// The first pong to a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The peer that answered.
    pub peer: PublicKey,
    /// The UDP address that answered (`None`: through the relay).
    pub addr: Option<SocketAddr>,
    /// The relay region that carried it (0: direct).
    pub region: i32,
    /// Ping to pong.
    pub rtt: Duration,
}

/// Why a ping could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingError {
    /// No peer's allowed IPs cover the address.
    UnknownPeer,
    /// The peer has no disco key (plain WireGuard).
    PlainWireGuard,
    /// Neither a direct address nor a relay to send it by.
    Unreachable,
}

/// A ping of ours awaiting its pong.
pub(crate) struct PendingPing {
    pub(crate) id: RequestId,
    /// One per destination (each direct address, the relay), as Go's
    /// `cliPing` sends a ping of its own to each.
    pub(crate) tx_ids: Vec<disco::TxId>,
    pub(crate) peer: PublicKey,
    pub(crate) sent: Instant,
}

/// A STUN binding request of ours awaiting its response.
pub(crate) struct PendingStun {
    pub(crate) id: RequestId,
    pub(crate) tx_id: stun::TxId,
    pub(crate) server: SocketAddr,
    pub(crate) sent: Instant,
}

/// The node's data plane as a state machine. Every entry point takes
/// `now` (monotonic; an earlier `now` than one seen before counts as that
/// one); nothing here reads a clock, touches a socket or draws OS
/// randomness.
pub struct Engine {
    pub(crate) secret: x25519::StaticSecret,
    pub(crate) public: x25519::PublicKey,
    /// Our node key (in disco pings).
    pub(crate) node_key: PublicKey,
    pub(crate) disco_private: PrivateKey,
    pub(crate) disco_public: PublicKey,
    /// Peers by disco public key.
    pub(crate) by_disco: HashMap<PublicKey, u32>,
    /// A relay is attached.
    pub(crate) relay_attached: bool,
    /// Packets for the relay.
    pub(crate) relay_out: Vec<(PublicKey, Vec<u8>)>,
    /// Our UDP endpoints (CallMeMaybe).
    pub(crate) endpoints: Vec<SocketAddr>,
    /// Go's `TS_DEBUG_ALWAYS_USE_DERP`: disco peers are reached through
    /// the relay only.
    pub(crate) always_relay: bool,
    /// Scratch for path actions.
    pub(crate) actions: Vec<Action>,
    /// `tailscale ping`s awaiting their pong.
    pub(crate) pings: Vec<PendingPing>,
    /// STUN requests awaiting their response.
    pub(crate) stuns: Vec<PendingStun>,
    pub(crate) next_request: RequestId,
    pub(crate) rate_limiter: Arc<RateLimiter>,
    pub(crate) handshakes: HandshakeLimit,
    pub(crate) peers: HashMap<u32, Peer>,
    pub(crate) by_key: HashMap<PublicKey, u32>,
    pub(crate) routes: PrefixTable<u32>,
    pub(crate) next_index: u32,
    pub(crate) drops: Arc<DropCounters>,
    /// The ACL packet filter: checks decrypted packets before the netstack
    /// and records outbound UDP flows.
    pub(crate) filter: Filter,
    /// Decrypted packets for the netstack.
    pub(crate) inbound: Vec<Vec<u8>>,
    /// Encrypted datagrams for the socket.
    pub(crate) out: Outgoing,
    pub(crate) events: VecDeque<Event>,
    pub(crate) rng: ChaCha20Rng,
    /// The latest `now` seen; boringtun's clock is set to it.
    pub(crate) now: Instant,
    /// boringtun's clock reads `now - epoch`.
    epoch: Instant,
    next_tick: Instant,
    next_limiter_reset: Instant,
}

impl Engine {
    /// An engine with no peers, accepting every inbound flow until
    /// [`Engine::set_filter`].
    pub fn new(now: Instant, config: EngineConfig) -> Engine {
        let secret = x25519::StaticSecret::from(*config.private_key.as_bytes());
        let public = x25519::PublicKey::from(&secret);
        let disco_public = disco::public_of(&config.disco_key);
        crate::clock::set(now, now);
        Engine {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            handshakes: HandshakeLimit::default(),
            node_key: PublicKey::from_bytes(public.to_bytes()),
            disco_private: config.disco_key,
            disco_public,
            by_disco: HashMap::new(),
            relay_attached: false,
            relay_out: Vec::new(),
            endpoints: config.endpoints,
            always_relay: config.always_use_derp,
            actions: Vec::new(),
            pings: Vec::new(),
            stuns: Vec::new(),
            next_request: 1,
            secret,
            public,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: PrefixTable::new(),
            next_index: 1,
            drops: Arc::new(DropCounters::default()),
            filter: Filter::allow_all(),
            inbound: Vec::new(),
            out: Outgoing::default(),
            events: VecDeque::new(),
            rng: ChaCha20Rng::from_seed(config.seed),
            now,
            epoch: now,
            next_tick: now + TICK,
            next_limiter_reset: now + Duration::from_secs(1),
        }
    }

    /// Moves the engine's time to `now` (never backwards) and sets
    /// boringtun's clock to it.
    pub(crate) fn enter(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        crate::clock::set(self.epoch, self.now);
    }

    /// Our node (WireGuard) public key.
    pub fn node_key(&self) -> PublicKey {
        self.node_key
    }

    /// Our disco public key.
    pub fn disco_public_key(&self) -> PublicKey {
        self.disco_public
    }

    /// The drop counters (shared; the shell reports them).
    pub fn drops(&self) -> &Arc<DropCounters> {
        &self.drops
    }

    /// Every peer's counters, by node key.
    pub fn peer_counters(&self) -> Vec<Arc<PeerCounters>> {
        let mut v: Vec<_> = self.peers.values().map(|p| p.counters.clone()).collect();
        v.sort_by_key(|c| c.key);
        v
    }

    /// Replaces the packet filter (from the first packet on).
    pub fn set_packet_filter(&mut self, filter: Filter) {
        self.filter = filter;
    }

    /// New packet-filter rules (`None`: accept everything). Flows already
    /// recorded are kept.
    pub fn set_filter(&mut self, rules: Option<Arc<Rules>>) {
        self.filter.set_rules(rules);
    }

    /// Our UDP endpoints, which CallMeMaybe tells peers.
    pub fn set_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.endpoints = endpoints;
    }

    /// A new peer list (a netmap or a static configuration): new peers get
    /// a tunnel (a few at once handshake eagerly), removed ones go, kept
    /// ones keep their sessions unless their disco key changed (they
    /// restarted).
    pub fn handle_map(&mut self, now: Instant, peers: Vec<PeerConfig>) {
        self.enter(now);
        self.set_peers(peers);
    }

    /// A relay attached (or gone).
    pub fn set_relay(&mut self, now: Instant, attached: bool) {
        self.enter(now);
        self.set_relay_attached(attached);
    }

    /// A datagram from the UDP socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.enter(now);
        self.on_datagram(from, data);
    }

    /// A packet the relay delivered from the peer with node key `from`.
    pub fn handle_derp(&mut self, now: Instant, from: PublicKey, data: &[u8]) {
        self.enter(now);
        self.on_relay(from, data);
    }

    /// An IP packet from the netstack for a peer.
    pub fn handle_app_packet(&mut self, now: Instant, pkt: &[u8]) {
        self.enter(now);
        self.encapsulate(pkt);
    }

    /// IP packets from the netstack, in order.
    pub fn handle_app_packets(&mut self, now: Instant, pkts: &[Vec<u8>]) {
        self.enter(now);
        for p in pkts {
            self.encapsulate(p);
        }
    }

    /// Runs what is due at `now` (the timers every [`TICK`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.enter(now);
        if self.now < self.next_tick {
            return;
        }
        let now = self.now;
        self.next_tick = now + TICK;
        if now >= self.next_limiter_reset {
            self.rate_limiter.reset_count();
            self.handshakes.new_second();
            self.next_limiter_reset = now + Duration::from_secs(1);
        }
        let events = &mut self.events;
        self.pings.retain(|p| {
            let keep = now.saturating_duration_since(p.sent) < PING_EXPIRY;
            if !keep {
                events.push_back(Event::PingExpired(p.id));
            }
            keep
        });
        self.stuns.retain(|p| {
            let keep = now.saturating_duration_since(p.sent) < STUN_EXPIRY;
            if !keep {
                events.push_back(Event::StunExpired(p.id));
            }
            keep
        });
        self.run_timers();
    }

    /// When [`Engine::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    /// The next thing to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next datagram or packet to hand on, one at a time (UDP first,
    /// then the relay, then the netstack). The shell's hot path takes them
    /// in batches instead ([`Engine::udp_out`], [`Engine::take_derp`],
    /// [`Engine::to_netstack`]).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(&(dst, start, len)) = self.out.items().first() {
            let bytes = self.out.bytes()[start..start + len].to_vec();
            self.out.remove_first();
            return Some(Transmit::Udp { dst, bytes });
        }
        if !self.relay_out.is_empty() {
            let (dst_key, bytes) = self.relay_out.remove(0);
            return Some(Transmit::Derp { dst_key, bytes });
        }
        if !self.inbound.is_empty() {
            return Some(Transmit::ToNetstack(self.inbound.remove(0)));
        }
        None
    }

    /// The datagrams for the UDP socket, to send as they are (GSO runs);
    /// the shell clears it after sending.
    pub fn udp_out(&mut self) -> &mut Outgoing {
        &mut self.out
    }

    /// The packets for the relay, by the peer's node key.
    pub fn take_derp(&mut self) -> std::vec::Drain<'_, (PublicKey, Vec<u8>)> {
        self.relay_out.drain(..)
    }

    /// Decrypted packets for the netstack; the shell hands the vector to
    /// it, which drains it.
    pub fn to_netstack(&mut self) -> &mut Vec<Vec<u8>> {
        &mut self.inbound
    }

    /// Sends a disco ping to the peer routing `ip`: to its trusted direct
    /// address, or else to every direct candidate and through the relay.
    /// The first pong is reported as [`Event::Pong`] with the returned id.
    pub fn ping(&mut self, now: Instant, ip: IpAddr) -> Result<RequestId, PingError> {
        self.enter(now);
        self.send_ping(ip)
    }

    /// Sends a STUN binding request to `server`; the response is reported
    /// as [`Event::StunMapped`] with the returned id.
    pub fn stun(&mut self, now: Instant, server: SocketAddr) -> RequestId {
        self.enter(now);
        let id = self.request_id();
        let mut tx_id = [0u8; 12];
        self.rng.fill_bytes(&mut tx_id);
        self.out.push(server, &stun::binding_request(tx_id));
        if self.stuns.len() >= MAX_PENDING_STUN {
            let old = self.stuns.remove(0);
            self.events.push_back(Event::StunExpired(old.id));
        }
        self.stuns.push(PendingStun {
            id,
            tx_id,
            server,
            sent: self.now,
        });
        id
    }

    pub(crate) fn request_id(&mut self) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// 8 random bytes for a path's ping transaction IDs.
    pub(crate) fn tx_seed(&mut self) -> [u8; 8] {
        let mut b = [0u8; 8];
        self.rng.fill_bytes(&mut b);
        b
    }
}
