//! `inferadb-mesh up`: join a tailnet through a control server and run the
//! node in the foreground, with the local API on a unix socket for
//! `inferadb-mesh status`.

use crate::localapi;
use crate::services::{self, Service};
use crate::static_node::ReadyLine;
use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tailnet::Node;

/// Arguments of `inferadb-mesh up`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  # the embedded coordinator on this machine
  inferadb-mesh coordinator serve --listen 127.0.0.1:8080 --state-dir /var/lib/coord &
  KEY=$(inferadb-mesh coordinator authkey create --state-dir /var/lib/coord --tags tag:inferadb-us-west-1)
  inferadb-mesh up --control-url http://127.0.0.1:8080 --auth-key \"$KEY\" \\
      --hostname inferadb-engine-0 --state-dir /var/lib/inferadb-mesh
  # then, from another shell
  inferadb-mesh status --state-dir /var/lib/inferadb-mesh

  # curl a tailnet service through loopback; publish a local server
  inferadb-mesh up … --forward 127.0.0.1:9090:inferadb-control-0:9090 \\
      --expose 8080:127.0.0.1:8080
  curl http://127.0.0.1:9090/healthz

  # any program, any tailnet name: SOCKS5 and HTTP proxies on loopback
  inferadb-mesh up … --socks5 127.0.0.1:1080 --http-proxy 127.0.0.1:8888
  curl --socks5-hostname 127.0.0.1:1080 http://inferadb-control-0:9090/healthz
  curl -x http://127.0.0.1:8888 http://inferadb-control-0:9090/healthz

  # Tailscale or Headscale, key from a mounted secret
  inferadb-mesh up --control-url https://controlplane.tailscale.com \\
      --auth-key-file /etc/tailscale/authkey --hostname inferadb-control-0 \\
      --state-dir /var/lib/inferadb-mesh

Once joined it prints one JSON line on stdout (addresses, name, UDP port).
A restarted node with the same --state-dir rejoins without an auth key.")]
pub struct UpArgs {
    /// The control server: http://127.0.0.1:PORT (the embedded coordinator)
    /// or https://… (Tailscale, Headscale).
    #[arg(long, env = "INFERADB_MESH_CONTROL_URL")]
    control_url: String,
    /// Pre-auth key (tskey-auth-…). Prefer --auth-key-file or the
    /// environment so the key stays out of `ps`.
    #[arg(
        long,
        env = "INFERADB_MESH_AUTH_KEY",
        hide_env_values = true,
        conflicts_with = "auth_key_file"
    )]
    auth_key: Option<String>,
    /// A file holding the pre-auth key (e.g. a mounted Kubernetes secret).
    #[arg(long, value_name = "FILE")]
    auth_key_file: Option<PathBuf>,
    /// Host name to register (default: the machine's); the MagicDNS name
    /// is <hostname>.<tailnet domain>.
    #[arg(long)]
    hostname: Option<String>,
    /// Where the node keeps its keys and registration (0700/0600), and
    /// where the local API socket lives. One process per directory.
    #[arg(long, env = "INFERADB_MESH_STATE_DIR")]
    state_dir: PathBuf,
    /// Keep no identity: control removes the node soon after it leaves.
    #[arg(long)]
    ephemeral: bool,
    /// ACL tags to request (comma-separated tag:name).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// UDP address for WireGuard.
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    /// Serve a test service on the tailnet: echo:PORT, discard:PORT,
    /// sha256:PORT, source:PORT, udp-echo:PORT or http:PORT (repeatable).
    #[arg(long = "serve", value_name = "KIND:PORT")]
    serve: Vec<Service>,
    /// Also serve MagicDNS (UDP and TCP) on this OS address, e.g.
    /// 127.0.0.1:5353, for `dig @127.0.0.1 -p 5353` and co-located
    /// processes. MagicDNS at 100.100.100.100 inside the node is always on.
    #[arg(long, value_name = "ADDR:PORT")]
    dns_listen: Option<SocketAddr>,
    /// Carry TCP from a loopback port to a tailnet host, for programs that
    /// are not on the tailnet (curl, psql, a browser):
    /// 127.0.0.1:LOCALPORT:HOST:PORT, HOST a MagicDNS name or tailnet IP
    /// (repeatable).
    #[arg(long = "forward", value_name = "LOCAL:PORT:HOST:PORT")]
    forward: Vec<crate::forward::Forward>,
    /// Make a local server reachable on this node's tailnet address:
    /// TAILNETPORT:127.0.0.1:PORT (repeatable).
    #[arg(long = "expose", value_name = "TAILNETPORT:ADDR:PORT")]
    expose: Vec<crate::forward::Expose>,
    /// Serve a SOCKS5 proxy (RFC 1928, no authentication, CONNECT) on this
    /// loopback address: any program reaches tailnet names and addresses
    /// through it (`curl --socks5-hostname`, `socks5h://` proxies), names
    /// resolved by MagicDNS.
    #[arg(long, value_name = "ADDR:PORT")]
    socks5: Option<SocketAddr>,
    /// Serve an HTTP proxy (CONNECT tunnels and plain http:// requests) on
    /// this loopback address (`curl -x`, `HTTP_PROXY`).
    #[arg(long, value_name = "ADDR:PORT")]
    http_proxy: Option<SocketAddr>,
    /// Give up if not Running within this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// The line `up` prints once Running.
