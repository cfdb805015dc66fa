//! The node's DERP client: one connection to one relay of the DERP map,
//! kept up on its own task (`shared/protocol/derp.md`; Go's
//! `derp/derphttp` and `derp/derp_client.go` at v1.90.9). The protocol is
//! `tailnet_wire::derp`; this module is its tokio shell.
//!
//! ```text
//! spawn_derp(region, &DerpTarget, node key, events, sink) ─▶ task:
//!   TCP (1.5 s) [+ TLS, no ALPN; InsecureForTests: no verification]
//!   GET /derp, Upgrade: DERP ─▶ 101 ─▶ ServerKey ─▶ ClientInfo (sealed)
//!   + NotePreferred(1) for the home region ─▶ ServerInfo opens ─▶ Connected
//!   then, reader and writer side by side:
//!         RecvPacket ─▶ PacketSink (the data plane), PeerGone ─▶
//!         DerpEvent::PeerGone, Ping ─▶ Pong, DerpHandle::send ─▶ SendPacket;
//!   nothing heard for 120 s, an error, or a close ─▶ Disconnected,
//!   reconnect after 0.5 s … 30 s (±25 %), until DerpHandle::shutdown.
//! ```
//!
//! The whole connect (dial, TLS, upgrade, ServerKey, ServerInfo) has 10 s.
//! `Connected` is reported when ServerInfo arrives (as magicsock does);
//! `Disconnected` only after a `Connected`, so failed attempts are logged,
//! not reported. Packets handed to [`DerpHandle::send`] while no connection
//! is up are refused, not queued.

use crate::stats::RelayCounters;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tailnet_wire::control::DerpNode;
use tailnet_wire::derp::{self, ClientInfo, Frame, FrameReader, PeerGoneReason};
use tailnet_wire::PublicKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

mod tls;

#[cfg(test)]
mod tests;

/// Most packets in one batch for the data plane (one read from the relay
/// is at most 64 KiB: ~50 full-size WireGuard packets).
const MAX_BATCH: usize = 64;
/// Packets [`DerpHandle::send`] may queue before it refuses more.
pub(crate) const SEND_QUEUE: usize = 512;
/// Limit for one TCP dial (Go's `dialNodeTimeout`).
const DIAL_TIMEOUT: Duration = Duration::from_millis(1500);
/// Limit for the whole connect, through ServerInfo (Go: 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for one write to the relay.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default port with TLS (Go: 443) and without (Go's
/// `TS_DEBUG_USE_DERP_HTTP` default: 3340).
const DEFAULT_TLS_PORT: u16 = 443;
const DEFAULT_PLAIN_PORT: u16 = 3340;

/// What a DERP connection tells the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DerpEvent {
    /// The relay accepted us (its ServerInfo opened); sends now go out.
    Connected {
        /// The region.
        region: u16,
    },
    /// A connection that was `Connected` ended; the task reconnects.
    Disconnected {
        /// The region.
        region: u16,
        /// Why, one line.
        error: String,
    },
    /// `key` is not reachable through this relay.
    PeerGone {
        /// The peer's node key.
        key: PublicKey,
        /// True: the relay does not know it (answer to our disco packet);
        /// false: it was connected and left.
        not_here: bool,
    },
}

/// Where a client puts the packets relayed to us (WireGuard or disco, by
/// sender node key): straight into the data plane's relay link, not
/// through [`DerpEvent`]s, so a packet takes one channel hop.
#[derive(Debug, Clone)]
pub(crate) struct PacketSink {
    /// The data plane's inbound relay channel: the packets of one read
    /// from the relay go as one batch.
    pub(crate) packets: mpsc::Sender<crate::dataplane::RelayBatch>,
    /// `rx_packets` counts what arrived.
    pub(crate) counters: Arc<RelayCounters>,
}

/// Which relays speak plain HTTP instead of TLS. Go's rule
/// (`derphttp_client.go` `useHTTPS`, v1.90.9): a region client always
/// speaks TLS to the map's nodes (`InsecureForTests` only skips
/// verification); `TS_DEBUG_USE_DERP_HTTP=1` turns every relay to plain
/// HTTP, with port 3340 when `DERPPort` is 0. A DERP map has no field for
/// the scheme. Our one addition: a node that is the very endpoint of a
/// plain `http://` control URL (same host or address, same port) is that
/// server's own relay (our coordinator serves DERP on its control listener)
/// and is spoken to in plain HTTP, as the control connection is. See
/// `vendor-notes/derp.md`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DerpScheme {
    /// `TS_DEBUG_USE_DERP_HTTP`: plain HTTP to every relay.
    pub(crate) debug_use_http: bool,
    /// Host and port of a plain-HTTP control URL.
    pub(crate) plain_control: Option<(String, u16)>,
}

