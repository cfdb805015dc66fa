//! Per-peer path selection: which way a peer's WireGuard packets go (a
//! direct UDP endpoint, the relay, or both), kept up to date by disco
//! pings and pongs. Sans-IO: every method takes `now`; the caller sends
//! what [`Action`]s ask for and feeds back what arrives.
//!
//! The rules are magicsock's (`shared/protocol/disco.md` §6, Go's
//! `wgengine/magicsock/endpoint.go` at v1.90.9):
//!
//! - A UDP pong from endpoint E makes E the best address if it is better
//!   than the current one ([`better_addr`]); a pong from the best address
//!   trusts it for [`TRUST_UDP_ADDR_DURATION`] (6.5 s).
//! - While trusted, packets go to the best address only. Otherwise they go
//!   to a direct candidate (the best address, else the first known
//!   endpoint) **and** the relay, if the peer has a home relay region, and
//!   every send starts discovery: a ping to each candidate not pinged in
//!   the last [`DISCO_PING_INTERVAL`], plus CallMeMaybe over the relay.
//! - Every [`HEARTBEAT_INTERVAL`] while we sent to the peer within
//!   [`SESSION_ACTIVE_TIMEOUT`]: ping the best address (and every
//!   candidate when a full ping is due), so trust is renewed while traffic
//!   flows. When pongs stop, trust lapses and the relay carries traffic
//!   within 6.5 s; when they resume, the path is direct again.

use crate::disco::TxId;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Ping the best address this often while the session is active.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// A pong makes the best address the only path for this long.
pub const TRUST_UDP_ADDR_DURATION: Duration = Duration::from_millis(6500);
/// No outbound traffic for this long stops heartbeats.
pub const SESSION_ACTIVE_TIMEOUT: Duration = Duration::from_secs(45);
/// How often to look for a better direct path than a slow one.
pub const UPGRADE_INTERVAL: Duration = Duration::from_secs(60);
/// At or below this latency, no upgrade attempts.
pub const GOOD_ENOUGH_LATENCY: Duration = Duration::from_millis(5);
/// A ping without a pong for this long is lost.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one discovery ping per endpoint this often.
pub const DISCO_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Endpoints kept per peer; more (from pings or CallMeMaybe) are ignored.
pub const MAX_CANDIDATES: usize = 32;
/// Pings awaiting a pong per peer; older ones are forgotten first.
const MAX_SENT_PINGS: usize = 64;

/// What the caller should send for this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A disco ping to this UDP endpoint.
    Ping {
        /// Where.
        to: SocketAddr,
        /// Its transaction ID (remember nothing: the path keeps it).
        tx_id: TxId,
    },
    /// A CallMeMaybe with our endpoints, over the relay.
    CallMeMaybe,
}

/// Where one outbound packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// A direct UDP endpoint, if any.
    pub udp: Option<SocketAddr>,
    /// Also (or only) through the relay.
    pub relay: bool,
    /// The path is not trusted: the caller should run
    /// [`PeerPath::discover`].
    pub discover: bool,
}

/// A direct address with its measured round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrQuality {
    /// The endpoint.
    pub addr: SocketAddr,
    /// Ping to pong.
    pub latency: Duration,
}

#[derive(Debug, Clone, Default)]
struct Candidate {
    /// Listed in the netmap.
    netmap: bool,
    /// Listed in the peer's last CallMeMaybe.
    call_me_maybe: bool,
    /// The source of a ping from the peer.
    ping_source: bool,
    last_ping: Option<Instant>,
    last_pong: Option<Instant>,
    /// The TxID of the last ping received from here (repeats are ignored).
    last_rx_tx_id: Option<TxId>,
}

impl Candidate {
    fn is_listed(&self) -> bool {
        self.netmap || self.call_me_maybe || self.ping_source
    }
}

#[derive(Debug, Clone, Copy)]
struct SentPing {
    tx_id: TxId,
    to: SocketAddr,
    at: Instant,
}

