//! Hostile load on the receiver (issue 16): a listener that keeps failing
//! does not stop it, and a flood of forged webhooks does not flood the log.

use inferadb_invalidation::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Mutex};

const SECRET: &str = "test-secret-0123456789abcdef";

/// Fails `accept()` `fail` times (EMFILE), then hands out in-memory
/// connections.
struct Flaky {
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

fn receiver(
    fail: usize,
) -> (
    mpsc::Sender<DuplexStream>,
    ReceiverHandle,
    Arc<ReceiverMetrics>,
) {
    let (tx, rx) = mpsc::channel(4);
    let metrics = ReceiverMetrics::unregistered();
    let r = Receiver::new(
        ReceiverConfig::new(Secret::from_text(SECRET).expect("secret")),
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
async fn forged_posts(tx: &mpsc::Sender<DuplexStream>, count: usize) -> Vec<u16> {
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

/// Issue 16 finding 9: `Receiver::serve` stopped for good after 50 accept
/// errors in a row. Now it backs off and keeps accepting.
#[tokio::test(start_paused = true)]
async fn receiver_survives_a_run_of_accept_errors() {
    let (tx, _h, _m) = receiver(120);
    // Fires once the receiver gets past the failures (paused clock: the
    // backoff sleeps advance it).
    let statuses = tokio::time::timeout(Duration::from_secs(600), forged_posts(&tx, 1))
        .await
        .expect("served within the backoff");
    assert_eq!(statuses, vec![401]);
}

/// Issue 16 finding 6: each rejected webhook wrote a WARN line; 2,000 bad
/// requests, 2,000 lines. Now: a bounded number of lines, each carrying
/// the count it stands for, and the metric counts every request.
#[tokio::test(start_paused = true)]
async fn forged_webhook_flood_is_logged_a_bounded_number_of_times() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Buf(Arc<parking_lot::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _g = tracing::subscriber::set_default(sub);

    let (tx, _h, _m) = receiver(0);
    let mut answered = 0;
    // 2,000 forged requests spread over 25 s (10 rounds, 2.5 s apart).
    for _ in 0..10 {
        let statuses = forged_posts(&tx, 200).await;
        assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
        answered += statuses.len();
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    assert_eq!(answered, 2000);
    let log = String::from_utf8(buf.0.lock().clone()).expect("utf-8");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Rejected unauthenticated"))
        .collect();
    // One per 10 s interval: at most 3 over 25 s.
    assert!(
        (1..=4).contains(&lines.len()),
        "{} lines:\n{log}",
        lines.len()
    );
    assert!(
        lines.iter().skip(1).all(|l| l.contains("suppressed=")),
        "{log}"
    );
    assert!(
        lines[1..].iter().any(|l| !l.contains("suppressed=0")),
        "{log}"
    );
}
