//! Two of our nodes joined through our coordinator, whose DERP relay is
//! their home region: the path starts direct, a 256 MiB transfer survives
//! its direct path being cut half-way (the relay carries the rest, status
//! says `Relay: inferadb` with no `CurAddr`), and the path returns to direct
//! once UDP works again; and two nodes that can only reach each other
//! through the relay keep a TCP stream up past the DERP client's 120 s
//! read deadline (the relay's keep-alives and WireGuard's carry it).

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

/// Two joined nodes, each with the other in its netmap (with disco key and
/// home region) and its relay connected.
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

/// Cuts (or restores, with `false`) UDP between the two nodes.
async fn cut(a: &Node, b: &Node, on: bool) {
    let (ba, bb) = if on {
        (vec![b.listen_addr()], vec![a.listen_addr()])
    } else {
        (Vec::new(), Vec::new())
    };
    a.debug_block_udp(ba).await.unwrap();
    b.debug_block_udp(bb).await.unwrap();
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
async fn a_transfer_survives_its_direct_path_being_cut_and_the_path_returns() {
    let dir = tempfile::tempdir().unwrap();
    let server = coordinator(dir.path()).await;
    let url = format!("http://{}", server.local_addr());
    let key = key(dir.path());
    let (a, b) = joined_pair(&url, &key).await;
    sink(&b, 5001);

    const TOTAL: u64 = 256 << 20;
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

    // Direct first: a pong proves the UDP path.
    within(LIMIT, "a direct path to b", async {
        while path(&a, &b).cur_addr.is_none() || path(&a, &b).tx_bytes < (16 << 20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let st = a.status();
    let pb = st.peer.values().find(|p| p.host_name == "b").unwrap();
    assert!(!pb.cur_addr.is_empty() && pb.relay.is_empty(), "{pb:?}");
    let relayed_before = a.stats().relay.tx_packets;

    // Cut it half-way: the relay carries the rest.
    cut(&a, &b, true).await;
    within(LIMIT, "the path falls back to the relay", async {
        while path(&a, &b).relay_region != 900 || path(&a, &b).cur_addr.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let st = a.status();
    let pb = st.peer.values().find(|p| p.host_name == "b").unwrap();
    assert_eq!(pb.relay, "inferadb", "{pb:?}");
    assert!(pb.cur_addr.is_empty(), "{pb:?}");

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
    assert!(
        a.stats().relay.tx_packets > relayed_before + 1000,
        "the relay carried the second half: {:?}",
        a.stats().relay
    );
    assert!(
        server
            .derp_counters()
            .packets_forwarded
            .load(std::sync::atomic::Ordering::Relaxed)
            > 1000
    );

    // Heal: direct again.
    cut(&a, &b, false).await;
    let s = a.tcp_connect(SocketAddr::new(v4(&b), 5001)).await.unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    tokio::spawn(async move {
        send_pattern(&mut w, 1 << 20).await;
        w.shutdown().await.unwrap();
    });
    let mut reply = Vec::new();
    r.read_to_end(&mut reply).await.unwrap();
    within(LIMIT, "the path returning to direct", async {
        while path(&a, &b).cur_addr.is_none() {
            // Traffic keeps discovery going, as an application would.
            let _ = a.tcp_connect(SocketAddr::new(v4(&b), 5001)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(path(&a, &b).relay_region, 0);
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_peers_keep_a_tcp_stream_up_for_minutes_idle() {
    let dir = tempfile::tempdir().unwrap();
    let server = coordinator(dir.path()).await;
    let url = format!("http://{}", server.local_addr());
    let key = key(dir.path());
    let (a, b) = joined_pair(&url, &key).await;
    cut(&a, &b, true).await;
    tailnet_tests::echo_server(&b, 7);

    let mut s = within(
        LIMIT,
        "connect over the relay",
        a.tcp_connect(SocketAddr::new(v4(&b), 7)),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 5];
    s.write_all(b"hello").await.unwrap();
    within(LIMIT, "echo over the relay", s.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"hello");
    // The path counters follow the data plane's 250 ms tick.
    within(10, "the path showing the relay", async {
        while path(&a, &b).relay_region != 900 || path(&a, &b).cur_addr.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // Idle for 200 s: past the DERP client's 120 s read deadline, three
    // of the relay's 60 s keep-alives, and WireGuard's 180 s session
    // lifetime: nothing reconnects, the stream still works, and the
    // write after it needs a fresh handshake, which crosses the relay.
    let connects = (a.stats().relay.connects, b.stats().relay.connects);
    let handshakes = a.peer_stats(&b.public_key()).unwrap().handshakes;
    tokio::time::sleep(Duration::from_secs(200)).await;
    s.write_all(b"again").await.unwrap();
    within(LIMIT, "echo after 200 s idle", s.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"again");
    assert!(
        a.peer_stats(&b.public_key()).unwrap().handshakes > handshakes,
        "a new WireGuard session after the old one expired"
    );
    assert_eq!(
        (a.stats().relay.connects, b.stats().relay.connects),
        connects,
        "no relay reconnect while idle"
    );
    assert!(a.stats().relay.connected && b.stats().relay.connected);
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}
