//! The discovery refresh: a node of us-west-1 discovering three clusters
//! of online pods through MagicDNS.

use super::*;

/// The discovery refresh: a us-west-1 node discovering 3 × `per` pods.
pub(crate) async fn discovery(
    per: usize,
    refreshes: usize,
    concurrency: usize,
    dir: &Path,
) -> anyhow::Result<DiscoveryCase> {
    let rss_before_mib = rss_mib();
    let started = Instant::now();
    let (server, url, keys) = coordinator(dir).await?;
    let mut nodes = Vec::new();
    let r = discovery_nodes(
        per,
        refreshes,
        concurrency,
        &url,
        &keys,
        started,
        &mut nodes,
    )
    .await;
    stop_nodes(nodes).await;
    server.shutdown().await;
    Ok(DiscoveryCase {
        rss_before_mib,
        ..r?
    })
}

pub(crate) async fn join_node(
    url: String,
    key: String,
    host: String,
    magic_dns: bool,
) -> anyhow::Result<tailnet::Node> {
    let node = tailnet::Node::builder()
        .control_url(url)
        .auth_key(key)
        .hostname(host.clone())
        .ephemeral(true)
        .magic_dns(magic_dns)
        .listen("127.0.0.1:0".parse()?)
        .timeout(Duration::from_secs(30))
        .up()
        .await
        .with_context(|| format!("{host} joining"))?;
    Ok(node)
}

pub(crate) async fn discovery_nodes(
    per: usize,
    refreshes: usize,
    concurrency: usize,
    url: &str,
    keys: &[String],
    started: Instant,
    nodes: &mut Vec<tailnet::Node>,
) -> anyhow::Result<DiscoveryCase> {
    let me = bounded(
        60,
        "the discovering node joining",
        join_node(
            url.into(),
            keys[0].clone(),
            "inferadb-control-0".into(),
            true,
        ),
    )
    .await?;
    nodes.push(me.clone());
    let total = REGIONS.len() * per;
    let pods = start_all("pods for discovery", total, concurrency, |i| {
        let (region, host) = placement(i);
        let key = keys[i % REGIONS.len()].clone();
        let (url, label) = (url.to_string(), format!("{region} {host}"));
        async move {
            match tokio::time::timeout(Duration::from_secs(90), join_node(url, key, host, false))
                .await
            {
                Ok(r) => r,
                Err(_) => bail!("{label}: not running within 90 s"),
            }
        }
    })
    .await;
    match pods {
        Ok(p) => nodes.extend(p),
        Err((e, some)) => {
            nodes.extend(some);
            return Err(e);
        }
    }
    let remote: Vec<serde_json::Value> = REGIONS[1..]
        .iter()
        .map(|r| {
            serde_json::json!({"name": r, "tailscale_domain": format!("{r}.ts.net"),
                "service_name": "inferadb-engine", "port": ENGINE_PORT})
        })
        .collect();
    let config: DiscoveryConfig = serde_json::from_value(serde_json::json!({
        "mode": {"type": "tailscale", "local_cluster": REGIONS[0], "remote_clusters": remote},
        "cache_ttl_seconds": 3600
    }))
    .context("discovery configuration")?;
    if config.health_check.is_some() {
        bail!("the discovery configuration has health checks");
    }
    let d = Discovery::builder(config).node(&me).start()?;
    let complete = |set: &inferadb_discovery::EndpointSet| {
        let by = set.healthy_by_cluster();
        REGIONS
            .iter()
            .all(|r| by.get(*r).map(Vec::len) == Some(per))
    };
    step(&format!(
        "discovery: waiting for {per} endpoints in each of {} clusters",
        REGIONS.len()
    ));
    bounded(90, "discovering every pod", async {
        loop {
            let set = d.refresh_now().await?;
            if complete(&set) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await?;
    let start_s = round3(started.elapsed().as_secs_f64());
    let rss = rss_mib();
    step(&format!(
        "discovery: {refreshes} refreshes of {} clusters × {per} endpoints (health checks off)",
        REGIONS.len()
    ));
    for _ in 0..5 {
        d.refresh_now().await?;
    }
    let mut times = Vec::with_capacity(refreshes);
    for i in 0..refreshes {
        let t = Instant::now();
        let set = d.refresh_now().await?;
        times.push(ms(t.elapsed()));
        if !complete(&set) {
            bail!(
                "refresh {}: expected {per} endpoints per cluster, got {:?}",
                i + 1,
                set.healthy_by_cluster()
                    .iter()
                    .map(|(c, v)| (c.clone(), v.len()))
                    .collect::<Vec<_>>()
            );
        }
    }
    let name = format!("inferadb-engine.{}.ts.net", REGIONS[1]);
    let mut lookups = Vec::with_capacity(refreshes);
    for _ in 0..refreshes {
        let t = Instant::now();
        let addrs = me
            .resolve(&name)
            .await
            .with_context(|| format!("resolving {name}"))?;
        lookups.push(ms(t.elapsed()));
        // IPv4 and IPv6 per pod.
        if addrs.len() != 2 * per {
            bail!("{name}: {} addresses, expected {}", addrs.len(), 2 * per);
        }
    }
    d.shutdown();
    Ok(DiscoveryCase {
        clusters: REGIONS.len(),
        endpoints_per_cluster: per,
        health_checks: false,
        start_s,
        refresh: Latency::of(times),
        lookup: Latency::of(lookups),
        rss_before_mib: None,
        rss_mib: rss,
    })
}
