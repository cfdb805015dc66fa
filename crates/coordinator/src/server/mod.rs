//! The embedded coordination server: HTTP/1.1 front door ([`crate::http`]),
//! then HTTP/2 inside Noise with `/machine/register` and `/machine/map`,
//! the in-memory [`Hub`] of map streams, the ephemeral-node sweep, and the
//! DERP relay ([`derp`]) and STUN responder ([`stun`]) the default DERP map
//! points at.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let store = Arc::new(coordinator::Store::open("/var/lib/coord".as_ref())?);
//! let server = coordinator::server::Server::builder(store)
//!     .bind("127.0.0.1:8080".parse()?)
//!     .await?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Decisions that need no socket live in their own modules and are tested
//! there: [`mapper`] (map messages from stored nodes), [`register`]
//! (register answers), [`hub`] (streams and events).

mod control;
pub mod derp;
mod derp_map;
pub mod hub;
pub mod mapper;
pub mod metrics;
pub mod register;
mod session;
pub mod stun;

pub use control::map_update;
pub use derp_map::{load_derp_map, parse_derp_map, DerpMapError};
pub use hub::{Hub, HubEvent};
pub use mapper::{default_derp_map, default_derp_map_on, MapContext};

use crate::http::{serve_inner, ControlKey, NoiseConn};
use crate::names::BaseDomain;
use crate::nodes::Node;
use crate::policy::PolicyNode;
use crate::{Store, StoreError, DEFAULT_EPHEMERAL_GRACE};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet_control::NoiseStream;
use tailnet_wire::control::{DerpMap, DnsRecord, FilterRule, MachinePublic, Resolver};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use tailnet_listen::Limits;

/// Where packet filters come from. The policy engine implements this; the
/// default, [`AllowAll`], lets every node reach every port of every other.
pub trait PacketFilterPolicy: Send + Sync + 'static {
    /// The rules for `node`, knowing every node in the tailnet (for tags
    /// and names that resolve to addresses).
    fn packet_filter_for(&self, node: &Node, nodes: &[Node]) -> Vec<FilterRule>;

    /// Whether the rules can change when other nodes join, leave or change
    /// (then every stream recomputes them on each peer change and sends
    /// them when they differ).
    fn depends_on_peers(&self) -> bool {
        true
    }
}

/// The allow-all filter, `tailcfg.FilterAllowAll` (filter.md §1).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl PacketFilterPolicy for AllowAll {
    fn packet_filter_for(&self, _node: &Node, _nodes: &[Node]) -> Vec<FilterRule> {
        packet_filter_for(_node)
    }

    fn depends_on_peers(&self) -> bool {
        false
    }
}

/// The policy file ([`crate::policy`]): rules compiled for each node
/// against every node's addresses and tags.
impl PacketFilterPolicy for crate::policy::Policy {
    fn packet_filter_for(&self, node: &Node, nodes: &[Node]) -> Vec<FilterRule> {
        if self.is_allow_all() {
            return packet_filter_for(node);
        }
        let all: Vec<PolicyNode> = nodes.iter().map(PolicyNode::from).collect();
        self.filter_for(&PolicyNode::from(node), &all)
    }

    fn depends_on_peers(&self) -> bool {
        !self.is_allow_all()
    }
}

/// The packet filter for `node` with no policy: allow all.
pub fn packet_filter_for(_node: &Node) -> Vec<FilterRule> {
    vec![FilterRule::allow_all()]
}

