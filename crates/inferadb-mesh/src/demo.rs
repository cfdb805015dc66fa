//! `inferadb-mesh demo`: three nodes on loopback, data over the tunnel,
//! and what happened, printed as it goes.

use crate::services::{self, hex, Service, ServiceKind};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tailnet::{Node, NodeConfig, PeerConfig, PrivateKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Bytes to move in the bulk transfer.
    pub bytes: u64,
}

fn addr(n: u8) -> Vec<std::net::IpAddr> {
    vec![
        std::net::IpAddr::from([100, 64, 0, n]),
        format!("fd7a:115c:a1e0::{n}")
            .parse()
            .expect("static IPv6 literal"),
    ]
}

fn peer_of(n: u8, cfg: &NodeConfig, endpoint: SocketAddr) -> PeerConfig {
    PeerConfig {
        public_key: cfg.public_key(),
        endpoint: Some(endpoint),
        allowed_ips: addr(n).into_iter().map(ipnet::IpNet::from).collect(),
        persistent_keepalive: Some(25),
    }
}

fn step(msg: &str) {
    println!("==> {msg}");
}

/// Runs the demo; returns an error if any check fails.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let names = ["alpha", "beta", "gamma"];
    step("starting three nodes on loopback (userspace WireGuard + smoltcp, no TUN, no privileges)");
    let mut configs = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3u8 {
        let mut c = NodeConfig::new(PrivateKey::generate(), addr(i + 1));
        c.listen = "127.0.0.1:0".parse()?;
        let node = Node::start(c.clone()).await?;
        println!(
            "    {:<6} {}  key {}  udp {}",
            names[usize::from(i)],
            node.addresses()
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            node.public_key().short(),
            node.listen_addr()
        );
        configs.push(c);
        nodes.push(node);
    }
    // Every node learns every key first and the endpoints second: a node
    // handshakes at once with a new peer whose endpoint it knows, and that
    // first handshake would reach a node that does not know it yet.
    for with_endpoints in [false, true] {
        for (i, node) in nodes.iter().enumerate() {
            let peers = (0..3)
                .filter(|j| *j != i)
                .map(|j| {
                    let mut p = peer_of(j as u8 + 1, &configs[j], nodes[j].listen_addr());
                    if !with_endpoints {
                        p.endpoint = None;
                    }
                    p
                })
                .collect();
            node.set_peers(peers).await?;
        }
    }
    services::spawn_on_node(
        &nodes[1],
        &[
            Service {
                kind: ServiceKind::Sha256,
                port: 5001,
            },
            Service {
                kind: ServiceKind::Echo,
                port: 7,
            },
        ],
    )?;
    services::spawn_on_node(
        &nodes[2],
        &[Service {
            kind: ServiceKind::UdpEcho,
            port: 4001,
        }],
    )?;

    let beta = nodes[1].ipv4().context("beta has an IPv4 address")?;
    step(&format!(
        "alpha -> beta: TCP round trips to {beta}:7 (first one includes the WireGuard handshake)"
    ));
    let mut echo = nodes[0].tcp_connect(SocketAddr::new(beta, 7)).await?;
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..200 {
        let t = Instant::now();
        echo.write_all(&[7u8; 64]).await?;
        echo.read_exact(&mut buf).await?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    println!(
        "    200 round trips of 64 bytes: p50 {:?}, p99 {:?}",
        rtts[100], rtts[197]
    );
    drop(echo);

    step(&format!(
        "alpha -> beta: {} MiB over one TCP stream, SHA-256 checked at both ends",
        opts.bytes >> 20
    ));
    let t = Instant::now();
    let mut s = nodes[0].tcp_connect(SocketAddr::new(beta, 5001)).await?;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    let mut last_report = Instant::now();
    while sent < opts.bytes {
        let n = ((opts.bytes - sent) as usize).min(chunk.len());
        services::pattern(sent, &mut chunk[..n]);
        s.write_all(&chunk[..n]).await?;
        sent += n as u64;
        if last_report.elapsed() > Duration::from_secs(1) {
            println!("    ... {} MiB sent", sent >> 20);
            last_report = Instant::now();
        }
    }
    s.shutdown().await?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).await?;
    let secs = t.elapsed().as_secs_f64();
    let expected = format!(
        "{} {}",
        opts.bytes,
        hex(&services::pattern_sha256(opts.bytes))
    );
    if reply.trim() != expected {
        bail!(
            "beta received something else: {:?}, expected {expected:?}",
            reply.trim()
        );
    }
    println!(
        "    beta received {} bytes, SHA-256 {}… matches; {:.2} s, {:.2} Gbit/s",
        opts.bytes,
        &expected[expected.len() - 64..expected.len() - 48],
        secs,
        opts.bytes as f64 * 8.0 / secs / 1e9
    );

    let gamma = nodes[2].addresses()[1];
    step(&format!(
        "alpha -> gamma: UDP datagrams to [{gamma}]:4001 over IPv6"
    ));
    let u = nodes[0].udp_bind(0)?;
    let mut got = 0;
    for i in 0..10u32 {
        let msg = format!("datagram {i}");
        u.send_to(msg.as_bytes(), SocketAddr::new(gamma, 4001))
            .await?;
        let mut b = [0u8; 128];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), u.recv_from(&mut b))
            .await
            .context("no UDP echo from gamma within 5 s")??;
        if &b[..n] == msg.as_bytes() {
            got += 1;
        }
    }
    println!("    {got}/10 datagrams echoed back");
    if got != 10 {
        bail!("only {got} of 10 UDP datagrams came back");
    }

    step("what the nodes saw (per-peer counters)");
    println!(
        "    {:<6} {:<6} {:>12} {:>12} {:>10} {:>10}  {:<22} handshake",
        "node", "peer", "rx bytes", "tx bytes", "rx pkts", "tx pkts", "endpoint"
    );
    for (i, node) in nodes.iter().enumerate() {
        let st = node.stats();
        for p in &st.peers {
            let j = configs
                .iter()
                .position(|c| c.public_key() == p.public_key)
                .unwrap_or(0);
            let hs = match p.last_handshake {
                Some(t) => format!(
                    "{:.1} s ago",
                    t.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0)
                ),
                None => "never".into(),
            };
            println!(
                "    {:<6} {:<6} {:>12} {:>12} {:>10} {:>10}  {:<22} {}",
                names[i],
                names[j],
                p.rx_bytes,
                p.tx_bytes,
                p.rx_packets,
                p.tx_packets,
                p.endpoint
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into()),
                hs
            );
        }
        let d = st.drops;
        if d != tailnet::DropStats::default() {
            println!("    {:<6} drops: {d:?}", names[i]);
        }
    }
    for n in &nodes {
        n.shutdown().await;
    }
    step("done: every byte arrived intact over the userspace tunnel");
    Ok(())
}
