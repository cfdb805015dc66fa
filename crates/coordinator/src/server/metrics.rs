//! `GET /healthz` and `GET /metrics` (Prometheus text format 0.0.4) of the
//! coordinator, from counters the server and the relay keep anyway.
//!
//! The main listener answers `/healthz` to anyone (load balancers and
//! Kubernetes probes use it) and `/metrics` to loopback clients only;
//! [`ServerHandle::serve_metrics`](super::ServerHandle::serve_metrics)
//! serves both on a separate plain-HTTP listener for Prometheus
//! (`coordinator serve --metrics-listen`). Nothing here names a node, a key
//! or an address: counts only.

use super::{blocking, stun::StunCounters, Shared};
use crate::http::text;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Path of the health check.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// How registrations ended, as `/metrics` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterLabel {
    /// A new node.
    Created,
    /// A known node registered again (a restart).
    Existing,
    /// A node key rotation.
    Rotated,
    /// A known machine logged in again with an auth key.
    Reauthenticated,
    /// A logout (the node's key expired on request).
    Logout,
    /// Refused: the node key expired and no auth key came.
    KeyExpired,
    /// Refused: no, unknown, expired or used-up auth key, bad tags, ….
    Refused,
    /// The database failed.
    Failed,
}

impl RegisterLabel {
    const ALL: [RegisterLabel; 8] = [
        RegisterLabel::Created,
        RegisterLabel::Existing,
        RegisterLabel::Rotated,
        RegisterLabel::Reauthenticated,
        RegisterLabel::Logout,
        RegisterLabel::KeyExpired,
        RegisterLabel::Refused,
        RegisterLabel::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RegisterLabel::Created => "created",
            RegisterLabel::Existing => "existing",
            RegisterLabel::Rotated => "rotated",
            RegisterLabel::Reauthenticated => "reauthenticated",
            RegisterLabel::Logout => "logout",
            RegisterLabel::KeyExpired => "key_expired",
            RegisterLabel::Refused => "refused",
            RegisterLabel::Failed => "failed",
        }
    }
}

/// What the control server did, since it started.
#[derive(Debug, Default)]
pub struct ControlCounters {
    register: [AtomicU64; 8],
    /// Map requests refused (unknown, foreign or expired node key).
    pub map_refused: AtomicU64,
    /// Map streams opened.
    pub streams_opened: AtomicU64,
    /// Times another process's database change was applied (streams
    /// resynchronised, relay clients checked).
    pub store_changes: AtomicU64,
    /// Failed polls of the database (`PRAGMA data_version`).
    pub store_errors: AtomicU64,
}

impl ControlCounters {
    /// Counts one registration that ended as `label`.
    pub fn count_register(&self, label: RegisterLabel) {
        if let Some(i) = RegisterLabel::ALL.iter().position(|l| *l == label) {
            self.register[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Registrations that ended as `label` so far.
    pub fn registered(&self, label: RegisterLabel) -> u64 {
        RegisterLabel::ALL
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.register[i].load(Ordering::Relaxed))
    }
}

type Resp = Response<Full<Bytes>>;

/// What `/healthz` and `/metrics` read.
#[derive(Clone)]
pub(crate) struct Observer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stun: Arc<StunCounters>,
}

impl Observer {
    /// Answers `path` if it is one of ours (`None` otherwise). `/metrics`
    /// only when `metrics_allowed` (a loopback client on the main listener,
    /// anyone on the metrics listener).
    pub(crate) async fn respond(
        &self,
        method: &Method,
        path: &str,
        metrics_allowed: bool,
    ) -> Option<Resp> {
        if path != HEALTHZ_PATH && path != METRICS_PATH {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(r);
        }
        if path == HEALTHZ_PATH {
            return Some(self.healthz().await);
        }
        if !metrics_allowed {
            return Some(text(
                StatusCode::FORBIDDEN,
                "metrics are served to loopback clients here; use coordinator serve --metrics-listen\n",
            ));
        }
        let body = self.metrics().await;
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Some(r)
    }

    /// 200 `ok` when the database answers; 503 with the reason otherwise.
    async fn healthz(&self) -> Resp {
        let store = self.shared.store.clone();
        match blocking(move || store.data_version()).await {
            Ok(Ok(_)) if !*self.shared.shutdown.borrow() => text(StatusCode::OK, "ok\n"),
            Ok(Ok(_)) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            _ => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable (see the coordinator's log)\n",
            ),
        }
    }

