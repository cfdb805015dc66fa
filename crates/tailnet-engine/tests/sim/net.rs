//! A simulated network for engines: N nodes, a DERP relay, UDP links that
//! can be cut, delayed and healed, and NATs. Time is simulated: nothing
//! sleeps, no socket is opened, a minute passes in milliseconds.
//!
//! Each node has a UDP address; a node behind a NAT sends from a public
//! address the NAT maps it to, and the NAT lets in only datagrams from
//! remotes the node sent to (endpoint-dependent filtering, the common
//! home-router kind). The relay delivers packets by node key to every
//! node connected to it.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tailnet_engine::{Engine, EngineConfig, Event, PeerConfig, Transmit};
use tailnet_wire::{PrivateKey, PublicKey};

/// The relay region every node calls home.
pub const REGION: i32 = 1;

pub struct SimNode {
    pub engine: Engine,
    pub key: PrivateKey,
    pub disco: PrivateKey,
    /// Where the node's socket is (its private address behind a NAT).
    pub addr: SocketAddr,
    /// Its public address when behind a NAT.
    pub nat: Option<SocketAddr>,
    /// Remotes the NAT lets in (those the node sent to).
    pub nat_open: HashSet<SocketAddr>,
    /// Connected to the relay.
    pub relay: bool,
    /// Its engine reaches peers through the relay only.
    pub always_use_derp: bool,
    /// Its tailnet address.
    pub ip: Ipv4Addr,
    /// Packets the engine handed to the netstack.
    pub delivered: Vec<Vec<u8>>,
    pub events: Vec<Event>,
    /// Datagrams it sent over UDP and through the relay.
    pub sent_udp: u64,
    pub sent_relay: u64,
}

impl SimNode {
    /// The address peers reach it at.
    pub fn public_addr(&self) -> SocketAddr {
        self.nat.unwrap_or(self.addr)
    }

    pub fn node_key(&self) -> PublicKey {
        self.engine.node_key()
    }

    /// This node as a peer in others' netmaps.
    pub fn as_peer(&self) -> PeerConfig {
        PeerConfig {
            public_key: self.node_key(),
            endpoint: Some(self.public_addr()),
            allowed_ips: vec![format!("{}/32", self.ip).parse().expect("net")],
            persistent_keepalive: None,
            disco_key: Some(tailnet_wire::disco::public_of(&self.disco)),
            home_derp: REGION,
            endpoints: vec![self.public_addr()],
        }
    }
}

enum Wire {
    Udp {
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    Derp {
        from: PublicKey,
        to: PublicKey,
        bytes: Vec<u8>,
    },
}

pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    /// UDP between these public addresses is dropped (both ways).
    cut: HashSet<(SocketAddr, SocketAddr)>,
    /// One-way delay of UDP and of the relay.
    pub udp_delay: Duration,
    pub relay_delay: Duration,
    in_flight: Vec<(Instant, u64, Wire)>,
    seq: u64,
    seed: u8,
}

