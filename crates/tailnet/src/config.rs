//! The node's configuration: a plain value the control client can produce.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use tailnet_netstack::NetstackConfig;
use tailnet_wire::{PrivateKey, PublicKey};

pub use tailnet_engine::config::{public_of, PeerConfig};

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
    /// Reach disco peers through the relay only, never directly (Go's
    /// `TS_DEBUG_ALWAYS_USE_DERP`; that environment variable set to true
    /// turns it on too). For debugging and measuring relayed paths.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always_use_derp: bool,
}

/// Whether `TS_DEBUG_ALWAYS_USE_DERP` asks for relayed paths only (Go's
/// envknob spellings of true).
pub(crate) fn always_use_derp_from_env() -> bool {
    matches!(
        std::env::var("TS_DEBUG_ALWAYS_USE_DERP").as_deref(),
        Ok("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
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
            always_use_derp: false,
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
