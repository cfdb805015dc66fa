//! `inferadb-mesh engine` and `inferadb-mesh control`: the seed's two
//! processes, each with its embedded tailnet node.
//!
//! Both start the node from `mesh:`, discovery (engine: control through
//! `auth.discovery`; control: engines through
//! `cache_invalidation.discovery`), and one HTTP server, served on the OS
//! address `http.listen` and on the tailnet port (engine 8080, control
//! 9090): `GET /metrics` (Prometheus text: discovery's
//! `inferadb_tailscale_*`, the node's `inferadb_tailnet_*`, invalidation's),
//! `GET /healthz` (the process is up), `GET /readyz` (200 once the node is
//! Running and discovery has run once, else 503). The engine adds
//! `POST /v1/invalidate` (the signed webhook receiver, which logs
//! `Vault cache invalidation received vault_id=…`); control adds
//! `POST /v1/vaults` (bearer token from `api.token`), which creates a vault
//! id and sends its invalidation to every discovered engine.

use crate::config::{read_secret, ConfigError, ControlConfig, EngineConfig, MeshConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use inferadb_discovery::{encode_text, Discovery, EndpointSet};
use inferadb_invalidation::{
    Accept, Invalidation, Receiver, ReceiverConfig, ReceiverMetrics, Recorder, Sender,
    SenderConfig, SenderMetrics, Target, Targets,
};
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tailnet::Node;
use tailnet_listen::{AcceptErrors, IdleIo, Limits, LogLimiter};
use tokio::task::JoinHandle;

/// Why a role could not start.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The configuration is incomplete or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node did not join.
    #[error("joining the tailnet: {0}")]
    Join(#[from] tailnet::UpError),
    /// Discovery did not start.
    #[error("discovery: {0}")]
    Discovery(#[from] inferadb_discovery::DiscoveryError),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener could not be opened.
    #[error("{what}: {source}")]
    Listen {
        /// Which listener.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A running engine or control.
pub struct Role {
    /// `engine` or `control`.
    pub kind: &'static str,
    /// The node.
    pub node: Node,
    /// Discovery.
    pub discovery: Arc<Discovery>,
    /// The HTTP server's OS address.
    pub http_addr: SocketAddr,
    /// The HTTP server's tailnet port.
    pub tailnet_port: u16,
    /// What the engine's receiver applied (engine only).
    pub received: Option<Recorder>,
    tasks: Vec<JoinHandle<()>>,
    /// The local API on `<state_dir>/inferadb-mesh.sock`, so `inferadb-mesh
    /// status` and `dns query` work against a role as against `up`.
    _local_api: Option<crate::localapi::LocalApiHandle>,
}

/// The line a role prints on stdout once serving.
#[derive(Debug, Serialize)]
pub struct RoleReady {
    /// `engine` / `control`.
    pub role: &'static str,
    /// `Running`.
    pub state: &'static str,
    /// MagicDNS name.
    pub name: String,
    /// Tailnet addresses.
    pub addresses: Vec<std::net::IpAddr>,
    /// The HTTP server on the OS.
    pub http: SocketAddr,
    /// The HTTP server's tailnet port.
    pub tailnet_port: u16,
}

impl Role {
    /// The ready line.
    pub fn ready_line(&self) -> RoleReady {
        RoleReady {
            role: self.kind,
            state: "Running",
            name: self.node.status().self_.dns_name.clone(),
            addresses: self.node.addresses().to_vec(),
            http: self.http_addr,
            tailnet_port: self.tailnet_port,
        }
    }

    /// Stops the server, discovery and the node.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.discovery.shutdown();
        self.node.shutdown().await;
    }
}

/// Serves the local API for `node` in its state directory (status, DNS
/// queries, disco pings: what `up` serves); a role runs on without it (and
/// says so) if the socket cannot be made.
async fn local_api(mesh: &MeshConfig, node: &Node) -> Option<crate::localapi::LocalApiHandle> {
    let dir = mesh.state_dir.as_ref()?;
    let path = crate::localapi::socket_path(dir);
    let n = node.clone();
    let source: crate::localapi::StatusSource = Arc::new(move || n.status());
    let dns = crate::localapi::node_dns_source(node);
    match crate::localapi::serve_with_dns(&path, source, Some(dns), Some(node.clone())).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "no local API: `inferadb-mesh status` will not reach this node");
            None
        }
    }
}