fn pair_key(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl Sim {
    pub fn new() -> Sim {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            nodes: Vec::new(),
            cut: HashSet::new(),
            udp_delay: Duration::from_millis(5),
            relay_delay: Duration::from_millis(20),
            in_flight: Vec::new(),
            seq: 0,
            seed: 0,
        }
    }

    /// A node on its own public address, connected to the relay.
    pub fn add_node(&mut self) -> usize {
        let n = self.nodes.len() as u8 + 1;
        let addr: SocketAddr = format!("192.0.2.{n}:41641").parse().expect("addr");
        self.add_node_at(addr, None, PrivateKey::generate())
    }

    /// A node behind a NAT: private address, public mapping.
    pub fn add_node_behind_nat(&mut self) -> usize {
        let n = self.nodes.len() as u8 + 1;
        let addr: SocketAddr = format!("10.0.0.{n}:41641").parse().expect("addr");
        let public: SocketAddr = format!("198.51.100.{n}:{}", 30000 + u16::from(n))
            .parse()
            .expect("addr");
        self.add_node_at(addr, Some(public), PrivateKey::generate())
    }

    fn engine(
        &mut self,
        key: &PrivateKey,
        disco: &PrivateKey,
        public: SocketAddr,
        always_use_derp: bool,
    ) -> Engine {
        self.seed = self.seed.wrapping_add(1);
        let mut e = Engine::new(
            self.now,
            EngineConfig {
                private_key: key.clone(),
                disco_key: disco.clone(),
                endpoints: vec![public],
                seed: [self.seed; 32],
                always_use_derp,
            },
        );
        e.set_relay(self.now, true);
        e
    }

    fn add_node_at(&mut self, addr: SocketAddr, nat: Option<SocketAddr>, key: PrivateKey) -> usize {
        let disco = PrivateKey::generate();
        let engine = self.engine(&key, &disco, nat.unwrap_or(addr), false);
        let n = self.nodes.len() as u8 + 1;
        self.nodes.push(SimNode {
            engine,
            key,
            disco,
            addr,
            nat,
            nat_open: HashSet::new(),
            relay: true,
            always_use_derp: false,
            ip: Ipv4Addr::new(100, 64, 0, n),
            delivered: Vec::new(),
            events: Vec::new(),
            sent_udp: 0,
            sent_relay: 0,
        });
        self.nodes.len() - 1
    }

    /// Gives every node a netmap of all the others.
    pub fn full_mesh(&mut self) {
        for i in 0..self.nodes.len() {
            self.send_map(i);
        }
    }

    /// Gives node `i` a netmap of all the others as they are now.
    pub fn send_map(&mut self, i: usize) {
        let peers: Vec<PeerConfig> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(|j| self.nodes[j].as_peer())
            .collect();
        let now = self.now;
        self.nodes[i].engine.handle_map(now, peers);
        self.drain(i);
    }

    /// Restarts node `i`: a new engine with the same node key and
    /// address, a fresh disco key (as a process makes at start), no
    /// sessions. Nobody is told yet; see [`Sim::send_map`].
    pub fn restart(&mut self, i: usize) {
        let key = self.nodes[i].key.clone();
        let disco = PrivateKey::generate();
        let public = self.nodes[i].public_addr();
        let always = self.nodes[i].always_use_derp;
        self.nodes[i].engine = self.engine(&key, &disco, public, always);
        self.nodes[i].disco = disco;
        self.nodes[i].nat_open.clear();
        // In-flight datagrams to the old process are lost with it.
        let (addr, nk) = (public, self.nodes[i].node_key());
        self.in_flight.retain(|(_, _, w)| match w {
            Wire::Udp { to, .. } => *to != addr,
            Wire::Derp { to, .. } => *to != nk,
        });
    }

    /// Replaces node `i`'s engine before it has peers (to apply a changed
    /// setting such as `always_use_derp`).
    pub fn rebuild(&mut self, i: usize) {
        self.restart(i);
    }

    /// Cuts UDP between nodes `a` and `b` (the relay still works).
    pub fn cut_udp(&mut self, a: usize, b: usize) {
        let k = pair_key(self.nodes[a].public_addr(), self.nodes[b].public_addr());
        self.cut.insert(k);
    }

    pub fn heal_udp(&mut self, a: usize, b: usize) {
        let k = pair_key(self.nodes[a].public_addr(), self.nodes[b].public_addr());
        self.cut.remove(&k);
    }

    /// An application packet (IPv4/UDP, `payload`) from node `a` to `b`.
    pub fn send_app(&mut self, a: usize, b: usize, payload: &[u8]) {
        let pkt = ipv4_udp(self.nodes[a].ip, self.nodes[b].ip, payload);
        let now = self.now;
        self.nodes[a].engine.handle_app_packet(now, &pkt);
        self.drain(a);
    }

    /// Whether node `b` got an application packet carrying `payload`.
    pub fn got(&self, b: usize, payload: &[u8]) -> bool {
        self.nodes[b]
            .delivered
            .iter()
            .any(|p| p.len() >= 28 && &p[28..] == payload)
    }

    /// Injects a raw datagram to node `to` from `from`.
    pub fn inject_udp(&mut self, to: usize, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.nodes[to].engine.handle_datagram(now, from, bytes);
        self.drain(to);
    }

    /// Injects a raw relayed packet to node `to` from node key `from`.
    pub fn inject_derp(&mut self, to: usize, from: PublicKey, bytes: &[u8]) {
        let now = self.now;
        self.nodes[to].engine.handle_derp(now, from, bytes);
        self.drain(to);
    }

    /// Takes what node `i`'s engine wants sent and puts it on the wire.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(t) = self.nodes[i].engine.poll_transmit() {
            match t {
                Transmit::Udp { dst, bytes } => {
                    self.nodes[i].sent_udp += 1;
                    if self.nodes[i].nat.is_some() {
                        self.nodes[i].nat_open.insert(dst);
                    }
                    let from = self.nodes[i].public_addr();
                    self.seq += 1;
                    self.in_flight.push((
                        now + self.udp_delay,
                        self.seq,
                        Wire::Udp {
                            from,
                            to: dst,
                            bytes,
                        },
                    ));
                }
                Transmit::Derp { dst_key, bytes } => {
                    self.nodes[i].sent_relay += 1;
                    if !self.nodes[i].relay {
                        continue;
                    }
                    let from = self.nodes[i].node_key();
                    self.seq += 1;
                    self.in_flight.push((
                        now + self.relay_delay,
                        self.seq,
                        Wire::Derp {
                            from,
                            to: dst_key,
                            bytes,
                        },
                    ));
                }
                Transmit::ToNetstack(p) => self.nodes[i].delivered.push(p),
            }
        }
        while let Some(e) = self.nodes[i].engine.poll_event() {
            self.nodes[i].events.push(e);
        }
    }

    fn deliver(&mut self, w: Wire) {
        let now = self.now;
        match w {
            Wire::Udp { from, to, bytes } => {
                if self.cut.contains(&pair_key(from, to)) {
                    return;
                }
                let Some(i) = self.nodes.iter().position(|n| n.public_addr() == to) else {
                    return;
                };
                if self.nodes[i].nat.is_some() && !self.nodes[i].nat_open.contains(&from) {
                    return;
                }
                self.nodes[i].engine.handle_datagram(now, from, &bytes);
                self.drain(i);
            }
            Wire::Derp { from, to, bytes } => {
                let Some(i) = self
                    .nodes
                    .iter()
                    .position(|n| n.relay && n.node_key() == to)
                else {
                    return;
                };
                self.nodes[i].engine.handle_derp(now, from, &bytes);
                self.drain(i);
            }
        }
    }

    /// Runs the network for `d` of simulated time.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next_wire = self.in_flight.iter().map(|(t, s, _)| (*t, *s)).min();
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.poll_timeout())
                .min();
            let next = match (next_wire, next_timer) {
                (Some((w, _)), Some(t)) => w.min(t),
                (Some((w, _)), None) => w,
                (None, Some(t)) => t,
                (None, None) => end,
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            if let Some((w, s)) = next_wire {
                if w <= self.now {
                    let at = self
                        .in_flight
                        .iter()
                        .position(|(t, q, _)| *t == w && *q == s)
                        .expect("in flight");
                    let (_, _, wire) = self.in_flight.swap_remove(at);
                    self.deliver(wire);
                    continue;
                }
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i]
                    .engine
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    let now = self.now;
                    self.nodes[i].engine.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
    }

    /// Runs until `f` holds (checked every 10 ms of simulated time), at
    /// most `limit`; returns how long it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut f: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start <= limit {
            if f(self) {
                return Some(self.now - start);
            }
            self.run(Duration::from_millis(10));
        }
        None
    }

    /// Node `a`'s view of its path to `b`: (trusted direct address, relay region).
    pub fn path(&self, a: usize, b: usize) -> (Option<SocketAddr>, i32) {
        let key = self.nodes[b].node_key();
        let c = self.nodes[a]
            .engine
            .peer_counters()
            .into_iter()
            .find(|c| c.key == key)
            .expect("peer");
        let p = *c.path.lock();
        p
    }

    pub fn handshakes(&self, a: usize, b: usize) -> u64 {
        let key = self.nodes[b].node_key();
        self.nodes[a]
            .engine
            .peer_counters()
            .into_iter()
            .find(|c| c.key == key)
            .map(|c| c.handshakes.load(Relaxed))
            .unwrap_or(0)
    }
}

