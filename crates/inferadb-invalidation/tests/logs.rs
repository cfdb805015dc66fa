//! Log lines users rely on: the seed's verification line, and a flood of
//! forged webhooks logged a bounded number of times.
//!
//! These tests capture logs with a thread-local subscriber, so they live in
//! their own binary: see `common::capture_logs` for the race that made the
//! flood test fail when a concurrently running test hit the same callsite.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{capture_logs, flaky_receiver, forged_posts, secret};
use inferadb_invalidation::*;
use std::net::SocketAddr;
use std::time::Duration;

async fn engine(rec: Recorder) -> (SocketAddr, ReceiverHandle) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let r = Receiver::new(
        ReceiverConfig::new(secret()),
        rec,
        ReceiverMetrics::unregistered(),
    );
    (addr, r.serve(l))
}

/// The seed's verification step greps the engine log for this line.
#[tokio::test]
async fn logs_the_seed_line() {
    let (buf, _g) = capture_logs();
    let rec = Recorder::new();
    let (addr, _h) = engine(rec.clone()).await;
    let sender = Sender::new(
        TcpConnect,
        secret(),
        Targets::fixed([Target::new("eu-west-1", addr)]),
        SenderConfig::default(),
        SenderMetrics::unregistered(),
    );
    let report = sender
        .send(&Invalidation::vault_created("12345"))
        .await
        .expect("send");
    assert!(report.all_delivered());
    let log = buf.text();
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"INFO Vault cache invalidation received vault_id=12345"),
        "{log}"
    );
    assert!(!log.contains(common::SECRET));
}

/// Issue 16 finding 6: each rejected webhook wrote a WARN line; 2,000 bad
/// requests, 2,000 lines. Now: a bounded number of lines, each carrying
/// the count it stands for, and the metric counts every request.
#[tokio::test(start_paused = true)]
async fn forged_webhook_flood_is_logged_a_bounded_number_of_times() {
    let (buf, _g) = capture_logs();
    let (tx, _h, _m) = flaky_receiver(0);
    let mut answered = 0;
    // 2,000 forged requests spread over 25 s (10 rounds, 2.5 s apart).
    for _ in 0..10 {
        let statuses = forged_posts(&tx, 200).await;
        assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
        answered += statuses.len();
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    assert_eq!(answered, 2000);
    let log = buf.text();
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
