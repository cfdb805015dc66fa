//! The node's control client: `GET /key`, the `POST /ts2021` upgrade into
//! Noise, then HTTP/2 inside it for `/machine/register` and `/machine/map`
//! (`shared/protocol/control.md` §1–§7).
//!
//! This is the transport only: one [`ControlConn`] is one Noise connection
//! carrying any number of requests. What to register, how to apply the map
//! and when to reconnect is the caller's business (`tailnet::control`).

use crate::NoiseStream;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tailnet_wire::control::{
    Compression, MachinePublic, MapRequest, MapResponse, MapStreamDecoder, MapStreamError,
    OverTlsPublicKeyResponse, RegisterRequest, RegisterResponse, CAPABILITY_VERSION, KEY_PATH,
    MAP_PATH, MAX_KEY_RESPONSE, MAX_REGISTER_RESPONSE, REGISTER_PATH,
};
use tailnet_wire::noise::{
    reply_len, ClientHandshake, HandshakeError, HANDSHAKE_HEADER, UPGRADE_PATH, UPGRADE_PROTOCOL,
};
use tailnet_wire::PrivateKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

/// How long connecting (TCP, TLS, the upgrade, the Noise reply) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may take by default: `register` and `lite_update`
/// to their whole answer, `map_stream` to its response headers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A map stream with no message (keep-alives count) for this long is
/// dead (Go's client: 120 s; servers send keep-alives about every 50 s).
pub const MAP_SILENCE: Duration = Duration::from_secs(120);

/// HTTP/2 PING after this much silence on the control connection, which
/// is closed when one is not answered within [`KEEPALIVE_TIMEOUT`]: a
/// half-dead TCP connection is noticed without waiting for a request.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Most bytes of an error body we quote back to the user.
const MAX_ERROR_BODY: usize = 4096;

/// Why talking to the control server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The control URL is not `http://host[:port]` or `https://host[:port]`.
    #[error("invalid control URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// TCP (or TLS) to the control server failed.
    #[error("cannot reach control server {url}: {source}")]
    Connect {
        /// The control URL.
        url: String,
        /// The OS or TLS error.
        source: io::Error,
    },
    /// A step took longer than [`CONNECT_TIMEOUT`].
    #[error("control server {url} did not answer in time ({step})")]
    Timeout {
        /// The control URL.
        url: String,
        /// Which step timed out.
        step: &'static str,
    },
    /// The server answered HTTP with something we cannot use.
    #[error("control server {url}: {what}")]
    Http {
        /// The control URL.
        url: String,
        /// What it answered.
        what: String,
    },
    /// The Noise handshake failed or the server refused it.
    #[error("control server {url}: Noise handshake failed: {source}")]
    Handshake {
        /// The control URL.
        url: String,
        /// The handshake error (a refusal carries the server's text).
        source: HandshakeError,
    },
    /// A map frame could not be decoded.
    #[error("control map stream: {0}")]
    MapStream(#[from] MapStreamError),
    /// The connection broke.
    #[error("control connection lost: {0}")]
    Lost(String),
    /// The server answered with a 5xx status: a transient failure worth
    /// retrying.
    #[error("control server {url}: {what}")]
    ServerError {
        /// The control URL.
        url: String,
        /// The status.
        status: u16,
        /// What it answered.
        what: String,
    },
}

impl ControlError {
    /// Whether trying again later may work: the server could not be
    /// reached, timed out, answered 5xx, or the connection broke. A bad
    /// URL, a refused handshake or a 4xx is final.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ControlError::Connect { .. }
                | ControlError::Timeout { .. }
                | ControlError::ServerError { .. }
                | ControlError::Lost(_)
        )
    }
}

/// A parsed control URL: `http://127.0.0.1:8080` (plain HTTP, tests and the
/// embedded coordinator on loopback) or `https://controlplane.example`.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlUrl {
    tls: bool,
    host: String,
    port: u16,
}

