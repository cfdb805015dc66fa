//! Command-line interface.

use crate::demo::{self, DemoOptions};
use crate::services::{self, Service};
use crate::static_node::{self, ReadyLine};
use clap::{Args, Parser, Subcommand};
use inferadb_mesh_bench::tunnel as bench;
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
    /// Log lines on stderr: `text` (`TIME LEVEL target: message key=value…`;
    /// colours only when stderr is a terminal and NO_COLOR is unset) or
    /// `json` (one object per line: timestamp, level, target, message and
    /// each field as its own key). The filter is $INFERADB_MESH_LOG
    /// (default `info` for engine, control, up and coordinator serve,
    /// `warn` for the rest).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "INFERADB_MESH_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The log line format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL target: message key=value…`.
    Text,
    /// One JSON object per line.
    Json,
}

impl Command {
    /// Whether this is a long-running service whose log is its record
    /// (`kubectl logs`): those log at `info` unless told otherwise.
    fn is_service(&self) -> bool {
        matches!(
            self,
            Command::Engine(_)
                | Command::Control(_)
                | Command::Up(_)
                | Command::Coordinator {
                    which: CoordinatorCommand::Serve(_)
                }
        )
    }
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
    Up(Box<crate::up_cmd::UpArgs>),
    /// Run an InferaDB engine: the embedded node, discovery of control,
    /// the invalidation webhook receiver, /metrics /healthz /readyz.
    /// Configuration: --config FILE and INFERADB__… variables.
    #[command(after_help = ENGINE_KEYS)]
    Engine(RoleArgs),
    /// Run InferaDB control: the embedded node, discovery of engines,
    /// POST /v1/vaults fanning invalidations out, /metrics /healthz
    /// /readyz. Configuration: --config FILE and INFERADB_CTRL__… variables.
    #[command(after_help = CONTROL_KEYS)]
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
        which: inferadb_mesh_bench::BenchCommand,
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

/// The `mesh:` and `http:` keys both roles take (`engine --help`,
/// `control --help`).
macro_rules! mesh_keys {
    ($env:literal, $port:literal) => {
        concat!(
            "Configuration keys (YAML; each also as an environment variable, e.g.\n",
            $env,
            "MESH__STATE_DIR, list items as __0__; unknown keys are errors):\n",
            "  mesh.control_url          the control server: the coordinator, Tailscale or Headscale\n",
            "  mesh.auth_key_file        a file with the pre-auth key (or mesh.auth_key);\n",
            "                            needed for the first join only\n",
            "  mesh.hostname             the host name to register (the chart: the pod name)\n",
            "  mesh.state_dir            node keys and registration, and the local API socket\n",
            "                            (`status`, `dns query`, `ping` --state-dir DIR)\n",
            "  mesh.tags                 ACL tags to request, e.g. [tag:inferadb-us-west-1]\n",
            "  mesh.listen               UDP address for WireGuard (default 0.0.0.0:0)\n",
            "  mesh.ephemeral            leave no identity behind (default false)\n",
            "  mesh.timeout_seconds      give up joining after this long (default 60)\n",
            "  http.listen               OS address of /metrics /healthz /readyz\n",
            "                            (default 127.0.0.1:0)\n",
            "  http.tailnet_port         the same server on the tailnet (default ",
            $port,
            "; 0: off)\n",
        )
    };
}

const ENGINE_KEYS: &str = concat!(
    mesh_keys!("INFERADB__", "8080"),
    "  auth.discovery            how to find control:\n",
    "                            mode {type: tailscale | kubernetes | none,\n",
    "                                  local_cluster, remote_clusters: [{name,\n",
    "                                  tailscale_domain, service_name, port}]},\n",
    "                            cache_ttl_seconds (300),\n",
    "                            health_check {enabled, path, interval_ms, timeout_ms,\n",
    "                                          healthy_threshold, unhealthy_threshold}\n",
    "  cache_invalidation.webhook_secret_file\n",
    "                            the shared webhook secret (or .webhook_secret)\n",
    "\nThe keys are described in docs/tailscale-multi-region.md (\"Configuration\");\n",
    "--check prints the effective configuration."
);

const CONTROL_KEYS: &str = concat!(
    mesh_keys!("INFERADB_CTRL__", "9090"),
    "  api.token_file            the bearer token of POST /v1/vaults (or api.token)\n",
    "  cache_invalidation.discovery\n",
    "                            how to find engines: the shape of the engine's auth.discovery\n",
    "  cache_invalidation.http_endpoints\n",
    "                            static engine URLs (mode none; leave empty with discovery)\n",
    "  cache_invalidation.timeout_ms\n",
    "                            per-attempt timeout of one webhook (default 5000)\n",
    "  cache_invalidation.retry_attempts\n",
    "                            retries after the first attempt (default 2)\n",
    "  cache_invalidation.webhook_secret_file\n",
    "                            the shared webhook secret (or .webhook_secret)\n",
    "\nThe keys are described in docs/tailscale-multi-region.md (\"Configuration\");\n",
    "--check prints the effective configuration."
);

/// Arguments of `engine` and `control`.
#[derive(Debug, Args)]
struct RoleArgs {
    /// The YAML configuration file (its keys: below); environment
    /// variables override it.
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
    #[command(
        after_help = "Example: one region's key, as the multi-region guide recommends \
(reusable, not ephemeral: replicas with persistent state keep their names):
  inferadb-mesh coordinator authkey create --state-dir /var/lib/coord \\
      --reusable --tags tag:inferadb-us-west-1 --expiry 90d
A region without persistent state (ephemeral nodes) adds --ephemeral."
    )]
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

