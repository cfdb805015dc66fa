//! The admin commands beside a running server, as an operator runs them:
//! a second `Store` on the same state directory (what `inferadb-mesh
//! coordinator nodes …` opens) changes the database, and the server acts
//! on it: a deleted or expired node loses its map stream and its DERP
//! connection, peers drop it, a renamed node hears its new name. And
//! `/healthz` and `/metrics` report what happened.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{map_request, Client, WAIT};
use coordinator::server::derp::DerpConfig;
use coordinator::server::{Server, ServerConfig, ServerHandle};
use coordinator::{admin, AuthKeySpec, Store};
use hyper::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet_wire::control::MapResponse;
use tailnet_wire::derp::{self, ClientInfo, Frame, FrameReader};
use tailnet_wire::PrivateKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(dir: &std::path::Path) -> ServerHandle {
    let store = Arc::new(Store::open(dir).expect("store"));
    Server::builder(store)
        .config(ServerConfig {
            admin_poll: Duration::from_millis(50),
            ..ServerConfig::default()
        })
        // The periodic re-check is far off: only the store-change path can
        // cut a node off within the test's wait.
        .derp_config(DerpConfig {
            reverify_interval: Duration::from_secs(3600),
            ..DerpConfig::default()
        })
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("server")
}

/// A DERP client that completed the handshake as `node`.
async fn derp_connect(addr: SocketAddr, node: &PrivateKey) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&derp::upgrade_request("127.0.0.1"))
        .await
        .expect("upgrade");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let resp = loop {
        if let Some(r) = derp::parse_upgrade_response(&buf).expect("101") {
            break r;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("in time")
            .expect("read");
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut reader = FrameReader::new(derp::MAX_FRAME_LEN);
    reader.push(&buf[resp.head_len..]);
    let mut server_key = None;
    loop {
        match reader.next_frame().expect("frame") {
            Some(Frame::ServerKey { key }) => {
                let hello = derp::client_info_frame(node.as_bytes(), &key, &ClientInfo::ours());
                tcp.write_all(&hello).await.expect("client info");
                server_key = Some(key);
            }
            Some(Frame::ServerInfo { .. }) if server_key.is_some() => return tcp,
            Some(f) => panic!("unexpected {f:?}"),
            None => {
                let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                    .await
                    .expect("in time")
                    .expect("read");
                assert!(n > 0, "relay refused the node");
                reader.push(&chunk[..n]);
            }
        }
    }
}

/// Whether the relay closes `tcp` within [`WAIT`].
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut chunk = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut out))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

/// The value of one sample (`name` or `name{labels}`) in Prometheus text,
/// checking on the way that every sample line is `series value`.
fn metric(text: &str, series: &str) -> u64 {
    let mut found = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (s, v) = line.rsplit_once(' ').expect("series value");
        let v: u64 = v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        if s == series {
            found = Some(v);
        }
    }
    found.unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