/// What a pong did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PongOutcome {
    /// Not a ping of ours (unknown or expired TxID): ignore it.
    Unknown,
    /// Ours, but it came over the relay: no path changes.
    ViaRelay,
    /// Ours, over UDP: `addr` answered in `latency`; `best_changed` when
    /// it became the best address.
    Direct {
        /// The endpoint pinged.
        addr: SocketAddr,
        /// Round trip.
        latency: Duration,
        /// Whether the best address changed.
        best_changed: bool,
    },
}

/// One peer's path state.
#[derive(Debug, Clone)]
pub struct PeerPath {
    /// The peer has a home relay region.
    relay: bool,
    candidates: BTreeMap<SocketAddr, Candidate>,
    best: Option<AddrQuality>,
    trust_until: Option<Instant>,
    last_send: Option<Instant>,
    next_heartbeat: Option<Instant>,
    last_full_ping: Option<Instant>,
    sent: Vec<SentPing>,
    tx_seed: [u8; 8],
    tx_counter: u32,
}

impl PeerPath {
    /// A path with no candidates. `tx_seed`: 8 random bytes that, with a
    /// counter, make this peer's ping transaction IDs unique.
    pub fn new(tx_seed: [u8; 8]) -> PeerPath {
        PeerPath {
            relay: false,
            candidates: BTreeMap::new(),
            best: None,
            trust_until: None,
            last_send: None,
            next_heartbeat: None,
            last_full_ping: None,
            sent: Vec::new(),
            tx_seed,
            tx_counter: 0,
        }
    }

    /// Whether the peer can be reached through the relay (it has a home
    /// region).
    pub fn set_relay(&mut self, relay: bool) {
        self.relay = relay;
    }

    /// Whether the relay is a path to this peer.
    pub fn has_relay(&self) -> bool {
        self.relay
    }

    /// The endpoints control lists for the peer (replacing the previous
    /// list; endpoints known from elsewhere stay).
    pub fn set_netmap_endpoints(&mut self, endpoints: &[SocketAddr]) {
        for c in self.candidates.values_mut() {
            c.netmap = false;
        }
        for e in endpoints {
            if let Some(c) = self.candidate_mut(*e) {
                c.netmap = true;
            }
        }
        self.prune();
    }

    fn candidate_mut(&mut self, addr: SocketAddr) -> Option<&mut Candidate> {
        if !self.candidates.contains_key(&addr) && self.candidates.len() >= MAX_CANDIDATES {
            return None;
        }
        Some(self.candidates.entry(addr).or_default())
    }

    fn prune(&mut self) {
        self.candidates.retain(|_, c| c.is_listed());
    }

