//! The coordinator answers Tailscale STUN binding requests on its port and
//! drops (and counts) anything else.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::server::Server;
use coordinator::Store;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tailnet_wire::stun;
use tokio::net::UdpSocket;

#[tokio::test]
async fn binding_requests_get_the_senders_address_and_junk_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let server = Server::builder(store)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = server.local_addr().port();
    // The DERP map advertises it.
    let region = server
        .derp_map()
        .regions
        .as_ref()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(region.nodes[0].stun_port, i32::from(port));

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(b"not stun at all", server.local_addr())
        .await
        .unwrap();
    let mut bad = stun::binding_request([9; 12]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    sock.send_to(&bad, server.local_addr()).await.unwrap();
    let tx = [7u8; 12];
    sock.send_to(&stun::binding_request(tx), server.local_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("a STUN answer within 5 s")
        .unwrap();
    assert_eq!(
        stun::parse_binding_response(&buf[..n], &tx),
        Some(sock.local_addr().unwrap())
    );
    let c = server.stun_counters();
    assert_eq!(c.answered.load(Ordering::Relaxed), 1);
    assert_eq!(c.dropped.load(Ordering::Relaxed), 2);
    server.shutdown().await;
}
