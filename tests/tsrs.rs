//! tailscale-rs 0.6.1 (Tailscale's own Rust client, `tests/tsrs-peer`) as a
//! third real peer beside wireguard-go and Go tsnet: it joins our
//! coordinator with a tagged auth key (its control JSON spelled with
//! serde's PascalCase, `HostInfo`/`PreferredDerp`, which we must read as Go
//! does), shows in `nodes list`, and our node reaches its TCP echo through
//! the DERP relay (tailscale-rs 0.6.1 is DERP-only) served over TLS with a
//! self-signed certificate (`InsecureForTests` in the map), while the
//! control URL stays plain `http://` (tailscale-rs's `insecure-keyfetch`).
//! The tagged ACL allows one port and denies another in both directions.
//!
//! Needs the built peer (scripts/install-test-deps.sh);
//! `TAILNET_SKIP_INTEROP=1` skips it when missing.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::admin::{authkey_create, nodes_list, AuthKeyCreateArgs};
use coordinator::policy::Policy;
use coordinator::server::Server;
use coordinator::Store;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tailnet::Node;
use tailnet_tests::echo_server;
use tailnet_tests::tsrs::{tsrs_binary, TsrsPeer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// ours → tsrs: TCP 7001 only; tsrs → ours: TCP 7101 only. The third rule
/// is for tailscale-rs 0.6.1's filter, which is stateless and checks every
/// inbound packet against the rules (`ts_dataplane` `packet_filter_inbound`:
/// no TCP-flag rule, unlike Go's, which lets every non-SYN segment by), so
/// the answers to connections it opens need a rule for its ephemeral ports
/// (`Device::tcp_connect`: 49152-65535). 7002 stays outside all of them.
const POLICY: &str = r#"{
  "tagOwners": { "tag:ours": [], "tag:tsrs": [] },
  "acls": [
    { "action": "accept", "proto": "tcp", "src": ["tag:ours"], "dst": ["tag:tsrs:7001"] },
    { "action": "accept", "proto": "tcp", "src": ["tag:tsrs"], "dst": ["tag:ours:7101"] },
    { "action": "accept", "proto": "tcp", "src": ["tag:ours"], "dst": ["tag:tsrs:49152-65535"] },
  ],
}"#;

/// A dropped SYN is retried, never refused: a connection not up by then
/// counts as denied.
const DENIED_AFTER: Duration = Duration::from_secs(4);

fn key(store: &Store, tag: &str) -> String {
    let args = AuthKeyCreateArgs {
        reusable: false,
        ephemeral: false,
        tags: vec![tag.into()],
        expiry: Some("1h".into()),
    };
    authkey_create(store, &args, SystemTime::now())
        .expect("auth key")
        .key
}

