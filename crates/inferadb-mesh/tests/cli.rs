//! The command line as a user meets it.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{bin, run_json};

#[test]
fn help_lists_the_commands() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["demo", "node", "bench", "genkey", "pubkey"] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
}

#[test]
fn genkey_and_pubkey_agree_with_the_library() {
    let out = bin().arg("genkey").output().unwrap();
    assert!(out.status.success());
    let private = String::from_utf8(out.stdout).unwrap();
    let k = tailnet::PrivateKey::parse(private.trim()).unwrap();
    let mut child = bin()
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap();
    let expected = tailnet::NodeConfig::new(k, vec![]).public_key().to_base64();
    assert_eq!(public.trim(), expected);
}

#[test]
fn bad_node_config_names_the_key_and_never_echoes_the_private_key() {
    let dir = std::env::temp_dir().join(format!("inferadb-mesh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = tailnet::PrivateKey::generate().to_base64();
    let path = dir.join("bad.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"private_key": "{key}", "addresses": ["100.64.0.1"], "lsiten": "0.0.0.0:1"}}"#
        ),
    )
    .unwrap();
    let out = bin()
        .arg("node")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lsiten"), "error does not name the key: {err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains(&key), "private key leaked: {err}");

    // A private key with a typo: rejected without echoing it.
    let mut bad_key = key.clone();
    bad_key.replace_range(0..1, "!");
    std::fs::write(
        &path,
        format!(r#"{{"private_key": "{bad_key}", "addresses": ["100.64.0.1"]}}"#),
    )
    .unwrap();
    let out = bin()
        .arg("node")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(&bad_key[1..]), "private key echoed: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_moves_data_and_exits_zero() {
    let t = std::time::Instant::now();
    let out = bin().args(["demo", "--mib", "4"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each control discovered the engines of every region, per cluster.
    for (cluster, n) in [("us-west-1", 2), ("eu-west-1", 2), ("ap-southeast-1", 1)] {
        let line = format!("cluster={cluster:<15} endpoint_count={n} [");
        assert_eq!(text.matches(&line).count(), 2, "{line:?} twice in:\n{text}");
    }
    // The vault created in us-west-1 reached every engine in every region
    // exactly once.
    assert!(text.contains("201 Created: vault_id="), "{text}");
    assert!(text.contains("targets 5, delivered 5"), "{text}");
    for (region, host) in [
        ("us-west-1", "inferadb-engine-0"),
        ("us-west-1", "inferadb-engine-1"),
        ("eu-west-1", "inferadb-engine-0"),
        ("eu-west-1", "inferadb-engine-1"),
        ("ap-southeast-1", "inferadb-engine-0"),
    ] {
        assert!(
            text.lines().any(|l| l.contains(region)
                && l.contains(host)
                && l.contains("Vault cache invalidation received vault_id=")
                && l.ends_with("(receipts: 1)")),
            "{region} {host} did not receive it:\n{text}"
        );
    }
    assert!(text.contains("5/5 engines in 3 regions"), "{text}");
    assert!(text.contains("matches"), "{text}");
    // The status table: peers joined with their region's tag, over direct
    // UDP on loopback.
    assert!(text.contains("tag:inferadb-ap-southeast-1"), "{text}");
    assert!(text.contains("active; direct 127.0.0.1:"), "{text}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "demo took {:?}",
        t.elapsed()
    );
}

#[test]
fn bench_tunnel_json_has_our_path_with_figures() {
    let v = run_json(&[
        "bench",
        "tunnel",
        "--paths",
        "tailnet",
        "--duration",
        "1",
        "--samples",
        "200",
        "--json",
    ]);
    let p = &v["paths"][0];
    assert_eq!(p["name"], "tailnet");
    assert!(p["gbit_per_s"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (
        p["rtt_p50_us"].as_f64().unwrap(),
        p["rtt_p99_us"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{p}");
}

/// `--wan`: our row crosses the impairment relay (its round trip carries
/// the configured RTT), rows the relay cannot carry say so, and a bad
/// condition is refused with the expected format. A few seconds.
#[test]
fn bench_tunnel_wan_routes_our_path_through_the_relay() {
    let v = run_json(&[
        "bench",
        "tunnel",
        "--paths",
        "tailnet,onetun",
        "--wan",
        "20",
        "--duration",
        "1",
        "--samples",
        "10",
        "--json",
    ]);
    let p = &v["paths"][0];
    assert_eq!(
        (&p["name"], &p["wan"]),
        (&"tailnet".into(), &"20 ms RTT".into()),
        "{p}"
    );
    assert!(p["gbit_per_s"].as_f64().unwrap() > 0.0, "{p}");
    assert!(p["rtt_p50_us"].as_f64().unwrap() >= 20_000.0, "{p}");
    assert!(p["path"].as_str().unwrap().contains("WAN relay"), "{p}");
    let skipped = v["paths"][1]["skipped"].as_str().unwrap();
    assert!(
        skipped.contains("not routed through the WAN relay"),
        "{skipped}"
    );
    let out = bin()
        .args(["bench", "tunnel", "--wan", "70,abc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOSS_PCT"), "{err}");
}

/// Our node ↔ our node and our node ↔ Go tsnet over HTTP, one second
/// each: both rows have figures and say the path was direct (or, with
/// `TAILNET_SKIP_INTEROP=1` and no Caddy, the Go row says it was skipped).
#[test]
fn bench_tunnel_http_rows_run_over_a_direct_path() {
    let caddy = tailnet_tests::caddy::caddy_binary("bench_tunnel_http_rows_run_over_a_direct_path");
    let v = run_json(&[
        "bench",
        "tunnel",
        "--paths",
        "tailnet-http,tailnet-tsnet",
        "--duration",
        "1",
        "--samples",
        "100",
        "--json",
    ]);
    let rows = v["paths"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for p in rows {
        if p["name"] == "tailnet-tsnet" && caddy.is_none() {
            let why = p["skipped"].as_str().unwrap_or("");
            assert!(why.starts_with("caddy not installed"), "{p}");
            continue;
        }
        assert!(p["skipped"].is_null(), "{p}");
        assert!(p["gbit_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{p}");
        assert!(p["rtt_p50_us"].as_f64().unwrap_or(0.0) > 0.0, "{p}");
        let path = p["path"].as_str().unwrap_or("");
        assert!(path.starts_with("direct "), "{p}");
    }
}

#[test]
fn coordinator_authkey_create_prints_a_key_and_bad_tags_are_named() {
    let dir = std::env::temp_dir().join(format!("inferadb-mesh-coord-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = bin()
        .args(["coordinator", "authkey", "create", "--state-dir"])
        .arg(&dir)
        .args([
            "--reusable",
            "--ephemeral",
            "--tags",
            "tag:inferadb-us-west-1",
            "--expiry",
            "90d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap();
    assert!(key.trim().starts_with("tskey-auth-"), "{key}");
    assert_eq!(key.trim().lines().count(), 1);
    // The database is private to the coordinator's user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("coordinator.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = bin()
        .args(["coordinator", "authkey", "create", "--state-dir"])
        .arg(&dir)
        .args(["--tags", "tag:Bad_Tag"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tag:Bad_Tag"),
        "error does not name the tag: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = bin()
        .args(["coordinator", "nodes", "list", "--json", "--state-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(0),
        "no node has joined yet"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A DERP map file or relay host that nodes could not use stops `coordinator
/// serve` at once with one line naming the file and the field, before it
/// listens.
#[test]
fn coordinator_serve_refuses_a_bad_derp_map_or_host_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("derp.json");
    std::fs::write(
        &map,
        r#"{"Regions":{"900":{"RegionID":900,"Nodes":[{"Name":"900a"}]}}}"#,
    )
    .unwrap();
    let state = dir.path().join("coord");
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ];
        args.push(state.to_str().unwrap());
        args.extend_from_slice(extra);
        let out = bin().args(&args).output().unwrap();
        assert!(!out.status.success(), "{extra:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
        err
    };
    let err = serve(&["--derp-map", map.to_str().unwrap()]);
    assert!(
        err.contains("derp.json") && err.contains("Regions.900.Nodes[0]: no HostName"),
        "{err}"
    );
    let err = serve(&[
        "--derp-map",
        dir.path().join("missing.json").to_str().unwrap(),
    ]);
    assert!(err.contains("missing.json"), "{err}");
    let err = serve(&["--derp-host", "https://coord.example.com"]);
    assert!(err.contains("--derp-host"), "{err}");
    let err = serve(&["--derp-host", "coord.example.com:443"]);
    assert!(err.contains("no scheme, no port"), "{err}");
}

/// Issue 17: the coordinator as an operator runs it. A second `serve` on
/// the same state directory stops with one line naming the first's pid;
/// `/healthz` and `/metrics` answer; keys are listed without secrets and
/// expired; a node that is not there is named in a one-line error.
#[test]
fn coordinator_is_locked_observable_and_administrable() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("coord");
    let (serve, line) = common::spawn_until(
        &[
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--state-dir",
            common::path(&state),
        ],
        "coordinator metrics on",
    );
    let metrics_url = line.split_whitespace().last().unwrap().to_string();
    let maddr = metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();

    // A second server on the same state directory.
    let out = bin()
        .args([
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("in use by another coordinator serve")
            && err.contains(&format!("(pid {})", serve.0.id())),
        "{err}"
    );

    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&maddr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    assert!(
        metrics.contains("inferadb_coordinator_map_streams 0")
            && metrics.contains("inferadb_coordinator_nodes{state=\"online\"} 0"),
        "{metrics}"
    );

    // Keys: listed without the secret, expired by id.
    let key = common::authkey(&state, "tag:inferadb-us-west-1");
    let id = key
        .trim_start_matches("tskey-auth-")
        .split('-')
        .next()
        .unwrap()
        .to_string();
    let list = run_json(&[
        "coordinator",
        "authkey",
        "list",
        "--json",
        "--state-dir",
        common::path(&state),
    ]);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["state"], "valid");
    assert!(!list.to_string().contains(&key), "the secret was listed");
    let out = common::run(&[
        "coordinator",
        "authkey",
        "expire",
        "--state-dir",
        common::path(&state),
        &id,
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let table = common::run(&[
        "coordinator",
        "authkey",
        "list",
        "--state-dir",
        common::path(&state),
    ]);
    let table = common::text(&table.stdout);
    assert!(
        table.starts_with("ID") && table.contains(&id) && table.contains("expired"),
        "{table}"
    );

    // A node that does not exist: one line naming it.
    for cmd in [
        vec!["nodes", "delete"],
        vec!["nodes", "expire"],
        vec!["nodes", "rename"],
    ] {
        let mut args = vec!["coordinator"];
        args.extend(cmd);
        args.extend(["--state-dir", common::path(&state), "engine-9"]);
        if args.contains(&"rename") {
            args.push("engine-10");
        }
        let out = common::run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = common::text(&out.stderr);
        assert!(
            err.contains("\"engine-9\"") && err.trim().lines().count() == 1,
            "{err}"
        );
    }
    drop(serve);
}
