//! Two of our nodes joined through our coordinator, whose DERP relay is
//! their home region, set to reach each other through the relay only
//! (`always_use_derp`): a 64 MiB transfer crosses the real relay intact
//! and status says `Relay: inferadb` with no `CurAddr`. The end-to-end
//! smoke test of the relayed path over real sockets; the path decisions
//! (falling back when UDP is cut, returning when it heals, idling past
//! WireGuard's reject-after time) are tested on the simulated network in
//! `crates/tailnet-engine/tests/sim.rs`, in simulated time.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::admin::{authkey_create, AuthKeyCreateArgs};
use coordinator::server::{Server, ServerHandle};
use coordinator::Store;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet::{Node, PeerStats};
use tailnet_tests::{recv_all, send_pattern, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: u64 = 60;

async fn coordinator(dir: &Path) -> ServerHandle {
    let store = Arc::new(Store::open(dir).expect("open store"));
    Server::builder(store)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve")
}

fn key(dir: &Path) -> String {
    let store = Store::open(dir).unwrap();
    let args = AuthKeyCreateArgs {
        reusable: true,
        ephemeral: false,
        tags: vec!["tag:inferadb-test".into()],
        expiry: Some("1h".into()),
    };
    authkey_create(&store, &args, SystemTime::now())
        .unwrap()
        .key
}

async fn join(url: &str, key: &str, host: &str) -> Node {
    Node::builder()
        .always_use_derp(true)
        .control_url(url)
        .auth_key(key)
        .hostname(host)
        .ephemeral(true)
        .listen("127.0.0.1:0".parse().unwrap())
        .timeout(Duration::from_secs(20))
        .up()
        .await
        .expect("join")
}

/// Two joined nodes, relayed only, each with the other in its netmap (with
/// disco key and home region) and its relay connected.
async fn joined_pair(url: &str, key: &str) -> (Node, Node) {
    let a = join(url, key, "a").await;
    let b = join(url, key, "b").await;
    within(
        LIMIT,
        "both peers known with a home region and relays up",
        async {
            loop {
                let ok = [(&a, &b), (&b, &a)].iter().all(|(n, p)| {
                    n.peer_stats(&p.public_key()).is_some()
                        && n.stats().relay.connected
                        && n.stats().relay.region == 900
                        && n.status().peer.values().any(|s| {
                            s.host_name
                                == if p.public_key() == a.public_key() {
                                    "a"
                                } else {
                                    "b"
                                }
                        })
                });
                if ok {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    (a, b)
}

fn path(n: &Node, peer: &Node) -> PeerStats {
    n.peer_stats(&peer.public_key()).expect("peer known")
}

fn v4(n: &Node) -> IpAddr {
    n.ipv4().expect("IPv4")
}

/// A SHA-256 sink on `port`: reads to EOF, answers the byte count and hash.
fn sink(node: &Node, port: u16) {
    let l = node.tcp_listen(port).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (n, sum) = recv_all(&mut s).await;
                let mut reply = n.to_be_bytes().to_vec();
                reply.extend_from_slice(&sum);
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_crosses_the_relay_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = coordinator(dir.path()).await;
    let url = format!("http://{}", server.local_addr());
    let key = key(dir.path());
    let (a, b) = joined_pair(&url, &key).await;
    sink(&b, 5001);

    const TOTAL: u64 = 64 << 20;
    let stream = within(
        LIMIT,
        "connect",
        a.tcp_connect(SocketAddr::new(v4(&b), 5001)),
    )
    .await
    .unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    let sender = tokio::spawn(async move {
        let sum = send_pattern(&mut w, TOTAL).await;
        w.shutdown().await.unwrap();
        sum
    });
    let mut reply = Vec::new();
    let sum = within(120, "the transfer completing over the relay", async {
        let sum = sender.await.unwrap();
        r.read_to_end(&mut reply).await.unwrap();
        sum
    })
    .await;
    assert_eq!(reply.len(), 40, "the sink's answer");
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), TOTAL);
    assert_eq!(&reply[8..], &sum, "SHA-256 of what arrived");

    // The path counters follow the data plane's 250 ms tick.
    within(10, "the path showing the relay", async {
        while path(&a, &b).relay_region != 900 || path(&a, &b).cur_addr.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let st = a.status();
    let pb = st.peer.values().find(|p| p.host_name == "b").unwrap();
    assert_eq!(pb.relay, "inferadb", "{pb:?}");
    assert!(pb.cur_addr.is_empty(), "{pb:?}");
    assert!(
        a.stats().relay.tx_packets > 1000,
        "the relay carried it: {:?}",
        a.stats().relay
    );
    assert!(
        server
            .derp_counters()
            .packets_forwarded
            .load(std::sync::atomic::Ordering::Relaxed)
            > 1000
    );
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}
