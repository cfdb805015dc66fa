//! The engine side: `POST /v1/invalidate`, verified, deduplicated, applied.

use crate::connect::Accept;
use crate::dedupe::{Begin, Dedupe};
use crate::event::Invalidation;
use crate::metrics::ReceiverMetrics;
use crate::signature::{self, AuthError, Secret, DEFAULT_TOLERANCE, SIGNATURE_HEADER};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

/// The webhook path receivers serve by default.
pub const DEFAULT_PATH: &str = "/v1/invalidate";

/// What an [`Invalidate`] returns on failure (the receiver answers 500 and
/// the sender retries).
pub type InvalidateError = Box<dyn StdError + Send + Sync>;

/// Applies an invalidation to the engine's cache. Called at most once per
/// event id within the dedupe window (again only if it failed). It runs in
/// a task of its own: a sender hanging up does not cancel it.
pub trait Invalidate: Send + Sync + 'static {
    fn invalidate(
        &self,
        event: &Invalidation,
    ) -> impl Future<Output = Result<(), InvalidateError>> + Send;
}

impl<T: Invalidate> Invalidate for Arc<T> {
    fn invalidate(
        &self,
        event: &Invalidation,
    ) -> impl Future<Output = Result<(), InvalidateError>> + Send {
        (**self).invalidate(event)
    }
}

/// A cache keyed by vault id.
pub trait VaultCache: Send + Sync + 'static {
    /// Drops whatever is cached for `vault_id` (nothing cached is fine).
    fn invalidate_vault(&self, vault_id: &str);
}

/// An [`Invalidate`] that removes the event's vault from a [`VaultCache`].
#[derive(Debug, Clone)]
pub struct CacheInvalidator<C>(pub C);

impl<C: VaultCache> Invalidate for CacheInvalidator<C> {
    async fn invalidate(&self, event: &Invalidation) -> Result<(), InvalidateError> {
        self.0.invalidate_vault(&event.vault_id);
        Ok(())
    }
}

/// An [`Invalidate`] from an async closure taking the event.
pub struct FnInvalidate<F>(F);

/// Wraps `f` as an [`Invalidate`].
pub fn from_fn<F, Fut>(f: F) -> FnInvalidate<F>
where
    F: Fn(Invalidation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), InvalidateError>> + Send + 'static,
{
    FnInvalidate(f)
}

impl<F, Fut> Invalidate for FnInvalidate<F>
where
    F: Fn(Invalidation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), InvalidateError>> + Send + 'static,
{
    fn invalidate(
        &self,
        event: &Invalidation,
    ) -> impl Future<Output = Result<(), InvalidateError>> + Send {
        (self.0)(event.clone())
    }
}

/// Records every applied event (the demo's and tests' engine cache).
#[derive(Debug, Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Invalidation>>>,
    count: watch::Sender<usize>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            events: Arc::default(),
            count: watch::channel(0).0,
        }
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// The events applied so far, in order.
    pub fn events(&self) -> Vec<Invalidation> {
        self.events.lock().clone()
    }

    /// How many times the event with `id` was applied.
    pub fn count_of(&self, id: &str) -> usize {
        self.events.lock().iter().filter(|e| e.id == id).count()
    }

    /// Waits until at least `n` events were applied; false on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Invalidate for Recorder {
    async fn invalidate(&self, event: &Invalidation) -> Result<(), InvalidateError> {
        let n = {
            let mut v = self.events.lock();
            v.push(event.clone());
            v.len()
        };
        self.count.send_replace(n);
        Ok(())
    }
}

/// At most one "Rejected unauthenticated …" line per this interval; the
/// next line says how many were not logged (`suppressed`).
pub const REJECTED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The webhook path (default [`DEFAULT_PATH`]).
    pub path: String,
    /// Accepted secrets: the current one, plus the previous one while
    /// rotating.
    pub secrets: Vec<Secret>,
    /// Clock skew / replay window for the signature timestamp (5 min).
    pub tolerance: Duration,
    /// How long applied event ids are remembered (10 min; keep it above
    /// `tolerance`).
    pub dedupe_window: Duration,
    /// At most this many remembered ids (65,536).
    pub dedupe_capacity: usize,
    /// Largest accepted body (64 KiB); larger gets 413.
    pub max_body_bytes: usize,
    /// Connections served at once (256); more wait in the listener.
    pub max_connections: usize,
    /// Time allowed to read a request's headers, and then its body (10 s).
    pub read_timeout: Duration,
    /// A connection with no progress either way for this long is closed
    /// (3 min, `tailnet_listen::Limits::default().idle_timeout`).
    pub idle_timeout: Duration,
}

