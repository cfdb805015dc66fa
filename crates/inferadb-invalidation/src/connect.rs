//! How the sender reaches an engine and how the receiver takes
//! connections: small traits with impls for plain TCP (tests, the
//! benchmark's no-tunnel baseline) and for the tailnet node.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Opens byte streams to `addr`.
pub trait Connect: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Plain TCP through the host's network stack (`TCP_NODELAY` set).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnect;

impl Connect for TcpConnect {
    type Stream = tokio::net::TcpStream;
    async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

impl<C: Connect> Connect for Arc<C> {
    type Stream = C::Stream;
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        (**self).connect(addr)
    }
}

/// Over the tailnet: `Node::dial_addr`, so an engine address no peer has
/// fails at once (no route) rather than after the send timeout, and the
/// error names the failed step (`tailnet::DialError` inside the
/// `io::Error`).
#[cfg(feature = "tailnet")]
impl Connect for tailnet::Node {
    type Stream = tailnet::TcpStream;
    async fn connect(&self, addr: SocketAddr) -> io::Result<tailnet::TcpStream> {
        Ok(self.dial_addr(addr, tailnet::DIAL_TIMEOUT).await?)
    }
}

/// Yields accepted byte streams (a listener). For a server that wants the
/// caller's tailnet identity, `tailnet::Listener` (from `Node::listen`)
/// implements it too.
pub trait Accept: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (s, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, peer))
    }
}

/// A tailnet listener (`node.tcp_listen(port)`).
#[cfg(feature = "tailnet")]
impl Accept for tailnet::TcpListener {
    type Stream = tailnet::TcpStream;
    fn accept(&self) -> impl Future<Output = io::Result<(tailnet::TcpStream, SocketAddr)>> + Send {
        tailnet::TcpListener::accept(self)
    }
}

/// A tailnet listener that names callers (`node.listen(port)`); the
/// receiver authenticates by signature, so only the address is passed on.
#[cfg(feature = "tailnet")]
impl Accept for tailnet::Listener {
    type Stream = tailnet::TcpStream;
    async fn accept(&self) -> io::Result<(tailnet::TcpStream, SocketAddr)> {
        let (s, caller) = tailnet::Listener::accept(self).await?;
        Ok((s, caller.addr))
    }
}
