//! A node asks a STUN server where it is from its WireGuard socket: the
//! coordinator's responder tells it its address, and only the answer from
//! the server it asked, with its transaction ID, is believed; any other
//! STUN datagram is dropped and counted as malformed.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tailnet::{Node, PrivateKey};
use tailnet_tests::loopback_config;
use tailnet_wire::stun;
use tokio::net::UdpSocket;

#[tokio::test]
async fn the_coordinators_stun_server_tells_a_node_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(coordinator::Store::open(dir.path()).unwrap());
    let server = coordinator::server::Server::builder(store)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let node = Node::start(loopback_config(1, &PrivateKey::generate()))
        .await
        .unwrap();
    let seen = node.stun(server.local_addr(), Duration::from_secs(2)).await;
    assert_eq!(seen, Some(node.listen_addr()));
    assert_eq!(node.stats().drops.malformed, 0);
    node.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn only_the_asked_servers_answer_to_our_transaction_counts() {
    let node = Node::start(loopback_config(1, &PrivateKey::generate()))
        .await
        .unwrap();
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let asked = {
        let n = node.clone();
        let to = fake.local_addr().unwrap();
        tokio::spawn(async move { n.stun(to, Duration::from_secs(5)).await })
    };
    let mut buf = [0u8; 1500];
    let (len, from) = tokio::time::timeout(Duration::from_secs(2), fake.recv_from(&mut buf))
        .await
        .expect("the node sent a request")
        .unwrap();
    assert_eq!(from, node.listen_addr(), "from the WireGuard socket");
    let tx = stun::parse_binding_request(&buf[..len]).expect("a Tailscale binding request");
    let claimed: SocketAddr = "192.0.2.7:4242".parse().unwrap();
    let before = node.stats().drops.malformed;
    // The right transaction from a server we did not ask; the asked
    // server with another transaction; then the real answer.
    other
        .send_to(&stun::binding_response(tx, claimed), node.listen_addr())
        .await
        .unwrap();
    fake.send_to(
        &stun::binding_response([0xee; 12], claimed),
        node.listen_addr(),
    )
    .await
    .unwrap();
    malformed_reaches(&node, before + 2, "both forgeries counted").await;
    assert!(!asked.is_finished(), "no forgery answered the request");
    fake.send_to(&stun::binding_response(tx, claimed), node.listen_addr())
        .await
        .unwrap();
    assert_eq!(asked.await.unwrap(), Some(claimed));
    assert_eq!(node.stats().drops.malformed, before + 2);
    // An answer nobody waits for any more is dropped too.
    fake.send_to(&stun::binding_response(tx, claimed), node.listen_addr())
        .await
        .unwrap();
    malformed_reaches(&node, before + 3, "a late answer is counted").await;
    node.shutdown().await;
}

/// Waits (2 s at most) for the node's malformed-drop count to reach `n`.
async fn malformed_reaches(node: &Node, n: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while node.stats().drops.malformed < n {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
