//! Two nodes behind two NATs find a direct path: each learns its public
//! endpoint from the coordinator's STUN server, reports it to control,
//! and disco punches through both NATs (a CallMeMaybe over the relay makes
//! both sides ping at once). Everything runs as the user runs it: the
//! coordinator, two `up`s, `status`, `ping`, curl through `--forward` /
//! `--expose`, each in network namespaces of the test's own
//! (`tailnet_tests::netns::NatLab`).
//!
//! Each site's NAT maps UDP 41641 to another port and admits nothing new
//! from outside, so a node's own address (what it finds on its
//! interfaces) is useless to the other: the only direct path is between
//! the two STUN-learned addresses.

mod common;

use common::{authkey, path, run, spawn_in, text, Proc};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tailnet_tests::netns::{nat_ready, NatLab};

const NODE_PORT: u16 = 41641;
/// What each site's NAT maps [`NODE_PORT`] to.
const MAPPED: [u16; 2] = [50000, 50001];

/// `status --json` of the node in `state`: the peer named `name`.
fn peer(state: &Path, name: &str) -> Option<Value> {
    let out = run(&["status", "--json", "--state-dir", path(state)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let st: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    st["Peer"]
        .as_object()?
        .values()
        .find(|p| {
            p["HostName"] == name || p["DNSName"].as_str().is_some_and(|d| d.starts_with(name))
        })
        .cloned()
}

/// Curl inside `ns` fetching `url` into `out`; the bytes.
fn curl_in(ns: &str, url: &str, out: &Path) -> Vec<u8> {
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "60",
            "-o",
        ])
        .arg(out)
        .arg(url)
        .status()
        .expect("run curl");
    assert!(st.success(), "curl {url} in {ns}: {st}");
    std::fs::read(out).expect("curl output")
}

#[test]
fn two_nodes_behind_nats_go_direct_through_stun_endpoints() {
    const TEST: &str = "two_nodes_behind_nats_go_direct_through_stun_endpoints";
    if !nat_ready(TEST) {
        return;
    }
    let lab = NatLab::create('s');
    for (i, mapped) in MAPPED.iter().enumerate() {
        lab.nat_udp(i, NODE_PORT, *mapped);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let coord = dir.path().join("coord");
    let key = authkey(&coord, "tag:inferadb-us-west-1");
    // The coordinator (control, DERP, STUN) sits on the "internet": the
    // router, at its address on site 0's link, which site 1 reaches
    // through the router. Its DERP map names that address (the listen
    // address is the default --derp-host).
    let listen = format!("{}:8080", lab.sites[0].gateway);
    let (_coord, _) = spawn_in(
        Some(&lab.router),
        &[
            "coordinator",
            "serve",
            "--listen",
            &listen,
            "--state-dir",
            path(&coord),
        ],
        "coordinator listening on",
    );
    let url = format!("http://{listen}");

    // Site 1 serves a file on loopback, exposed on its node's port 8080.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("mkdir");
    let blob: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("blob"), &blob).expect("write blob");
    let _web = Proc(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.sites[1].ns,
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server"),
    );

    let states = [dir.path().join("a"), dir.path().join("b")];
    let names = ["nat-a", "nat-b"];
    let node_listen = format!("0.0.0.0:{NODE_PORT}");
    let up = |i: usize, extra: &[&str]| {
        let mut args = vec![
            "up",
            "--control-url",
            &url,
            "--auth-key",
            &key,
            "--hostname",
            names[i],
            "--state-dir",
            path(&states[i]),
            "--listen",
            &node_listen,
        ];
        args.extend_from_slice(extra);
        spawn_in(Some(&lab.sites[i].ns), &args, "\"state\":\"Running\"").0
    };
    let _b = up(1, &["--expose", "8080:127.0.0.1:8000"]);
    let _a = up(0, &["--forward", "127.0.0.1:9000:nat-b:8080"]);

    // Each node reaches the other's site only at the NAT's mapping.
    let public = |i: usize| format!("{}:{}", lab.sites[i].ip, MAPPED[i]);
    let fetched = dir.path().join("fetched");
    // Traffic starts path discovery; the first bytes may go through the
    // relay while the NATs are being punched.
    let got = curl_in(&lab.sites[0].ns, "http://127.0.0.1:9000/blob", &fetched);
    assert!(
        got == blob,
        "the first transfer arrived intact ({} bytes)",
        got.len()
    );

    let start = Instant::now();
    let (mut a_to_b, mut b_to_a) = (Value::Null, Value::Null);
    while start.elapsed() < Duration::from_secs(30) {
        a_to_b = peer(&states[0], names[1]).unwrap_or(Value::Null);
        b_to_a = peer(&states[1], names[0]).unwrap_or(Value::Null);
        if a_to_b["CurAddr"] == public(1).as_str() && b_to_a["CurAddr"] == public(0).as_str() {
            break;
        }
        // Keep traffic flowing so discovery keeps going.
        let _ = run(&[
            "ping",
            names[1],
            "--state-dir",
            path(&states[0]),
            "-c",
            "1",
            "--timeout",
            "1",
        ]);
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("after {:?}: A→B {a_to_b}\nB→A {b_to_a}", start.elapsed());
    assert_eq!(
        a_to_b["CurAddr"],
        public(1).as_str(),
        "A goes direct to B's STUN endpoint: {a_to_b}"
    );
    assert_eq!(a_to_b["Relay"], "", "{a_to_b}");
    assert_eq!(
        b_to_a["CurAddr"],
        public(0).as_str(),
        "B goes direct to A's STUN endpoint: {b_to_a}"
    );
    assert_eq!(b_to_a["Relay"], "", "{b_to_a}");

    // `ping` says so, like `tailscale ping`.
    let out = run(&["ping", names[1], "--state-dir", path(&states[0]), "-c", "1"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains(&format!("via {}", public(1))), "{said}");

    // A second transfer over the punched path, and the path holds.
    let got = curl_in(&lab.sites[0].ns, "http://127.0.0.1:9000/blob", &fetched);
    assert!(got == blob, "the second transfer arrived intact");
    let after = peer(&states[0], names[1]).expect("B in A's status");
    assert_eq!(after["CurAddr"], public(1).as_str(), "{after}");
    assert_eq!(after["Relay"], "", "{after}");
}
