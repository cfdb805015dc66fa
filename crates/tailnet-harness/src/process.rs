//! Peer processes that tests and benchmarks start: killed and reaped on
//! drop, their output read as it comes and kept up to a cap
//! ([`crate::capture`]), and a wait with a time limit for the stdout line
//! that says the process is ready (a ready line, a `Running` state).

use crate::capture::{drain_lines, CappedLog, SharedLog};
use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most bytes of a peer's output kept.
pub const OUTPUT_CAP: usize = 1 << 20;

/// Where a peer's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Into the capped log with stdout.
    Capture,
    /// To this process's stderr (a benchmark shows its peers' warnings).
    Inherit,
}

/// A running peer process; killed and reaped on drop.
#[derive(Debug)]
pub struct Peer {
    /// None once handed out by [`Peer::into_child`].
    child: Option<Child>,
    log: SharedLog,
    ready: Receiver<(Instant, String)>,
    started: Instant,
}

/// Why a peer was not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// It exited first; its last output line.
    Exited(String),
    /// The time limit passed; its last output line.
    Timeout(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(l) => write!(f, "exited before it was ready: {l}"),
            NotReady::Timeout(l) => write!(f, "not ready in time: {l}"),
        }
    }
}

impl Peer {
    /// Spawns `cmd` (stdin closed, stdout piped; stderr as `stderr` says)
    /// and reads its output on threads of its own. Each stdout line for
    /// which `is_ready` holds is noted with the time it was read.
    pub fn spawn(
        cmd: &mut Command,
        stderr: Stderr,
        is_ready: impl Fn(&str) -> bool + Send + 'static,
    ) -> io::Result<Peer> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(match stderr {
            Stderr::Capture => Stdio::piped(),
            Stderr::Inherit => Stdio::inherit(),
        });
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let log: SharedLog = Arc::new(Mutex::new(CappedLog::new(OUTPUT_CAP)));
        let (tx, ready) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            drain_lines(out, log.clone(), move |line| {
                if is_ready(line) {
                    let _ = tx.send((Instant::now(), line.trim_end().to_string()));
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            drain_lines(err, log.clone(), |_| {});
        }
        Ok(Peer {
            child: Some(child),
            log,
            ready,
            started,
        })
    }

    /// Blocks up to `limit` for the first ready line: the line and the
    /// time from spawn until it was read.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(String, Duration), NotReady> {
        match self.ready.recv_timeout(limit) {
            Ok((at, line)) => Ok((line, at.saturating_duration_since(self.started))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(NotReady::Exited(self.last_line())),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(NotReady::Timeout(self.last_line())),
        }
    }

    /// [`Peer::wait_ready`] without blocking the runtime's thread: it
    /// looks every few milliseconds (the time returned is the reader's,
    /// not the look's).
    pub async fn wait_ready_async(
        &mut self,
        limit: Duration,
    ) -> Result<(String, Duration), NotReady> {
        let deadline = Instant::now() + limit;
        loop {
            match self.ready.try_recv() {
                Ok((at, line)) => return Ok((line, at.saturating_duration_since(self.started))),
                Err(TryRecvError::Disconnected) => return Err(NotReady::Exited(self.last_line())),
                Err(TryRecvError::Empty) if Instant::now() >= deadline => {
                    return Err(NotReady::Timeout(self.last_line()))
                }
                Err(TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// The process id (0 once handed out).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its resident set size in bytes (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        crate::rss::of_pid(self.pid())
    }

    /// Everything it printed so far (up to [`OUTPUT_CAP`]).
    pub fn output(&self) -> String {
        self.log.lock().map(|l| l.text()).unwrap_or_default()
    }

    /// Its last non-empty output line, or `(no output)`.
    pub fn last_line(&self) -> String {
        let out = self.output();
        out.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("(no output)")
            .to_string()
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The child, for a caller that keeps its own kill-on-drop guard; the
    /// output is still read (and dropped past the cap) until the process
    /// closes it.
    pub fn into_child(mut self) -> Child {
        self.child
            .take()
            .expect("a Peer holds its child until handed out")
    }

    /// Kills it and waits for it.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn waits_for_the_ready_line_and_keeps_the_output() {
        let mut p = Peer::spawn(
            &mut sh("echo starting; echo oops >&2; echo READY 7; sleep 30"),
            Stderr::Capture,
            |l| l.starts_with("READY"),
        )
        .unwrap();
        let (line, took) = p.wait_ready(Duration::from_secs(10)).unwrap();
        assert_eq!(line, "READY 7");
        assert!(took < Duration::from_secs(10));
        let out = p.output();
        assert!(out.contains("starting") && out.contains("oops"), "{out}");
        assert!(p.exited().is_none());
        p.stop();
        assert!(p.exited().is_some());
    }

    #[test]
    fn says_why_it_was_not_ready() {
        let mut p =
            Peer::spawn(&mut sh("echo bad config >&2"), Stderr::Capture, |_| false).unwrap();
        assert_eq!(
            p.wait_ready(Duration::from_secs(10)),
            Err(NotReady::Exited("bad config".into()))
        );
        let mut p =
            Peer::spawn(&mut sh("echo hello; sleep 30"), Stderr::Capture, |_| false).unwrap();
        assert_eq!(
            p.wait_ready(Duration::from_millis(300)),
            Err(NotReady::Timeout("hello".into()))
        );
    }

    #[tokio::test]
    async fn waits_without_blocking_the_runtime() {
        let mut p = Peer::spawn(&mut sh("sleep 0.1; echo up"), Stderr::Capture, |l| {
            l.trim() == "up"
        })
        .unwrap();
        let (line, took) = p.wait_ready_async(Duration::from_secs(10)).await.unwrap();
        assert_eq!(line, "up");
        assert!(took >= Duration::from_millis(100), "{took:?}");
    }
}