async fn join(mesh: &MeshConfig) -> Result<Node, RoleError> {
    let url = mesh
        .control_url
        .clone()
        .ok_or_else(|| ConfigError("mesh.control_url: missing".into()))?;
    let state_dir = mesh
        .state_dir
        .clone()
        .ok_or_else(|| ConfigError("mesh.state_dir: missing".into()))?;
    let mut b = Node::builder()
        .control_url(url)
        .state_dir(state_dir)
        .tags(mesh.tags.clone())
        .listen(mesh.listen)
        .ephemeral(mesh.ephemeral)
        .timeout(Duration::from_secs(mesh.timeout_seconds.max(1)));
    if let Some(k) = mesh.read_auth_key()? {
        b = b.auth_key(k.expose());
    }
    if let Some(h) = &mesh.hostname {
        b = b.hostname(h.clone());
    }
    Ok(b.up().await?)
}

fn webhook_secret(
    inline: &Option<crate::config::Secret>,
    file: &Option<std::path::PathBuf>,
) -> Result<inferadb_invalidation::Secret, ConfigError> {
    let s = read_secret(inline, file, "cache_invalidation.webhook_secret")?.ok_or_else(|| {
        ConfigError("cache_invalidation.webhook_secret: missing (or webhook_secret_file)".into())
    })?;
    inferadb_invalidation::Secret::from_text(s.expose())
        .map_err(|e| ConfigError(format!("cache_invalidation.webhook_secret: {e}")))
}

type BoxFut = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFut + Send + Sync>;

fn text(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// `/metrics`, `/healthz`, `/readyz`; `None` for other paths.
fn common_routes(
    req: &Request<Incoming>,
    registry: &prometheus::Registry,
    node: &Node,
    discovery: &Discovery,
) -> Option<Response<Full<Bytes>>> {
    if req.method() != Method::GET {
        return None;
    }
    match req.uri().path() {
        "/metrics" => Some(match encode_text(registry) {
            Ok(t) => text(StatusCode::OK, "text/plain; version=0.0.4", t),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        }),
        "/healthz" => Some(text(StatusCode::OK, "text/plain", "ok\n")),
        "/readyz" => {
            let running = node.backend_state() == tailnet::BackendState::Running;
            let discovered = discovery.current().refreshes > 0;
            Some(if running && discovered {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: node running {running}, discovery done {discovered}\n"),
                )
            })
        }
        _ => None,
    }
}

/// The roles' HTTP server, on the hardened recipe (`tailnet_listen`): an
/// accept loop that never ends on an error, connection caps (global and
/// per source IP), the header-read and idle timeouts.
fn serve_with<L: Accept>(listener: L, handler: Handler, limits: Limits) -> JoinHandle<()> {
    tokio::spawn(async move {
        let gate = limits.gate();
        let mut errors = AcceptErrors::new("role http");
        let refused_log = LogLimiter::new(Duration::from_secs(10));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => {
                    errors.success();
                    accepted
                }
                Err(e) => {
                    errors.failed(&e).await;
                    continue;
                }
            };
            let permit = match gate.admit(Some(peer.ip())) {
                Ok(p) => p,
                Err(why) => {
                    if let Some(suppressed) = refused_log.allow() {
                        tracing::warn!(%peer, reason = %why, suppressed, "http connection refused");
                    }
                    continue;
                }
            };
            let h = handler.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, std::convert::Infallible>(h(req).await) }
                });
                let io = IdleIo::new(stream, limits.idle_timeout);
                let _ = limits.http1().serve_connection(TokioIo::new(io), svc).await;
            });
        }
    })
}