impl DerpScheme {
    /// The scheme for a node whose control URL is `control` (`tls`: it is
    /// `https://`), with Go's debug knob `debug_use_http`.
    pub(crate) fn new(control_tls: bool, host: &str, port: u16, debug_use_http: bool) -> Self {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        DerpScheme {
            debug_use_http,
            plain_control: (!control_tls).then(|| (host.to_ascii_lowercase(), port)),
        }
    }

    /// Go's `envknob.Bool("TS_DEBUG_USE_DERP_HTTP")`: `strconv.ParseBool`
    /// of the variable, false when unset or unparsable.
    pub(crate) fn debug_use_http_from_env() -> bool {
        matches!(
            std::env::var("TS_DEBUG_USE_DERP_HTTP").as_deref(),
            Ok("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    /// Whether `node` (dialled at `port`) speaks plain HTTP.
    fn plain(&self, node: &DerpNode, port: Option<u16>) -> bool {
        if self.debug_use_http {
            return true;
        }
        let Some((host, control_port)) = &self.plain_control else {
            return false;
        };
        // The relay on the control listener: the port must be named (a
        // DERPPort of 0 means 443, never a plain control port).
        port == Some(*control_port)
            && [&node.host_name, &node.ipv4, &node.ipv6]
                .iter()
                .any(|h| !h.is_empty() && h.eq_ignore_ascii_case(host))
    }
}

/// How to reach one relay: built from the DERP map's node with
/// [`DerpTarget::from_node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DerpTarget {
    /// `Host` header and TLS server name (the node's `HostName`).
    pub(crate) host_name: String,
    /// Where to dial: the node's `IPv4`, else its `IPv6`, else `host_name`
    /// through DNS.
    pub(crate) dial_host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// Speak TLS ([`DerpScheme`]).
    pub(crate) tls: bool,
    /// With TLS: accept any certificate (`InsecureForTests`).
    pub(crate) insecure_for_tests: bool,
    /// Tell the relay it is our home region (`NotePreferred(1)`).
    pub(crate) home: bool,
}

impl DerpTarget {
    /// The relay of a DERP map node, TLS or not by `scheme`. `None` when
    /// the node has no DERP or no address to dial.
    pub(crate) fn from_node(node: &DerpNode, scheme: &DerpScheme) -> Option<DerpTarget> {
        if node.stun_only {
            return None;
        }
        let v4 = node.ipv4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
        let v6 = node.ipv6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
        let dial_host = match (v4, v6) {
            (Some(ip), _) | (None, Some(ip)) => ip.to_string(),
            // Both families named but neither an address ("none"): off.
            _ if !node.ipv4.is_empty() && !node.ipv6.is_empty() => return None,
            _ if node.host_name.is_empty() => return None,
            _ => node.host_name.clone(),
        };
        let named_port = u16::try_from(node.derp_port).ok().filter(|p| *p > 0);
        let tls = !scheme.plain(node, named_port);
        let port = match named_port {
            Some(p) => p,
            None if tls => DEFAULT_TLS_PORT,
            None => DEFAULT_PLAIN_PORT,
        };
        Some(DerpTarget {
            host_name: if node.host_name.is_empty() {
                dial_host.clone()
            } else {
                node.host_name.clone()
            },
            dial_host,
            port,
            tls,
            insecure_for_tests: node.insecure_for_tests,
            home: true,
        })
    }
}

/// A running DERP client. Clones share the connection; [`shutdown`] on any
/// clone stops it for all.
///
/// [`shutdown`]: DerpHandle::shutdown
#[derive(Clone)]
pub(crate) struct DerpHandle {
    inner: Arc<Inner>,
}

struct Inner {
    region: u16,
    tx: mpsc::Sender<(PublicKey, Vec<u8>)>,
    connected: AtomicBool,
    stop: watch::Sender<bool>,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DerpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerpHandle")
            .field("region", &self.inner.region)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl DerpHandle {
    /// Queues `data` for `dst` without waiting. False (dropped) when no
    /// connection is up, the queue is full, or the packet is over 64 KiB.
    pub(crate) fn send(&self, dst: PublicKey, data: Vec<u8>) -> bool {
        if !self.is_connected() || data.len() > derp::MAX_PACKET_SIZE {
            return false;
        }
        self.inner.tx.try_send((dst, data)).is_ok()
    }

    /// Whether the relay accepted us and the connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// The region this client serves.
    #[allow(dead_code)] // for the data plane's status
    pub(crate) fn region(&self) -> u16 {
        self.inner.region
    }

    /// Closes the connection (TLS close_notify / FIN) and ends the task.
    pub(crate) async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let task = self.inner.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.inner.connected.store(false, Ordering::Release);
    }
}

/// Starts a client for `target` in `region` with the node's private key;
/// it connects, reports on `events`, and reconnects until shut down.
pub(crate) fn spawn_derp(
    region: u16,
    target: &DerpTarget,
    node_private: [u8; 32],
    events: mpsc::Sender<DerpEvent>,
    sink: PacketSink,
) -> DerpHandle {
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let (stop, stop_rx) = watch::channel(false);
    let inner = Arc::new(Inner {
        region,
        tx,
        connected: AtomicBool::new(false),
        stop,
        task: parking_lot::Mutex::new(None),
    });
    let runner = Runner {
        region,
        target: target.clone(),
        private: Zeroizing::new(node_private),
        events,
        sink,
        outbound: rx,
        stop: stop_rx,
        inner: Arc::downgrade(&inner),
    };
    *inner.task.lock() = Some(tokio::spawn(runner.run()));
    DerpHandle { inner }
}

struct Runner {
    region: u16,
    target: DerpTarget,
    private: Zeroizing<[u8; 32]>,
    events: mpsc::Sender<DerpEvent>,
    sink: PacketSink,
    outbound: mpsc::Receiver<(PublicKey, Vec<u8>)>,
    stop: watch::Receiver<bool>,
    inner: std::sync::Weak<Inner>,
}

/// How a connection ended.
enum End {
    /// Shut down (or nobody listens to the events any more).
    Stop,
    /// Lost; reconnect.
    Lost(String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection whose handshake frames went out.
struct Conn {
    io: Box<dyn Io>,
    reader: FrameReader,
    server_key: PublicKey,
}

impl Runner {
    fn set_connected(&self, up: bool) {
        if let Some(inner) = self.inner.upgrade() {
            inner.connected.store(up, Ordering::Release);
        }
    }

    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let mut stop = self.stop.clone();
            let attempt = tokio::select! {
                r = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()) => match r {
                    Ok(r) => r,
                    Err(_) => Err("connect timed out".to_string()),
                },
                _ = stop.changed() => return,
            };
            match attempt {
                Ok(conn) => {
                    let (end, was_connected) = self.serve(conn).await;
                    self.set_connected(false);
                    match end {
                        End::Stop => return,
                        End::Lost(error) => {
                            tracing::debug!(region = self.region, %error, "derp: connection lost");
                            if was_connected {
                                failures = 0;
                                let ev = DerpEvent::Disconnected {
                                    region: self.region,
                                    error,
                                };
                                if self.events.send(ev).await.is_err() {
                                    return;
                                }
                            } else {
                                failures = failures.saturating_add(1);
                            }
                        }
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(
                        region = self.region,
                        host = %self.target.dial_host,
                        port = self.target.port,
                        %error,
                        "derp: connect failed"
                    );
                }
            }
            let delay = crate::backoff::backoff(failures.saturating_sub(1));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    async fn dial(&self) -> Result<TcpStream, String> {
        let t = &self.target;
        let addrs: Vec<SocketAddr> = match t.dial_host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, t.port)],
            Err(_) => tokio::net::lookup_host((t.dial_host.as_str(), t.port))
                .await
                .map_err(|e| format!("resolving {}: {e}", t.dial_host))?
                .collect(),
        };
        let mut last = format!("no address for {}", t.dial_host);
        for addr in addrs {
            match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Ok(Err(e)) => last = format!("dial {addr}: {e}"),
                Err(_) => last = format!("dial {addr}: timed out"),
            }
        }
        Err(last)
    }

