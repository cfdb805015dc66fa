//! `inferadb-mesh bench tunnel`: single-stream TCP throughput and 64-byte
//! round-trip latency through our path and, in the same run, through the
//! peers installed here (wireguard-go + kernel TCP between two network
//! namespaces; onetun in front of wireguard-go). Every path is measured
//! with the same client code over the same services; only the transport
//! differs.

use crate::services::{Service, ServiceKind};
use crate::static_node::ReadyLine;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tailnet::{Node, NodeConfig, PeerConfig, PrivateKey};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Port of the bulk source service on every path.
pub const SOURCE_PORT: u16 = 5201;
/// Echo service port.
pub const ECHO_PORT: u16 = 5202;
/// Port of the windowed discard service (upload direction).
pub const DISCARD_PORT: u16 = 5203;

/// One path's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathResult {
    /// `tailnet` (ours), `wireguard-go`, `onetun`.
    pub name: String,
    /// Single-stream TCP throughput, server → client.
    pub gbit_per_s: Option<f64>,
    /// Single-stream TCP throughput, client → server (None where the path
    /// cannot carry a fast writer: onetun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_gbit_per_s: Option<f64>,
    /// Median 64-byte round trip.
    pub rtt_p50_us: Option<f64>,
    /// 99th percentile 64-byte round trip.
    pub rtt_p99_us: Option<f64>,
    /// Why a path has no figures (not installed, not root, failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelReport {
    /// Each path measured (ours first).
    pub paths: Vec<PathResult>,
}

/// Options of `bench tunnel`.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// How long the throughput test pushes data on each path.
    pub duration: Duration,
    /// Round trips measured on each path.
    pub rtt_samples: usize,
    /// Which paths to run (`tailnet`, `wireguard-go`, `onetun`).
    pub paths: Vec<String>,
    /// The executable that serves `node` and `bench-server` (this binary).
    pub exe: PathBuf,
    /// Tunnel MTU for our path.
    pub mtu: usize,
}

/// Reads from a source service for `duration` from its first byte; returns
/// Gbit/s received (goodput). The direction is server → client on every
/// path, which needs no half-close and no pacing from the client: onetun
/// mishandles both (its event bus overflows under a fast local writer).
pub async fn measure_throughput<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    duration: Duration,
) -> anyhow::Result<f64> {
    s.write_all(&u64::MAX.to_be_bytes()).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let first = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .context("no data from the source service within 30 s")??;
    if first == 0 {
        bail!("the source service closed at once");
    }
    let start = tokio::time::Instant::now();
    let end = start + duration;
    let mut total = 0u64;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) => bail!("the source service closed early"),
            Ok(Ok(n)) => total += n as u64,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(total as f64 * 8.0 / duration.as_secs_f64() / 1e9)
}

/// Most bytes one upload run writes: a path that buffers without bound
/// must not take the machine's memory with it.
const MAX_PUSH: u64 = 8 << 30;

/// Pushes data to a discard service for `duration`; returns Gbit/s as the
/// receiver counted it within its window (no half-close needed).
pub async fn measure_upload<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    duration: Duration,
) -> anyhow::Result<f64> {
    let (mut r, mut w) = tokio::io::split(s);
    w.write_all(&(duration.as_millis() as u64).to_be_bytes())
        .await?;
    let writer = async {
        let chunk = vec![0x5au8; 256 * 1024];
        let mut sent = 0u64;
        while sent < MAX_PUSH && w.write_all(&chunk).await.is_ok() {
            sent += chunk.len() as u64;
        }
        // Keep the stream open until the count is read.
        std::future::pending::<()>().await
    };
    let reader = async {
        let mut count = [0u8; 8];
        r.read_exact(&mut count)
            .await
            .context("discard service did not report its byte count")?;
        anyhow::Ok(u64::from_be_bytes(count))
    };
    let count = tokio::time::timeout(duration * 3 + Duration::from_secs(30), async {
        tokio::select! {
            c = reader => c,
            () = writer => unreachable!("the writer waits forever"),
        }
    })
    .await
    .context("no byte count from the discard service in time")??;
    Ok(count as f64 * 8.0 / duration.as_secs_f64() / 1e9)
}

