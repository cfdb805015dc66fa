//! The node's local API: HTTP/1.1 on a unix socket in the state directory,
//! read by `inferadb-mesh status`.
//!
//! A running node serves [`STATUS_PATH`] on [`socket_path`]`(state_dir)`
//! (`<state_dir>/inferadb-mesh.sock`), answering with the JSON of a
//! [`tailnet::status::Status`]. The socket is mode 0600 (and the state
//! directory 0700), so only the user running the node can read it; it is
//! removed when the [`LocalApiHandle`] is dropped. Like tailscaled's
//! `/localapi/v0/status`, `?peers=false` leaves the peers out.
//!
//! ```text
//! curl --unix-socket /var/lib/inferadb-mesh/inferadb-mesh.sock http://local/localapi/v0/status
//! ```
//!
//! A node with MagicDNS also answers [`DNS_PATH`]`?name=NAME&type=TYPE`
//! (a query through its responder; `inferadb-mesh dns query`), and every
//! node [`PING_PATH`]`?target=NAME|IP&timeout_ms=N` (one disco ping to the
//! peer, `inferadb-mesh ping`; the answer is a [`PingReply`]).

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tailnet::status::Status;
use tailnet_listen::query;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The socket's file name inside the state directory.
pub const SOCKET_NAME: &str = "inferadb-mesh.sock";

/// The status endpoint.
pub const STATUS_PATH: &str = "/localapi/v0/status";

/// The DNS query endpoint (`?name=…&type=…`).
pub const DNS_PATH: &str = "/localapi/v0/dns";

/// The disco ping endpoint (`?target=NAME|IP&timeout_ms=N`).
pub const PING_PATH: &str = "/localapi/v0/ping";

