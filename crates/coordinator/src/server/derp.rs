//! The DERP relay (`shared/protocol/derp.md`; Go's `derp/derpserver` at
//! v1.90.9): `GET /derp` with `Upgrade: DERP` on the coordinator's own
//! HTTP listener (plain or TLS) becomes a framed connection that relays
//! packets between clients addressed by their node keys.
//!
//! Per connection, after the `101`:
//! 1. ServerKey (magic + the relay's public key), then the client's
//!    ClientInfo within [`DerpConfig::handshake_timeout`] (56 B .. 256 KiB,
//!    the box must open, JSON), else the connection closes
//!    ([`DerpCounters::handshake_failed`]). ServerInfo follows.
//! 2. A read loop: `SendPacket` → the destination's queues; `Ping` → a
//!    `Pong`; `NotePreferred` noted; frame types a client never sends are
//!    skipped; mesh frames (we have no mesh key), malformed or oversized
//!    frames close the connection ([`DerpCounters::closed_malformed`]).
//! 3. A send loop draining the connection's queues: packets and disco
//!    packets in two bounded queues (a full one drops its oldest packet),
//!    PeerGone notices, the pending Pong, a KeepAlive every
//!    [`DerpConfig::keepalive`] plus jitter.
//!
//! Routing rules, as Go's: a packet for a key with no connection is dropped
//! and, when it is a disco packet, answered with PeerGone(not here) at most
//! once a second (burst 3); when a key leaves, every connection that
//! received packets from it gets PeerGone(disconnected); a second
//! connection with a key replaces the first, which is closed (Go keeps both
//! and picks one; our clients never share a key).

use super::session::jitter;
use crate::http::text;
use crate::CoordinatorKey;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tailnet_wire::derp::{
    self, DerpError, Frame, FrameReader, FrameType, PeerGoneReason, ServerInfo,
};
use tailnet_wire::PublicKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, timeout, Instant};

/// Tunables of the relay.
#[derive(Debug, Clone)]
pub struct DerpConfig {
    /// Base interval between KeepAlive frames (Go: 60 s).
    pub keepalive: Duration,
    /// Random extra added to each interval (Go: up to 5 s).
    pub keepalive_jitter: Duration,
    /// Time from the `101` to a valid ClientInfo (Go: 10 s).
    pub handshake_timeout: Duration,
    /// Packets queued per connection, in each of its two queues. Go's 32
    /// drops most of a burst from a 4 MiB TCP window (a bulk transfer over
    /// the relay ran at 0.04 Gbit/s with it, 0.45-1 Gbit/s with 1024:
    /// `bench tunnel --paths tailnet-derp`); 1024 packets cost at most
    /// ~1.4 MiB per connection.
    pub queue_depth: usize,
    /// How long one write to a client may stall before the connection is
    /// dropped (Go's derper: 2 s; ours is laxer for loaded test machines).
    pub write_timeout: Duration,
    /// Bytes queued per connection, in each of its two queues: beyond it
    /// the oldest packets are dropped, as for `queue_depth` (1024 packets
    /// of up to 64 KiB would be 64 MiB; a sender aiming big packets at a
    /// receiver that stopped reading must not cost that).
    pub queue_bytes: usize,
    /// Bytes queued (or being written) across all connections; a packet
    /// that would exceed it is dropped ([`DerpCounters::dropped_memory`]).
    pub total_queue_bytes: usize,
    /// Serve only node keys this coordinator registered and that have not
    /// expired, plus [`allowed_keys`](Self::allowed_keys) (Go's derper
    /// `--verify-clients`). Other keys are refused after ClientInfo
    /// ([`DerpCounters::refused_unknown_key`]).
    pub verify_clients: bool,
    /// Keys served without being registered here (a relay shared between
    /// coordinators; `coordinator serve --derp-allow-keys FILE`).
    pub allowed_keys: HashSet<PublicKey>,
    /// How often connected clients are checked again: a deleted or expired
    /// node's connection is closed ([`DerpCounters::revoked`]).
    pub reverify_interval: Duration,
    /// Bytes a second each client may send, framing included: advertised
    /// in ServerInfo as `TokenBucketBytesPerSecond` (Go's clients then
    /// limit themselves, dropping what is over) and enforced here by
    /// reading no faster from a client over it
    /// ([`DerpCounters::rate_limited`]). 0: no limit, nothing advertised
    /// (Go's derper). `coordinator serve --derp-rate-limit`.
    pub rate_bytes_per_sec: u32,
    /// The burst over [`rate_bytes_per_sec`](Self::rate_bytes_per_sec)
    /// (`TokenBucketBytesBurst`); at least one largest frame is allowed.
    pub rate_burst_bytes: u32,
}

