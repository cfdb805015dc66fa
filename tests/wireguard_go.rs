//! Interop with stock wireguard-go: it runs on a TUN device in a network
//! namespace of its own, linked to the host by a veth pair, and our node
//! (userspace, in this process) talks to it over that veth. One test has
//! our node fetch a file from an HTTP server behind wireguard-go; the other
//! has curl behind wireguard-go fetch from a listener on our node, so each
//! side initiates the WireGuard handshake once.
//!
//! Needs root, `wireguard-go`, `wg`, `ip`, `curl` and `python3`
//! (scripts/install-test-deps.sh); `TAILNET_SKIP_INTEROP=1` skips them.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tailnet::{Node, NodeConfig, PeerConfig, PrivateKey};
use tailnet_tests::netns::{interop_ready, WgGoNet};
use tailnet_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FILE_SIZE: usize = 8 << 20;
const BODY_SIZE: u64 = 4 << 20;

/// Starts our node at 100.64.N.1 with UDP on 198.18.N.1 and wireguard-go
/// as its one peer (100.64.N.2/32), and tells wireguard-go about it.
async fn start_node(net: &WgGoNet) -> Node {
    let mut cfg = NodeConfig::new(PrivateKey::generate(), vec![IpAddr::V4(net.node_tunnel_ip)]);
    cfg.listen = net.node_listen();
    cfg.peers.push(PeerConfig {
        public_key: net.wg_public_key,
        endpoint: Some(net.wg_endpoint()),
        allowed_ips: vec![ipnet::IpNet::from(IpAddr::V4(net.wg_tunnel_ip))],
        persistent_keepalive: None,
        disco_key: None,
        home_derp: 0,
        endpoints: Vec::new(),
    });
    let node = Node::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("node on {}: {e}", net.node_listen()));
    net.set_peer(&node.public_key(), node.listen_addr());
    node
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits an HTTP response into its status code and body.
fn parse_response(resp: &[u8]) -> (u16, &[u8]) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {} response bytes", resp.len()));
    let head = String::from_utf8_lossy(&resp[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in response head {head:?}"));
    (status, &resp[end + 4..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_node_fetches_a_file_over_http_from_wireguard_go_side() {
    const TEST: &str = "our_node_fetches_a_file_over_http_from_wireguard_go_side";
    if !interop_ready(TEST) {
        return;
    }
    let t0 = Instant::now();
    let mut net = WgGoNet::create('h', 0);

    // A random file behind wireguard-go, served by python's http.server.
    let www = net.dir.join("www");
    std::fs::create_dir(&www).expect("create the served directory");
    let mut data = vec![0u8; FILE_SIZE];
    rand::fill(&mut data[..]);
    std::fs::write(www.join("blob.bin"), &data).expect("write the served file");
    let want: [u8; 32] = Sha256::digest(&data).into();
    drop(data);
    let www = www.to_str().expect("temp dir path is UTF-8").to_string();
    let bind = net.wg_tunnel_ip.to_string();
    net.spawn(
        "http.server",
        &[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            &bind,
            "--directory",
            &www,
        ],
    );
    let probe = net.command(&[
        "curl",
        "-sS",
        "--max-time",
        "2",
        "-o",
        "/dev/null",
        &format!("http://{bind}:8080/"),
    ]);
    net.wait_until("http.server", Duration::from_secs(20), || {
        std::process::Command::new(&probe[0])
            .args(&probe[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    let setup = t0.elapsed();

    let node = start_node(&net).await;
    let server = SocketAddr::new(IpAddr::V4(net.wg_tunnel_ip), 8080);
    let t1 = Instant::now();
    let resp = within(60, "HTTP GET through wireguard-go", async {
        let mut s = node
            .tcp_connect(server)
            .await
            .unwrap_or_else(|e| panic!("connect to {server}: {e}"));
        let req = format!("GET /blob.bin HTTP/1.0\r\nHost: {server}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send the request");
        let mut resp = Vec::with_capacity(FILE_SIZE + 1024);
        s.read_to_end(&mut resp).await.expect("read the response");
        resp
    })
    .await;
    let transfer = t1.elapsed();

    let (status, body) = parse_response(&resp);
    assert_eq!(status, 200, "HTTP status");
    assert_eq!(body.len(), FILE_SIZE, "body length");
    let got: [u8; 32] = Sha256::digest(body).into();
    assert_eq!(hex(&got), hex(&want), "SHA-256 of the fetched file");

    let stats = handshake_stats(&node, &net.wg_public_key).await;
    assert!(stats.last_handshake.is_some(), "no handshake: {stats:?}");
    assert!(stats.handshakes >= 1, "no handshake counted: {stats:?}");
    assert!(
        stats.rx_bytes > FILE_SIZE as u64,
        "rx bytes below the file size: {stats:?}"
    );
    assert_eq!(stats.endpoint, Some(net.wg_endpoint()));
    println!(
        "{TEST}: setup {setup:?}, 8 MiB over wireguard-go in {transfer:?} (N={}, {stats:?})",
        net.n
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_in_wireguard_go_namespace_reaches_a_listener_on_our_node() {
    const TEST: &str = "curl_in_wireguard_go_namespace_reaches_a_listener_on_our_node";
    if !interop_ready(TEST) {
        return;
    }
    let t0 = Instant::now();
    let net = WgGoNet::create('c', 1);
    let setup = t0.elapsed();
    let node = start_node(&net).await;

    // A minimal HTTP/1.0 responder on our node: one deterministic body.
    let listener = node.tcp_listen(8081).expect("listen on 8081");
    let responder = tokio::spawn(async move {
        let (mut s, from) = listener.accept().await.expect("accept");
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read the request");
            assert!(n > 0, "request ended before its headers did");
            req.extend_from_slice(&buf[..n]);
            assert!(req.len() < 16 * 1024, "request headers too long");
        }
        assert!(req.starts_with(b"GET / HTTP/1."), "request: {req:?}");
        let head = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {BODY_SIZE}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("write the head");
        let sent = send_pattern(&mut s, BODY_SIZE).await;
        s.shutdown().await.expect("half-close after the body");
        // Linger until curl closes, so nothing unacknowledged is cut off.
        let _ = s.read_to_end(&mut Vec::new()).await;
        (from, sent)
    });

    let out_file = net.dir.join("body.bin");
    let url = format!("http://{}:8081/", net.node_tunnel_ip);
    let cmd = net.command(&[
        "curl",
        "-sS",
        "--max-time",
        "30",
        "-o",
        out_file.to_str().expect("temp dir path is UTF-8"),
        &url,
    ]);
    let t1 = Instant::now();
    let output = within(45, "curl through wireguard-go", async {
        tokio::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run curl in the namespace")
    })
    .await;
    let transfer = t1.elapsed();
    assert!(
        output.status.success(),
        "curl {url} failed ({}): {}{}\nnode stats: {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        node.stats()
    );
    let (from, sent) = within(10, "responder to finish", responder)
        .await
        .expect("responder task");
    assert_eq!(from.ip(), IpAddr::V4(net.wg_tunnel_ip), "client address");
    let body = std::fs::read(&out_file).expect("read curl's output file");
    assert_eq!(body.len() as u64, BODY_SIZE, "body length");
    let got: [u8; 32] = Sha256::digest(&body).into();
    assert_eq!(hex(&got), hex(&sent), "SHA-256 of the body curl saved");

    let stats = handshake_stats(&node, &net.wg_public_key).await;
    assert!(stats.last_handshake.is_some(), "no handshake: {stats:?}");
    assert!(
        stats.tx_bytes > BODY_SIZE,
        "tx bytes below the body: {stats:?}"
    );
    println!(
        "{TEST}: setup {setup:?}, 4 MiB to curl behind wireguard-go in {transfer:?} (N={}, {stats:?})",
        net.n
    );
    node.shutdown().await;
}

/// The wireguard-go peer's stats once its handshake shows there: the data
/// plane notes a responder's handshake at its next timer tick (250 ms), and
/// a fast transfer can end before it.
async fn handshake_stats(node: &tailnet::Node, key: &tailnet::PublicKey) -> tailnet::PeerStats {
    within(5, "the handshake shows in the peer's stats", async {
        loop {
            let s = node
                .peer_stats(key)
                .expect("stats for the wireguard-go peer");
            if s.last_handshake.is_some() {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}
