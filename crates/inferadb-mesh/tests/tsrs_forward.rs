//! The commands a user types, with a tailscale-rs 0.6.1 node as the peer:
//! `coordinator serve` (plain HTTP control) with `--derp-map` naming a
//! relay served over TLS with a self-signed certificate
//! (`InsecureForTests`), the tailscale-rs peer serving a TCP echo, and
//! `up --forward` reaching that echo by its MagicDNS name over the relay;
//! `status --json` lists the peer with `Relay` set to the region's code.
//! Needs the built peer (scripts/install-test-deps.sh);
//! `TAILNET_SKIP_INTEROP=1` skips it when missing.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{authkey, path, run_json, spawn_until};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tailnet_tests::tsrs::{tsrs_binary, TsrsPeer};

#[test]
fn up_forward_reaches_a_tailscale_rs_echo_over_a_tls_relay() {
    let Some(bin) = tsrs_binary("up_forward_reaches_a_tailscale_rs_echo_over_a_tls_relay") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The relay: a coordinator's /derp over TLS, in this process. Its
    // nodes registered with the other coordinator, so it serves any key
    // (as `coordinator serve --derp-open`).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let files = coordinator::testing::self_signed(dir.path(), [127, 0, 0, 1].into());
    let relay = rt.block_on(async {
        coordinator::server::Server::builder(Arc::new(
            coordinator::Store::open(&dir.path().join("relay")).unwrap(),
        ))
        .derp_config(coordinator::server::derp::DerpConfig {
            verify_clients: false,
            ..Default::default()
        })
        .tls(files)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("relay binds")
    });
    let map_file = dir.path().join("derp-map.json");
    std::fs::write(&map_file, serde_json::to_vec(relay.derp_map()).unwrap()).unwrap();
    let region_code = relay.derp_map().regions.as_ref().unwrap()[&900]
        .region_code
        .clone();

    let coord = dir.path().join("coord");
    let (_c, line) = spawn_until(
        &[
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            path(&coord),
            "--derp-map",
            path(&map_file),
        ],
        "coordinator listening on",
    );
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL in the listening line")
        .to_string();

    let peer = TsrsPeer::start(
        &bin,
        &url,
        &authkey(&coord, "tag:tsrs"),
        "tsrs",
        &[7001],
        Duration::from_secs(60),
    )
    .expect("tailscale-rs joins");

    let fwd_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let forward = format!("127.0.0.1:{fwd_port}:tsrs:7001");
    let ours = dir.path().join("ours");
    let (_a, _) = spawn_until(
        &[
            "up",
            "--control-url",
            &url,
            "--auth-key",
            &authkey(&coord, "tag:ours"),
            "--hostname",
            "ours",
            "--state-dir",
            path(&ours),
            "--listen",
            "127.0.0.1:0",
            "--forward",
            &forward,
        ],
        "\"state\":\"Running\"",
    );

    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut echoed = Vec::new();
    for attempt in 0..50 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", fwd_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let data = payload.clone();
        let writer = std::thread::spawn(move || {
            let r = w.write_all(&data);
            let _ = w.shutdown(std::net::Shutdown::Write);
            r
        });
        echoed.clear();
        let _ = s.read_to_end(&mut echoed);
        let _ = writer.join();
        if echoed.len() == payload.len() {
            break;
        }
        assert!(
            attempt < 49,
            "the forward carried {} of {} bytes\ntailscale-rs log tail:\n{}",
            echoed.len(),
            payload.len(),
            peer.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(echoed == payload, "bytes changed on the way");
    assert!(
        relay
            .derp_counters()
            .packets_forwarded
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the TLS relay carried the packets"
    );

    // status --json: the peer, behind the relay's region code (once its
    // home region, which it reports after its first netcheck, reached us).
    let mut last = serde_json::Value::Null;
    for _ in 0..60 {
        let st = run_json(&["status", "--json", "--state-dir", path(&ours)]);
        let p = st["Peer"]
            .as_object()
            .expect("Peer map")
            .values()
            .find(|p| p["HostName"] == "tsrs")
            .cloned()
            .unwrap_or_else(|| panic!("tsrs not in status: {st:#}"));
        assert_eq!(p["TailscaleIPs"][0], peer.ip.to_string());
        // Relayed: the relay's region code. tailscale-rs also answers disco
        // pings on its UDP socket, so the path may already be direct
        // (`Relay` is then "" and `CurAddr` the address in use).
        let direct = p["CurAddr"].as_str().is_some_and(|a| !a.is_empty());
        if p["Relay"] == region_code.as_str() || direct {
            last = serde_json::Value::Null;
            break;
        }
        last = p;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        last.is_null(),
        "neither Relay {region_code:?} nor a direct CurAddr: {last:#}"
    );
    drop(peer);
    rt.block_on(relay.shutdown());
}
