//! Listening with the caller named: [`Node::listen`] accepts connections
//! together with the caller's [`WhoIs`], and [`Node::listen_tls`] does the
//! same behind TLS with a rustls configuration the application provides
//! (tsnet's `Listen` and `ListenTLS`). With feature `axum` both are
//! `axum::serve::Listener`s.

use crate::node::{Node, NodeError};
use crate::whois::WhoIs;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tailnet_netstack::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// How long a TLS client may take over its handshake before it is
/// dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in flight at once on one listener; connections beyond
/// it are closed at once (the client retries).
pub const TLS_MAX_HANDSHAKES: usize = 64;

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's tailnet address and port.
    pub addr: SocketAddr,
    /// The node behind it, from the netmap at accept time (`None` when no
    /// node has the address).
    pub whois: Option<Arc<WhoIs>>,
}

impl Caller {
    /// Whether the calling node carries `tag` (`"tag:web"`).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.whois.as_ref().is_some_and(|w| w.has_tag(tag))
    }
}

/// A TCP listener on the node that names each caller ([`Node::listen`]).
#[derive(Debug)]
pub struct Listener {
    node: Node,
    inner: TcpListener,
}

impl Listener {
    /// The next connection and who made it.
    pub async fn accept(&self) -> io::Result<(TcpStream, Caller)> {
        let (stream, addr) = self.inner.accept().await?;
        let whois = self.node.whois(addr).map(Arc::new);
        Ok((stream, Caller { addr, whois }))
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    /// The address to give clients: the node's first tailnet address
    /// (IPv4 when it has one) with the port.
    pub fn local_addr(&self) -> SocketAddr {
        local_addr(&self.node, self.inner.port())
    }

    /// The plain listener inside.
    pub fn into_inner(self) -> TcpListener {
        self.inner
    }
}

fn local_addr(node: &Node, port: u16) -> SocketAddr {
    let ip = node
        .ipv4()
        .or_else(|| node.addresses().first().copied())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    SocketAddr::new(ip, port)
}

/// A TLS stream accepted by a [`TlsListener`].
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A TLS listener on the node ([`Node::listen_tls`]). Handshakes run in
/// tasks of their own, at most [`TLS_MAX_HANDSHAKES`] at once and each
/// within [`TLS_HANDSHAKE_TIMEOUT`], so a slow client delays no one;
/// `accept` returns connections whose handshake is complete.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream, Caller)>,
    task: JoinHandle<()>,
    local: SocketAddr,
}

impl TlsListener {
    /// The next connection whose handshake completed, and who made it.
    pub async fn accept(&mut self) -> io::Result<(TlsStream, Caller)> {
        self.ready
            .recv()
            .await
            .ok_or_else(|| io::Error::other("TLS listener closed"))
    }

    /// The node's address with the port listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_accept_loop(
    listener: Listener,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<(TlsStream, Caller)>,
) {
    let handshakes = Arc::new(Semaphore::new(TLS_MAX_HANDSHAKES));
    let mut errors = tailnet_listen::AcceptErrors::new("tailnet TLS listener");
    loop {
        let (stream, caller) = match listener.accept().await {
            Ok(c) => {
                errors.success();
                c
            }
            Err(e) => {
                errors.failed(&e).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(peer = %caller.addr, "TLS handshakes at their cap; connection closed");
            continue;
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, caller)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %caller.addr, error = %e, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %caller.addr, "TLS handshake timed out"),
            }
        });
    }
}

impl Node {
    /// Listens for TCP connections on `port` and names each caller
    /// (tsnet's `Listen`): `accept` returns the stream with the caller's
    /// [`WhoIs`] from the netmap.
    pub fn listen(&self, port: u16) -> Result<Listener, NodeError> {
        Ok(Listener {
            node: self.clone(),
            inner: self.tcp_listen(port)?,
        })
    }

    /// Listens for TLS connections on `port` with the application's
    /// rustls configuration (tsnet's `ListenTLS`, without the automatic
    /// certificate: bring your own).
    pub fn listen_tls(
        &self,
        port: u16,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<TlsListener, NodeError> {
        let listener = self.listen(port)?;
        let local = listener.local_addr();
        let (tx, rx) = mpsc::channel(TLS_MAX_HANDSHAKES);
        let task = tokio::spawn(tls_accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(config),
            tx,
        ));
        Ok(TlsListener {
            ready: rx,
            task,
            local,
        })
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use super::*;

    /// `axum::serve(node.listen(80)?, app)`; handlers see the caller with
    /// `ConnectInfo<Caller>` when served
    /// `into_make_service_with_connect_info::<Caller>()`.
    impl axum::serve::Listener for Listener {
        type Io = TcpStream;
        type Addr = Caller;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                match Listener::accept(self).await {
                    Ok(c) => return c,
                    Err(e) => {
                        // Only a listener removed under us fails; do not spin.
                        tracing::warn!(error = %e, "tailnet listener: accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }

        fn local_addr(&self) -> io::Result<Self::Addr> {
            Ok(Caller {
                addr: Listener::local_addr(self),
                whois: None,
            })
        }
    }

    impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Caller {
        fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
            stream.remote_addr().clone()
        }
    }

    impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
        for Caller
    {
        fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
            stream.remote_addr().clone()
        }
    }

    impl axum::serve::Listener for TlsListener {
        type Io = TlsStream;
        type Addr = Caller;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                match TlsListener::accept(self).await {
                    Ok(c) => return c,
                    Err(e) => {
                        tracing::warn!(error = %e, "tailnet TLS listener: accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }

        fn local_addr(&self) -> io::Result<Self::Addr> {
            Ok(Caller {
                addr: self.local,
                whois: None,
            })
        }
    }
}
