//! Two nodes in one process: bulk TCP both ways, many connections, UDP,
//! half-close, IPv6, and a peer restarting on a new port.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use std::net::SocketAddr;
use tailnet_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BULK: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_256_mib_each_way_sha256_equal() {
    let (n1, n2) = pair().await;
    let l2 = n2.tcp_listen(5001).unwrap();
    let l1 = n1.tcp_listen(5002).unwrap();
    let to2 = SocketAddr::new(n2.ipv4().unwrap(), 5001);
    let to1 = SocketAddr::new(n1.ipv4().unwrap(), 5002);

    let up = tokio::spawn({
        let n1 = n1.clone();
        async move {
            let mut s = n1.tcp_connect(to2).await.unwrap();
            let h = send_pattern(&mut s, BULK).await;
            s.shutdown().await.unwrap();
            h
        }
    });
    let down = tokio::spawn({
        let n2 = n2.clone();
        async move {
            let mut s = n2.tcp_connect(to1).await.unwrap();
            let h = send_pattern(&mut s, BULK).await;
            s.shutdown().await.unwrap();
            h
        }
    });
    let (mut a, _) = l2.accept().await.unwrap();
    let (mut b, _) = l1.accept().await.unwrap();
    let (ra, rb) = within(240, "bulk transfer", async {
        tokio::join!(recv_all(&mut a), recv_all(&mut b))
    })
    .await;
    let (ha, hb) = (up.await.unwrap(), down.await.unwrap());
    assert_eq!(ra, (BULK, ha), "node1 -> node2 stream differs");
    assert_eq!(rb, (BULK, hb), "node2 -> node1 stream differs");
    let s = n1.stats();
    assert_eq!(s.peers.len(), 1);
    assert!(s.peers[0].tx_bytes > BULK && s.peers[0].rx_bytes > BULK);
    assert!(s.peers[0].last_handshake.is_some());
    assert_eq!(s.peers[0].endpoint, Some(n2.listen_addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_connections_echo_64_kib() {
    let (n1, n2) = pair().await;
    let listener = n2.tcp_listen(7).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).await.unwrap();
                }
                s.shutdown().await.unwrap();
            });
        }
    });
    let dst = SocketAddr::new(n2.ipv4().unwrap(), 7);
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let n1 = n1.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = n1.tcp_connect(dst).await.unwrap();
            let mut data = vec![0u8; 64 * 1024];
            pattern(i * 7919, &mut data);
            let (mut r, mut w) = tokio::io::split(&mut s);
            let writer = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut echoed = Vec::with_capacity(data.len());
            let reader = r.read_to_end(&mut echoed);
            let (_, n) = tokio::join!(writer, reader);
            assert_eq!(n.unwrap(), data.len());
            assert!(echoed == data, "connection {i} echoed different bytes");
        }));
    }
    within(180, "500 echo connections", async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_both_ways_v4_and_v6() {
    let (n1, n2) = pair().await;
    let u1 = n1.udp_bind(4000).unwrap();
    let u2 = n2.udp_bind(4001).unwrap();
    for (i, dst_ip) in n2.addresses().iter().enumerate() {
        let dst = SocketAddr::new(*dst_ip, 4001);
        let msg = format!("ping {i}");
        within(10, "udp send", u1.send_to(msg.as_bytes(), dst))
            .await
            .unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = within(10, "udp recv at node 2", u2.recv_from(&mut buf))
            .await
            .unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
        assert_eq!(from.port(), 4000);
        assert_eq!(from.ip().is_ipv4(), dst_ip.is_ipv4());
        u2.send_to(b"pong", from).await.unwrap();
        let (n, from2) = within(10, "udp recv at node 1", u1.recv_from(&mut buf))
            .await
            .unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(from2, dst);
    }
    // A full-size datagram (MTU 1280 - 28 bytes of headers) arrives whole.
    let big = vec![0xabu8; 1252];
    u1.send_to(&big, SocketAddr::new(n2.ipv4().unwrap(), 4001))
        .await
        .unwrap();
    let mut buf = [0u8; 2000];
    let (n, _) = within(10, "big datagram", u2.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], &big[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_lets_the_other_side_keep_writing() {
    let (n1, n2) = pair().await;
    let l = n2.tcp_listen(80).unwrap();
    let dst = SocketAddr::new(n2.addresses()[1], 80); // over IPv6
    let client = tokio::spawn({
        let n1 = n1.clone();
        async move {
            let mut s = n1.tcp_connect(dst).await.unwrap();
            write_and_close(&mut s, b"request").await;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).await.unwrap();
            reply
        }
    });
    let (mut s, peer) = within(10, "accept", l.accept()).await.unwrap();
    assert!(peer.is_ipv6());
    let mut req = Vec::new();
    within(10, "read to EOF", s.read_to_end(&mut req))
        .await
        .unwrap();
    assert_eq!(req, b"request");
    // The client's FIN did not stop us from answering.
    write_and_close(&mut s, b"response after half-close").await;
    let reply = within(10, "client reply", client).await.unwrap();
    assert_eq!(reply, b"response after half-close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart_on_new_port_resumes_without_restarting_the_other() {
    let k1 = tailnet::PrivateKey::generate();
    let k2 = tailnet::PrivateKey::generate();
    // Node 1 is the "server" that never restarts and has no endpoint for 2.
    let mut c1 = loopback_config(1, &k1);
    c1.peers.push(peer(2, &k2, None));
    let n1 = tailnet::Node::start(c1).await.unwrap();
    let listener = n1.tcp_listen(9000).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let dst = SocketAddr::new(n1.ipv4().unwrap(), 9000);
    let mut c2 = loopback_config(2, &k2);
    c2.peers.push(peer(1, &k1, Some(n1.listen_addr())));
    let mut ports = Vec::new();
    for round in 0..2 {
        let n2 = tailnet::Node::start(c2.clone()).await.unwrap();
        ports.push(n2.listen_addr().port());
        let mut s = within(20, "connect", n2.tcp_connect(dst)).await.unwrap();
        let msg = format!("round {round}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        within(20, "echo", s.read_exact(&mut buf)).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
        let ep = n1.peer_stats(&n2.public_key()).unwrap().endpoint;
        assert_eq!(
            ep,
            Some(n2.listen_addr()),
            "endpoint roamed to the new port"
        );
        drop(s);
        n2.shutdown().await;
    }
    assert_ne!(ports[0], ports[1]);
}
