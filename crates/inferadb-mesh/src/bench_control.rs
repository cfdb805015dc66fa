//! `inferadb-mesh bench control`: what a tailnet of N peers costs a node on
//! the control side, measured in-process.
//!
//! For each size (10, 100, 1,000 peers by default) it builds a synthetic
//! but realistic full `MapResponse` (every peer with two addresses, two
//! endpoints, a home DERP, Hostinfo, a tag and a capability; a packet
//! filter; user profiles) and times:
//!
//! - **decode**: `serde_json::from_slice` of the map response's JSON (what
//!   the map stream hands the client after zstd);
//! - **apply full**: [`Netmap::apply`] of it to an empty netmap (the first
//!   message of a map session);
//! - **apply delta**: applying one small delta (an `OnlineChange`, a
//!   `PeersChangedPatch` of one peer's endpoints, one `PeersChanged`) to a
//!   netmap of N peers (what every later message costs);
//! - **status**: building the `status` view of the netmap
//!   ([`PeerStatus::from_control_node`] per peer).
//!
//! Times are medians (and p99 for the full apply) over `iterations` runs.
//! The `join` and `RSS` columns are hooks for the end-to-end case (a node
//! joining a coordinator that holds N peers): [`ControlCase::join_ms`] and
//! [`ControlCase::rss_mib`] stay `None` here and print as `-`;
//! [`rss_bytes`] reads the process's resident set for whoever fills them.

use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use tailnet::status::PeerStatus;
use tailnet_wire::control::{
    CapMap, FilterRule, Hostinfo, MapResponse, NetPortRange, Netmap, Node, PeerChange, PortRange,
    Timestamp, UserProfile,
};
use tailnet_wire::PublicKey;

/// `inferadb-mesh bench control` arguments.
#[derive(Debug, Args)]
#[command(after_help = "\
Columns: peers; the map response's JSON size; median decode, full apply
(and its p99), delta apply and status-build times; join time and RSS of a
node joining a coordinator with that many peers (- until measured).

Examples:
  inferadb-mesh bench control
  inferadb-mesh bench control --peers 10,100,1000,10000 --json \\
    | jq '.cases[] | {peers, apply_full_us}'")]
pub struct ControlArgs {
    /// Netmap sizes to measure (peers), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub peers: Vec<usize>,
    /// Runs per measurement (default: enough for ~20,000 peer-applies per
    /// size, between 5 and 200).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Print {"cases": [{"peers", "map_bytes", "decode_us", "apply_full_us",
    /// "apply_full_p99_us", "apply_delta_us", "status_us", "join_ms",
    /// "rss_mib"}]}.
    #[arg(long)]
    pub json: bool,
}

/// The largest netmap the command accepts (a sanity bound on memory).
pub const MAX_PEERS: usize = 100_000;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Netmap sizes, in peers.
    pub sizes: Vec<usize>,
    /// Runs per measurement; `None` picks by size.
    pub iterations: Option<usize>,
}

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
    /// Hook: ms for a node to join a coordinator holding `peers` peers
    /// (register to first netmap applied); `None` until measured.
    pub join_ms: Option<f64>,
    /// Hook: resident MiB of that node once joined; `None` until measured.
    pub rss_mib: Option<f64>,
}

/// Every size's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlReport {
    /// One entry per size, in the order asked.
    pub cases: Vec<ControlCase>,
}

fn key(tag: u8, i: usize) -> PublicKey {
    let mut b = [tag; 32];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PublicKey::from_bytes(b)
}

fn v4(i: usize) -> Ipv4Addr {
    // 100.64.0.0/10 holds 4M addresses; i stays far below that.
    let n = 0x6440_0000u32 | (i as u32 & 0x003f_ffff);
    Ipv4Addr::from(n)
}