    /// Dial, TLS, upgrade, ServerKey, ClientInfo (+ NotePreferred).
    async fn connect(&self) -> Result<Conn, String> {
        let tcp = self.dial().await?;
        let mut io: Box<dyn Io> = if self.target.tls {
            Box::new(tls::connect(&self.target, tcp).await?)
        } else {
            Box::new(tcp)
        };
        io.write_all(&derp::upgrade_request(&self.target.host_name))
            .await
            .map_err(|e| format!("writing the upgrade: {e}"))?;
        io.flush().await.map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let resp = loop {
            if let Some(r) = derp::parse_upgrade_response(&head).map_err(|e| e.to_string())? {
                break r;
            }
            let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during the upgrade".into());
            }
            head.extend_from_slice(&buf[..n]);
        };
        let mut reader = FrameReader::new(derp::MAX_FRAME_LEN);
        reader.push(&head[resp.head_len..]);
        let server_key = loop {
            match reader.next_frame().map_err(|e| e.to_string())? {
                Some(Frame::ServerKey { key }) => break key,
                Some(f) => return Err(format!("{:?} frame before ServerKey", f.frame_type())),
                None => {}
            }
            let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before ServerKey".into());
            }
            reader.push(&buf[..n]);
        };
        let mut hello = derp::client_info_frame(&self.private, &server_key, &ClientInfo::ours());
        if self.target.home {
            Frame::NotePreferred { preferred: true }.encode(&mut hello);
        }
        io.write_all(&hello).await.map_err(|e| e.to_string())?;
        io.flush().await.map_err(|e| e.to_string())?;
        Ok(Conn {
            io,
            reader,
            server_key,
        })
    }

    /// Runs a connection until it ends; also says whether it got as far as
    /// `Connected`.
    ///
    /// Until ServerInfo, one loop reads and answers Pings. Then reading and
    /// writing run side by side: a receiver that is slow to take relayed
    /// packets (the reader waits on [`DerpSink::packets`]) never holds up
    /// what we send, and a write the relay is slow to take never holds up
    /// reading. (With one loop, a bulk transfer's ACKs queued behind the
    /// data coming in, and the sender stalled.)
    async fn serve(&mut self, conn: Conn) -> (End, bool) {
        let Conn {
            io,
            mut reader,
            server_key,
        } = conn;
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut buf = vec![0u8; 64 << 10];
        // ServerInfo must arrive within the connect budget.
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut pongs = Vec::new();
        let end = loop {
            match self.handshake_frames(&mut reader, &server_key, &mut pongs) {
                Ok(true) => break None,
                Ok(false) => {}
                Err(end) => break Some(end),
            }
            if !pongs.is_empty() {
                if let Err(e) = write(&mut wr, &pongs).await {
                    break Some(End::Lost(e));
                }
                pongs.clear();
            }
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rd.read(&mut buf)) => match r {
                    Err(_) => break Some(End::Lost("no ServerInfo in time".into())),
                    Ok(Ok(0)) => break Some(End::Lost("relay closed the connection".into())),
                    Ok(Ok(n)) => reader.push(&buf[..n]),
                    Ok(Err(e)) => break Some(End::Lost(format!("read: {e}"))),
                },
                _ = self.stop.changed() => break Some(End::Stop),
            }
        };
        let was_connected = end.is_none();
        let end = match end {
            Some(end) => end,
            None => {
                self.set_connected(true);
                tracing::debug!(region = self.region, "derp: connected");
                let ev = DerpEvent::Connected {
                    region: self.region,
                };
                if self.events.send(ev).await.is_err() {
                    End::Stop
                } else {
                    self.connected(&mut rd, &mut wr, reader, buf).await
                }
            }
        };
        if matches!(end, End::Stop) {
            // A clean close: TLS close_notify, then FIN.
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
        }
        (end, was_connected)
    }

    /// Handles the frames buffered before ServerInfo: true once it opened.
    /// Pongs for Pings go to `out`; anything else waits for `Connected`.
    fn handshake_frames(
        &self,
        reader: &mut FrameReader,
        server_key: &PublicKey,
        out: &mut Vec<u8>,
    ) -> Result<bool, End> {
        loop {
            match reader.next_frame() {
                Ok(None) => return Ok(false),
                Ok(Some(Frame::ServerInfo { sealed })) => {
                    derp::open_server_info(&self.private, server_key, sealed)
                        .map_err(|e| End::Lost(format!("ServerInfo: {e}")))?;
                    return Ok(true);
                }
                Ok(Some(Frame::Ping { data })) => Frame::Pong { data }.encode(out),
                Ok(Some(_)) => {}
                Err(e @ derp::DerpError::FrameTooLarge { .. }) => {
                    return Err(End::Lost(e.to_string()))
                }
                Err(e) => {
                    tracing::debug!(region = self.region, error = %e, "derp: skipped a frame");
                }
            }
        }
    }

    /// The connected phase: the reader and the writer side by side, until
    /// either ends or the client is stopped.
    async fn connected<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        mut reader: FrameReader,
        mut buf: Vec<u8>,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Pongs from the reader to the writer; a Ping beyond these few
        // unanswered ones goes unanswered, as a slow Go client's would.
        let (pong_tx, mut pong_rx) = mpsc::channel::<[u8; 8]>(4);
        let region = self.region;
        let sink = &self.sink;
        let events = &self.events;
        let outbound = &mut self.outbound;
        let read = async {
            let mut batch = Vec::new();
            let mut deadline = tokio::time::Instant::now() + derp::CLIENT_READ_TIMEOUT;
            loop {
                loop {
                    let frame = match reader.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e @ derp::DerpError::FrameTooLarge { .. }) => {
                            return End::Lost(e.to_string())
                        }
                        Err(e) => {
                            // Go's client drops a malformed frame and reads on.
                            tracing::debug!(region, error = %e, "derp: skipped a frame");
                            continue;
                        }
                    };
                    let event = match frame {
                        Frame::RecvPacket { src, packet } => {
                            batch.push((src, packet.to_vec()));
                            if batch.len() >= MAX_BATCH && !deliver(sink, &mut batch).await {
                                return End::Stop;
                            }
                            continue;
                        }
                        Frame::PeerGone { key, reason } => DerpEvent::PeerGone {
                            key,
                            not_here: reason == PeerGoneReason::NotHere,
                        },
                        Frame::Ping { data } => {
                            let _ = pong_tx.try_send(data);
                            continue;
                        }
                        Frame::Health { problem } if !problem.is_empty() => {
                            tracing::warn!(
                                region,
                                problem = %String::from_utf8_lossy(problem),
                                "derp: relay reports a problem"
                            );
                            continue;
                        }
                        Frame::Restarting {
                            reconnect_in_ms, ..
                        } => {
                            tracing::debug!(region, reconnect_in_ms, "derp: relay restarting");
                            continue;
                        }
                        // KeepAlive, Pong, an empty Health, another
                        // ServerInfo, unknown frames: nothing to do (hearing
                        // them already reset the read deadline).
                        _ => continue,
                    };
                    // Packets before an event go first.
                    if !deliver(sink, &mut batch).await || events.send(event).await.is_err() {
                        return End::Stop;
                    }
                }
                if !deliver(sink, &mut batch).await {
                    return End::Stop;
                }
                match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                    Err(_) => return End::Lost("no frame from the relay in 120 s".into()),
                    Ok(Ok(0)) => return End::Lost("relay closed the connection".into()),
                    Ok(Ok(n)) => {
                        reader.push(&buf[..n]);
                        deadline = tokio::time::Instant::now() + derp::CLIENT_READ_TIMEOUT;
                    }
                    Ok(Err(e)) => return End::Lost(format!("read: {e}")),
                }
            }
        };
        let write_loop = async {
            let mut out = Vec::with_capacity(64 << 10);
            loop {
                tokio::select! {
                    biased;
                    Some(data) = pong_rx.recv() => Frame::Pong { data }.encode(&mut out),
                    p = outbound.recv() => {
                        let Some((dst, data)) = p else { return End::Stop };
                        Frame::SendPacket { dst, packet: &data }.encode(&mut out);
                    }
                }
                // Whatever else is queued goes in the same write.
                while out.len() < (256 << 10) {
                    match outbound.try_recv() {
                        Ok((dst, data)) => {
                            Frame::SendPacket { dst, packet: &data }.encode(&mut out)
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = write(wr, &out).await {
                    return End::Lost(e);
                }
                out.clear();
                if out.capacity() > 1 << 20 {
                    out = Vec::with_capacity(64 << 10);
                }
            }
        };
        let mut stop = self.stop.clone();
        tokio::select! {
            end = read => end,
            end = write_loop => end,
            _ = stop.changed() => End::Stop,
        }
    }
}

/// Hands `batch` (if any) to the data plane; false when it is gone.
async fn deliver(sink: &PacketSink, batch: &mut crate::dataplane::RelayBatch) -> bool {
    if batch.is_empty() {
        return true;
    }
    sink.counters
        .rx_packets
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    sink.packets.send(std::mem::take(batch)).await.is_ok()
}

async fn write<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        wr.write_all(bytes).await?;
        wr.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err("write timed out".into()),
    }
}