impl ReceiverConfig {
    /// Defaults, with one secret.
    pub fn new(secret: Secret) -> ReceiverConfig {
        ReceiverConfig {
            path: DEFAULT_PATH.to_owned(),
            secrets: vec![secret],
            tolerance: DEFAULT_TOLERANCE,
            dedupe_window: Duration::from_secs(600),
            dedupe_capacity: 65_536,
            max_body_bytes: 64 * 1024,
            max_connections: 256,
            read_timeout: Duration::from_secs(10),
            idle_timeout: tailnet_listen::Limits::default().idle_timeout,
        }
    }
}

/// The webhook endpoint. Cheap to clone; clones share the dedupe state.
pub struct Receiver<I> {
    inner: Arc<Inner<I>>,
}

impl<I> Clone for Receiver<I> {
    fn clone(&self) -> Self {
        Receiver {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<I> {
    config: ReceiverConfig,
    invalidator: Arc<I>,
    metrics: ReceiverMetrics,
    dedupe: Arc<Dedupe>,
    /// Rejected webhooks are logged at most once per interval (anyone who
    /// reaches the port can cause them); the metric counts every one.
    rejected_log: tailnet_listen::LogLimiter,
}

/// A running [`Receiver::serve`]; dropping it stops the server and closes
/// its connections.
#[derive(Debug)]
pub struct ReceiverHandle {
    task: JoinHandle<()>,
}

impl ReceiverHandle {
    /// Stops accepting and closes open connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ReceiverHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

impl<I: Invalidate> Receiver<I> {
    pub fn new(config: ReceiverConfig, invalidator: I, metrics: ReceiverMetrics) -> Receiver<I> {
        let dedupe = Dedupe::new(config.dedupe_window, config.dedupe_capacity);
        Receiver {
            inner: Arc::new(Inner {
                config,
                invalidator: Arc::new(invalidator),
                metrics,
                dedupe,
                rejected_log: tailnet_listen::LogLimiter::new(REJECTED_LOG_INTERVAL),
            }),
        }
    }

    /// The path this receiver answers.
    pub fn path(&self) -> &str {
        &self.inner.config.path
    }

    fn count(&self, result: &str) {
        self.inner
            .metrics
            .received
            .with_label_values(&[result])
            .inc();
    }

    /// Answers one request: for embedding in an HTTP server that also
    /// serves other paths (route `POST <path>` here), or through
    /// [`Receiver::serve`]. Other paths get 404, other methods 405.
    ///
    /// 200 `{"status":"invalidated"}` or `{"status":"duplicate"}`;
    /// 401 (missing, malformed, stale or wrong signature), 400 (not an
    /// event), 413 (too large), 408 (body too slow), 500 (the cache
    /// callback failed; the sender retries).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let cfg = &self.inner.config;
        if req.uri().path() != cfg.path {
            return json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#);
        }
        if req.method() != Method::POST {
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method not allowed"}"#,
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let header = req.headers().get(SIGNATURE_HEADER).cloned();
        if header.is_none() {
            return self.unauthorized(AuthError::Missing);
        }
        let limited = Limited::new(req.into_body(), cfg.max_body_bytes);
        let body = match tokio::time::timeout(cfg.read_timeout, limited.collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                self.count("bad_request");
                return json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    r#"{"error":"body too large"}"#,
                );
            }
            Ok(Err(_)) => {
                self.count("bad_request");
                return json(StatusCode::BAD_REQUEST, r#"{"error":"unreadable body"}"#);
            }
            Err(_) => {
                self.count("bad_request");
                return json(
                    StatusCode::REQUEST_TIMEOUT,
                    r#"{"error":"body read timed out"}"#,
                );
            }
        };
        if let Err(e) = signature::verify(
            &cfg.secrets,
            header.as_ref().map(HeaderValue::as_bytes),
            &body,
            SystemTime::now(),
            cfg.tolerance,
        ) {
            return self.unauthorized(e);
        }
        let event: Invalidation = match serde_json::from_slice(&body) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "Cache invalidation webhook body is not an event");
                self.count("bad_request");
                return json(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"not an invalidation event"}"#,
                );
            }
        };
        if let Err(e) = event.validate() {
            warn!(error = %e, "Cache invalidation event rejected");
            self.count("bad_request");
            return json(StatusCode::BAD_REQUEST, r#"{"error":"invalid event"}"#);
        }
        match self.inner.dedupe.begin(&event.id).await {
            Begin::Duplicate => {
                debug!(event_id = %event.id, vault_id = %event.vault_id, "Duplicate cache invalidation ignored");
                self.count("duplicate");
                json(StatusCode::OK, r#"{"status":"duplicate"}"#)
            }
            Begin::New(claim) => {
                let inv = self.inner.invalidator.clone();
                let metrics = self.inner.metrics.received.clone();
                // Its own task: a sender that hangs up (its timeout) does
                // not cancel an invalidation halfway, and the outcome is
                // still counted; its retry waits for this outcome in the
                // dedupe.
                let applied = tokio::spawn(async move {
                    let r = inv.invalidate(&event).await;
                    claim.finish(r.is_ok());
                    match &r {
                        Ok(()) => {
                            metrics.with_label_values(&["invalidated"]).inc();
                            info!(vault_id = %event.vault_id, "Vault cache invalidation received");
                            debug!(event_id = %event.id, kind = %event.kind, origin_cluster = event.origin_cluster.as_deref().unwrap_or(""), "Cache invalidation applied");
                        }
                        Err(e) => {
                            metrics.with_label_values(&["failed"]).inc();
                            warn!(event_id = %event.id, vault_id = %event.vault_id, error = %e, "Cache invalidation failed");
                        }
                    }
                    r.is_ok()
                })
                .await;
                match applied {
                    Ok(true) => json(StatusCode::OK, r#"{"status":"invalidated"}"#),
                    Ok(false) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        r#"{"error":"invalidation failed"}"#,
                    ),
                    Err(_) => {
                        // The callback panicked (the claim was released).
                        self.count("failed");
                        json(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            r#"{"error":"invalidation failed"}"#,
                        )
                    }
                }
            }
        }
    }

    fn unauthorized(&self, e: AuthError) -> Response<Full<Bytes>> {
        let reason = e.reason();
        self.inner
            .metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
        self.count("unauthorized");
        if let Some(suppressed) = self.inner.rejected_log.allow() {
            warn!(
                reason,
                error = %e,
                suppressed,
                "Rejected unauthenticated cache invalidation webhook"
            );
        }
        json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#)
    }

    /// Serves HTTP/1.1 on `listener` (a tailnet `TcpListener` in
    /// production, a loopback one in tests) in a background task, at most
    /// `max_connections` connections at once.
    pub fn serve<L: Accept>(&self, listener: L) -> ReceiverHandle {
        let this = self.clone();
        ReceiverHandle {
            task: tokio::spawn(async move { this.accept_loop(listener).await }),
        }
    }

    async fn accept_loop<L: Accept>(self, listener: L) {
        let limit = Arc::new(Semaphore::new(self.inner.config.max_connections.max(1)));
        let mut conns = JoinSet::new();
        let mut errors = tailnet_listen::AcceptErrors::new("cache invalidation");
        let idle = self.inner.config.idle_timeout;
        loop {
            while conns.try_join_next().is_some() {}
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    errors.success();
                    let this = self.clone();
                    conns.spawn(async move {
                        let _permit = permit;
                        this.serve_connection(tailnet_listen::IdleIo::new(stream, idle))
                            .await;
                    });
                }
                // Never gives up (it used to stop for good after 50 errors
                // in a row): count, log once in a while, back off.
                Err(e) => errors.failed(&e).await,
            }
        }
    }

    async fn serve_connection<S>(&self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let this = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.inner.config.read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        if let Err(e) = conn.await {
            debug!(error = %e, "Cache invalidation connection ended with an error");
        }
    }
}