/// Sends 64-byte messages to an echo service one at a time; returns the
/// p50 and p99 round trip in microseconds.
pub async fn measure_rtt<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
    let msg = [0x42u8; 64];
    let mut buf = [0u8; 64];
    // Warm up: the first round trips pay for handshakes and slow start.
    for _ in 0..20 {
        s.write_all(&msg).await?;
        s.read_exact(&mut buf).await?;
    }
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut buf).await?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Ok((pct(0.50), pct(0.99)))
}

/// Result of `bench-client` (kernel TCP), printed as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientResult {
    /// Gbit/s, server → client.
    pub gbit_per_s: f64,
    /// Gbit/s, client → server.
    pub upload_gbit_per_s: f64,
    /// p50 µs.
    pub rtt_p50_us: f64,
    /// p99 µs.
    pub rtt_p99_us: f64,
}

/// The kernel-TCP client used for the peers' paths.
pub async fn kernel_client(
    target: IpAddr,
    duration: Duration,
    samples: usize,
) -> anyhow::Result<ClientResult> {
    let s = tokio::net::TcpStream::connect((target, SOURCE_PORT)).await?;
    s.set_nodelay(true)?;
    let gbit = measure_throughput(s, duration).await?;
    let s = tokio::net::TcpStream::connect((target, DISCARD_PORT)).await?;
    s.set_nodelay(true)?;
    let up = measure_upload(s, duration).await?;
    let s = tokio::net::TcpStream::connect((target, ECHO_PORT)).await?;
    s.set_nodelay(true)?;
    let (p50, p99) = measure_rtt(s, samples).await?;
    Ok(ClientResult {
        gbit_per_s: gbit,
        upload_gbit_per_s: up,
        rtt_p50_us: p50,
        rtt_p99_us: p99,
    })
}

fn measurement_services() -> Vec<Service> {
    vec![
        Service {
            kind: ServiceKind::Source,
            port: SOURCE_PORT,
        },
        Service {
            kind: ServiceKind::Echo,
            port: ECHO_PORT,
        },
        Service {
            kind: ServiceKind::Discard,
            port: DISCARD_PORT,
        },
    ]
}

/// Runs every requested path and returns the report.
pub async fn run_tunnel(opts: &TunnelOptions) -> TunnelReport {
    let mut paths = Vec::new();
    for name in &opts.paths {
        eprintln!("bench: measuring {name} ...");
        let r = match name.as_str() {
            "tailnet" => tailnet_path(opts).await,
            "tailnet-derp" => tailnet_derp_path(opts).await,
            "wireguard-go" => wireguard_go_path(opts).await,
            "onetun" => onetun_path(opts).await,
            "tailnet-wireguard-go" => tailnet_to_wireguard_go_path(opts).await,
            other => Err(anyhow::anyhow!("unknown path {other:?}")),
        };
        paths.push(match r {
            Ok(mut p) => {
                p.name = name.clone();
                p
            }
            Err(e) => {
                eprintln!("bench: {name}: skipped: {e:#}");
                PathResult {
                    name: name.clone(),
                    gbit_per_s: None,
                    upload_gbit_per_s: None,
                    rtt_p50_us: None,
                    rtt_p99_us: None,
                    skipped: Some(format!("{e:#}")),
                }
            }
        });
    }
    TunnelReport { paths }
}

/// Prints the side-by-side table, with our ratio to each other path.
pub fn print_table(report: &TunnelReport) {
    let ours = report.paths.iter().find(|p| p.name == "tailnet");
    println!(
        "{:<21} {:>9} {:>9} {:>11} {:>11}   tailnet vs this path",
        "path", "down Gb/s", "up Gb/s", "RTT p50 µs", "RTT p99 µs"
    );
    let f = |v: Option<f64>, prec: usize| match v {
        Some(x) => format!("{x:.prec$}"),
        None => "-".into(),
    };
    for p in &report.paths {
        let ratio = match (ours, p.name.as_str()) {
            (_, "tailnet") => "(ours)".to_string(),
            (Some(o), _) => match (o.gbit_per_s, p.gbit_per_s, o.rtt_p50_us, p.rtt_p50_us) {
                (Some(a), Some(b), Some(ra), Some(rb)) if b > 0.0 && ra > 0.0 => {
                    format!("{:.2}x throughput, {:.2}x lower p50 RTT", a / b, rb / ra)
                }
                _ => p
                    .skipped
                    .clone()
                    .map(|s| format!("skipped: {s}"))
                    .unwrap_or_default(),
            },
            _ => String::new(),
        };
        println!(
            "{:<21} {:>9} {:>9} {:>11} {:>11}   {}",
            p.name,
            f(p.gbit_per_s, 2),
            f(p.upload_gbit_per_s, 2),
            f(p.rtt_p50_us, 0),
            f(p.rtt_p99_us, 0),
            ratio
        );
    }
}

