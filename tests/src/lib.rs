//! Helpers shared by the integration tests: node pairs on loopback,
//! deterministic data with its SHA-256, memory readings.

#![allow(clippy::unwrap_used)] // test support: its helpers unwrap too

pub mod tsrs;

/// Caddy with Go tsnet, and namespaces with wireguard-go: the harness
/// the benchmarks share (`tailnet-harness`).
pub use tailnet_harness::{caddy, netns};

use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tailnet::{Node, NodeConfig, PeerConfig, PrivateKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Tunnel address of node `n` (1-based): 100.64.0.n and fd7a:115c:a1e0::n.
pub fn addrs(n: u8) -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::new(100, 64, 0, n)),
        format!("fd7a:115c:a1e0::{n}").parse().unwrap(),
    ]
}

/// A peer entry for node `n` with key `key`, reachable at `endpoint`.
pub fn peer(n: u8, key: &PrivateKey, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        public_key: tailnet::PublicKey::from_bytes(public(key)),
        endpoint,
        allowed_ips: addrs(n).into_iter().map(ipnet::IpNet::from).collect(),
        persistent_keepalive: None,
        disco_key: None,
        home_derp: 0,
        endpoints: Vec::new(),
    }
}

/// The public key bytes of a private key.
pub fn public(k: &PrivateKey) -> [u8; 32] {
    let cfg = NodeConfig::new(k.clone(), addrs(1));
    *cfg.public_key().as_bytes()
}

/// A loopback config for node `n`.
pub fn loopback_config(n: u8, key: &PrivateKey) -> NodeConfig {
    let mut c = NodeConfig::new(key.clone(), addrs(n));
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// Two nodes on loopback that know each other (node 1 knows node 2's
/// endpoint; node 2 learns node 1's from its first packet).
pub async fn pair() -> (Node, Node) {
    pair_with_keepalive(None).await
}

/// [`pair`], with node 1 sending persistent keep-alives to node 2 every
/// `keepalive` seconds.
pub async fn pair_with_keepalive(keepalive: Option<u16>) -> (Node, Node) {
    let k1 = PrivateKey::generate();
    let k2 = PrivateKey::generate();
    let mut c2 = loopback_config(2, &k2);
    c2.peers.push(peer(1, &k1, None));
    let n2 = Node::start(c2).await.unwrap();
    let mut c1 = loopback_config(1, &k1);
    let mut p2 = peer(2, &k2, Some(n2.listen_addr()));
    p2.persistent_keepalive = keepalive;
    c1.peers.push(p2);
    let n1 = Node::start(c1).await.unwrap();
    (n1, n2)
}

/// Deterministic bytes: block `i` of the stream.
pub fn pattern(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = offset + i as u64;
        *b = (x ^ (x >> 8) ^ (x >> 16).wrapping_mul(31)) as u8;
    }
}

/// Writes `total` deterministic bytes; returns their SHA-256.
pub async fn send_pattern<W: AsyncWrite + Unpin>(w: &mut W, total: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = ((total - sent) as usize).min(buf.len());
        pattern(sent, &mut buf[..n]);
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        sent += n as u64;
    }
    h.finalize().into()
}

/// Reads to EOF; returns the byte count and SHA-256.
pub async fn recv_all<R: AsyncRead + Unpin>(r: &mut R) -> (u64, [u8; 32]) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    (total, h.finalize().into())
}

/// Resident set size of this process in bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    tailnet_harness::rss::of_self().unwrap_or(0)
}

/// Fails the test if `f` takes longer than `secs`.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}

/// Writes all of `data` then half-closes.
pub async fn write_and_close<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) {
    w.write_all(data).await.unwrap();
    w.shutdown().await.unwrap();
}

/// Echoes every byte back on each connection accepted on `port` of `node`,
/// until the node stops.
pub fn echo_server(node: &Node, port: u16) {
    let listener = node.tcp_listen(port).expect("listen");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
}

/// A relay in memory between nodes of one process (what a DERP server
/// does, by node key): every packet a node hands its [`tailnet::RelayLink`]
/// for a node key reaches that node as from the sender's key. Counts the
/// packets it carried.
pub struct RelayBridge {
    relayed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RelayBridge {
    /// Attaches every node in `nodes` to one in-memory relay.
    pub async fn attach(nodes: &[&Node]) -> RelayBridge {
        use std::collections::HashMap;
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::sync::mpsc;
        let relayed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut inboxes = HashMap::new();
        let mut outboxes = Vec::new();
        for n in nodes {
            let (out_tx, out_rx) = mpsc::channel::<(tailnet::PublicKey, Vec<u8>)>(1024);
            let (in_tx, in_rx) = mpsc::channel(1024);
            n.set_relay(Some(tailnet::RelayLink {
                outbound: out_tx,
                inbound: in_rx,
            }))
            .await
            .expect("relay attaches");
            inboxes.insert(n.public_key(), in_tx);
            outboxes.push((n.public_key(), out_rx));
        }
        let inboxes = std::sync::Arc::new(inboxes);
        for (src, mut rx) in outboxes {
            let inboxes = inboxes.clone();
            let relayed = relayed.clone();
            tokio::spawn(async move {
                while let Some((dst, data)) = rx.recv().await {
                    if let Some(tx) = inboxes.get(&dst) {
                        // A full inbox drops, as a DERP queue does.
                        if tx.try_send(vec![(src, data)]).is_ok() {
                            relayed.fetch_add(1, Relaxed);
                        }
                    }
                }
            });
        }
        RelayBridge { relayed }
    }

    /// Packets carried so far.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(std::sync::atomic::Ordering::Relaxed)
    }
}
