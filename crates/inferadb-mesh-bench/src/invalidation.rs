//! `inferadb-mesh bench invalidation`: how long a vault's cache
//! invalidation takes to reach every engine, through the tunnel and beside
//! the same fan-out over plain loopback HTTP, and how long one discovery
//! refresh of three clusters takes.
//!
//! - **tunnel**: the embedded coordinator; `N` engines spread round-robin
//!   over us-west-1, eu-west-1 and ap-southeast-1 and one control in
//!   us-west-1, each started in-process with [`crate::roles`] from YAML
//!   (the demo's shapes), joined with its region's tagged key; control
//!   discovers the engines of all three clusters over MagicDNS. A round is
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

fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// CPU time this process has used (user + system).
fn cpu_time() -> Option<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Some(tv(u.user_time()) + tv(u.system_time()))
}

fn rss_mib() -> Option<f64> {
    crate::control::rss_bytes().map(|b| round3(b as f64 / (1024.0 * 1024.0)))
}

/// Raises the soft open-file limit towards `needed` (up to the hard one);
/// a lower limit is left for the OS to report if it is hit.
fn raise_open_files(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < needed {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, needed.min(hard), hard);
        }
    }
}

/// Starts `total` things, `concurrency` at once, printing progress; on
/// failure hands back what did start, so the caller can stop it.
async fn start_all<T, F, Fut>(
    what: &str,
    total: usize,
    concurrency: usize,
    make: F,
) -> Result<Vec<T>, (anyhow::Error, Vec<T>)>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..total {
        let gate = gate.clone();
        let fut = make(i);
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (i, fut.await)
        });
    }
    let every = (total / 5).max(1);
    let mut started: Vec<(usize, T)> = Vec::with_capacity(total);
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(t))) => {
                started.push((i, t));
                let n = started.len();
                if n.is_multiple_of(every) || n == total {
                    step(&format!("starting {total} {what}… {n}/{total}"));
                }
            }
            Ok((_, Err(e))) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("a start task failed: {e}"));
            }
        }
    }
    started.sort_by_key(|(i, _)| *i);
    let started = started.into_iter().map(|(_, t)| t).collect();
    match first_error {
        None => Ok(started),
        Some(e) => Err((e, started)),
    }
}

/// Stops roles concurrently.
async fn stop_roles<R: RunningRole>(roles: Vec<R>) {
    let mut set = tokio::task::JoinSet::new();
    for r in roles {
        set.spawn(r.shutdown());
    }
    while set.join_next().await.is_some() {}
}

/// Stops nodes concurrently.
async fn stop_nodes(nodes: Vec<tailnet::Node>) {
    let mut set = tokio::task::JoinSet::new();
    for n in nodes {
        set.spawn(async move { n.shutdown().await });
    }
    while set.join_next().await.is_some() {}
}

/// The embedded coordinator with one reusable key per region
/// (`tag:inferadb-<region>`).
async fn coordinator(
    dir: &Path,
) -> anyhow::Result<(coordinator::server::ServerHandle, String, Vec<String>)> {
    let store = Arc::new(coordinator::Store::open(&dir.join("coordinator"))?);
    let mut keys = Vec::new();
    for region in REGIONS {
        keys.push(
            coordinator::admin::authkey_create(
                &store,
                &coordinator::admin::AuthKeyCreateArgs {
                    reusable: true,
                    ephemeral: false,
                    tags: vec![format!("tag:inferadb-{region}")],
                    expiry: Some("2h".into()),
                },
                SystemTime::now(),
            )?
            .key,
        );
    }
    let server = coordinator::server::Server::builder(store)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let url = format!("http://{}", server.local_addr());
    Ok((server, url, keys))
}

/// An engine's `auth.discovery`: control, which runs in us-west-1 only.
pub fn engine_yaml(region: &str) -> String {
    let control = (REGIONS[0], "inferadb-control", CONTROL_PORT);
    let discovery = if region == REGIONS[0] {
        DiscoveryYaml {
            local_cluster: region,
            local: Some(format!(
                "{{type: tailscale, service_name: inferadb-control, port: {CONTROL_PORT}}}"
            )),
            ..DiscoveryYaml::default()
        }
    } else {
        DiscoveryYaml {
            local_cluster: region,
            local: Some("{type: none}".into()),
            remotes: vec![control],
            health_check: None,
        }
    };
    seed_yaml::engine_yaml(&discovery, SECRET)
}

/// Control's `cache_invalidation`: the engines of all three regions, no
/// health checks (the seed's default).
pub fn control_yaml() -> String {
    let discovery = DiscoveryYaml {
        local_cluster: REGIONS[0],
        remotes: REGIONS[1..]
            .iter()
            .map(|r| (*r, "inferadb-engine", ENGINE_PORT))
            .collect(),
        ..DiscoveryYaml::default()
    };
    seed_yaml::control_yaml(&discovery, TOKEN, TIMEOUT_MS, RETRIES, SECRET)
}

