//! `bench tunnel`'s rows for the HTTP layers of the embedding API (issue
//! 18): the same axum server on a tailnet node (`tailnet::Listener` as
//! `axum::serve::Listener`), reached by MagicDNS name from a second node
//! two ways, so the cost of each layer is visible beside the raw stream:
//!
//! - `tailnet-axum`: our hand-written HTTP/1.1 client (the one of the
//!   `tailnet-http` row) on a `Node::dial` stream;
//! - `tailnet-hyper-axum`: hyper-util's legacy `Client` over
//!   `tailnet::http::Connector` (pooled keep-alive connections).
//!
//! And the same two clients against the same axum server over the host's
//! loopback TCP (`loopback-axum`, `loopback-hyper-axum`, hyper with its
//! own `HttpConnector`): what hyper's client costs with no tailnet at all.
//!
//! Each: 64-byte GET round trips (p50/p99) on a keep-alive connection and
//! the bulk body's throughput for the run's duration. Both nodes run in
//! this process, joined to an embedded coordinator on loopback; the
//! tailnet rows wait for the direct path first.

use super::{
    measure_http_download, time_round_trips, HttpConn, PathResult, Throughput, TunnelOptions,
};
use crate::control::Coord;
use crate::services::{HTTP_BULK_LEN, HTTP_BULK_PATH, HTTP_SMALL_BODY, HTTP_SMALL_PATH};
use anyhow::{bail, Context};
use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tailnet::Node;

/// The row names this file measures.
pub const PATHS: &[&str] = &[
    "tailnet-axum",
    "tailnet-hyper-axum",
    "loopback-axum",
    "loopback-hyper-axum",
];

/// The row each is compared with (see `tunnel::reference_of`): the raw
/// client beside the raw stream's `tailnet-http`, hyper beside the raw
/// client on the same transport.
pub fn reference_of(name: &str) -> Option<&'static str> {
    match name {
        "tailnet-axum" => Some("tailnet-http"),
        "tailnet-hyper-axum" => Some("tailnet-axum"),
        "loopback-hyper-axum" => Some("loopback-axum"),
        _ => None,
    }
}

const SERVER: &str = "bench-axum";
const CLIENT: &str = "bench-hyper";

/// The bulk body: zeros, [`HTTP_BULK_LEN`] bytes announced (so the answer
/// has a `Content-Length`, as our HTTP service's), 256 KiB per frame.
struct Bulk {
    chunk: Bytes,
    left: u64,
}

