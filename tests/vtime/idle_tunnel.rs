//! An idle tunnel stays usable past WireGuard's rekey (120 s) and
//! reject-after (180 s) times, and its timers run on a tick, not only when
//! traffic flows. boringtun's clock is mocked (feature `mock-time`) and
//! moved forward in 5 s steps while the nodes run on this one thread, so
//! 300 s of tunnel time pass in about 20 s.

use std::net::SocketAddr;
use std::time::Duration;
use tailnet_tests::{pair, pair_with_keepalive, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo(s: &mut tailnet::TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    within(15, "echo over the tunnel", s.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, msg);
}

/// Lets `secs` of tunnel time pass with no application traffic: the mock
/// clock jumps 5 s, then real time passes for two timer ticks.
async fn idle(secs: u64) {
    for _ in 0..secs / 5 {
        tailnet::testing::advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn idle_tunnel_rekeys_keeps_alive_and_carries_data_after_reject_time() {
    let (n1, n2) = pair_with_keepalive(Some(25)).await;

    let listener = n2.tcp_listen(7).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let dst = SocketAddr::new(n2.ipv4().unwrap(), 7);
    let mut conn = within(15, "connect", n1.tcp_connect(dst)).await.unwrap();
    echo(&mut conn, b"before idle").await;

    let key2 = n2.public_key();
    let before = n1.peer_stats(&key2).unwrap();
    assert!(before.handshakes >= 1);

    idle(300).await;
    assert!(tailnet::testing::elapsed() >= Duration::from_secs(300));

    let after = n1.peer_stats(&key2).unwrap();
    // Persistent keep-alives every 25 s of tunnel time: only a node that
    // runs its timers on a tick sends them while the application is idle.
    assert!(
        after.tx_packets >= before.tx_packets + 8,
        "too few keep-alives while idle: {} -> {}",
        before.tx_packets,
        after.tx_packets
    );
    // The session was renewed on time (rekey after 120 s) with no traffic.
    assert!(
        after.handshakes > before.handshakes,
        "no rekey while idle: {} -> {} handshakes",
        before.handshakes,
        after.handshakes
    );

    // The connection opened before the idle period still works...
    echo(&mut conn, b"after 300 s of tunnel time").await;
    // ... and so does a new one.
    let mut fresh = within(15, "connect after idle", n1.tcp_connect(dst))
        .await
        .unwrap();
    echo(&mut fresh, b"fresh connection").await;
}

#[tokio::test(flavor = "current_thread")]
async fn tunnel_without_keepalive_recovers_after_reject_after_time() {
    // No persistent keep-alive: the session expires while idle (180 s) and
    // the next packet must start a new handshake instead of being lost.
    let (n1, n2) = pair().await;
    let u2 = n2.udp_bind(4001).unwrap();
    let u1 = n1.udp_bind(4000).unwrap();
    let dst = SocketAddr::new(n2.ipv4().unwrap(), 4001);
    u1.send_to(b"first", dst).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = within(10, "first datagram", u2.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"first");
    let hs = n1.peer_stats(&n2.public_key()).unwrap().handshakes;

    idle(200).await;

    u1.send_to(b"after expiry", dst).await.unwrap();
    let (n, from) = within(15, "datagram after expiry", u2.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"after expiry");
    // And the reply direction works too.
    u2.send_to(b"reply", from).await.unwrap();
    let (n, _) = within(15, "reply after expiry", u1.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"reply");
    assert!(n1.peer_stats(&n2.public_key()).unwrap().handshakes > hs);
}
