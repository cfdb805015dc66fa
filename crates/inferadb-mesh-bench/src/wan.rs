//! A userspace UDP impairment relay for `bench tunnel --wan`: this kernel
//! has no `netem`, so the WAN sits between two UDP sockets.
//!
//! The relay owns side A and side B. A datagram received on side A is
//! sent from side B to B's peer after crossing the A→B [`Link`] model;
//! one received on side B goes from side A to A's peer through the B→A
//! model. A side's peer is given up front or learned from the source of
//! the last datagram that side received. Each tunnel end is configured
//! with the relay's address on its side as the other end's endpoint.
//!
//! The shell runs on a thread of its own (a current-thread tokio runtime):
//! one loop drains whatever each socket has (up to [`BATCH`] datagrams a
//! wake), hands due datagrams out of the two [`LinkQueue`]s (binary heaps
//! on delivery time) and sleeps until the next one is due. No task per
//! datagram; buffers are recycled.

use anyhow::Context;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tailnet_wire::link::{Link, LinkConfig, LinkQueue, LinkStats};

/// Datagrams taken from one socket before the loop looks at the other.
pub const BATCH: usize = 64;
/// Largest datagram relayed (bigger ones are truncated by the kernel and
/// dropped here).
const MAX_DATAGRAM: usize = 65_535;
/// How close a delivery time must be for the relay to sleep precisely
/// instead of on tokio's millisecond timer.
const NEAR: Duration = Duration::from_millis(2);
/// Longest precise sleep between two looks at the sockets.
const PRECISE_STEP: Duration = Duration::from_micros(200);
/// Default bottleneck queue when a rate is given without one.
pub const DEFAULT_QUEUE_PKTS: usize = 1000;

/// A path condition: `RTT_MS[,LOSS_PCT[,RATE_MBIT[,QUEUE_PKTS]]]`. The RTT is
/// split as half the delay each way; loss, rate and queue apply to each
/// direction on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WanCondition {
    /// Round-trip time added, milliseconds.
    pub rtt_ms: f64,
    /// Random loss per direction, percent.
    pub loss_pct: f64,
    /// Bottleneck rate per direction, Mbit/s (None: unlimited).
    pub rate_mbit: Option<f64>,
    /// Tail-drop queue of the bottleneck, datagrams.
    pub queue_pkts: usize,
}

/// Why a `--wan` value was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WanParseError {
    /// Not `RTT_MS[,LOSS_PCT[,RATE_MBIT[,QUEUE_PKTS]]]`.
    #[error("expected RTT_MS[,LOSS_PCT[,RATE_MBIT[,QUEUE_PKTS]]], got {0:?}")]
    Shape(String),
    /// A field is not a number or out of range.
    #[error("{field} must be {range}, got {value:?}")]
    Field {
        /// Which field.
        field: &'static str,
        /// Its allowed range.
        range: &'static str,
        /// What was given.
        value: String,
    },
}

impl FromStr for WanCondition {
    type Err = WanParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.is_empty() || parts.len() > 4 || parts[0].is_empty() {
            return Err(WanParseError::Shape(s.to_string()));
        }
        let num = |i: usize, field, range, ok: &dyn Fn(f64) -> bool| {
            let v = parts[i];
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && ok(x) => Ok(x),
                _ => Err(WanParseError::Field {
                    field,
                    range,
                    value: v.to_string(),
                }),
            }
        };
        let rtt_ms = num(0, "RTT_MS", "0 to 10000", &|x| {
            (0.0..=10_000.0).contains(&x)
        })?;
        let loss_pct = match parts.get(1) {
            Some(_) => num(1, "LOSS_PCT", "0 to 100", &|x| (0.0..=100.0).contains(&x))?,
            None => 0.0,
        };
        let rate_mbit = match parts.get(2) {
            Some(_) => Some(num(2, "RATE_MBIT", "above 0 and at most 100000", &|x| {
                x > 0.0 && x <= 100_000.0
            })?),
            None => None,
        };
        let queue_pkts = match parts.get(3) {
            Some(_) => num(3, "QUEUE_PKTS", "a whole number from 1 to 1000000", &|x| {
                x.fract() == 0.0 && (1.0..=1e6).contains(&x)
            })? as usize,
            None => DEFAULT_QUEUE_PKTS,
        };
        Ok(WanCondition {
            rtt_ms,
            loss_pct,
            rate_mbit,
            queue_pkts,
        })
    }
}

