//! Async TCP over the netstack.

use crate::stack::{
    from_smol_duration, new_tcp_socket, to_smol_addr, to_std_addr, Netstack, NetstackError, Shared,
};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A snapshot of one connection's TCP state ([`TcpStream::info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Congestion window, bytes.
    pub congestion_window: usize,
    /// Smoothed round-trip time (None before the first sample).
    pub smoothed_rtt: Option<std::time::Duration>,
    /// Current retransmission timeout.
    pub retransmission_timeout: std::time::Duration,
    /// Bytes written and not yet acknowledged by the peer.
    pub send_queue: usize,
    /// Bytes received and not yet read.
    pub recv_queue: usize,
    /// Send buffer size, bytes.
    pub send_capacity: usize,
    /// Receive buffer size, bytes (the largest window we advertise).
    pub recv_capacity: usize,
    /// Segments sent again.
    pub retransmitted_segments: u64,
    /// Retransmission timeouts that expired.
    pub timeouts: u64,
    /// Entries into fast retransmit or SACK-based recovery.
    pub recoveries: u64,
    /// Tail loss probes sent (RFC 8985).
    pub tail_loss_probes: u64,
    /// In-order payload bytes received.
    pub bytes_received: u64,
}

/// A TCP connection on the tailnet. Reading and writing follow tokio's
/// `AsyncRead`/`AsyncWrite`; `shutdown` half-closes (sends FIN) and reading
/// continues; dropping the stream closes it gracefully.
pub struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
    local: SocketAddr,
    peer: SocketAddr,
    /// Local port to release on drop (outbound connections only).
    ephemeral: Option<u16>,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

fn io_err(e: NetstackError) -> io::Error {
    let kind = match e {
        NetstackError::PortInUse(_) => io::ErrorKind::AddrInUse,
        NetstackError::NoPorts => io::ErrorKind::AddrNotAvailable,
        _ => io::ErrorKind::InvalidInput,
    };
    io::Error::new(kind, e)
}

impl TcpStream {
    /// Opens a connection to `remote` from this node's address of the same
    /// family. Fails with `ConnectionRefused` on RST and `TimedOut` when the
    /// peer never answers (after the stack's TCP timeout).
    pub async fn connect(stack: &Netstack, remote: SocketAddr) -> io::Result<TcpStream> {
        let shared = stack.shared.clone();
        let (handle, port, local_ip) = {
            let mut st = shared.lock();
            let local_ip = st.addr_for(remote.ip()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("this node has no address of {remote}'s family"),
                )
            })?;
            let port = st.alloc_port().map_err(io_err)?;
            let mut sock = new_tcp_socket(&shared.config);
            let remote_ep = (to_smol_addr(remote.ip()), remote.port());
            let local_ep = (to_smol_addr(local_ip), port);
            if let Err(e) = sock.connect(st.iface_context(), remote_ep, local_ep) {
                st.tcp_ports.remove(&port);
                return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()));
            }
            (st.sockets.add(sock), port, local_ip)
        };
        shared.kick();
        let stream = TcpStream {
            shared,
            handle,
            local: SocketAddr::new(local_ip, port),
            peer: remote,
            ephemeral: Some(port),
        };
        poll_fn(|cx| stream.poll_established(cx)).await?;
        Ok(stream)
    }

    fn poll_established(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let s = st.sockets.get_mut::<tcp::Socket>(self.handle);
        match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
            tcp::State::Closed => {
                // RST, or the SYN timed out.
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("connection to {} refused or timed out", self.peer),
                )))
            }
            _ => Poll::Ready(Ok(())),
        }
    }

    /// The connection's TCP state, as Linux's `TCP_INFO` tells it: the
    /// congestion window, round-trip estimate and loss-recovery counters.
    pub fn info(&self) -> TcpInfo {
        let mut st = self.shared.lock();
        let s = st.sockets.get_mut::<tcp::Socket>(self.handle);
        let c = s.counters();
        TcpInfo {
            congestion_window: s.congestion_window(),
            smoothed_rtt: s.smoothed_rtt().map(from_smol_duration),
            retransmission_timeout: from_smol_duration(s.retransmission_timeout()),
            send_queue: s.send_queue(),
            recv_queue: s.recv_queue(),
            send_capacity: s.send_capacity(),
            recv_capacity: s.recv_capacity(),
            retransmitted_segments: c.retransmitted_segments,
            timeouts: c.timeouts,
            recoveries: c.recoveries,
            tail_loss_probes: c.tail_loss_probes,
            bytes_received: c.bytes_received,
        }
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    fn from_accepted(shared: Arc<Shared>, handle: SocketHandle) -> TcpStream {
        let (local, peer) = {
            let st = shared.lock();
            let s = st.sockets.get::<tcp::Socket>(handle);
            let l = s
                .local_endpoint()
                .map(|e| SocketAddr::new(to_std_addr(e.addr), e.port));
            let p = s
                .remote_endpoint()
                .map(|e| SocketAddr::new(to_std_addr(e.addr), e.port));
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            (l.unwrap_or(unspecified), p.unwrap_or(unspecified))
        };
        TcpStream {
            shared,
            handle,
            local,
            peer,
            ephemeral: None,
        }
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        let s = st.sockets.get_mut::<tcp::Socket>(this.handle);
        if s.can_recv() {
            let dst = buf.initialize_unfilled();
            let n = s.recv_slice(dst).unwrap_or_default();
            buf.advance(n);
            drop(st);
            // Reading opens the window; let smoltcp announce it.
            this.shared.kick();
            return Poll::Ready(Ok(()));
        }
        if !s.may_recv() {
            // FIN received (EOF) or the connection is gone.
            return Poll::Ready(Ok(()));
        }
        s.register_recv_waker(cx.waker());
        Poll::Pending
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        let s = st.sockets.get_mut::<tcp::Socket>(this.handle);
        if !s.may_send() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection closed for writing",
            )));
        }
        if s.can_send() {
            let n = s.send_slice(data).unwrap_or(0);
            drop(st);
            this.shared.kick();
            return Poll::Ready(Ok(n));
        }
        // Send buffer full: wait for the peer to acknowledge. This is the
        // backpressure that keeps a fast writer from queueing without bound.
        s.register_send_waker(cx.waker());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared
            .lock()
            .sockets
            .get_mut::<tcp::Socket>(this.handle)
            .close();
        this.shared.kick();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let s = st.sockets.get_mut::<tcp::Socket>(self.handle);
        if s.recv_queue() > 0 {
            // Closing with unread data resets the connection, as Linux
            // does: the peer learns at once that nobody will read it.
            s.abort();
        } else {
            s.close();
        }
        st.closing.push(self.handle);
        if let Some(p) = self.ephemeral {
            st.tcp_ports.remove(&p);
        }
        drop(st);
        self.shared.kick();
    }
}

