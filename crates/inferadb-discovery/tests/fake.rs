//! Discovery against a fake resolver and loopback HTTP servers: TTL
//! refresh and the change stream, health transitions, metric values (and
//! `promtool check metrics` on a real exposition), the seed's log lines.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use inferadb_discovery::{
    encode_text, ClusterTarget, Discovery, DiscoveryConfig, DiscoveryMode, EndpointSet,
    HealthCheckConfig, LocalCluster, Resolve, ResolveFailure, TailscaleConfig, TcpConnector,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

mod common;
use common::promtool_check;

#[derive(Debug, thiserror::Error)]
enum FakeError {
    #[error("no such name")]
    NotFound,
    #[error("timed out")]
    Timeout,
}

/// Name → addresses, or `Err(timeout?)`.
type Answers = HashMap<String, Result<Vec<IpAddr>, bool>>;

#[derive(Clone, Default)]
struct FakeResolver(Arc<Mutex<Answers>>);

impl FakeResolver {
    fn set(&self, name: &str, ips: &[&str]) {
        self.0.lock().insert(
            name.into(),
            Ok(ips.iter().map(|s| s.parse().unwrap()).collect()),
        );
    }
    /// `timeout`: a timeout, else NXDOMAIN.
    fn fail(&self, name: &str, timeout: bool) {
        self.0.lock().insert(name.into(), Err(timeout));
    }
}

impl Resolve for FakeResolver {
    type Error = FakeError;
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, FakeError> {
        match self.0.lock().get(name) {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(true)) => Err(FakeError::Timeout),
            _ => Err(FakeError::NotFound),
        }
    }
    fn classify(e: &FakeError) -> ResolveFailure {
        match e {
            FakeError::NotFound => ResolveFailure::NotFound,
            FakeError::Timeout => ResolveFailure::Timeout,
        }
    }
}

/// A loopback HTTP server answering `/healthz` 200 while `up`, else 503.
struct Pod {
    up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn pod(addr: SocketAddr) -> Pod {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let up2 = up.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let up = up2.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if up.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            });
        }
    });
    Pod { up, task }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn target(name: &str, port: u16) -> ClusterTarget {
    ClusterTarget {
        name: name.into(),
        tailscale_domain: format!("{name}.ts.net"),
        service_name: "inferadb-engine".into(),
        port,
    }
}

fn config(port: u16, ttl: Duration, health: Option<HealthCheckConfig>) -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DiscoveryMode::Tailscale(TailscaleConfig {
            local_cluster: "us-west-1".into(),
            local: LocalCluster::Tailscale(target("us-west-1", port)),
            remote_clusters: vec![target("eu-west-1", port), target("ap-southeast-1", port)],
        }),
        http_endpoints: vec![],
        cache_ttl: ttl,
        health_check: health,
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<EndpointSet>>,
    secs: u64,
    what: &str,
    f: impl FnMut(&Arc<EndpointSet>) -> bool,
) -> Arc<EndpointSet> {
    let got = match tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(f)).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    got.unwrap_or_else(|| panic!("{what}: not within {secs} s; now {:?}", rx.borrow()))
}

fn addrs(set: &EndpointSet, cluster: &str) -> Vec<String> {
    set.cluster(cluster).map(|e| e.addr.to_string()).collect()
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);
impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).to_string()
    }
}

