//! What discovery needs from the network, as traits: name resolution
//! ([`Resolve`]; MagicDNS through `tailnet::Node` in production) and TCP
//! connections for health checks ([`Connect`]; the node's `dial_addr`
//! in production, OS sockets in tests and outside a tailnet). Checks dial
//! each resolved address (every pod of a service), so the seam is an
//! address, not a URI: `tailnet::http::Connector` would pick one.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a name did not resolve, as the metrics' `result` / `reason`
/// labels say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResolveFailure {
    /// The name does not exist, or has no addresses (no pod of the
    /// service is online): `not_found`.
    NotFound,
    /// No answer in time: `timeout`.
    Timeout,
    /// Anything else (server failure, no MagicDNS, socket error): `error`.
    Error,
}

impl ResolveFailure {
    /// The label value: `not_found`, `timeout`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveFailure::NotFound => "not_found",
            ResolveFailure::Timeout => "timeout",
            ResolveFailure::Error => "error",
        }
    }
}

/// Resolves a name to addresses.
pub trait Resolve: Send + Sync + 'static {
    /// The resolver's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every address of `name` (A and AAAA).
    fn resolve(&self, name: &str) -> impl Future<Output = Result<Vec<IpAddr>, Self::Error>> + Send;

    /// How `err` counts in the metrics; everything is [`ResolveFailure::Error`]
    /// unless the resolver says better.
    fn classify(err: &Self::Error) -> ResolveFailure {
        let _ = err;
        ResolveFailure::Error
    }
}

/// Opens TCP connections (health checks).
pub trait Connect: Send + Sync + 'static {
    /// The connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Connects to `addr`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The operating system's resolver (`getaddrinfo` through tokio): for
/// `http_endpoints` host names, and names outside a tailnet.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    type Error = io::Error;

    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, io::Error> {
        let mut out: Vec<IpAddr> = Vec::new();
        for a in tokio::net::lookup_host((name, 0)).await? {
            if !out.contains(&a.ip()) {
                out.push(a.ip());
            }
        }
        Ok(out)
    }
}

/// OS TCP sockets (tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connect for TcpConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        tokio::net::TcpStream::connect(addr).await
    }
}

/// The embedded node: MagicDNS over its virtual interface and TCP over
/// the tunnel.
#[cfg(feature = "tailnet")]
mod node {
    use super::*;

    impl Resolve for tailnet::Node {
        type Error = tailnet::ResolveError;

        async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, tailnet::ResolveError> {
            tailnet::Node::resolve(self, name).await
        }

        fn classify(err: &tailnet::ResolveError) -> ResolveFailure {
            match err {
                tailnet::ResolveError::NxDomain(_) | tailnet::ResolveError::NoAddresses(_) => {
                    ResolveFailure::NotFound
                }
                tailnet::ResolveError::Timeout(_) => ResolveFailure::Timeout,
                _ => ResolveFailure::Error,
            }
        }
    }

    /// `Node::dial_addr`: an address no peer has fails at once (no route)
    /// instead of waiting out the check's timeout, and the error says
    /// which step failed (`tailnet::DialError` inside the `io::Error`).
    impl Connect for tailnet::Node {
        type Stream = tailnet::TcpStream;

        async fn connect(&self, addr: SocketAddr) -> io::Result<tailnet::TcpStream> {
            Ok(self.dial_addr(addr, tailnet::DIAL_TIMEOUT).await?)
        }
    }
}
