//! `inferadb-mesh ping` as a user runs it: `coordinator serve`, two
//! `up`s, disco pings from one to the other by name and address through
//! the local API, and an unknown name failing in one line.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_inferadb-mesh");

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `args` and returns it with its first stdout line that contains
/// `marker` (within 30 s).
fn spawn_until(args: &[&str], marker: &str) -> (Proc, String) {
    let mut child = Command::new(EXE)
        .args(args)
        .env("INFERADB_MESH_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn inferadb-mesh");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = tx.send(line);
            }
        }
    });
    let proc = Proc(child);
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{args:?} printed no {:?} line in 30 s", ""));
    (proc, line)
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(EXE)
        .args(args)
        .output()
        .expect("run inferadb-mesh")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `coordinator serve` in `dir/coord` and a reusable us-west-1 key made
/// with `coordinator authkey create`.
fn coordinator_with_key(dir: &Path) -> (Proc, String, String) {
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

    let out = run(&[
        "coordinator",
        "authkey",
        "create",
        "--state-dir",
        path(&coord),
        "--reusable",
        "--tags",
        "tag:inferadb-us-west-1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_string();
    assert!(key.starts_with("tskey-auth-"), "{key}");
    (c, url, key)
}

#[test]
fn ping_a_peer_by_name_and_an_unknown_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, url, key) = coordinator_with_key(dir.path());
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let up = |name: &str, state: &Path| {
        spawn_until(
            &[
                "up",
                "--control-url",
                &url,
                "--auth-key",
                &key,
                "--hostname",
                name,
                "--state-dir",
                path(state),
                "--listen",
                "127.0.0.1:0",
            ],
            "\"state\":\"Running\"",
        )
    };
    let (_a, _) = up("inferadb-engine-0", &a_dir);
    let (_b, _) = up("inferadb-engine-1", &b_dir);

    // Wait for A to see B in its netmap.
    let mut b_ip = String::new();
    for _ in 0..100 {
        let out = run(&["status", "--json", "--state-dir", path(&a_dir)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(p) = st["Peer"].as_object().and_then(|m| m.values().next()) {
            b_ip = p["TailscaleIPs"][0].as_str().unwrap().to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!b_ip.is_empty(), "A never saw B");

    // The first pongs may come through the relay while the direct path is
    // unproven; the direct one wins as soon as it answers.
    let mut direct = false;
    let mut last = String::new();
    for _ in 0..10 {
        let out = run(&[
            "ping",
            "inferadb-engine-1",
            "--state-dir",
            path(&a_dir),
            "-c",
            "2",
        ]);
        last = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{last}");
        let want = format!("pong from inferadb-engine-1 ({b_ip}) via 127.0.0.1:");
        if text(&out.stdout)
            .lines()
            .any(|l| l.starts_with(&want) && l.ends_with("ms"))
        {
            direct = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(direct, "no direct pong: {last}");

    // By address too.
    let out = run(&["ping", &b_ip, "--state-dir", path(&a_dir), "-c", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("pong from inferadb-engine-1 ("),
        "{}",
        text(&out.stdout)
    );

    // An unknown name fails in one clear line.
    let out = run(&[
        "ping",
        "nobody",
        "--state-dir",
        path(&a_dir),
        "--timeout",
        "2",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("unknown peer \"nobody\""), "{err}");
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
}
