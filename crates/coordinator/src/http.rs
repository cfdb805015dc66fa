//! The coordinator's first network slice: plain HTTP/1.1 with `GET /key`
//! and the `POST /ts2021` upgrade into the Noise transport
//! (`shared/protocol/control.md` §1–§4, `vendor-notes/ts2021.md`), and,
//! when the server runs a relay, `/derp` and its probes
//! ([`crate::server::derp`]).
//!
//! After a successful upgrade the connection is handed to a caller-supplied
//! handler as a [`NoiseConn`]: the Noise [`Transport`] plus the raw upgraded
//! stream. The HTTP/2 server inside Noise (§5) is that handler's job and
//! comes next; TLS comes later.

use crate::server::derp::DerpServer;
use crate::server::metrics::Observer;
use crate::{Store, StoreError};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;
use tailnet_listen::{AcceptErrors, IdleIo, Limits, LogLimiter};
use tailnet_wire::control::{MachinePublic, OverTlsPublicKeyResponse};
use tailnet_wire::noise::{
    error_frame, ServerHandshake, Transport, HANDSHAKE_HEADER, UPGRADE_PATH, UPGRADE_PROTOCOL,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Path of the bootstrap key request.
pub const KEY_PATH: &str = "/key";

/// Longest `X-Tailscale-Handshake` value we decode. The real one is 136
/// base64 characters (101 bytes); anything this long is not an initiation
/// and is refused with `400` before decoding.
pub const MAX_HANDSHAKE_HEADER_LEN: usize = 1024;

/// The upgraded connection (the raw TCP stream after the `101`).
pub type UpgradedIo = TokioIo<hyper::upgrade::Upgraded>;

/// A connection that finished the ts2021 handshake: the Noise response has
/// been written and flushed; every later byte on `io` is a Noise record.
#[derive(Debug)]
pub struct NoiseConn {
    /// Record layer for both directions (our next nonce is 0 each way).
    pub transport: Transport,
    /// The raw stream; bytes the client sent right after its request are
    /// still readable here.
    pub io: UpgradedIo,
    /// The client's machine key, authenticated by the handshake. Compare it
    /// with the node's `Machine` before trusting any request (§5).
    pub machine_key: MachinePublic,
    /// The client's protocol (capability) version from the initiation.
    pub protocol_version: u16,
}

/// The coordinator's Noise key pair, as the HTTP layer needs it.
pub struct ControlKey {
    private: crate::CoordinatorKey,
    public: MachinePublic,
}

impl ControlKey {
    /// Loads (or creates, the first time) the coordinator's key from `store`.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let private = store.coordinator_key(SystemTime::now())?;
        let public =
            x25519_dalek::x25519(*private.as_bytes(), x25519_dalek::X25519_BASEPOINT_BYTES);
        Ok(ControlKey {
            private,
            public: MachinePublic::from_bytes(public),
        })
    }

    /// The public half: `/key`'s `publicKey`.
    pub fn public(&self) -> MachinePublic {
        self.public
    }
}

impl std::fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlKey")
            .field("public", &self.public.key())
            .finish_non_exhaustive()
    }
}

/// Serves plain HTTP/1.1 on `listener`: `GET /key` and the `/ts2021`
/// upgrade, handing each finished handshake to `handler` on its own task.
/// Each connection runs on its own task; one connection's errors are
/// logged and do not stop the server, nor does a failing `accept()`
/// (out of file descriptors: back off and retry). [`Limits::default`]
/// applies.
pub async fn serve<H, F>(listener: TcpListener, store: Arc<Store>, handler: H) -> io::Result<()>
where
    H: Fn(NoiseConn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let key = ControlKey::load(&store).map_err(io::Error::other)?;
    serve_with_key(listener, Arc::new(key), handler).await
}

/// [`serve`] with an already loaded key.
pub async fn serve_with_key<H, F>(
    listener: TcpListener,
    key: Arc<ControlKey>,
    handler: H,
) -> io::Result<()>
where
    H: Fn(NoiseConn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    serve_inner(listener, key, None, None, None, Limits::default(), handler).await
}

/// [`serve_with_key`] over TLS: each accepted connection first completes a
/// TLS handshake with `tls` (HTTP/1.1 inside, as the ts2021 upgrade and
/// DERP need). A failed TLS handshake only ends that connection.
pub async fn serve_tls_with_key<H, F>(
    listener: TcpListener,
    key: Arc<ControlKey>,
    tls: tokio_rustls::TlsAcceptor,
    handler: H,
) -> io::Result<()>
where
    H: Fn(NoiseConn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    serve_inner(
        listener,
        key,
        Some(tls),
        None,
        None,
        Limits::default(),
        handler,
    )
    .await
}

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves on `listener`, plain or TLS, with the DERP relay on `/derp` when
/// one is given (else `/derp` is 404). Never ends on its own: accept
/// errors are counted and retried after a backoff; connections over the
/// caps of `limits` are closed at once; every connection has the idle
/// timeout and the HTTP header-read timeout.
pub(crate) async fn serve_inner<H, F>(
    listener: TcpListener,
    key: Arc<ControlKey>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    derp: Option<Arc<DerpServer>>,
    observer: Option<Observer>,
    limits: Limits,
    handler: H,
) -> io::Result<()>
where
    H: Fn(NoiseConn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let gate = limits.gate();
    let mut errors = AcceptErrors::new("coordinator");
    let refused_log = LogLimiter::new(std::time::Duration::from_secs(10));
    loop {
        let (tcp, peer) = match listener.accept().await {
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
                    tracing::warn!(%peer, reason = %why, suppressed, "coordinator: connection refused");
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tcp = IdleIo::new(tcp, limits.idle_timeout);
        let key = key.clone();
        let handler = handler.clone();
        let tls = tls.clone();
        let derp = derp.clone();
        let observer = observer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_http1(tcp, peer, key, derp, observer, limits, handler).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_http1(stream, peer, key, derp, observer, limits, handler).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "coordinator tls handshake")
                        }
                        Err(_) => tracing::debug!(%peer, "coordinator tls handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_http1<IO, H, F>(
    io: IO,
    peer: std::net::SocketAddr,
    key: Arc<ControlKey>,
    derp: Option<Arc<DerpServer>>,
    observer: Option<Observer>,
    limits: Limits,
    handler: Arc<H>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(NoiseConn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let key = key.clone();
        let handler = handler.clone();
        let derp = derp.clone();
        let observer = observer.clone();
        async move {
            // /healthz for anyone, /metrics for loopback clients only.
            if let Some(obs) = &observer {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                if let Some(r) = obs.respond(&method, &path, peer.ip().is_loopback()).await {
                    return Ok(r);
                }
            }
            Ok::<_, std::convert::Infallible>(route(req, &key, derp.as_ref(), handler))
        }
    });
    // Title-case header names, as Go's servers write them (the DERP `101`
    // reads `Upgrade: DERP`, `Derp-Public-Key: …`); HTTP does not care.
    let conn = limits
        .http1()
        .title_case_headers(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "coordinator http connection");
    }
}