async fn serve_both(
    node: &Node,
    http: &crate::config::HttpConfig,
    port: u16,
    handler: Handler,
) -> Result<(SocketAddr, Vec<JoinHandle<()>>), RoleError> {
    let limits = http.limits()?;
    let listen = http.listen;
    let os = tailnet_listen::bind_tcp(listen).map_err(|e| RoleError::Listen {
        what: format!("http.listen {listen}"),
        source: e,
    })?;
    let addr = os.local_addr().map_err(|e| RoleError::Listen {
        what: "http.listen".into(),
        source: e,
    })?;
    let tn = node.tcp_listen(port).map_err(|e| RoleError::Listen {
        what: format!("http.tailnet_port {port}"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok((
        addr,
        vec![
            serve_with(os, handler.clone(), limits),
            serve_with(tn, handler, limits),
        ],
    ))
}

/// Registers what every role's `/metrics` has beside its own:
/// `inferadb_build_info{version, role} 1` and the process metrics
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`,
/// `process_threads`, `process_virtual_memory_bytes`; read from /proc at
/// scrape time).
pub fn register_process_metrics(
    registry: &prometheus::Registry,
    role: &str,
) -> Result<(), prometheus::Error> {
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "inferadb_build_info",
            "The running build: always 1, labelled with the version and the role.",
        ),
        &["version", "role"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), role])
        .set(1);
    registry.register(Box::new(info))?;
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
}

fn start_discovery(
    config: inferadb_discovery::DiscoveryConfig,
    node: &Node,
    registry: &prometheus::Registry,
) -> Result<Arc<Discovery>, RoleError> {
    Ok(Arc::new(
        Discovery::builder(config)
            .node(node)
            .registry(registry)?
            .start()?,
    ))
}

/// Starts an engine.
pub async fn start_engine(cfg: EngineConfig) -> Result<Role, RoleError> {
    let secret = webhook_secret(
        &cfg.cache_invalidation.webhook_secret,
        &cfg.cache_invalidation.webhook_secret_file,
    )?;
    let node = join(&cfg.mesh).await?;
    let registry = prometheus::Registry::new();
    inferadb_discovery::tailnet_metrics::TailnetCollector::register(&node, &registry)?;
    register_process_metrics(&registry, "engine")?;
    let discovery = start_discovery(cfg.discovery_config.clone(), &node, &registry)?;
    let recorder = Recorder::new();
    let receiver = Receiver::new(
        ReceiverConfig::new(secret),
        recorder.clone(),
        ReceiverMetrics::new(&registry)?,
    );
    let (n, d, r) = (node.clone(), discovery.clone(), registry.clone());
    let handler: Handler = Arc::new(move |req| {
        let (n, d, r, receiver) = (n.clone(), d.clone(), r.clone(), receiver.clone());
        Box::pin(async move {
            if let Some(resp) = common_routes(&req, &r, &n, &d) {
                return resp;
            }
            receiver.handle(req).await
        })
    });
    let port = cfg.tailnet_port();
    let (http_addr, tasks) = serve_both(&node, &cfg.http, port, handler).await?;
    let local_api = local_api(&cfg.mesh, &node).await;
    Ok(Role {
        kind: "engine",
        node,
        discovery,
        http_addr,
        tailnet_port: port,
        received: Some(recorder),
        tasks,
        _local_api: local_api,
    })
}

/// `POST /v1/vaults`'s answer.
#[derive(Debug, Serialize)]
struct VaultCreated {
    id: String,
    name: Option<String>,
    invalidation: InvalidationSummary,
}

#[derive(Debug, Serialize)]
struct InvalidationSummary {
    event_id: String,
    targets: usize,
    delivered: usize,
    failed: Vec<String>,
}

fn new_vault_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = t.to_be_bytes();
    }
    // Numeric like the guide's `vault_id=12345`.
    (u64::from_be_bytes(b) >> 11).to_string()
}

fn bearer_ok(req: &Request<Incoming>, token: &str) -> bool {
    let Some(v) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return false;
    };
    let Ok(v) = v.to_str() else { return false };
    let Some(given) = v.strip_prefix("Bearer ") else {
        return false;
    };
    // Constant time in the length of the token.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Starts control.
pub async fn start_control(cfg: ControlConfig) -> Result<Role, RoleError> {
    let secret = webhook_secret(
        &cfg.cache_invalidation.webhook_secret,
        &cfg.cache_invalidation.webhook_secret_file,
    )?;
    let token = read_secret(&cfg.api.token, &cfg.api.token_file, "api.token")?
        .ok_or_else(|| ConfigError("api.token: missing (or api.token_file)".into()))?;
    let node = join(&cfg.mesh).await?;
    let registry = prometheus::Registry::new();
    inferadb_discovery::tailnet_metrics::TailnetCollector::register(&node, &registry)?;
    register_process_metrics(&registry, "control")?;
    let discovery = start_discovery(cfg.discovery_config.clone(), &node, &registry)?;
    let targets = Targets::watch_map(discovery.subscribe(), |set: &Arc<EndpointSet>| {
        set.healthy()
            .map(|e| Target::new(e.cluster.clone(), e.addr))
            .collect()
    });
    let origin = match &cfg.discovery_config.mode {
        inferadb_discovery::DiscoveryMode::Tailscale(t) => Some(t.local_cluster.clone()),
        _ => None,
    };
    let sender = Arc::new(Sender::new(
        node.clone(),
        secret,
        targets,
        SenderConfig::from_seed(
            cfg.cache_invalidation.timeout_ms,
            cfg.cache_invalidation.retry_attempts,
        ),
        SenderMetrics::new(&registry)?,
    ));
    let (n, d, r) = (node.clone(), discovery.clone(), registry.clone());
    let token = Arc::new(token);
    let handler: Handler = Arc::new(move |req| {
        let (n, d, r, sender, token, origin) = (
            n.clone(),
            d.clone(),
            r.clone(),
            sender.clone(),
            token.clone(),
            origin.clone(),
        );
        Box::pin(async move {
            if let Some(resp) = common_routes(&req, &r, &n, &d) {
                return resp;
            }
            if req.uri().path() != "/v1/vaults" {
                return text(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    r#"{"error":"not found"}"#,
                );
            }
            if req.method() != Method::POST {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "application/json",
                    r#"{"error":"method not allowed"}"#,
                );
            }
            if !bearer_ok(&req, token.expose()) {
                return text(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    r#"{"error":"unauthorized"}"#,
                );
            }
            let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "application/json",
                        r#"{"error":"body unreadable or over 64 KiB"}"#,
                    )
                }
            };
            let name = if body.is_empty() {
                None
            } else {
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) => v.get("name").and_then(|n| n.as_str()).map(str::to_string),
                    Err(_) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "application/json",
                            r#"{"error":"body is not JSON"}"#,
                        )
                    }
                }
            };
            let id = new_vault_id();
            let mut event = Invalidation::vault_created(id.clone());
            if let Some(o) = &origin {
                event = event.with_origin(o.clone());
            }
            tracing::info!(vault_id = %id, "Vault created; invalidating engine caches");
            let summary = match sender.send(&event).await {
                Ok(report) => InvalidationSummary {
                    event_id: report.event_id.clone(),
                    targets: report.deliveries.len(),
                    delivered: report
                        .deliveries
                        .iter()
                        .filter(|d| d.result.is_ok())
                        .count(),
                    failed: report
                        .failures()
                        .map(|d| format!("{} {}", d.target.cluster, d.target.addr))
                        .collect(),
                },
                Err(e) => {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "application/json",
                        serde_json::json!({ "error": e.to_string() }).to_string(),
                    )
                }
            };
            let out = VaultCreated {
                id,
                name,
                invalidation: summary,
            };
            text(
                StatusCode::CREATED,
                "application/json",
                serde_json::to_string(&out).unwrap_or_default(),
            )
        })
    });
    let port = cfg.tailnet_port();
    let (http_addr, tasks) = serve_both(&node, &cfg.http, port, handler).await?;
    let local_api = local_api(&cfg.mesh, &node).await;
    Ok(Role {
        kind: "control",
        node,
        discovery,
        http_addr,
        tailnet_port: port,
        received: None,
        tasks,
        _local_api: local_api,
    })
}

/// Runs a started role until Ctrl-C or SIGTERM, after printing its ready
/// line.
pub async fn run_until_signal(role: Role) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(&role.ready_line())?);
    crate::cli::shutdown_signal().await;
    role.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::{mpsc, Mutex};

    /// A listener fed in-memory connections "from" a given address.
    struct Fake(Mutex<mpsc::Receiver<(DuplexStream, SocketAddr)>>);

    impl Accept for Fake {
        type Stream = DuplexStream;
        async fn accept(&self) -> std::io::Result<(DuplexStream, SocketAddr)> {
            match self.0.lock().await.recv().await {
                Some(c) => Ok(c),
                None => std::future::pending().await,
            }
        }
    }

    fn ok_handler() -> Handler {
        Arc::new(|_req| Box::pin(async { text(StatusCode::OK, "text/plain", "ok\n") }))
    }

    /// Reads until EOF or error; true if the server closed the stream.
    async fn closed_within(c: &mut DuplexStream, limit: Duration) -> bool {
        let mut buf = [0u8; 512];
        tokio::time::timeout(limit, async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// Issue 16 finding 2: the engine/control HTTP server held idle and
    /// slowloris connections forever (hyper had no timer). Now both are
    /// closed at the header-read timeout, and the per-source cap refuses
    /// the connection over it at once.
    #[tokio::test(start_paused = true)]
    async fn idle_and_slowloris_connections_are_closed_and_caps_hold() {
        let (tx, rx) = mpsc::channel(16);
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let _server = serve_with(Fake(Mutex::new(rx)), ok_handler(), limits);
        let from: SocketAddr = "192.0.2.1:1000".parse().expect("addr");
        let other: SocketAddr = "192.0.2.2:1000".parse().expect("addr");
        let conn = |addr| {
            let tx = tx.clone();
            async move {
                let (client, server) = tokio::io::duplex(4096);
                tx.send((server, addr)).await.expect("listener");
                client
            }
        };
        let mut idle = conn(from).await;
        let mut slow = conn(from).await;
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        // The third from the same source is over the cap: closed at once.
        let mut third = conn(from).await;
        assert!(closed_within(&mut third, Duration::from_millis(100)).await);
        // Another source is served.
        let mut ok = conn(other).await;
        ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = ok.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let start = tokio::time::Instant::now();
        assert!(
            closed_within(&mut idle, Duration::from_secs(30)).await,
            "idle held"
        );
        assert!(
            closed_within(&mut slow, Duration::from_secs(30)).await,
            "slowloris held"
        );
        assert!(
            start.elapsed() < Duration::from_secs(11),
            "{:?}",
            start.elapsed()
        );
        // Their slots are free again.
        let mut again = conn(from).await;
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let n = again.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
}
