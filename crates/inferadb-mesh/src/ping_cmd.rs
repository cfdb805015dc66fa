//! `inferadb-mesh ping NAME|IP`: disco pings to a peer through a running
//! node (its local API, `--state-dir`), like `tailscale ping`.

use crate::localapi::{self, LocalApiError, PingReply};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `ping`.
#[derive(Debug, Args)]
#[command(
    after_help = "The first pongs often come through the DERP relay while disco finds a
direct path. Like tailscale ping, it stops at the first direct pong, or
after -c pings with \"direct connection not established\" (exit 1).

Examples:
  inferadb-mesh ping inferadb-engine-1 --state-dir /var/lib/inferadb-mesh
  inferadb-mesh ping 100.64.0.2 -c 5 --until-direct=false --state-dir /var/lib/inferadb-mesh"
)]
pub struct PingArgs {
    /// The peer: its name (MagicDNS or host name) or tailnet address.
    target: String,
    /// The state directory of the running node to ping from.
    #[arg(long, value_name = "DIR", env = "INFERADB_MESH_STATE_DIR")]
    state_dir: PathBuf,
    /// Most pings to send (0: no limit).
    #[arg(short = 'c', long, default_value_t = 10)]
    count: u32,
    /// Stop at the first pong over a direct path, and fail if none came.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    until_direct: bool,
    /// Seconds to wait for each pong.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
}

/// One line per pong, as `tailscale ping` prints it.
pub fn pong_line(target: &str, r: &PingReply) -> String {
    let name = if r.name.is_empty() { target } else { &r.name };
    let via = match (&r.addr, &r.derp) {
        (Some(a), _) => a.to_string(),
        (None, Some(d)) => format!("DERP({d})"),
        (None, None) => "DERP".to_owned(),
    };
    format!("pong from {name} ({}) via {via} in {:.1}ms", r.ip, r.rtt_ms)
}

/// Runs `ping`: exits 1 when the peer is unknown or no pong came back.
pub async fn run(args: PingArgs) -> anyhow::Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero() && *t <= localapi::MAX_PING_TIMEOUT)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--timeout must be between 0 and {} seconds",
                localapi::MAX_PING_TIMEOUT.as_secs()
            )
        })?;
    let socket = localapi::socket_path(&args.state_dir);
    let mut pongs = 0u32;
    let mut sent = 0u32;
    while args.count == 0 || sent < args.count {
        if sent > 0 {
            tokio::time::sleep(BETWEEN_PINGS).await;
        }
        sent += 1;
        match localapi::fetch_ping(&socket, &args.target, timeout).await {
            Ok(r) => {
                pongs += 1;
                println!("{}", pong_line(&args.target, &r));
                if args.until_direct && r.addr.is_some() {
                    return Ok(());
                }
            }
            // 504: this ping went unanswered; try the next.
            Err(LocalApiError::Status {
                code: 504, body, ..
            }) => println!("{body}"),
            Err(LocalApiError::Status { body, .. }) => {
                eprintln!("ping {}: {body}", args.target);
                std::process::exit(1);
            }
            Err(e) => return Err(e.with_state_dir(&args.state_dir).into()),
        }
    }
    if pongs == 0 {
        eprintln!("ping {}: no pong", args.target);
        std::process::exit(1);
    }
    if args.until_direct {
        eprintln!("direct connection not established");
        std::process::exit(1);
    }
    Ok(())
}

/// The pause between pings (tailscale ping's).
const BETWEEN_PINGS: Duration = Duration::from_secs(1);
