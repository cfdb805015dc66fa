//! Arbitrary inbound packets into a `Netstack` with a TCP listener and a UDP
//! socket bound, driven the way the data plane drives it: `process` never
//! panics, never asks to be called again forever, only emits well-formed IP
//! packets from the node's own addresses, and once the application has let
//! go of everything, every TCP socket is freed within the TCP timeout.
//!
//! Input: records of
//! - a control byte `c`:
//!   - bit 0: fix the packet up: destination := the node's address of the
//!     packet's IP version, IP length field := the record's length, and for
//!     TCP, acknowledgement number := the next sequence number the stack
//!     last sent on that connection plus the original number's low byte as
//!     a signed offset (so the fuzzer reaches smoltcp without guessing
//!     addresses or the stack's random initial sequence numbers);
//!   - bit 1: run `process` after this packet (it also runs at the end);
//!   - bit 2: an application turn: accept, read from and write to accepted
//!     streams, echo a UDP datagram; when bits 0 and 1 are both clear, the
//!     turn drops the oldest stream;
//!   - bits 3-7: `t`, the clock moves `t³ × 8` ms before this packet
//!     (up to ~4 minutes, past every TCP timer);
//! - a little-endian u16 length, and that many bytes of packet (fewer if the
//!   input ends).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tailnet_netstack::{Netstack, NetstackConfig, TcpListener, TcpStream, UdpSocket};
use tailnet_wire::IpPacket;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1);
const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 53;
/// Consecutive `process` calls at one instant that may ask for another.
const MAX_IMMEDIATE: usize = 64;
const MAX_STREAMS: usize = 4;

/// The defaults with small buffers: the code paths are the same, and
/// libFuzzer's memory limit is not spent on windows.
fn config() -> NetstackConfig {
    NetstackConfig {
        tcp_rx_buffer: 16 * 1024,
        tcp_tx_buffer: 8 * 1024,
        listen_backlog: 4,
        udp_buffer: 8 * 1024,
        udp_buffer_packets: 8,
        ..NetstackConfig::default()
    }
}

/// A connection as seen from the remote end: (remote address, remote port,
/// local port).
type Conn = (IpAddr, u16, u16);

struct Driver {
    stack: Netstack,
    now: Instant,
    inbound: Vec<Vec<u8>>,
    outbound: Vec<Vec<u8>>,
    /// The sequence number after the last segment the stack sent, per
    /// connection.
    snd_nxt: HashMap<Conn, u32>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Where the transport header starts (`parse` succeeded on `pkt`).
fn transport_offset(pkt: &[u8]) -> usize {
    if pkt[0] >> 4 == 4 {
        usize::from(pkt[0] & 0x0f) * 4
    } else {
        40
    }
}

impl Driver {
    /// Runs the stack as the data plane does: again while it says "now".
    fn process(&mut self) {
        let mtu = self.stack.config().mtu;
        for _ in 0..MAX_IMMEDIATE {
            let delay = self
                .stack
                .process(self.now, &mut self.inbound, &mut self.outbound);
            assert!(self.inbound.is_empty(), "process leaves inbound packets");
            assert!(self.outbound.len() <= Netstack::burst_size());
            for pkt in self.outbound.drain(..) {
                assert!(
                    pkt.len() <= mtu,
                    "emitted {} bytes over MTU {mtu}",
                    pkt.len()
                );
                let view = IpPacket::parse(&pkt).expect("the stack emits valid IP");
                assert!(
                    view.src == IpAddr::V4(V4) || view.src == IpAddr::V6(V6),
                    "emitted a packet from {}",
                    view.src
                );
                if let (Some((sport, dport)), Some(flags)) = (view.ports(), view.tcp_flags()) {
                    let tcp = view.payload;
                    let header = usize::from(tcp[12] >> 4) * 4;
                    let len =
                        tcp.len().saturating_sub(header) as u32 + u32::from(flags & 0x03 != 0); // SYN or FIN
                    let next = be32(&tcp[4..8]).wrapping_add(len);
                    self.snd_nxt.insert((view.dst, dport, sport), next);
                }
            }
            match delay {
                Some(d) if d.is_zero() => continue,
                _ => return,
            }
        }
        panic!("process asked to run again {MAX_IMMEDIATE} times at one instant");
    }