impl ControlUrl {
    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` as the `Host` header carries it.
    fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for ControlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

impl fmt::Debug for ControlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ControlUrl {
    type Err = ControlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ControlError::BadUrl {
            url: s.to_string(),
            reason,
        };
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('?') || authority.contains('@') {
            return Err(bad(
                "it must be a bare scheme://host[:port], without a path",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after ']'")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| bad("the port is not a number 1-65535"))?,
            None if tls => 443,
            None => 80,
        };
        if port == 0 {
            return Err(bad("the port is not a number 1-65535"));
        }
        Ok(ControlUrl { tls, host, port })
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

async fn timed<T>(
    url: &ControlUrl,
    step: &'static str,
    fut: impl std::future::Future<Output = Result<T, ControlError>>,
) -> Result<T, ControlError> {
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| ControlError::Timeout {
            url: url.to_string(),
            step,
        })?
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            match config {
                Ok(mut c) => {
                    // The upgrade is HTTP/1.1; HTTP/2 runs inside Noise.
                    c.alpn_protocols = vec![b"http/1.1".to_vec()];
                    Arc::new(c)
                }
                // The ring provider supports the safe defaults; this is
                // unreachable in practice, and a config that fails every
                // handshake is the honest fallback.
                Err(_) => Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
            }
        })
        .clone()
}

async fn dial(url: &ControlUrl) -> Result<BoxIo, ControlError> {
    let connect_err = |source| ControlError::Connect {
        url: url.to_string(),
        source,
    };
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(connect_err)?;
    let _ = tcp.set_nodelay(true);
    if !url.tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| connect_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let tls = tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, tcp)
        .await
        .map_err(connect_err)?;
    Ok(Box::new(tls))
}

fn http_err(url: &ControlUrl, what: impl Into<String>) -> ControlError {
    ControlError::Http {
        url: url.to_string(),
        what: what.into(),
    }
}

/// An error status: [`ControlError::ServerError`] for 5xx, else `Http`.
fn status_err(url: &ControlUrl, status: StatusCode, what: String) -> ControlError {
    if status.is_server_error() {
        ControlError::ServerError {
            url: url.to_string(),
            status: status.as_u16(),
            what,
        }
    } else {
        http_err(url, what)
    }
}

/// Reads a body of at most `limit` bytes.
async fn read_body(url: &ControlUrl, body: Incoming, limit: usize) -> Result<Bytes, ControlError> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| http_err(url, format!("reading the response body: {e}")))
}

/// The first line of an error body, for a one-line message.
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// `GET /key?v=130`: the control server's Noise public key.
pub async fn fetch_server_key(url: &ControlUrl) -> Result<MachinePublic, ControlError> {
    timed(url, "GET /key", async {
        let io = dial(url).await?;
        let (mut send, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| http_err(url, format!("HTTP/1.1: {e}")))?;
        let task = tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("{KEY_PATH}?v={CAPABILITY_VERSION}"))
            .header(HOST, url.authority())
            .body(Full::new(Bytes::new()))
            .map_err(|e| http_err(url, e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| http_err(url, format!("GET /key: {e}")))?;
        let status = resp.status();
        let body = read_body(url, resp.into_body(), MAX_KEY_RESPONSE).await?;
        task.abort();
        if status != StatusCode::OK {
            return Err(status_err(
                url,
                status,
                format!("GET /key answered {status}: {}", first_line(&body)),
            ));
        }
        let key: OverTlsPublicKeyResponse = serde_json::from_slice(&body)
            .map_err(|e| http_err(url, format!("GET /key: not a key response: {e}")))?;
        if key.public_key.is_zero() {
            return Err(http_err(
                url,
                "GET /key has no Noise key (publicKey): the server does not speak ts2021",
            ));
        }
        Ok(key.public_key)
    })
    .await
}

/// One ts2021 connection: HTTP/2 inside Noise. Requests may run
/// concurrently (the map stream and lite updates share it).
#[derive(Clone)]
pub struct ControlConn {
    url: ControlUrl,
    send: http2::SendRequest<Full<Bytes>>,
    _task: Arc<AbortOnDrop>,
    request_timeout: Duration,
    map_silence: Duration,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for ControlConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlConn")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ControlConn {
    /// Connects to `url` as the machine `machine` (its Noise static key),
    /// trusting `server` as the control server's Noise key (from
    /// [`fetch_server_key`]).
    pub async fn connect(
        url: &ControlUrl,
        machine: &PrivateKey,
        server: MachinePublic,
    ) -> Result<ControlConn, ControlError> {
        timed(
            url,
            "the ts2021 upgrade",
            Self::connect_inner(url, machine, server),
        )
        .await
    }

    async fn connect_inner(
        url: &ControlUrl,
        machine: &PrivateKey,
        server: MachinePublic,
    ) -> Result<ControlConn, ControlError> {
        let hs_err = |source| ControlError::Handshake {
            url: url.to_string(),
            source,
        };
        let (hs, initiation) = ClientHandshake::start(
            *machine.as_bytes(),
            *server.as_bytes(),
            CAPABILITY_VERSION as u16,
        )
        .map_err(hs_err)?;
        let io = dial(url).await?;
        let (mut send, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| http_err(url, format!("HTTP/1.1: {e}")))?;
        let conn_task = tokio::spawn(conn.with_upgrades());
        let req = Request::builder()
            .method(Method::POST)
            .uri(UPGRADE_PATH)
            .header(HOST, url.authority())
            .header(UPGRADE, UPGRADE_PROTOCOL)
            .header(CONNECTION, "upgrade")
            .header(
                HANDSHAKE_HEADER,
                base64::engine::general_purpose::STANDARD.encode(&initiation),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| http_err(url, e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| http_err(url, format!("POST {UPGRADE_PATH}: {e}")))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let body = read_body(url, resp.into_body(), MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            return Err(status_err(
                url,
                status,
                format!(
                    "POST {UPGRADE_PATH} answered {status}, not 101: {}",
                    first_line(&body)
                ),
            ));
        }
        let upgrade = resp.headers().get(UPGRADE).cloned();
        if upgrade.as_ref() != Some(&HeaderValue::from_static(UPGRADE_PROTOCOL)) {
            return Err(http_err(
                url,
                format!("POST {UPGRADE_PATH} switched to {upgrade:?}, not {UPGRADE_PROTOCOL}"),
            ));
        }
        let mut upgraded = TokioIo::new(
            hyper::upgrade::on(resp)
                .await
                .map_err(|e| http_err(url, format!("upgrade: {e}")))?,
        );
        drop(conn_task);
        // The Noise reply: a 3-byte header says how long it is.
        let mut reply = vec![0u8; 3];
        upgraded
            .read_exact(&mut reply)
            .await
            .map_err(|e| ControlError::Lost(format!("reading the Noise reply: {e}")))?;
        let total = reply_len(&reply).map_err(hs_err)?.unwrap_or(3);
        reply.resize(total, 0);
        upgraded
            .read_exact(&mut reply[3..])
            .await
            .map_err(|e| ControlError::Lost(format!("reading the Noise reply: {e}")))?;
        let transport = hs.finish(&reply).map_err(hs_err)?;
        let stream = NoiseStream::client(transport, upgraded);
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_err(url, format!("HTTP/2 inside Noise: {e}")))?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
        Ok(ControlConn {
            url: url.clone(),
            send,
            _task: Arc::new(AbortOnDrop(task)),
            request_timeout: REQUEST_TIMEOUT,
            map_silence: MAP_SILENCE,
        })
    }

    /// Deadlines of later requests: `request` for `register` and
    /// `lite_update` (whole answer) and `map_stream` (headers), `silence`
    /// for a map stream between messages. Defaults: [`REQUEST_TIMEOUT`],
    /// [`MAP_SILENCE`].
    pub fn with_timeouts(mut self, request: Duration, silence: Duration) -> Self {
        self.request_timeout = request;
        self.map_silence = silence;
        self
    }

    async fn deadline<T>(
        &self,
        step: &'static str,
        fut: impl std::future::Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        tokio::time::timeout(self.request_timeout, fut)
            .await
            .map_err(|_| ControlError::Timeout {
                url: self.url.to_string(),
                step,
            })?
    }

    /// Whether the connection can still carry requests.
    pub fn is_open(&self) -> bool {
        !self.send.is_closed()
    }

    async fn post_json<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<Response<Incoming>, ControlError> {
        let json = serde_json::to_vec(body)
            .map_err(|e| http_err(&self.url, format!("encoding {path}: {e}")))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{}{path}", self.url.authority()))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| http_err(&self.url, e.to_string()))?;
        let mut send = self.send.clone();
        send.ready()
            .await
            .map_err(|e| ControlError::Lost(e.to_string()))?;
        send.send_request(req)
            .await
            .map_err(|e| ControlError::Lost(format!("POST {path}: {e}")))
    }

    async fn expect_ok(
        &self,
        path: &str,
        resp: Response<Incoming>,
    ) -> Result<Response<Incoming>, ControlError> {
        if resp.status() == StatusCode::OK {
            return Ok(resp);
        }
        let status = resp.status();
        let body = read_body(&self.url, resp.into_body(), MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        Err(status_err(
            &self.url,
            status,
            format!("POST {path} answered {status}: {}", first_line(&body)),
        ))
    }

    /// `POST /machine/register`. The response's `Error` is not checked
    /// here: the caller turns it into its own error.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ControlError> {
        let body = self
            .deadline("POST /machine/register", async {
                let resp = self.post_json(REGISTER_PATH, req).await?;
                let resp = self.expect_ok(REGISTER_PATH, resp).await?;
                read_body(&self.url, resp.into_body(), MAX_REGISTER_RESPONSE).await
            })
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| http_err(&self.url, format!("register response: {e}")))
    }

    /// `POST /machine/map` with `Stream: true`: the long poll.
    /// The response headers must come within the request deadline; then
    /// each message (keep-alives included) within the silence limit, or
    /// [`MapStream::next`] fails.
    pub async fn map_stream(&self, req: &MapRequest) -> Result<MapStream, ControlError> {
        let resp = self
            .deadline("POST /machine/map (stream)", async {
                let resp = self.post_json(MAP_PATH, req).await?;
                self.expect_ok(MAP_PATH, resp).await
            })
            .await?;
        Ok(MapStream {
            body: resp.into_body(),
            decoder: MapStreamDecoder::new(Compression::from_request(&req.compress)),
            silence: self.map_silence,
            deadline: tokio::time::Instant::now() + self.map_silence,
        })
    }

    /// `POST /machine/map` as a lite update (`Stream: false`,
    /// `OmitPeers: true`): reports endpoints and host information; the
    /// answer's body is discarded, as Go does.
    pub async fn lite_update(&self, req: &MapRequest) -> Result<(), ControlError> {
        self.deadline("POST /machine/map (lite update)", async {
            let resp = self.post_json(MAP_PATH, req).await?;
            let resp = self.expect_ok(MAP_PATH, resp).await?;
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                frame.map_err(|e| ControlError::Lost(e.to_string()))?;
            }
            Ok(())
        })
        .await
    }
}

/// The frames of a streaming map response.
pub struct MapStream {
    body: Incoming,
    decoder: MapStreamDecoder,
    silence: Duration,
    /// When the stream is dead unless a message arrives. Kept across
    /// calls, so a caller that polls `next` in a `select!` (and drops the
    /// future when another branch wins) cannot keep restarting it.
    deadline: tokio::time::Instant,
}

impl fmt::Debug for MapStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapStream").finish_non_exhaustive()
    }
}

impl MapStream {
    /// The next message, or `None` when the server ended the stream.
    /// Fails when no message came for the silence limit (cancel-safe: the
    /// deadline moves only when a message arrives).
    pub async fn next(&mut self) -> Result<Option<MapResponse>, ControlError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                self.deadline = tokio::time::Instant::now() + self.silence;
                let msg = serde_json::from_slice(&frame).map_err(|e| {
                    ControlError::Lost(format!("map response is not valid JSON: {e}"))
                })?;
                return Ok(Some(msg));
            }
            let frame = tokio::time::timeout_at(self.deadline, self.body.frame())
                .await
                .map_err(|_| {
                    ControlError::Lost(format!(
                        "map stream silent for {:?} (no message, no keep-alive)",
                        self.silence
                    ))
                })?;
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
                Some(Err(e)) => return Err(ControlError::Lost(format!("map stream: {e}"))),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls_parse_with_default_ports_and_clear_errors() {
        let u: ControlUrl = "http://127.0.0.1:8080".parse().unwrap();
        assert!(!u.is_tls());
        assert_eq!((u.host(), u.port()), ("127.0.0.1", 8080));
        assert_eq!(u.to_string(), "http://127.0.0.1:8080");
        let u: ControlUrl = "https://controlplane.tailscale.com/".parse().unwrap();
        assert!(u.is_tls());
        assert_eq!(u.port(), 443);
        assert_eq!(u.to_string(), "https://controlplane.tailscale.com");
        let u: ControlUrl = "http://[::1]:9".parse().unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 9));
        assert_eq!(u.authority(), "[::1]:9");
        for bad in [
            "ftp://x",
            "127.0.0.1:8080",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h/path",
        ] {
            let err = bad.parse::<ControlUrl>().unwrap_err().to_string();
            assert!(err.contains("invalid control URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn first_line_of_an_error_body() {
        assert_eq!(first_line(b"\n  bad key \nmore"), "bad key");
        assert_eq!(first_line(b""), "");
    }
}