#[tokio::test]
async fn ttl_refresh_change_stream_metrics_and_logs() {
    let logs = Logs::default();
    let w = logs.clone();
    // Global, not thread-local: a callsite first hit on another test's
    // thread would otherwise cache "nobody listens" for this one too.
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .finish(),
    )
    .expect("the only global subscriber of this test binary");
    let r = FakeResolver::default();
    r.set(
        "inferadb-engine.us-west-1.ts.net",
        &["100.64.0.1", "100.64.0.2"],
    );
    r.set(
        "inferadb-engine.eu-west-1.ts.net",
        &["100.64.1.1", "100.64.1.2", "fd7a:115c:a1e0::11"],
    );
    r.fail("inferadb-engine.ap-southeast-1.ts.net", false);
    let registry = prometheus::Registry::new();
    let d = Discovery::builder(config(8080, Duration::from_secs(1), None))
        .resolver(r.clone())
        .registry(&registry)
        .unwrap()
        .start()
        .unwrap();
    let set = d.ready().await.unwrap();
    // Failure series exist at 0 for clusters that have not failed, so a
    // rate() over them reads 0 instead of no data.
    let exposition = encode_text(&registry).unwrap();
    assert!(
        exposition.contains("inferadb_tailscale_cluster_discovery_failures_total{cluster=\"us-west-1\",reason=\"timeout\"} 0"),
        "{exposition}"
    );
    assert_eq!(
        addrs(&set, "us-west-1"),
        ["100.64.0.1:8080", "100.64.0.2:8080"]
    );
    // IPv4 preferred: one address per pod.
    assert_eq!(
        addrs(&set, "eu-west-1"),
        ["100.64.1.1:8080", "100.64.1.2:8080"]
    );
    assert_eq!(addrs(&set, "ap-southeast-1"), Vec::<String>::new());
    assert!(set.endpoints.iter().all(|e| e.healthy));
    let m = d.metrics();
    assert_eq!(m.clusters_total.get(), 3);
    assert_eq!(
        m.discovered_endpoints
            .with_label_values(&["eu-west-1"])
            .get(),
        2
    );
    assert_eq!(
        m.discovered_endpoints
            .with_label_values(&["ap-southeast-1"])
            .get(),
        0
    );
    assert_eq!(
        m.dns_resolutions
            .with_label_values(&["inferadb-engine.eu-west-1.ts.net", "success"])
            .get(),
        1
    );
    assert_eq!(
        m.cluster_discovery_failures
            .with_label_values(&["ap-southeast-1", "not_found"])
            .get(),
        1
    );

    // The TTL runs out: the background refresh sees a new pod and a
    // cluster coming up, and the change stream says so.
    let mut rx = d.subscribe();
    r.set("inferadb-engine.ap-southeast-1.ts.net", &["100.64.2.1"]);
    let set = wait_for(&mut rx, 5, "TTL refresh", |s| {
        s.cluster("ap-southeast-1").count() == 1
    })
    .await;
    assert!(set.refreshes >= 2);
    // A timeout keeps the cluster's previous members (stale beats empty).
    r.fail("inferadb-engine.eu-west-1.ts.net", true);
    let before = d
        .metrics()
        .cluster_discovery_failures
        .with_label_values(&["eu-west-1", "timeout"])
        .get();
    let set = d.refresh_now().await.unwrap();
    assert_eq!(set.cluster("eu-west-1").count(), 2);
    assert_eq!(
        d.metrics()
            .cluster_discovery_failures
            .with_label_values(&["eu-west-1", "timeout"])
            .get(),
        before + 1
    );
    // NXDOMAIN empties it (no pod online).
    r.fail("inferadb-engine.eu-west-1.ts.net", false);
    let set = d.refresh_now().await.unwrap();
    assert_eq!(set.cluster("eu-west-1").count(), 0);
    assert_eq!(
        m.discovered_endpoints
            .with_label_values(&["eu-west-1"])
            .get(),
        0
    );

    // Every cluster gone.
    r.fail("inferadb-engine.us-west-1.ts.net", false);
    r.fail("inferadb-engine.ap-southeast-1.ts.net", false);
    let set = d.refresh_now().await.unwrap();
    assert!(set.endpoints.is_empty());

    let text = logs.text();
    for line in [
        "INFO Discovered Tailscale endpoints across clusters cluster=eu-west-1 endpoint_count=2",
        "INFO Discovered Tailscale endpoints across clusters cluster=us-west-1 endpoint_count=2",
        "INFO Discovered Tailscale endpoints across clusters cluster=ap-southeast-1 endpoint_count=1",
        "WARN No Tailscale endpoints discovered across any cluster",
        "WARN Failed to resolve Tailscale hostname hostname=inferadb-engine.eu-west-1.ts.net cluster=eu-west-1 error=timed out",
        // Issue 17: a cluster not found yet at start-up is expected (regions
        // join one after another): INFO, the same text. Once found, losing
        // it is WARN (above).
        "INFO Failed to resolve Tailscale hostname hostname=inferadb-engine.ap-southeast-1.ts.net cluster=ap-southeast-1 error=no such name",
    ] {
        assert!(text.lines().any(|l| l.trim() == line), "missing {line:?} in\n{text}");
    }
    let ap: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("Failed to resolve Tailscale hostname hostname=inferadb-engine.ap-southeast-1.ts.net"))
        .collect();
    // Before it was ever found: INFO; found, then gone: WARN.
    assert!(ap.first().is_some_and(|l| l.starts_with("INFO ")), "{ap:?}");
    assert!(ap.last().is_some_and(|l| l.starts_with("WARN ")), "{ap:?}");

    // The exposition passes promtool.
    let exposition = encode_text(&registry).unwrap();
    for name in [
        "inferadb_tailscale_dns_resolutions_total{hostname=\"inferadb-engine.eu-west-1.ts.net\",result=\"success\"}",
        "inferadb_tailscale_discovered_endpoints{cluster=\"us-west-1\"} 0",
        "inferadb_tailscale_cluster_discovery_failures_total{cluster=\"ap-southeast-1\",reason=\"not_found\"}",
        "inferadb_tailscale_clusters_total 3",
    ] {
        assert!(exposition.contains(name), "{name} in\n{exposition}");
    }
    let not_found = exposition
        .lines()
        .find(|l| l.starts_with("inferadb_tailscale_cluster_discovery_failures_total{cluster=\"ap-southeast-1\",reason=\"not_found\"}"))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse::<f64>().ok());
    assert!(
        not_found.is_some_and(|v| v >= 1.0),
        "ap-southeast-1 not_found counted: {exposition}"
    );
    promtool_check(&exposition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_mark_unhealthy_and_back() {
    let port = free_port();
    let a: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let b: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    let pa = pod(a).await;
    let pb = pod(b).await;
    let r = FakeResolver::default();
    r.set(
        "inferadb-engine.eu-west-1.ts.net",
        &["127.0.0.2", "127.0.0.3"],
    );
    r.set("inferadb-engine.us-west-1.ts.net", &[]);
    let health = HealthCheckConfig {
        path: "/healthz".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    let d = Discovery::builder(config(port, Duration::from_secs(300), Some(health)))
        .resolver(r)
        .connector(TcpConnector)
        .start()
        .unwrap();
    let mut rx = d.subscribe();
    wait_for(&mut rx, 5, "discovery", |s| {
        s.cluster("eu-west-1").count() == 2
    })
    .await;

    // 503: unhealthy after two failed checks; the gauge follows.
    pa.up.store(false, Ordering::SeqCst);
    let set = wait_for(&mut rx, 5, "a unhealthy", |s| {
        s.endpoints.iter().any(|e| e.addr == a && !e.healthy)
    })
    .await;
    assert!(set.endpoints.iter().any(|e| e.addr == b && e.healthy));
    assert_eq!(set.healthy_by_cluster()["eu-west-1"], [b]);
    assert_eq!(
        d.metrics()
            .discovered_endpoints
            .with_label_values(&["eu-west-1"])
            .get(),
        1
    );
    // Back.
    pa.up.store(true, Ordering::SeqCst);
    wait_for(&mut rx, 5, "a healthy", |s| s.healthy().count() == 2).await;
    // A dead server (connection refused) goes unhealthy too, within the
    // detection window.
    pb.task.abort();
    let t = std::time::Instant::now();
    wait_for(&mut rx, 5, "b unhealthy", |s| {
        s.endpoints.iter().any(|e| e.addr == b && !e.healthy)
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_millis(100 * 2 + 500 + 500),
        "{:?}",
        t.elapsed()
    );
    pa.task.abort();
}

#[tokio::test]
async fn static_mode() {
    let c: DiscoveryConfig = serde_json::from_value(serde_json::json!({
        "mode": "none", "http_endpoints": ["http://127.0.0.1:9/x", "localhost:10"]
    }))
    .unwrap();
    let d = Discovery::builder(c).start().unwrap();
    let set = d.ready().await.unwrap();
    let got: Vec<String> = set.cluster("static").map(|e| e.addr.to_string()).collect();
    assert!(got.contains(&"127.0.0.1:9".to_string()), "{got:?}");
    assert!(got.iter().any(|a| a.ends_with(":10")), "{got:?}");
    assert_eq!(d.metrics().clusters_total.get(), 1);
}