/// Default per-client relay rate: none, as Go's derper (it never sets
/// the ServerInfo fields). A Go client given a rate drops what it sends
/// over it silently, so a default rate would cap every relayed Go peer's
/// TCP with losses; our loopback relay row runs 1.5-2 Gbit/s per client.
/// Set `--derp-rate-limit` where one node must not take a shared relay's
/// capacity.
pub const DEFAULT_RATE_BYTES_PER_SEC: u32 = 0;
/// Default burst when a rate is set: 16 MiB.
pub const DEFAULT_RATE_BURST_BYTES: u32 = 16 << 20;

impl Default for DerpConfig {
    fn default() -> Self {
        DerpConfig {
            keepalive: derp::KEEP_ALIVE,
            keepalive_jitter: Duration::from_secs(5),
            handshake_timeout: derp::HANDSHAKE_TIMEOUT,
            queue_depth: 1024,
            write_timeout: Duration::from_secs(5),
            queue_bytes: 2 << 20,
            total_queue_bytes: 256 << 20,
            verify_clients: true,
            allowed_keys: HashSet::new(),
            reverify_interval: Duration::from_secs(10),
            rate_bytes_per_sec: DEFAULT_RATE_BYTES_PER_SEC,
            rate_burst_bytes: DEFAULT_RATE_BURST_BYTES,
        }
    }
}

/// How a handshake ended without a client.
enum HandshakeEnd {
    /// The client went away before ClientInfo.
    Abandoned(String),
    /// It sent something we refuse.
    Failed(String),
}

/// What the relay did, since it started.
#[derive(Debug, Default)]
pub struct DerpCounters {
    /// Connections that completed the handshake.
    pub connections: AtomicU64,
    /// Upgraded connections that never completed it (timeout, bad or
    /// unopenable ClientInfo).
    pub handshake_failed: AtomicU64,
    /// Upgraded connections the client closed (or lost) before sending
    /// ClientInfo: a client giving up (a Go client rebinding after a link
    /// change does), not a refused handshake.
    pub handshake_abandoned: AtomicU64,
    /// Connections closed because a newer one came with the same key.
    pub replaced: AtomicU64,
    /// Connections closed for a malformed, oversized or forbidden frame.
    pub closed_malformed: AtomicU64,
    /// Packets written to their destination.
    pub packets_forwarded: AtomicU64,
    /// Their bytes (packets only, no framing).
    pub bytes_forwarded: AtomicU64,
    /// Packets for a key with no connection here.
    pub dropped_unknown_dest: AtomicU64,
    /// Packets pushed out of a full queue (oldest first).
    pub dropped_queue_full: AtomicU64,
    /// Packets still queued when their destination disconnected, or lost
    /// to a failed write.
    pub dropped_gone: AtomicU64,
    /// PeerGone(not here) frames queued.
    pub peer_gone_not_here: AtomicU64,
    /// PeerGone(disconnected) frames queued.
    pub peer_gone_disconnected: AtomicU64,
    /// Pings answered.
    pub pongs: AtomicU64,
    /// Handshakes refused because the key is not a node registered here
    /// (nor on the allow-list), or its key expired.
    pub refused_unknown_key: AtomicU64,
    /// Connections closed because their node was deleted or expired.
    pub revoked: AtomicU64,
    /// Packets dropped because the relay's total queue budget was spent.
    pub dropped_memory: AtomicU64,
    /// Times a client's reads were paused because it sent faster than
    /// [`DerpConfig::rate_bytes_per_sec`].
    pub rate_limited: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The relay: its key, its connections, its counters.
pub struct DerpServer {
    private: CoordinatorKey,
    public: PublicKey,
    config: DerpConfig,
    counters: DerpCounters,
    state: Mutex<State>,
    next_id: AtomicU64,
    shutdown: watch::Receiver<bool>,
    /// Where registered nodes are looked up (`verify_clients`).
    store: Option<Arc<crate::Store>>,
    /// Bytes queued or being written, all connections together.
    held: AtomicUsize,
    /// Wakes the re-verification task at once (a node was removed).
    reverify: Notify,
    refused_log: tailnet_listen::LogLimiter,
}

impl std::fmt::Debug for DerpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerpServer")
            .field("public", &self.public)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// The connection serving each key.
    clients: HashMap<PublicKey, Arc<Client>>,
    /// For each source key, the connections that were sent packets from it
    /// (told PeerGone(disconnected) when it leaves).
    watchers: HashMap<PublicKey, HashMap<u64, Weak<Client>>>,
}

