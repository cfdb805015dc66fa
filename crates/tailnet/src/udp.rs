//! The node's one UDP socket: batched receive (recvmmsg + GRO) and batched
//! send (GSO) through `quinn-udp`.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use tokio::io::Interest;

/// Socket buffer we ask the kernel for; bursts of a few MiB arrive at once
/// when a TCP window opens on a fast path.
const SOCKET_BUFFER: usize = 8 << 20;
/// Receive buffers per batch, each big enough for a GRO super-datagram.
const RECV_BATCH: usize = 16;
const RECV_BUF: usize = 64 * 1024;

pub(crate) struct Udp {
    sock: tokio::net::UdpSocket,
    state: UdpSocketState,
    recv_bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// Pending GSO batch: same destination, equal-size segments (the last
    /// may be shorter).
    batch: Vec<u8>,
    batch_dest: Option<SocketAddr>,
    batch_seg: usize,
    batch_count: usize,
    batch_last_short: bool,
}

fn set_buffer(sock: &socket2::Socket, recv: bool) {
    // SO_*BUFFORCE passes rmem_max/wmem_max when we may (root, CAP_NET_ADMIN);
    // otherwise we get what the plain option allows.
    let forced = if recv {
        sock.set_recv_buffer_size(SOCKET_BUFFER)
    } else {
        sock.set_send_buffer_size(SOCKET_BUFFER)
    };
    if forced.is_err() {
        tracing::debug!(recv, "could not enlarge UDP socket buffer");
    }
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
            batch: Vec::with_capacity(64 * 1024),
            batch_dest: None,
            batch_seg: 0,
            batch_count: 0,
            batch_last_short: false,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Receives one batch without waiting; calls `f(source, datagram)` for
    /// each datagram. Returns how many datagrams arrived (0: nothing ready).
    pub(crate) fn try_recv(&mut self, mut f: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let Udp {
            sock,
            state,
            recv_bufs,
            meta,
            ..
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
            let stride = m.stride.max(1);
            for seg in data.chunks(stride) {
                f(m.addr, seg);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Queues one datagram; consecutive datagrams to one destination go out
    /// as one GSO send.
    pub(crate) async fn send(&mut self, dest: SocketAddr, data: &[u8]) -> io::Result<()> {
        let max = self.state.max_gso_segments().max(1);
        let fits = self.batch_dest == Some(dest)
            && !self.batch_last_short
            && self.batch_count < max
            && data.len() <= self.batch_seg
            && self.batch.len() + data.len() <= 64 * 1024 - 64;
        if !fits {
            self.flush().await?;
            self.batch_dest = Some(dest);
            self.batch_seg = data.len();
        }
        self.batch.extend_from_slice(data);
        self.batch_count += 1;
        if data.len() < self.batch_seg {
            self.batch_last_short = true;
        }
        Ok(())
    }

    /// Sends what [`Udp::send`] queued, waiting while the socket is full.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        let Some(dest) = self.batch_dest.take() else {
            return Ok(());
        };
        let transmit = Transmit {
            destination: dest,
            ecn: None,
            contents: &self.batch,
            segment_size: (self.batch_count > 1).then_some(self.batch_seg),
            src_ip: None,
        };
        let result = loop {
            let r = self.sock.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.sock).into(), &transmit)
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sock.writable().await?;
                }
                other => break other,
            }
        };
        self.batch.clear();
        self.batch_count = 0;
        self.batch_last_short = false;
        result
    }
}