/// A child process killed when dropped.
struct Child(tokio::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn tunnel_addrs(n: u8) -> Vec<IpAddr> {
    vec![IpAddr::from([100, 64, 250, n])]
}

/// Ours: two nodes in two processes over loopback UDP. Their peers have
/// disco keys, as every peer of a node joined through control has, so the
/// figures are those of the disco-trusted direct path.
async fn tailnet_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
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
    ca.disco_key = Some(da);
    let mut cb = NodeConfig::new(kb, tunnel_addrs(2));
    cb.listen = "127.0.0.1:0".parse()?;
    cb.netstack.mtu = opts.mtu;
    cb.disco_key = Some(db);
    let node_a = Node::start(ca.clone()).await?;
    cb.peers.push(PeerConfig {
        public_key: ca.public_key(),
        endpoint: Some(node_a.listen_addr()),
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
    let mut cmd = tokio::process::Command::new(&opts.exe);
    cmd.arg("node").arg("--config").arg(&cfg_path);
    for s in measurement_services() {
        cmd.arg("--serve").arg(s.to_string());
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = Child(
        cmd.spawn()
            .with_context(|| format!("cannot run {}", opts.exe.display()))?,
    );
    let stdout = child.0.stdout.take().context("peer stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("peer node did not start within 20 s")??
        .context("peer node exited before it was ready")?;
    let _ = std::fs::remove_dir_all(&dir);
    let ready: ReadyLine = serde_json::from_str(&line).context("peer ready line")?;
    node_a
        .set_peers(vec![PeerConfig {
            public_key: cb.public_key(),
            endpoint: Some(ready.listen),
            allowed_ips: vec!["100.64.250.2/32".parse()?],
            persistent_keepalive: None,
            disco_key: Some(db_pub),
            home_derp: 0,
            endpoints: Vec::new(),
        }])
        .await?;
    let r = measure_from_node(&node_a, tunnel_addrs(2)[0], opts).await;
    node_a.shutdown().await;
    drop(child);
    r
}

/// Our node ↔ our node through the embedded coordinator's DERP relay:
/// both join the coordinator (one process; the relay is the coordinator's
/// TCP connections), UDP between them is cut, and the same client code
/// measures the relayed path.
async fn tailnet_derp_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    let dir = tempfile::Builder::new()
        .prefix("inferadb-mesh-bench-derp-")
        .tempdir()?;
    let store = std::sync::Arc::new(coordinator::Store::open(dir.path())?);
    let key = coordinator::admin::authkey_create(
        &store,
        &coordinator::admin::AuthKeyCreateArgs {
            reusable: true,
            ephemeral: true,
            tags: vec!["tag:bench".into()],
            expiry: Some("1h".into()),
        },
        std::time::SystemTime::now(),
    )?
    .key;
    let server = coordinator::server::Server::builder(store)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let url = format!("http://{}", server.local_addr());
    let join = |host: &'static str| {
        let mut b = Node::builder()
            .control_url(url.clone())
            .auth_key(key.clone())
            .hostname(host)
            .ephemeral(true)
            .listen("127.0.0.1:0".parse().expect("address"))
            .timeout(Duration::from_secs(20));
        b = b.netstack(tailnet::NetstackConfig {
            mtu: opts.mtu,
            ..Default::default()
        });
        b.up()
    };
    let result = async {
        let a = join("bench-a").await?;
        let b = join("bench-b").await?;
        crate::services::spawn_on_node(&b, &measurement_services())?;
        a.debug_block_udp(vec![b.listen_addr()]).await?;
        b.debug_block_udp(vec![a.listen_addr()]).await?;
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
        let r = measure_from_node(&a, target, opts).await;
        a.shutdown().await;
        b.shutdown().await;
        r
    }
    .await;
    server.shutdown().await;
    result
}

/// Download, upload and round trips from our node to the measurement
/// services at `target`.
async fn measure_from_node(
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
    Ok(PathResult {
        name: String::new(),
        gbit_per_s: Some(gbit),
        upload_gbit_per_s: Some(up),
        rtt_p50_us: Some(p50),
        rtt_p99_us: Some(p99),
        skipped: None,
    })
}

fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    Ok(())
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

async fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Network namespaces, veths and wireguard-go instances of one benchmark,
/// removed on drop.
struct Netns {
    namespaces: Vec<String>,
    host_links: Vec<String>,
    children: Vec<std::process::Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
        for l in &self.host_links {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", l])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn require_wireguard_go() -> anyhow::Result<()> {
    if !is_root() {
        bail!("needs root for network namespaces");
    }
    for t in ["wireguard-go", "wg", "ip"] {
        if !have(t) {
            bail!("{t} is not installed (scripts/install-test-deps.sh installs it)");
        }
    }
    Ok(())
}

/// One wireguard-go instance: where it runs and its one peer.
struct WgSpec<'a> {
    ns: &'a str,
    ifname: &'a str,
    key: &'a PrivateKey,
    port: u16,
    addr: &'a str,
    peer_key: tailnet::PublicKey,
    peer_endpoint: Option<SocketAddr>,
    peer_allowed: &'a str,
}

/// Starts wireguard-go as `spec` says.
async fn start_wireguard_go(env: &mut Netns, spec: WgSpec<'_>) -> anyhow::Result<()> {
    let WgSpec {
        ns,
        ifname,
        key,
        port,
        addr,
        peer_key,
        peer_endpoint,
        peer_allowed,
    } = spec;
    let peer_key = &peer_key;
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "wireguard-go", "-f", ifname])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start wireguard-go")?;
    env.children.push(child);
    let sock = format!("/var/run/wireguard/{ifname}.sock");
    for _ in 0..100 {
        if std::path::Path::new(&sock).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keyfile = std::env::temp_dir().join(format!("{ifname}.key"));
    write_private(&keyfile, key.to_base64().as_bytes())?;
    let keyfile_s = keyfile.to_string_lossy().to_string();
    let port_s = port.to_string();
    let pk = peer_key.to_base64();
    let mut args = vec![
        "ip",
        "netns",
        "exec",
        ns,
        "wg",
        "set",
        ifname,
        "private-key",
        &keyfile_s,
        "listen-port",
        &port_s,
        "peer",
        &pk,
        "allowed-ips",
        peer_allowed,
    ];
    let ep;
    if let Some(e) = peer_endpoint {
        ep = e.to_string();
        args.push("endpoint");
        args.push(&ep);
    }
    let r = sh(&args).await;
    let _ = std::fs::remove_file(&keyfile);
    r?;
    sh(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname]).await?;
    sh(&["ip", "-n", ns, "link", "set", ifname, "up"]).await?;
    sh(&["ip", "-n", ns, "route", "add", peer_allowed, "dev", ifname]).await?;
    Ok(())
}

