//! The tunnel path: control and N engines in this process, joined to the
//! embedded coordinator, control discovering the engines over MagicDNS.

use super::*;

/// What the tunnel path measured besides the path itself.
pub(crate) struct TunnelExtras {
    pub(crate) start_s: f64,
    pub(crate) control_hop_p50_ms: f64,
    pub(crate) rss_before_mib: Option<f64>,
    pub(crate) rss_mib: Option<f64>,
    pub(crate) idle_cpu_percent: Option<f64>,
}

/// The tunnel path at `n` engines.
pub(crate) async fn tunnel<P: Product>(
    n: usize,
    a: &InvalidationArgs,
    dir: &Path,
) -> anyhow::Result<(PathResult, TunnelExtras)> {
    let rss_before_mib = rss_mib();
    let started = Instant::now();
    let (server, url, keys) = coordinator(dir).await?;
    let mut roles: Vec<P::Role> = Vec::new();
    let result = tunnel_roles::<P>(n, a, dir, &url, &keys, started, &mut roles).await;
    stop_roles(roles).await;
    server.shutdown().await;
    let (path, extras) = result?;
    Ok((
        path,
        TunnelExtras {
            rss_before_mib,
            ..extras
        },
    ))
}

pub(crate) async fn tunnel_roles<P: Product>(
    n: usize,
    a: &InvalidationArgs,
    dir: &Path,
    url: &str,
    keys: &[String],
    started: Instant,
    roles: &mut Vec<P::Role>,
) -> anyhow::Result<(PathResult, TunnelExtras)> {
    // Control first, so the engines find it at their first refresh.
    eprintln!("    (warnings from control's first discovery refresh, made before any engine joined, are expected)");
    let file = dir.join("control.yaml");
    std::fs::write(
        &file,
        format!(
            "{}{}",
            seed_yaml::mesh_yaml(url, &keys[0], "inferadb-control-0", &dir.join("c"), true),
            control_yaml()
        ),
    )
    .with_context(|| format!("writing {}", file.display()))?;
    let control = bounded(60, "us-west-1 control start", async {
        P::start_control(file)
            .await
            .context("us-west-1 control could not start")
    })
    .await?;
    let control_addr = control.http_addr();
    let discovery = control.discovery();
    roles.push(control);

    let mut cfgs = Vec::with_capacity(n);
    for i in 0..n {
        let (region, host) = placement(i);
        let region_key = &keys[REGIONS.iter().position(|r| *r == region).unwrap_or(0)];
        let file = dir.join(format!("{region}-{host}.yaml"));
        std::fs::write(
            &file,
            format!(
                "{}{}",
                seed_yaml::mesh_yaml(url, region_key, &host, &dir.join(format!("e{i}")), true),
                engine_yaml(region)
            ),
        )
        .with_context(|| format!("writing {}", file.display()))?;
        cfgs.push((format!("{region} {host}"), file));
    }
    let engines = start_all("engines", n, a.concurrency, |i| {
        let (label, cfg) = cfgs[i].clone();
        async move {
            match tokio::time::timeout(Duration::from_secs(90), P::start_engine(cfg)).await {
                Ok(r) => r.with_context(|| format!("{label} could not start")),
                Err(_) => bail!("{label}: not running within 90 s"),
            }
        }
    })
    .await;
    let engines = match engines {
        Ok(e) => e,
        Err((e, some)) => {
            roles.extend(some);
            return Err(e);
        }
    };
    let mut recorders = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for (i, e) in engines.iter().enumerate() {
        let (region, host) = placement(i);
        labels.push(format!(
            "engine {region} {host} ({})",
            e.node()
                .ipv4()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into())
        ));
        recorders.push(e.received().context("an engine without a receiver")?);
    }
    roles.extend(engines);

    let want = per_region(n);
    step(&format!(
        "us-west-1 control discovering {n} engines over MagicDNS ({})",
        want.iter()
            .map(|(r, c)| format!("{r}: {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    bounded(90, "control discovering every engine", async {
        loop {
            let set = discovery.refresh_now().await?;
            let by = set.healthy_by_cluster();
            if want
                .iter()
                .all(|(r, c)| by.get(*r).map(Vec::len) == Some(*c))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await?;
    let start_s = round3(started.elapsed().as_secs_f64());
    let rss = rss_mib();
    let idle_cpu_percent = {
        let (c0, t0) = (cpu_time(), Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        match (c0, cpu_time()) {
            (Some(a), Some(b)) => Some(round3(
                100.0 * b.saturating_sub(a).as_secs_f64() / t0.elapsed().as_secs_f64(),
            )),
            _ => None,
        }
    };
    let mut hop = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (status, _) =
            crate::util::http(control_addr, "GET", "/healthz", None, String::new()).await?;
        if status != 200 {
            bail!("control's /healthz answered {status}");
        }
        hop.push(ms(t.elapsed()));
    }

    step(&format!(
        "tunnel: {} rounds of POST /v1/vaults → {n} engines ({} warm-up)",
        a.rounds, a.warmup
    ));
    let r = run_rounds(&recorders, &labels, a.warmup, a.rounds, |i| async move {
        let (status, body) = crate::util::http(
            control_addr,
            "POST",
            "/v1/vaults",
            Some(TOKEN),
            format!(r#"{{"name": "bench-{i}"}}"#),
        )
        .await
        .context("POST /v1/vaults")?;
        if status != 201 {
            bail!("POST /v1/vaults answered {status}: {}", body.trim());
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).context("POST /v1/vaults answer is not JSON")?;
        let inv = &v["invalidation"];
        if inv["delivered"].as_u64() != Some(n as u64) || inv["targets"].as_u64() != Some(n as u64)
        {
            bail!("control delivered to fewer than the {n} engines: {body}");
        }
        inv["event_id"]
            .as_str()
            .map(str::to_string)
            .context("POST /v1/vaults answer has no invalidation.event_id")
    })
    .await?;
    Ok((
        PathResult {
            path: "tunnel",
            description:
                "POST /v1/vaults to control → fan-out over the tailnet → last engine's receipt",
            last_receipt: Latency::of(r.last),
            answer: Latency::of(r.answer),
            cold_ms: r.cold,
            receipts: n * r.sent.len(),
            exactly_once: true,
        },
        TunnelExtras {
            start_s,
            control_hop_p50_ms: Latency::of(hop).p50_ms,
            rss_before_mib: None,
            rss_mib: rss,
            idle_cpu_percent,
        },
    ))
}