/// Connects through `node` and checks a line comes back echoed.
async fn echo_through(node: &Node, to: SocketAddr, within: Duration) -> Result<(), String> {
    let attempt = async {
        let mut s = node.tcp_connect(to).await.map_err(|e| e.to_string())?;
        s.write_all(b"hello tailscale-rs\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 19];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"hello tailscale-rs\n" {
            return Err(format!("echo differs: {buf:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| format!("no echo from {to} within {within:?}"))?
}

/// The node key of our only peer.
fn tsrs_key(n: &Node) -> tailnet::PublicKey {
    let st = n.status();
    let k: tailnet_wire::control::NodePublic = st
        .peer
        .keys()
        .next()
        .expect("a peer")
        .parse()
        .expect("node key");
    tailnet::PublicKey::from_bytes(*k.as_bytes())
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailscale_rs_joins_is_reached_over_our_tls_relay_and_follows_the_acl() {
    let Some(bin) =
        tsrs_binary("tailscale_rs_joins_is_reached_over_our_tls_relay_and_follows_the_acl")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The relay: a coordinator's /derp over TLS (self-signed for 127.0.0.1).
    // Its nodes registered with the other coordinator, so it serves any key
    // (as `coordinator serve --derp-open`).
    let files = coordinator::testing::self_signed(dir.path(), [127, 0, 0, 1].into());
    let relay = Server::builder(Arc::new(
        Store::open(&dir.path().join("relay")).expect("relay store"),
    ))
    .derp_config(coordinator::server::derp::DerpConfig {
        verify_clients: false,
        ..Default::default()
    })
    .tls(files)
    .bind("127.0.0.1:0".parse().unwrap())
    .await
    .expect("relay binds");
    let map = relay.derp_map().clone();
    let region = &map.regions.as_ref().expect("regions")[&900];
    let region_code = region.region_code.clone();
    assert!(region.nodes[0].insecure_for_tests);
    // Control over plain HTTP, naming that relay.
    let store = Arc::new(Store::open(&dir.path().join("coord")).expect("store"));
    let coord = Server::builder(store.clone())
        .derp_map(map)
        .policy(Arc::new(Policy::parse(POLICY).expect("policy")))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("coordinator binds");
    let url = format!("http://{}", coord.local_addr());

    let ours = Node::builder()
        .control_url(url.clone())
        .auth_key(key(&store, "tag:ours"))
        .hostname("ours")
        .state_dir(dir.path().join("ours"))
        .listen("127.0.0.1:0".parse().unwrap())
        .up()
        .await
        .expect("our node joins");
    echo_server(&ours, 7101);
    echo_server(&ours, 7102);
    let mut peer = TsrsPeer::start(
        &bin,
        &url,
        &key(&store, "tag:tsrs"),
        "tsrs",
        &[7001, 7002],
        Duration::from_secs(60),
    )
    .expect("tailscale-rs joins");
    let tail = |p: &TsrsPeer| format!("tailscale-rs log tail:\n{}", p.log_tail(60));

    // 1. It registered: `nodes list` shows it, tagged, with its address.
    let rows = nodes_list(&store, SystemTime::now()).expect("nodes list");
    let row = rows
        .iter()
        .find(|r| r.hostname == "tsrs")
        .unwrap_or_else(|| panic!("tsrs not listed: {rows:#?}"));
    assert_eq!(row.ipv4, peer.ip.to_string());
    assert_eq!(row.tags, ["tag:tsrs"]);
    // Its Hostinfo reached the store in Go's spelling (it writes
    // `IpnVersion`, `HostInfo`): read case-insensitively, as Go does.
    let node = store
        .nodes()
        .expect("nodes")
        .into_iter()
        .find(|n| n.hostname == "tsrs")
        .expect("tsrs");
    let hi = coordinator::server::mapper::hostinfo(&node).expect("tailscale-rs's Hostinfo kept");
    assert!(!hi.ipn_version.is_empty(), "{hi:?}");

    // 2. Our status lists it with its home relay's region code (it is
    // reachable only through the relay).
    let relay_seen = wait_for(
        "our status shows tsrs behind the relay",
        Duration::from_secs(30),
        || {
            let st = ours.status();
            st.peer
                .values()
                .find(|p| p.host_name == "tsrs" && !p.relay.is_empty())
                .map(|p| p.relay.clone())
        },
    )
    .await;
    assert_eq!(relay_seen, region_code);

    // 3. Our node reaches its echo through the library, over DERP.
    let allowed = SocketAddr::from((peer.ip, 7001));
    echo_through(&ours, allowed, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("ours → tsrs:7001: {e}\n{}", tail(&peer)));

    assert!(
        relay.derp_counters().packets_forwarded.load(Relaxed) > 0,
        "the TLS relay carried the packets"
    );

    // 4. The tagged ACL, both directions.
    let denied = SocketAddr::from((peer.ip, 7002));
    assert!(
        echo_through(&ours, denied, DENIED_AFTER).await.is_err(),
        "tailscale-rs's filter lets ours reach 7002"
    );
    let ours_ip = ours.ipv4().expect("our IPv4");
    peer.dial(SocketAddr::new(ours_ip, 7101))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "tsrs → ours:7101: {e}\nour drops: {:?}\nour path: {:?}\nour status: {:?}\n{}",
                ours.stats().drops,
                ours.peer_stats(&tsrs_key(&ours)),
                ours.status().peer,
                tail(&peer)
            )
        });
    let before = ours.stats().drops.filter_no_rule;
    assert!(
        peer.dial(SocketAddr::new(ours_ip, 7102)).await.is_err(),
        "our filter lets tailscale-rs reach 7102"
    );
    assert!(
        ours.stats().drops.filter_no_rule > before,
        "our filter dropped it"
    );
    eprintln!(
        "tailscale-rs: {} log bytes dropped past the cap",
        peer.log_dropped()
    );
    drop(peer);
    ours.shutdown().await;
    coord.shutdown().await;
    relay.shutdown().await;
}
