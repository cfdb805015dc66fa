//! `inferadb-mesh status`: ask a running node (through its local API
//! socket, see [`crate::localapi`]) what it sees, and print it as a table
//! or as JSON.

use crate::localapi::{self, LocalApiError};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use tailnet::status::Status;

/// The environment variable that names the node's state directory when
/// neither `--state-dir` nor `--socket` is given.
pub const STATE_DIR_ENV: &str = "INFERADB_MESH_STATE_DIR";

const EXAMPLES: &str = "\
Columns of the table (the node itself first, then its peers by name):
  address   the node's first tailnet address (IPv4 preferred)
  name      its short host name (the first label of its MagicDNS name)
  tags      its ACL tags, comma-separated, or -
  OS        the operating system it reported
  path      active; direct IP:PORT[, tx BYTES rx BYTES]  a live WireGuard session
            active; relay \"REGION\"                      the same, relayed by DERP
            idle / idle; offline                        traffic earlier, no live session now
            offline                                     control says it is not connected
            -                                           online, never talked to
Lines starting with # are the node's state (when not Running) and health
messages. A node that answers exits 0, whatever its state.

Examples:
  inferadb-mesh status --state-dir /var/lib/inferadb-mesh
  INFERADB_MESH_STATE_DIR=/var/lib/inferadb-mesh inferadb-mesh status --json
  inferadb-mesh status --json --state-dir /var/lib/inferadb-mesh \\
    | jq '.Peer[] | {Name, CurAddr, Relay}'
  inferadb-mesh status --json --socket /run/db/inferadb-mesh.sock \\
    | jq -e '.BackendState == \"Running\"'
  curl --unix-socket /var/lib/inferadb-mesh/inferadb-mesh.sock \\
    http://local/localapi/v0/status";

/// Show the running node's peers and how packets reach them (like
/// `tailscale status`).
///
/// For the node and each peer: its tailnet address, name, tags, OS, whether
/// it is online and the path in use (direct IP:PORT, relay, idle).
///
/// Reads the local API of the node started with the same state directory
/// (`inferadb-mesh up --state-dir DIR`), on the unix socket
/// DIR/inferadb-mesh.sock. The JSON has the shape of `tailscale status
/// --json` (Version, BackendState, TailscaleIPs, Self, Peer keyed by
/// nodekey, MagicDNSSuffix, CurrentTailnet, Health), and every node entry
/// also carries Name, its short host name.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct StatusArgs {
    /// Print JSON (the shape of `tailscale status --json`) instead of a
    /// table.
    #[arg(long)]
    pub json: bool,
    /// The running node's state directory (as given to `up`, or a role's
    /// mesh.state_dir); its socket is DIR/inferadb-mesh.sock.
    #[arg(long, value_name = "DIR", env = STATE_DIR_ENV)]
    pub state_dir: Option<PathBuf>,
    /// The node's local API socket itself, instead of --state-dir (it
    /// wins over both the flag and the variable).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Where to find the node: the socket path and, if it came from one, the
/// state directory (for error messages).
fn target(args: &StatusArgs) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    if let Some(s) = &args.socket {
        return Ok((s.clone(), None));
    }
    let dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => match std::env::var_os(STATE_DIR_ENV) {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => anyhow::bail!(
                "which node? give --state-dir DIR (the directory the node was started with) or --socket PATH, or set {STATE_DIR_ENV}"
            ),
        },
    };
    Ok((localapi::socket_path(&dir), Some(dir)))
}

/// Fetches the status the way `inferadb-mesh status` does: from `socket`,
/// naming `state_dir` in the error if no node is running there.
pub async fn fetch(socket: &Path, state_dir: Option<&Path>) -> Result<Status, LocalApiError> {
    localapi::fetch_status(socket)
        .await
        .map_err(|e| match state_dir {
            Some(d) => e.with_state_dir(d),
            None => e,
        })
}

/// Renders what `status` prints (with the final newline).
pub fn render(status: &Status, json: bool) -> anyhow::Result<String> {
    if json {
        let mut s = serde_json::to_string_pretty(status)?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(status.to_table())
    }
}

/// Runs `inferadb-mesh status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let (socket, state_dir) = target(&args)?;
    let status = fetch(&socket, state_dir.as_deref()).await?;
    let out = render(&status, args.json)?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `status | head` closing the pipe early is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