/// A peer as a coordinator sends it (ID `i + 1`).
pub fn synthetic_node(i: usize) -> Node {
    let id = i as i64 + 1;
    let a4 = v4(i + 1);
    let a6 = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, (i >> 16) as u16, i as u16);
    let mut cap_map = CapMap::new();
    cap_map.insert("https://inferadb.com/cap/replica".into(), Vec::new());
    Node {
        id,
        stable_id: format!("n{id}CNTRL"),
        name: format!("db-{i}.mesh.example."),
        user: 1,
        key: key(2, i).into(),
        key_expiry: Timestamp::from_unix(1_900_000_000, 0).unwrap_or(Timestamp::ZERO),
        machine: key(3, i).into(),
        disco_key: key(4, i).into(),
        addresses: vec![
            ipnet::IpNet::from(IpAddr::V4(a4)),
            ipnet::IpNet::from(IpAddr::V6(a6)),
        ],
        allowed_ips: None,
        endpoints: vec![
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 250) as u8)),
                41641,
            ),
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
                41641,
            ),
        ],
        home_derp: 1 + (i % 3) as i32,
        hostinfo: Some(Hostinfo {
            hostname: format!("db-{i}"),
            os: "linux".into(),
            ..Hostinfo::default()
        }),
        created: Timestamp::from_unix(1_700_000_000, 0).unwrap_or(Timestamp::ZERO),
        cap: 130,
        tags: vec![format!("tag:inferadb-region-{}", i % 3)],
        online: Some(true),
        machine_authorized: true,
        cap_map,
        ..Node::default()
    }
}

/// The first message of a map session for a tailnet of `peers` peers.
pub fn synthetic_map_response(peers: usize) -> MapResponse {
    let mut me = synthetic_node(peers + 1);
    me.name = "self.mesh.example.".into();
    MapResponse {
        node: Some(me),
        peers: (0..peers).map(synthetic_node).collect(),
        domain: "mesh.example".into(),
        packet_filter: Some(vec![FilterRule {
            src_ips: vec!["100.64.0.0/10".into(), "fd7a:115c:a1e0::/48".into()],
            dst_ports: vec![NetPortRange {
                ip: "*".into(),
                bits: None,
                ports: PortRange {
                    first: 0,
                    last: 65535,
                },
            }],
            ..FilterRule::default()
        }]),
        user_profiles: vec![UserProfile {
            id: 1,
            login_name: "tagged-devices".into(),
            display_name: "Tagged devices".into(),
            ..UserProfile::default()
        }],
        control_time: Timestamp::from_unix(1_750_000_000, 0),
        ..MapResponse::default()
    }
}

/// A typical later message: one peer went offline, one moved, one was
/// replaced (a node key rotation).
pub fn synthetic_delta(peers: usize, round: usize) -> MapResponse {
    let n = peers.max(1);
    let a = round % n;
    let b = (round + n / 2) % n;
    let c = (round + n / 3) % n;
    let mut replaced = synthetic_node(c);
    replaced.key = key(5, round).into();
    MapResponse {
        online_change: BTreeMap::from([(a as i64 + 1, round % 2 == 0)]),
        peers_changed_patch: vec![PeerChange {
            node_id: b as i64 + 1,
            endpoints: Some(vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, (round % 250) as u8)),
                41641,
            )]),
            ..PeerChange::default()
        }],
        peers_changed: vec![replaced],
        ..MapResponse::default()
    }
}