/// Tunables of a running server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Base interval between keep-alives on an idle stream (the Go client
    /// gives up after 120 s of silence; control.md §7).
    pub keepalive: Duration,
    /// Random extra added to each keep-alive interval.
    pub keepalive_jitter: Duration,
    /// How long an ephemeral node may stay offline before it is removed.
    pub ephemeral_grace: Duration,
    /// How often the ephemeral sweep runs.
    pub sweep_interval: Duration,
    /// Largest request body accepted (register and map requests).
    pub max_body: usize,
    /// Timeouts and connection caps of every connection (HTTP/1.1, the
    /// HTTP/2 inside Noise, DERP).
    pub limits: Limits,
    /// How often the database is checked for another process's commits
    /// (`coordinator nodes delete|expire|rename`, `authkey expire`): when
    /// there are some, every map stream resynchronises from the store
    /// (a deleted or expired node's stream ends) and the relay checks its
    /// clients (a deleted or expired node is disconnected).
    pub admin_poll: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            keepalive: Duration::from_secs(50),
            keepalive_jitter: Duration::from_secs(8),
            ephemeral_grace: DEFAULT_EPHEMERAL_GRACE,
            sweep_interval: Duration::from_secs(30),
            max_body: 1 << 20,
            admin_poll: Duration::from_secs(1),
            limits: Limits {
                // Every node holds a control and a DERP connection, and a
                // cluster behind one NAT shares a source address.
                max_connections: 16_384,
                max_connections_per_ip: 4_096,
                ..Limits::default()
            },
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding or inspecting the listening socket failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS {what} {path}: {detail}")]
    Tls {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key's bytes).
        detail: String,
    },
    /// The database failed while starting.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// PEM files for serving HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// A TLS acceptor for these files: rustls with ring, HTTP/1.1 only
    /// (the ts2021 upgrade and DERP both run on HTTP/1.1).
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert_err = |detail: String| ServerError::Tls {
            what: "certificate",
            path: self.cert.clone(),
            detail,
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| cert_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(cert_err("no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| ServerError::Tls {
            what: "key",
            path: self.key.clone(),
            detail: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cert_err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ServerError::Tls {
                what: "key",
                path: self.key.clone(),
                detail: format!("does not match the certificate or is unusable: {e}"),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// State shared by every connection and stream.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) hub: Hub,
    pub(crate) config: ServerConfig,
    pub(crate) ctx: MapContext,
    /// Swapped by [`ServerHandle::set_policy`].
    pub(crate) policy: parking_lot::RwLock<Arc<dyn PacketFilterPolicy>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The relay, told when nodes are removed (it disconnects them).
    pub(crate) derp: Arc<derp::DerpServer>,
    /// Refused registrations are logged at most once per interval.
    pub(crate) refused_log: tailnet_listen::LogLimiter,
    /// Registrations, streams, store changes (for `/metrics`).
    pub(crate) counters: metrics::ControlCounters,
}

impl Shared {
    /// The packet-filter policy in force now.
    pub(crate) fn policy(&self) -> Arc<dyn PacketFilterPolicy> {
        self.policy.read().clone()
    }
}

/// Resolves once shutdown was requested (or the server is gone).
pub(crate) async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Runs a blocking store call off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await
}

/// The coordinator server; start one with [`Server::builder`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A server over `store`, with the defaults: allow-all filter, the
    /// stored base domain, a DERP map pointing at the server's own port.
    pub fn builder(store: Arc<Store>) -> ServerBuilder {
        ServerBuilder {
            store,
            config: ServerConfig::default(),
            derp_map: None,
            derp_port: None,
            derp_host: None,
            policy: Arc::new(AllowAll),
            base_domain: None,
            dns_resolvers: Vec::new(),
            dns_extra_records: Vec::new(),
            tls: None,
            derp_config: derp::DerpConfig::default(),
        }
    }
}

/// Options of a [`Server`].
pub struct ServerBuilder {
    store: Arc<Store>,
    config: ServerConfig,
    derp_map: Option<DerpMap>,
    derp_port: Option<u16>,
    derp_host: Option<String>,
    policy: Arc<dyn PacketFilterPolicy>,
    base_domain: Option<BaseDomain>,
    dns_resolvers: Vec<Resolver>,
    dns_extra_records: Vec<DnsRecord>,
    tls: Option<TlsFiles>,
    derp_config: derp::DerpConfig,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("derp_map", &self.derp_map)
            .field("base_domain", &self.base_domain)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The default DERP map's relay on another port (e.g. a separate TLS
    /// listener); STUN stays on the server's own port.
    pub fn derp_port(mut self, port: u16) -> Self {
        self.derp_port = Some(port);
        self
    }

    /// The host nodes dial for the default DERP map's relay and STUN: an
    /// IP address, or a DNS name (then a TLS relay's certificate must be
    /// for it). Default: the listen address when it is a specific IP, else
    /// 127.0.0.1, which only nodes on this machine can use.
    pub fn derp_host(mut self, host: impl Into<String>) -> Self {
        self.derp_host = Some(host.into());
        self
    }

    /// The DERP map sent to nodes (default: [`default_derp_map`] on the
    /// server's own port).
    pub fn derp_map(mut self, map: DerpMap) -> Self {
        self.derp_map = Some(map);
        self
    }

    /// The packet-filter policy (default [`AllowAll`]).
    pub fn policy(mut self, policy: Arc<dyn PacketFilterPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// The MagicDNS base domain; stored, so `nodes list` shows the same
    /// names (default: the stored one, else `tailnet.internal`).
    pub fn base_domain(mut self, domain: BaseDomain) -> Self {
        self.base_domain = Some(domain);
        self
    }

    /// Upstream DNS resolvers for names outside the tailnet.
    pub fn dns_resolvers(mut self, resolvers: Vec<Resolver>) -> Self {
        self.dns_resolvers = resolvers;
        self
    }

    /// Extra A/AAAA records every node's MagicDNS answers
    /// (`DNSConfig.ExtraRecords`).
    pub fn dns_extra_records(mut self, records: Vec<DnsRecord>) -> Self {
        self.dns_extra_records = records;
        self
    }

    /// Serve HTTPS with these PEM files (default: plain HTTP, which Go
    /// clients use for `http://` control URLs on loopback and private
    /// addresses).
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Tunables of the DERP relay (keep-alive, handshake timeout, queues).
    pub fn derp_config(mut self, config: derp::DerpConfig) -> Self {
        self.derp_config = config;
        self
    }

    /// All tunables at once.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Keep-alive interval and jitter on idle streams.
    pub fn keepalive(mut self, every: Duration, jitter: Duration) -> Self {
        self.config.keepalive = every;
        self.config.keepalive_jitter = jitter;
        self
    }

    /// How long ephemeral nodes may stay offline, and how often to check.
    pub fn ephemeral_grace(mut self, grace: Duration, sweep_interval: Duration) -> Self {
        self.config.ephemeral_grace = grace;
        self.config.sweep_interval = sweep_interval;
        self
    }

    /// Timeouts and connection caps of every connection.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Largest request body accepted.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// Binds `addr` and serves on it.
    pub async fn bind(self, addr: SocketAddr) -> Result<ServerHandle, ServerError> {
        let listener = tailnet_listen::bind_tcp(addr).map_err(|source| ServerError::Listen {
            addr: addr.to_string(),
            source,
        })?;
        self.serve(listener).await
    }

    /// Serves on `listener`: marks every node offline (no stream survived
    /// a restart), then accepts connections and sweeps ephemeral nodes
    /// until [`ServerHandle::shutdown`].
    pub async fn serve(self, listener: TcpListener) -> Result<ServerHandle, ServerError> {
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: "listener".into(),
                source,
            })?;
        let tls = self.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
        let store = self.store.clone();
        let base_domain = self.base_domain.clone();
        let (key, base_domain, derp_key) = blocking(move || -> Result<_, StoreError> {
            if let Some(d) = &base_domain {
                store.set_base_domain(d)?;
            }
            store.mark_all_offline(SystemTime::now())?;
            Ok((
                ControlKey::load(&store)?,
                store.base_domain()?,
                store.derp_key(SystemTime::now())?,
            ))
        })
        .await
        .map_err(|e| StoreError::corrupt("startup task", e))??;
        let key = Arc::new(key);
        let control_public = key.public();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let derp = Arc::new(derp::DerpServer::new(
            derp_key,
            self.derp_config,
            Some(self.store.clone()),
            shutdown_rx.clone(),
        ));
        tokio::spawn(derp.clone().reverify_loop());
        // STUN on the same port number over UDP, when it is free.
        let stun_counters = Arc::new(stun::StunCounters::default());
        let stun_socket = match tokio::net::UdpSocket::bind(local_addr).await {
            Ok(sock) => Some(sock),
            Err(e) => {
                tracing::warn!(error = %e, addr = %local_addr, "no STUN: UDP port unavailable");
                None
            }
        };
        let stun_port = stun_socket.as_ref().map(|_| local_addr.port());
        let shared = Arc::new(Shared {
            store: self.store,
            hub: Hub::new(hub::DEFAULT_EVENT_CAPACITY),
            ctx: MapContext {
                base_domain,
                derp_map: self.derp_map.unwrap_or_else(|| {
                    let host = self.derp_host.unwrap_or_else(|| {
                        let ip = local_addr.ip();
                        if ip.is_unspecified() {
                            "127.0.0.1".to_string()
                        } else {
                            ip.to_string()
                        }
                    });
                    mapper::default_derp_map_on(
                        &host,
                        self.derp_port.unwrap_or(local_addr.port()),
                        stun_port,
                    )
                }),
                dns_resolvers: self.dns_resolvers,
                dns_extra_records: self.dns_extra_records,
            },
            config: self.config,
            policy: parking_lot::RwLock::new(self.policy),
            shutdown: shutdown_rx,
            derp: derp.clone(),
            refused_log: tailnet_listen::LogLimiter::new(Duration::from_secs(10)),
            counters: metrics::ControlCounters::default(),
        });
        let observer = metrics::Observer {
            shared: shared.clone(),
            stun: stun_counters.clone(),
        };

        let s = shared.clone();
        let relay = derp.clone();
        let limits = shared.config.limits;
        let obs = observer.clone();
        let accept = tokio::spawn(async move {
            let handler = move |conn: NoiseConn| serve_noise(s.clone(), conn);
            serve_inner(listener, key, tls, Some(relay), Some(obs), limits, handler).await
        });
        let sweep = tokio::spawn(sweep_ephemeral(shared.clone()));
        let watch = tokio::spawn(watch_store(shared.clone()));
        let stun_task = stun_socket.map(|sock| {
            tokio::spawn(stun::serve(
                sock,
                stun_counters.clone(),
                shared.shutdown.clone(),
            ))
        });
        Ok(ServerHandle {
            derp,
            stun: stun_counters,
            stun_task,
            local_addr,
            control_public,
            shared,
            shutdown: shutdown_tx,
            accept: Some(accept),
            sweep,
            watch,
            observer,
            metrics_task: None,
        })
    }
}

