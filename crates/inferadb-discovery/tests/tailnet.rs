//! Discovery over real MagicDNS: nodes of three clusters join our
//! coordinator in-process, each with an auth key tagged
//! `tag:inferadb-<cluster>` and the seed's host names; a control node of
//! us-west-1 discovers every engine per cluster through `node.resolve`,
//! health-checks them over the tunnels, sees a killed eu-west-1 engine go
//! unhealthy within the health-check window and leave the set, and
//! exports its metrics (promtool-clean, with the node's own).

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::admin::{authkey_create, AuthKeyCreateArgs};
use coordinator::server::Server;
use coordinator::Store;
use inferadb_discovery::tailnet_metrics::TailnetCollector;
use inferadb_discovery::{encode_text, Discovery, DiscoveryConfig, EndpointSet};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tailnet::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

fn key(dir: &Path, cluster: &str) -> String {
    let store = Store::open(dir).unwrap();
    let args = AuthKeyCreateArgs {
        reusable: true,
        ephemeral: false,
        tags: vec![format!("tag:inferadb-{cluster}")],
        expiry: Some("1h".into()),
    };
    authkey_create(&store, &args, SystemTime::now())
        .unwrap()
        .key
}

async fn join(url: &str, key: &str, host: &str) -> Node {
    Node::builder()
        .control_url(url)
        .auth_key(key)
        .hostname(host)
        .ephemeral(true)
        .listen("127.0.0.1:0".parse().unwrap())
        .timeout(Duration::from_secs(30))
        .up()
        .await
        .unwrap_or_else(|e| panic!("{host} joins: {e}"))
}

/// `/healthz` → 200 on the node's port 8080.
fn serve_health(node: &Node) {
    let l = node.tcp_listen(8080).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
}

