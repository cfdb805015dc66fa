//! The `kubernetes` mode against a local HTTP server (hyper) that speaks
//! the EndpointSlice list + watch API: no real API server runs here
//! (vendor-notes/kubernetes.md). Checks the request path, the label
//! selector, the bearer token, ready/not-ready endpoints, named ports, and
//! a watch event changing the set.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use inferadb_discovery::{Discovery, DiscoveryConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "test-token-not-a-secret";

fn slice(name: &str, rv: &str, addrs: &[(&str, Option<bool>)]) -> serde_json::Value {
    serde_json::json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": name, "namespace": "inferadb", "resourceVersion": rv,
                     "labels": {"kubernetes.io/service-name": "inferadb-engine"}},
        "addressType": "IPv4",
        "endpoints": addrs.iter().map(|(a, ready)| serde_json::json!({
            "addresses": [a], "conditions": {"ready": ready}
        })).collect::<Vec<_>>(),
        "ports": [{"name": "metrics", "port": 9100, "protocol": "TCP"},
                  {"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

async fn api_server(watches: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let watches = watches.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let watches = watches.clone();
                    async move {
                        let ok_auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            == Some(&format!("Bearer {TOKEN}"));
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().unwrap_or("").to_string();
                        let reply = |code: u16, body: String| {
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(code)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        };
                        if !ok_auth {
                            return reply(
                                401,
                                r#"{"kind":"Status","message":"Unauthorized","code":401}"#.into(),
                            );
                        }
                        if path != "/apis/discovery.k8s.io/v1/namespaces/inferadb/endpointslices"
                            || !query.contains(
                                "labelSelector=kubernetes.io%2Fservice-name%3Dinferadb-engine",
                            )
                        {
                            return reply(
                                404,
                                format!(
                                    r#"{{"kind":"Status","message":"no {path}?{query}","code":404}}"#
                                ),
                            );
                        }
                        if !query.contains("watch=1") {
                            let list = serde_json::json!({
                                "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                                "metadata": {"resourceVersion": "100"},
                                "items": [
                                    slice("inferadb-engine-abc", "90", &[("10.1.0.1", Some(true)), ("10.1.0.2", None), ("10.1.0.3", Some(false))]),
                                ]
                            });
                            return reply(200, list.to_string());
                        }
                        assert!(query.contains("resourceVersion="), "{query}");
                        if watches.fetch_add(1, Ordering::SeqCst) == 0 {
                            // One watch: a second slice appears, a bookmark.
                            let mut body = serde_json::json!({"type": "ADDED", "object":
                                slice("inferadb-engine-def", "101", &[("10.1.0.4", Some(true))])})
                            .to_string();
                            body.push('\n');
                            body.push_str(r#"{"type":"BOOKMARK","object":{"kind":"EndpointSlice","metadata":{"resourceVersion":"102"}}}"#);
                            body.push('\n');
                            return reply(200, body);
                        }
                        // Later watches: nothing happens for a while.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        reply(200, String::new())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_list_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let watches = Arc::new(AtomicUsize::new(0));
    let addr = api_server(watches.clone()).await;
    let config: DiscoveryConfig = serde_json::from_value(serde_json::json!({
        "mode": {"type": "kubernetes", "local_cluster": "us-west-1", "namespace": "inferadb",
                 "service_name": "inferadb-engine", "port": "http",
                 "api_url": format!("http://{addr}"), "token_file": token.to_str().unwrap()}
    }))
    .unwrap();
    let d = Discovery::builder(config).start().unwrap();
    let mut rx = d.subscribe();
    // List: ready and unset-ready endpoints on the named port; then the
    // watch adds the second slice's endpoint.
    let want = ["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.4:8080"];
    let set = tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| s.cluster("us-west-1").count() == want.len()),
    )
    .await
    .unwrap_or_else(|_| panic!("watch applied: {:?}", d.current()))
    .unwrap()
    .clone();
    let got: Vec<String> = set
        .cluster("us-west-1")
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(got, want);
    assert!(watches.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        d.metrics()
            .discovered_endpoints
            .with_label_values(&["us-west-1"])
            .get(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_counts_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "wrong").unwrap();
    let addr = api_server(Arc::new(AtomicUsize::new(0))).await;
    let config: DiscoveryConfig = serde_json::from_value(serde_json::json!({
        "mode": "kubernetes", "namespace": "inferadb", "service_name": "inferadb-engine",
        "api_url": format!("http://{addr}"), "token_file": token.to_str().unwrap()
    }))
    .unwrap();
    let d = Discovery::builder(config).start().unwrap();
    let set = d.ready().await.unwrap();
    assert!(set.endpoints.is_empty());
    assert!(
        d.metrics()
            .cluster_discovery_failures
            .with_label_values(&["local", "kubernetes_api"])
            .get()
            >= 1
    );
    // A configured token file that does not exist is a start error.
    let config: DiscoveryConfig = serde_json::from_value(serde_json::json!({
        "mode": "kubernetes", "namespace": "inferadb", "service_name": "x",
        "api_url": format!("http://{addr}"), "token_file": "/nonexistent/token"
    }))
    .unwrap();
    let e = Discovery::builder(config).start().unwrap_err();
    assert!(e.to_string().contains("/nonexistent/token"), "{e}");
}
