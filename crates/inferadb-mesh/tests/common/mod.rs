//! Running the binary as a user would: processes that are killed when the
//! test ends, their ready lines, one-shot commands, and a coordinator with
//! an auth key made by `coordinator authkey create`.
#![allow(dead_code)] // each test binary uses its own part of this

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;
use tailnet_harness::process::{Peer, Stderr};

pub const EXE: &str = env!("CARGO_BIN_EXE_inferadb-mesh");

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `inferadb-mesh args` and returns it with its first stdout line
/// that contains `marker` (within 30 s).
pub fn spawn_until(args: &[&str], marker: &str) -> (Proc, String) {
    spawn_in(None, args, marker)
}

/// [`spawn_until`] inside network namespace `ns` (`ip netns exec`, which
/// execs the binary: the process killed on drop is ours).
pub fn spawn_in(ns: Option<&str>, args: &[&str], marker: &str) -> (Proc, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, EXE]);
            c
        }
        None => Command::new(EXE),
    };
    cmd.args(args).env("INFERADB_MESH_LOG", "info");
    let want = marker.to_string();
    let mut peer = Peer::spawn(&mut cmd, Stderr::Capture, move |l| l.contains(&want))
        .expect("spawn inferadb-mesh");
    match peer.wait_ready(Duration::from_secs(30)) {
        Ok((line, _)) => (Proc(peer.into_child()), line),
        Err(e) => panic!("{args:?} printed no {marker:?} line in 30 s: {e}"),
    }
}

/// The binary, to add arguments and I/O to.
pub fn bin() -> Command {
    Command::new(EXE)
}

/// Runs `inferadb-mesh args` to completion.
pub fn run(args: &[&str]) -> std::process::Output {
    bin().args(args).output().expect("run inferadb-mesh")
}

/// Runs `inferadb-mesh args` (a `--json` command), which must succeed;
/// what it printed, parsed.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", text(&out.stdout)))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A reusable key with `tags` from `coordinator authkey create` on the
/// coordinator state in `coord` (before or while it serves).
pub fn authkey(coord: &Path, tags: &str) -> String {
    let out = run(&[
        "coordinator",
        "authkey",
        "create",
        "--state-dir",
        path(coord),
        "--reusable",
        "--tags",
        tags,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_string();
    assert!(key.starts_with("tskey-auth-"), "{key}");
    key
}

/// `coordinator serve` in `dir/coord` and a reusable us-west-1 key made
/// with `coordinator authkey create`.
pub fn coordinator_with_key(dir: &Path) -> (Proc, String, String) {
    let coord = dir.join("coord");
    let (c, line) = spawn_until(
        &[
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            path(&coord),
        ],
        "coordinator listening on",
    );
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL in the listening line")
        .to_string();
    let key = authkey(&coord, "tag:inferadb-us-west-1");
    (c, url, key)
}