/// Whether log lines on stderr get terminal colours: only when stderr is a
/// terminal and `NO_COLOR` is unset or empty (<https://no-color.org>). A
/// pipe or file (`kubectl logs`, a log shipper, `grep`) gets plain text.
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Whether stderr carries JSON log lines (`--log-format json`).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A progress line for a person on stderr (`joining the tailnet at …`):
/// as is with text logs; with `--log-format json` an INFO log line, so
/// stderr stays one JSON object per line.
pub fn progress(line: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "inferadb_mesh", "{line}");
    } else {
        eprintln!("{line}");
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    JSON_LOGS.store(
        format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFERADB_MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(log_colours(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
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
    init_tracing(
        cli.log_format,
        if cli.command.is_service() {
            "info"
        } else {
            "warn"
        },
    );
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
            let line = format!("error: {}", error_line(&e));
            if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(target: "inferadb_mesh", "{line}");
            } else {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `e` and its causes on one line, `outer: cause: …`, leaving out a cause
/// whose text the line already holds (an error that prints its source in
/// its own message would otherwise read `Address already in use (os error
/// 98): Address already in use (os error 98)`).
pub fn error_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
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
        Command::Up(args) => crate::up_cmd::run(*args).await,
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
        Command::Bench { which } => {
            inferadb_mesh_bench::run::<crate::bench_product::Mesh>(which).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// Issue 17: `kubectl logs` (a pipe) showed colour codes, so the
    /// seed's `grep "cluster=eu-west-1"` matched nothing.
    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(!log_colours(false, None), "a pipe or file gets plain text");
        assert!(!log_colours(true, Some(OsStr::new("1"))), "NO_COLOR=1");
        // no-color.org: an empty NO_COLOR does not count.
        assert!(log_colours(true, Some(OsStr::new(""))));
    }

    /// Issue 17: `http.listen 127.0.0.1:1: Address already in use (os
    /// error 98): Address already in use (os error 98)`.
    #[test]
    fn error_lines_say_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let io_text = io.to_string();
        let role = crate::roles::RoleError::Listen {
            what: "http.listen 127.0.0.1:1".into(),
            source: io,
        };
        let line = error_line(&anyhow::Error::new(role));
        assert_eq!(line, format!("http.listen 127.0.0.1:1: {io_text}"));
        // Context that does not repeat its cause keeps it.
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("writing state");
        assert_eq!(error_line(&e), "writing state: disk full");
    }

    #[test]
    fn log_format_from_flag_and_environment() {
        let cli = Cli::try_parse_from(["inferadb-mesh", "status", "--log-format", "json"])
            .expect("parses");
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["inferadb-mesh", "--log-format", "xml", "genkey"]).is_err());
    }
}
