//! `inferadb-mesh demo`: the embedded default on one machine: the
//! coordinator, three nodes that join it with a pre-auth key, data over the
//! tunnel, and what happened, printed as it goes.

use crate::services::{self, hex, Service, ServiceKind};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tailnet::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Bytes to move in the bulk transfer.
    pub bytes: u64,
}

fn step(msg: &str) {
    println!("==> {msg}");
}

/// Runs the demo; returns an error if any check fails.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let names = ["alpha", "beta", "gamma"];
    let state = tempfile::Builder::new()
        .prefix("inferadb-mesh-demo-")
        .tempdir()
        .context("temporary state directory")?;
    step(
        "starting the embedded coordinator on loopback (control protocol ts2021, state in SQLite)",
    );
    let store = Arc::new(coordinator::Store::open(&state.path().join("coordinator"))?);
    let key = coordinator::admin::authkey_create(
        &store,
        &coordinator::admin::AuthKeyCreateArgs {
            reusable: true,
            ephemeral: false,
            tags: vec!["tag:inferadb-demo".into()],
            expiry: Some("1h".into()),
        },
        SystemTime::now(),
    )?
    .key;
    let server = coordinator::server::Server::builder(store)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let url = format!("http://{}", server.local_addr());
    println!("    control server {url}, one reusable pre-auth key (tag:inferadb-demo)");

    step("three nodes join with the key (userspace WireGuard + smoltcp, no TUN, no privileges)");
    let mut nodes: Vec<Node> = Vec::new();
    for name in names {
        let t = Instant::now();
        let node = Node::builder()
            .control_url(url.clone())
            .auth_key(key.clone())
            .hostname(name)
            .state_dir(state.path().join(name))
            .listen("127.0.0.1:0".parse()?)
            .up()
            .await
            .with_context(|| format!("{name} could not join"))?;
        println!(
            "    {:<6} Running in {:>4} ms  {}  udp {}",
            name,
            t.elapsed().as_millis(),
            node.addresses()
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            node.listen_addr()
        );
        nodes.push(node);
    }
    // Everyone has everyone once the netmaps say so (deltas pushed by the
    // coordinator as the later nodes joined).
    for node in &nodes {
        let mut rx = node.watch_netmap().context("joined through control")?;
        tokio::time::timeout(Duration::from_secs(10), async {
            while rx.borrow().peers().len() < 2 {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .context("the netmaps did not list all three nodes within 10 s")?;
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

    step("alpha's view, as `inferadb-mesh status` prints it");
    for line in nodes[0].status().to_table().lines() {
        println!("    {line}");
    }
    for (i, node) in nodes.iter().enumerate() {
        let d = node.stats().drops;
        if d != tailnet::DropStats::default() {
            println!("    {:<6} drops: {d:?}", names[i]);
        }
    }
    for n in &nodes {
        n.shutdown().await;
    }
    server.shutdown().await;
    step("done: three nodes joined the embedded coordinator and every byte arrived intact");
    Ok(())
}
