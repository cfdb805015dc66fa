//! `inferadb-mesh bench invalidation`: how long a vault's cache
//! invalidation takes to reach every engine, through the tunnel and beside
//! the same fan-out over plain loopback HTTP, and how long one discovery
//! refresh of three clusters takes.
//!
//! - **tunnel**: the embedded coordinator; `N` engines spread round-robin
//!   over us-west-1, eu-west-1 and ap-southeast-1 and one control in
//!   us-west-1, each started in-process from YAML (the demo's shapes) by
//!   the product's roles ([`crate::Product`]), joined with its region's
//!   tagged key; control discovers the engines of all three clusters over
//!   MagicDNS. A round is
//!   `POST /v1/vaults` to control's HTTP port (bearer token), timed from
//!   just before the request until the last engine's receiver has recorded
//!   the event.
//! - **loopback**: the same `inferadb_invalidation::Sender` (same settings)
//!   over kernel TCP ([`TcpConnect`]) to `N` receivers served on
//!   127.0.0.1, timed from `Sender::send` to the last receipt. No tunnel,
//!   no control HTTP hop.
//! - **discovery**: a node of us-west-1 with 3 clusters × `E` online pods
//!   (real nodes, `inferadb-engine-<n>`, tagged per cluster) in its netmap;
//!   [`Discovery::refresh_now`] resolves the three service names through
//!   the node's MagicDNS over its virtual interface, as the roles do.
//!   Health checks are off.
//!
//! Every round checks that each engine applied the event exactly once; the
//! bench fails otherwise.

mod discovery;
mod rounds;
mod setup;
mod table;
mod tunnel;

use discovery::*;
use rounds::*;
use setup::*;
pub use setup::{control_yaml, engine_yaml};
pub use table::*;
use tunnel::*;