/// One connection's side of the relay, shared between its tasks and the
/// connections that send to it.
struct Client {
    id: u64,
    key: PublicKey,
    queues: Mutex<Queues>,
    /// Wakes the send loop.
    wake: Notify,
    /// Set (and `wake`d) to close the connection.
    kicked: AtomicBool,
    /// Set (and `wake`d) when the node is no longer allowed.
    revoked: AtomicBool,
    preferred: AtomicBool,
    /// PeerGone(not here) budget: 1 a second, burst 3 (Go's `peerGoneLim`).
    not_here: Mutex<TokenBucket>,
}

#[derive(Default)]
struct Queues {
    packets: VecDeque<(PublicKey, Vec<u8>)>,
    disco: VecDeque<(PublicKey, Vec<u8>)>,
    /// Bytes in `packets` and in `disco`.
    packet_bytes: usize,
    disco_bytes: usize,
    peer_gone: VecDeque<(PublicKey, PeerGoneReason)>,
    pong: Option<[u8; 8]>,
    closed: bool,
}

struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    const RATE: f64 = 1.0;
    const BURST: f64 = 3.0;

    fn new() -> Self {
        TokenBucket {
            tokens: Self::BURST,
            at: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * Self::RATE).min(Self::BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A client's send budget in bytes: tokens refill at `rate` a second up to
/// `burst`; a read may take more than there are, and the debt is waited
/// off before the next read, so the average never exceeds `rate`.
struct ByteBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl ByteBucket {
    fn new(config: &DerpConfig, now: Instant) -> Option<Self> {
        if config.rate_bytes_per_sec == 0 {
            return None;
        }
        let burst = f64::from(config.rate_burst_bytes).max(derp::MAX_PACKET_SIZE as f64);
        Some(ByteBucket {
            rate: f64::from(config.rate_bytes_per_sec),
            burst,
            tokens: burst,
            at: now,
        })
    }

    /// Takes `n` bytes; how long to wait before reading more.
    fn take(&mut self, n: usize, now: Instant) -> Option<Duration> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst) - n as f64;
        self.at = now;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// What ServerInfo advertises for `config` (Go's `serverInfo`).
fn server_info(config: &DerpConfig) -> ServerInfo {
    let mut info = ServerInfo::ours();
    if config.rate_bytes_per_sec > 0 {
        info.token_bucket_bytes_per_second = config.rate_bytes_per_sec;
        info.token_bucket_bytes_burst = config.rate_burst_bytes.max(derp::MAX_PACKET_SIZE as u32);
    }
    info
}

/// Why a connection ended (for the debug log and the counters).
enum End {
    Eof,
    Io(std::io::Error),
    Protocol(String),
    Replaced,
    Revoked,
    Shutdown,
    WriteTimeout,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Eof => f.write_str("client closed"),
            End::Io(e) => write!(f, "i/o: {e}"),
            End::Protocol(e) => write!(f, "protocol: {e}"),
            End::Replaced => f.write_str("replaced by a newer connection"),
            End::Revoked => f.write_str("node deleted or expired"),
            End::Shutdown => f.write_str("shutdown"),
            End::WriteTimeout => f.write_str("write timed out"),
        }
    }
}

