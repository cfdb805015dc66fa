//! What `bench control` reports (its JSON shape) and why a measurement
//! could not be made.

use super::*;

/// One netmap size's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlCase {
    /// Peers in the netmap.
    pub peers: usize,
    /// Runs per measurement.
    pub iterations: usize,
    /// Bytes of the full map response as JSON (before zstd).
    pub map_bytes: usize,
    /// Median µs to decode that JSON into a `MapResponse`.
    pub decode_us: f64,
    /// Median µs of `Netmap::apply` of the full response to an empty map.
    pub apply_full_us: f64,
    /// 99th-percentile µs of the same.
    pub apply_full_p99_us: f64,
    /// Median µs to apply one small delta to a map of `peers` peers.
    pub apply_delta_us: f64,
    /// Median µs to build the status view of every peer.
    pub status_us: f64,
    /// Median ms for a node to join a coordinator holding `peers` peers
    /// (in-process `up()`: register to first netmap applied, data plane
    /// up); filled by scale-apply, else `None`.
    pub join_ms: Option<f64>,
    /// Resident MiB of an `inferadb-mesh up` process holding that netmap
    /// once idle; filled by scale-apply, else `None`.
    pub rss_mib: Option<f64>,
}

/// Several timings of one thing, in ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Median.
    pub median_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Every sample, in run order.
    pub samples_ms: Vec<f64>,
}

impl Timing {
    /// Summarises `samples` (ms); `None` if empty.
    pub fn of(samples: Vec<f64>) -> Option<Timing> {
        if samples.is_empty() {
            return None;
        }
        let s = sorted(samples.clone());
        Some(Timing {
            median_ms: percentile(&s, 0.5),
            min_ms: s[0],
            max_ms: s[s.len() - 1],
            samples_ms: samples,
        })
    }
}

/// Join: process start to Running on loopback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinReport {
    /// Joins asked for per implementation.
    pub samples: usize,
    /// The goal for ours, ms.
    pub goal_ms: f64,
    /// `inferadb-mesh up`: spawn to its ready line.
    pub ours: Timing,
    /// Caddy: spawn to tsnet's Running log line; `None` when not installed
    /// or every attempt failed (see `notes`).
    pub caddy: Option<Timing>,
    /// `caddy version`'s first word, or why there is no Caddy figure.
    pub caddy_version: Option<String>,
}

/// Memory of an idle joined node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RssReport {
    /// Idle seconds before reading.
    pub idle_secs: f64,
    /// The goal for ours, MiB.
    pub goal_mib: f64,
    /// `VmRSS` of an `inferadb-mesh up` process, MiB.
    pub ours_mib: f64,
    /// `VmRSS` of the Caddy process (Caddy's HTTP server included), MiB.
    pub caddy_mib: Option<f64>,
}

/// A real node taking a netmap of `peers` registered (not running) peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyCase {
    /// Registered peers in the coordinator.
    pub peers: usize,
    /// Samples per figure.
    pub samples: usize,
    /// Median ms of an in-process `Node::builder()…up()`: connect,
    /// register, first map, data plane started with the peers.
    pub up_ms: f64,
    /// Median ms from the map request to the first map message decoded
    /// (coordinator builds and compresses it, client decompresses and
    /// parses).
    pub first_map_ms: f64,
    /// JSON bytes of that first message (it travels zstd-compressed).
    pub first_map_bytes: usize,
    /// Median ms for a running node to apply that message: `Netmap::apply`,
    /// `peers_of`, `Node::set_peers` (peers offline: no endpoints, no
    /// handshakes, as registered-but-stopped nodes are).
    pub apply_ms: f64,
    /// The netmap half of `apply_ms` (`Netmap::apply` and `peers_of`); the
    /// rest is the data plane creating a tunnel per peer.
    pub apply_netmap_ms: f64,
    /// The same with every peer marked online (a handshake initiation to
    /// each one's endpoint).
    pub apply_online_ms: f64,
    /// `inferadb-mesh up` as a process: spawn to ready line, ms.
    pub process_join_ms: Option<f64>,
    /// That process's `VmRSS` after idling, MiB.
    pub process_rss_mib: Option<f64>,
}

/// One change pushed to `streams` streaming nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushCase {
    /// Map streams open (each its own ts2021 connection).
    pub streams: usize,
    /// Seconds to open every stream and receive each first netmap.
    pub setup_s: f64,
    /// Messages the streams received while the others came online
    /// (`OnlineChange` deltas: about streams²/2).
    pub setup_messages: u64,
    /// Changes pushed.
    pub rounds: usize,
    /// Median ms of the new node's register round trip.
    pub register_ms: f64,
    /// Median over rounds of ms from the register request until the last
    /// stream had the new node.
    pub all_ms: f64,
    /// Median over rounds of the per-stream median, ms.
    pub p50_ms: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlReport {
    /// Netmap part: one entry per size, in the order asked.
    pub cases: Vec<ControlCase>,
    /// Join part.
    #[serde(default)]
    pub join: Option<JoinReport>,
    /// RSS part.
    #[serde(default)]
    pub rss: Option<RssReport>,
    /// Scale-apply part, one entry per size.
    #[serde(default)]
    pub scale_apply: Vec<ApplyCase>,
    /// Scale-push part, one entry per size that could run.
    #[serde(default)]
    pub scale_push: Vec<PushCase>,
    /// What was skipped or failed, and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Why a measurement could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlBenchError {
    /// A size is 0 or above [`MAX_PEERS`] (or [`MAX_SCALE_PEERS`] for the
    /// scale parts).
    #[error("--peers values must be between 1 and {1}, got {0}")]
    Size(usize, usize),
    /// The synthetic map did not encode or decode.
    #[error("synthetic map response: {0}")]
    Json(#[from] serde_json::Error),
    /// The netmap refused a map.
    #[error("netmap: {0}")]
    Netmap(#[from] tailnet_wire::control::NetmapError),
    /// A file, directory or process could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The coordinator's store failed.
    #[error("coordinator store: {0}")]
    Store(String),
    /// The in-process coordinator did not start.
    #[error(transparent)]
    Server(#[from] coordinator::server::ServerError),
    /// A lightweight control client failed.
    #[error(transparent)]
    Control(#[from] tailnet_control::ControlError),
    /// An in-process node did not reach Running.
    #[error(transparent)]
    Up(#[from] tailnet::UpError),
    /// An in-process node failed.
    #[error(transparent)]
    Node(#[from] tailnet::NodeError),
    /// Control refused a registration (its text, one line).
    #[error("control refused a benchmark node: {0}")]
    Refused(String),
    /// An `inferadb-mesh up` process did not become Running.
    #[error("inferadb-mesh up: {0}")]
    Process(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The join and rss parts need our executable.
    #[error("the join and rss parts need the inferadb-mesh executable")]
    NoExecutable,
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ControlBenchError {
    let what = what.into();
    move |source| ControlBenchError::Io { what, source }
}

pub(crate) fn store_err(e: impl std::fmt::Display) -> ControlBenchError {
    ControlBenchError::Store(e.to_string())
}