use crate::product::{Product, RunningRole};
use crate::seed_yaml::{self, Discovery as DiscoveryYaml};
use crate::util::bounded;
use anyhow::{bail, Context};
use clap::Args;
use inferadb_discovery::{Discovery, DiscoveryConfig};
use inferadb_invalidation::{
    Invalidation, Receiver, ReceiverConfig, ReceiverHandle, ReceiverMetrics, Recorder, Secret,
    Sender, SenderConfig, SenderMetrics, Target, Targets, TcpConnect,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The seed's three regions; control runs in the first.
pub const REGIONS: [&str; 3] = ["us-west-1", "eu-west-1", "ap-southeast-1"];
const SECRET: &str = "bench webhook secret, shared by control and the engines";
const TOKEN: &str = "bench-bearer-token";
const ENGINE_PORT: u16 = 8080;
const CONTROL_PORT: u16 = 9090;
/// The seed's `cache_invalidation.timeout_ms` / `retry_attempts`, on both
/// paths.
const TIMEOUT_MS: u64 = 5000;
const RETRIES: u32 = 2;
/// Longest a round may take before it counts as a missed event.
const ROUND_LIMIT: Duration = Duration::from_secs(15);
/// Largest engine count and endpoints per cluster accepted.
const MAX_NODES: usize = 200;

/// Arguments of `bench invalidation`.
#[derive(Debug, Args)]
pub struct InvalidationArgs {
    /// Engine counts to measure, comma-separated; each count is spread
    /// round-robin over us-west-1, eu-west-1 and ap-southeast-1.
    #[arg(long, value_delimiter = ',', default_value = "5,50")]
    engines: Vec<usize>,
    /// Timed rounds (vaults created) per engine count and path.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Untimed rounds before them; the first is reported as "cold" (on the
    /// tunnel it includes the WireGuard handshakes to every engine).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Endpoints (online nodes) per cluster for the discovery refresh,
    /// 3 clusters; 0 skips that part.
    #[arg(long, default_value_t = 20)]
    endpoints: usize,
    /// Discovery refreshes timed.
    #[arg(long, default_value_t = 200)]
    refreshes: usize,
    /// Nodes started at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Latencies of one path, ms.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub samples: usize,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 99th percentile (nearest rank: the worst sample below 100 samples).
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let rank = |p: f64| {
            if n == 0 {
                return 0.0;
            }
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            round3(ms[i])
        };
        Latency {
            samples: n,
            p50_ms: rank(0.5),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
            mean_ms: if n == 0 {
                0.0
            } else {
                round3(ms.iter().sum::<f64>() / n as f64)
            },
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One path at one engine count.
#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    /// `tunnel` or `loopback`.
    pub path: &'static str,
    /// What was timed.
    pub description: &'static str,
    /// Send → the last engine's receiver has recorded the event.
    pub last_receipt: Latency,
    /// Send → the sender's answer (tunnel: control's 201 after its fan-out;
    /// loopback: `Sender::send` returning).
    pub answer: Latency,
    /// The first warm-up round, send → last receipt.
    pub cold_ms: Option<f64>,
    /// Receipts verified: engines × (warm-up + timed rounds), each event
    /// applied exactly once by each engine.
    pub receipts: usize,
    /// Always true in a report: the bench fails otherwise.
    pub exactly_once: bool,
}

/// Both paths at one engine count.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutCase {
    /// Engines.
    pub engines: usize,
    /// Engines per region.
    pub regions: BTreeMap<&'static str, usize>,
    /// Through the tunnel.
    pub tunnel: PathResult,
    /// Plain loopback HTTP.
    pub loopback: PathResult,
    /// tunnel p50 / loopback p50 (last receipt).
    pub ratio_p50: f64,
    /// tunnel p99 / loopback p99 (last receipt).
    pub ratio_p99: f64,
    /// Coordinator, control and engines started and control discovering
    /// every engine, s.
    pub start_s: f64,
    /// `GET /healthz` to control's HTTP port on loopback, p50 ms: the part
    /// of the tunnel figure that is the extra HTTP hop to control.
    pub control_hop_p50_ms: f64,
    /// This process's resident memory before the coordinator and nodes
    /// started, MiB (heap kept from earlier parts included).
    pub rss_before_mib: Option<f64>,
    /// The same with every node up, MiB.
    pub rss_mib: Option<f64>,
    /// CPU of this process with every node up and idle, over 2 s, % of
    /// one core.
    pub idle_cpu_percent: Option<f64>,
}

/// The discovery refresh.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryCase {
    /// Clusters discovered.
    pub clusters: usize,
    /// Endpoints per cluster.
    pub endpoints_per_cluster: usize,
    /// Always false: no `/healthz` checks, resolution only.
    pub health_checks: bool,
    /// The pods (and the discovering node) joined, s.
    pub start_s: f64,
    /// `Discovery::refresh_now` (every cluster resolved, the set published).
    pub refresh: Latency,
    /// One cluster's service name through `node.resolve` (A and AAAA).
    pub lookup: Latency,
    /// This process's resident memory before the coordinator and nodes
    /// started, MiB (heap kept from earlier parts included).
    pub rss_before_mib: Option<f64>,
    /// The same with every node up, MiB.
    pub rss_mib: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidationReport {
    /// Timed rounds per path.
    pub rounds: usize,
    /// Untimed rounds first.
    pub warmup: usize,
    /// One per engine count.
    pub fanout: Vec<FanoutCase>,
    /// The discovery refresh, unless skipped.
    pub discovery: Option<DiscoveryCase>,
}

/// Runs the benchmark and prints the table (or JSON).
pub async fn run<P: Product>(a: InvalidationArgs) -> anyhow::Result<()> {
    if a.engines.is_empty() || a.engines.iter().any(|n| *n == 0 || *n > MAX_NODES) {
        bail!("--engines values must be between 1 and {MAX_NODES}");
    }
    if a.rounds == 0 || a.rounds > 10_000 {
        bail!("--rounds must be between 1 and 10000");
    }
    if a.warmup > 100 {
        bail!("--warmup must be at most 100");
    }
    if a.endpoints > MAX_NODES {
        bail!("--endpoints must be at most {MAX_NODES}");
    }
    if a.endpoints > 0 && (a.refreshes == 0 || a.refreshes > 10_000) {
        bail!("--refreshes must be between 1 and 10000");
    }
    if a.concurrency == 0 || a.concurrency > 64 {
        bail!("--concurrency must be between 1 and 64");
    }
    let most = a
        .engines
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(REGIONS.len() * a.endpoints);
    // Per node: a UDP socket, HTTP listeners, the local API, control
    // connections at both ends; plus the fan-out's connections.
    raise_open_files(16 * most as u64 + 1024);
    let dir = tempfile::Builder::new()
        .prefix("imb-inv-")
        .tempdir()
        .context("temporary state directory")?;
    let mut fanout = Vec::new();
    for (k, &n) in a.engines.iter().enumerate() {
        step(&format!(
            "loopback: {} rounds of Sender::send → {n} receivers on 127.0.0.1 ({} warm-up)",
            a.rounds, a.warmup
        ));
        let base = loopback(n, a.warmup, a.rounds).await?;
        let case_dir = dir.path().join(format!("n{k}"));
        std::fs::create_dir_all(&case_dir)
            .with_context(|| format!("creating {}", case_dir.display()))?;
        step(&format!(
            "tunnel: coordinator, us-west-1 control and {n} engines over 3 regions"
        ));
        let (tun, extras) = tunnel::<P>(n, &a, &case_dir).await?;
        fanout.push(FanoutCase {
            engines: n,
            regions: per_region(n),
            ratio_p50: ratio(tun.last_receipt.p50_ms, base.last_receipt.p50_ms),
            ratio_p99: ratio(tun.last_receipt.p99_ms, base.last_receipt.p99_ms),
            tunnel: tun,
            loopback: base,
            start_s: extras.start_s,
            control_hop_p50_ms: extras.control_hop_p50_ms,
            rss_before_mib: extras.rss_before_mib,
            rss_mib: extras.rss_mib,
            idle_cpu_percent: extras.idle_cpu_percent,
        });
    }
    let discovery = if a.endpoints > 0 {
        let d = dir.path().join("discovery");
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        step(&format!(
            "discovery: coordinator, a us-west-1 node and {} pods ({} per cluster)",
            REGIONS.len() * a.endpoints,
            a.endpoints
        ));
        Some(discovery(a.endpoints, a.refreshes, a.concurrency, &d).await?)
    } else {
        None
    };
    let report = InvalidationReport {
        rounds: a.rounds,
        warmup: a.warmup,
        fanout,
        discovery,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_table(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        let l = Latency::of(vec![3.0, 1.0, 2.0]);
        assert_eq!(
            (l.p50_ms, l.p99_ms, l.max_ms, l.mean_ms),
            (2.0, 3.0, 3.0, 2.0)
        );
        assert_eq!(Latency::of(Vec::new()).samples, 0);
    }

    #[test]
    fn engines_spread_over_the_regions() {
        let m = per_region(50);
        assert_eq!(m.values().sum::<usize>(), 50);
        assert_eq!(m["us-west-1"], 17);
        assert_eq!(m["ap-southeast-1"], 16);
        assert_eq!(placement(4), ("eu-west-1", "inferadb-engine-1".to_string()));
    }
}
