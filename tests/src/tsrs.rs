//! tailscale-rs (Tailscale's own Rust client, crates.io `tailscale` 0.6.1)
//! as a peer process: `tests/tsrs-peer`, built by
//! `scripts/install-test-deps.sh` with `cargo build --release` into
//! `<target dir>/tsrs-peer/release/tsrs-peer` (or `$TSRS_PEER`).
//!
//! Its stderr (tailscale-rs logs without end once its control connection
//! drops) is kept up to [`LOG_CAP`] bytes; the rest is counted and thrown
//! away. Its stdout carries the protocol of `tests/tsrs-peer/src/main.rs`:
//! `READY <ip>` and one `DIAL OK|FAIL` line per `dial` command.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::netns::SKIP_ENV;
use tailnet_harness::capture::CappedLog;

/// Overrides where the tsrs-peer binary is.
pub const TSRS_ENV: &str = "TSRS_PEER";
/// Most bytes of the peer's log kept (the first half and the last half).
pub const LOG_CAP: usize = 256 << 10;

/// The tsrs-peer binary; `None` (after a skip line) when it is missing and
/// `TAILNET_SKIP_INTEROP=1` is set; panics with how to build it otherwise.
pub fn tsrs_binary(test: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(TSRS_ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))
                });
            target.join("tsrs-peer/release/tsrs-peer")
        }
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        println!(
            "SKIPPED {test}: missing the tailscale-rs peer {} ({SKIP_ENV}=1 is set)",
            path.display()
        );
        return None;
    }
    panic!(
        "{test}: missing the tailscale-rs peer {}. Build it with scripts/install-test-deps.sh \
         (cargo build --release in tests/tsrs-peer), or point {TSRS_ENV} at it; set \
         {SKIP_ENV}=1 to skip the tailscale-rs interop tests instead",
        path.display()
    );
}

/// A running tailscale-rs node. Dropping it kills the process.
pub struct TsrsPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    log: Arc<Mutex<CappedLog>>,
    /// Its tailnet IPv4 address.
    pub ip: std::net::Ipv4Addr,
    _dir: tempfile::TempDir,
}

impl TsrsPeer {
    /// Starts `bin` joining `control_url` with `auth_key` as `hostname`,
    /// serving a TCP echo on each of `listen`; waits (up to `timeout`) for
    /// it to say it is up.
    pub fn start(
        bin: &std::path::Path,
        control_url: &str,
        auth_key: &str,
        hostname: &str,
        listen: &[u16],
        timeout: Duration,
    ) -> Result<TsrsPeer, String> {
        let dir = tempfile::Builder::new()
            .prefix("tsrs-peer-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let ports: Vec<String> = listen.iter().map(u16::to_string).collect();
        let mut child = Command::new(bin)
            .args(["--control-url", control_url])
            .arg("--key-file")
            .arg(dir.path().join("keys.json"))
            .args(["--hostname", hostname, "--listen", &ports.join(",")])
            .env("TS_AUTH_KEY", auth_key)
            .env("TS_RS_EXPERIMENT", "this_is_unstable_software")
            .env(
                "TSRS_LOG",
                std::env::var("TSRS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let log = Arc::new(Mutex::new(CappedLog::new(LOG_CAP)));
        let mut stderr = child.stderr.take().expect("piped");
        std::thread::spawn({
            let log = log.clone();
            move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock().expect("log").push(&buf[..n]);
                }
            }
        });
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            // Protocol lines are short; a runaway line is cut.
            for line in BufReader::new(stdout.take(1 << 20)).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut peer = TsrsPeer {
            child,
            stdin,
            lines,
            log,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            _dir: dir,
        };
        let line = peer.next_line(timeout).map_err(|e| {
            format!(
                "tailscale-rs never said READY: {e}\nlog:\n{}",
                peer.log_tail(80)
            )
        })?;
        let ip = line
            .strip_prefix("READY ")
            .and_then(|ip| ip.trim().parse().ok())
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        peer.ip = ip;
        Ok(peer)
    }

    fn next_line(&mut self, timeout: Duration) -> Result<String, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("nothing in {timeout:?}"))
            }
            Err(_) => Err(format!("it exited: {:?}", self.child.try_wait())),
        }
    }

    /// Has it connect to `addr`, send a line and read it echoed: `Ok` or
    /// the reason it failed (its own 10 s budget).
    pub async fn dial(&mut self, addr: std::net::SocketAddr) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "dial {addr}").map_err(|e| e.to_string())?;
        stdin.flush().map_err(|e| e.to_string())?;
        // The peer answers within its 10 s budget; the receiver blocks, so
        // poll it without holding the runtime.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            match self.lines.try_recv() {
                Ok(line) if line.starts_with("DIAL OK") => return Ok(()),
                Ok(line) => return Err(line),
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(e) => return Err(format!("{e}")),
            }
            if std::time::Instant::now() > deadline {
                return Err("no answer in 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of its (capped) log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log.lock().expect("log").text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Bytes of log thrown away past the cap.
    pub fn log_dropped(&self) -> u64 {
        self.log.lock().expect("log").dropped()
    }
}

impl Drop for TsrsPeer {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
