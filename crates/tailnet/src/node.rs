//! The node handle applications hold.

use crate::config::{public_of, ConfigError, NodeConfig, PeerConfig};
use crate::dataplane::{Command, DataPlane, PeerTable, PingError, RelayLink};
use crate::stats::{DropCounters, NodeStats, PeerStats};
use crate::udp::Udp;
use parking_lot::{Mutex, RwLock};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use tailnet_engine::{Engine, EngineConfig};
use tailnet_netstack::{Netstack, NetstackError, TcpListener, TcpStream, UdpSocket};
use tailnet_wire::control::FilterRule;
use tailnet_wire::filter::{Filter, Rules};
use tailnet_wire::PublicKey;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Why a node could not start or an operation on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is inconsistent.
    #[error("invalid node configuration: {0}")]
    Config(#[from] ConfigError),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The netstack refused an address, MTU or port.
    #[error(transparent)]
    Netstack(#[from] NetstackError),
    /// The node has been shut down.
    #[error("the node is shut down")]
    Stopped,
    /// [`Node::ping`]: no peer has this address.
    #[error("no peer has address {0}")]
    NoPeer(IpAddr),
    /// [`Node::ping`]: the peer is plain WireGuard (no disco key to ping).
    #[error("peer {0} has no disco key; it cannot be pinged")]
    NoDisco(IpAddr),
    /// [`Node::ping`]: neither a direct address nor a relay reaches the peer.
    #[error("no path to {0}: no direct address known and no relay")]
    NoPath(IpAddr),
    /// [`Node::ping`]: no pong in time.
    #[error("no pong from {ip} within {timeout:?}")]
    PingTimeout {
        /// The address pinged.
        ip: IpAddr,
        /// How long we waited.
        timeout: std::time::Duration,
    },
}

/// One pong to [`Node::ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    /// The peer that answered (its node key).
    pub peer: PublicKey,
    /// The UDP address the pong came from; `None` when it came through
    /// the relay.
    pub addr: Option<SocketAddr>,
    /// The relay (DERP) region that carried it, when it did.
    pub derp_region: Option<u16>,
    /// Ping to pong.
    pub rtt: std::time::Duration,
}

struct Inner {
    public_key: PublicKey,
    disco_public: PublicKey,
    addresses: Vec<IpAddr>,
    listen_addr: SocketAddr,
    netstack: Netstack,
    commands: mpsc::Sender<Command>,
    drops: Arc<DropCounters>,
    /// The DERP relay's counters (zero while there is none).
    relay: Arc<crate::stats::RelayCounters>,
    peers: PeerTable,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Set when the node joined through a control server.
    control: Mutex<Option<ControlState>>,
    /// Helper tasks (the control runner) stopped with the node.
    helpers: Mutex<Vec<JoinHandle<()>>>,
    /// MagicDNS, for a node that joined through control: `dns::DnsServer`,
    /// kept as `Any` because `dns` is built on `Node`, not the reverse
    /// (no import circle between the two modules).
    dns: Mutex<Option<Arc<dyn std::any::Any + Send + Sync>>>,
    /// Each peer's allowed IPs as last given to the data plane, so
    /// [`Node::dial`] can tell "no route" at once and
    /// [`Node::whois`] can name a statically configured peer.
    routes: RwLock<Vec<Route>>,
}

/// One peer's allowed IPs.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) key: PublicKey,
    pub(crate) allowed_ips: Vec<ipnet::IpNet>,
}

fn routes_of(peers: &[PeerConfig]) -> Vec<Route> {
    peers
        .iter()
        .map(|p| Route {
            key: p.public_key,
            allowed_ips: p.allowed_ips.clone(),
        })
        .collect()
}

/// What a node that joined through control shares with its control task.
#[derive(Debug)]
pub(crate) struct ControlState {
    pub(crate) netmap: tokio::sync::watch::Sender<Arc<tailnet_wire::control::Netmap>>,
    pub(crate) state: tokio::sync::watch::Sender<crate::status::BackendState>,
    pub(crate) control_url: String,
    /// Whether the map stream is up, set by the control runner.
    pub(crate) link: Arc<Mutex<ControlHealth>>,
}

