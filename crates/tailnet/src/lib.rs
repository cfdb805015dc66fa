//! An embeddable tailnet node: join a tailnet (Tailscale, Headscale or
//! our embedded coordinator) from inside your process, with no TUN device
//! and no privilege, and talk TCP, UDP and HTTP to other nodes by their
//! MagicDNS names.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::AsyncWriteExt;
//! let node = tailnet::Node::builder()
//!     .control_url("https://controlplane.tailscale.com")
//!     .auth_key("tskey-auth-…")
//!     .hostname("inferadb-engine-0")
//!     .state_dir("/var/lib/inferadb-engine/tailnet")
//!     .up()
//!     .await?;
//! let mut s = node.dial("inferadb-control.eu-west-1.ts.net:9090").await?;
//! s.write_all(b"hello over the tailnet").await?;
//!
//! // A server that knows who calls.
//! let listener = node.listen(8080)?;
//! let (stream, caller) = listener.accept().await?;
//! if caller.has_tag("tag:web") { /* serve `stream` */ }
//! # Ok(()) }
//! ```
//!
//! A [`Node`] owns one UDP socket, a WireGuard tunnel per peer (boringtun)
//! and a userspace TCP/IP stack (smoltcp, through `tailnet-netstack`).
//! [`Node::builder`] registers with the control server, applies every
//! netmap it sends (peers, ACL packet filter, DNS), finds direct paths
//! with disco and relays through DERP while there is none, answers
//! MagicDNS inside the node, and reconnects when control goes away.
//! [`Node::start`] runs the same data plane on a static peer list
//! ([`NodeConfig`]) with no control server.
//!
//! # The API beside Go's tsnet
//!
//! | tsnet (`tsnet.Server`, Go) | this crate |
//! |---|---|
//! | `Up(ctx)` | [`Node::builder`]`()…`[`up`](NodeBuilder::up)`()` |
//! | `Dial(ctx, "tcp", "name:port")` | [`Node::dial`], [`Node::dial_timeout`]; errors: [`DialError`] |
//! | `Dial(ctx, "udp", "name:port")` | [`Node::dial_udp`] → [`UdpConn`] |
//! | `Listen("tcp", ":port")` | [`Node::listen`] (accept names the [`Caller`]), [`Node::tcp_listen`] |
//! | `ListenPacket("udp", addr)` | [`Node::udp_bind`] |
//! | `ListenTLS("tcp", ":443")` | [`Node::listen_tls`] with your rustls `ServerConfig` (no automatic certificate) |
//! | `HTTPClient()` | `hyper_util::client::legacy::Client` over [`http::Connector`] (feature `hyper`, default) |
//! | `http.Serve(ln, h)` | `axum::serve(node.listen(80)?, app)` (feature `axum`); hyper's server on `TokioIo::new(stream)` |
//! | `LocalClient().WhoIs(ctx, addr)` | [`Node::whois`] → [`WhoIs`] (name, tags, user, addresses, OS, capabilities) |
//! | `LocalClient().Status(ctx)` | [`Node::status`] (shaped like `tailscale status --json`) |
//! | `LocalClient().Ping` | [`Node::ping`] (disco) |
//! | MagicDNS lookups | [`Node::resolve`], [`Node::dns_query`] |
//! | `Loopback()` (SOCKS5 for other programs) | `inferadb-mesh up --socks5 127.0.0.1:1080` / `--http-proxy` |
//! | `Close()` | [`Node::shutdown`] |
//!
//! reqwest cannot be given a custom transport (its connector is private);
//! point it at the `up --socks5` proxy instead (`vendor-notes/http-clients.md`).
//!
//! The `examples/` directory runs each of these against the embedded
//! coordinator on loopback: `http_whois` (axum, authorising callers by
//! tag), `hyper_client`, `udp_echo`.

#![forbid(unsafe_code)]

mod backoff;
mod builder;
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