fn public_of(k: &PrivateKey) -> tailnet::PublicKey {
    NodeConfig::new(k.clone(), tunnel_addrs(1)).public_key()
}

/// wireguard-go + kernel TCP between two namespaces.
async fn wireguard_go_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    require_wireguard_go()?;
    let id = std::process::id() % 10000;
    let (na, nb) = (format!("ibA{id}"), format!("ibB{id}"));
    let mut env = Netns {
        namespaces: vec![],
        host_links: vec![],
        children: vec![],
    };
    for ns in [&na, &nb] {
        sh(&["ip", "netns", "add", ns]).await?;
        env.namespaces.push(ns.clone());
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]).await?;
    }
    let (va, vb) = (format!("vbA{id}"), format!("vbB{id}"));
    sh(&[
        "ip", "link", "add", &va, "netns", &na, "type", "veth", "peer", "name", &vb, "netns", &nb,
    ])
    .await?;
    sh(&[
        "ip",
        "-n",
        &na,
        "addr",
        "add",
        "198.18.250.1/24",
        "dev",
        &va,
    ])
    .await?;
    sh(&[
        "ip",
        "-n",
        &nb,
        "addr",
        "add",
        "198.18.250.2/24",
        "dev",
        &vb,
    ])
    .await?;
    sh(&["ip", "-n", &na, "link", "set", &va, "up"]).await?;
    sh(&["ip", "-n", &nb, "link", "set", &vb, "up"]).await?;
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (ia, ib) = (format!("wbA{id}"), format!("wbB{id}"));
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &na,
            ifname: &ia,
            key: &ka,
            port: 51820,
            addr: "100.64.251.1/32",
            peer_key: public_of(&kb),
            peer_endpoint: Some("198.18.250.2:51820".parse()?),
            peer_allowed: "100.64.251.2/32",
        },
    )
    .await?;
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &nb,
            ifname: &ib,
            key: &kb,
            port: 51820,
            addr: "100.64.251.2/32",
            peer_key: public_of(&ka),
            peer_endpoint: Some("198.18.250.1:51820".parse()?),
            peer_allowed: "100.64.251.1/32",
        },
    )
    .await?;
    run_kernel_pair(opts, &mut env, &nb, &na, "100.64.251.2", None).await
}