/// A TCP listener on one port of the node's addresses.
pub struct TcpListener {
    shared: Arc<Shared>,
    port: u16,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("port", &self.port)
            .finish()
    }
}

impl TcpListener {
    /// Listens on `port` with the stack's default backlog.
    pub fn bind(stack: &Netstack, port: u16) -> Result<TcpListener, NetstackError> {
        Self::bind_with_backlog(stack, port, stack.shared.config.listen_backlog)
    }

    /// Listens on `port`, holding at most `backlog` connections that are
    /// handshaking or waiting in the accept queue; SYNs beyond it are dropped
    /// (the peer retransmits).
    pub fn bind_with_backlog(
        stack: &Netstack,
        port: u16,
        backlog: usize,
    ) -> Result<TcpListener, NetstackError> {
        let mut st = stack.shared.lock();
        if port == 0 || st.listeners.contains_key(&port) || st.tcp_ports.contains(&port) {
            return Err(NetstackError::PortInUse(port));
        }
        st.listeners.insert(
            port,
            crate::stack::Listener {
                backlog: backlog.max(1),
                pending: Vec::new(),
                ready: VecDeque::new(),
                waker: None,
                syns_since_poll: 0,
            },
        );
        Ok(TcpListener {
            shared: stack.shared.clone(),
            port,
        })
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the next established connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let handle = poll_fn(|cx| {
            let mut st = self.shared.lock();
            let Some(l) = st.listeners.get_mut(&self.port) else {
                return Poll::Ready(Err(io::Error::other("listener closed")));
            };
            if let Some(h) = l.ready.pop_front() {
                return Poll::Ready(Ok(h));
            }
            l.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        let s = TcpStream::from_accepted(self.shared.clone(), handle);
        let peer = s.peer_addr();
        Ok((s, peer))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(l) = st.listeners.remove(&self.port) {
            for h in l.pending.into_iter().chain(l.ready) {
                st.sockets.get_mut::<tcp::Socket>(h).abort();
                st.closing.push(h);
            }
        }
        drop(st);
        self.shared.kick();
    }
}