type Resp = Response<Full<Bytes>>;

pub(crate) fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn route<H, F>(
    req: Request<Incoming>,
    key: &ControlKey,
    derp: Option<&Arc<DerpServer>>,
    handler: Arc<H>,
) -> Resp
where
    H: Fn(NoiseConn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let path = req.uri().path();
    if path == tailnet_wire::derp::DERP_PATH || path.starts_with("/derp/") {
        return match derp {
            Some(derp) => derp.handle(req),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        };
    }
    match req.uri().path() {
        KEY_PATH => match *req.method() {
            Method::GET | Method::HEAD => key_response(key),
            _ => method_not_allowed("GET, HEAD"),
        },
        UPGRADE_PATH => match *req.method() {
            Method::POST => upgrade(req, key, handler),
            _ => method_not_allowed("POST"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /key?v=N` (§1). The JSON form is sent whatever `v` is (testcontrol
/// sends a bare hex key when `v` is missing, but every client since the
/// Noise protocol sends `v`).
fn key_response(key: &ControlKey) -> Resp {
    let body = OverTlsPublicKeyResponse {
        // control.md §1: `legacyPublicKey` may be the zero key (Headscale
        // sends only `publicKey`); the client then just re-fetches `/key`
        // on its next login. We have no pre-Noise protocol, so we claim no
        // legacy key rather than reuse the Noise key for it.
        legacy_public_key: MachinePublic::ZERO,
        public_key: key.public(),
    };
    // Serialising two fixed-size keys cannot fail.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(json)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn header_has_token(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// `POST /ts2021` (§2, §3). Header problems are refused with `400` before
/// the upgrade, as Go's `acceptHTTP` does. The initiation is answered
/// before the `101` (it is pure computation), but what the client sees
/// follows Go's `controlbase.Server`: for the three pre-crypto checks
/// (size, type, length) a `101` followed by the error frame, for a
/// cryptographic failure a `101` followed by a close.
fn upgrade<H, F>(mut req: Request<Incoming>, key: &ControlKey, handler: Arc<H>) -> Resp
where
    H: Fn(NoiseConn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let upgrade_ok = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !upgrade_ok {
        return text(
            StatusCode::BAD_REQUEST,
            "missing or unknown next protocol\n",
        );
    }
    if !header_has_token(&req, CONNECTION, "upgrade") {
        return text(StatusCode::BAD_REQUEST, "missing Connection: upgrade\n");
    }
    let Some(init_b64) = req.headers().get(HANDSHAKE_HEADER) else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing Tailscale handshake header\n",
        );
    };
    if init_b64.len() > MAX_HANDSHAKE_HEADER_LEN {
        return text(
            StatusCode::BAD_REQUEST,
            "Tailscale handshake header too long\n",
        );
    }
    let Ok(initiation) = base64::engine::general_purpose::STANDARD.decode(init_b64.as_bytes())
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "invalid Tailscale handshake header\n",
        );
    };

    // What to write after the 101: the response, or an error frame, or
    // nothing (then close).
    let outcome = ServerHandshake::respond(*key.private.as_bytes(), &initiation);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "ts2021 upgrade failed");
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        match outcome {
            Ok((response, transport, machine_key, protocol_version)) => {
                // No early payload (control.md §4: optional; 1.90.9 never
                // reads its node-key challenge, and testcontrol sends none).
                if let Err(e) = write_all_flush(&mut io, &response).await {
                    tracing::debug!(error = %e, "ts2021: writing the Noise response");
                    return;
                }
                let machine_key = MachinePublic::from(machine_key);
                tracing::debug!(
                    machine = %machine_key.key().short(),
                    protocol_version,
                    "ts2021 handshake done"
                );
                handler(NoiseConn {
                    transport,
                    io,
                    machine_key,
                    protocol_version,
                })
                .await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "ts2021 handshake refused");
                if let Some(text) = e.refusal_text() {
                    let _ = write_all_flush(&mut io, &error_frame(text)).await;
                }
                let _ = io.shutdown().await;
            }
        }
    });

    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    r
}

async fn write_all_flush(io: &mut UpgradedIo, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests;
