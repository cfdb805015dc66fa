//! Running a node from a static configuration file (`inferadb-mesh node`).
//!
//! The file is the JSON form of [`tailnet::NodeConfig`]; unknown keys are
//! rejected with their name, and the private key is never echoed.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use tailnet::{Node, NodeConfig};

/// Reads and validates a node configuration file.
pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read node config {}", path.display()))?;
    let cfg: NodeConfig = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("node config {}: {e}", path.display()))?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("node config {}: {e}", path.display()))?;
    Ok(cfg)
}

/// The line a started node prints on stdout, so scripts and parent
/// processes learn its UDP port and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyLine {
    /// The node's public key (base64).
    pub public_key: String,
    /// The UDP address it is bound to.
    pub listen: SocketAddr,
    /// Its tailnet addresses.
    pub addresses: Vec<IpAddr>,
}

impl ReadyLine {
    /// The ready line of `node`.
    pub fn of(node: &Node) -> Self {
        ReadyLine {
            public_key: node.public_key().to_base64(),
            listen: node.listen_addr(),
            addresses: node.addresses().to_vec(),
        }
    }
}
