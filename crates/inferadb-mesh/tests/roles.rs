//! The engine and control roles in-process against the embedded
//! coordinator: control in us-west-1, an engine in us-west-1 and one in
//! eu-west-1, each from a YAML file with its own tagged auth key. Control
//! discovers both engines over MagicDNS; `POST /v1/vaults` (bearer token)
//! reaches both engines' receivers once; `/readyz` goes 200; `/metrics`
//! parses as Prometheus text with the seed's names.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::admin::{authkey_create, AuthKeyCreateArgs};
use coordinator::server::Server;
use coordinator::Store;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use inferadb_mesh::config::{ControlConfig, EngineConfig};
use inferadb_mesh::roles::{start_control, start_engine};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet_tests::within;

const SECRET: &str = "a webhook secret of more than 16 bytes";
const TOKEN: &str = "test-bearer-token";

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

fn mesh_yaml(url: &str, key: &str, host: &str, state: &Path) -> String {
    format!(
        "mesh:\n  control_url: {url}\n  auth_key: {key}\n  hostname: {host}\n  state_dir: {}\n  listen: 127.0.0.1:0\n  ephemeral: true\nhttp:\n  listen: 127.0.0.1:0\n",
        state.display()
    )
}

async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let body = if method == "POST" {
        r#"{"name": "test-vault"}"#
    } else {
        ""
    };
    let resp = sender
        .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}

/// Every sample line is `name{labels} value` with a number.
fn check_prometheus_text(text: &str) {
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (_, value) = line.rsplit_once(' ').expect("sample has a value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_creates_a_vault_and_every_engine_hears_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let coord = dir.path().join("coordinator");
    let (us_key, eu_key) = (key(&coord, "us-west-1"), key(&coord, "eu-west-1"));
    let server = Server::builder(Arc::new(Store::open(&coord).unwrap()))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());

    let engine_discovery = "auth:\n  discovery:\n    mode:\n      type: tailscale\n      local_cluster: us-west-1\n      remote_clusters:\n        - {name: eu-west-1, tailscale_domain: eu-west-1.ts.net, service_name: inferadb-control, port: 9090}\n";
    let mut engines = Vec::new();
    for (i, (cluster, k)) in [("us-west-1", &us_key), ("eu-west-1", &eu_key)]
        .into_iter()
        .enumerate()
    {
        let file = dir.path().join(format!("engine-{i}.yaml"));
        let local = engine_discovery.replace(
            "local_cluster: us-west-1",
            &format!("local_cluster: {cluster}"),
        );
        let local = if cluster == "eu-west-1" {
            local.replace(
                "{name: eu-west-1, tailscale_domain: eu-west-1.ts.net",
                "{name: us-west-1, tailscale_domain: us-west-1.ts.net",
            )
        } else {
            local
        };
        std::fs::write(
            &file,
            format!(
                "{}{local}cache_invalidation:\n  webhook_secret: {SECRET}\n",
                mesh_yaml(
                    &url,
                    k,
                    "inferadb-engine-0",
                    &dir.path().join(format!("e{i}"))
                )
            ),
        )
        .unwrap();
        let cfg = EngineConfig::load_from(Some(&file), Vec::new()).unwrap();
        let role = within(60, "engine start", start_engine(cfg)).await.unwrap();
        engines.push(role);
    }

    let file = dir.path().join("control.yaml");
    std::fs::write(
        &file,
        format!(
            "{}api:\n  token: {TOKEN}\ncache_invalidation:\n  discovery:\n    mode:\n      type: tailscale\n      local_cluster: us-west-1\n      remote_clusters:\n        - name: eu-west-1\n          tailscale_domain: eu-west-1.ts.net\n          service_name: inferadb-engine\n          port: 8080\n  timeout_ms: 5000\n  retry_attempts: 2\n  webhook_secret: {SECRET}\n",
            mesh_yaml(&url, &us_key, "inferadb-control-0", &dir.path().join("c"))
        ),
    )
    .unwrap();
    let cfg = ControlConfig::load_from(Some(&file), Vec::new()).unwrap();
    let control = within(60, "control start", start_control(cfg))
        .await
        .unwrap();

    // Discovery finds one engine per cluster.
    within(60, "control discovers both engines", async {
        loop {
            let set = control.discovery.refresh_now().await.unwrap();
            let by = set.healthy_by_cluster();
            if by.get("us-west-1").map(Vec::len) == Some(1)
                && by.get("eu-west-1").map(Vec::len) == Some(1)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    let (status, _) = http(control.http_addr, "GET", "/readyz", None).await;
    assert_eq!(status, 200);

    // `inferadb-mesh status` reaches a role through its state directory.
    let st = inferadb_mesh::localapi::fetch_status(&inferadb_mesh::localapi::socket_path(
        &dir.path().join("c"),
    ))
    .await
    .expect("the control role serves the local API");
    assert_eq!(st.self_.name, "inferadb-control-0");
    assert!(st
        .peer
        .values()
        .any(|p| p.name.starts_with("inferadb-engine")));
    for e in &engines {
        let (status, body) = within(30, "engine ready", async {
            loop {
                let r = http(e.http_addr, "GET", "/readyz", None).await;
                if r.0 == 200 {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert_eq!(status, 200, "{body}");
    }

    // No token, wrong token: refused.
    assert_eq!(
        http(control.http_addr, "POST", "/v1/vaults", None).await.0,
        401
    );
    assert_eq!(
        http(control.http_addr, "POST", "/v1/vaults", Some("nope"))
            .await
            .0,
        401
    );

    let (status, body) = within(
        30,
        "POST /v1/vaults",
        http(control.http_addr, "POST", "/v1/vaults", Some(TOKEN)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["invalidation"]["targets"], 2, "{body}");
    assert_eq!(v["invalidation"]["delivered"], 2, "{body}");
    for e in &engines {
        let rec = e.received.as_ref().unwrap();
        assert!(rec.wait_for(1, Duration::from_secs(10)).await);
        let event_id = v["invalidation"]["event_id"].as_str().unwrap();
        assert_eq!(rec.count_of(event_id), 1);
        assert!(rec.events().iter().any(|ev| ev.vault_id == id));
    }

    let (status, metrics) = http(control.http_addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    check_prometheus_text(&metrics);
    for name in [
        "inferadb_tailscale_discovered_endpoints",
        "inferadb_tailscale_clusters_total",
        "inferadb_tailscale_dns_resolutions_total",
        "inferadb_tailnet_",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let (_, metrics) = http(engines[0].http_addr, "GET", "/metrics", None).await;
    check_prometheus_text(&metrics);

    control.shutdown().await;
    for e in engines {
        e.shutdown().await;
    }
    server.shutdown().await;
}
