//! `inferadb-mesh coordinator serve`: the embedded coordination server in
//! the foreground.

use clap::Args;
use coordinator::names::BaseDomain;
use coordinator::server::Server;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Options of `coordinator serve`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # A loopback coordinator for tests (plain HTTP; clients use http://127.0.0.1:8080):
  inferadb-mesh coordinator serve --listen 127.0.0.1:8080 --state-dir /tmp/coord

  # A real one, with TLS, a policy file and the cluster's MagicDNS domain
  # (nodes reach its DERP relay and STUN at coord.example.com):
  inferadb-mesh coordinator serve --listen 0.0.0.0:443 --state-dir /var/lib/coord \\
      --tls-cert /etc/coord/cert.pem --tls-key /etc/coord/key.pem \\
      --derp-host coord.example.com \\
      --policy /etc/coord/policy.hujson --base-domain us-west-1.ts.net

  # Then let nodes join:
  inferadb-mesh coordinator authkey create --state-dir /var/lib/coord --reusable
  TS_AUTHKEY=tskey-auth-... <tsnet program with ControlURL=https://coord.example.com>

  # Probes and Prometheus: GET /healthz (any listener), GET /metrics
  # (--metrics-listen, or the main listener from loopback):
  inferadb-mesh coordinator serve ... --metrics-listen 0.0.0.0:9090

  # Operating it (beside the running server, on the same --state-dir):
  inferadb-mesh coordinator nodes list|delete|expire|rename --state-dir /var/lib/coord ...
  inferadb-mesh coordinator authkey list|expire --state-dir /var/lib/coord ...")]
pub struct ServeArgs {
    /// Address to listen on (HTTP, or HTTPS with --tls-cert/--tls-key).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The coordinator's state directory (created if missing; holds the
    /// SQLite database and the coordinator's Noise key).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// TLS certificate chain (PEM). Needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Access policy file (Tailscale-style ACLs, HuJSON). Without it every
    /// node may reach every node. SIGHUP reloads it (an invalid file is
    /// reported and the running policy kept); nodes get their new packet
    /// filters at once.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// MagicDNS base domain: nodes are named <host>.<domain> (stored; the
    /// default is the stored one, else tailnet.internal).
    #[arg(long)]
    pub base_domain: Option<BaseDomain>,
    /// Where nodes reach this server's DERP relay (TCP) and STUN (UDP),
    /// both on the --listen port: an IP address, or a DNS name matching the
    /// TLS certificate. Default: the --listen address, or 127.0.0.1 when
    /// that is 0.0.0.0 (only nodes on this machine can use the relay then).
    #[arg(long, value_name = "HOST", conflicts_with = "derp_map")]
    pub derp_host: Option<String>,
    /// Send nodes this DERP map (Tailscale's DERPMap JSON: regions of
    /// relays and STUN servers, e.g. one `derper` per cloud region)
    /// instead of one region for this server's own relay. List this
    /// server in it to keep using its relay. Nodes home at the region
    /// with the lowest STUN latency and reach a peer through the peer's
    /// home region.
    #[arg(long, value_name = "FILE")]
    pub derp_map: Option<PathBuf>,
    /// The DERP relay serves only nodes registered with this coordinator;
    /// also serve the node keys in FILE (one `nodekey:<hex>` per line, `#`
    /// comments): nodes of other coordinators whose DERP map names this
    /// relay.
    #[arg(long, value_name = "FILE", conflicts_with = "derp_open")]
    pub derp_allow_keys: Option<PathBuf>,
    /// Let any node key use the DERP relay, as Go's derper does without
    /// --verify-clients: for a relay-only coordinator shared by nodes of
    /// other coordinators. Anyone who can reach it can relay through it.
    #[arg(long)]
    pub derp_open: bool,
    /// Connections served at once (control, DERP, /key), all sources.
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    pub max_connections: usize,
    /// Connections served at once from one source IP address (a cluster
    /// behind one NAT shares one).
    #[arg(long, value_name = "N", default_value_t = 4_096)]
    pub max_connections_per_ip: usize,
    /// Seconds a client may take to send a request's headers (idle and
    /// slowloris connections are closed after it).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a connection may go with no bytes either way.
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub idle_timeout: u64,
    /// Also serve GET /healthz and GET /metrics (Prometheus) on this
    /// address, plain HTTP, for a scraper inside the cluster. The main
    /// listener answers /healthz to anyone and /metrics to loopback
    /// clients only.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bytes a second each DERP client may send (framing included),
    /// advertised in ServerInfo as Go's TokenBucketBytesPerSecond and
    /// enforced by reading no faster; 0: no limit (Go's derper).
    #[arg(long, value_name = "BYTES", default_value_t = coordinator::server::derp::DEFAULT_RATE_BYTES_PER_SEC)]
    pub derp_rate_limit: u32,
    /// The burst over --derp-rate-limit (TokenBucketBytesBurst).
    #[arg(long, value_name = "BYTES", default_value_t = coordinator::server::derp::DEFAULT_RATE_BURST_BYTES)]
    pub derp_rate_burst: u32,
}

