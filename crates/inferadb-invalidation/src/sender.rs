//! The control side: fan an event out to every engine.

use crate::connect::Connect;
use crate::event::{EventError, Invalidation};
use crate::metrics::SenderMetrics;
use crate::receiver::DEFAULT_PATH;
use crate::signature::{self, unix_secs, Secret, SIGNATURE_HEADER};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

/// One engine to deliver to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The cluster it belongs to (the metrics' `cluster` label).
    pub cluster: String,
    pub addr: SocketAddr,
}

impl Target {
    pub fn new(cluster: impl Into<String>, addr: SocketAddr) -> Target {
        Target {
            cluster: cluster.into(),
            addr,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.addr)
    }
}

/// Where events go: a fixed list (`http_endpoints`) or whatever a
/// discovery watch holds when each event is sent.
#[derive(Clone)]
pub struct Targets(TargetsInner);

#[derive(Clone)]
enum TargetsInner {
    Static(Arc<[Target]>),
    Dynamic(Arc<dyn Fn() -> Vec<Target> + Send + Sync>),
}

impl fmt::Debug for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            TargetsInner::Static(t) => f.debug_tuple("Targets::Static").field(t).finish(),
            TargetsInner::Dynamic(_) => f.write_str("Targets::Dynamic"),
        }
    }
}

impl Targets {
    /// A fixed set.
    pub fn fixed(targets: impl IntoIterator<Item = Target>) -> Targets {
        Targets(TargetsInner::Static(targets.into_iter().collect()))
    }

    /// The current value of a watch of target lists.
    pub fn watch(rx: watch::Receiver<Vec<Target>>) -> Targets {
        Targets::watch_map(rx, Clone::clone)
    }

    /// The current value of any watch, mapped to targets by `f`: e.g.
    /// discovery's endpoint set, keeping the healthy ones:
    /// `Targets::watch_map(rx, |set| set.iter().filter(|e| e.healthy)
    ///     .map(|e| Target::new(&e.cluster, e.addr)).collect())`.
    pub fn watch_map<T, F>(rx: watch::Receiver<T>, f: F) -> Targets
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> Vec<Target> + Send + Sync + 'static,
    {
        Targets(TargetsInner::Dynamic(Arc::new(move || f(&rx.borrow()))))
    }

    /// Any function returning the current targets.
    pub fn from_fn(f: impl Fn() -> Vec<Target> + Send + Sync + 'static) -> Targets {
        Targets(TargetsInner::Dynamic(Arc::new(f)))
    }

    /// The targets now, without duplicates, in a stable order.
    pub fn current(&self) -> Vec<Target> {
        let mut v = match &self.0 {
            TargetsInner::Static(t) => t.to_vec(),
            TargetsInner::Dynamic(f) => f(),
        };
        v.sort();
        let mut seen = HashSet::new();
        v.retain(|t| seen.insert(t.addr));
        v
    }
}

/// Sender settings. The seed's `timeout_ms` and `retry_attempts` map to
/// `timeout` and `retry_attempts` ([`SenderConfig::from_seed`]).
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// One attempt's limit: connect, request and response (default 5 s,
    /// the seed's `timeout_ms: 5000`).
    pub timeout: Duration,
    /// Retries after the first attempt (default 2, the seed's
    /// `retry_attempts: 2`: up to 3 attempts per engine).
    pub retry_attempts: u32,
    /// Wait before the first retry; doubles each retry up to
    /// `backoff_max`, with jitter (half fixed, half random).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Attempts in flight at once across all events and engines (32).
    pub max_concurrency: usize,
    /// The receivers' webhook path (default `/v1/invalidate`).
    pub path: String,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            timeout: Duration::from_millis(5000),
            retry_attempts: 2,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_concurrency: 32,
            path: DEFAULT_PATH.to_owned(),
        }
    }
}

impl SenderConfig {
    /// Defaults with the seed's `cache_invalidation.timeout_ms` and
    /// `retry_attempts`.
    pub fn from_seed(timeout_ms: u64, retry_attempts: u32) -> SenderConfig {
        SenderConfig {
            timeout: Duration::from_millis(timeout_ms),
            retry_attempts,
            ..SenderConfig::default()
        }
    }

    /// The wait before retry number `retry` (1-based).
    fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .backoff_initial
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(16))
            .min(self.backoff_max);
        let half = base / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Why one attempt failed. Never carries the secret or the signature.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("engine answered {0}")]
    Status(StatusCode),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
}

