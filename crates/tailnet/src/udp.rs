//! The node's one UDP socket: batched receive (recvmmsg + GRO) and batched
//! send (GSO) through `quinn-udp`.
//!
//! Outgoing datagrams are encrypted straight into one buffer
//! ([`Outgoing`]); runs of equal-size datagrams to one destination leave as
//! one GSO `sendmsg` without being copied again.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tailnet_engine::Outgoing;
use tokio::io::Interest;

/// Socket buffer we ask the kernel for; bursts of a few MiB arrive at once
/// when a TCP window opens on a fast path.
const SOCKET_BUFFER: usize = 8 << 20;
/// Receive buffers per batch, each big enough for a GRO super-datagram.
const RECV_BATCH: usize = 16;
const RECV_BUF: usize = 64 * 1024;
/// Largest GSO super-datagram we hand the kernel.
const MAX_GSO_BYTES: usize = 65_000;

pub(crate) struct Udp {
    sock: tokio::net::UdpSocket,
    state: UdpSocketState,
    recv_bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

fn set_buffer(sock: &socket2::Socket, recv: bool) {
    let plain = if recv {
        sock.set_recv_buffer_size(SOCKET_BUFFER)
    } else {
        sock.set_send_buffer_size(SOCKET_BUFFER)
    };
    if plain.is_err() {
        tracing::debug!(recv, "could not enlarge UDP socket buffer");
    }
    // SO_*BUFFORCE passes rmem_max/wmem_max when we may (root or
    // CAP_NET_ADMIN); without it we keep what the plain option gave.
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        let _ = if recv {
            setsockopt(sock, sockopt::RcvBufForce, &SOCKET_BUFFER)
        } else {
            setsockopt(sock, sockopt::SndBufForce, &SOCKET_BUFFER)
        };
    }
}

impl Udp {
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Udp> {
        let domain = socket2::Domain::for_address(addr);
        let sock =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if addr.is_ipv6() {
            // One socket for both families when bound to [::].
            let _ = sock.set_only_v6(false);
        }
        sock.bind(&addr.into())?;
        set_buffer(&sock, true);
        set_buffer(&sock, false);
        sock.set_nonblocking(true)?;
        let std_sock: std::net::UdpSocket = sock.into();
        let state = UdpSocketState::new((&std_sock).into())?;
        let sock = tokio::net::UdpSocket::from_std(std_sock)?;
        Ok(Udp {
            sock,
            state,
            recv_bufs: (0..RECV_BATCH).map(|_| vec![0u8; RECV_BUF]).collect(),
            meta: vec![RecvMeta::default(); RECV_BATCH],
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Receives one batch without waiting; calls `f(source, datagram)` for
    /// each datagram, in place. Returns how many arrived (0: none ready).
    pub(crate) fn try_recv(&mut self, mut f: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let Udp {
            sock,
            state,
            recv_bufs,
            meta,
        } = self;
        let mut slices: Vec<IoSliceMut<'_>> =
            recv_bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let res = sock.try_io(Interest::READABLE, || {
            state.recv((&*sock).into(), &mut slices, meta)
        });
        let msgs = match res {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut count = 0;
        for (m, buf) in meta.iter().zip(slices.iter()).take(msgs) {
            let data = &buf[..m.len];
            if data.is_empty() {
                // An empty datagram is still a datagram: let it be counted.
                f(m.addr, data);
                count += 1;
                continue;
            }
            // With GRO one buffer holds several datagrams of `stride` bytes.
            for seg in data.chunks(m.stride.max(1)) {
                f(m.addr, seg);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Sends everything in `out` (runs of equal-size datagrams to one
    /// destination as one GSO send), waiting while the socket is full.
    /// Returns how many datagrams the kernel refused.
    pub(crate) async fn send_all(&mut self, out: &mut Outgoing) -> u64 {
        let max_segs = self.state.max_gso_segments().max(1);
        let mut failed = 0u64;
        let mut i = 0;
        while i < out.items().len() {
            let (dest, start, seg) = out.items()[i];
            let mut end = start + seg;
            let mut j = i + 1;
            while j < out.items().len() && j - i < max_segs {
                let (d, s, l) = out.items()[j];
                if d != dest || s != end || l > seg || end + l - start > MAX_GSO_BYTES {
                    break;
                }
                end += l;
                j += 1;
                if l < seg {
                    break; // a shorter datagram can only end a GSO run
                }
            }
            let transmit = Transmit {
                destination: dest,
                ecn: None,
                contents: &out.bytes()[start..end],
                segment_size: (j - i > 1).then_some(seg),
                src_ip: None,
            };
            if let Err(e) = self.send_one(&transmit).await {
                failed += (j - i) as u64;
                tracing::debug!(%dest, error = %e, "UDP send failed");
            }
            i = j;
        }
        out.clear();
        failed
    }

    async fn send_one(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        loop {
            let r = self.sock.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.sock).into(), transmit)
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sock.writable().await?;
                }
                other => return other,
            }
        }
    }
}

/// The UDP endpoints to report for a socket bound to `bound`: that address
/// if it is specific, else every up interface's address with the port
/// (loopback only when there is nothing else).
pub fn local_endpoints(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let want_v6 = bound.is_ipv6();
    let mut out = Vec::new();
    let mut loopback = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let Some(addr) = ifa.address else { continue };
            let ip: IpAddr = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                if !want_v6 {
                    continue;
                }
                let ip = v6.ip();
                // Link-local addresses need a scope; skip them.
                if ip.segments()[0] & 0xffc0 == 0xfe80 {
                    continue;
                }
                IpAddr::V6(ip)
            } else {
                continue;
            };
            let ep = SocketAddr::new(ip, bound.port());
            if ip.is_loopback() {
                loopback.push(ep);
            } else if !out.contains(&ep) {
                out.push(ep);
            }
        }
    }
    if out.is_empty() {
        loopback.truncate(1);
        if loopback.is_empty() {
            loopback.push(SocketAddr::from((Ipv4Addr::LOCALHOST, bound.port())));
        }
        return loopback;
    }
    out
}