impl fmt::Display for WanCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms RTT", self.rtt_ms)?;
        if self.loss_pct > 0.0 {
            write!(f, ", {} % loss", self.loss_pct)?;
        }
        if let Some(r) = self.rate_mbit {
            write!(f, ", {r} Mbit/s, {}-packet queue", self.queue_pkts)?;
        }
        Ok(())
    }
}

impl WanCondition {
    /// The model of one direction.
    pub fn link_config(&self) -> LinkConfig {
        LinkConfig {
            delay: Duration::from_secs_f64(self.rtt_ms / 2.0 / 1000.0),
            loss: self.loss_pct / 100.0,
            rate_bps: self.rate_mbit.map(|r| (r * 1e6) as u64),
            queue_packets: self.queue_pkts,
            ..Default::default()
        }
    }
}

/// Counters of a running relay, per direction.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayStats {
    /// A → B.
    pub a_to_b: LinkStats,
    /// B → A.
    pub b_to_a: LinkStats,
    /// Datagrams dropped for want of a peer address or a send error.
    pub unsent: u64,
}

/// A running relay; stopped (and its thread joined) on drop.
pub struct Relay {
    addr_a: SocketAddr,
    addr_b: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    peers: tokio::sync::mpsc::UnboundedSender<(Side, SocketAddr)>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<SharedStats>,
}

/// One side of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Side A.
    A,
    /// Side B.
    B,
}

/// The relay thread's counters, read by [`Relay::stats`].
#[derive(Default)]
struct SharedStats(std::sync::Mutex<RelayStats>);

impl SharedStats {
    fn get(&self) -> RelayStats {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn set(&self, v: RelayStats) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }
}

/// Where a relay listens and forwards.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Address of side A (the A end sends here).
    pub bind_a: SocketAddr,
    /// Address of side B.
    pub bind_b: SocketAddr,
    /// The A end's address, if known (else learned).
    pub peer_a: Option<SocketAddr>,
    /// The B end's address, if known (else learned).
    pub peer_b: Option<SocketAddr>,
    /// The A → B direction.
    pub a_to_b: LinkConfig,
    /// The B → A direction.
    pub b_to_a: LinkConfig,
    /// Seed of the random draws (loss, jitter).
    pub seed: u64,
}

impl RelaySpec {
    /// Both directions as `cond` says, between `bind_a` and `bind_b`.
    pub fn symmetric(
        bind_a: SocketAddr,
        bind_b: SocketAddr,
        cond: &WanCondition,
        seed: u64,
    ) -> RelaySpec {
        RelaySpec {
            bind_a,
            bind_b,
            peer_a: None,
            peer_b: None,
            a_to_b: cond.link_config(),
            b_to_a: cond.link_config(),
            seed,
        }
    }
}

fn udp_socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Room for bursts while the relay thread waits for a core (the kernel
    // caps these at net.core.{r,w}mem_max).
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("relay cannot bind {addr}"))?;
    Ok(s.into())
}