impl AttemptError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Connect(_) => "connect",
            AttemptError::Http(_) | AttemptError::Request(_) => "http",
            AttemptError::Status(s) if s.is_client_error() => "status_4xx",
            AttemptError::Status(_) => "status_5xx",
        }
    }

    /// Whether another attempt may succeed: not for answers that will not
    /// change (400, 401, 404, 405, 413: a bad event, a wrong secret or
    /// clock, a wrong path).
    pub fn retryable(&self) -> bool {
        match self {
            AttemptError::Status(s) => {
                s.is_server_error()
                    || *s == StatusCode::REQUEST_TIMEOUT
                    || *s == StatusCode::TOO_MANY_REQUESTS
            }
            AttemptError::Request(_) => false,
            _ => true,
        }
    }
}

/// A finished delivery to one engine.
#[derive(Debug)]
pub struct Delivery {
    pub target: Target,
    /// Attempts made (1 + retries).
    pub attempts: u32,
    /// From the first attempt to the end.
    pub elapsed: Duration,
    /// `Ok` with the engine's status, or the last attempt's error.
    pub result: Result<StatusCode, AttemptError>,
}

/// What [`Sender::send`] did for one event.
#[derive(Debug)]
pub struct DeliveryReport {
    pub event_id: String,
    /// One per target, in target order.
    pub deliveries: Vec<Delivery>,
}

impl DeliveryReport {
    /// Every target acknowledged the event.
    pub fn all_delivered(&self) -> bool {
        self.deliveries.iter().all(|d| d.result.is_ok())
    }

    /// The deliveries that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Delivery> {
        self.deliveries.iter().filter(|d| d.result.is_err())
    }
}

