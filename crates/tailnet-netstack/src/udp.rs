//! Async UDP over the netstack.

use crate::stack::{to_smol_addr, to_std_addr, Netstack, NetstackError, Shared};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;

/// A UDP socket bound to one port of the node's addresses.
pub struct UdpSocket {
    shared: Arc<Shared>,
    handle: SocketHandle,
    port: u16,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("port", &self.port)
            .finish()
    }
}

impl UdpSocket {
    /// Binds `port` (0 picks a free ephemeral port).
    pub fn bind(stack: &Netstack, port: u16) -> Result<UdpSocket, NetstackError> {
        let shared = stack.shared.clone();
        let mut st = shared.lock();
        let port = if port == 0 {
            let mut found = None;
            for p in 49152..=65535u16 {
                if !st.udp_ports.contains(&p) {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or(NetstackError::NoPorts)?
        } else {
            port
        };
        if !st.udp_ports.insert(port) {
            return Err(NetstackError::PortInUse(port));
        }
        let cfg = &shared.config;
        let mk = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; cfg.udp_buffer_packets],
                crate::stack::socket_buffer(cfg.udp_buffer),
            )
        };
        let mut sock = udp::Socket::new(mk(), mk());
        if let Err(e) = sock.bind(port) {
            st.udp_ports.remove(&port);
            tracing::debug!(port, error = %e, "udp bind failed");
            return Err(NetstackError::PortInUse(port));
        }
        let handle = st.sockets.add(sock);
        drop(st);
        Ok(UdpSocket {
            shared,
            handle,
            port,
        })
    }

    /// The bound port.
    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// Sends one datagram to `target`; waits while the send buffer is full.
    pub async fn send_to(&self, data: &[u8], target: SocketAddr) -> io::Result<usize> {
        let meta = udp::UdpMetadata::from((to_smol_addr(target.ip()), target.port()));
        self.send_meta(data, target, meta).await
    }

    /// Sends one datagram to `target` from the local address `local` (one
    /// of the node's or a service address), as a server answering on the
    /// address it was asked on must.
    pub async fn send_from(
        &self,
        data: &[u8],
        target: SocketAddr,
        local: IpAddr,
    ) -> io::Result<usize> {
        let mut meta = udp::UdpMetadata::from((to_smol_addr(target.ip()), target.port()));
        meta.local_address = Some(to_smol_addr(local));
        self.send_meta(data, target, meta).await
    }

    /// Queues `data` with `meta` (destination `target`, maybe a source),
    /// waiting while the send buffer is full. Without a source, the node
    /// must have an address of `target`'s family.
    async fn send_meta(
        &self,
        data: &[u8],
        target: SocketAddr,
        meta: udp::UdpMetadata,
    ) -> io::Result<usize> {
        if data.len() > self.shared.config.udp_buffer {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram larger than the socket buffer",
            ));
        }
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if meta.local_address.is_none() && st.addr_for(target.ip()).is_none() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("this node has no address of {target}'s family"),
                )));
            }
            let s = st.sockets.get_mut::<udp::Socket>(self.handle);
            match s.send_slice(data, meta) {
                Ok(()) => {
                    drop(st);
                    self.shared.kick();
                    Poll::Ready(Ok(data.len()))
                }
                Err(udp::SendError::BufferFull) => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    e.to_string(),
                ))),
            }
        })
        .await
    }

    /// Receives one datagram; returns its length and sender. A datagram
    /// longer than `buf` is truncated, as with the OS's sockets.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from, _) = self.recv_from_to(buf).await?;
        Ok((n, from))
    }

    /// Like [`UdpSocket::recv_from`], also returning the local address the
    /// datagram was sent to (when smoltcp knows it).
    pub async fn recv_from_to(
        &self,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            let s = st.sockets.get_mut::<udp::Socket>(self.handle);
            match s.recv() {
                Ok((data, meta)) => {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    let from = SocketAddr::new(to_std_addr(meta.endpoint.addr), meta.endpoint.port);
                    Poll::Ready(Ok((n, from, meta.local_address.map(to_std_addr))))
                }
                Err(_) => {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.sockets.remove(self.handle);
        st.udp_ports.remove(&self.port);
    }
}