/// The longest a ping through [`PING_PATH`] may wait for its pong.
pub const MAX_PING_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest unix socket path the kernel takes, in bytes (`sun_path` is
/// 108 bytes on Linux, one of them the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// How long [`fetch_status`] waits for the whole exchange.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `serve` waits for something on an existing socket to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest status body [`fetch_status`] accepts (a netmap of tens of
/// thousands of peers fits).
const MAX_BODY: usize = 64 << 20;

/// Where a node with state directory `state_dir` serves its local API.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// What produces the status on each request.
pub type StatusSource = Arc<dyn Fn() -> Status + Send + Sync>;

/// What answers [`DNS_PATH`]: (name, type) → the JSON body, or a message
/// for a 400 answer.
pub type DnsSource = Arc<
    dyn Fn(
            String,
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send>>
        + Send
        + Sync,
>;

/// The [`DnsSource`] of a node: queries through its MagicDNS responder, as
/// `up`, `engine` and `control` serve it.
pub fn node_dns_source(node: &tailnet::Node) -> DnsSource {
    let node = node.clone();
    Arc::new(move |name, qtype| {
        let node = node.clone();
        Box::pin(async move {
            let (name, t) = crate::dns_cmd::query_of(&name, &qtype)?;
            let r = node.dns_query(&name, t).await.map_err(|e| e.to_string())?;
            serde_json::to_vec(&crate::dns_cmd::DnsReply::from(r)).map_err(|e| e.to_string())
        })
    })
}

/// Why the local API could not be reached or answered badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalApiError {
    /// No socket at the path: no node is running there.
    #[error("{}", not_running(socket, state_dir.as_deref()))]
    NotRunning {
        /// The socket path tried.
        socket: PathBuf,
        /// The state directory it came from, if the user gave one.
        state_dir: Option<PathBuf>,
    },
    /// The socket exists but nothing listens on it.
    #[error(
        "no node is answering on socket {} (the socket is left over from a node that exited)",
        socket.display()
    )]
    Stale {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// The socket belongs to another user.
    #[error(
        "permission denied on socket {} (run status as the user that runs the node)",
        socket.display()
    )]
    PermissionDenied {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// The path is too long for a unix socket.
    #[error(
        "socket path {} is {len} bytes; unix socket paths are limited to {MAX_SOCKET_PATH} (use a shorter directory)",
        socket.display()
    )]
    PathTooLong {
        /// The path.
        socket: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// Connecting or talking to the socket failed otherwise.
    #[error("local API on {}: {source}", socket.display())]
    Io {
        /// The socket path.
        socket: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("local API on {}: {message}", socket.display())]
    Http {
        /// The socket path.
        socket: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The node answered with an error status.
    #[error("local API on {}: HTTP {code}: {body}", socket.display())]
    Status {
        /// The socket path.
        socket: PathBuf,
        /// The HTTP status code.
        code: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer is not a status.
    #[error("local API on {}: the answer is not a status: {source}", socket.display())]
    Decode {
        /// The socket path.
        socket: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The node did not answer in time.
    #[error("local API on {}: no answer within {}s", socket.display(), FETCH_TIMEOUT.as_secs())]
    Timeout {
        /// The socket path.
        socket: PathBuf,
    },
}

fn not_running(socket: &Path, state_dir: Option<&Path>) -> String {
    match state_dir {
        Some(dir) => format!(
            "no node is running with state directory {} (socket {} not found)",
            dir.display(),
            socket.display()
        ),
        None => format!(
            "no node is running on socket {} (not found)",
            socket.display()
        ),
    }
}

impl LocalApiError {
    /// Names the state directory in a [`LocalApiError::NotRunning`] message.
    pub fn with_state_dir(self, dir: &Path) -> Self {
        match self {
            LocalApiError::NotRunning { socket, .. } => LocalApiError::NotRunning {
                socket,
                state_dir: Some(dir.to_path_buf()),
            },
            other => other,
        }
    }
}

fn check_len(path: &Path) -> Result<(), LocalApiError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(LocalApiError::PathTooLong {
            socket: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// A running local API. Dropping it stops serving and removes the socket
/// (if the file is still the one it created).
#[derive(Debug)]
pub struct LocalApiHandle {
    path: PathBuf,
    /// Device and inode of the socket we bound, so drop removes only ours.
    id: (u64, u64),
    task: JoinHandle<()>,
}

impl LocalApiHandle {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalApiHandle {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Serves the local API on a unix socket at `path` until the handle is
/// dropped; `source` is called once per status request.
///
/// An existing socket at `path` is replaced only if nothing answers on it;
/// if a node answers, this refuses (`AddrInUse`). Anything at `path` that
/// is not a socket is left alone (`AlreadyExists`). The socket is made mode
/// 0600. Must be called inside a tokio runtime.
pub async fn serve(path: &Path, source: StatusSource) -> io::Result<LocalApiHandle> {
    serve_with_dns(path, source, None, None).await
}

/// [`serve`], also answering [`DNS_PATH`] with `dns` and [`PING_PATH`]
/// with disco pings from `node`.
pub async fn serve_with_dns(
    path: &Path,
    source: StatusSource,
    dns: Option<DnsSource>,
    node: Option<tailnet::Node>,
) -> io::Result<LocalApiHandle> {
    check_len(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "removing stale local API socket");
                    std::fs::remove_file(path)?;
                }
                Ok(Err(e)) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot check existing socket {}: {e}", path.display()),
                    ))
                }
                // Connected, or the connect is queued behind a full backlog:
                // something is serving there.
                Ok(Ok(_)) | Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "a node is already running on socket {} (stop it first, or use another state directory)",
                            path.display()
                        ),
                    ))
                }
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot inspect {}: {e}", path.display()),
            ))
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind local API socket {}: {e}", path.display()),
        )
    })?;
    let meta = std::fs::symlink_metadata(path).and_then(|m| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map(|()| m)
    });
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot restrict socket {} to 0600: {e}", path.display()),
            ));
        }
    };
    let task = tokio::spawn(accept_loop(listener, source, dns, node));
    tracing::debug!(socket = %path.display(), "local API listening");
    Ok(LocalApiHandle {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
        task,
    })
}