fn by_cluster(set: &EndpointSet, healthy_only: bool) -> BTreeMap<String, BTreeSet<SocketAddr>> {
    let mut m: BTreeMap<String, BTreeSet<SocketAddr>> = BTreeMap::new();
    for e in &set.endpoints {
        if e.healthy || !healthy_only {
            m.entry(e.cluster.clone()).or_default().insert(e.addr);
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clusters_over_magicdns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let server = Server::builder(store)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());

    // The seed's topology.
    let topology: &[(&str, &[&str])] = &[
        (
            "us-west-1",
            &[
                "inferadb-engine-0",
                "inferadb-engine-1",
                "inferadb-control-0",
            ],
        ),
        (
            "eu-west-1",
            &[
                "inferadb-engine-0",
                "inferadb-engine-1",
                "inferadb-control-0",
            ],
        ),
        ("ap-southeast-1", &["inferadb-engine-0"]),
    ];
    let mut nodes: BTreeMap<(String, String), Node> = BTreeMap::new();
    for (cluster, hosts) in topology {
        let k = key(dir.path(), cluster);
        for h in *hosts {
            let n = join(&url, &k, h).await;
            if h.starts_with("inferadb-engine") {
                serve_health(&n);
            }
            nodes.insert((cluster.to_string(), h.to_string()), n);
        }
    }
    let total = nodes.len();
    let control = nodes[&("us-west-1".to_string(), "inferadb-control-0".to_string())].clone();
    let mut rx = control.watch_netmap().unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|m| m.peers().len() >= total - 1),
    )
    .await
    .expect("every peer in the netmap")
    .unwrap();

    // The seed's control config (plus health checks).
    let config: DiscoveryConfig = serde_json::from_value(serde_json::json!({
        "mode": {
            "type": "tailscale",
            "local_cluster": "us-west-1",
            "remote_clusters": [
                {"name": "eu-west-1", "tailscale_domain": "eu-west-1.ts.net", "service_name": "inferadb-engine", "port": 8080},
                {"name": "ap-southeast-1", "tailscale_domain": "ap-southeast-1.ts.net", "service_name": "inferadb-engine", "port": 8080}
            ]
        },
        "health_check": {"interval_ms": 300, "timeout_ms": 1000, "unhealthy_threshold": 2, "healthy_threshold": 1}
    }))
    .unwrap();
    let health_window = config.health_check.as_ref().unwrap().detection_window();
    let registry = prometheus::Registry::new();
    TailnetCollector::register(&control, &registry).unwrap();
    // Resolver and connector only, not `.node()`: without the netmap
    // trigger a killed engine stays in the set until its health checks
    // mark it (the path this test is about; the netmap path is
    // crates/inferadb-mesh/tests/seed_topology.rs).
    let d = Discovery::builder(config)
        .resolver(control.clone())
        .connector(control.clone())
        .registry(&registry)
        .unwrap()
        .start()
        .unwrap();

    let engine = |c: &str, i: usize| {
        let n = &nodes[&(c.to_string(), format!("inferadb-engine-{i}"))];
        SocketAddr::new(n.ipv4().unwrap(), 8080)
    };
    let want: BTreeMap<String, BTreeSet<SocketAddr>> = [
        (
            "us-west-1",
            vec![engine("us-west-1", 0), engine("us-west-1", 1)],
        ),
        (
            "eu-west-1",
            vec![engine("eu-west-1", 0), engine("eu-west-1", 1)],
        ),
        ("ap-southeast-1", vec![engine("ap-southeast-1", 0)]),
    ]
    .into_iter()
    .map(|(c, v)| (c.to_string(), v.into_iter().collect()))
    .collect();
    let set = d.ready().await.unwrap();
    assert_eq!(
        by_cluster(&set, false),
        want,
        "exactly the engines, per cluster"
    );

    // Health checks over the tunnels keep them all healthy.
    tokio::time::sleep(health_window).await;
    assert_eq!(by_cluster(&d.current(), true), want);
    let m = d.metrics();
    assert_eq!(
        m.discovered_endpoints
            .with_label_values(&["eu-west-1"])
            .get(),
        2
    );
    assert_eq!(m.clusters_total.get(), 3);

    // Kill eu-west-1's inferadb-engine-1: unhealthy within the window.
    let dead = engine("eu-west-1", 1);
    let victim = nodes
        .remove(&("eu-west-1".to_string(), "inferadb-engine-1".to_string()))
        .unwrap();
    victim.shutdown().await;
    drop(victim);
    let t = Instant::now();
    let mut changes = d.subscribe();
    tokio::time::timeout(
        health_window + Duration::from_secs(2),
        changes.wait_for(|s| s.endpoints.iter().any(|e| e.addr == dead && !e.healthy)),
    )
    .await
    .unwrap_or_else(|_| panic!("not unhealthy within {health_window:?}: {:?}", d.current()))
    .unwrap();
    eprintln!(
        "killed engine unhealthy after {:?} (window {health_window:?})",
        t.elapsed()
    );
    assert_eq!(
        m.discovered_endpoints
            .with_label_values(&["eu-west-1"])
            .get(),
        1
    );
    // …and leaves the set at the next refresh once control marks it
    // offline (MagicDNS drops offline pods from the service).
    let left = async {
        loop {
            let s = d.refresh_now().await.unwrap();
            if !s.endpoints.iter().any(|e| e.addr == dead) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let s = tokio::time::timeout(Duration::from_secs(60), left)
        .await
        .expect("left the set");
    let mut want_after = want.clone();
    want_after.get_mut("eu-west-1").unwrap().remove(&dead);
    assert_eq!(by_cluster(&s, false), want_after);

    // The exposition: the seed's metrics and the node's, promtool-clean.
    let text = encode_text(&registry).unwrap();
    for needle in [
        "inferadb_tailscale_dns_resolutions_total{hostname=\"inferadb-engine.eu-west-1.ts.net\",result=\"success\"}",
        "inferadb_tailscale_discovered_endpoints{cluster=\"ap-southeast-1\"} 1",
        "inferadb_tailscale_clusters_total 3",
        "inferadb_tailnet_control_state{state=\"Running\"} 1",
        "inferadb_tailnet_peer_rx_bytes_total{node_key=",
        "inferadb_tailnet_peer_path{node_key=",
        "inferadb_tailnet_packet_filter_drops_total{reason=\"no_rule\"}",
        "inferadb_tailnet_dns_queries_total{result=\"answered_locally\"}",
        "inferadb_tailnet_derp_connected{region=\"900\"} 1",
        "inferadb_tailnet_derp_regions_open 1",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
    assert!(text.contains("peer=\"inferadb-engine-0\""), "{text}");
    common::promtool_check(&text);

    drop(d);
    for n in nodes.values() {
        n.shutdown().await;
    }
    server.shutdown().await;
}