/// The process's resident set in bytes (Linux `/proc/self/statm`), for
/// the RSS hook; `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Linux pages are 4 KiB on every platform we build for but a few
    // aarch64 kernels; good enough for a benchmark column.
    Some(pages * 4096)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `p` quantile of `sorted` (nearest rank), rounded to nanoseconds.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    (sorted[idx.min(sorted.len() - 1)] * 1000.0).round() / 1000.0
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Why a size could not be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlBenchError {
    /// A size is 0 or above [`MAX_PEERS`].
    #[error("--peers values must be between 1 and {MAX_PEERS}, got {0}")]
    Size(usize),
    /// The synthetic map did not encode or decode.
    #[error("synthetic map response: {0}")]
    Json(#[from] serde_json::Error),
    /// The netmap refused the synthetic map.
    #[error("netmap: {0}")]
    Netmap(#[from] tailnet_wire::control::NetmapError),
}

/// Measures one size.
pub fn measure(peers: usize, iterations: Option<usize>) -> Result<ControlCase, ControlBenchError> {
    if peers == 0 || peers > MAX_PEERS {
        return Err(ControlBenchError::Size(peers));
    }
    let iters = iterations
        .unwrap_or_else(|| (20_000 / peers).clamp(5, 200))
        .max(1);
    let resp = synthetic_map_response(peers);
    let json = serde_json::to_vec(&resp)?;

    let mut decode = Vec::with_capacity(iters);
    let mut full = Vec::with_capacity(iters);
    let mut status = Vec::with_capacity(iters);
    let mut netmap = Netmap::new();
    for _ in 0..iters {
        let t = Instant::now();
        let decoded: MapResponse = serde_json::from_slice(&json)?;
        decode.push(micros(t.elapsed()));
        std::hint::black_box(&decoded);

        let input = resp.clone();
        let mut nm = Netmap::new();
        let t = Instant::now();
        nm.apply(input)?;
        full.push(micros(t.elapsed()));

        let t = Instant::now();
        let view: Vec<PeerStatus> = nm.peers().map(PeerStatus::from_control_node).collect();
        status.push(micros(t.elapsed()));
        std::hint::black_box(view);
        netmap = nm;
    }

    let mut delta = Vec::with_capacity(iters);
    for round in 0..iters {
        let d = synthetic_delta(peers, round);
        let t = Instant::now();
        netmap.apply(d)?;
        delta.push(micros(t.elapsed()));
    }
    std::hint::black_box(&netmap);

    let full = sorted(full);
    Ok(ControlCase {
        peers,
        iterations: iters,
        map_bytes: json.len(),
        decode_us: percentile(&sorted(decode), 0.5),
        apply_full_us: percentile(&full, 0.5),
        apply_full_p99_us: percentile(&full, 0.99),
        apply_delta_us: percentile(&sorted(delta), 0.5),
        status_us: percentile(&sorted(status), 0.5),
        join_ms: None,
        rss_mib: None,
    })
}

/// Measures every size in `opts`.
pub fn run_control(opts: &ControlOptions) -> Result<ControlReport, ControlBenchError> {
    let cases = opts
        .sizes
        .iter()
        .map(|&n| measure(n, opts.iterations))
        .collect::<Result<_, _>>()?;
    Ok(ControlReport { cases })
}

/// The report as a table (one line per size, with a header).
pub fn format_table(report: &ControlReport) -> String {
    use std::fmt::Write as _;
    let opt = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"));
    let mut out = format!(
        "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}\n",
        "peers",
        "map KiB",
        "decode µs",
        "apply µs",
        "p99 µs",
        "delta µs",
        "status µs",
        "join ms",
        "RSS MiB"
    );
    for c in &report.cases {
        let _ = writeln!(
            out,
            "{:>7} {:>10.1} {:>10.0} {:>10.0} {:>10.0} {:>10.1} {:>10.0} {:>8} {:>8}",
            c.peers,
            c.map_bytes as f64 / 1024.0,
            c.decode_us,
            c.apply_full_us,
            c.apply_full_p99_us,
            c.apply_delta_us,
            c.status_us,
            opt(c.join_ms, 0),
            opt(c.rss_mib, 1),
        );
    }
    out
}

/// Runs `inferadb-mesh bench control`.
pub fn run(args: ControlArgs) -> anyhow::Result<()> {
    let report = run_control(&ControlOptions {
        sizes: args.peers,
        iterations: args.iterations,
    })?;
    if args.json {
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
    fn synthetic_map_applies_and_round_trips() {
        let resp = synthetic_map_response(50);
        let json = serde_json::to_vec(&resp).unwrap();
        let back: MapResponse = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, resp);
        let mut nm = Netmap::new();
        nm.apply(resp).unwrap();
        assert_eq!(nm.peers().len(), 50);
        // Distinct keys and addresses.
        let keys: std::collections::BTreeSet<_> = nm.peers().map(|p| p.key).collect();
        assert_eq!(keys.len(), 50);
        let ips: std::collections::BTreeSet<_> = nm.peers().map(|p| p.addresses[0]).collect();
        assert_eq!(ips.len(), 50);
        // Deltas touch peers that exist and keep the count.
        for round in 0..10 {
            let ch = nm.apply(synthetic_delta(50, round)).unwrap();
            assert!(ch.peers());
            assert_eq!(nm.peers().len(), 50);
        }
    }

    #[test]
    fn measures_and_reports() {
        let report = run_control(&ControlOptions {
            sizes: vec![1, 10],
            iterations: Some(2),
        })
        .unwrap();
        assert_eq!(report.cases.len(), 2);
        let c = &report.cases[1];
        assert_eq!((c.peers, c.iterations), (10, 2));
        assert!(c.map_bytes > 10 * 200, "{c:?}");
        assert!(c.apply_full_us > 0.0 && c.decode_us > 0.0);
        assert_eq!((c.join_ms, c.rss_mib), (None, None));
        let t = format_table(&report);
        assert_eq!(t.lines().count(), 3);
        assert!(t.lines().nth(2).unwrap().trim_start().starts_with("10 "));
        assert!(t.lines().nth(2).unwrap().ends_with("-        -"));
        let v = serde_json::to_value(&report).unwrap();
        assert!(v["cases"][0]["join_ms"].is_null());
        assert!(matches!(measure(0, None), Err(ControlBenchError::Size(0))));
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }
}
