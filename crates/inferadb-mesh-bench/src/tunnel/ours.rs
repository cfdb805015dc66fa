//! Our rows: two of our nodes in two processes over loopback UDP (direct,
//! through the WAN relay, or through the embedded DERP relay).

use super::*;

pub(crate) fn tunnel_addrs(n: u8) -> Vec<IpAddr> {
    vec![IpAddr::from([100, 64, 250, n])]
}

/// Ours: two nodes in two processes over loopback UDP. Their peers have
/// disco keys, as every peer of a node joined through control has, so the
/// figures are those of the disco-trusted direct path.
pub(crate) async fn tailnet_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    let ka = PrivateKey::generate();
    let kb = PrivateKey::generate();
    let (da, db) = (PrivateKey::generate(), PrivateKey::generate());
    let (da_pub, db_pub) = (
        tailnet_wire::disco::public_of(&da),
        tailnet_wire::disco::public_of(&db),
    );
    let mut ca = NodeConfig::new(ka, tunnel_addrs(1));
    ca.listen = "127.0.0.1:0".parse()?;
    ca.netstack.mtu = opts.mtu;
    if let Some(c) = opts.congestion {
        ca.netstack.congestion = c;
    }
    ca.disco_key = Some(da);
    let mut cb = NodeConfig::new(kb, tunnel_addrs(2));
    cb.listen = "127.0.0.1:0".parse()?;
    cb.netstack.mtu = opts.mtu;
    cb.netstack.congestion = ca.netstack.congestion;
    cb.disco_key = Some(db);
    let node_a = Node::start(ca.clone()).await?;
    // With --wan each node's endpoint for the other is the relay's side
    // facing it.
    let relay = match &opts.wan {
        Some(cond) => {
            let lo: SocketAddr = "127.0.0.1:0".parse()?;
            let mut spec = RelaySpec::symmetric(lo, lo, cond, wan_seed());
            spec.peer_a = Some(node_a.listen_addr());
            Some(Relay::start(spec)?)
        }
        None => None,
    };
    cb.peers.push(PeerConfig {
        public_key: ca.public_key(),
        endpoint: Some(relay.as_ref().map_or(node_a.listen_addr(), Relay::addr_b)),
        allowed_ips: vec!["100.64.250.1/32".parse()?],
        persistent_keepalive: None,
        disco_key: Some(da_pub),
        home_derp: 0,
        endpoints: Vec::new(),
    });
    let dir = std::env::temp_dir().join(format!("inferadb-mesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg_path = dir.join("peer.json");
    write_private(&cfg_path, &serde_json::to_vec(&cb)?)?;
    let mut cmd = std::process::Command::new(&opts.exe);
    cmd.arg("node").arg("--config").arg(&cfg_path);
    for s in measurement_services() {
        cmd.arg("--serve").arg(s.to_string());
    }
    // Its warnings show on the bench's stderr, as the node's own do.
    let mut child = Peer::spawn(&mut cmd, Stderr::Inherit, |_| true)
        .with_context(|| format!("cannot run {}", opts.exe.display()))?;
    let line = match child.wait_ready_async(Duration::from_secs(20)).await {
        Ok((line, _)) => line,
        Err(NotReady::Exited(_)) => bail!("peer node exited before it was ready"),
        Err(NotReady::Timeout(_)) => bail!("peer node did not start within 20 s"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let ready: ReadyLine = serde_json::from_str(&line).context("peer ready line")?;
    if let Some(r) = &relay {
        r.set_peer(crate::wan::Side::B, ready.listen);
    }
    node_a
        .set_peers(vec![PeerConfig {
            public_key: cb.public_key(),
            endpoint: Some(relay.as_ref().map_or(ready.listen, Relay::addr_a)),
            allowed_ips: vec!["100.64.250.2/32".parse()?],
            persistent_keepalive: None,
            disco_key: Some(db_pub),
            home_derp: 0,
            endpoints: Vec::new(),
        }])
        .await?;
    let r = measure_from_node(&node_a, tunnel_addrs(2)[0], opts)
        .await
        .map(|mut r| {
            // Static peers: no relay, only the UDP endpoint.
            r.path = node_a
                .peer_stats(&cb.public_key())
                .and_then(|p| p.cur_addr.or(p.endpoint))
                .map(|a| match &relay {
                    Some(_) => format!("direct {a} (the WAN relay)"),
                    None => format!("direct {a}"),
                });
            r
        });
    node_a.shutdown().await;
    drop(child);
    if let Some(relay) = relay {
        log_relay(&relay);
    }
    r
}

/// The seed of the relay's random draws: fixed, so every row of a run
/// (and every run) sees the same loss pattern for the same traffic.
pub(crate) fn wan_seed() -> u64 {
    0x01db_5eed
}

/// What the relay did, on stderr (a lossy row's story).
pub(crate) fn log_relay(relay: &Relay) {
    let s = relay.stats();
    for (dir, l) in [("A→B", s.a_to_b), ("B→A", s.b_to_a)] {
        eprintln!(
            "bench: relay {dir}: {} datagrams, {} lost, {} tail-dropped",
            l.offered, l.lost, l.queue_drops
        );
    }
    if s.unsent > 0 {
        eprintln!("bench: relay: {} datagrams not sent", s.unsent);
    }
}

/// Our node ↔ our node through the embedded coordinator's DERP relay:
/// both join the coordinator (one process; the relay is the coordinator's
/// TCP connections), both reach each other through the relay only
/// (`always_use_derp`, Go's `TS_DEBUG_ALWAYS_USE_DERP`), and the same
/// client code measures the relayed path.
pub(crate) async fn tailnet_derp_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    let coord = Coord::start().await?;
    let result = async {
        let a = join_node_relayed(&coord, "bench-a", opts.mtu, true).await?;
        let b = join_node_relayed(&coord, "bench-b", opts.mtu, true).await?;
        crate::services::spawn_on_node(&b, &measurement_services())?;
        let target = b.ipv4().context("an IPv4 address")?;
        let relayed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let ready = a
                    .peer_stats(&b.public_key())
                    .is_some_and(|p| p.relay_region != 0)
                    && a.stats().relay.connected
                    && b.stats().relay.connected;
                if ready {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if relayed.is_err() {
            bail!("the relay path did not come up within 20 s");
        }
        let r = measure_from_node(&a, target, opts).await.map(|mut r| {
            r.path = a
                .peer_stats(&b.public_key())
                .map(|p| format!("relayed (DERP region {})", p.relay_region));
            r
        });
        a.shutdown().await;
        b.shutdown().await;
        r
    }
    .await;
    coord.shutdown().await;
    result
}

/// Our node in this process, joined to `coord` as `host` on loopback UDP.
pub(crate) async fn join_node(coord: &Coord, host: &str, mtu: usize) -> anyhow::Result<Node> {
    join_node_relayed(coord, host, mtu, false).await
}

/// [`join_node`], reaching peers through the relay only when `relayed`.
async fn join_node_relayed(
    coord: &Coord,
    host: &str,
    mtu: usize,
    relayed: bool,
) -> anyhow::Result<Node> {
    Ok(Node::builder()
        .always_use_derp(relayed)
        .control_url(coord.url.clone())
        .auth_key(coord.auth_key.clone())
        .hostname(host)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .timeout(Duration::from_secs(20))
        .netstack(tailnet::NetstackConfig {
            mtu,
            ..Default::default()
        })
        .up()
        .await?)
}

/// Download, upload and round trips from our node to the measurement
/// services at `target`.
pub(crate) async fn measure_from_node(
    node: &Node,
    target: IpAddr,
    opts: &TunnelOptions,
) -> anyhow::Result<PathResult> {
    let s = node
        .tcp_connect(SocketAddr::new(target, SOURCE_PORT))
        .await?;
    let gbit = measure_throughput(s, opts.duration).await?;
    let s = node
        .tcp_connect(SocketAddr::new(target, DISCARD_PORT))
        .await?;
    let up = measure_upload(s, opts.duration).await?;
    let s = node.tcp_connect(SocketAddr::new(target, ECHO_PORT)).await?;
    let (p50, p99) = measure_rtt(s, opts.rtt_samples).await?;
    Ok(PathResult::measured(gbit, Some(up), (p50, p99)))
}
