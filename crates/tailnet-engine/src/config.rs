//! A peer as the engine is told about it (by a static configuration or a
//! netmap).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tailnet_wire::{PrivateKey, PublicKey};

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

/// The Curve25519 public key of a private key.
pub fn public_of(k: &PrivateKey) -> PublicKey {
    let secret = boringtun::x25519::StaticSecret::from(*k.as_bytes());
    PublicKey::from_bytes(boringtun::x25519::PublicKey::from(&secret).to_bytes())
}