/// Starts `bench-server` in `server_ns` on `server_ip`, then runs
/// `bench-client` (in `client_ns`, or on the host when None) against
/// `target` (defaults to the server address).
async fn run_kernel_pair(
    opts: &TunnelOptions,
    env: &mut Netns,
    server_ns: &str,
    client_ns: &str,
    server_ip: &str,
    host_target: Option<IpAddr>,
) -> anyhow::Result<PathResult> {
    start_bench_server(env, &opts.exe, server_ns, server_ip).await?;
    let exe = opts.exe.to_string_lossy().to_string();
    let dur = opts.duration.as_secs_f64().to_string();
    let samples = opts.rtt_samples.to_string();
    let out = match host_target {
        None => {
            sh(&[
                "ip",
                "netns",
                "exec",
                client_ns,
                &exe,
                "bench-client",
                "--target",
                server_ip,
                "--duration",
                &dur,
                "--samples",
                &samples,
            ])
            .await?
        }
        Some(t) => {
            let r = kernel_client(t, opts.duration, opts.rtt_samples).await?;
            serde_json::to_string(&r)?
        }
    };
    let r: ClientResult = serde_json::from_str(out.lines().last().unwrap_or(""))
        .with_context(|| format!("bench-client printed {out:?}"))?;
    Ok(PathResult {
        name: String::new(),
        gbit_per_s: Some(r.gbit_per_s),
        upload_gbit_per_s: Some(r.upload_gbit_per_s),
        rtt_p50_us: Some(r.rtt_p50_us),
        rtt_p99_us: Some(r.rtt_p99_us),
        skipped: None,
    })
}

/// Starts `bench-server` (kernel TCP) inside `ns` on `ip` and gives it
/// time to listen.
async fn start_bench_server(
    env: &mut Netns,
    exe: &std::path::Path,
    ns: &str,
    ip: &str,
) -> anyhow::Result<()> {
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["bench-server", "--bind", ip])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start bench-server")?;
    env.children.push(server);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// A namespace `ib<tag><pid>` joined to the host by a veth pair: host end
/// 198.18.`third`.1/24, namespace end 198.18.`third`.2/24.
async fn host_namespace(tag: &str, third: u8) -> anyhow::Result<(Netns, String)> {
    let id = std::process::id() % 10000;
    let ns = format!("ib{tag}{id}");
    let mut env = Netns {
        namespaces: vec![],
        host_links: vec![],
        children: vec![],
    };
    sh(&["ip", "netns", "add", &ns]).await?;
    env.namespaces.push(ns.clone());
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]).await?;
    let low = tag.to_lowercase();
    let (vh, vn) = (format!("v{low}H{id}"), format!("v{low}N{id}"));
    sh(&[
        "ip", "link", "add", &vh, "type", "veth", "peer", "name", &vn, "netns", &ns,
    ])
    .await?;
    env.host_links.push(vh.clone());
    let (host, inner) = (
        format!("198.18.{third}.1/24"),
        format!("198.18.{third}.2/24"),
    );
    sh(&["ip", "addr", "add", &host, "dev", &vh]).await?;
    sh(&["ip", "link", "set", &vh, "up"]).await?;
    sh(&["ip", "-n", &ns, "addr", "add", &inner, "dev", &vn]).await?;
    sh(&["ip", "-n", &ns, "link", "set", &vn, "up"]).await?;
    Ok((env, ns))
}