/// An IPv4/UDP packet (port 4000 to 4001) with a valid header checksum.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let len = 28 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum = 0u32;
    for c in p[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&4001u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// Sends `payload` from `a` to `b` every `every` for `d`, and counts how
/// many arrived.
pub fn flow(sim: &mut Sim, a: usize, b: usize, d: Duration, every: Duration) -> (u32, u32) {
    let end = sim.now + d;
    let (mut sent, mut got) = (0u32, 0u32);
    while sim.now < end {
        let tag = format!(
            "flow-{a}-{b}-{}",
            sim.nodes[a].sent_udp + sim.nodes[a].sent_relay
        );
        let before = sim.nodes[b].delivered.len();
        sim.send_app(a, b, tag.as_bytes());
        sent += 1;
        sim.run(every);
        if sim.nodes[b].delivered[before..]
            .iter()
            .any(|p| p.len() >= 28 && &p[28..] == tag.as_bytes())
        {
            got += 1;
        }
    }
    (sent, got)
}

/// The engines' drop counters, as a map for readable assertions.
pub fn drops(n: &SimNode) -> HashMap<&'static str, u64> {
    let d = n.engine.drops().snapshot();
    HashMap::from([
        ("malformed", d.malformed),
        ("unknown_peer", d.unknown_peer),
        ("rejected", d.rejected),
        ("disco_rejected", d.disco_rejected),
        ("bad_source", d.bad_source),
        ("handshake_limited", d.handshake_limited),
    ])
}