/// An event that cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("invalid event: {0}")]
    Event(#[from] EventError),
    #[error("encoding the event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Delivers events to every target. Cheap to clone; clones share the
/// concurrency limit.
pub struct Sender<C> {
    inner: Arc<SenderInner<C>>,
}

impl<C> Clone for Sender<C> {
    fn clone(&self) -> Self {
        Sender {
            inner: self.inner.clone(),
        }
    }
}

struct SenderInner<C> {
    connector: C,
    secret: Secret,
    targets: Targets,
    config: SenderConfig,
    metrics: SenderMetrics,
    permits: Arc<Semaphore>,
}

impl<C: Connect> Sender<C> {
    pub fn new(
        connector: C,
        secret: Secret,
        targets: Targets,
        config: SenderConfig,
        metrics: SenderMetrics,
    ) -> Sender<C> {
        let permits = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        Sender {
            inner: Arc::new(SenderInner {
                connector,
                secret,
                targets,
                config,
                metrics,
                permits,
            }),
        }
    }

    /// The targets an event sent now would go to.
    pub fn targets(&self) -> Vec<Target> {
        self.inner.targets.current()
    }

    /// Delivers `event` to every current target, retrying each as
    /// configured, and returns when every delivery has ended. Failures are
    /// in the report (and the metrics), not an error: an engine that stays
    /// unreachable does not stop the others.
    pub async fn send(&self, event: &Invalidation) -> Result<DeliveryReport, SendError> {
        let targets = self.targets();
        self.send_to(event, targets).await
    }

    /// [`Sender::send`] to an explicit set of targets.
    pub async fn send_to(
        &self,
        event: &Invalidation,
        targets: Vec<Target>,
    ) -> Result<DeliveryReport, SendError> {
        event.validate()?;
        let body = Bytes::from(serde_json::to_vec(event)?);
        if targets.is_empty() {
            warn!(event_id = %event.id, "No cache invalidation targets");
        }
        let mut set = JoinSet::new();
        for (i, target) in targets.into_iter().enumerate() {
            let this = self.clone();
            let body = body.clone();
            set.spawn(async move { (i, this.deliver(target, body).await) });
        }
        let mut deliveries = Vec::with_capacity(set.len());
        while let Some(r) = set.join_next().await {
            // deliver() does not panic; a panic would be a bug worth
            // surfacing.
            match r {
                Ok(d) => deliveries.push(d),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        deliveries.sort_by_key(|(i, _)| *i);
        Ok(DeliveryReport {
            event_id: event.id.clone(),
            deliveries: deliveries.into_iter().map(|(_, d)| d).collect(),
        })
    }

    async fn deliver(&self, target: Target, body: Bytes) -> Delivery {
        let cfg = &self.inner.config;
        let m = &self.inner.metrics;
        let start = Instant::now();
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let r = self.attempt(&target, body.clone()).await;
            match r {
                Ok(status) => break Ok(status),
                Err(e) => {
                    m.attempt_failures
                        .with_label_values(&[&target.cluster, e.reason()])
                        .inc();
                    if attempts > cfg.retry_attempts || !e.retryable() {
                        break Err(e);
                    }
                    let wait = cfg.backoff(attempts);
                    debug!(target = %target, attempt = attempts, error = %e, wait_ms = wait.as_millis() as u64, "Cache invalidation attempt failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let elapsed = start.elapsed();
        match &result {
            Ok(_) => {
                m.deliveries
                    .with_label_values(&[&target.cluster, "success"])
                    .inc();
                m.duration_for(&target.cluster)
                    .observe(elapsed.as_secs_f64());
            }
            Err(e) => {
                m.deliveries
                    .with_label_values(&[&target.cluster, "failure"])
                    .inc();
                warn!(cluster = %target.cluster, endpoint = %target.addr, attempts, error = %e, "Cache invalidation delivery failed");
            }
        }
        Delivery {
            target,
            attempts,
            elapsed,
            result,
        }
    }

    /// One attempt under a concurrency permit and the timeout. The
    /// signature is made per attempt, so a retry carries a fresh timestamp.
    async fn attempt(&self, target: &Target, body: Bytes) -> Result<StatusCode, AttemptError> {
        let permit = self.inner.permits.acquire().await;
        let _gauge = InFlight::new(&self.inner.metrics);
        let timeout = self.inner.config.timeout;
        let r = tokio::time::timeout(timeout, self.request(target, body))
            .await
            .unwrap_or(Err(AttemptError::Timeout(timeout)));
        drop(permit);
        r
    }

    async fn request(&self, target: &Target, body: Bytes) -> Result<StatusCode, AttemptError> {
        let stream = self
            .inner
            .connector
            .connect(target.addr)
            .await
            .map_err(AttemptError::Connect)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let sig = signature::sign(
            std::slice::from_ref(&self.inner.secret),
            unix_secs(SystemTime::now()),
            &body,
        );
        let req = Request::post(&self.inner.config.path)
            .header(HOST, target.addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("inferadb-invalidation/", env!("CARGO_PKG_VERSION")),
            )
            .header(SIGNATURE_HEADER, sig)
            .body(Full::new(body))?;
        let exchange = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            // Drain a little of the answer so the connection ends cleanly.
            let _ = Limited::new(resp.into_body(), 4096).collect().await;
            Ok::<_, AttemptError>(status)
        };
        tokio::pin!(conn);
        tokio::pin!(exchange);
        let status = tokio::select! {
            biased;
            r = &mut exchange => r?,
            _ = &mut conn => exchange.await?,
        };
        if status.is_success() {
            Ok(status)
        } else {
            Err(AttemptError::Status(status))
        }
    }
}

/// Holds the in-flight gauge up for one attempt.
struct InFlight<'a>(&'a SenderMetrics);

impl<'a> InFlight<'a> {
    fn new(m: &'a SenderMetrics) -> Self {
        m.in_flight.inc();
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = SenderConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..SenderConfig::default()
        };
        for _ in 0..50 {
            let b1 = c.backoff(1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = c.backoff(3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b9 = c.backoff(40);
            assert!(
                b9 >= Duration::from_millis(500) && b9 <= Duration::from_millis(1000),
                "{b9:?}"
            );
        }
    }

    #[test]
    fn targets_dedupe_and_watch() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let t = Targets::fixed([
            Target::new("x", b),
            Target::new("x", a),
            Target::new("y", a),
        ]);
        assert_eq!(t.current(), vec![Target::new("x", a), Target::new("x", b)]);
        let (tx, rx) = watch::channel(vec![(true, a), (false, b)]);
        let t = Targets::watch_map(rx, |v| {
            v.iter()
                .filter(|(h, _)| *h)
                .map(|(_, a)| Target::new("c", *a))
                .collect()
        });
        assert_eq!(t.current(), vec![Target::new("c", a)]);
        tx.send_replace(vec![(true, a), (true, b)]);
        assert_eq!(t.current().len(), 2);
    }

    #[test]
    fn attempt_errors_classify() {
        assert!(AttemptError::Status(StatusCode::BAD_GATEWAY).retryable());
        assert!(!AttemptError::Status(StatusCode::UNAUTHORIZED).retryable());
        assert_eq!(
            AttemptError::Status(StatusCode::UNAUTHORIZED).reason(),
            "status_4xx"
        );
        assert!(AttemptError::Timeout(Duration::from_secs(1)).retryable());
    }
}
