//! The node's control client (`tailnet_control::ControlConn`) against a
//! control server that accepts and then stalls (issue 16 finding 8):
//! every request has a deadline and a silent map stream fails, so the node
//! reconnects instead of wedging.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use bytes::Bytes;
use coordinator::http::{serve_with_key, ControlKey, NoiseConn};
use coordinator::Store;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tailnet_control::{ControlConn, ControlError, ControlUrl, NoiseStream};
use tailnet_wire::control::{MapRequest, NodePublic, RegisterRequest};
use tailnet_wire::PrivateKey;

/// A body that never yields a frame and never ends.
struct Stalled;

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

/// A ts2021 server whose HTTP/2 answers `/machine/map` with 200 and then
/// nothing, and never answers anything else.
async fn stalling_server() -> (ControlUrl, Arc<ControlKey>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let key = Arc::new(ControlKey::load(&store).expect("key"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url: ControlUrl = format!("http://{}", listener.local_addr().expect("addr"))
        .parse()
        .expect("url");
    let handler = |conn: NoiseConn| async move {
        let io = TokioIo::new(NoiseStream::new(conn.transport, conn.io));
        let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
            if req.uri().path() == "/machine/map" {
                Ok::<_, Infallible>(Response::new(Stalled))
            } else {
                std::future::pending().await
            }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    };
    tokio::spawn(serve_with_key(listener, key.clone(), handler));
    (url, key, dir)
}

const DEADLINE: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_stalled_register_times_out() {
    let (url, key, _dir) = stalling_server().await;
    let conn = ControlConn::connect(&url, &PrivateKey::generate(), key.public())
        .await
        .expect("connect")
        .with_timeouts(DEADLINE, DEADLINE);
    let req = RegisterRequest {
        version: 130,
        node_key: NodePublic::from_bytes([7; 32]),
        ..RegisterRequest::default()
    };
    let start = tokio::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), conn.register(&req))
        .await
        .expect("register wedged: no deadline");
    assert!(matches!(r, Err(ControlError::Timeout { .. })), "{r:?}");
    assert!(r.as_ref().is_err_and(ControlError::is_transient));
    assert!(start.elapsed() < DEADLINE * 3, "{:?}", start.elapsed());
    // The lite update too.
    let lite = MapRequest {
        version: 130,
        node_key: NodePublic::from_bytes([7; 32]),
        omit_peers: true,
        ..MapRequest::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(10), conn.lite_update(&lite))
        .await
        .expect("lite update wedged");
    assert!(matches!(r, Err(ControlError::Timeout { .. })), "{r:?}");
}

/// The node's runner polls the stream in a `select!` with a tick shorter
/// than the silence limit; the stalled stream must still fail at the
/// limit (a timeout wrapped around each `next()` restarted on every tick).
#[tokio::test]
async fn a_silent_map_stream_fails_even_when_polled_in_a_select() {
    let (url, key, _dir) = stalling_server().await;
    let conn = ControlConn::connect(&url, &PrivateKey::generate(), key.public())
        .await
        .expect("connect")
        .with_timeouts(DEADLINE, DEADLINE);
    let req = MapRequest {
        version: 130,
        node_key: NodePublic::from_bytes([7; 32]),
        stream: true,
        ..MapRequest::default()
    };
    let mut stream = conn.map_stream(&req).await.expect("200 and headers");
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(DEADLINE / 4);
    let err = loop {
        tokio::select! {
            r = stream.next() => break r,
            _ = tick.tick() => {
                assert!(start.elapsed() < Duration::from_secs(10), "silent stream never failed");
            }
        }
    };
    let err = err.expect_err("a silent stream is an error");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("silent"), "{err}");
    assert!(start.elapsed() < DEADLINE * 3, "{:?}", start.elapsed());
}
