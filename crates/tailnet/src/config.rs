//! The node's configuration: a plain value the control client can produce.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use tailnet_netstack::NetstackConfig;
use tailnet_wire::{PrivateKey, PublicKey};

/// Everything a node needs to run with a static set of peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's WireGuard static key (its Tailscale node key).
    pub private_key: PrivateKey,
    /// The node's tailnet addresses: one IPv4 (100.64.0.0/10) and/or one
    /// IPv6 (fd7a:115c:a1e0::/48).
    pub addresses: Vec<IpAddr>,
    /// Where the UDP socket binds; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The peers.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Netstack tunables.
    #[serde(default)]
    pub netstack: NetstackConfig,
    /// The disco private key that seals and opens disco messages (path
    /// discovery). A node that joined through control uses the key it
    /// advertised there; `None` makes a fresh one at start (Tailscale nodes
    /// make a new disco key every run too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<PrivateKey>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
    /// Where to send to first; afterwards the peer's endpoint roams to the
    /// source of its last authenticated packet. None: wait to hear from it.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// Destinations routed to this peer, and the only sources accepted
    /// from it.
    pub allowed_ips: Vec<IpNet>,
    /// Send a keep-alive after this many idle seconds (keeps NAT mappings).
    #[serde(default)]
    pub persistent_keepalive: Option<u16>,
    /// The peer's disco public key. With one, the peer's path is chosen by
    /// disco (direct UDP once a pong proves it, else the relay too); without
    /// one it is a plain WireGuard peer whose endpoint roams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<PublicKey>,
    /// The peer's home relay (DERP) region; 0: none, the relay is no path
    /// to it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub home_derp: i32,
    /// Every UDP endpoint the peer advertised (disco pings them all);
    /// `endpoint` is where WireGuard goes first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<SocketAddr>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl PeerConfig {
    /// A plain WireGuard peer: no disco, no relay.
    pub fn new(
        public_key: PublicKey,
        endpoint: Option<SocketAddr>,
        allowed_ips: Vec<IpNet>,
    ) -> Self {
        PeerConfig {
            public_key,
            endpoint,
            allowed_ips,
            persistent_keepalive: None,
            disco_key: None,
            home_derp: 0,
            endpoints: Vec::new(),
        }
    }
}

/// A configuration the node cannot run with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two peers with one key.
    #[error("peer {0} is listed twice")]
    DuplicatePeer(PublicKey),
    /// A peer with our own key.
    #[error("peer {0} has this node's own public key")]
    SelfPeer(PublicKey),
    /// Bad addresses for the netstack.
    #[error("addresses: {0}")]
    Addresses(String),
}

impl NodeConfig {
    /// A config with a fresh key, the given addresses and no peers.
    pub fn new(private_key: PrivateKey, addresses: Vec<IpAddr>) -> Self {
        NodeConfig {
            private_key,
            addresses,
            listen: default_listen(),
            peers: Vec::new(),
            netstack: NetstackConfig::default(),
            disco_key: None,
        }
    }

    /// The public key of `private_key`.
    pub fn public_key(&self) -> PublicKey {
        public_of(&self.private_key)
    }

    /// Checks what can be checked without binding anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let me = self.public_key();
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            if p.public_key == me {
                return Err(ConfigError::SelfPeer(me));
            }
            if !seen.insert(p.public_key) {
                return Err(ConfigError::DuplicatePeer(p.public_key));
            }
        }
        let v4 = self.addresses.iter().filter(|a| a.is_ipv4()).count();
        let v6 = self.addresses.iter().filter(|a| a.is_ipv6()).count();
        if self.addresses.is_empty() || v4 > 1 || v6 > 1 {
            return Err(ConfigError::Addresses(
                "need one IPv4 and/or one IPv6 address".into(),
            ));
        }
        Ok(())
    }
}

/// The Curve25519 public key of a private key.
pub fn public_of(k: &PrivateKey) -> PublicKey {
    let secret = boringtun::x25519::StaticSecret::from(*k.as_bytes());
    PublicKey::from_bytes(boringtun::x25519::PublicKey::from(&secret).to_bytes())
}
