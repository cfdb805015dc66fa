//! `inferadb-mesh ping NAME|IP`: disco pings to a peer through a running
//! node (its local API, `--state-dir`), like `tailscale ping`.

use crate::localapi::{self, LocalApiError, PingReply};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `ping`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  inferadb-mesh ping inferadb-engine-1 --state-dir /var/lib/inferadb-mesh
  inferadb-mesh ping 100.64.0.2 -c 5 --state-dir /var/lib/inferadb-mesh")]
pub struct PingArgs {
    /// The peer: its name (MagicDNS or host name) or tailnet address.
    target: String,
    /// The state directory of the running node to ping from.
    #[arg(long, value_name = "DIR", env = "INFERADB_MESH_STATE_DIR")]
    state_dir: PathBuf,
    /// Pings to send.
    #[arg(short = 'c', long, default_value_t = 3)]
    count: u32,
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
    for i in 0..args.count.max(1) {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match localapi::fetch_ping(&socket, &args.target, timeout).await {
            Ok(r) => {
                pongs += 1;
                println!("{}", pong_line(&args.target, &r));
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
    Ok(())
}