/// Waits until every recorder has applied `n` events (within the round's
/// limit); the time since `t0` when the last one had, or the index of the
/// first engine that had not.
async fn last_receipt(recorders: &[Recorder], n: usize, t0: Instant) -> Result<Duration, usize> {
    let deadline = t0 + ROUND_LIMIT;
    for (i, r) in recorders.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !r.wait_for(n, left).await {
            return Err(i);
        }
    }
    Ok(t0.elapsed())
}

/// Every engine applied `event_id` exactly once.
fn check_once(recorders: &[Recorder], labels: &[String], event_id: &str) -> anyhow::Result<()> {
    for (r, label) in recorders.iter().zip(labels) {
        let n = r.count_of(event_id);
        if n != 1 {
            bail!("{label} applied event {event_id} {n} times; expected exactly once");
        }
    }
    Ok(())
}

/// After all rounds: each engine applied exactly the events sent, once
/// each, nothing else.
fn check_totals(recorders: &[Recorder], labels: &[String], sent: &[String]) -> anyhow::Result<()> {
    for (r, label) in recorders.iter().zip(labels) {
        let got: Vec<String> = r.events().into_iter().map(|e| e.id).collect();
        if got.len() != sent.len() {
            bail!(
                "{label} applied {} events; {} were sent (each must arrive exactly once)",
                got.len(),
                sent.len()
            );
        }
        let mut a = got.clone();
        let mut b = sent.to_vec();
        a.sort();
        b.sort();
        if a != b {
            bail!("{label} applied events other than those sent: {got:?}");
        }
    }
    Ok(())
}

/// Timed rounds of one path: `round(i)` starts round `i` and returns
/// (send → answer, event id); receipts are awaited beside it.
struct Rounds {
    last: Vec<f64>,
    answer: Vec<f64>,
    cold: Option<f64>,
    sent: Vec<String>,
}

async fn run_rounds<F, Fut>(
    recorders: &[Recorder],
    labels: &[String],
    warmup: usize,
    rounds: usize,
    mut round: F,
) -> anyhow::Result<Rounds>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let mut out = Rounds {
        last: Vec::with_capacity(rounds),
        answer: Vec::with_capacity(rounds),
        cold: None,
        sent: Vec::new(),
    };
    for i in 0..warmup + rounds {
        let t0 = Instant::now();
        let send = async {
            let r = round(i).await;
            (r, t0.elapsed())
        };
        let ((sent, answered), last) =
            tokio::join!(send, last_receipt(recorders, out.sent.len() + 1, t0));
        let event_id = sent.with_context(|| format!("round {}", i + 1))?;
        let last = match last {
            Ok(d) => d,
            Err(e) => bail!(
                "round {}: {} did not receive event {event_id} within {} s",
                i + 1,
                labels[e],
                ROUND_LIMIT.as_secs()
            ),
        };
        check_once(recorders, labels, &event_id)?;
        out.sent.push(event_id);
        if i == 0 && warmup > 0 {
            out.cold = Some(round3(ms(last)));
        }
        if i >= warmup {
            out.last.push(ms(last));
            out.answer.push(ms(answered));
        }
    }
    check_totals(recorders, labels, &out.sent)?;
    Ok(out)
}

/// Engine `i`'s region and host name: round-robin over the regions.
fn placement(i: usize) -> (&'static str, String) {
    (
        REGIONS[i % REGIONS.len()],
        format!("inferadb-engine-{}", i / REGIONS.len()),
    )
}

fn per_region(n: usize) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        *m.entry(placement(i).0).or_insert(0) += 1;
    }
    m
}

