//! HTTP/2 inside Noise: `POST /machine/register` and `POST /machine/map`
//! (control.md §5-§7).
//!
//! Every request is authenticated by the Noise peer's machine key: a
//! register can only register or refresh that machine's node, and a map
//! request must carry a node key registered to that machine (unknown key →
//! 401, another machine's key → 403). Bodies are capped; a body that is too
//! large or not the expected JSON gets 413 / 400 with a short text, and
//! nothing is stored.

use super::metrics::RegisterLabel;
use super::session::run_stream;
use super::{blocking, Shared};
use crate::nodes::{MapUpdate, Node};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tailnet_wire::control::{
    Compression, MachinePublic, MapRequest, MapStreamEncoder, RegisterRequest, MAP_PATH,
    REGISTER_PATH,
};
use tokio::sync::mpsc;

/// Map frames a stream may queue before its task waits for the client.
const STREAM_QUEUE: usize = 16;

/// A response body: one buffer, or the frames of a map stream as its task
/// produces them (each frame is sent, and so flushed, on its own).
#[derive(Debug)]
pub enum ControlBody {
    /// A whole body (or none).
    Full(Option<Bytes>),
    /// A map stream; ends when the task drops its sender.
    Stream(mpsc::Receiver<Bytes>),
}

impl HttpBody for ControlBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ControlBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ControlBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ControlBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ControlBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ControlBody::Full(None) => SizeHint::with_exact(0),
            ControlBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A response from the control handlers.
pub type ControlResponse = Response<ControlBody>;

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> ControlResponse {
    let mut r = Response::new(ControlBody::Full(Some(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A short plain-text error.
pub fn text(status: StatusCode, msg: &str) -> ControlResponse {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{msg}\n")),
    )
}

/// A request refused before anything was stored: status and a short text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub StatusCode, pub String);

impl From<Refusal> for ControlResponse {
    fn from(r: Refusal) -> Self {
        text(r.0, &r.1)
    }
}

fn json_response<T: serde::Serialize>(value: &T) -> ControlResponse {
    match serde_json::to_vec(value) {
        Ok(b) => respond(StatusCode::OK, "application/json", Bytes::from(b)),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

fn internal(e: impl std::fmt::Display) -> ControlResponse {
    tracing::warn!(error = %e, "coordinator: control request failed");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Routes one request from the Noise peer `machine`.
pub(crate) async fn route(
    shared: Arc<Shared>,
    machine: MachinePublic,
    req: Request<Incoming>,
) -> ControlResponse {
    let path = req.uri().path();
    let handler = match path {
        REGISTER_PATH => Route::Register,
        MAP_PATH => Route::Map,
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    };
    if req.method() != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let body = match read_body(req, shared.config.max_body).await {
        Ok(b) => b,
        Err(r) => return r.into(),
    };
    match handler {
        Route::Register => register(shared, machine, body).await,
        Route::Map => map(shared, machine, body).await,
    }
}

enum Route {
    Register,
    Map,
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Refusal> {
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max} bytes"),
        )),
        Err(_) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "request body not read".into(),
        )),
    }
}

/// Parses a JSON body; the error names a line and column, never echoes
/// the input (which may hold an auth key).
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        let at = if e.is_eof() {
            "unexpected end of input".to_string()
        } else {
            format!("line {} column {}", e.line(), e.column())
        };
        Refusal(StatusCode::BAD_REQUEST, format!("malformed {what}: {at}"))
    })
}

async fn register(shared: Arc<Shared>, machine: MachinePublic, body: Bytes) -> ControlResponse {
    let req: RegisterRequest = match parse("register request", &body) {
        Ok(r) => r,
        Err(r) => return r.into(),
    };
    if let Err(r) = check_hostinfo(req.hostinfo.as_ref()) {
        return r.into();
    }
    let store = shared.store.clone();
    let now = SystemTime::now();
    let result =
        match blocking(move || super::register::register(&store, &machine, &req, now)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                shared.counters.count_register(RegisterLabel::Failed);
                return internal(e);
            }
            Err(e) => {
                shared.counters.count_register(RegisterLabel::Failed);
                return internal(e);
            }
        };
    shared.counters.count_register(match &result.node {
        Some(_) if result.response.node_key_expired => RegisterLabel::Logout,
        Some(reg) => match reg.outcome {
            crate::RegisterOutcome::Created => RegisterLabel::Created,
            crate::RegisterOutcome::Existing => RegisterLabel::Existing,
            crate::RegisterOutcome::Rotated => RegisterLabel::Rotated,
            crate::RegisterOutcome::Reauthenticated => RegisterLabel::Reauthenticated,
        },
        None if result.response.node_key_expired => RegisterLabel::KeyExpired,
        None => RegisterLabel::Refused,
    });
    if let Some(reg) = &result.node {
        tracing::info!(
            node = reg.node.id.0,
            name = %reg.node.given_name,
            outcome = ?reg.outcome,
            "coordinator: node registered"
        );
        let (s, id) = (shared.clone(), reg.node.id);
        if let Ok(Err(e)) = blocking(move || s.hub.publish_node(&s.store, id)).await {
            tracing::warn!(error = %e, "coordinator: telling peers about a registration");
        }
        // A logout or a rotated node key ends the old key's relay use.
        shared.derp.reverify_now();
    } else if !result.response.error.is_empty() {
        // Anyone who completes the Noise handshake can cause these: one
        // line per interval, with the count it stands for.
        if let Some(suppressed) = shared.refused_log.allow() {
            tracing::info!(
                machine = %machine.key().short(),
                error = %result.response.error,
                suppressed,
                "coordinator: registration refused"
            );
        }
    }
    json_response(&result.response)
}

