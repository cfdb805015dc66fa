//! Helpers shared by the integration tests.

#![allow(clippy::unwrap_used)] // test support: its helpers unwrap too
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const SECRET: &str = "test-secret-0123456789abcdef";

pub fn secret() -> inferadb_invalidation::Secret {
    inferadb_invalidation::Secret::from_text(SECRET).unwrap()
}

pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}

/// A raw HTTP/1.1 POST; returns the status code.
pub async fn raw_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// A TCP proxy in front of `to` that swallows its first `swallow`
/// connections: reads them and never answers (a timeout for the sender).
/// Later connections pass through.
pub async fn black_hole_first(to: SocketAddr, swallow: usize) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut n = 0;
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            n += 1;
            if n <= swallow {
                held.push(tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(k) = c.read(&mut buf).await {
                        if k == 0 {
                            break;
                        }
                    }
                }));
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
                }
            });
        }
    });
    addr
}

// ---- An in-memory listener for the receiver (hostile.rs, logs.rs) ----

use inferadb_invalidation::{
    Accept, Receiver, ReceiverConfig, ReceiverHandle, ReceiverMetrics, Recorder, DEFAULT_PATH,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, Mutex};

/// Fails `accept()` `fail` times (EMFILE), then hands out in-memory
/// connections.
pub struct Flaky {
    fail: usize,
    calls: AtomicUsize,
    conns: Mutex<mpsc::Receiver<DuplexStream>>,
}

impl Accept for Flaky {
    type Stream = DuplexStream;
    async fn accept(&self) -> std::io::Result<(DuplexStream, SocketAddr)> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
            return Err(std::io::Error::from_raw_os_error(24));
        }
        match self.conns.lock().await.recv().await {
            Some(c) => Ok((c, "192.0.2.7:4000".parse().expect("addr"))),
            None => std::future::pending().await,
        }
    }
}

pub fn flaky_receiver(
    fail: usize,
) -> (
    mpsc::Sender<DuplexStream>,
    ReceiverHandle,
    Arc<ReceiverMetrics>,
) {
    let (tx, rx) = mpsc::channel(4);
    let metrics = ReceiverMetrics::unregistered();
    let r = Receiver::new(
        ReceiverConfig::new(secret()),
        Recorder::new(),
        metrics.clone(),
    );
    let h = r.serve(Flaky {
        fail,
        calls: AtomicUsize::new(0),
        conns: Mutex::new(rx),
    });
    (tx, h, Arc::new(metrics))
}

/// `count` unsigned POSTs pipelined on one connection; the statuses.
pub async fn forged_posts(tx: &mpsc::Sender<DuplexStream>, count: usize) -> Vec<u16> {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    tx.send(server).await.expect("listener alive");
    let body = br#"{"id":"x"}"#;
    let req = format!(
        "POST {DEFAULT_PATH} HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).expect("utf-8")
    );
    // Fits the 64 KiB pipe both ways: written at once, answered in order.
    for _ in 0..count {
        client.write_all(req.as_bytes()).await.expect("write");
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut statuses = Vec::new();
    while statuses.len() < count {
        let n = tokio::time::timeout(Duration::from_secs(600), client.read(&mut buf))
            .await
            .expect("answers in time")
            .expect("read");
        assert!(n > 0, "closed after {} answers", statuses.len());
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        statuses = text
            .match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| text[i + 9..i + 12].parse().ok())
            .collect();
    }
    statuses
}

// ---- Log capture ----

/// Everything a test's tracing subscriber wrote.
#[derive(Clone, Default)]
pub struct LogBuf(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().clone()).expect("utf-8 log")
    }
}

/// Sends this thread's INFO+ events to a buffer until the guard drops.
///
/// Only sound in a test binary whose other tests never hit the callsites
/// the test asserts on: tracing caches a callsite's interest when it is
/// first hit, and a callsite first hit on another thread (no subscriber
/// there) can be cached as "never" in a race with `set_default`. That is
/// why the log tests live in `logs.rs`, apart from the tests that make the
/// same lines happen.
pub fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    let buf = LogBuf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (buf, tracing::subscriber::set_default(sub))
}