/// onetun (boringtun + smoltcp port forwarder) in front of wireguard-go:
/// the client speaks kernel TCP to onetun on loopback, onetun tunnels to
/// wireguard-go in a namespace where the server runs on kernel TCP.
async fn onetun_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    require_wireguard_go()?;
    if !have("onetun") {
        bail!("onetun is not installed (cargo install onetun)");
    }
    let id = std::process::id() % 10000;
    let (mut env, ns) = host_namespace("C", 252).await?;
    let (kw, ko) = (PrivateKey::generate(), PrivateKey::generate());
    let iface = format!("wbC{id}");
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &ns,
            ifname: &iface,
            key: &kw,
            port: 51820,
            addr: "100.64.252.2/32",
            peer_key: public_of(&ko),
            peer_endpoint: None,
            peer_allowed: "100.64.252.1/32",
        },
    )
    .await?;
    let (p1, p2) = (free_tcp_port()?, free_tcp_port()?);
    let onetun = std::process::Command::new("onetun")
        .arg(format!("127.0.0.1:{p1}:100.64.252.2:{SOURCE_PORT}"))
        .arg(format!("127.0.0.1:{p2}:100.64.252.2:{ECHO_PORT}"))
        .args(["--endpoint-addr", "198.18.252.2:51820"])
        .args(["--endpoint-public-key", &public_of(&kw).to_base64()])
        .args(["--private-key", &ko.to_base64()])
        .args(["--source-peer-ip", "100.64.252.1"])
        .args(["--keep-alive", "10"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            std::env::temp_dir().join("inferadb-mesh-bench-onetun.log"),
        )?)
        .spawn()
        .context("cannot start onetun")?;
    env.children.push(onetun);
    start_bench_server(&mut env, &opts.exe, &ns, "100.64.252.2").await?;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", p1)).await?;
    s.set_nodelay(true)?;
    let gbit = tokio::time::timeout(
        opts.duration * 4 + Duration::from_secs(30),
        measure_throughput(s, opts.duration),
    )
    .await
    .context("onetun throughput run timed out")??;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", p2)).await?;
    s.set_nodelay(true)?;
    let (p50, p99) =
        tokio::time::timeout(Duration::from_secs(60), measure_rtt(s, opts.rtt_samples))
            .await
            .context("onetun RTT run timed out")??;
    Ok(PathResult {
        name: String::new(),
        gbit_per_s: Some(gbit),
        upload_gbit_per_s: None,
        rtt_p50_us: Some(p50),
        rtt_p99_us: Some(p99),
        skipped: None,
    })
}

/// Our node on the host ↔ wireguard-go in a namespace with kernel TCP
/// behind it: interop speed, and how our stack receives from a foreign
/// sender.
async fn tailnet_to_wireguard_go_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    require_wireguard_go()?;
    let id = std::process::id() % 10000;
    let (mut env, ns) = host_namespace("D", 253).await?;
    let (kw, kn) = (PrivateKey::generate(), PrivateKey::generate());
    let mut cfg = NodeConfig::new(kn.clone(), vec![IpAddr::from([100, 64, 253, 1])]);
    cfg.listen = "198.18.253.1:0".parse()?;
    cfg.netstack.mtu = opts.mtu;
    let node = Node::start(cfg).await?;
    let iface = format!("wbD{id}");
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &ns,
            ifname: &iface,
            key: &kw,
            port: 51820,
            addr: "100.64.253.2/32",
            peer_key: public_of(&kn),
            peer_endpoint: Some(node.listen_addr()),
            peer_allowed: "100.64.253.1/32",
        },
    )
    .await?;
    node.set_peers(vec![PeerConfig {
        public_key: public_of(&kw),
        endpoint: Some("198.18.253.2:51820".parse()?),
        allowed_ips: vec!["100.64.253.2/32".parse()?],
        persistent_keepalive: None,
        disco_key: None,
        home_derp: 0,
        endpoints: Vec::new(),
    }])
    .await?;
    start_bench_server(&mut env, &opts.exe, &ns, "100.64.253.2").await?;
    let r = measure_from_node(&node, IpAddr::from([100, 64, 253, 2]), opts).await;
    node.shutdown().await;
    r
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