/// The local API's limits: the defaults, with a small connection cap (one
/// user's CLI calls).
fn local_api_limits() -> tailnet_listen::Limits {
    tailnet_listen::Limits {
        max_connections: 64,
        ..tailnet_listen::Limits::default()
    }
}

async fn accept_loop(
    listener: UnixListener,
    source: StatusSource,
    dns: Option<DnsSource>,
    node: Option<tailnet::Node>,
) {
    let limits = local_api_limits();
    let gate = limits.gate();
    let mut errors = tailnet_listen::AcceptErrors::new("local API");
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                errors.success();
                s
            }
            // EMFILE and friends: back off instead of spinning, log once
            // in a while.
            Err(e) => {
                errors.failed(&e).await;
                continue;
            }
        };
        // Only the node's user can connect (0600), but a stuck client must
        // not pile up connections either.
        let Ok(permit) = gate.admit(None) else {
            continue;
        };
        let stream = tailnet_listen::IdleIo::new(stream, limits.idle_timeout);
        let source = source.clone();
        let dns = dns.clone();
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let source = source.clone();
                let dns = dns.clone();
                let node = node.clone();
                async move {
                    let resp = match (&dns, req.uri().path()) {
                        (Some(dns), DNS_PATH) => handle_dns(&req, dns).await,
                        (_, PING_PATH) => handle_ping(&req, &source, node.as_ref()).await,
                        _ => handle(&req, &source),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            if let Err(e) = limits
                .http1()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "local API connection ended");
            }
        });
    }
}

fn text(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn handle(req: &Request<Incoming>, source: &StatusSource) -> Response<Full<Bytes>> {
    if req.uri().path() != STATUS_PATH {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut status = source();
    let no_peers = req
        .uri()
        .query()
        .is_some_and(|q| query::has_pair(q, "peers=false"));
    if no_peers {
        status.peer.clear();
    }
    match serde_json::to_vec(&status) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode status: {e}"),
        ),
    }
}

async fn handle_dns(req: &Request<Incoming>, dns: &DnsSource) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let param = |key: &str| query_param(req, key);
    let Some(name) = param("name").filter(|n| !n.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "missing ?name=");
    };
    let qtype = param("type").unwrap_or_else(|| "A".into());
    match dns(name, qtype).await {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(StatusCode::BAD_REQUEST, &e),
    }
}

/// The answer of [`PING_PATH`]: the pong.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PingReply {
    /// The peer's short name (empty if the netmap does not name it).
    pub name: String,
    /// The tailnet address pinged.
    pub ip: std::net::IpAddr,
    /// The UDP address that answered; `None` when the pong came through
    /// the relay.
    pub addr: Option<std::net::SocketAddr>,
    /// The relay that carried it (its region code, or number).
    pub derp: Option<String>,
    /// Ping to pong, in milliseconds.
    pub rtt_ms: f64,
}

/// A query parameter of `req`, decoded.
fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query().and_then(|q| query::query_param(q, key))
}

/// The tailnet address of `target`: an address as it is, else a peer's
/// name (its short name, host name or MagicDNS name), else a MagicDNS
/// lookup through the node.
async fn ping_target(
    node: &tailnet::Node,
    status: &Status,
    target: &str,
) -> Result<std::net::IpAddr, String> {
    if let Ok(ip) = target.parse() {
        return Ok(ip);
    }
    let want = target.trim_end_matches('.');
    let by_name = status.peer.values().find(|p| {
        p.name.eq_ignore_ascii_case(want)
            || p.host_name.eq_ignore_ascii_case(want)
            || p.dns_name.trim_end_matches('.').eq_ignore_ascii_case(want)
    });
    if let Some(ip) = by_name.and_then(|p| p.tailscale_ips.first()) {
        return Ok(*ip);
    }
    match node.resolve(target).await {
        Ok(ips) => ips
            .first()
            .copied()
            .ok_or_else(|| format!("unknown peer {target:?}")),
        Err(e) => Err(format!("unknown peer {target:?} ({e})")),
    }
}