impl hyper::body::Body for Bulk {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = (self.chunk.len() as u64).min(self.left) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

fn app() -> axum::Router {
    axum::Router::new()
        .route(
            HTTP_SMALL_PATH,
            axum::routing::get(|| async { Bytes::from_static(&HTTP_SMALL_BODY) }),
        )
        .route(
            HTTP_BULK_PATH,
            axum::routing::get(|| async {
                Body::new(Bulk {
                    chunk: Bytes::from(vec![0u8; 256 * 1024]),
                    left: HTTP_BULK_LEN,
                })
            }),
        )
}

async fn join(coord: &Coord, host: &str, mtu: usize) -> anyhow::Result<Node> {
    Ok(Node::builder()
        .control_url(coord.url.clone())
        .auth_key(coord.auth_key.clone())
        .hostname(host)
        .ephemeral(true)
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .timeout(Duration::from_secs(20))
        .netstack(tailnet::NetstackConfig {
            mtu,
            ..Default::default()
        })
        .up()
        .await?)
}

/// The direct UDP address `client` uses to reach `server`, if any.
fn direct(client: &Node, server: &Node) -> Option<String> {
    let p = client.peer_stats(&server.public_key())?;
    if p.relay_region != 0 {
        return None;
    }
    p.cur_addr.map(|a| format!("direct {a}"))
}

/// Measures row `name` (one of [`PATHS`]).
pub async fn path(name: &str, opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    if name.starts_with("loopback-") {
        return loopback(name == "loopback-hyper-axum", opts).await;
    }
    let coord = Coord::start().await?;
    let r = async {
        let server = join(&coord, SERVER, opts.mtu).await?;
        let client = join(&coord, CLIENT, opts.mtu).await?;
        let listener = server.listen(80)?;
        let serving = tokio::spawn(async move { axum::serve(listener, app()).await });
        let r = measure(name, &client, &server, opts).await;
        serving.abort();
        client.shutdown().await;
        server.shutdown().await;
        r
    }
    .await;
    coord.shutdown().await;
    r
}

async fn measure(
    name: &str,
    client: &Node,
    server: &Node,
    opts: &TunnelOptions,
) -> anyhow::Result<PathResult> {
    let fqdn = server
        .status()
        .self_
        .dns_name
        .trim_end_matches('.')
        .to_string();
    let addr = format!("{fqdn}:80");
    let small_url: hyper::Uri = format!("http://{addr}{HTTP_SMALL_PATH}").parse()?;
    let bulk_url: hyper::Uri = format!("http://{addr}{HTTP_BULK_PATH}").parse()?;
    let hyper_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, Empty<Bytes>>(tailnet::http::Connector::new(client.clone()));
    let hyper_get = async |url: &hyper::Uri| -> anyhow::Result<usize> {
        let resp = hyper_client.get(url.clone()).await?;
        if !resp.status().is_success() {
            bail!("HTTP answer {}", resp.status());
        }
        Ok(resp.into_body().collect().await?.to_bytes().len())
    };

    // Small GETs until the path is direct (the netmap needs to reach the
    // client and disco needs packets to flow).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut raw = None;
    let path = loop {
        let r = async {
            if name == "tailnet-axum" {
                if raw.is_none() {
                    raw = Some(HttpConn::new(client.dial(&addr).await?));
                }
                raw.as_mut()
                    .context("connection")?
                    .get(HTTP_SMALL_PATH)
                    .await?;
            } else {
                hyper_get(&small_url).await?;
            }
            anyhow::Ok(())
        };
        let ok = tokio::time::timeout(Duration::from_secs(5), r).await;
        if let Ok(Err(e)) = &ok {
            tracing::debug!(error = %e, "bench: warm-up GET failed");
            raw = None;
        }
        if let (Ok(Ok(())), Some(p)) = (&ok, direct(client, server)) {
            break p;
        }
        if Instant::now() > deadline {
            bail!("no direct path and answer within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let (down, (p50, p99)) = if name == "tailnet-axum" {
        let down = measure_http_download(client.dial(&addr).await?, opts.duration).await?;
        let conn = raw.as_mut().context("connection")?;
        let rtt =
            time_round_trips(opts.rtt_samples, async || conn.get(HTTP_SMALL_PATH).await).await?;
        (down, rtt)
    } else {
        let resp = tokio::time::timeout(Duration::from_secs(30), hyper_client.get(bulk_url))
            .await
            .context("no HTTP answer within 30 s")??;
        let down = hyper_download(resp, opts.duration).await?;
        let small = small_url.clone();
        let rtt = time_round_trips(opts.rtt_samples, async || {
            hyper_get(&small).await.map(|_| ())
        })
        .await?;
        (down, rtt)
    };
    let path = direct(client, server).unwrap_or(path);
    Ok(PathResult {
        gbit_per_s: Some(down.gbit),
        ramp_s: down.ramp_s,
        rtt_p50_us: Some(p50),
        rtt_p99_us: Some(p99),
        path: Some(path),
        ..PathResult::default()
    })
}

/// The loopback rows: axum on a host TCP listener, the raw client or
/// hyper's own connector over host TCP.
async fn loopback(hyper: bool, opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let serving = tokio::spawn(async move { axum::serve(listener, app()).await });
    let connect = async || -> anyhow::Result<tokio::net::TcpStream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    };
    let r = async {
        let (down, (p50, p99)) = if hyper {
            let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
            http.set_nodelay(true);
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build::<_, Empty<Bytes>>(http);
            let small: hyper::Uri = format!("http://{addr}{HTTP_SMALL_PATH}").parse()?;
            let bulk: hyper::Uri = format!("http://{addr}{HTTP_BULK_PATH}").parse()?;
            let down = hyper_download(client.get(bulk).await?, opts.duration).await?;
            let rtt = time_round_trips(opts.rtt_samples, async || {
                let resp = client.get(small.clone()).await?;
                resp.into_body().collect().await?;
                Ok(())
            })
            .await?;
            (down, rtt)
        } else {
            let down = measure_http_download(connect().await?, opts.duration).await?;
            let mut conn = HttpConn::new(connect().await?);
            let rtt = time_round_trips(opts.rtt_samples, async || conn.get(HTTP_SMALL_PATH).await)
                .await?;
            (down, rtt)
        };
        Ok(PathResult {
            gbit_per_s: Some(down.gbit),
            rtt_p50_us: Some(p50),
            rtt_p99_us: Some(p99),
            path: Some(format!("host TCP {addr}")),
            ..PathResult::default()
        })
    }
    .await;
    serving.abort();
    r
}

/// Reads a streamed body for `duration`.
async fn hyper_download(
    resp: hyper::Response<hyper::body::Incoming>,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    if !resp.status().is_success() {
        bail!("HTTP answer {}", resp.status());
    }
    let mut body = resp.into_body();
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < duration {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Ok(Some(Ok(f))) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => break,
            Err(_) => bail!("the bulk body stalled for 10 s"),
        }
    }
    Ok(Throughput {
        gbit: bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9,
        ramp_s: None,
    })
}
