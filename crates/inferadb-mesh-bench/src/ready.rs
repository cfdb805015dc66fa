//! The line `inferadb-mesh node` and `up` print once running, which the
//! benchmarks and tests read from the processes they start.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use tailnet::Node;

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