/// Reads `--derp-allow-keys`: one node key per line, blank lines and `#`
/// comments skipped; a bad line is named.
fn load_allowed_keys(
    path: &std::path::Path,
) -> anyhow::Result<std::collections::HashSet<tailnet_wire::PublicKey>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--derp-allow-keys {}: {e}", path.display()))?;
    let mut keys = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let key = line.parse::<tailnet_wire::PublicKey>().map_err(|e| {
            anyhow::anyhow!(
                "--derp-allow-keys {} line {}: not a node key (nodekey:<64 hex>): {e}",
                path.display(),
                i + 1
            )
        })?;
        keys.insert(key);
    }
    Ok(keys)
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before anything else: a second server on the same database would
    // fight the first over every node's online state.
    let _lock = coordinator::lock::ServeLock::acquire(&args.state_dir)?;
    let store = Arc::new(coordinator::Store::open(&args.state_dir)?);
    let mut builder = Server::builder(store);
    let mut derp_config = coordinator::server::derp::DerpConfig::default();
    if args.derp_open {
        derp_config.verify_clients = false;
        tracing::warn!("--derp-open: the DERP relay serves any node key");
    }
    if let Some(path) = &args.derp_allow_keys {
        derp_config.allowed_keys = load_allowed_keys(path)?;
        tracing::info!(path = %path.display(), keys = derp_config.allowed_keys.len(), "DERP allow-list loaded");
    }
    derp_config.rate_bytes_per_sec = args.derp_rate_limit;
    derp_config.rate_burst_bytes = args.derp_rate_burst;
    builder = builder.derp_config(derp_config);
    if args.max_connections == 0
        || args.max_connections_per_ip == 0
        || args.header_timeout == 0
        || args.idle_timeout == 0
    {
        anyhow::bail!("--max-connections, --max-connections-per-ip, --header-timeout and --idle-timeout must be at least 1");
    }
    builder = builder.limits(coordinator::server::Limits {
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        header_read_timeout: std::time::Duration::from_secs(args.header_timeout),
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
        ..coordinator::server::ServerConfig::default().limits
    });
    if let Some(path) = &args.policy {
        let policy = coordinator::policy::Policy::load(path)?;
        builder = builder.policy(Arc::new(policy));
    }
    if let Some(d) = args.base_domain {
        builder = builder.base_domain(d);
    }
    if let Some(path) = &args.derp_map {
        let map = coordinator::server::load_derp_map(path)?;
        let regions = map.regions.as_ref().map_or(0, |r| r.len());
        tracing::info!(path = %path.display(), regions, "DERP map loaded");
        builder = builder.derp_map(map);
    }
    match &args.derp_host {
        Some(h)
            if h.trim().is_empty()
                || h.contains(['/', ' '])
                || (h.contains(':') && h.parse::<std::net::IpAddr>().is_err()) =>
        {
            anyhow::bail!(
                "--derp-host {h:?}: give a host name or an IP address (no scheme, no port)"
            )
        }
        Some(h) => builder = builder.derp_host(h.clone()),
        None if args.listen.ip().is_unspecified() && args.derp_map.is_none() => {
            tracing::warn!(
                listen = %args.listen,
                "the DERP map points nodes at 127.0.0.1: nodes on other machines cannot use the relay or STUN; pass --derp-host"
            );
        }
        None => {}
    }
    let scheme = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            builder = builder.tls(coordinator::server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
            "https"
        }
        _ => "http",
    };
    let metrics_listener = match args.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| anyhow::anyhow!("--metrics-listen {a}: {e}"))?,
        ),
        None => None,
    };
    let mut server = builder.bind(args.listen).await?;
    let addr = server.local_addr();
    tracing::info!(%addr, "coordinator listening");
    if let Some(l) = metrics_listener {
        let maddr = l.local_addr()?;
        server.serve_metrics(l);
        tracing::info!(addr = %maddr, "coordinator metrics listening");
        println!("coordinator metrics on http://{maddr}/metrics");
    }
    println!(
        "coordinator listening on {scheme}://{addr} (state in {})",
        args.state_dir.display()
    );
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            e = server.accept_failed() => {
                server.shutdown().await;
                return Err(anyhow::anyhow!("coordinator stopped accepting connections: {e}"));
            }
            _ = &mut stop => {
                tracing::info!("coordinator shutting down");
                server.shutdown().await;
                return Ok(());
            }
            _ = hup.recv() => match &args.policy {
                Some(path) => match coordinator::policy::Policy::load(path) {
                    Ok(policy) => {
                        server.set_policy(Arc::new(policy));
                        tracing::info!(policy = %path.display(), "policy reloaded");
                        println!("policy reloaded from {}", path.display());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy not reloaded; the running one stays");
                    }
                },
                None => tracing::info!("SIGHUP: no --policy file to reload"),
            },
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
