//! One sender, several receivers on loopback TCP: exactly-once delivery
//! despite timeouts, forged webhooks, bounded concurrency and metrics. (The
//! seed's log line is checked in `logs.rs`.)

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{black_hole_first, raw_post, secret, within};
use inferadb_invalidation::signature::sign;
use inferadb_invalidation::*;
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

async fn engine<I: Invalidate>(inv: I, metrics: ReceiverMetrics) -> (SocketAddr, ReceiverHandle) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let r = Receiver::new(ReceiverConfig::new(secret()), inv, metrics);
    (addr, r.serve(l))
}

fn scrape(reg: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A recorder whose first invalidation takes `delay` (longer than the
/// sender's timeout).
fn slow_first(rec: Recorder, delay: Duration) -> impl Invalidate {
    let first = Arc::new(AtomicBool::new(true));
    from_fn(move |ev: Invalidation| {
        let rec = rec.clone();
        let slow = first.swap(false, Ordering::SeqCst);
        async move {
            if slow {
                tokio::time::sleep(delay).await;
            }
            rec.invalidate(&ev).await
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_gets_each_event_exactly_once_despite_timeouts() {
    let reg = Registry::new();
    let rmetrics = ReceiverMetrics::new(&reg).unwrap();
    let smetrics = SenderMetrics::new(&reg).unwrap();

    // Four engines in two clusters: e0 answers its first request only
    // after the sender's timeout (it did get it); e1 sits behind a proxy
    // that swallows the first connection (it never got it).
    let recs: Vec<Recorder> = (0..4).map(|_| Recorder::new()).collect();
    let (a0, _h0) = engine(
        slow_first(recs[0].clone(), Duration::from_millis(700)),
        rmetrics.clone(),
    )
    .await;
    let (a1, _h1) = engine(recs[1].clone(), rmetrics.clone()).await;
    let a1 = black_hole_first(a1, 1).await;
    let (a2, _h2) = engine(recs[2].clone(), rmetrics.clone()).await;
    let (a3, _h3) = engine(recs[3].clone(), rmetrics.clone()).await;
    let targets = vec![
        Target::new("eu-west-1", a0),
        Target::new("eu-west-1", a1),
        Target::new("ap-southeast-1", a2),
        Target::new("us-west-1", a3),
    ];

    let config = SenderConfig {
        timeout: Duration::from_millis(400),
        retry_attempts: 2,
        backoff_initial: Duration::from_millis(50),
        ..SenderConfig::default()
    };
    let sender = Sender::new(
        TcpConnect,
        secret(),
        Targets::fixed(targets.clone()),
        config,
        smetrics,
    );

    let events: Vec<Invalidation> = (0..3)
        .map(|i| Invalidation::vault_created(format!("1234{i}")).with_origin("us-west-1"))
        .collect();
    for (i, ev) in events.iter().enumerate() {
        let report = within(20, "a fan-out", sender.send(ev)).await.unwrap();
        assert!(report.all_delivered(), "{report:#?}");
        assert_eq!(report.deliveries.len(), 4);
        for d in &report.deliveries {
            let retried = i == 0 && (d.target.addr == a0 || d.target.addr == a1);
            // 2 for these on a quiet machine; a loaded one may time out
            // more often, which must not change what the engines see.
            if retried {
                assert!(d.attempts >= 2, "{d:#?}");
            }
        }
    }
    // The slow engine's first invalidation finishes after the retry came
    // in; the retry waited for it and was answered as a duplicate.
    for (n, rec) in recs.iter().enumerate() {
        assert!(rec.wait_for(3, Duration::from_secs(5)).await, "engine {n}");
        for ev in &events {
            assert_eq!(rec.count_of(&ev.id), 1, "engine {n}, event {}", ev.id);
        }
        assert_eq!(rec.events().len(), 3, "engine {n}");
    }

    let text = scrape(&reg);
    let v = |s: &str| value(&text, s);
    assert_eq!(
        v(r#"inferadb_cache_invalidation_deliveries_total{cluster="eu-west-1",result="success"}"#),
        6.0,
        "{text}"
    );
    assert_eq!(
        v(
            r#"inferadb_cache_invalidation_deliveries_total{cluster="ap-southeast-1",result="success"}"#
        ),
        3.0
    );
    assert_eq!(
        v(r#"inferadb_cache_invalidation_deliveries_total{cluster="us-west-1",result="success"}"#),
        3.0
    );
    assert!(!text.contains(r#"result="failure""#), "{text}");
    let timeouts = r#"inferadb_cache_invalidation_attempt_failures_total{cluster="eu-west-1",reason="timeout"}"#;
    assert!(v(timeouts) >= 2.0, "{text}");
    assert_eq!(
        v(r#"inferadb_cache_invalidation_delivery_duration_seconds_count{cluster="eu-west-1"}"#),
        6.0
    );
    assert_eq!(v("inferadb_cache_invalidation_in_flight"), 0.0);
    assert_eq!(
        v(r#"inferadb_cache_invalidation_received_total{result="invalidated"}"#),
        12.0
    );
    let dups = r#"inferadb_cache_invalidation_received_total{result="duplicate"}"#;
    assert!(v(dups) >= 1.0, "{text}");
    // Rendered metric names carry HELP/TYPE lines.
    assert!(text.contains("# TYPE inferadb_cache_invalidation_deliveries_total counter"));
    assert!(text.contains("# TYPE inferadb_cache_invalidation_delivery_duration_seconds histogram"));
    // The secret appears nowhere.
    assert!(!text.contains(common::SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_webhooks_get_401_and_are_counted() {
    let reg = Registry::new();
    let rmetrics = ReceiverMetrics::new(&reg).unwrap();
    let rec = Recorder::new();
    let (addr, _h) = engine(rec.clone(), rmetrics).await;
    let ev = Invalidation::vault_created("666");
    let body = serde_json::to_vec(&ev).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = sign(&[secret()], now, &body);
    let other = Secret::from_text("another-secret-fedcba9876543210").unwrap();
    let path = DEFAULT_PATH;
    let h = |v: String| vec![("X-InferaDB-Signature", v)];

    // No header, a wrong secret, a stale timestamp, a future one, a
    // tampered body, a re-stamped header, garbage.
    assert_eq!(raw_post(addr, path, &[], &body).await, 401);
    assert_eq!(
        raw_post(addr, path, &h(sign(&[other], now, &body)), &body).await,
        401
    );
    assert_eq!(
        raw_post(addr, path, &h(sign(&[secret()], now - 600, &body)), &body).await,
        401
    );
    assert_eq!(
        raw_post(addr, path, &h(sign(&[secret()], now + 600, &body)), &body).await,
        401
    );
    let mut tampered = body.clone();
    let pos = tampered.iter().position(|&b| b == b'6').unwrap();
    tampered[pos] = b'7';
    assert_eq!(raw_post(addr, path, &h(good.clone()), &tampered).await, 401);
    let restamped = good.replacen(&format!("t={now}"), &format!("t={}", now + 1), 1);
    assert_eq!(raw_post(addr, path, &h(restamped), &body).await, 401);
    assert_eq!(
        raw_post(addr, path, &h("t=1,v1=zz".into()), &body).await,
        401
    );
    assert!(rec.events().is_empty(), "nothing forged reached the cache");

    // Wrong path and method; a signed non-event; then the real one, twice.
    assert_eq!(
        raw_post(addr, "/v1/other", &h(good.clone()), &body).await,
        404
    );
    let junk = br#"{"hello":1}"#;
    let junk_sig = sign(&[secret()], now, junk);
    assert_eq!(raw_post(addr, path, &h(junk_sig), junk).await, 400);
    assert_eq!(raw_post(addr, path, &h(good.clone()), &body).await, 200);
    // A replay inside the window is a duplicate: applied once.
    assert_eq!(raw_post(addr, path, &h(good), &body).await, 200);
    assert_eq!(rec.count_of(&ev.id), 1);

    let text = scrape(&reg);
    let v = |s: &str| value(&text, s);
    let reason = |r: &str| {
        v(&format!(
            r#"inferadb_cache_invalidation_auth_failures_total{{reason="{r}"}}"#
        ))
    };
    assert_eq!(reason("missing"), 1.0, "{text}");
    assert_eq!(reason("bad_signature"), 3.0);
    assert_eq!(reason("stale"), 2.0);
    assert_eq!(reason("malformed"), 1.0);
    assert_eq!(
        v(r#"inferadb_cache_invalidation_received_total{result="unauthorized"}"#),
        7.0
    );
    assert_eq!(
        v(r#"inferadb_cache_invalidation_received_total{result="bad_request"}"#),
        1.0
    );
    let dups = r#"inferadb_cache_invalidation_received_total{result="duplicate"}"#;
    assert!(v(dups) >= 1.0, "{text}");

    // A sender with the wrong secret: refused once, not retried.
    let wrong = Sender::new(
        TcpConnect,
        Secret::from_text("not-the-shared-secret-000000").unwrap(),
        Targets::fixed([Target::new("eu-west-1", addr)]),
        SenderConfig::from_seed(2000, 2),
        SenderMetrics::unregistered(),
    );
    let report = wrong.send(&Invalidation::vault_created("7")).await.unwrap();
    let d = &report.deliveries[0];
    assert_eq!(d.attempts, 1);
    assert!(
        matches!(d.result, Err(AttemptError::Status(s)) if s.as_u16() == 401),
        "{d:?}"
    );
    assert!(!format!("{report:?}").contains("not-the-shared-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded() {
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut addrs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (now, peak) = (now.clone(), peak.clone());
        let inv = from_fn(move |_ev: Invalidation| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        });
        let (a, h) = engine(inv, ReceiverMetrics::unregistered()).await;
        addrs.push(Target::new("eu-west-1", a));
        handles.push(h);
    }
    let metrics = SenderMetrics::unregistered();
    let sender = Sender::new(
        TcpConnect,
        secret(),
        Targets::fixed(addrs),
        SenderConfig {
            max_concurrency: 3,
            ..SenderConfig::default()
        },
        metrics.clone(),
    );
    // Two events at once share the limit.
    let (ea, eb) = (
        Invalidation::vault_created("a"),
        Invalidation::vault_created("b"),
    );
    let (r1, r2) = within(20, "two fan-outs", async {
        tokio::join!(sender.send(&ea), sender.send(&eb))
    })
    .await;
    assert!(r1.unwrap().all_delivered());
    assert!(r2.unwrap().all_delivered());
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "at most 3 at once, and 3 used"
    );
    assert_eq!(metrics.in_flight.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_engine_fails_after_retries_without_blocking_others() {
    let reg = Registry::new();
    let rec = Recorder::new();
    let (good, _h) = engine(rec.clone(), ReceiverMetrics::unregistered()).await;
    // A port with nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sender = Sender::new(
        TcpConnect,
        secret(),
        Targets::fixed([
            Target::new("eu-west-1", dead),
            Target::new("us-west-1", good),
        ]),
        SenderConfig {
            retry_attempts: 2,
            backoff_initial: Duration::from_millis(20),
            ..SenderConfig::default()
        },
        SenderMetrics::new(&reg).unwrap(),
    );
    let report = sender
        .send(&Invalidation::vault_created("9"))
        .await
        .unwrap();
    assert_eq!(report.failures().count(), 1);
    let failed = report.failures().next().unwrap();
    assert_eq!(failed.target.addr, dead);
    assert_eq!(failed.attempts, 3);
    assert!(matches!(failed.result, Err(AttemptError::Connect(_))));
    assert_eq!(rec.events().len(), 1);
    let text = scrape(&reg);
    assert_eq!(
        value(
            &text,
            r#"inferadb_cache_invalidation_deliveries_total{cluster="eu-west-1",result="failure"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"inferadb_cache_invalidation_attempt_failures_total{cluster="eu-west-1",reason="connect"}"#
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_invalidation_is_retried_and_applied_once() {
    let rec = Recorder::new();
    let failed_once = Arc::new(AtomicBool::new(false));
    let inv = {
        let rec = rec.clone();
        from_fn(move |ev: Invalidation| {
            let rec = rec.clone();
            let fail = !failed_once.swap(true, Ordering::SeqCst);
            async move {
                if fail {
                    return Err("cache backend unavailable".into());
                }
                rec.invalidate(&ev).await
            }
        })
    };
    let reg = Registry::new();
    let (addr, _h) = engine(inv, ReceiverMetrics::new(&reg).unwrap()).await;
    let sender = Sender::new(
        TcpConnect,
        secret(),
        Targets::fixed([Target::new("eu-west-1", addr)]),
        SenderConfig {
            backoff_initial: Duration::from_millis(10),
            ..SenderConfig::default()
        },
        SenderMetrics::unregistered(),
    );
    let ev = Invalidation::vault_created("42");
    let report = sender.send(&ev).await.unwrap();
    assert!(report.all_delivered());
    assert_eq!(report.deliveries[0].attempts, 2);
    assert_eq!(rec.count_of(&ev.id), 1);
    let text = scrape(&reg);
    assert_eq!(
        value(
            &text,
            r#"inferadb_cache_invalidation_received_total{result="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"inferadb_cache_invalidation_received_total{result="invalidated"}"#
        ),
        1.0
    );

    // Oversized bodies are refused before any signature work.
    let big = vec![b' '; 70 * 1024];
    let sig = sign(&[secret()], 0, &big);
    assert_eq!(
        raw_post(addr, DEFAULT_PATH, &[("X-InferaDB-Signature", sig)], &big).await,
        413
    );
}
