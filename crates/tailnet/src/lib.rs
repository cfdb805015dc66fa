//! An embeddable tailnet node.
//!
//! A [`Node`] owns one UDP socket, a WireGuard tunnel per peer (boringtun)
//! and a userspace TCP/IP stack (smoltcp, through `tailnet-netstack`). The
//! application talks TCP and UDP on the node's tailnet addresses through
//! [`TcpStream`], [`TcpListener`] and [`UdpSocket`]; nothing needs a TUN
//! device or any privilege.
//!
//! ```no_run
//! # async fn demo(config: tailnet::NodeConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::AsyncWriteExt;
//! let node = tailnet::Node::start(config).await?;
//! let mut s = node.tcp_connect("100.64.0.2:8080".parse()?).await?;
//! s.write_all(b"hello over the tunnel").await?;
//! # Ok(()) }
//! ```
//!
//! The configuration is a plain value ([`NodeConfig`]): today it is written
//! by hand or by `inferadb-mesh`; the control client produces the same type.

#![forbid(unsafe_code)]

mod config;
pub mod control;
mod dataplane;
mod derp;
mod dial;
pub mod dns;
#[cfg(feature = "hyper")]
pub mod http;
mod listen;
mod node;
mod node_status;
mod relay;
pub mod state;
mod stats;
pub mod status;
mod stun;
mod udp;
mod whois;

#[cfg(feature = "mock-time")]
pub mod testing;

pub use config::{ConfigError, NodeConfig, PeerConfig};
pub use control::{NodeBuilder, UpError};
pub use dataplane::{RelayBatch, RelayLink};
pub use dial::{DialError, UdpConn, DIAL_TIMEOUT};
pub use dns::{DnsStats, ResolveError};
pub use listen::{
    Caller, Listener, TlsListener, TlsStream, TLS_HANDSHAKE_TIMEOUT, TLS_MAX_HANDSHAKES,
};
pub use node::{ControlHealth, Node, NodeError, PingResult};
pub use state::{NodeKeys, StateDir, StateError};
pub use stats::{DropStats, NodeStats, PeerStats, RelayStats};
pub use status::{BackendState, PeerStatus, Status, TailnetStatus};
pub use tailnet_dns::{DnsOptions, RecordType, ServiceZone};
pub use tailnet_netstack::{
    Congestion, NetstackConfig, NetstackStats, TcpListener, TcpStream, UdpSocket,
};
pub use tailnet_wire::{PrivateKey, PublicKey};
pub use whois::{WhoIs, WhoIsUser};
