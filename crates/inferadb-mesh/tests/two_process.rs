//! Two nodes in two processes: this test process runs one node, the
//! `inferadb-mesh node` binary runs the other, and they talk over loopback
//! UDP.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use inferadb_mesh::services::{hex, pattern_sha256};
use inferadb_mesh::static_node::ReadyLine;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tailnet::{Node, NodeConfig, PeerConfig, PrivateKey};
use tailnet_tests::{addrs, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BULK: u64 = 256 << 20;

struct Peer {
    child: Child,
    ready: ReadyLine,
    _dir: TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "inferadb-mesh-test-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// Starts `inferadb-mesh node` with `cfg` and the test services.
fn spawn_peer(cfg: &NodeConfig) -> Peer {
    let dir = temp_dir("peer");
    let path = dir.0.join("node.json");
    std::fs::write(&path, serde_json::to_vec(cfg).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferadb-mesh"))
        .arg("node")
        .arg("--config")
        .arg(&path)
        .args(["--serve", "sha256:5001", "--serve", "source:5002"])
        .args(["--serve", "echo:7", "--serve", "udp-echo:4001"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run inferadb-mesh node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("ready line");
    let ready: ReadyLine =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad ready line {line:?}: {e}"));
    Peer {
        child,
        ready,
        _dir: dir,
    }
}

fn peer_entry(n: u8, cfg: &NodeConfig, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        public_key: cfg.public_key(),
        endpoint,
        allowed_ips: addrs(n).into_iter().map(ipnet::IpNet::from).collect(),
        persistent_keepalive: None,
        disco_key: None,
        home_derp: 0,
        endpoints: Vec::new(),
    }
}

/// Our node (1) in this process and the binary's node (2).
async fn setup() -> (Node, NodeConfig, NodeConfig, Peer) {
    let mut c1 = NodeConfig::new(PrivateKey::generate(), addrs(1));
    c1.listen = "127.0.0.1:0".parse().unwrap();
    let mut c2 = NodeConfig::new(PrivateKey::generate(), addrs(2));
    c2.listen = "127.0.0.1:0".parse().unwrap();
    let n1 = Node::start(c1.clone()).await.unwrap();
    c2.peers.push(peer_entry(1, &c1, Some(n1.listen_addr())));
    let p = spawn_peer(&c2);
    n1.set_peers(vec![peer_entry(2, &c2, Some(p.ready.listen))])
        .await
        .unwrap();
    (n1, c1, c2, p)
}

fn target(port: u16) -> SocketAddr {
    SocketAddr::new(addrs(2)[0], port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_256_mib_each_way_between_processes() {
    let (n1, _c1, _c2, _p) = setup().await;
    let expected = format!("{BULK} {}", hex(&pattern_sha256(BULK)));

    // Up: the other process hashes what arrives and reports it.
    let up = async {
        let mut s = n1.tcp_connect(target(5001)).await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut off = 0u64;
        while off < BULK {
            let n = ((BULK - off) as usize).min(buf.len());
            inferadb_mesh::services::pattern(off, &mut buf[..n]);
            s.write_all(&buf[..n]).await.unwrap();
            off += n as u64;
        }
        s.shutdown().await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        reply.trim().to_string()
    };
    // Down: the other process sends the pattern; we hash it here.
    let down = async {
        let mut s = n1.tcp_connect(target(5002)).await.unwrap();
        s.write_all(&BULK.to_be_bytes()).await.unwrap();
        let (n, h) = tailnet_tests::recv_all(&mut s).await;
        format!("{n} {}", hex(&h))
    };
    let (up, down) = within(300, "256 MiB each way", async { tokio::join!(up, down) }).await;
    assert_eq!(up, expected, "the other process hashed different bytes");
    assert_eq!(down, expected, "we received different bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_connections_and_udp_between_processes() {
    let (n1, _c1, _c2, _p) = setup().await;
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let n1 = n1.clone();
        tasks.push(tokio::spawn(async move {
            let s = n1.tcp_connect(target(7)).await.unwrap();
            let mut data = vec![0u8; 64 * 1024];
            inferadb_mesh::services::pattern(i * 65_537, &mut data);
            let (mut r, mut w) = tokio::io::split(s);
            let writer = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut echoed = Vec::new();
            let (_, n) = tokio::join!(writer, r.read_to_end(&mut echoed));
            assert_eq!(n.unwrap(), data.len(), "connection {i} echo length");
            assert!(echoed == data, "connection {i} echoed different bytes");
        }));
    }
    within(240, "500 echo connections", async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;

    let u = n1.udp_bind(0).unwrap();
    for v in [addrs(2)[0], addrs(2)[1]] {
        for i in 0..20 {
            let msg = format!("datagram {i} to {v}");
            u.send_to(msg.as_bytes(), SocketAddr::new(v, 4001))
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let (n, from) = within(10, "udp echo", u.recv_from(&mut buf)).await.unwrap();
            assert_eq!(&buf[..n], msg.as_bytes());
            assert_eq!(from, SocketAddr::new(v, 4001));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_process_on_a_new_port_is_reached_again() {
    let (n1, _c1, c2, p) = setup().await;
    let echo_once = |tag: &'static str| {
        let n1 = n1.clone();
        async move {
            let mut s = n1.tcp_connect(target(7)).await.unwrap();
            s.write_all(tag.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; tag.len()];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, tag.as_bytes());
        }
    };
    within(20, "echo before restart", echo_once("before")).await;
    let old_port = p.ready.listen.port();
    drop(p); // kill the other process
             // Same key, same config, new UDP port. Only the restarted side knows
             // where the other is; we learn its new endpoint from its handshake.
    let p2 = spawn_peer(&c2);
    assert_ne!(p2.ready.listen.port(), old_port);
    within(30, "echo after restart", echo_once("after")).await;
    let ep = n1.peer_stats(&c2.public_key()).unwrap().endpoint;
    assert_eq!(ep, Some(p2.ready.listen));
    drop(p2);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