impl DerpServer {
    /// A relay with `private` as its key; connections close when
    /// `shutdown` turns true. With `verify_clients`, keys are looked up in
    /// `store` (no store: only `allowed_keys` are served).
    pub fn new(
        private: CoordinatorKey,
        config: DerpConfig,
        store: Option<Arc<crate::Store>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let public = PublicKey::from_bytes(x25519_dalek::x25519(
            *private.as_bytes(),
            x25519_dalek::X25519_BASEPOINT_BYTES,
        ));
        DerpServer {
            private,
            public,
            config,
            counters: DerpCounters::default(),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            shutdown,
            store,
            held: AtomicUsize::new(0),
            reverify: Notify::new(),
            refused_log: tailnet_listen::LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Bytes the relay holds for its clients now: queued packets and
    /// packets being written. At most [`DerpConfig::total_queue_bytes`].
    pub fn queued_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether `key` may use the relay now.
    async fn allowed(&self, key: PublicKey) -> bool {
        if !self.config.verify_clients || self.config.allowed_keys.contains(&key) {
            return true;
        }
        let Some(store) = self.store.clone() else {
            return false;
        };
        let looked_up = super::blocking(move || store.node_by_node_key(key.as_bytes())).await;
        match looked_up {
            Ok(Ok(Some(node))) => !node.key_expired(std::time::SystemTime::now()),
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "derp: node lookup failed; refusing");
                false
            }
            Err(_) => false,
        }
    }

    /// Checks every connected client again now (a node was removed).
    pub fn reverify_now(&self) {
        self.reverify.notify_one();
    }