/// HTTP/2 with prior knowledge over the Noise records of one connection
/// (control.md §5); every request is answered as the Noise peer.
async fn serve_noise(shared: Arc<Shared>, conn: NoiseConn) {
    let machine = conn.machine_key;
    let io = TokioIo::new(NoiseStream::new(conn.transport, conn.io));
    let s = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let s = s.clone();
        async move { Ok::<_, std::convert::Infallible>(control::route(s, machine, req).await) }
    });
    let mut shutdown = shared.shutdown.clone();
    let conn = shared.config.limits.http2().serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(machine = %machine.key().short(), error = %e, "coordinator: control connection");
            }
        }
        _ = until_shutdown(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Removes ephemeral nodes that stayed offline longer than the grace
/// period, telling peers.
async fn sweep_ephemeral(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut tick =
        tokio::time::interval(shared.config.sweep_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = until_shutdown(&mut shutdown) => return,
        }
        let s = shared.clone();
        let grace = shared.config.ephemeral_grace;
        let removed = blocking(move || {
            let cutoff = SystemTime::now()
                .checked_sub(grace)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            s.store.remove_ephemeral_offline_since(cutoff)
        })
        .await;
        match removed {
            Ok(Ok(ids)) => {
                for id in &ids {
                    tracing::info!(node = id.0, "coordinator: removed offline ephemeral node");
                    shared.hub.publish_removed(*id);
                }
                if !ids.is_empty() {
                    shared.derp.reverify_now();
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "coordinator: ephemeral sweep"),
            Err(e) => tracing::warn!(error = %e, "coordinator: ephemeral sweep"),
        }
    }
}

/// Applies other processes' commits (the admin CLI writes the database
/// directly): when `PRAGMA data_version` moves, every map stream
/// resynchronises from the store and the relay re-checks its clients, so a
/// deleted or expired node loses its stream and its DERP connection and
/// peers drop it, within [`ServerConfig::admin_poll`].
async fn watch_store(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(shared.config.admin_poll.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let errors_log = tailnet_listen::LogLimiter::new(Duration::from_secs(60));
    let mut last: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = until_shutdown(&mut shutdown) => return,
        }
        let s = shared.clone();
        match blocking(move || s.store.data_version()).await {
            Ok(Ok(v)) => {
                if last.is_some_and(|l| l != v) {
                    shared
                        .counters
                        .store_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("coordinator: database changed by another process (admin command); resynchronising streams and relay clients");
                    shared.hub.publish_store_changed();
                    shared.derp.reverify_now();
                }
                last = Some(v);
            }
            Ok(Err(e)) => {
                shared
                    .counters
                    .store_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(suppressed) = errors_log.allow() {
                    tracing::warn!(error = %e, suppressed, "coordinator: polling the database");
                }
            }
            Err(_) => {}
        }
    }
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    control_public: MachinePublic,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    /// `None` once [`ServerHandle::accept_failed`] saw it end (a
    /// finished `JoinHandle` must not be polled again).
    accept: Option<JoinHandle<io::Result<()>>>,
    sweep: JoinHandle<()>,
    watch: JoinHandle<()>,
    observer: metrics::Observer,
    metrics_task: Option<JoinHandle<()>>,
    stun: Arc<stun::StunCounters>,
    stun_task: Option<JoinHandle<()>>,
    derp: Arc<derp::DerpServer>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("control_public", &self.control_public)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The coordinator's Noise public key (`/key`'s `publicKey`).
    pub fn control_public(&self) -> MachinePublic {
        self.control_public
    }

    /// The store the server uses.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// How many nodes have a map stream open.
    pub fn connected_nodes(&self) -> usize {
        self.shared.hub.connected()
    }

    /// The DERP map nodes are sent.
    pub fn derp_map(&self) -> &DerpMap {
        &self.shared.ctx.derp_map
    }

    /// The STUN responder's counters (answered, dropped).
    pub fn stun_counters(&self) -> &stun::StunCounters {
        &self.stun
    }

    /// The DERP relay's counters (connections, packets forwarded, drops by
    /// reason).
    pub fn derp_counters(&self) -> &derp::DerpCounters {
        self.derp.counters()
    }

    /// The DERP relay: its public key, its connected clients.
    pub fn derp(&self) -> &derp::DerpServer {
        &self.derp
    }

    /// The control server's counters (registrations by outcome, streams,
    /// store changes applied).
    pub fn control_counters(&self) -> &metrics::ControlCounters {
        &self.shared.counters
    }

    /// The `/metrics` text now (Prometheus text format).
    pub async fn metrics_text(&self) -> String {
        self.observer.metrics().await
    }

    /// Serves `GET /healthz` and `GET /metrics` on `listener` (plain
    /// HTTP/1.1, the same connection caps and timeouts as the main
    /// listener) until shutdown. For Prometheus inside the cluster; the
    /// main listener shows `/metrics` only to loopback clients.
    pub fn serve_metrics(&mut self, listener: TcpListener) {
        let task = tokio::spawn(metrics::serve(
            listener,
            self.observer.clone(),
            self.shared.config.limits,
            self.shared.shutdown.clone(),
        ));
        if let Some(old) = self.metrics_task.replace(task) {
            old.abort();
        }
    }

    /// Replaces the packet-filter policy at run time: every open map
    /// stream recomputes its node's filter and sends it if it changed, so
    /// nodes apply it to new flows at once (connections already open are
    /// not cut: filters only ever check new flows). Later full maps use it
    /// too.
    pub fn set_policy(&self, policy: Arc<dyn PacketFilterPolicy>) {
        *self.shared.policy.write() = policy;
        self.shared.hub.publish_policy_changed();
    }

    /// Waits until the accept loop ends. It does not end on accept
    /// errors (those are retried after a backoff), only if its task
    /// panicked; the server keeps running until
    /// [`shutdown`](Self::shutdown). Safe to call again: it then answers
    /// at once.
    pub async fn accept_failed(&mut self) -> io::Error {
        let Some(task) = self.accept.as_mut() else {
            return io::Error::other("accept loop ended");
        };
        let r = task.await;
        self.accept = None;
        match r {
            Ok(Err(e)) => e,
            Ok(Ok(())) => io::Error::other("accept loop ended"),
            Err(e) => io::Error::other(e),
        }
    }

    /// Stops accepting, ends every map stream (each node is marked offline),
    /// every DERP connection and the sweep.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        // The accept loop has no shutdown of its own (and may be gone
        // already, see `accept_failed`).
        if let Some(accept) = self.accept {
            accept.abort();
            let _ = accept.await;
        }
        let _ = self.sweep.await;
        let _ = self.watch.await;
        if let Some(t) = self.metrics_task {
            let _ = t.await;
        }
        if let Some(t) = self.stun_task {
            let _ = t.await;
        }
        // Give streams a moment to mark their nodes offline.
        for _ in 0..50 {
            if self.shared.hub.connected() == 0 && self.derp.clients() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
