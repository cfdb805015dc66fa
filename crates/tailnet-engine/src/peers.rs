//! Applying a new peer list, and creating tunnels.

use crate::config::PeerConfig;
use crate::engine::Engine;
use crate::peer::{relay_region, Peer, PeerDisco, HANDSHAKE_INIT_LEN};
use crate::stats::PeerCounters;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use std::collections::HashMap;
use std::sync::Arc;
use tailnet_wire::disco::DiscoBox;
use tailnet_wire::path::PeerPath;
use tailnet_wire::{PrefixTable, PublicKey};

/// At most this many new peers with endpoints in one peer-set update
/// handshake at once; more stay lazy (see `Engine::set_peers`).
const EAGER_HANDSHAKE_MAX: usize = 16;

impl Engine {
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
    pub(crate) fn ensure_tunnel(&mut self, index: u32) {
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

    pub(crate) fn set_relay_attached(&mut self, attached: bool) {
        self.relay_attached = attached;
        let now = self.now;
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
    fn disco_for(
        &mut self,
        cfg: &PeerConfig,
        old: Option<Box<PeerDisco>>,
    ) -> Option<Box<PeerDisco>> {
        let key = cfg.disco_key?;
        let seed = self.tx_seed();
        let mut d = match old {
            Some(d) if d.key == key => d,
            _ => Box::new(PeerDisco {
                key,
                sealer: DiscoBox::new(&self.disco_private, &key),
                path: PeerPath::new(seed),
            }),
        };
        let mut eps = cfg.endpoints.clone();
        eps.extend(cfg.endpoint);
        d.path.set_netmap_endpoints(&eps);
        d.path.set_relay(self.relay_attached && cfg.home_derp != 0);
        Some(d)
    }

    pub(crate) fn set_peers(&mut self, peers: Vec<PeerConfig>) {
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
                if let (Some(was), Some(new)) = (old.as_ref().map(|d| d.key), cfg.disco_key) {
                    if was != new {
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
            let direct_wanted = !(self.always_relay && cfg.disco_key.is_some());
            if let (Some(ep), true, true) = (cfg.endpoint, eager, direct_wanted) {
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
}
