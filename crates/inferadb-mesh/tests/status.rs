//! `inferadb-mesh status` against a local API serving a fabricated status:
//! the JSON keeps the shape scripts query with jq, the table has one line
//! per node, the socket is private, and a missing node is one clear line.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use inferadb_mesh::localapi;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use tailnet::status::{BackendState, PeerStatus, Status, TailnetStatus, ZERO_TIME};

const EXE: &str = env!("CARGO_BIN_EXE_inferadb-mesh");

fn fabricated() -> Status {
    let me = PeerStatus {
        id: "n1CNTRL".into(),
        public_key: format!("nodekey:{}", "01".repeat(32)),
        host_name: "db-0".into(),
        name: "db-0".into(),
        dns_name: "db-0.mesh.example.".into(),
        os: "linux".into(),
        tailscale_ips: vec!["100.64.0.1".parse().unwrap()],
        online: true,
        in_network_map: true,
        ..PeerStatus::default()
    };
    let direct = PeerStatus {
        id: "n2CNTRL".into(),
        public_key: format!("nodekey:{}", "02".repeat(32)),
        host_name: "db-1".into(),
        name: "db-1".into(),
        dns_name: "db-1.mesh.example.".into(),
        os: "linux".into(),
        tailscale_ips: vec!["100.64.0.2".parse().unwrap()],
        tags: vec!["tag:inferadb-us-west-1".into()],
        cur_addr: "127.0.0.1:41641".into(),
        tx_bytes: 123,
        rx_bytes: 456,
        last_handshake: "2025-01-31T12:00:00Z".into(),
        online: true,
        active: true,
        in_network_map: true,
        in_magic_sock: true,
        in_engine: true,
        ..PeerStatus::default()
    };
    let offline = PeerStatus {
        id: "n3CNTRL".into(),
        public_key: format!("nodekey:{}", "03".repeat(32)),
        host_name: "cache".into(),
        name: "cache".into(),
        dns_name: "cache.mesh.example.".into(),
        os: "linux".into(),
        tailscale_ips: vec!["100.64.0.3".parse().unwrap()],
        in_network_map: true,
        ..PeerStatus::default()
    };
    Status {
        version: "0.1.0".into(),
        backend_state: BackendState::Running,
        tailscale_ips: me.tailscale_ips.clone(),
        self_: me,
        magic_dns_suffix: "mesh.example".into(),
        current_tailnet: Some(TailnetStatus {
            name: "mesh".into(),
            magic_dns_suffix: "mesh.example".into(),
            magic_dns_enabled: true,
        }),
        peer: [direct, offline]
            .into_iter()
            .map(|p| (p.public_key.clone(), p))
            .collect(),
        ..Status::default()
    }
}