/// Refuses a `Hostinfo` over the limits of [`crate::hostinfo`] (400, the
/// field named).
fn check_hostinfo<T: serde::Serialize>(hostinfo: Option<&T>) -> Result<(), Refusal> {
    let Some(h) = hostinfo else { return Ok(()) };
    let value = serde_json::to_value(h)
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "Hostinfo not serialisable".into()))?;
    crate::hostinfo::check_hostinfo(&value)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("{e}; nothing was stored")))
}

/// Why a map request is refused before anything is stored: an unknown
/// node key, another machine's, or an expired one (`coordinator nodes
/// expire`, a logout: the node must register again with an auth key).
pub fn authenticate(
    node: Option<Node>,
    machine: &MachinePublic,
    now: SystemTime,
) -> Result<Node, Refusal> {
    match node {
        None => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "node key is not registered; register first".into(),
        )),
        Some(n) if n.machine_key != *machine.as_bytes() => Err(Refusal(
            StatusCode::FORBIDDEN,
            "node key belongs to another machine".into(),
        )),
        Some(n) if n.key_expired(now) => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "node key has expired: log in again with an auth key".into(),
        )),
        Some(n) => Ok(n),
    }
}

/// What a map request reports about its node (control.md §7 safe rule:
/// empty endpoints and a zero disco key change nothing).
pub fn map_update(req: &MapRequest) -> MapUpdate {
    MapUpdate {
        endpoints: (!req.endpoints.is_empty()).then(|| req.endpoints.clone()),
        disco_key: (!req.disco_key.is_zero()).then(|| *req.disco_key.as_bytes()),
        hostinfo: req
            .hostinfo
            .as_ref()
            .and_then(|h| serde_json::to_value(h).ok()),
        hostname: req
            .hostinfo
            .as_ref()
            .map(|h| h.hostname.clone())
            .filter(|h| !h.is_empty()),
    }
}

async fn map(shared: Arc<Shared>, machine: MachinePublic, body: Bytes) -> ControlResponse {
    let req: MapRequest = match parse("map request", &body) {
        Ok(r) => r,
        Err(r) => return r.into(),
    };
    if let Err(r) = check_hostinfo(req.hostinfo.as_ref()) {
        return r.into();
    }
    if req.node_key.is_zero() {
        return text(StatusCode::BAD_REQUEST, "map request without a node key");
    }
    let (s, nk) = (shared.clone(), *req.node_key.as_bytes());
    let node = match blocking(move || s.store.node_by_node_key(&nk)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let node = match authenticate(node, &machine, SystemTime::now()) {
        Ok(n) => n,
        Err(r) => {
            shared
                .counters
                .map_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return r.into();
        }
    };

    let update = map_update(&req);
    let (s, id) = (shared.clone(), node.id);
    let applied = blocking(move || -> Result<(), crate::StoreError> {
        let changes = s.store.apply_map_update(id, &update)?;
        if changes.any() {
            s.hub.publish_node(&s.store, id)?;
        }
        Ok(())
    })
    .await;
    match applied {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    }

    let compression = Compression::from_request(&req.compress);
    if !req.stream {
        if req.omit_peers {
            // A lite update: the Go client only checks for 200 (§7).
            return respond(StatusCode::OK, "application/json", Bytes::new());
        }
        // A one-shot full map: one frame, then the body ends.
        let s = shared.clone();
        let built = blocking(move || -> Result<_, crate::StoreError> {
            let now = SystemTime::now();
            let nodes = s.store.nodes()?;
            let me = nodes
                .iter()
                .find(|n| n.id == id)
                .cloned()
                .ok_or(crate::StoreError::NodeNotFound(id.0))?;
            let filter = s.policy().packet_filter_for(&me, &nodes);
            Ok(super::mapper::full_map(&me, &nodes, filter, &s.ctx, now))
        })
        .await;
        let msg = match built {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return internal(e),
            Err(e) => return internal(e),
        };
        return match MapStreamEncoder::new(compression).encode_message(&msg) {
            Ok(frame) => respond(StatusCode::OK, "application/json", Bytes::from(frame)),
            Err(e) => internal(e),
        };
    }

    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(run_stream(shared, id, compression, tx));
    let mut r = Response::new(ControlBody::Stream(rx));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