    /// Queues one inbound packet, fixed up if asked.
    fn ingest(&mut self, mut pkt: Vec<u8>, fix: bool) {
        if fix {
            fix_up(&mut pkt);
            if let Ok(view) = IpPacket::parse(&pkt) {
                if let (Some((sport, dport)), Some(_)) = (view.ports(), view.tcp_flags()) {
                    if let Some(&next) = self.snd_nxt.get(&(view.src, sport, dport)) {
                        let at = transport_offset(&pkt) + 8;
                        let delta = i32::from(pkt[at + 3] as i8);
                        let ack = next.wrapping_add_signed(delta);
                        pkt[at..at + 4].copy_from_slice(&ack.to_be_bytes());
                    }
                }
            }
        }
        self.inbound.push(pkt);
    }
}

fn fix_up(pkt: &mut [u8]) {
    let len = pkt.len();
    match pkt.first().map(|b| b >> 4) {
        Some(4) if len >= 20 => {
            pkt[16..20].copy_from_slice(&V4.octets());
            pkt[2..4].copy_from_slice(&(len.min(65535) as u16).to_be_bytes());
        }
        Some(6) if len >= 40 => {
            pkt[24..40].copy_from_slice(&V6.octets());
            pkt[4..6].copy_from_slice(&((len - 40).min(65535) as u16).to_be_bytes());
        }
        _ => {}
    }
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

struct App {
    listener: TcpListener,
    udp: UdpSocket,
    streams: Vec<TcpStream>,
}

impl App {
    fn turn(&mut self, drop_oldest: bool) {
        let cx = &mut Context::from_waker(Waker::noop());
        if self.streams.len() < MAX_STREAMS {
            if let Poll::Ready(Ok((s, _))) = poll_once(std::pin::pin!(self.listener.accept())) {
                self.streams.push(s);
            }
        }
        let mut buf = [0u8; 4096];
        for s in &mut self.streams {
            let mut rb = ReadBuf::new(&mut buf);
            let _ = Pin::new(&mut *s).poll_read(cx, &mut rb);
            let _ = Pin::new(&mut *s).poll_write(cx, &[0x5a; 1500]);
        }
        if drop_oldest && !self.streams.is_empty() {
            self.streams.remove(0);
        }
        let received = {
            let recv = std::pin::pin!(self.udp.recv_from(&mut buf));
            match poll_once(recv) {
                Poll::Ready(Ok(r)) => Some(r),
                _ => None,
            }
        };
        if let Some((n, from)) = received {
            let _ = poll_once(std::pin::pin!(self.udp.send_to(&buf[..n], from)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let stack = Netstack::new(&[V4.into(), V6.into()], config()).unwrap();
    let mut app = App {
        listener: TcpListener::bind(&stack, TCP_PORT).unwrap(),
        udp: UdpSocket::bind(&stack, UDP_PORT).unwrap(),
        streams: Vec::new(),
    };
    let mut d = Driver {
        stack,
        now: Instant::now(),
        inbound: Vec::new(),
        outbound: Vec::new(),
        snd_nxt: HashMap::new(),
    };
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let (len, tail) = match tail {
            [a, b, tail @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), tail),
            _ => (tail.len(), &[][..]),
        };
        let len = len.min(tail.len());
        let pkt = tail[..len].to_vec();
        rest = &tail[len..];

        let t = u64::from(ctl >> 3);
        d.now += Duration::from_millis(t * t * t * 8);
        d.ingest(pkt, ctl & 1 != 0);
        if ctl & 2 != 0 {
            d.process();
        }
        if ctl & 4 != 0 {
            app.turn(ctl & 3 == 0);
            d.process();
        }
    }
    d.process();

    // Let go of everything; within the TCP timeout (120 s) plus a margin,
    // every TCP socket must be gone (closed, or aborted if never accepted).
    drop(app);
    for _ in 0..10 {
        d.now += Duration::from_secs(30);
        d.process();
    }
    assert_eq!(d.stack.stats().tcp_sockets, 0, "TCP sockets leaked");
});