    /// The direct endpoints known (netmap, CallMeMaybe, ping sources).
    pub fn candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.candidates.keys().copied()
    }

    /// The best direct address, trusted or not.
    pub fn best(&self) -> Option<AddrQuality> {
        self.best
    }

    /// The best address if it is trusted at `now`: packets go there only.
    pub fn trusted_addr(&self, now: Instant) -> Option<SocketAddr> {
        match (self.best, self.trust_until) {
            (Some(b), Some(t)) if now < t => Some(b.addr),
            _ => None,
        }
    }

    /// Where a packet sent at `now` goes; notes the send (heartbeats run
    /// while the peer is sent to).
    #[inline]
    pub fn route(&mut self, now: Instant) -> Route {
        self.last_send = Some(now);
        if self.next_heartbeat.is_none() {
            self.next_heartbeat = Some(now + HEARTBEAT_INTERVAL);
        }
        self.peek_route(now)
    }

    /// Where replies and timer packets (keep-alives, handshakes) go at
    /// `now`, without counting as user traffic.
    #[inline]
    pub fn peek_route(&self, now: Instant) -> Route {
        if let Some(addr) = self.trusted_addr(now) {
            return Route {
                udp: Some(addr),
                relay: false,
                discover: false,
            };
        }
        Route {
            udp: self
                .best
                .map(|b| b.addr)
                .or_else(|| self.candidates.keys().next().copied()),
            relay: self.relay,
            discover: true,
        }
    }

    fn next_tx_id(&mut self) -> TxId {
        self.tx_counter = self.tx_counter.wrapping_add(1);
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&self.tx_seed);
        t[8..].copy_from_slice(&self.tx_counter.to_be_bytes());
        t
    }

    fn ping(&mut self, to: SocketAddr, now: Instant, out: &mut Vec<Action>) {
        let tx_id = self.next_tx_id();
        self.note_ping(to, tx_id, now);
        if let Some(c) = self.candidates.get_mut(&to) {
            c.last_ping = Some(now);
        }
        out.push(Action::Ping { to, tx_id });
    }

    /// A ping the caller sent itself (the user's `ping`) to `to` with
    /// `tx_id` at `now`: its pong over UDP counts like one of ours, so the
    /// direct path it proves is the path packets take from then on (Go's
    /// `cliPing` goes through `startDiscoPingLocked` the same way).
    pub fn note_ping(&mut self, to: SocketAddr, tx_id: TxId, now: Instant) {
        if self.sent.len() >= MAX_SENT_PINGS {
            self.sent.remove(0);
        }
        self.sent.push(SentPing { tx_id, to, at: now });
    }

    /// Discovery (Go's `sendDiscoPingsLocked`): pings every candidate not
    /// pinged within [`DISCO_PING_INTERVAL`]; if any ping went out and the
    /// peer has a relay, CallMeMaybe too. Cheap when nothing is due.
    pub fn discover(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.send_pings(now, true, out);
    }

    fn send_pings(&mut self, now: Instant, call_me_maybe: bool, out: &mut Vec<Action>) {
        let is_due = |c: &Candidate| {
            c.last_ping
                .is_none_or(|t| now.saturating_duration_since(t) >= DISCO_PING_INTERVAL)
        };
        // Called on every untrusted send: look before allocating.
        if !self.candidates.values().any(is_due) {
            return;
        }
        let due: Vec<SocketAddr> = self
            .candidates
            .iter()
            .filter(|(_, c)| is_due(c))
            .map(|(a, _)| *a)
            .collect();
        self.last_full_ping = Some(now);
        for to in due {
            self.ping(to, now, out);
        }
        if call_me_maybe && self.relay {
            out.push(Action::CallMeMaybe);
        }
    }

    fn want_full_ping(&self, now: Instant) -> bool {
        let Some(best) = self.best else {
            return true;
        };
        let Some(last_full) = self.last_full_ping else {
            return true;
        };
        if self.trusted_addr(now).is_none() {
            return true;
        }
        best.latency > GOOD_ENOUGH_LATENCY
            && now.saturating_duration_since(last_full) >= UPGRADE_INTERVAL
    }

    /// Timers: forgets lost pings and sends heartbeats. Call it often (the
    /// data plane does every 250 ms); it does nothing when nothing is due.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.sent
            .retain(|s| now.saturating_duration_since(s.at) < PING_TIMEOUT);
        let Some(due) = self.next_heartbeat else {
            return;
        };
        if now < due {
            return;
        }
        let active = self
            .last_send
            .is_some_and(|t| now.saturating_duration_since(t) < SESSION_ACTIVE_TIMEOUT);
        if !active {
            // Idle: heartbeats stop; the next send starts them again.
            self.next_heartbeat = None;
            return;
        }
        self.next_heartbeat = Some(now + HEARTBEAT_INTERVAL);
        if let Some(b) = self.best {
            self.ping(b.addr, now, out);
        }
        if self.want_full_ping(now) {
            self.send_pings(now, true, out);
        }
    }

    /// A ping from the peer arrived over UDP from `from`: `from` becomes a
    /// candidate. Returns false for a repeat of the last TxID from that
    /// address, which Go ignores (no pong).
    pub fn on_ping(&mut self, from: SocketAddr, tx_id: TxId) -> bool {
        let Some(c) = self.candidate_mut(from) else {
            // Too many candidates: answer, but do not remember.
            return true;
        };
        c.ping_source = true;
        if c.last_rx_tx_id == Some(tx_id) {
            return false;
        }
        c.last_rx_tx_id = Some(tx_id);
        true
    }

    /// A pong with `tx_id` arrived, over UDP when `via_udp`.
    pub fn on_pong(&mut self, now: Instant, tx_id: TxId, via_udp: bool) -> PongOutcome {
        let Some(i) = self.sent.iter().position(|s| s.tx_id == tx_id) else {
            return PongOutcome::Unknown;
        };
        let sp = self.sent.swap_remove(i);
        if !via_udp {
            return PongOutcome::ViaRelay;
        }
        let latency = now.saturating_duration_since(sp.at);
        if let Some(c) = self.candidates.get_mut(&sp.to) {
            c.last_pong = Some(now);
        }
        let this = AddrQuality {
            addr: sp.to,
            latency,
        };
        let mut best_changed = false;
        if self.best.is_none_or(|b| better_addr(&this, &b)) {
            best_changed = self.best.map(|b| b.addr) != Some(sp.to);
            self.best = Some(this);
        }
        if let Some(b) = self.best.as_mut() {
            if b.addr == sp.to {
                b.latency = latency;
                self.trust_until = Some(now + TRUST_UDP_ADDR_DURATION);
            }
        }
        PongOutcome::Direct {
            addr: sp.to,
            latency,
            best_changed,
        }
    }

    /// A CallMeMaybe from the peer (over the relay): its endpoints replace
    /// those of the previous one, the ping throttle is reset and every
    /// candidate is pinged at once (no CallMeMaybe in return).
    pub fn on_call_me_maybe(
        &mut self,
        now: Instant,
        endpoints: &[SocketAddr],
        out: &mut Vec<Action>,
    ) {
        for c in self.candidates.values_mut() {
            c.call_me_maybe = false;
        }
        for e in endpoints {
            if let IpAddr::V6(v6) = e.ip() {
                if v6.is_unicast_link_local() {
                    continue; // needs a scope; Go skips them too
                }
            }
            if let Some(c) = self.candidate_mut(*e) {
                c.call_me_maybe = true;
            }
        }
        self.prune();
        for c in self.candidates.values_mut() {
            c.last_ping = None;
        }
        self.send_pings(now, false, out);
    }

    /// Forgets the best address and all timers (the peer's disco key
    /// changed: it restarted). Candidates stay.
    pub fn reset(&mut self) {
        self.best = None;
        self.trust_until = None;
        self.last_send = None;
        self.next_heartbeat = None;
        self.last_full_ping = None;
        self.sent.clear();
        for c in self.candidates.values_mut() {
            c.last_ping = None;
            c.last_rx_tx_id = None;
        }
    }
}