/// The node's connection to its control server, for a node that joined
/// through one ([`Node::control_health`]).
///
/// Losing control does not stop the node: packets keep flowing on the last
/// netmap and the node keeps reconnecting, so its `BackendState` stays
/// `Running` (as tailscaled's does); this is what tells the difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlHealth {
    /// Whether the map stream is up.
    pub connected: bool,
    /// Since when it has been up (or down).
    pub since: std::time::SystemTime,
    /// Why it went down, or why the last reconnect failed (one line, no
    /// secrets); `None` while connected.
    pub last_error: Option<String>,
}

/// A handle that does not keep the node alive (for its own tasks).
#[derive(Clone)]
pub(crate) struct WeakNode(Weak<Inner>);

impl WeakNode {
    pub(crate) fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

/// A running tailnet node. Cheap to clone; the data plane stops when
/// [`Node::shutdown`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("public_key", &self.inner.public_key)
            .field("addresses", &self.inner.addresses)
            .field("listen_addr", &self.inner.listen_addr)
            .finish()
    }
}

impl Node {
    pub(crate) fn relay_counters(&self) -> Arc<crate::stats::RelayCounters> {
        self.inner.relay.clone()
    }

    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    pub(crate) fn attach_control(&self, state: ControlState) {
        *self.inner.control.lock() = Some(state);
    }

    pub(crate) fn attach_task(&self, task: JoinHandle<()>) {
        self.inner.helpers.lock().push(task);
    }

    pub(crate) fn attach_dns(&self, server: Arc<dyn std::any::Any + Send + Sync>) {
        *self.inner.dns.lock() = Some(server);
    }