    /// Every [`DerpConfig::reverify_interval`] (or when woken), closes the
    /// connections of keys no longer allowed. Ends at shutdown.
    pub(crate) async fn reverify_loop(self: Arc<Self>) {
        if !self.config.verify_clients {
            return;
        }
        let mut shutdown = self.shutdown.clone();
        let every = self.config.reverify_interval.max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.reverify.notified() => {}
                _ = super::until_shutdown(&mut shutdown) => return,
            }
            let clients: Vec<Arc<Client>> = self.state.lock().clients.values().cloned().collect();
            if clients.is_empty() {
                continue;
            }
            // One query for all of them (not one per client).
            let Some(store) = self.store.clone() else {
                continue;
            };
            let valid = super::blocking(move || {
                let now = std::time::SystemTime::now();
                store.nodes().map(|nodes| {
                    nodes
                        .into_iter()
                        .filter(|n| !n.key_expired(now))
                        .map(|n| PublicKey::from_bytes(n.node_key))
                        .collect::<HashSet<_>>()
                })
            })
            .await;
            let valid = match valid {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "derp: re-checking clients; keeping them for now");
                    continue;
                }
                Err(_) => continue,
            };
            for c in clients {
                if !valid.contains(&c.key) && !self.config.allowed_keys.contains(&c.key) {
                    bump(&self.counters.revoked);
                    tracing::info!(client = %c.key.short(), "derp: node deleted or expired; disconnecting");
                    c.revoked.store(true, Ordering::Release);
                    c.wake.notify_one();
                }
            }
        }
    }

    /// The relay's public key (`Derp-Public-Key`, the ServerKey frame).
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Its tunables.
    pub fn config(&self) -> &DerpConfig {
        &self.config
    }

    /// Its counters.
    pub fn counters(&self) -> &DerpCounters {
        &self.counters
    }

    /// How many keys have a connection now.
    pub fn clients(&self) -> usize {
        self.state.lock().clients.len()
    }

    /// Whether `key` has a connection now.
    pub fn is_connected(&self, key: &PublicKey) -> bool {
        self.state.lock().clients.contains_key(key)
    }

    /// Answers a request routed to `/derp` or below: the probes, or the
    /// upgrade (whose connection is then served on its own task).
    pub(crate) fn handle(self: &Arc<Self>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if derp::PROBE_PATHS.contains(&path) {
            return match *req.method() {
                Method::GET | Method::HEAD => {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    r.headers_mut()
                        .insert("access-control-allow-origin", HeaderValue::from_static("*"));
                    r
                }
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "bogus probe method\n"),
            };
        }
        if path != derp::DERP_PATH {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        let upgrade = req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        match upgrade.as_deref() {
            Some("derp") => {}
            // Only js/wasm clients use DERP over WebSocket; we have none.
            Some("websocket") => {
                return text(
                    StatusCode::UPGRADE_REQUIRED,
                    "DERP over WebSocket is not supported; use Upgrade: DERP\n",
                )
            }
            _ => {
                return text(
                    StatusCode::UPGRADE_REQUIRED,
                    "DERP requires connection upgrade\n",
                )
            }
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        let server = self.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => server.serve(TokioIo::new(upgraded)).await,
                Err(e) => tracing::debug!(error = %e, "derp: upgrade failed"),
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static(derp::UPGRADE_PROTOCOL));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            derp::VERSION_HEADER,
            HeaderValue::from(derp::PROTOCOL_VERSION),
        );
        if let Ok(v) = HeaderValue::from_str(&hex::encode(self.public.as_bytes())) {
            h.insert(derp::PUBLIC_KEY_HEADER, v);
        }
        r
    }

    /// Serves one upgraded connection until it ends.
    pub async fn serve<IO>(self: Arc<Self>, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut reader = FrameReader::new(derp::MAX_CLIENT_INFO_LEN);
        let mut buf = vec![0u8; 64 << 10];
        let mut shutdown = self.shutdown.clone();
        let hs = tokio::select! {
            r = timeout(
                self.config.handshake_timeout,
                self.handshake(&mut rd, &mut wr, &mut reader, &mut buf),
            ) => r,
            _ = super::until_shutdown(&mut shutdown) => return,
        };
        let client_key = match hs {
            Ok(Ok(k)) => k,
            Ok(Err(HandshakeEnd::Abandoned(e))) => {
                bump(&self.counters.handshake_abandoned);
                tracing::debug!(error = %e, "derp: client left during the handshake");
                return;
            }
            Ok(Err(HandshakeEnd::Failed(e))) => {
                bump(&self.counters.handshake_failed);
                tracing::debug!(error = %e, "derp: handshake failed");
                return;
            }
            Err(_) => {
                bump(&self.counters.handshake_failed);
                tracing::debug!("derp: no ClientInfo in time");
                return;
            }
        };
        if !self.allowed(client_key).await {
            bump(&self.counters.refused_unknown_key);
            if let Some(suppressed) = self.refused_log.allow() {
                tracing::info!(
                    client = %client_key.short(),
                    suppressed,
                    "derp: refused a key that is not a node of this coordinator"
                );
            }
            return;
        }
        let client = Arc::new(Client {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key: client_key,
            queues: Mutex::new(Queues::default()),
            wake: Notify::new(),
            kicked: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            preferred: AtomicBool::new(false),
            not_here: Mutex::new(TokenBucket::new()),
        });
        self.register(&client);
        bump(&self.counters.connections);
        tracing::debug!(client = %client_key.short(), "derp: client connected");

        let mut saw_src = HashSet::new();
        let info = derp::server_info_frame(
            self.private.as_bytes(),
            &client_key,
            &server_info(&self.config),
        );
        let end = match self.write(&mut wr, &info).await {
            Err(e) => e,
            Ok(()) => {
                tokio::select! {
                    e = self.read_loop(&client, &mut rd, &mut reader, &mut buf) => e,
                    e = self.send_loop(&client, &mut wr, &mut saw_src) => e,
                    _ = super::until_shutdown(&mut shutdown) => End::Shutdown,
                }
            }
        };
        match &end {
            End::Protocol(_) => bump(&self.counters.closed_malformed),
            End::Replaced => bump(&self.counters.replaced),
            _ => {}
        }
        tracing::debug!(client = %client_key.short(), %end, "derp: client disconnected");
        self.unregister(&client, &saw_src);
        // Best effort: tell the client we are done.
        let _ = timeout(Duration::from_secs(1), wr.shutdown()).await;
    }

    async fn handshake<R, W>(
        &self,
        rd: &mut R,
        wr: &mut W,
        reader: &mut FrameReader,
        buf: &mut [u8],
    ) -> Result<PublicKey, HandshakeEnd>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let gone = |e: std::io::Error| HandshakeEnd::Abandoned(e.to_string());
        wr.write_all(&derp::server_key_frame(&self.public))
            .await
            .map_err(gone)?;
        wr.flush().await.map_err(gone)?;
        loop {
            match reader.next_frame() {
                Ok(Some(Frame::ClientInfo { key, sealed })) => {
                    derp::open_client_info(self.private.as_bytes(), &key, sealed)
                        .map_err(|e| HandshakeEnd::Failed(e.to_string()))?;
                    return Ok(key);
                }
                Ok(Some(f)) => {
                    return Err(HandshakeEnd::Failed(format!(
                        "{:?} frame before ClientInfo",
                        f.frame_type()
                    )))
                }
                Ok(None) => {}
                Err(e) => return Err(HandshakeEnd::Failed(e.to_string())),
            }
            let n = rd.read(buf).await.map_err(gone)?;
            if n == 0 {
                return Err(HandshakeEnd::Abandoned("closed before ClientInfo".into()));
            }
            reader.push(&buf[..n]);
        }
    }

    fn register(&self, client: &Arc<Client>) {
        let old = self.state.lock().clients.insert(client.key, client.clone());
        if let Some(old) = old {
            old.kicked.store(true, Ordering::Release);
            old.wake.notify_one();
        }
    }

    fn unregister(&self, client: &Arc<Client>, saw_src: &HashSet<PublicKey>) {
        let leftover = {
            let mut q = client.queues.lock();
            q.closed = true;
            self.held
                .fetch_sub(q.packet_bytes + q.disco_bytes, Ordering::Relaxed);
            q.packet_bytes = 0;
            q.disco_bytes = 0;
            let n = q.packets.len() + q.disco.len();
            q.packets.clear();
            q.disco.clear();
            n
        };
        self.counters
            .dropped_gone
            .fetch_add(leftover as u64, Ordering::Relaxed);
        let mut gone_to = Vec::new();
        {
            let mut st = self.state.lock();
            for src in saw_src {
                if let Some(w) = st.watchers.get_mut(src) {
                    w.remove(&client.id);
                    if w.is_empty() {
                        st.watchers.remove(src);
                    }
                }
            }
            let active = st
                .clients
                .get(&client.key)
                .is_some_and(|c| c.id == client.id);
            if active {
                st.clients.remove(&client.key);
                if let Some(w) = st.watchers.remove(&client.key) {
                    gone_to.extend(w.into_values().filter_map(|w| w.upgrade()));
                }
            }
        }
        for peer in gone_to {
            self.peer_gone(&peer, client.key, PeerGoneReason::Disconnected);
        }
    }

    fn peer_gone(&self, to: &Client, key: PublicKey, reason: PeerGoneReason) {
        {
            let mut q = to.queues.lock();
            if q.closed {
                return;
            }
            q.peer_gone.push_back((key, reason));
        }
        match reason {
            PeerGoneReason::NotHere => bump(&self.counters.peer_gone_not_here),
            _ => bump(&self.counters.peer_gone_disconnected),
        }
        to.wake.notify_one();
    }

    fn enqueue(&self, dst: &Client, src: PublicKey, packet: &[u8]) {
        let disco = derp::looks_like_disco(packet);
        {
            let mut q = dst.queues.lock();
            if q.closed {
                bump(&self.counters.dropped_gone);
                return;
            }
            let depth = self.config.queue_depth.max(1);
            let budget = self.config.queue_bytes.max(derp::MAX_PACKET_SIZE);
            let len = packet.len();
            let q = &mut *q;
            let (queue, bytes) = if disco {
                (&mut q.disco, &mut q.disco_bytes)
            } else {
                (&mut q.packets, &mut q.packet_bytes)
            };
            // Drop-oldest within the connection's budgets (packets, bytes).
            while queue.len() >= depth || (!queue.is_empty() && *bytes + len > budget) {
                if let Some((_, old)) = queue.pop_front() {
                    *bytes -= old.len();
                    self.held.fetch_sub(old.len(), Ordering::Relaxed);
                    bump(&self.counters.dropped_queue_full);
                }
            }
            // Then the relay's total budget: a packet that does not fit is
            // dropped (the receivers holding the memory are the slow ones).
            let total = self.config.total_queue_bytes;
            if self
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                    (h + len <= total).then_some(h + len)
                })
                .is_err()
            {
                bump(&self.counters.dropped_memory);
                return;
            }
            *bytes += len;
            queue.push_back((src, packet.to_vec()));
        }
        dst.wake.notify_one();
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        client: &Client,
        rd: &mut R,
        reader: &mut FrameReader,
        buf: &mut [u8],
    ) -> End {
        let mut budget = ByteBucket::new(&self.config, Instant::now());
        loop {
            loop {
                match reader.next_frame() {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        if let Err(e) = self.on_frame(client, frame) {
                            return e;
                        }
                    }
                    Err(e @ DerpError::Malformed { frame_type, .. })
                        if !handled_by_server(frame_type) =>
                    {
                        // Go's server never parses these: skipped.
                        tracing::trace!(error = %e, "derp: skipped a frame");
                    }
                    Err(e) => return End::Protocol(e.to_string()),
                }
            }
            match rd.read(buf).await {
                Ok(0) => return End::Eof,
                Ok(n) => {
                    reader.push(&buf[..n]);
                    // Over its rate: read nothing more from it until the
                    // debt is paid (its frames wait in its socket).
                    if let Some(wait) = budget.as_mut().and_then(|b| b.take(n, Instant::now())) {
                        bump(&self.counters.rate_limited);
                        tokio::time::sleep(wait).await;
                    }
                }
                Err(e) => return End::Io(e),
            }
        }
    }

    fn on_frame(&self, client: &Client, frame: Frame<'_>) -> Result<(), End> {
        match frame {
            Frame::SendPacket { dst, packet } => {
                let to = self.state.lock().clients.get(&dst).cloned();
                match to {
                    Some(to) => self.enqueue(&to, client.key, packet),
                    None => {
                        bump(&self.counters.dropped_unknown_dest);
                        if derp::looks_like_disco(packet)
                            && client.not_here.lock().allow(Instant::now())
                        {
                            self.peer_gone(client, dst, PeerGoneReason::NotHere);
                        }
                    }
                }
            }
            Frame::Ping { data } => {
                let mut q = client.queues.lock();
                // One pending Pong at a time; a faster pinger is ignored.
                if q.pong.is_none() {
                    q.pong = Some(data);
                    drop(q);
                    client.wake.notify_one();
                }
            }
            Frame::NotePreferred { preferred } => {
                client.preferred.store(preferred, Ordering::Relaxed);
            }
            Frame::ForwardPacket { .. } | Frame::WatchConns | Frame::ClosePeer { .. } => {
                return Err(End::Protocol(format!(
                    "{:?} needs the mesh key",
                    frame.frame_type()
                )));
            }
            // Everything else is a server's frame or unknown: skipped.
            _ => {}
        }
        Ok(())
    }

    async fn send_loop<W: AsyncWrite + Unpin>(
        &self,
        client: &Client,
        wr: &mut W,
        saw_src: &mut HashSet<PublicKey>,
    ) -> End {
        let mut next_keepalive =
            Instant::now() + self.config.keepalive + jitter(self.config.keepalive_jitter);
        let mut out = Vec::with_capacity(64 << 10);
        loop {
            let mut keepalive = false;
            tokio::select! {
                _ = client.wake.notified() => {}
                _ = sleep_until(next_keepalive) => keepalive = true,
            }
            if client.revoked.load(Ordering::Acquire) {
                return End::Revoked;
            }
            if client.kicked.load(Ordering::Acquire) {
                return End::Replaced;
            }
            out.clear();
            if keepalive {
                Frame::KeepAlive.encode(&mut out);
                next_keepalive =
                    Instant::now() + self.config.keepalive + jitter(self.config.keepalive_jitter);
            }
            let (pong, gone, disco, packets) = {
                let mut q = client.queues.lock();
                q.packet_bytes = 0;
                q.disco_bytes = 0;
                (
                    q.pong.take(),
                    std::mem::take(&mut q.peer_gone),
                    std::mem::take(&mut q.disco),
                    std::mem::take(&mut q.packets),
                )
            };
            for (key, reason) in gone {
                Frame::PeerGone { key, reason }.encode(&mut out);
            }
            let mut n = 0u64;
            let mut bytes = 0u64;
            for (src, packet) in disco.iter().chain(packets.iter()) {
                if saw_src.insert(*src) {
                    self.watch(*src, client);
                }
                Frame::RecvPacket { src: *src, packet }.encode(&mut out);
                n += 1;
                bytes += packet.len() as u64;
            }
            // The Pong last: everything queued before the Ping is ahead of it.
            if let Some(data) = pong {
                Frame::Pong { data }.encode(&mut out);
                bump(&self.counters.pongs);
            }
            // Still held (accounted) until written, or until this future is
            // dropped mid-write (the connection ended).
            drop((disco, packets));
            let held = Held(&self.held, bytes as usize);
            if out.is_empty() {
                continue;
            }
            let written = self.write(wr, &out).await;
            drop(held);
            if out.capacity() > 1 << 20 {
                out = Vec::with_capacity(64 << 10);
            }
            if let Err(e) = written {
                self.counters.dropped_gone.fetch_add(n, Ordering::Relaxed);
                return e;
            }
            self.counters
                .packets_forwarded
                .fetch_add(n, Ordering::Relaxed);
            self.counters
                .bytes_forwarded
                .fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Notes that `client` was sent packets from `src`, so it hears when
    /// `src` leaves.
    fn watch(&self, src: PublicKey, client: &Client) {
        let mut st = self.state.lock();
        // The client's Arc is in the map unless it was just replaced; a
        // replaced connection is closing and needs no notices.
        let Some(me) = st
            .clients
            .get(&client.key)
            .filter(|c| c.id == client.id)
            .map(Arc::downgrade)
        else {
            return;
        };
        st.watchers.entry(src).or_default().insert(client.id, me);
    }

    async fn write<W: AsyncWrite + Unpin>(&self, wr: &mut W, bytes: &[u8]) -> Result<(), End> {
        match timeout(self.config.write_timeout, async {
            wr.write_all(bytes).await?;
            wr.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::WriteTimeout),
        }
    }
}

/// Bytes taken from the queues and not yet written: released on drop.
struct Held<'a>(&'a AtomicUsize, usize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Frame types whose payload the server reads; a malformed one closes the
/// connection. Others are skipped whatever they hold, as in Go.
fn handled_by_server(t: FrameType) -> bool {
    matches!(
        t,
        FrameType::SEND_PACKET
            | FrameType::PING
            | FrameType::NOTE_PREFERRED
            | FrameType::FORWARD_PACKET
            | FrameType::WATCH_CONNS
            | FrameType::CLOSE_PEER
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_here_budget_is_three_then_one_a_second() {
        let mut b = TokenBucket::new();
        let t0 = b.at;
        assert!(b.allow(t0) && b.allow(t0) && b.allow(t0));
        assert!(!b.allow(t0));
        assert!(!b.allow(t0 + Duration::from_millis(500)));
        assert!(b.allow(t0 + Duration::from_millis(1000)));
        assert!(!b.allow(t0 + Duration::from_millis(1100)));
        // Idle time refills up to the burst, no more.
        let later = t0 + Duration::from_secs(100);
        assert!(b.allow(later) && b.allow(later) && b.allow(later));
        assert!(!b.allow(later));
    }

    fn client(key: u8) -> Client {
        Client {
            id: u64::from(key),
            key: PublicKey::from_bytes([key; 32]),
            queues: Mutex::new(Queues::default()),
            wake: Notify::new(),
            kicked: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            preferred: AtomicBool::new(false),
            not_here: Mutex::new(TokenBucket::new()),
        }
    }

    #[tokio::test]
    async fn full_queues_drop_their_oldest_and_disco_has_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::Store::open(dir.path()).expect("store");
        let key = store.derp_key(std::time::SystemTime::now()).expect("key");
        let (_tx, rx) = watch::channel(false);
        let config = DerpConfig {
            queue_depth: 2,
            ..DerpConfig::default()
        };
        let server = DerpServer::new(key, config, None, rx);
        let dst = client(1);
        let src = PublicKey::from_bytes([2; 32]);
        let mut disco = derp::DISCO_MAGIC.to_vec();
        disco.extend_from_slice(&[0; 56]);
        for i in 0..5u8 {
            server.enqueue(&dst, src, &[i]);
        }
        server.enqueue(&dst, src, &disco);
        {
            let q = dst.queues.lock();
            let kept: Vec<u8> = q.packets.iter().map(|(_, p)| p[0]).collect();
            assert_eq!(kept, [3, 4], "the newest two stay");
            assert_eq!(q.disco.len(), 1, "disco is not pushed out by WireGuard");
        }
        let c = server.counters();
        assert_eq!(c.dropped_queue_full.load(Ordering::Relaxed), 3);
        // A closed connection takes nothing more.
        dst.queues.lock().closed = true;
        server.enqueue(&dst, src, &[9]);
        assert_eq!(c.dropped_gone.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn server_frames_the_relay_reads() {
        assert!(handled_by_server(FrameType::SEND_PACKET));
        assert!(!handled_by_server(FrameType::RECV_PACKET));
        assert!(!handled_by_server(FrameType(0x77)));
    }
}