impl Relay {
    /// Binds both sides and starts relaying on a thread of its own.
    pub fn start(spec: RelaySpec) -> anyhow::Result<Relay> {
        let a = udp_socket(spec.bind_a)?;
        let b = udp_socket(spec.bind_b)?;
        let (addr_a, addr_b) = (a.local_addr()?, b.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (peers_tx, peers_rx) = tokio::sync::mpsc::unbounded_channel();
        let stats = Arc::new(SharedStats::default());
        let st = stats.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("wan-relay".into())
            .spawn(move || {
                rt.block_on(async move {
                    if let Err(e) = run(a, b, spec, stop_rx, peers_rx, &st).await {
                        eprintln!("wan relay stopped: {e:#}");
                    }
                })
            })?;
        Ok(Relay {
            addr_a,
            addr_b,
            stop: Some(stop_tx),
            peers: peers_tx,
            thread: Some(thread),
            stats,
        })
    }

    /// Side A's address: the A end's endpoint for the B end.
    pub fn addr_a(&self) -> SocketAddr {
        self.addr_a
    }

    /// Side B's address: the B end's endpoint for the A end.
    pub fn addr_b(&self) -> SocketAddr {
        self.addr_b
    }

    /// Sets the address of the end on `side` (until a datagram from
    /// elsewhere arrives on that side).
    pub fn set_peer(&self, side: Side, addr: SocketAddr) {
        let _ = self.peers.send((side, addr));
    }

    /// Counters so far.
    pub fn stats(&self) -> RelayStats {
        self.stats.get()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    a: std::net::UdpSocket,
    b: std::net::UdpSocket,
    spec: RelaySpec,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    mut peers: tokio::sync::mpsc::UnboundedReceiver<(Side, SocketAddr)>,
    stats: &SharedStats,
) -> anyhow::Result<()> {
    // I/O on the std sockets (a syscall every time, so the precise sleeps
    // below see new datagrams); the tokio handles on the same sockets only
    // wait for readiness.
    let (a_io, b_io) = (a.try_clone()?, b.try_clone()?);
    let a = tokio::net::UdpSocket::from_std(a)?;
    let b = tokio::net::UdpSocket::from_std(b)?;
    let mut peer_a = spec.peer_a;
    let mut peer_b = spec.peer_b;
    let mut ab = LinkQueue::new(Link::new(spec.a_to_b, spec.seed));
    let mut ba = LinkQueue::new(Link::new(spec.b_to_a, spec.seed ^ 0x5eed_5eed_5eed_5eed));
    let origin = tokio::time::Instant::now();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    let mut unsent = 0u64;
    loop {
        let now = origin.elapsed();
        unsent += flush(&b_io, &mut ab, peer_b, now, &mut pool);
        unsent += flush(&a_io, &mut ba, peer_a, now, &mut pool);
        stats.set(RelayStats {
            a_to_b: ab.link().stats(),
            b_to_a: ba.link().stats(),
            unsent,
        });
        let next = match (ab.next_due(), ba.next_due()) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        match next {
            // Due sooner than tokio's 1 ms timer can tell: sleep precisely
            // (nanosleep) in short steps, draining between them, so
            // datagrams leave on time rather than in 1 ms clumps, and an
            // arrival is stamped at most PRECISE_STEP late.
            Some(at) if at.saturating_sub(origin.elapsed()) < NEAR => {
                std::thread::sleep(at.saturating_sub(origin.elapsed()).min(PRECISE_STEP));
                if !matches!(
                    stop.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                ) {
                    break;
                }
                while let Ok((side, addr)) = peers.try_recv() {
                    match side {
                        Side::A => peer_a = Some(addr),
                        Side::B => peer_b = Some(addr),
                    }
                }
            }
            _ => tokio::select! {
                _ = &mut stop => break,
                Some((side, addr)) = peers.recv() => match side {
                    Side::A => peer_a = Some(addr),
                    Side::B => peer_b = Some(addr),
                },
                r = a.readable() => r?,
                r = b.readable() => r?,
                _ = tokio::time::sleep_until(origin + next.unwrap_or_default().saturating_sub(NEAR)),
                    if next.is_some() => {}
            },
        }
        // Both sides every wake: a busy side cannot starve the other.
        for (io, tokio_sock, queue, peer) in [
            (&a_io, &a, &mut ab, &mut peer_a),
            (&b_io, &b, &mut ba, &mut peer_b),
        ] {
            if drain(io, queue, peer, origin, &mut scratch, &mut pool)? {
                // Emptied: let tokio wait for the next datagram again.
                let _ = tokio_sock.try_io(tokio::io::Interest::READABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
        }
    }
    stats.set(RelayStats {
        a_to_b: ab.link().stats(),
        b_to_a: ba.link().stats(),
        unsent,
    });
    Ok(())
}

/// Takes up to [`BATCH`] datagrams from `sock` into `queue`; the sender
/// becomes the side's peer. True when the socket has no more.
fn drain(
    sock: &std::net::UdpSocket,
    queue: &mut LinkQueue<Vec<u8>>,
    peer: &mut Option<SocketAddr>,
    origin: tokio::time::Instant,
    scratch: &mut [u8],
    pool: &mut Vec<Vec<u8>>,
) -> anyhow::Result<bool> {
    for _ in 0..BATCH {
        match sock.recv_from(scratch) {
            Ok((n, from)) => {
                *peer = Some(from);
                // A buffer the datagram's size, not the scratch's: memory
                // in flight is what the path holds.
                let mut buf = pool.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(&scratch[..n]);
                // Lost or tail-dropped: the buffer goes with the datagram.
                queue.push(buf, n, origin.elapsed());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            // ICMP errors of earlier sends (port unreachable) surface here.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e).context("relay receive"),
        }
    }
    Ok(false)
}

/// Sends every datagram of `queue` due at `now` to `peer`; returns how many
/// could not be sent.
fn flush(
    sock: &std::net::UdpSocket,
    queue: &mut LinkQueue<Vec<u8>>,
    peer: Option<SocketAddr>,
    now: Duration,
    pool: &mut Vec<Vec<u8>>,
) -> u64 {
    let mut unsent = 0;
    while let Some(p) = queue.pop_due(now) {
        match peer {
            Some(to) if sock.send_to(&p, to).is_ok() => {}
            _ => unsent += 1,
        }
        if pool.len() < 4096 {
            pool.push(p);
        }
    }
    unsent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_with_defaults_and_refuse_nonsense() {
        let c: WanCondition = "70".parse().unwrap();
        assert_eq!(
            c,
            WanCondition {
                rtt_ms: 70.0,
                loss_pct: 0.0,
                rate_mbit: None,
                queue_pkts: DEFAULT_QUEUE_PKTS
            }
        );
        let c: WanCondition = "70,0.01,500,1000".parse().unwrap();
        assert_eq!(
            (c.loss_pct, c.rate_mbit, c.queue_pkts),
            (0.01, Some(500.0), 1000)
        );
        let l = c.link_config();
        assert_eq!(l.delay, Duration::from_millis(35));
        assert_eq!(l.rate_bps, Some(500_000_000));
        assert!((l.loss - 0.0001).abs() < 1e-12);
        assert_eq!(
            c.to_string(),
            "70 ms RTT, 0.01 % loss, 500 Mbit/s, 1000-packet queue"
        );
        for bad in [
            "",
            "x",
            "70,101",
            "70,-1",
            "70,0,0",
            "70,0,10,0",
            "70,0,10,1.5",
            "1,2,3,4,5",
            "NaN",
        ] {
            assert!(bad.parse::<WanCondition>().is_err(), "{bad:?} accepted");
        }
        let e = "70,abc".parse::<WanCondition>().unwrap_err();
        assert!(e.to_string().contains("LOSS_PCT"), "{e}");
    }

    /// A UDP echo server on loopback behind a relay with `cond`; returns
    /// the relay and a client socket whose datagrams to `relay.addr_a()`
    /// come back through both directions.
    async fn echo_through(cond: &str) -> (Relay, tokio::net::UdpSocket) {
        let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut spec = RelaySpec::symmetric(lo, lo, &cond.parse().unwrap(), 1);
        spec.peer_b = Some(echo_addr);
        let relay = Relay::start(spec).unwrap();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(relay.addr_a()).await.unwrap();
        (relay, client)
    }

    #[tokio::test]
    async fn relay_adds_the_configured_round_trip() {
        let (relay, client) = echo_through("60").await;
        let mut buf = [0u8; 64];
        let mut rtts = Vec::new();
        for i in 0..5u8 {
            let t = std::time::Instant::now();
            client.send(&[i; 64]).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("echo within 2 s")
                .unwrap();
            assert_eq!(&buf[..n], &[i; 64]);
            rtts.push(t.elapsed());
        }
        // Never early; late by at most a timer tick and scheduling (the
        // bound is loose for loaded CI machines).
        for r in &rtts {
            assert!(*r >= Duration::from_millis(60), "{rtts:?}");
            assert!(*r < Duration::from_millis(160), "{rtts:?}");
        }
        let s = relay.stats();
        assert_eq!((s.a_to_b.delivered, s.b_to_a.delivered), (5, 5));
    }

    #[tokio::test]
    async fn relay_with_total_loss_delivers_nothing() {
        let (relay, client) = echo_through("0,100").await;
        for i in 0..50u8 {
            client.send(&[i; 100]).await.unwrap();
        }
        let mut buf = [0u8; 128];
        let got = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await;
        assert!(got.is_err(), "a datagram crossed a 100 % loss relay");
        let s = relay.stats();
        assert_eq!((s.a_to_b.offered, s.a_to_b.lost), (50, 50));
        assert_eq!(s.b_to_a.offered, 0);
    }
}