#[derive(Debug, Serialize)]
struct UpReady {
    state: &'static str,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socks5: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_proxy: Option<SocketAddr>,
    #[serde(flatten)]
    node: ReadyLine,
    socket: PathBuf,
}

fn read_auth_key(args: &UpArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.auth_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--auth-key-file {}: cannot read", path.display()))?;
        let key = text.trim().to_string();
        if key.is_empty() {
            anyhow::bail!("--auth-key-file {}: the file is empty", path.display());
        }
        return Ok(Some(key));
    }
    Ok(args.auth_key.clone().filter(|k| !k.trim().is_empty()))
}

/// Runs `up` until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let auth_key = read_auth_key(&args)?;
    // A proxy on a public address would open the tailnet to the network:
    // refuse it before joining.
    for (kind, addr) in [
        (crate::proxy::Kind::Socks5, args.socks5),
        (crate::proxy::Kind::Http, args.http_proxy),
    ] {
        if let Some(a) = addr {
            crate::proxy::check_loopback(kind, a)?;
        }
    }
    let mut builder = Node::builder()
        .control_url(args.control_url.clone())
        .state_dir(args.state_dir.clone())
        .ephemeral(args.ephemeral)
        .tags(args.tags.clone())
        .listen(args.listen)
        .timeout(Duration::from_secs(args.timeout));
    if let Some(k) = auth_key {
        builder = builder.auth_key(k);
    }
    if let Some(h) = &args.hostname {
        builder = builder.hostname(h.clone());
    }
    if let Some(a) = args.dns_listen {
        builder = builder.dns_listen(a);
    }
    crate::cli::progress(&format!("joining the tailnet at {} …", args.control_url));
    let node = builder.up().await?;
    services::spawn_on_node(&node, &args.serve)?;
    crate::forward::start_exposes(&node, &args.expose)?;
    crate::forward::start_forwards(&node, &args.forward).await?;
    for f in &args.forward {
        crate::cli::progress(&format!("forwarding {f}"));
    }
    for e in &args.expose {
        crate::cli::progress(&format!("exposing {e}"));
    }
    let limits = crate::proxy::ProxyLimits::default();
    let socks5 = match args.socks5 {
        Some(a) => Some(crate::proxy::start(&node, crate::proxy::Kind::Socks5, a, limits).await?),
        None => None,
    };
    let http_proxy = match args.http_proxy {
        Some(a) => Some(crate::proxy::start(&node, crate::proxy::Kind::Http, a, limits).await?),
        None => None,
    };
    if let Some(a) = socks5 {
        crate::cli::progress(&format!("SOCKS5 proxy on {a}"));
    }
    if let Some(a) = http_proxy {
        crate::cli::progress(&format!("HTTP proxy on {a}"));
    }
    let socket = localapi::socket_path(&args.state_dir);
    let source_node = node.clone();
    let _api = localapi::serve_with_dns(
        &socket,
        Arc::new(move || source_node.status()),
        Some(localapi::node_dns_source(&node)),
        Some(node.clone()),
    )
    .await
    .with_context(|| format!("local API socket {}", socket.display()))?;
    let status = node.status();
    let ready = UpReady {
        state: "Running",
        name: status.self_.dns_name.clone(),
        dns_listen: node.dns_listen_addr(),
        socks5,
        http_proxy,
        node: ReadyLine::of(&node),
        socket,
    };
    println!("{}", serde_json::to_string(&ready)?);
    crate::cli::progress(&format!(
        "running as {} ({}); `inferadb-mesh status --state-dir {}` shows peers",
        ready.name.trim_end_matches('.'),
        node.ipv4().map(|a| a.to_string()).unwrap_or_default(),
        args.state_dir.display()
    ));
    crate::cli::shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}