    /// The attached DNS server, if it is a `T`.
    pub(crate) fn dns_server<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.inner.dns.lock().clone()?.downcast::<T>().ok()
    }

    /// The current netmap and its changes, for a node that joined through
    /// control (`None` for a statically configured node). The receiver
    /// sees every update control sends.
    pub fn watch_netmap(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<Arc<tailnet_wire::control::Netmap>>> {
        self.inner
            .control
            .lock()
            .as_ref()
            .map(|c| c.netmap.subscribe())
    }

    /// The control server this node joined through, if any.
    pub fn control_url(&self) -> Option<String> {
        self.inner
            .control
            .lock()
            .as_ref()
            .map(|c| c.control_url.clone())
    }

    /// The connection to control, for a node that joined through control
    /// (`None` for a statically configured node).
    pub fn control_health(&self) -> Option<ControlHealth> {
        self.inner
            .control
            .lock()
            .as_ref()
            .map(|c| c.link.lock().clone())
    }

    /// The node's state: `Running` once up; `Stopped` after shutdown.
    pub fn backend_state(&self) -> crate::status::BackendState {
        match self.inner.control.lock().as_ref() {
            Some(c) => *c.state.borrow(),
            None if self.inner.task.lock().is_some() => crate::status::BackendState::Running,
            None => crate::status::BackendState::Stopped,
        }
    }

    /// Binds the UDP socket, builds the netstack and starts the data plane
    /// on the current tokio runtime. A node started this way has no packet
    /// filter (every inbound packet from a peer is accepted) until
    /// [`set_packet_filter`](Self::set_packet_filter) gives it one.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Self::start_filtered(config, None).await
    }

    /// [`start`](Self::start) with packet-filter rules in force from the
    /// first packet (`None`: accept everything).
    pub(crate) async fn start_filtered(
        config: NodeConfig,
        rules: Option<Arc<Rules>>,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let udp = Udp::bind(config.listen).map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
        let listen_addr = udp.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
        let netstack = Netstack::new(&config.addresses, config.netstack.clone())?;
        let (tx, rx) = mpsc::channel(16);
        let peers: PeerTable = Arc::new(RwLock::new(Vec::new()));
        let disco_key = config
            .disco_key
            .clone()
            .unwrap_or_else(tailnet_wire::PrivateKey::generate);
        let mut seed = [0u8; 32];
        // Without an OS random source a fixed seed still gives unique IDs
        // (the engine's generator runs on); pongs are authenticated anyway.
        let _ = getrandom::fill(&mut seed);
        let mut engine = Engine::new(
            tokio::time::Instant::now().into_std(),
            EngineConfig {
                private_key: config.private_key.clone(),
                disco_key,
                endpoints: crate::udp::local_endpoints(listen_addr),
                seed,
                always_use_derp: config.always_use_derp
                    || crate::config::always_use_derp_from_env(),
            },
        );
        engine.set_packet_filter(Filter::new(&config.addresses, rules));
        let disco_public = engine.disco_public_key();
        let drops = engine.drops().clone();
        let dp = DataPlane::new(
            udp,
            netstack.clone(),
            engine,
            config.peers.clone(),
            rx,
            peers.clone(),
        );
        let task = tokio::spawn(dp.run());
        let public_key = public_of(&config.private_key);
        let routes = RwLock::new(routes_of(&config.peers));
        tracing::info!(
            node = %public_key.short(),
            addresses = ?config.addresses,
            udp = %listen_addr,
            peers = config.peers.len(),
            "node started"
        );
        Ok(Node {
            inner: Arc::new(Inner {
                public_key,
                disco_public,
                addresses: config.addresses,
                listen_addr,
                netstack,
                commands: tx,
                drops,
                relay: Arc::default(),
                peers,
                task: Mutex::new(Some(task)),
                control: Mutex::new(None),
                helpers: Mutex::new(Vec::new()),
                dns: Mutex::new(None),
                routes,
            }),
        })
    }

    /// The node's WireGuard public key (its node key).
    pub fn public_key(&self) -> PublicKey {
        self.inner.public_key
    }

    /// The node's disco public key (what control advertises to peers, and
    /// what peers' [`PeerConfig::disco_key`] must name).
    pub fn disco_public_key(&self) -> PublicKey {
        self.inner.disco_public
    }

    /// Attaches a relay (a DERP client): from now on a disco peer with a
    /// home region is reached through it while no direct path is trusted,
    /// and packets it delivers are handled like datagrams from the peer it
    /// names. `None` detaches it.
    pub async fn set_relay(&self, relay: Option<RelayLink>) -> Result<(), NodeError> {
        self.inner
            .commands
            .send(Command::SetRelay(relay))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Our UDP endpoints as CallMeMaybe tells them to peers (default: the
    /// socket's address, or every interface's with its port).
    pub async fn set_endpoints(&self, endpoints: Vec<SocketAddr>) -> Result<(), NodeError> {
        self.inner
            .commands
            .send(Command::SetEndpoints(endpoints))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// The node's tailnet addresses.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.inner.addresses
    }

    /// The node's IPv4 tailnet address, if it has one.
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.inner.addresses.iter().copied().find(IpAddr::is_ipv4)
    }

    /// The address the UDP socket is bound to (with the real port).
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen_addr
    }

    /// The peer whose allowed IPs cover `ip` (longest prefix wins), as the
    /// data plane would route a packet to it.
    pub(crate) fn route_to(&self, ip: IpAddr) -> Option<PublicKey> {
        self.inner
            .routes
            .read()
            .iter()
            .flat_map(|r| r.allowed_ips.iter().map(move |n| (n, r.key)))
            .filter(|(n, _)| n.contains(&ip))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, k)| k)
    }

    /// The netstack, for socket types not wrapped here.
    pub fn netstack(&self) -> &Netstack {
        &self.inner.netstack
    }

    /// Opens a TCP connection over the tailnet.
    pub async fn tcp_connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect(&self.inner.netstack, addr).await
    }

    /// Listens for TCP connections on `port` of the node's addresses.
    pub fn tcp_listen(&self, port: u16) -> Result<TcpListener, NodeError> {
        Ok(TcpListener::bind(&self.inner.netstack, port)?)
    }

    /// Binds a UDP socket on `port` of the node's addresses (0: any free).
    pub fn udp_bind(&self, port: u16) -> Result<UdpSocket, NodeError> {
        Ok(UdpSocket::bind(&self.inner.netstack, port)?)
    }

    /// Replaces the peer set. Peers that stay keep their sessions and
    /// flows; new ones get a tunnel; missing ones are removed.
    pub async fn set_peers(&self, peers: Vec<PeerConfig>) -> Result<(), NodeError> {
        *self.inner.routes.write() = routes_of(&peers);
        self.inner
            .commands
            .send(Command::SetPeers(peers))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Replaces the ACL packet filter (`tailcfg.FilterRule`s, as control
    /// sends them): from the next packet on, new inbound flows (a TCP SYN,
    /// a UDP packet that is not a reply to a flow this node opened, an ICMP
    /// echo request) pass only where a rule allows them. Flows already
    /// open are untouched: TCP segments other than a SYN always pass, and
    /// replies of recorded UDP flows keep passing. `Some(vec![])` denies
    /// every new inbound flow; `None` accepts everything (the default of a
    /// node started with [`start`](Self::start)). A node that joined
    /// through control gets its filter from every netmap; setting one by
    /// hand lasts until control sends the next change.
    ///
    /// Entries the Go client would skip (a bad address) are skipped and
    /// logged; deprecated `SrcBits`/`Bits` reject the whole filter.
    pub async fn set_packet_filter(&self, rules: Option<Vec<FilterRule>>) -> Result<(), NodeError> {
        let compiled = rules.map(|r| Arc::new(compile_rules(&r)));
        self.inner
            .commands
            .send(Command::SetFilter(compiled))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Sends a disco ping to the peer with tailnet address `ip` (like
    /// `tailscale ping`): to its trusted direct address, or while none is
    /// trusted to every direct candidate and through the relay. Returns
    /// the first pong, with where it came from and the round trip. The
    /// pong does not change the peer's path.
    pub async fn ping(
        &self,
        ip: IpAddr,
        timeout: std::time::Duration,
    ) -> Result<PingResult, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .commands
            .send(Command::Ping { ip, reply: tx })
            .await
            .map_err(|_| NodeError::Stopped)?;
        let pong = match tokio::time::timeout(timeout, rx).await {
            Err(_) => return Err(NodeError::PingTimeout { ip, timeout }),
            Ok(Err(_)) => return Err(NodeError::Stopped),
            Ok(Ok(Err(e))) => {
                return Err(match e {
                    PingError::UnknownPeer => NodeError::NoPeer(ip),
                    PingError::PlainWireGuard => NodeError::NoDisco(ip),
                    PingError::Unreachable => NodeError::NoPath(ip),
                })
            }
            Ok(Ok(Ok(p))) => p,
        };
        Ok(PingResult {
            peer: pong.peer,
            addr: pong.addr,
            derp_region: u16::try_from(pong.region).ok().filter(|r| *r > 0),
            rtt: pong.rtt,
        })
    }

    /// Asks the STUN server at `server` which address our UDP socket has
    /// as seen from there (our endpoint behind a NAT). `None` if no answer
    /// came within `timeout`.
    pub async fn stun(
        &self,
        server: SocketAddr,
        timeout: std::time::Duration,
    ) -> Option<SocketAddr> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .commands
            .send(Command::Stun { server, reply: tx })
            .await
            .ok()?;
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> NodeStats {
        let (now, wall) = clocks();
        NodeStats {
            peers: self
                .inner
                .peers
                .read()
                .iter()
                .map(|p| p.snapshot(now, wall))
                .collect(),
            drops: self.inner.drops.snapshot(),
            netstack: self.inner.netstack.stats(),
            relay: self.inner.relay.snapshot(),
        }
    }

    /// One peer's counters.
    pub fn peer_stats(&self, key: &PublicKey) -> Option<PeerStats> {
        let (now, wall) = clocks();
        self.inner
            .peers
            .read()
            .iter()
            .find(|p| p.key == *key)
            .map(|p| p.snapshot(now, wall))
    }

    /// Stops the data plane and the control runner and waits for both.
    /// Sockets on the node stop moving data; the state directory is
    /// unlocked when this returns.
    pub async fn shutdown(&self) {
        // Wait for the control runner to be gone, not just told to go: it
        // owns the state directory's lock, and a node restarted on the same
        // directory right after must find it free.
        let helpers: Vec<JoinHandle<()>> = self.inner.helpers.lock().drain(..).collect();
        for t in &helpers {
            t.abort();
        }
        for t in helpers {
            let _ = t.await;
        }
        if let Some(c) = self.inner.control.lock().as_ref() {
            c.state.send_replace(crate::status::BackendState::Stopped);
        }
        let _ = self.inner.commands.send(Command::Shutdown).await;
        let task = self.inner.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// Compiles filter rules, logging what had to be skipped.
pub(crate) fn compile_rules(rules: &[FilterRule]) -> Rules {
    let compiled = Rules::compile(rules);
    for e in compiled.errors() {
        tracing::warn!(error = %e, "packet filter: entry skipped");
    }
    tracing::debug!(rules = compiled.len(), "packet filter set");
    compiled
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.helpers.lock().drain(..) {
            t.abort();
        }
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// One moment on the engine's clock (tokio's) and on the wall clock,
/// taken once, to date the engine's instants for [`PeerStats`] the same way
/// in every snapshot.
fn clocks() -> (std::time::Instant, std::time::SystemTime) {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, std::time::SystemTime)> =
        std::sync::OnceLock::new();
    *ANCHOR.get_or_init(|| {
        (
            tokio::time::Instant::now().into_std(),
            std::time::SystemTime::now(),
        )
    })
}