async fn wait_metric(server: &ServerHandle, series: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = metric(&server.metrics_text().await, series);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series}: {got} instead of {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn peer_ids(m: &MapResponse) -> Vec<i64> {
    m.peers.iter().map(|p| p.id).collect()
}

#[tokio::test]
async fn admin_changes_beside_a_running_server_reach_streams_and_the_relay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let addr = server.local_addr();
    let key = server
        .store()
        .create_auth_key(
            &AuthKeySpec {
                reusable: true,
                ..AuthKeySpec::default()
            },
            SystemTime::now(),
        )
        .expect("key")
        .key;
    let mut nodes = Vec::new();
    for host in ["alpha", "beta"] {
        let mut c = Client::new_machine(addr, server.control_public()).await;
        let nk = PrivateKey::generate();
        assert_eq!(c.register(&nk, Some(&key), host).await.error, "");
        let mut stream = c.stream(map_request(&nk)).await;
        let first = stream.next_change().await;
        if host == "beta" {
            assert_eq!(peer_ids(&first), vec![1], "beta sees alpha");
        }
        let relay = derp_connect(addr, &nk).await;
        nodes.push((c, nk, stream, relay));
    }
    let (mut a, a_nk, mut a_stream, mut a_relay) = nodes.remove(0);
    let (_b, _b_nk, mut b_stream, mut b_relay) = nodes.remove(0);
    wait_metric(&server, "inferadb_coordinator_map_streams", 2).await;
    assert_eq!(server.derp().clients(), 2);

    // The CLI's own connection to the same database.
    let cli = Store::open(dir.path()).expect("the admin command's store");

    // Rename: beta hears its new name, alpha sees the peer renamed.
    admin::nodes_rename(&cli, "beta", "beta-renamed").expect("rename");
    let m = b_stream.wait_for(|m| m.node.is_some()).await;
    assert_eq!(m.node.expect("self").name, "beta-renamed.tailnet.internal.");
    a_stream
        .wait_for(|m| {
            m.peers
                .iter()
                .chain(&m.peers_changed)
                .any(|p| p.name == "beta-renamed.tailnet.internal.")
        })
        .await;

    // Expire alpha: it is told its expired key, its stream ends, the relay
    // drops it, beta loses the peer, and its next map request is refused.
    admin::nodes_expire(&cli, "alpha", SystemTime::now()).expect("expire");
    let m = a_stream.wait_for(|m| m.node.is_some()).await;
    assert!(!m.node.expect("self").key_expiry.is_zero());
    assert!(
        a_stream.next().await.is_none(),
        "expired node kept its stream"
    );
    assert!(
        closed(&mut a_relay).await,
        "expired node kept its DERP connection"
    );
    b_stream
        .wait_for(|m| m.peers_removed.contains(&1) || (m.node.is_some() && m.peers.is_empty()))
        .await;
    let (status, body) = a
        .post(
            "/machine/map",
            serde_json::to_vec(&map_request(&a_nk)).expect("json"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("expired"));

    // Delete beta (by its new name): stream and relay connection end.
    admin::nodes_delete(&cli, "beta-renamed").expect("delete");
    assert!(b_stream.next().await.is_none() || b_stream.next().await.is_none());
    assert!(
        closed(&mut b_relay).await,
        "deleted node kept its DERP connection"
    );

    // What /metrics says now.
    wait_metric(&server, "inferadb_coordinator_map_streams", 0).await;
    let text = server.metrics_text().await;
    assert_eq!(
        metric(&text, "inferadb_coordinator_nodes{state=\"expired\"}"),
        1
    );
    assert_eq!(
        metric(&text, "inferadb_coordinator_nodes{state=\"online\"}"),
        0
    );
    assert_eq!(
        metric(
            &text,
            "inferadb_coordinator_register_total{outcome=\"created\"}"
        ),
        2
    );
    assert_eq!(
        metric(&text, "inferadb_coordinator_map_streams_opened_total"),
        2
    );
    assert_eq!(metric(&text, "inferadb_coordinator_map_refused_total"), 1);
    assert!(metric(&text, "inferadb_coordinator_store_changes_total") >= 3);
    assert_eq!(
        metric(
            &text,
            "inferadb_coordinator_derp_connections_closed_total{reason=\"revoked\"}"
        ),
        2
    );
    assert_eq!(metric(&text, "inferadb_coordinator_derp_clients"), 0);
    assert_eq!(metric(&text, "inferadb_coordinator_store_up"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_and_metrics_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start(dir.path()).await;
    let addr = server.local_addr();

    // The main listener: /healthz for anyone, /metrics for loopback.
    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "inferadb_coordinator_nodes",
        "inferadb_coordinator_map_streams",
        "inferadb_coordinator_register_total",
        "inferadb_coordinator_derp_clients",
        "inferadb_coordinator_derp_bytes_forwarded_total",
        "inferadb_coordinator_derp_dropped_total",
        "inferadb_coordinator_derp_queued_bytes",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family}:\n{body}"
        );
    }
    assert_eq!(metric(&body, "inferadb_coordinator_map_streams"), 0);

    // Every metric the coordinator dashboard queries is in the scrape.
    let dash = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/observability/grafana-coordinator.json"
    ))
    .expect("the coordinator dashboard");
    let dash: serde_json::Value = serde_json::from_str(&dash).expect("dashboard JSON");
    let mut queried = 0;
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("inferadb_"))
                .collect();
            assert!(!names.is_empty(), "panel {} queries no metric", p["title"]);
            for n in names {
                queried += 1;
                assert!(
                    body.lines()
                        .any(|l| l.starts_with(n) && l[n.len()..].starts_with([' ', '{'])),
                    "dashboard panel {} queries {n}, not in /metrics:\n{body}",
                    p["title"]
                );
            }
        }
    }
    assert!(queried >= 10, "{queried}");

    // The metrics listener serves both, and nothing else.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let maddr = listener.local_addr().expect("addr");
    server.serve_metrics(listener);
    let (status, body) = http_get(maddr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&body, "inferadb_coordinator_store_up"), 1);
    assert_eq!(http_get(maddr, "/healthz").await.0, 200);
    assert_eq!(http_get(maddr, "/key").await.0, 404);

    server.shutdown().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(maddr))
            .await
            .map(|r| r.is_err())
            .unwrap_or(true),
        "the metrics listener closes at shutdown"
    );
}