async fn status_cmd(args: &[&str], env_state_dir: Option<&Path>) -> Output {
    let mut cmd = tokio::process::Command::new(EXE);
    cmd.arg("status").args(args);
    cmd.env_remove("INFERADB_MESH_STATE_DIR");
    if let Some(d) = env_state_dir {
        cmd.env("INFERADB_MESH_STATE_DIR", d);
    }
    cmd.output().await.expect("run inferadb-mesh")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_table_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sock = localapi::socket_path(dir.path());
    let want = fabricated();
    let served = want.clone();
    let api = localapi::serve(&sock, Arc::new(move || served.clone()))
        .await
        .unwrap();

    // Only the node's user may talk to it.
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // --json --socket: Go's shape; every peer answers the jq query
    // `.Peer[] | {Name, DNSName, TailscaleIPs, Tags, Online, CurAddr, Relay,
    // LastHandshake, RxBytes, TxBytes}`.
    let out = stdout(&status_cmd(&["--json", "--socket", sock.to_str().unwrap()], None).await);
    let v: Value = serde_json::from_str(&out).unwrap();
    for k in [
        "Version",
        "BackendState",
        "TailscaleIPs",
        "Self",
        "Peer",
        "MagicDNSSuffix",
        "CurrentTailnet",
        "Health",
    ] {
        assert!(v.get(k).is_some(), "no {k} in {out}");
    }
    assert_eq!(v["BackendState"], "Running");
    let peers = v["Peer"].as_object().unwrap();
    assert_eq!(peers.len(), 2);
    for (key, p) in peers {
        assert!(key.starts_with("nodekey:"));
        for k in [
            "Name",
            "DNSName",
            "TailscaleIPs",
            "Online",
            "CurAddr",
            "Relay",
            "LastHandshake",
            "RxBytes",
            "TxBytes",
        ] {
            assert!(p.get(k).is_some(), "peer {key} lacks {k}");
        }
    }
    let db1 = &v["Peer"][format!("nodekey:{}", "02".repeat(32))];
    assert_eq!(db1["Name"], "db-1");
    assert_eq!(db1["DNSName"], "db-1.mesh.example.");
    assert_eq!(db1["Tags"], serde_json::json!(["tag:inferadb-us-west-1"]));
    assert_eq!(db1["CurAddr"], "127.0.0.1:41641");
    assert_eq!(db1["Relay"], "");
    assert_eq!(db1["TxBytes"], 123);
    let cache = &v["Peer"][format!("nodekey:{}", "03".repeat(32))];
    assert!(
        cache.get("Tags").is_none(),
        "empty Tags are omitted, as in Go"
    );
    assert_eq!(cache["LastHandshake"], ZERO_TIME);
    assert_eq!(cache["Online"], false);
    let back: Status = serde_json::from_str(&out).unwrap();
    assert_eq!(back, want);

    // --state-dir: the table, self first, then peers by name.
    let table = stdout(&status_cmd(&["--state-dir", dir.path().to_str().unwrap()], None).await);
    assert_eq!(table, want.to_table());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let cols = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(cols(lines[0]), ["100.64.0.1", "db-0", "-", "linux", "-"]);
    assert_eq!(
        cols(lines[1]),
        ["100.64.0.3", "cache", "-", "linux", "offline"]
    );
    assert!(lines[2].starts_with("100.64.0.2"), "{table}");
    assert!(lines[2].contains("tag:inferadb-us-west-1"), "{table}");
    assert!(
        lines[2].ends_with("active; direct 127.0.0.1:41641, tx 123 rx 456"),
        "{table}"
    );

    // The state directory from the environment, as `up` takes it.
    let env_table = stdout(&status_cmd(&[], Some(dir.path())).await);
    assert_eq!(env_table, table);

    // Dropping the handle removes the socket; then there is no node.
    drop(api);
    assert!(!sock.exists());
    let o = status_cmd(&["--state-dir", dir.path().to_str().unwrap()], None).await;
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "error: no node is running with state directory {} (socket {} not found)\n",
            dir.path().display(),
            sock.display()
        )
    );
    let o = status_cmd(&["--json", "--socket", sock.to_str().unwrap()], None).await;
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no node is running on socket"),
        "{err}"
    );
}

#[tokio::test]
async fn status_needs_a_node_and_teaches() {
    let o = status_cmd(&[], None).await;
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--state-dir") && err.contains("INFERADB_MESH_STATE_DIR"),
        "{err}"
    );

    // --socket wins over --state-dir and over the variable (clap's `[env:
    // INFERADB_MESH_STATE_DIR]`, which a shell may have exported for
    // another node): the socket named is the one tried.
    for (args, env) in [
        (
            &["--state-dir", "/x", "--socket", "/nonexistent/y.sock"][..],
            None,
        ),
        (
            &["--socket", "/nonexistent/y.sock"][..],
            Some(Path::new("/x")),
        ),
    ] {
        let o = status_cmd(args, env).await;
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("error: no node is running on socket /nonexistent/y.sock"),
            "{err}"
        );
    }

    let help = stdout(&status_cmd(&["--help"], None).await);
    for want in [
        "--json",
        "--state-dir",
        "--socket",
        "jq '.Peer[] | {Name, CurAddr, Relay}'",
        "active; direct",
        "[env: INFERADB_MESH_STATE_DIR=",
    ] {
        assert!(help.contains(want), "--help lacks {want}:\n{help}");
    }
}