/// The loopback baseline: `n` receivers on 127.0.0.1, one sender.
async fn loopback(n: usize, warmup: usize, rounds: usize) -> anyhow::Result<PathResult> {
    let secret = Secret::from_text(SECRET)?;
    let mut recorders = Vec::with_capacity(n);
    let mut handles: Vec<ReceiverHandle> = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let rec = Recorder::new();
        let receiver = Receiver::new(
            ReceiverConfig::new(secret.clone()),
            rec.clone(),
            ReceiverMetrics::unregistered(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        handles.push(receiver.serve(listener));
        let (region, host) = placement(i);
        targets.push(Target::new(region, addr));
        labels.push(format!("loopback receiver {region} {host} ({addr})"));
        recorders.push(rec);
    }
    let sender = Sender::new(
        TcpConnect,
        secret,
        Targets::fixed(targets),
        SenderConfig::from_seed(TIMEOUT_MS, RETRIES),
        SenderMetrics::unregistered(),
    );
    let r = run_rounds(&recorders, &labels, warmup, rounds, |i| {
        let sender = sender.clone();
        async move {
            let event =
                Invalidation::vault_created(format!("{}", 1_000_000 + i)).with_origin(REGIONS[0]);
            let report = sender.send(&event).await?;
            if !report.all_delivered() || report.deliveries.len() != n {
                let failed: Vec<String> = report
                    .failures()
                    .map(|d| format!("{}: {:?}", d.target, d.result))
                    .collect();
                bail!(
                    "the sender delivered to {} of {n} receivers: {failed:?}",
                    report
                        .deliveries
                        .iter()
                        .filter(|d| d.result.is_ok())
                        .count()
                );
            }
            Ok(report.event_id)
        }
    })
    .await;
    drop(handles);
    let r = r?;
    Ok(PathResult {
        path: "loopback",
        description: "Sender::send over kernel TCP on 127.0.0.1 → last receiver's receipt",
        last_receipt: Latency::of(r.last),
        answer: Latency::of(r.answer),
        cold_ms: r.cold,
        receipts: n * r.sent.len(),
        exactly_once: true,
    })
}

/// What the tunnel path measured besides the path itself.
struct TunnelExtras {
    start_s: f64,
    control_hop_p50_ms: f64,
    rss_before_mib: Option<f64>,
    rss_mib: Option<f64>,
    idle_cpu_percent: Option<f64>,
}

/// The tunnel path at `n` engines.
async fn tunnel<P: Product>(
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

async fn tunnel_roles<P: Product>(
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

/// The discovery refresh: a us-west-1 node discovering 3 × `per` pods.
async fn discovery(
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

async fn join_node(
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

async fn discovery_nodes(
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

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// The report as a table.
pub fn format_table(r: &InvalidationReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Invalidation fan-out: send → last engine's receipt, {} timed rounds per row (after {} warm-up)\n",
        r.rounds, r.warmup
    ));
    s.push_str(&format!(
        "  {:>7}  {:<9} {:>8} {:>8} {:>8} {:>9} {:>10}  {}\n",
        "engines", "path", "p50 ms", "p99 ms", "max ms", "cold ms", "answer p50", "receipts"
    ));
    for c in &r.fanout {
        for p in [&c.tunnel, &c.loopback] {
            s.push_str(&format!(
                "  {:>7}  {:<9} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>10.2}  {} (each once)\n",
                c.engines,
                p.path,
                p.last_receipt.p50_ms,
                p.last_receipt.p99_ms,
                p.last_receipt.max_ms,
                p.cold_ms.map_or("-".into(), |v| format!("{v:.2}")),
                p.answer.p50_ms,
                p.receipts
            ));
        }
        s.push_str(&format!(
            "  {:>7}  tunnel / loopback: {:.2}× p50, {:.2}× p99\n",
            "", c.ratio_p50, c.ratio_p99
        ));
        s.push_str(&format!(
            "  {:>7}  regions {}; up in {:.1} s; RSS {} → {} MiB; idle CPU {}% of a core; control HTTP hop p50 {:.2} ms\n",
            "",
            c.regions
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            c.start_s,
            c.rss_before_mib.map_or("-".into(), |v| format!("{v:.0}")),
            c.rss_mib.map_or("-".into(), |v| format!("{v:.0}")),
            c.idle_cpu_percent.map_or("-".into(), |v| format!("{v:.1}")),
            c.control_hop_p50_ms
        ));
    }
    if let Some(d) = &r.discovery {
        s.push_str(&format!(
            "Discovery refresh: {} clusters × {} endpoints through MagicDNS on the node's virtual interface, health checks off\n",
            d.clusters, d.endpoints_per_cluster
        ));
        s.push_str(&format!(
            "  refresh_now: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} refreshes)\n",
            d.refresh.p50_ms, d.refresh.p99_ms, d.refresh.max_ms, d.refresh.samples
        ));
        s.push_str(&format!(
            "  one cluster's name (A + AAAA, {} addresses): p50 {:.2} ms, p99 {:.2} ms\n",
            2 * d.endpoints_per_cluster,
            d.lookup.p50_ms,
            d.lookup.p99_ms
        ));
        s.push_str(&format!(
            "  {} nodes up in {:.1} s; RSS {} → {} MiB\n",
            d.clusters * d.endpoints_per_cluster + 1,
            d.start_s,
            d.rss_before_mib.map_or("-".into(), |v| format!("{v:.0}")),
            d.rss_mib.map_or("-".into(), |v| format!("{v:.0}"))
        ));
    }
    s
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