fn addr_points(ip: IpAddr) -> i64 {
    let class = match ip {
        IpAddr::V4(v4) if v4.is_loopback() => 50,
        IpAddr::V4(v4) if v4.is_link_local() => 30,
        IpAddr::V4(v4) if v4.is_private() => 20,
        IpAddr::V6(v6) if v6.is_loopback() => 50,
        IpAddr::V6(v6) if v6.is_unicast_link_local() => 30,
        IpAddr::V6(v6) if v6.is_unique_local() => 20,
        _ => 0,
    };
    class + if ip.is_ipv6() { 10 } else { 0 }
}

/// Whether `a` is a better direct address than `b` (Go's `betterAddr`):
/// the faster one gets `100 - 100·fast/slow` points, loopback +50,
/// link-local +30, private +20, IPv6 +10; `a` wins only with strictly more
/// points, and not by 1 point or less against none (hysteresis). The same
/// address is never better than itself.
pub fn better_addr(a: &AddrQuality, b: &AddrQuality) -> bool {
    if a.addr == b.addr {
        return false;
    }
    let (al, bl) = (a.latency.as_nanos() as i128, b.latency.as_nanos() as i128);
    let (mut ap, mut bp) = (0i64, 0i64);
    if al > bl && al > 0 {
        bp = (100 - (bl * 100) / al) as i64;
    } else if bl > 0 {
        ap = (100 - (al * 100) / bl) as i64;
    }
    ap += addr_points(a.addr.ip());
    bp += addr_points(b.addr.ip());
    if ap <= 1 && bp == 0 {
        return false;
    }
    ap > bp
}

#[cfg(test)]
mod tests;