async fn handle_ping(
    req: &Request<Incoming>,
    source: &StatusSource,
    node: Option<&tailnet::Node>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let Some(target) = query_param(req, "target").filter(|t| !t.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "missing ?target=");
    };
    let timeout = query_param(req, "timeout_ms")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
        .min(MAX_PING_TIMEOUT);
    let status = source();
    let Some(node) = node else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node cannot send pings (not running in this process)",
        );
    };
    let ip = match ping_target(node, &status, &target).await {
        Ok(ip) => ip,
        Err(e) => return text(StatusCode::NOT_FOUND, &e),
    };
    let pong = match node.ping(ip, timeout).await {
        Ok(p) => p,
        Err(e @ tailnet::NodeError::PingTimeout { .. }) => {
            return text(StatusCode::GATEWAY_TIMEOUT, &e.to_string())
        }
        Err(e @ tailnet::NodeError::NoPeer(_)) => {
            return text(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e) => return text(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let peer = status.peer.get(&tailnet::status::peer_key(&pong.peer));
    let derp = pong.derp_region.map(|r| {
        peer.map(|p| p.relay.clone())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| r.to_string())
    });
    let reply = PingReply {
        name: peer.map(|p| p.name.clone()).unwrap_or_default(),
        ip,
        addr: pong.addr,
        derp,
        rtt_ms: pong.rtt.as_secs_f64() * 1000.0,
    };
    match serde_json::to_vec(&reply) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Asks the node serving the local API at `socket` to ping `target` (a
/// peer's name or tailnet address), waiting up to `timeout` for the pong.
pub async fn fetch_ping(
    socket: &Path,
    target: &str,
    timeout: Duration,
) -> Result<PingReply, LocalApiError> {
    check_len(socket)?;
    let uri = format!(
        "{PING_PATH}?target={}&timeout_ms={}",
        query::percent_encode(target),
        timeout.as_millis()
    );
    let body = match tokio::time::timeout(FETCH_TIMEOUT + timeout, get(socket, &uri)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(LocalApiError::Timeout {
                socket: socket.to_path_buf(),
            })
        }
    };
    serde_json::from_slice(&body).map_err(|source| LocalApiError::Decode {
        socket: socket.to_path_buf(),
        source,
    })
}

/// Asks the node serving the local API at `socket` for a DNS query
/// through its MagicDNS responder; returns the JSON body.
pub async fn fetch_dns(socket: &Path, name: &str, qtype: &str) -> Result<Bytes, LocalApiError> {
    check_len(socket)?;
    let uri = format!(
        "{DNS_PATH}?name={}&type={}",
        query::percent_encode(name),
        query::percent_encode(qtype)
    );
    match tokio::time::timeout(FETCH_TIMEOUT, get(socket, &uri)).await {
        Ok(r) => r,
        Err(_) => Err(LocalApiError::Timeout {
            socket: socket.to_path_buf(),
        }),
    }
}

/// Asks the node serving the local API at `socket` for its status.
pub async fn fetch_status(socket: &Path) -> Result<Status, LocalApiError> {
    check_len(socket)?;
    match tokio::time::timeout(FETCH_TIMEOUT, fetch(socket)).await {
        Ok(r) => r,
        Err(_) => Err(LocalApiError::Timeout {
            socket: socket.to_path_buf(),
        }),
    }
}

async fn fetch(socket: &Path) -> Result<Status, LocalApiError> {
    let body = get(socket, STATUS_PATH).await?;
    serde_json::from_slice(&body).map_err(|source| LocalApiError::Decode {
        socket: socket.to_path_buf(),
        source,
    })
}

/// One GET on the local API; the body of a 2xx answer.
async fn get(socket: &Path, uri: &str) -> Result<Bytes, LocalApiError> {
    let sock = || socket.to_path_buf();
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LocalApiError::NotRunning {
                socket: sock(),
                state_dir: None,
            },
            io::ErrorKind::ConnectionRefused => LocalApiError::Stale { socket: sock() },
            io::ErrorKind::PermissionDenied => LocalApiError::PermissionDenied { socket: sock() },
            _ => LocalApiError::Io {
                socket: sock(),
                source: e,
            },
        })?;
    let http = |e: hyper::Error| LocalApiError::Http {
        socket: sock(),
        message: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(HOST, "local-inferadb-mesh.sock")
        .body(Full::new(Bytes::new()))
        .map_err(|e| LocalApiError::Http {
            socket: sock(),
            message: e.to_string(),
        })?;
    let resp = sender.send_request(req).await.map_err(http)?;
    let code = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| LocalApiError::Http {
            socket: sock(),
            message: format!("reading the answer: {e}"),
        })?
        .to_bytes();
    conn.abort();
    if !code.is_success() {
        let mut text = String::from_utf8_lossy(&body).trim().to_owned();
        if text.len() > 200 {
            let cut = (0..=200)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
        }
        return Err(LocalApiError::Status {
            socket: sock(),
            code: code.as_u16(),
            body: text,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailnet::status::{BackendState, PeerStatus};

    fn fixed() -> StatusSource {
        Arc::new(|| Status {
            backend_state: BackendState::Running,
            self_: PeerStatus {
                name: "me".into(),
                ..PeerStatus::default()
            },
            peer: [("nodekey:02".to_owned(), PeerStatus::default())]
                .into_iter()
                .collect(),
            ..Status::default()
        })
    }

    #[tokio::test]
    async fn serve_fetch_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let h = serve(&path, fixed()).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let s = fetch_status(&path).await.unwrap();
        assert_eq!(s.self_.name, "me");
        assert_eq!(s.peer.len(), 1);
        // A second node on the same socket is refused while the first lives.
        let e = serve(&path, fixed()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains("already running"));
        drop(h);
        assert!(!path.exists());
        let e = fetch_status(&path)
            .await
            .unwrap_err()
            .with_state_dir(dir.path());
        assert!(matches!(e, LocalApiError::NotRunning { .. }));
        assert!(e
            .to_string()
            .starts_with("no node is running with state directory"));
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        // A socket nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let e = fetch_status(&path).await.unwrap_err();
        assert!(matches!(e, LocalApiError::Stale { .. }), "{e}");
        let h = serve(&path, fixed()).await.unwrap();
        fetch_status(&path).await.unwrap();
        drop(h);

        std::fs::write(&path, b"not a socket").unwrap();
        let e = serve(&path, fixed()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }

    #[tokio::test]
    async fn long_paths_are_refused_clearly() {
        let long = PathBuf::from(format!("/tmp/{}/{SOCKET_NAME}", "d".repeat(120)));
        let e = serve(&long, fixed()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("limited to 107"), "{e}");
        let e = fetch_status(&long).await.unwrap_err();
        assert!(matches!(e, LocalApiError::PathTooLong { .. }));
    }

    #[tokio::test]
    async fn other_paths_and_methods() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let _h = serve(&path, fixed()).await.unwrap();
        let stream = UnixStream::connect(&path).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut ask = async |method: Method, uri: &str| {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(HOST, "x")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let r = sender.send_request(req).await.unwrap();
            let code = r.status();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (code, body)
        };
        assert_eq!(ask(Method::GET, "/nope").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            ask(Method::POST, STATUS_PATH).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (code, body) = ask(Method::GET, "/localapi/v0/status?peers=false").await;
        assert_eq!(code, StatusCode::OK);
        let s: Status = serde_json::from_slice(&body).unwrap();
        assert!(s.peer.is_empty());
    }
}