    /// The Prometheus text.
    pub(crate) async fn metrics(&self) -> String {
        let store = self.shared.store.clone();
        let nodes = blocking(move || store.nodes()).await;
        render(&self.shared, &self.stun, nodes.ok().and_then(Result::ok))
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    sample(out, name, "", value);
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Renders every metric; `nodes` is `None` when the database failed
/// (then `inferadb_coordinator_store_up` is 0 and the node gauges are
/// left out rather than reported as zero).
fn render(shared: &Shared, stun: &StunCounters, nodes: Option<Vec<crate::Node>>) -> String {
    let mut out = String::with_capacity(4096);
    let c = &shared.counters;
    one(
        &mut out,
        "inferadb_coordinator_store_up",
        "gauge",
        "1 when the coordinator's database answered this scrape.",
        u64::from(nodes.is_some()),
    );
    if let Some(nodes) = nodes {
        let now = SystemTime::now();
        let (mut online, mut offline, mut expired) = (0u64, 0u64, 0u64);
        for n in &nodes {
            if n.key_expired(now) {
                expired += 1;
            } else if n.online {
                online += 1;
            } else {
                offline += 1;
            }
        }
        family(
            &mut out,
            "inferadb_coordinator_nodes",
            "gauge",
            "Registered nodes by state: online (a map stream open), offline, expired (key expired: must log in again).",
        );
        sample(
            &mut out,
            "inferadb_coordinator_nodes",
            "state=\"online\"",
            online,
        );
        sample(
            &mut out,
            "inferadb_coordinator_nodes",
            "state=\"offline\"",
            offline,
        );
        sample(
            &mut out,
            "inferadb_coordinator_nodes",
            "state=\"expired\"",
            expired,
        );
    }
    one(
        &mut out,
        "inferadb_coordinator_map_streams",
        "gauge",
        "Map streams open now (nodes connected to control).",
        shared.hub.connected() as u64,
    );
    one(
        &mut out,
        "inferadb_coordinator_map_streams_opened_total",
        "counter",
        "Map streams opened.",
        load(&c.streams_opened),
    );
    one(
        &mut out,
        "inferadb_coordinator_map_refused_total",
        "counter",
        "Map requests refused (unknown, another machine's or an expired node key).",
        load(&c.map_refused),
    );
    family(
        &mut out,
        "inferadb_coordinator_register_total",
        "counter",
        "Registrations by outcome.",
    );
    for l in RegisterLabel::ALL {
        sample(
            &mut out,
            "inferadb_coordinator_register_total",
            &format!("outcome=\"{}\"", l.as_str()),
            c.registered(l),
        );
    }
    one(
        &mut out,
        "inferadb_coordinator_store_changes_total",
        "counter",
        "Database changes by another process (the admin CLI) applied to streams and relay clients.",
        load(&c.store_changes),
    );
    one(
        &mut out,
        "inferadb_coordinator_store_errors_total",
        "counter",
        "Failed polls of the database for other processes' changes.",
        load(&c.store_errors),
    );

    let derp = &shared.derp;
    let d = derp.counters();
    one(
        &mut out,
        "inferadb_coordinator_derp_clients",
        "gauge",
        "DERP relay connections now (one per node key).",
        derp.clients() as u64,
    );
    one(
        &mut out,
        "inferadb_coordinator_derp_queued_bytes",
        "gauge",
        "Bytes the DERP relay holds for slow clients now (queue depth in bytes).",
        derp.queued_bytes() as u64,
    );
    one(
        &mut out,
        "inferadb_coordinator_derp_queue_budget_bytes",
        "gauge",
        "The relay's budget for queued bytes, all clients together.",
        derp.config().total_queue_bytes as u64,
    );
    one(
        &mut out,
        "inferadb_coordinator_derp_connections_total",
        "counter",
        "DERP connections that completed the handshake.",
        load(&d.connections),
    );
    family(
        &mut out,
        "inferadb_coordinator_derp_connections_closed_total",
        "counter",
        "DERP connections refused or closed by the relay, by reason.",
    );
    for (reason, v) in [
        ("handshake_failed", &d.handshake_failed),
        ("handshake_abandoned", &d.handshake_abandoned),
        ("unknown_key", &d.refused_unknown_key),
        ("revoked", &d.revoked),
        ("replaced", &d.replaced),
        ("malformed", &d.closed_malformed),
    ] {
        sample(
            &mut out,
            "inferadb_coordinator_derp_connections_closed_total",
            &format!("reason=\"{reason}\""),
            load(v),
        );
    }
    one(
        &mut out,
        "inferadb_coordinator_derp_packets_forwarded_total",
        "counter",
        "Packets the DERP relay delivered.",
        load(&d.packets_forwarded),
    );
    one(
        &mut out,
        "inferadb_coordinator_derp_bytes_forwarded_total",
        "counter",
        "Bytes of the packets the DERP relay delivered (no framing).",
        load(&d.bytes_forwarded),
    );
    family(
        &mut out,
        "inferadb_coordinator_derp_dropped_total",
        "counter",
        "Packets the DERP relay dropped, by reason.",
    );
    for (reason, v) in [
        ("unknown_dest", &d.dropped_unknown_dest),
        ("queue_full", &d.dropped_queue_full),
        ("gone", &d.dropped_gone),
        ("memory", &d.dropped_memory),
    ] {
        sample(
            &mut out,
            "inferadb_coordinator_derp_dropped_total",
            &format!("reason=\"{reason}\""),
            load(v),
        );
    }
    one(
        &mut out,
        "inferadb_coordinator_stun_answered_total",
        "counter",
        "STUN binding requests answered.",
        load(&stun.answered),
    );
    one(
        &mut out,
        "inferadb_coordinator_stun_dropped_total",
        "counter",
        "STUN datagrams dropped (not a binding request).",
        load(&stun.dropped),
    );
    out
}

/// The metrics listener: `/healthz` and `/metrics` to anyone who reaches
/// it, everything else 404; the caps and timeouts of `limits`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    observer: Observer,
    limits: tailnet_listen::Limits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let gate = limits.gate();
    let mut errors = tailnet_listen::AcceptErrors::new("coordinator metrics");
    let refused_log = tailnet_listen::LogLimiter::new(std::time::Duration::from_secs(10));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => {
                    errors.success();
                    a
                }
                Err(e) => {
                    errors.failed(&e).await;
                    continue;
                }
            },
            _ = super::until_shutdown(&mut shutdown) => return,
        };
        let permit = match gate.admit(Some(peer.ip())) {
            Ok(p) => p,
            Err(why) => {
                if let Some(suppressed) = refused_log.allow() {
                    tracing::warn!(%peer, reason = %why, suppressed, "coordinator metrics: connection refused");
                }
                continue;
            }
        };
        let obs = observer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let io = tailnet_listen::IdleIo::new(tcp, limits.idle_timeout);
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let obs = obs.clone();
                    async move {
                        let r = obs.respond(req.method(), req.uri().path(), true).await;
                        Ok::<_, std::convert::Infallible>(
                            r.unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n")),
                        )
                    }
                });
            let conn = limits
                .http1()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "coordinator metrics connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The main listener shows `/metrics` only to loopback clients (the
    /// listener passes `peer.ip().is_loopback()`); `/healthz` to anyone;
    /// other methods are refused.
    #[tokio::test]
    async fn metrics_need_permission_healthz_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(crate::Store::open(dir.path()).expect("store"));
        let server = super::super::Server::builder(store)
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("server");
        let obs = &server.observer;
        let status = |r: Option<Resp>| r.map(|r| r.status());
        assert_eq!(
            status(obs.respond(&Method::GET, METRICS_PATH, false).await),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(obs.respond(&Method::GET, METRICS_PATH, true).await),
            Some(StatusCode::OK)
        );
        assert_eq!(
            status(obs.respond(&Method::GET, HEALTHZ_PATH, false).await),
            Some(StatusCode::OK)
        );
        assert_eq!(
            status(obs.respond(&Method::POST, HEALTHZ_PATH, true).await),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert!(obs.respond(&Method::GET, "/key", true).await.is_none());
        // A server shutting down is no longer healthy.
        let obs = obs.clone();
        server.shutdown().await;
        let r = obs.respond(&Method::GET, HEALTHZ_PATH, false).await;
        assert_eq!(status(r), Some(StatusCode::SERVICE_UNAVAILABLE));
    }
}
